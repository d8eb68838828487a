//! A recording's spans, events and log lines as items, on the wall clock.
//!
//! Recording times are CLOCK_MONOTONIC; `meta.start_unix_ms` is the wall-clock time of
//! `meta.start_ns`, so an item at `t` happened at `start_unix_ms + (t - start_ns)`.
//!
//! - A span is named after its probed function, lasts `end_ns - start_ns`, and is `INFO`, or
//!   `ERROR` when its call failed: a pack set its `error` attribute, or an `api_error` event
//!   of the same thread is stamped with its return time. Such a failure is also an `api_error`
//!   event, so the span does not count again among errors (see [`super::Item`]).
//! - An event is named after its kind; `api_error` and `fatal_signal` are `ERROR`, `signal`
//!   is `WARN`, the rest `INFO`.
//! - A log line keeps the level detected when it was recorded; its name is its stream.
//! - An LLM API call is a span named as the GenAI convention names it (`chat gpt-4o`): its
//!   status, tokens, cost and time to first token in the message, `ERROR` when it failed.
use std::collections::HashSet;

use super::{Item, ItemKind};
use crate::{
    logs::{Level, Stream},
    recording::{EventKind, Recording, Span},
};

/// Converts CLOCK_MONOTONIC ns of one recording to Unix ns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start_ns: u64,
    start_unix_ns: u64,
}

impl Clock {
    /// The clock of `rec`.
    pub fn of(rec: &Recording) -> Self {
        Clock {
            start_ns: rec.meta.start_ns,
            start_unix_ns: rec.meta.start_unix_ms.saturating_mul(1_000_000),
        }
    }

    /// Unix ns of a CLOCK_MONOTONIC time.
    pub fn wall(&self, t: u64) -> u64 {
        let unix = i128::from(self.start_unix_ns) + i128::from(t) - i128::from(self.start_ns);
        unix.clamp(0, i128::from(u64::MAX)) as u64
    }

    /// Unix ns of the start of the recording.
    pub fn start(&self) -> u64 {
        self.start_unix_ns
    }
}

fn event_level(kind: EventKind) -> Level {
    match kind {
        EventKind::ApiError | EventKind::FatalSignal | EventKind::OomKill => Level::Error,
        EventKind::Signal | EventKind::Stopped => Level::Warn,
        _ => Level::Info,
    }
}

/// `function(args) = ret [attr=value ...]`.
fn describe_span(function: &str, s: &Span) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(function.len() + 32);
    out.push_str(function);
    out.push('(');
    for (i, a) in s.args.iter().enumerate() {
        let _ = write!(out, "{}{a}", if i > 0 { ", " } else { "" });
    }
    out.push(')');
    if let Some(ret) = s.ret {
        let _ = write!(out, " = {}", ret as i64);
    }
    if !s.attrs.is_empty() {
        out.push_str(" [");
        for (i, (k, v)) in s.attrs.iter().enumerate() {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            let _ = write!(out, "{}{k}={v}", if i > 0 { " " } else { "" });
        }
        out.push(']');
    }
    out
}

/// `chat gpt-4o: 200, 12 in + 7 out tokens, $0.000006, first token 45.1 ms [openai
/// api.openai.com/v1/chat/completions]`, and the error when it failed.
fn describe_llm_call(c: &crate::recording::llm::LlmCall) -> String {
    use std::fmt::Write;
    let mut out = format!("{}: {}", crate::export::span_name(c), c.status);
    match c.usage {
        Some(u) => {
            let _ = write!(
                out,
                ", {} in + {} out tokens",
                u.input_tokens, u.output_tokens
            );
        }
        None if c.usage_missing => out.push_str(", usage not reported"),
        None => {}
    }
    if let Some(cost) = c.cost_usd {
        let _ = write!(out, ", ${cost:.6}");
    }
    if c.first_token_ns > c.start_ns {
        let _ = write!(
            out,
            ", first token {:.1} ms",
            (c.first_token_ns - c.start_ns) as f64 / 1e6
        );
    }
    if let Some(e) = &c.error {
        let _ = write!(out, ", error {} {}", e.kind, e.message);
    }
    let _ = write!(out, " [{} {}{}]", c.provider, c.host, c.path);
    out
}

