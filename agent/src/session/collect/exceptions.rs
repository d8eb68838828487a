//! Uncaught Python exceptions, from the tracebacks the interpreter prints on stderr when one
//! ends the process (`sys.excepthook`) or a thread (`threading.excepthook`: "Exception in thread
//! NAME:"): each becomes a `python_exception` event with its type, message and thread, and its
//! Python stack as frames of the recording (outermost first, as tracebacks list them).
//!
//! Of a chain ("During handling of the above exception..." / "The above exception was the
//! direct cause..."), the last traceback is the one that escaped; its causes are named in the
//! message. A program that replaces the hooks or closes stderr prints nothing to read.
use crate::recording::{
    intern::Interner, logs::Stream, Event, EventKind, Frame, FrameKind, Recording,
};

/// What one traceback says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traceback {
    /// `ValueError` (`module.Name` for classes outside builtins).
    pub exc_type: String,
    /// What follows `Type: `, possibly empty.
    pub message: String,
    /// The thread it ended, when a thread's hook printed it.
    pub thread: Option<String>,
    /// (function, file, line), outermost first.
    pub frames: Vec<(String, String, u32)>,
    /// The exceptions it was raised while handling (or from), oldest first: `Type: message`
    /// (filled by [`find`], which joins a chain's links).
    pub causes: Vec<String>,
}

const HEAD: &str = "Traceback (most recent call last):";
const CHAINED: [&str; 2] = [
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
];

/// `  File "x.py", line 5, in foo` as (file, line, function).
fn frame_line(line: &str) -> Option<(String, u32, String)> {
    let rest = line.trim_start().strip_prefix("File \"")?;
    let (file, rest) = rest.split_once("\", line ")?;
    let (line_no, func) = rest.split_once(", in ")?;
    Some((
        file.to_string(),
        line_no.trim().parse().ok()?,
        func.trim().to_string(),
    ))
}

/// `ValueError: bad` (or `KeyboardInterrupt`) as (type, message): a name of identifier
/// characters and dots, first character not a space.
fn exception_line(line: &str) -> Option<(String, String)> {
    if line.starts_with(' ') || line.is_empty() {
        return None;
    }
    let (ty, msg) = match line.split_once(": ") {
        Some((t, m)) => (t, m),
        None => (line.trim_end_matches(':'), ""),
    };
    // A log level (`WARNING: ...`) from another thread is not an exception type.
    let ok = !ty.is_empty()
        && ty.chars().any(|c| c.is_lowercase())
        && ty
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
        && ty
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_');
    ok.then(|| (ty.to_string(), msg.to_string()))
}

/// The tracebacks in one process's stderr lines (in order), with the index of the line each
/// ends on. The links of a chain come out one by one ([`find`] joins them).
pub fn tracebacks<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<(usize, Traceback)> {
    let mut out = Vec::new();
    let mut thread: Option<String> = None;
    let mut frames: Option<Vec<(String, String, u32)>> = None;
    // The thread a hook named applies to the traceback right after it and to its chain.
    let (mut thread_fresh, mut chained) = (false, false);
    for (i, line) in lines.into_iter().enumerate() {
        if let Some(name) = line
            .strip_prefix("Exception in thread ")
            .and_then(|r| r.strip_suffix(':'))
        {
            thread = Some(name.to_string());
            thread_fresh = true;
            continue;
        }
        if CHAINED.contains(&line) {
            chained = true;
            continue;
        }
        if line == HEAD {
            if !thread_fresh && !chained {
                thread = None;
            }
            (thread_fresh, chained) = (false, false);
            frames = Some(Vec::new());
            continue;
        }
        let Some(fs) = frames.as_mut() else {
            continue;
        };
        if let Some((file, line_no, func)) = frame_line(line) {
            fs.push((func, file, line_no));
            continue;
        }
        // Source lines and 3.11+'s carets are indented; the exception line is not.
        if line.starts_with(' ') || line.is_empty() {
            continue;
        }
        match exception_line(line) {
            Some((exc_type, message)) => {
                let frames = frames.take().unwrap_or_default();
                out.push((
                    i,
                    Traceback {
                        exc_type,
                        message,
                        thread: thread.clone(),
                        frames,
                        causes: Vec::new(),
                    },
                ));
            }
            None => frames = None,
        }
    }
    out
}

