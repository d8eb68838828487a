//! Structured lines: JSON objects and logfmt (`key=value ...`), with the keys loggers
//! commonly use for the time (`time`, `timestamp`, `ts`, `@timestamp`: text, or a number of
//! seconds, milliseconds, microseconds or nanoseconds), the level (`level`, `severity`,
//! `levelname`: a word in any case, or a pino/bunyan number), the message (`msg`, `message`)
//! and the source (`logger`, `name`).
use std::borrow::Cow;

use serde_json::Value;

use super::{
    lineparse::{level_of_word, LineParser, Parsed},
    timestamp,
};
use crate::logs::{detect_level, Level};

/// A level as a structured log writes it: a word in any case, or a pino/bunyan number.
fn level_value(v: &Value) -> Option<Level> {
    match v {
        Value::String(s) => level_of_word(&s.to_ascii_uppercase()),
        Value::Number(n) => {
            let n = n.as_f64()?;
            (n >= 10.0).then_some(match n as u64 {
                0..=20 => Level::Debug,
                21..=30 => Level::Info,
                31..=40 => Level::Warn,
                41..=50 => Level::Error,
                _ => Level::Fatal,
            })
        }
        _ => None,
    }
}

/// The value of `key=` in a logfmt line (quoted or bare).
fn logfmt_value<'a>(line: &'a str, key: &str) -> Option<Cow<'a, str>> {
    let mut from = 0;
    while let Some(pos) = line[from..].find(key).map(|p| from + p) {
        from = pos + key.len();
        let at_start = pos == 0 || line.as_bytes()[pos - 1] == b' ';
        if !at_start || line.as_bytes().get(from) != Some(&b'=') {
            continue;
        }
        let v = &line[from + 1..];
        let Some(quoted) = v.strip_prefix('"') else {
            return Some(Cow::Borrowed(v.split(' ').next().unwrap_or("")));
        };
        let mut out = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        return Some(Cow::Owned(out));
    }
    None
}

impl LineParser {
    /// A logfmt line with a time.
    pub(crate) fn logfmt<'a>(&self, line: &'a str) -> Option<Parsed<'a>> {
        let time = ["time", "ts", "t"]
            .iter()
            .find_map(|k| logfmt_value(line, k))?;
        let (c, _) = timestamp::iso(time.as_bytes(), false)?;
        let level = ["level", "lvl", "severity"]
            .iter()
            .find_map(|k| logfmt_value(line, k))
            .and_then(|l| level_of_word(&l.to_ascii_uppercase()))
            .or_else(|| detect_level(line));
        Some(Parsed {
            t: Some(self.settle(c)?),
            level,
            name: ["logger", "component"]
                .iter()
                .find_map(|k| logfmt_value(line, k)),
            message: ["msg", "message"]
                .iter()
                .find_map(|k| logfmt_value(line, k))
                .unwrap_or(Cow::Borrowed(line)),
            structured: true,
        })
    }

    /// A JSON object line.
    pub(crate) fn json<'a>(&self, line: &'a str) -> Option<Parsed<'a>> {
        let map: serde_json::Map<String, Value> = serde_json::from_str(line).ok()?;
        let get = |keys: &[&str]| keys.iter().find_map(|k| map.get(*k));
        let t = match get(&[
            "time",
            "timestamp",
            "ts",
            "@timestamp",
            "asctime",
            "t",
            "date",
        ]) {
            Some(Value::String(s)) => {
                let b = s.as_bytes();
                let c = timestamp::iso(b, true)
                    .or_else(|| timestamp::glog(b))
                    .or_else(|| timestamp::syslog(b))
                    .map(|(c, _)| c);
                c.and_then(|c| self.settle(c))
            }
            Some(Value::Number(n)) => n.as_f64().and_then(timestamp::epoch_number),
            _ => None,
        };
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let message = get(&["msg", "message", "event", "text", "log"]);
        let level = get(&[
            "level",
            "severity",
            "levelname",
            "lvl",
            "loglevel",
            "log.level",
        ])
        .and_then(level_value)
        .or_else(|| message.and_then(Value::as_str).and_then(detect_level));
        let name = get(&["logger", "logger_name", "name", "module", "component"])
            .and_then(Value::as_str)
            .map(|s| Cow::Owned(s.to_string()));
        Some(Parsed {
            t,
            level,
            name,
            message: message.map_or(Cow::Borrowed(line), |m| Cow::Owned(text(m))),
            structured: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        analyze::lineparse::tests::{check, parser},
        logs::Level,
    };

    #[test]
    fn json_and_logfmt() {
        use Level::*;
        check(
            r#"{"time": "2024-01-01T12:00:00Z", "level": "warning", "msg": "slow", "logger": "sched"}"#,
            Some("2024-01-01T12:00:00Z"),
            Some(Warn),
            Some("sched"),
            "slow",
        );
        check(
            r#"{"ts": 1704110400.25, "severity": "ERROR", "message": "boom"}"#,
            Some("2024-01-01T12:00:00.25Z"),
            Some(Error),
            None,
            "boom",
        );
        check(
            r#"{"@timestamp": 1704110400000, "level": 50, "msg": "pino"}"#,
            Some("2024-01-01T12:00:00Z"),
            Some(Error),
            None,
            "pino",
        );
        check(
            r#"{"levelname": "INFO", "event": "no time"}"#,
            None,
            Some(Info),
            None,
            "no time",
        );
        let p = parser().parse(r#"{"msg": "x""#);
        assert!(!p.structured, "broken JSON is text");
        check(
            r#"time="2024-01-01T12:00:00Z" level=error msg="bad \"thing\"" logger=io"#,
            Some("2024-01-01T12:00:00Z"),
            Some(Error),
            Some("io"),
            "bad \"thing\"",
        );
    }
}