/// Every span, event and log line of `rec` as items of input `input`, in time order.
pub(crate) fn items(rec: &Recording, input: usize) -> Vec<Item> {
    let clock = Clock::of(rec);
    let failed_returns: HashSet<(u32, u32, u64)> = rec
        .events
        .iter()
        .filter(|e| e.kind == EventKind::ApiError)
        .map(|e| (e.pid, e.tid, e.time_ns))
        .collect();
    let mut out = Vec::with_capacity(rec.spans.len() + rec.events.len() + rec.logs.len());
    for s in &rec.spans {
        let function = rec
            .probes
            .get(s.probe as usize)
            .map_or("?", |p| p.function.as_str());
        let reported = failed_returns.contains(&(s.pid, s.tid, s.end_ns));
        let failed = reported || s.attrs.contains_key("error");
        out.push(Item {
            input,
            t: Some(clock.wall(s.start_ns)),
            level: Some(if failed { Level::Error } else { Level::Info }),
            kind: ItemKind::Span,
            name: Some(function.to_string()),
            message: describe_span(function, s),
            duration_ns: Some(s.end_ns.saturating_sub(s.start_ns)),
            counts_as_error: !reported,
        });
    }
    for e in &rec.events {
        out.push(Item {
            input,
            t: Some(clock.wall(e.time_ns)),
            level: Some(event_level(e.kind)),
            kind: ItemKind::Event,
            name: Some(e.kind.name().to_string()),
            message: e.message.clone(),
            duration_ns: None,
            counts_as_error: true,
        });
    }
    for c in &rec.llm.calls {
        let failed = c.error.is_some() || c.status >= 400;
        out.push(Item {
            input,
            t: Some(clock.wall(c.start_ns)),
            level: Some(if failed { Level::Error } else { Level::Info }),
            kind: ItemKind::Span,
            name: Some(crate::export::span_name(c)),
            message: describe_llm_call(c),
            duration_ns: Some(c.end_ns.saturating_sub(c.start_ns)),
            counts_as_error: true,
        });
    }
    for l in &rec.logs {
        out.push(Item {
            input,
            t: Some(clock.wall(l.time_ns)),
            level: l.level,
            kind: ItemKind::Log,
            name: Some(
                match l.stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                }
                .to_string(),
            ),
            message: l.message.clone(),
            duration_ns: None,
            counts_as_error: true,
        });
    }
    // Stable: at equal times, spans before events before logs.
    out.sort_by_key(|i| i.t);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        logs::LogLine,
        recording::{Event, Meta, ProbeInfo},
    };

    /// A recording started at Unix time 1000 s (monotonic 5 s) with one probe, a failed call
    /// reported by an event, a good call, a signal and two log lines.
    pub(crate) fn recording() -> Recording {
        let mut rec = Recording::new(Meta {
            start_ns: 5_000_000_000,
            end_ns: 9_000_000_000,
            start_unix_ms: 1_000_000,
            ..Meta::default()
        });
        rec.probes.push(ProbeInfo {
            spec: "cudart:cudaMemcpy".into(),
            path: "/lib/libcudart.so".into(),
            function: "cudaMemcpy".into(),
            args: 1,
            pack: Some("cuda-runtime".into()),
        });
        let span = |start: u64, end: u64, ret: u64| Span {
            probe: 0,
            pid: 7,
            tid: 8,
            start_ns: start,
            end_ns: end,
            depth: 0,
            args: vec![4096],
            ret: Some(ret),
            attrs: Default::default(),
            stack: None,
        };
        let mut failed = span(6_000_000_000, 6_003_000_000, 1);
        failed
            .attrs
            .insert("error".into(), serde_json::json!("cudaErrorInvalidValue"));
        rec.spans = vec![failed, span(7_000_000_000, 7_001_000_000, 0)];
        let event = |t, kind, message: &str| Event {
            time_ns: t,
            pid: 7,
            tid: 8,
            kind,
            message: message.into(),
            value: None,
            stack: None,
        };
        rec.events = vec![
            event(
                6_003_000_000,
                EventKind::ApiError,
                "cudaMemcpy returned 1 (cudaErrorInvalidValue)",
            ),
            event(8_000_000_000, EventKind::Signal, "signal SIGUSR1"),
        ];
        let log = |t, level, message: &str| LogLine {
            time_ns: t,
            pid: 7,
            tid: 7,
            stream: Stream::Stderr,
            level,
            message: message.into(),
        };
        rec.logs = vec![
            log(5_500_000_000, Some(Level::Info), "INFO: starting"),
            log(8_500_000_000, None, "plain"),
        ];
        rec
    }

    #[test]
    fn spans_events_and_logs_on_the_wall_clock() {
        let items = items(&recording(), 3);
        let summary: Vec<(u64, ItemKind, Option<Level>, &str, bool)> = items
            .iter()
            .map(|i| {
                (
                    i.t.unwrap(),
                    i.kind,
                    i.level,
                    i.name.as_deref().unwrap(),
                    i.counts_as_error,
                )
            })
            .collect();
        use ItemKind::*;
        assert_eq!(
            summary,
            vec![
                (1_000_500_000_000, Log, Some(Level::Info), "stderr", true),
                (
                    1_001_000_000_000,
                    Span,
                    Some(Level::Error),
                    "cudaMemcpy",
                    false
                ),
                (
                    1_001_003_000_000,
                    Event,
                    Some(Level::Error),
                    "api_error",
                    true
                ),
                (
                    1_002_000_000_000,
                    Span,
                    Some(Level::Info),
                    "cudaMemcpy",
                    true
                ),
                (1_003_000_000_000, Event, Some(Level::Warn), "signal", true),
                (1_003_500_000_000, Log, None, "stderr", true),
            ]
        );
        assert_eq!(items[1].duration_ns, Some(3_000_000));
        assert_eq!(
            items[1].message,
            "cudaMemcpy(4096) = 1 [error=cudaErrorInvalidValue]"
        );
        assert!(items.iter().all(|i| i.input == 3));
    }

    #[test]
    fn llm_calls_are_spans_named_by_operation_and_model() {
        use crate::recording::llm::{LlmCall, LlmError, Usage};
        let mut rec = recording();
        let call = |start: u64, status: u16| LlmCall {
            start_ns: start,
            first_token_ns: start + 45_100_000,
            end_ns: start + 90_000_000,
            provider: "openai".into(),
            endpoint: "chat.completions".into(),
            host: "api.openai.com".into(),
            path: "/v1/chat/completions".into(),
            model: "gpt-4o".into(),
            status,
            usage: Some(Usage {
                input_tokens: 12,
                output_tokens: 7,
                ..Usage::default()
            }),
            cost_usd: Some(0.000_1),
            ..LlmCall::default()
        };
        let mut failed = call(6_500_000_000, 429);
        failed.error = Some(LlmError {
            kind: "rate_limit_exceeded".into(),
            ..LlmError::default()
        });
        failed.usage = None;
        rec.llm.calls = vec![call(6_200_000_000, 200), failed];
        let items = items(&rec, 0);
        let llm: Vec<&Item> = items
            .iter()
            .filter(|i| i.name.as_deref() == Some("chat gpt-4o"))
            .collect();
        assert_eq!(llm.len(), 2);
        assert_eq!(
            llm[0].message,
            "chat gpt-4o: 200, 12 in + 7 out tokens, $0.000100, first token 45.1 ms [openai api.openai.com/v1/chat/completions]"
        );
        assert_eq!(llm[0].duration_ns, Some(90_000_000));
        assert_eq!(llm[0].level, Some(Level::Info));
        assert!(llm[1].is_error());
        assert!(
            llm[1].message.contains("error rate_limit_exceeded"),
            "{}",
            llm[1].message
        );
    }
}