/// Adds a `python_exception` event per uncaught exception a target printed on stderr, its
/// stack made of the traceback's frames.
pub fn find(rec: &mut Recording) {
    let mut pids: Vec<u32> = rec
        .logs
        .iter()
        .filter(|l| l.stream == Stream::Stderr)
        .map(|l| l.pid)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    let mut events = Vec::new();
    let mut interner = Interner::new(rec);
    for pid in pids {
        // (time, thread, text) of its stderr lines.
        let lines: Vec<(u64, u32, String)> = rec
            .logs
            .iter()
            .filter(|l| l.pid == pid && l.stream == Stream::Stderr)
            .map(|l| (l.time_ns, l.tid, l.message.clone()))
            .collect();
        let found = tracebacks(lines.iter().map(|l| l.2.as_str()));
        let chain_break = |from: usize, to: usize| {
            lines[from..to]
                .iter()
                .any(|l| CHAINED.contains(&l.2.as_str()))
        };
        let mut kept: Vec<(usize, Traceback)> = Vec::new();
        for (at, mut tb) in found {
            if let Some((prev_at, prev)) = kept.last() {
                if prev.thread == tb.thread && chain_break(*prev_at, at) {
                    let mut causes = prev.causes.clone();
                    causes.push(describe(prev));
                    tb.causes = causes;
                    kept.pop();
                }
            }
            kept.push((at, tb));
        }
        // A traceback printed without ending anything (`logging.exception`,
        // `traceback.print_exc`) is not uncaught: the main thread's uncaught one is the last
        // its process printed; a thread's came with "Exception in thread".
        let last = kept.len();
        let exited_cleanly = pid == rec.meta.target_pid && rec.meta.exit_status == Some(0);
        for (n, (at, tb)) in kept.into_iter().enumerate() {
            if tb.thread.is_none() && (n + 1 != last || exited_cleanly) {
                continue;
            }
            let stack = interner.stack(rec, tb.frames.iter().map(frame));
            let (time_ns, tid, _) = lines[at];
            let mut message = describe(&tb);
            match &tb.thread {
                Some(t) => message.push_str(&format!(" (uncaught, ended thread {t})")),
                None => message.push_str(" (uncaught)"),
            }
            if !tb.causes.is_empty() {
                message.push_str(&format!("; while handling: {}", tb.causes.join(" <- ")));
            }
            if let Some((func, file, line)) = tb.frames.last() {
                message.push_str(&format!(", raised in {func} ({file}:{line})"));
            }
            events.push(Event {
                time_ns,
                pid,
                tid,
                kind: EventKind::PythonException,
                message,
                value: None,
                stack,
            });
        }
    }
    if !events.is_empty() {
        rec.events.extend(events);
        rec.events.sort_by_key(|e| e.time_ns);
    }
}

fn describe(tb: &Traceback) -> String {
    if tb.message.is_empty() {
        tb.exc_type.clone()
    } else {
        format!("{}: {}", tb.exc_type, tb.message)
    }
}

/// A traceback's `(function, file, line)` as a frame of a stack.
fn frame((func, file, line): &(String, String, u32)) -> Frame {
    let short = file.rsplit('/').next().unwrap_or(file);
    Frame {
        name: format!("{func} ({short}:{line})"),
        module: None,
        file: Some(file.clone()),
        line: Some(*line),
        kind: FrameKind::Python,
        inlined: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: &str = r#"Traceback (most recent call last):
  File "/srv/app.py", line 12, in <module>
    main()
  File "/srv/app.py", line 9, in main
    load("m.bin")
    ~~~~^^^^^^^^^
  File "/srv/app.py", line 5, in load
    raise FileNotFoundError(f"no {path}")
FileNotFoundError: no m.bin"#;

    #[test]
    fn a_traceback_gives_type_message_and_frames_outermost_first() {
        let tbs = tracebacks(MAIN.lines());
        assert_eq!(tbs.len(), 1);
        let (at, tb) = &tbs[0];
        assert_eq!(*at, 8);
        assert_eq!(tb.exc_type, "FileNotFoundError");
        assert_eq!(tb.message, "no m.bin");
        assert_eq!(tb.thread, None);
        let funcs: Vec<&str> = tb.frames.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(funcs, ["<module>", "main", "load"]);
        assert_eq!(tb.frames[2], ("load".into(), "/srv/app.py".into(), 5));
    }

    #[test]
    fn thread_tracebacks_name_the_thread_and_other_lines_are_not_exceptions() {
        let text = "INFO: starting\nException in thread worker-1:\nTraceback (most recent call last):\n  File \"/usr/lib/python3.12/threading.py\", line 1073, in _bootstrap_inner\n    self.run()\n  File \"w.py\", line 3, in work\n    1 / 0\nZeroDivisionError: division by zero\nWARNING: done";
        let tbs = tracebacks(text.lines());
        assert_eq!(tbs.len(), 1);
        assert_eq!(tbs[0].1.thread.as_deref(), Some("worker-1"));
        assert_eq!(tbs[0].1.exc_type, "ZeroDivisionError");
        assert_eq!(
            exception_line("KeyboardInterrupt"),
            Some(("KeyboardInterrupt".into(), String::new()))
        );
        // A later traceback of the main thread is not the worker's.
        let later = format!("{text}\n{MAIN}");
        let tbs = tracebacks(later.lines());
        assert_eq!(tbs.len(), 2);
        assert_eq!(tbs[1].1.thread, None);
        assert_eq!(exception_line("  File x"), None);
        assert_eq!(exception_line("Some words here: x"), None);
    }
}
