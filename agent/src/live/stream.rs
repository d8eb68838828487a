//! `--export jsonl:-` (or `jsonl:FILE`): one JSON object per line as the recording runs, for
//! scripts: `{"type":"span",...}` for each probed call when it returns, `{"type":"llm_call",...}`
//! for each LLM call when its answer is read (with its GenAI attributes), `{"type":"event",...}`
//! for each lifecycle event. Times are CLOCK_MONOTONIC nanoseconds, as in the recording;
//! lines come in the order records are read (each drain's spans, then its calls and events),
//! not sorted by time.
//! Lines are buffered and flushed after each drain (about every 100 ms); a reader that goes
//! away (a closed pipe) stops the stream with one warning, not the recording.
use std::{
    io::{BufWriter, Write},
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
};

use serde_json::{json, Value};

use crate::{
    export::{gen_ai_attributes, span_name},
    recording::{llm::LlmCall, Event, Span},
    Error, Result,
};

/// A JSON-lines stream.
pub struct JsonLines {
    out: Mutex<BufWriter<Box<dyn Write + Send>>>,
    broken: AtomicBool,
    lines: AtomicU64,
    /// Where it goes, for messages.
    pub target: String,
}

impl std::fmt::Debug for JsonLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLines")
            .field("target", &self.target)
            .field("lines", &self.lines)
            .finish()
    }
}

impl JsonLines {
    /// The stream `--export` names: `jsonl:-` (stdout) or `jsonl:PATH` (a file, created or
    /// truncated).
    pub fn open(spec: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidArgument(format!(
                "--export {spec:?}: expected jsonl:- (stdout) or jsonl:FILE (the other formats: `modelprobe export DIR --format pprof|otlp|perfetto|speedscope` after the recording)"
            ))
        };
        let target = spec.strip_prefix("jsonl:").ok_or_else(bad)?;
        let out: Box<dyn Write + Send> = match target {
            "" => return Err(bad()),
            "-" => Box::new(std::io::stdout()),
            path => Box::new(std::fs::File::create(Path::new(path)).map_err(|e| {
                Error::InvalidArgument(format!("--export {spec}: cannot create {path} ({e})"))
            })?),
        };
        Ok(JsonLines {
            out: Mutex::new(BufWriter::new(out)),
            broken: AtomicBool::new(false),
            lines: AtomicU64::new(0),
            target: target.to_string(),
        })
    }

    /// A stream into any writer (tests).
    pub fn to_writer(w: Box<dyn Write + Send>) -> Self {
        JsonLines {
            out: Mutex::new(BufWriter::new(w)),
            broken: AtomicBool::new(false),
            lines: AtomicU64::new(0),
            target: "writer".into(),
        }
    }

    fn line(&self, v: &Value) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let written = serde_json::to_writer(&mut *out, v)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        match written {
            Ok(()) => {
                self.lines.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.stop(&e),
        }
    }

    fn stop(&self, e: &std::io::Error) {
        if !self.broken.swap(true, Ordering::Relaxed) {
            log::warn!(
                "the --export stream to {} stopped ({e}); the recording goes on",
                self.target
            );
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        let flushed = self.out.lock().unwrap_or_else(|e| e.into_inner()).flush();
        if let Err(e) = flushed {
            self.stop(&e);
        }
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// A probed call of `function` that returned, with the arguments its probe keeps.
    pub fn span(&self, function: &str, args: &[u64], s: &Span) {
        let mut v = json!({
            "type": "span", "function": function, "pid": s.pid, "tid": s.tid,
            "start_ns": s.start_ns, "end_ns": s.end_ns, "depth": s.depth,
            "duration_ms": s.end_ns.saturating_sub(s.start_ns) as f64 / 1e6,
        });
        if !args.is_empty() {
            v["args"] = json!(args);
        }
        if let Some(r) = s.ret {
            v["ret"] = json!(r);
        }
        for (k, a) in &s.attrs {
            v[k] = a.clone();
        }
        self.line(&v);
    }

    /// An LLM call whose answer was read.
    pub fn llm_call(&self, c: &LlmCall) {
        let v = json!({
            "type": "llm_call", "name": span_name(c), "pid": c.pid, "tid": c.tid,
            "start_ns": c.start_ns, "end_ns": c.end_ns,
            "duration_ms": c.end_ns.saturating_sub(c.start_ns) as f64 / 1e6,
            "attributes": Value::Object(gen_ai_attributes(c)),
        });
        self.line(&v);
    }

    /// A lifecycle event.
    pub fn event(&self, e: &Event) {
        let mut v = json!({
            "type": "event", "kind": e.kind.name(), "pid": e.pid, "tid": e.tid,
            "time_ns": e.time_ns, "message": e.message,
        });
        if let Some(value) = e.value {
            v["value"] = json!(value);
        }
        self.line(&v);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Fails every write, as a closed pipe does.
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn each_record_is_one_json_line_and_a_closed_reader_stops_the_stream() {
        let buf = Shared::default();
        let s = JsonLines::to_writer(Box::new(buf.clone()));
        s.span(
            "mp_sleep",
            &[20],
            &Span {
                probe: 0,
                pid: 7,
                tid: 8,
                start_ns: 1_000_000,
                end_ns: 21_000_000,
                depth: 0,
                args: vec![20, 0, 0],
                ret: Some(0),
                attrs: Default::default(),
                stack: None,
            },
        );
        s.llm_call(&LlmCall {
            model: "gpt-4o".into(),
            endpoint: "chat.completions".into(),
            ..LlmCall::default()
        });
        s.flush();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["type"], "span");
        assert_eq!(lines[0]["duration_ms"], 20.0);
        assert_eq!(lines[0]["args"], json!([20]));
        assert_eq!(lines[1]["name"], "chat gpt-4o");
        assert_eq!(lines[1]["attributes"]["gen_ai.request.model"], "gpt-4o");
        assert_eq!(s.lines(), 2);

        let closed = JsonLines::to_writer(Box::new(Closed));
        for _ in 0..10_000 {
            closed.event(&Event {
                time_ns: 1,
                pid: 1,
                tid: 1,
                kind: crate::recording::EventKind::ProcessExit,
                message: "x".repeat(100),
                value: None,
                stack: None,
            });
        }
        closed.flush();
        assert!(
            closed.lines() < 10_000,
            "writes stop once the reader is gone"
        );
    }
}
