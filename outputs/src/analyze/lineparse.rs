//! One line of a plain log: its timestamp, level, source and message.
//!
//! Shapes recognized at the start of a line (after an optional `(Worker pid=12) ` prefix, as
//! vLLM's engine processes write):
//!
//! | shape | example | name | message |
//! |---|---|---|---|
//! | ISO 8601 / RFC 3339, Python `logging` | `2024-01-01 12:00:00,123 - app - ERROR - failed` | `app` | `failed` |
//! | the same in brackets | `[2024-01-01T12:00:00Z] [INFO] ready` | | `ready` |
//! | glog | `E1124 13:01:02.123456  42 server.cc:10] oom` | `server.cc:10` | `oom` |
//! | syslog | `Nov 24 13:01:02 gpu1 kernel: NVRM: Xid 79` | `kernel` | `NVRM: Xid 79` |
//! | level first (vLLM) | `INFO 11-24 13:01:02 [engine.py:123] ready` | `engine.py:123` | `ready` |
//! | JSON object | `{"ts": 1700000000.5, "level": "warn", "msg": "x", "logger": "a"}` | `a` | `x` |
//! | logfmt | `time=2024-01-01T12:00:00Z level=info msg="x y"` | | `x y` |
//!
//! The level is the first level word (`INFO`, `WARNING`, `ERROR`, `CRITICAL`...) among the
//! first tokens after the timestamp, glog's letter, a JSON `level`/`severity`/`levelname`
//! key, or else what [`crate::logs::detect_level`] finds in the line. glog, syslog and vLLM
//! times have no year: the parser is given one (the file's modification year), and a time
//! more than a day after the file was last written is taken to be from the year before.
use std::borrow::Cow;

use super::timestamp::{self, Civil};
use crate::logs::{detect_level, Level};

const DAY_NS: u64 = 86_400 * 1_000_000_000;

/// What one line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed<'a> {
    /// Unix nanoseconds, when the line has a timestamp.
    pub t: Option<u64>,
    pub level: Option<Level>,
    /// The logger, tag or source location, when the shape names one.
    pub name: Option<Cow<'a, str>>,
    pub message: Cow<'a, str>,
    /// A JSON object: a record of its own, never a continuation of the line before.
    pub structured: bool,
}

/// Parses lines of one file.
#[derive(Debug, Clone)]
pub(crate) struct LineParser {
    year: i64,
    latest_ns: Option<u64>,
    /// Year and month from a glog file header, which date the yearless lines after it.
    anchor: Option<(i64, u32)>,
}

pub(crate) use crate::logs::level_of_word;

/// The first upper-case level word among the first `max_tokens` whitespace-separated tokens
/// of `s` (brackets and punctuation around it allowed): its level and byte range.
pub(crate) fn find_level_token(s: &str, max_tokens: usize) -> Option<(Level, usize, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    for _ in 0..max_tokens {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() {
            return None;
        }
        let tok_end = b[i..]
            .iter()
            .position(|&c| c == b' ')
            .map_or(b.len(), |p| i + p);
        let mut a = i;
        while a < tok_end && matches!(b[a], b'[' | b'(' | b'<' | b'"' | b'\'') {
            a += 1;
        }
        let mut e = a;
        while e < tok_end && b[e].is_ascii_uppercase() {
            e += 1;
        }
        let word_ends = e == tok_end || !b[e].is_ascii_alphabetic();
        if e - a >= 3 && word_ends {
            if let Some(level) = level_of_word(&s[a..e]) {
                return Some((level, a, e));
            }
        }
        i = tok_end;
    }
    None
}

/// `[X] rest` with no space inside the brackets: (`X`, rest).
fn bracket_name(s: &str) -> (Option<&str>, &str) {
    if let Some(inner) = s.strip_prefix('[') {
        if let Some(close) = inner.bytes().take(120).position(|c| c == b']') {
            let name = &inner[..close];
            if !name.is_empty() && !name.contains(' ') {
                // One space separates; more is the message's own indentation (a traceback).
                let rest = &inner[close + 1..];
                return (Some(name), rest.strip_prefix(' ').unwrap_or(rest));
            }
        }
    }
    (None, s)
}

fn is_sep(c: char) -> bool {
    matches!(c, ' ' | '\t' | '-' | '|' | ':' | ',' | ']' | ')')
}

