//! Freezing the target at a moment worth looking at, without a debugger attached:
//! breakpoints (`--break 'lib.so:fn if arg1 > 4096 hit 3'`) and `--stop-on api_error`. The
//! BPF side sends `SIGSTOP` from the probe in the thread that hit it (`ebpf/src/stop.rs`), so
//! that thread stops at the call; the session then prints every thread's stack
//! ([`crate::snapshot`]), says how to go on (`modelprobe resume PID`, or attach gdb, py-spy,
//! debugpy), and resumes the process by itself after a timeout. Recording goes on meanwhile.
use std::time::Duration;

use modelprobe_common::stop::{op, StopRule};

use crate::{probes::ProbeSpec, target, Error, Result};

/// One `--break`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breakpoint {
    /// The probe it sets.
    pub spec: ProbeSpec,
    /// Its condition and hit count, as the BPF side checks them.
    pub rule: StopRule,
    /// The text as given.
    pub text: String,
}

impl Breakpoint {
    /// Parses `TARGET:SYMBOL [if argN OP VALUE] [hit N]`: OP one of `== != < <= > >=`, VALUE a
    /// decimal or `0x` hexadecimal integer (compared as signed 64-bit), N the matching call to
    /// stop at first (1 by default).
    pub fn parse(text: &str) -> Result<Breakpoint> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "bad --break {text:?}: {why} (expected TARGET:SYMBOL [if argN OP VALUE] [hit N], \
                 e.g. 'libfoo.so:alloc if arg0 > 1048576 hit 2')"
            ))
        };
        let mut words = text.split_whitespace();
        let spec_text = words.next().ok_or_else(|| bad("empty"))?;
        let spec = ProbeSpec::parse(spec_text)?;
        if spec.is_python() {
            return Err(bad(
                "Python functions cannot be breakpoints yet (their spans can: --probe py:...)",
            ));
        }
        let mut rule = StopRule {
            hit: 1,
            ..StopRule::default()
        };
        let rest: Vec<&str> = words.collect();
        let mut i = 0;
        while i < rest.len() {
            match rest[i] {
                "if" => {
                    let [arg, operator, value] = rest
                        .get(i + 1..i + 4)
                        .ok_or_else(|| bad("`if` needs argN OP VALUE"))?
                    else {
                        unreachable!()
                    };
                    let n: u32 = arg
                        .strip_prefix("arg")
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n <= 5)
                        .ok_or_else(|| bad("the condition's argument is arg0 to arg5"))?;
                    rule.arg = n;
                    rule.op = match *operator {
                        "==" => op::EQ,
                        "!=" => op::NE,
                        "<" => op::LT,
                        "<=" => op::LE,
                        ">" => op::GT,
                        ">=" => op::GE,
                        _ => return Err(bad("the comparison is one of == != < <= > >=")),
                    };
                    rule.value = parse_int(value).ok_or_else(|| bad("the value is an integer"))?;
                    i += 4;
                }
                "hit" => {
                    rule.hit = rest
                        .get(i + 1)
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("`hit` needs a count of 1 or more"))?;
                    i += 2;
                }
                other => return Err(bad(&format!("unexpected {other:?}"))),
            }
        }
        Ok(Breakpoint {
            spec,
            rule,
            text: text.to_string(),
        })
    }
}

fn parse_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let v = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()? as i64,
        None => digits.parse::<i64>().ok()?,
    };
    Some(if neg { v.wrapping_neg() } else { v })
}

/// What stops the target, and for how long.
#[derive(Debug, Clone)]
pub struct StopOptions {
    /// Breakpoints.
    pub breaks: Vec<Breakpoint>,
    /// Stop at a failed API call (the packs' status-returning functions).
    pub api_error: bool,
    /// Stop when a line of the target's output matches one of these (from user space: the
    /// process stops within about 100 ms of the write, not at it).
    pub logs: Vec<regex::Regex>,
    /// Stop when a call of this probed function takes at least this long (from user space,
    /// as the call returns).
    pub slow: Vec<(String, Duration)>,
    /// Stops the session may make in all.
    pub max: u64,
    /// A stopped process is resumed after this long.
    pub timeout: Duration,
}

