//! The LLM API calls of a recording: what each model cost in calls, tokens, money and time to
//! first token, the calls that failed, and what the capture could not account for.
use std::collections::BTreeMap;

use serde_json::json;

use super::{quantile, round, Section};
use crate::recording::{llm::LlmCall, Recording};

fn ms(ns: u64) -> serde_json::Value {
    round(ns as f64 / 1e6, 1)
}

/// The headline's line: calls, tokens and cost, when there were LLM calls.
pub(super) fn headline(rec: &Recording) -> Option<String> {
    let calls = &rec.llm.calls;
    if calls.is_empty() {
        return None;
    }
    let (input, output) = calls
        .iter()
        .filter_map(|c| c.usage)
        .fold((0, 0), |(i, o), u| {
            (i + u.input_tokens, o + u.output_tokens)
        });
    let cost: f64 = calls.iter().filter_map(|c| c.cost_usd).sum();
    let unpriced = calls.iter().filter(|c| c.cost_usd.is_none()).count();
    let errors = calls
        .iter()
        .filter(|c| c.error.is_some() || c.status >= 400)
        .count();
    let mut line = format!(
        "{} calls, {input} input + {output} output tokens, ${cost:.4}",
        calls.len()
    );
    if unpriced > 0 {
        line.push_str(&format!(" ({unpriced} without a price or usage)"));
    }
    if errors > 0 {
        line.push_str(&format!(", {errors} failed"));
    }
    Some(line)
}

/// Calls, tokens, cost and latency by provider, model and endpoint, with a total row.
pub(super) fn calls(rec: &Recording) -> Section {
    let (id, title) = ("llm_calls", "LLM calls (from TLS plaintext)");
    let trace = &rec.llm;
    if trace.calls.is_empty() {
        let st = &trace.stats;
        return Section::absent(
            id,
            title,
            format!(
                "none: {} connection(s) carried data, {} HTTP request(s) to other APIs, {} HTTP/2 connection(s) not parsed",
                st.connections, st.other_requests, st.http2_connections
            ),
        );
    }
    let mut s = Section::table(
        id,
        title,
        &[
            "provider",
            "model",
            "endpoint",
            "calls",
            "errors",
            "input tok",
            "output tok",
            "cached tok",
            "cost $",
            "TTFT p50 ms",
            "TTFT p95 ms",
            "duration p50 ms",
        ],
    );
    let mut groups: BTreeMap<(&str, &str, &str), Vec<&LlmCall>> = BTreeMap::new();
    for c in &trace.calls {
        groups
            .entry((&c.provider, &c.model, &c.endpoint))
            .or_default()
            .push(c);
    }
    let mut row = |label: (&str, &str, &str), calls: &[&LlmCall]| {
        let usage = |f: fn(&crate::recording::llm::Usage) -> u64| -> u64 {
            calls.iter().filter_map(|c| c.usage.as_ref()).map(f).sum()
        };
        let mut ttft: Vec<u64> = calls
            .iter()
            .filter(|c| c.first_token_ns > c.start_ns)
            .map(|c| c.first_token_ns - c.start_ns)
            .collect();
        ttft.sort_unstable();
        let mut duration: Vec<u64> = calls
            .iter()
            .map(|c| c.end_ns.saturating_sub(c.start_ns))
            .collect();
        duration.sort_unstable();
        let priced: Vec<f64> = calls.iter().filter_map(|c| c.cost_usd).collect();
        s.rows.push(vec![
            json!(label.0),
            json!(label.1),
            json!(label.2),
            json!(calls.len()),
            json!(calls
                .iter()
                .filter(|c| c.error.is_some() || c.status >= 400)
                .count()),
            json!(usage(|u| u.input_tokens)),
            json!(usage(|u| u.output_tokens)),
            json!(usage(|u| u.cache_read_tokens)),
            if priced.is_empty() {
                json!(null)
            } else {
                round(priced.iter().sum(), 6)
            },
            if ttft.is_empty() {
                json!(null)
            } else {
                ms(quantile(&ttft, 0.5))
            },
            if ttft.is_empty() {
                json!(null)
            } else {
                ms(quantile(&ttft, 0.95))
            },
            ms(quantile(&duration, 0.5)),
        ]);
    };
    for (label, calls) in &groups {
        row(*label, calls);
    }
    if groups.len() > 1 {
        let all: Vec<&LlmCall> = trace.calls.iter().collect();
        row(("all", "", ""), &all);
    }
    s
}

/// Calls that failed: status, error and retry-after.
pub(super) fn errors(rec: &Recording) -> Option<Section> {
    let failed: Vec<&LlmCall> = rec
        .llm
        .calls
        .iter()
        .filter(|c| c.error.is_some() || c.status >= 400)
        .collect();
    if failed.is_empty() {
        return None;
    }
    let mut s = Section::table(
        "llm_errors",
        "LLM calls that failed",
        &[
            "t s",
            "pid",
            "model",
            "status",
            "error",
            "retry after s",
            "message",
        ],
    );
    for c in failed {
        let e = c.error.clone().unwrap_or_default();
        s.rows.push(vec![
            round(c.start_ns.saturating_sub(rec.meta.start_ns) as f64 / 1e9, 3),
            json!(c.pid),
            json!(c.model),
            json!(c.status),
            json!(e.kind),
            json!(e.retry_after_s),
            json!(e.message),
        ]);
    }
    Some(s)
}

/// What the capture could not account for, when anything: each count with what it means.
pub(super) fn capture(rec: &Recording) -> Option<Section> {
    let st = &rec.llm.stats;
    let calls = &rec.llm.calls;
    let usage_missing = calls.iter().filter(|c| c.usage_missing).count() as u64;
    let incomplete = calls.iter().filter(|c| c.incomplete).count() as u64;
    let not_decoded = calls.iter().filter(|c| c.body_not_decoded).count() as u64;
    let rows: Vec<(&str, u64, &str)> = vec![
        (
            "streams without usage",
            usage_missing,
            "their tokens and cost are unknown (OpenAI streams report usage only with stream_options.include_usage)",
        ),
        ("calls incomplete", incomplete, "part of their bytes were not captured"),
        (
            "answers not decoded",
            not_decoded,
            "a Content-Encoding modelprobe does not decode (zstd): usage unknown",
        ),
        ("bytes not captured", st.bytes_not_captured, "past the per-call capture limit, or lost"),
        ("TLS records lost", st.records_lost, "the TLS ring buffer was full"),
        ("exchanges not parsed", st.unparsed_exchanges, "not HTTP/1.x where expected (after a gap)"),
        ("HTTP/2 connections", st.http2_connections, "detected and counted, not parsed"),
        (
            "bytes skipped",
            st.bytes_skipped,
            "large bodies of other requests (downloads): counted in the kernel, not sent",
        ),
        ("other protocols", st.other_connections, "TLS connections that were not HTTP"),
    ];
    let rows: Vec<_> = rows.into_iter().filter(|r| r.1 > 0).collect();
    if rows.is_empty() {
        return None;
    }
    let mut s = Section::table(
        "llm_capture",
        "LLM capture: what is not in the calls above",
        &["what", "count", "meaning"],
    );
    for (what, n, meaning) in rows {
        s.rows.push(vec![json!(what), json!(n), json!(meaning)]);
    }
    Some(s)
}