/// Level, name and message of what follows a timestamp (or of a line without one).
fn split_rest<'a>(line: &'a str, rest: &'a str) -> (Option<Level>, Option<&'a str>, &'a str) {
    let rest = rest.trim_start_matches(is_sep);
    let Some((level, a, e)) = find_level_token(rest, 5) else {
        let (name, message) = bracket_name(rest);
        return (detect_level(line), name, message);
    };
    let pre = rest[..a].trim_matches(|c| is_sep(c) || c == '[' || c == '(');
    if pre.contains(' ') {
        // Words before the level word: it is part of the message, not a field.
        return (Some(level), None, rest);
    }
    let mut name = (!pre.is_empty()).then_some(pre);
    let mut post = &rest[e..];
    if name.is_none() {
        // Python's default format: `ERROR:logger.name:message`.
        if let Some(after) = post.strip_prefix(':') {
            if let Some(colon) = after.find(':') {
                let logger = &after[..colon];
                if !logger.is_empty() && !logger.contains(' ') {
                    name = Some(logger);
                    post = &after[colon + 1..];
                }
            }
        }
    }
    let post = post.trim_start_matches(is_sep);
    if name.is_none() {
        let (bracketed, message) = bracket_name(post);
        return (Some(level), bracketed, message);
    }
    (Some(level), name, post)
}

/// A level word at the very start, bare or bracketed, followed by a space or colon:
/// (level, index after it and the spaces that follow).
fn leading_level(b: &[u8]) -> Option<(Level, usize)> {
    let bracket = b.first() == Some(&b'[');
    let start = usize::from(bracket);
    let len = b[start..]
        .iter()
        .take(10)
        .take_while(|c| c.is_ascii_uppercase())
        .count();
    let word = std::str::from_utf8(&b[start..start + len]).ok()?;
    let level = level_of_word(word)?;
    let mut i = start + len;
    if bracket {
        (b.get(i) == Some(&b']')).then_some(())?;
        i += 1;
    }
    if b.get(i) == Some(&b':') {
        i += 1;
    }
    (b.get(i) == Some(&b' ')).then_some(())?;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    Some((level, i))
}