impl Default for StopOptions {
    fn default() -> Self {
        StopOptions {
            breaks: Vec::new(),
            api_error: false,
            logs: Vec::new(),
            slow: Vec::new(),
            max: 1,
            timeout: Duration::from_secs(300),
        }
    }
}

impl StopOptions {
    /// The rules in words, for the log.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .breaks
            .iter()
            .map(|b| format!("at {}", b.text))
            .collect();
        if self.api_error {
            parts.push("at a failed API call".into());
        }
        parts.extend(
            self.logs
                .iter()
                .map(|r| format!("at a log line matching {r}")),
        );
        parts.extend(self.slow.iter().map(|(f, d)| {
            format!(
                "after a call of {f} of {} or more",
                humantime::format_duration(*d)
            )
        }));
        parts.join(", ")
    }
}

/// Parses a `--stop-on` value: `api_error`, `log:REGEX` or `span:FUNCTION>DURATION` (the
/// flight recorder's triggers, but a fatal signal, which ends the process before it can be
/// held).
pub fn parse_stop_on(text: &str) -> Result<crate::session::flight::Trigger> {
    use crate::session::flight::Trigger;
    match Trigger::parse(text) {
        Ok(Trigger::Signal) => Err(Error::InvalidArgument(
            "--stop-on signal: a fatal signal ends the process before it can be held; \
             use --flight-recorder 60s --trigger signal to keep what led to it"
                .into(),
        )),
        Ok(t) => Ok(t),
        Err(e) => Err(Error::InvalidArgument(
            e.to_string().replace("--trigger", "--stop-on"),
        )),
    }
}

/// Whether every thread of `pid` is stopped (by a stop signal, not traced).
pub fn is_stopped(pid: u32) -> bool {
    let tids = target::thread_ids(pid);
    !tids.is_empty()
        && tids
            .iter()
            .all(|&tid| target::thread_state(pid, tid) == Some('T'))
}

/// `modelprobe resume PID`: lets a stopped process go on.
pub fn resume(pid: u32) -> Result<()> {
    target::check_pid(pid)?;
    if !is_stopped(pid) {
        return Err(Error::InvalidArgument(format!(
            "pid {pid} is not stopped (nothing to resume)"
        )));
    }
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid as i32, libc::SIGCONT) } != 0 {
        return Err(Error::io(
            format!("sending SIGCONT to pid {pid}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breakpoints_parse_with_conditions_and_hit_counts() {
        let b = Breakpoint::parse("libfoo.so:alloc if arg1 >= 0x100000 hit 3").unwrap();
        assert_eq!(b.spec.target, "libfoo.so");
        assert_eq!(b.spec.symbol, "alloc");
        assert_eq!(
            b.rule,
            StopRule {
                arg: 1,
                op: op::GE,
                value: 0x100000,
                hit: 3,
                seen: 0
            }
        );
        let plain = Breakpoint::parse("app:main").unwrap();
        assert_eq!((plain.rule.op, plain.rule.hit), (op::ANY, 1));
        assert_eq!(
            Breakpoint::parse("app:f if arg0 == -1").unwrap().rule.value,
            -1
        );
        for (bad, why) in [
            ("app:f if arg6 == 1", "arg0 to arg5"),
            ("app:f if arg0 ~ 1", "one of"),
            ("app:f if arg0 ==", "needs argN"),
            ("app:f hit 0", "1 or more"),
            ("app:f when", "unexpected"),
            ("nocolon", "no ':'"),
        ] {
            let e = Breakpoint::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(parse_stop_on("api_error").is_ok());
        assert!(parse_stop_on("log:Traceback").is_ok());
        assert!(parse_stop_on("span:llama_decode>200ms").is_ok());
        assert!(parse_stop_on("oom")
            .unwrap_err()
            .to_string()
            .contains("--stop-on"));
        assert!(parse_stop_on("signal")
            .unwrap_err()
            .to_string()
            .contains("flight-recorder"));
    }

    #[test]
    fn a_stopped_process_is_seen_and_resumed() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(!is_stopped(pid));
        assert!(resume(pid).unwrap_err().to_string().contains("not stopped"));
        // SAFETY: kill on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        let start = std::time::Instant::now();
        while !is_stopped(pid) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(is_stopped(pid));
        resume(pid).unwrap();
        while is_stopped(pid) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!is_stopped(pid));
        let _ = child.kill();
        let _ = child.wait();
    }
}
