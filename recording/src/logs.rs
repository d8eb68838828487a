//! Lines the target printed on stdout and stderr, each with a detected level.
//!
//! Levels are recognized in the common shapes: Python `logging` (`ERROR:name:msg`,
//! `2024-01-01 12:00:00,123 - name - WARNING - msg`), glog (`E1124 13:01:02.123456 42 f.cc:10]`),
//! bracketed or bare prefixes (`[INFO]`, `WARN:`), and `level=error` key/value logs.
use serde::{Deserialize, Serialize};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// Debug or trace.
    Debug,
    /// Informational.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
    /// Fatal or critical.
    Fatal,
}

/// Which stream a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// File descriptor 1.
    Stdout,
    /// File descriptor 2.
    Stderr,
}

/// One line the target printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// CLOCK_MONOTONIC ns of the write that started the line.
    #[serde(rename = "t")]
    pub time_ns: u64,
    /// Process id.
    pub pid: u32,
    /// Thread that wrote it (the first write's).
    pub tid: u32,
    /// stdout or stderr.
    pub stream: Stream,
    /// Detected level, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// The text, without the newline (invalid UTF-8 replaced).
    pub message: String,
}

/// The level an upper-case word names (`WARNING`, `ERR`, `CRITICAL`...).
pub fn level_of_word(upper: &str) -> Option<Level> {
    Some(match upper {
        "TRACE" | "DEBUG" | "DBG" => Level::Debug,
        "INFO" | "INF" | "NOTICE" => Level::Info,
        "WARN" | "WARNING" | "WRN" => Level::Warn,
        "ERROR" | "ERR" | "EXCEPTION" => Level::Error,
        "FATAL" | "CRITICAL" | "CRIT" | "PANIC" => Level::Fatal,
        _ => return None,
    })
}

fn level_word(word: &str) -> Option<Level> {
    level_of_word(&word.to_ascii_uppercase())
}

impl Level {
    /// `DEBUG`, `INFO`, `WARN`, `ERROR` or `FATAL`, as recordings write it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
            Level::Fatal => "FATAL",
        }
    }
}

impl Stream {
    /// `stdout` or `stderr`, as recordings write it.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The level of a line, from its first few tokens.
pub fn detect_level(line: &str) -> Option<Level> {
    let t = line.trim_start();
    // glog: [IWEF]MMDD hh:mm:ss.uuuuuu
    let b = t.as_bytes();
    if b.len() > 6
        && matches!(b[0], b'I' | b'W' | b'E' | b'F')
        && b[1..5].iter().all(u8::is_ascii_digit)
        && b[5] == b' '
    {
        return Some(match b[0] {
            b'I' => Level::Info,
            b'W' => Level::Warn,
            b'E' => Level::Error,
            _ => Level::Fatal,
        });
    }
    // key=value logs
    if let Some(pos) = t.find("level=") {
        let v = t[pos + 6..].trim_start_matches('"');
        let word: String = v.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
        if let Some(l) = level_word(&word) {
            return Some(l);
        }
    }
    // A level word among the first tokens: `ERROR:x:msg`, `[WARN] msg`, `... - INFO - msg`.
    t.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .take(8)
        .find(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_uppercase()))
        .and_then(level_word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_levels_in_common_formats() {
        let cases = [
            ("ERROR:root:model failed to load", Some(Level::Error)),
            ("WARNING:vllm.engine:slow step", Some(Level::Warn)),
            (
                "2024-05-01 12:00:00,123 - uvicorn - INFO - started",
                Some(Level::Info),
            ),
            (
                "E1124 13:01:02.123456  4242 server.cc:10] CUDA error",
                Some(Level::Error),
            ),
            (
                "I1124 13:01:02.123456  4242 server.cc:10] ready",
                Some(Level::Info),
            ),
            (
                "F1124 13:01:02.123456  4242 server.cc:10] check failed",
                Some(Level::Fatal),
            ),
            ("[WARN] queue full", Some(Level::Warn)),
            ("time=2024 level=debug msg=tick", Some(Level::Debug)),
            ("CRITICAL: out of memory", Some(Level::Fatal)),
            ("Traceback (most recent call last):", None),
            ("loaded 32 layers", None),
            ("Information about INFOrmal text", None),
        ];
        for (line, want) in cases {
            assert_eq!(detect_level(line), want, "{line}");
        }
    }
}