impl LineParser {
    /// A parser for a file last modified at `mtime_ns` (Unix ns), which dates yearless lines.
    pub fn new(mtime_ns: Option<u64>) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let latest = mtime_ns.unwrap_or(now);
        LineParser {
            year: timestamp::year_of(latest),
            latest_ns: Some(latest),
            anchor: None,
        }
    }

    /// Notes a glog header (`Log file created at: 2024/11/24 13:01:00`): the lines after it
    /// are dated from its year (the next year for an earlier month). True if it was one.
    pub fn note_header(&mut self, line: &str) -> bool {
        let Some(rest) = line.strip_prefix("Log file created at: ") else {
            return false;
        };
        match timestamp::iso(rest.as_bytes(), false) {
            Some((c, _)) => {
                self.anchor = c.year.map(|y| (y, c.month));
                self.anchor.is_some()
            }
            None => false,
        }
    }

    /// Unix ns of a parsed time, its year settled (see the module docs).
    pub(crate) fn settle(&self, c: Civil) -> Option<u64> {
        if let (None, Some((year, month))) = (c.year, self.anchor) {
            return c.unix_ns(if c.month < month { year + 1 } else { year });
        }
        let t = c.unix_ns(self.year)?;
        match self.latest_ns {
            Some(latest) if c.year.is_none() && t > latest.saturating_add(DAY_NS) => {
                c.unix_ns(self.year - 1)
            }
            _ => Some(t),
        }
    }

    /// Parses one line (without its newline).
    pub fn parse<'a>(&self, line: &'a str) -> Parsed<'a> {
        if line.starts_with('{') {
            if let Some(p) = self.json(line) {
                return p;
            }
        }
        if let Some(p) = self.text(line) {
            return p;
        }
        if line.starts_with('(') {
            if let Some(close) = line.bytes().take(100).position(|c| c == b')') {
                if let Some(p) = line[close + 1..]
                    .strip_prefix(' ')
                    .and_then(|rest| self.text(rest))
                {
                    return p;
                }
            }
        }
        let (level, name, message) = split_rest(line, line);
        Parsed {
            t: None,
            level,
            name: name.map(Cow::Borrowed),
            message: Cow::Borrowed(message),
            structured: false,
        }
    }

    fn timed<'a>(
        &self,
        c: Civil,
        level: Option<Level>,
        name: Option<&'a str>,
        message: &'a str,
    ) -> Option<Parsed<'a>> {
        Some(Parsed {
            t: Some(self.settle(c)?),
            level,
            name: name.map(Cow::Borrowed),
            message: Cow::Borrowed(message),
            structured: false,
        })
    }

    /// A text line that starts with a timestamp in one of the known shapes.
    fn text<'a>(&self, line: &'a str) -> Option<Parsed<'a>> {
        let b = line.as_bytes();
        let first = *b.first()?;
        if first.is_ascii_digit() {
            let (c, end) = timestamp::iso(b, false).or_else(|| timestamp::month_day(b))?;
            let (level, name, message) = split_rest(line, &line[end..]);
            return self.timed(c, level, name, message);
        }
        if first == b'[' {
            if let Some((c, end)) = timestamp::iso(&b[1..], false) {
                let rest = line[1 + end..].trim_start();
                let rest = rest.strip_prefix(']').unwrap_or(rest);
                let (level, name, message) = split_rest(line, rest);
                return self.timed(c, level, name, message);
            }
        }
        if let Some((c, end)) = timestamp::glog(b) {
            let level = match first {
                b'I' => Level::Info,
                b'W' => Level::Warn,
                b'E' => Level::Error,
                _ => Level::Fatal,
            };
            // `  4242 server.cc:10] message`: thread id, source location, message.
            let rest = line[end..].trim_start();
            let rest = rest
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start();
            let token = rest.split(' ').next().unwrap_or("");
            return match token.strip_suffix(']') {
                Some(location) => {
                    let message = rest[token.len()..].trim_start();
                    self.timed(c, Some(level), Some(location), message)
                }
                None => self.timed(c, Some(level), None, rest),
            };
        }
        if let Some((c, end)) = timestamp::syslog(b) {
            // ` host tag[pid]: message`.
            let rest = line[end..].trim_start();
            let after_host = rest.split_once(' ').map_or("", |(_, r)| r.trim_start());
            let tagged = after_host
                .split_once(": ")
                .filter(|(tag, _)| !tag.is_empty() && !tag.contains(' '));
            let (name, message) = match tagged {
                Some((tag, message)) => (Some(tag.split('[').next().unwrap_or(tag)), message),
                None => (None, after_host),
            };
            let (level, message) = match find_level_token(message, 3) {
                // `ERROR: engine died`: the level word leads, the message follows it.
                Some((l, a, e)) if message[..a].trim_matches(is_sep).is_empty() => {
                    (Some(l), message[e..].trim_start_matches(is_sep))
                }
                Some((l, _, _)) => (Some(l), message),
                None => (detect_level(message), message),
            };
            return self.timed(c, level, name, message);
        }
        if let Some((level, after)) = leading_level(b) {
            // `INFO 11-24 13:01:02 [engine.py:123] message` (vLLM), `[WARN] 2024-01-01 ...`.
            let rb = &b[after..];
            if let Some((c, end)) = timestamp::month_day(rb).or_else(|| timestamp::iso(rb, false)) {
                let rest = line[after + end..].trim_start_matches(is_sep);
                let (name, message) = bracket_name(rest);
                return self.timed(c, Some(level), name, message);
            }
        }
        if first.is_ascii_lowercase() && b.iter().take(12).any(|&c| c == b'=') {
            return self.logfmt(line);
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A parser dating yearless lines in 2024 (its "file" was written at the end of 2024).
    pub(crate) fn parser() -> LineParser {
        let (c, _) = timestamp::iso(b"2024-12-31T00:00:00Z", false).unwrap();
        LineParser::new(c.unix_ns(0))
    }

    pub(crate) fn utc(s: &str) -> u64 {
        let (c, _) = timestamp::iso(s.as_bytes(), true).unwrap();
        c.unix_ns(0).unwrap()
    }

    pub(crate) fn check(
        line: &str,
        t: Option<&str>,
        level: Option<Level>,
        name: Option<&str>,
        msg: &str,
    ) {
        let p = parser().parse(line);
        assert_eq!(p.t, t.map(utc), "time of {line:?}");
        assert_eq!(p.level, level, "level of {line:?}");
        assert_eq!(p.name.as_deref(), name, "name of {line:?}");
        assert_eq!(p.message, msg, "message of {line:?}");
    }

    #[test]
    fn iso_and_python_logging() {
        use Level::*;
        check(
            "2024-01-01 12:00:00,123 - app.server - ERROR - request failed",
            Some("2024-01-01T12:00:00.123Z"),
            Some(Error),
            Some("app.server"),
            "request failed",
        );
        check(
            "2024-01-01T12:00:00Z INFO loaded 32 layers",
            Some("2024-01-01T12:00:00Z"),
            Some(Info),
            None,
            "loaded 32 layers",
        );
        check(
            "2024-01-01T14:00:00.5+02:00 [WARN] [scheduler] queue full",
            Some("2024-01-01T12:00:00.5Z"),
            Some(Warn),
            Some("scheduler"),
            "queue full",
        );
        check(
            "[2024-01-01 12:00:00] CRITICAL: out of memory",
            Some("2024-01-01T12:00:00Z"),
            Some(Fatal),
            None,
            "out of memory",
        );
        check(
            "2024-01-01 12:00:00 worker 3 saw an ERROR code",
            Some("2024-01-01T12:00:00Z"),
            Some(Error),
            None,
            "worker 3 saw an ERROR code",
        );
        check(
            "2024-01-01 12:00:00 plain words",
            Some("2024-01-01T12:00:00Z"),
            None,
            None,
            "plain words",
        );
    }

    #[test]
    fn glog_syslog_and_vllm() {
        use Level::*;
        check(
            "E1124 13:01:02.123456  4242 server.cc:10] CUDA error out of memory",
            Some("2024-11-24T13:01:02.123456Z"),
            Some(Error),
            Some("server.cc:10"),
            "CUDA error out of memory",
        );
        check(
            "Nov 24 13:01:02 gpu-node-1 kernel: NVRM: Xid 79, GPU has fallen off the bus",
            Some("2024-11-24T13:01:02Z"),
            None,
            Some("kernel"),
            "NVRM: Xid 79, GPU has fallen off the bus",
        );
        check(
            "Nov  4 13:01:02 gpu-node-1 python3[4242]: WARNING: slow step",
            Some("2024-11-04T13:01:02Z"),
            Some(Warn),
            Some("python3"),
            "slow step",
        );
        check(
            "INFO 11-24 13:01:02 [engine.py:123] Added request 7",
            Some("2024-11-24T13:01:02Z"),
            Some(Info),
            Some("engine.py:123"),
            "Added request 7",
        );
        check(
            "(EngineCore_0 pid=77) ERROR 11-24 13:01:03 [core.py:9] EngineCore failed",
            Some("2024-11-24T13:01:03Z"),
            Some(Error),
            Some("core.py:9"),
            "EngineCore failed",
        );
    }

    #[test]
    fn a_yearless_time_after_the_file_was_written_is_last_year() {
        // The file was written on 2024-12-31: a line dated Dec 31 is this year, but one in
        // January 2 can only be from the start of the same year...
        let p = parser().parse("I0102 00:00:00.000000 1 a.cc:1] x");
        assert_eq!(p.t, Some(utc("2024-01-02T00:00:00Z")));
        // ...while for a file written on 2025-01-01, a line dated Dec 31 is from 2024.
        let (c, _) = timestamp::iso(b"2025-01-01T00:00:00Z", false).unwrap();
        let p = LineParser::new(c.unix_ns(0)).parse("I1231 23:00:00.000000 1 a.cc:1] x");
        assert_eq!(p.t, Some(utc("2024-12-31T23:00:00Z")));
    }

    #[test]
    fn a_glog_header_dates_the_lines_after_it() {
        let mut p = parser();
        assert!(p.note_header("Log file created at: 2019/12/31 23:59:00"));
        assert!(!p.note_header("Running on machine: x"));
        let t = |line: &str| p.parse(line).t;
        assert_eq!(
            t("I1231 23:59:30.000000 1 a.cc:1] x"),
            Some(utc("2019-12-31T23:59:30Z"))
        );
        assert_eq!(
            t("I0101 00:00:30.000000 1 a.cc:1] x"),
            Some(utc("2020-01-01T00:00:30Z"))
        );
    }

    #[test]
    fn lines_without_a_timestamp() {
        use Level::*;
        check(
            "ERROR:root:model failed to load",
            None,
            Some(Error),
            Some("root"),
            "model failed to load",
        );
        check("WARNING: low memory", None, Some(Warn), None, "low memory");
        check("loaded 32 layers", None, None, None, "loaded 32 layers");
        check(
            "Traceback (most recent call last):",
            None,
            None,
            None,
            "Traceback (most recent call last):",
        );
        check(
            "time=12 level=debug msg=tick",
            None,
            Some(Debug),
            None,
            "time=12 level=debug msg=tick",
        );
        check(
            "GET /v1 ERROR 500",
            None,
            Some(Error),
            None,
            "GET /v1 ERROR 500",
        );
    }

    #[test]
    fn level_tokens() {
        assert_eq!(
            find_level_token("a - WARNING - b", 5),
            Some((Level::Warn, 4, 11))
        );
        assert_eq!(find_level_token("[ERROR] x", 5), Some((Level::Error, 1, 6)));
        assert_eq!(find_level_token("ERRORS x", 5), None);
        assert_eq!(find_level_token("Error x", 5), None);
        assert_eq!(find_level_token("a b c d e f ERROR", 5), None);
    }
}
