//! Spans: every probe span (named after its function, nested by time on its thread, so a
//! thread's outermost call is the root of a trace) and every LLM call (a CLIENT span with the
//! GenAI attributes, the child of the probe span around it on its thread, if any).
use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status},
};

use super::{kv_int, kv_json, kv_str, mix, recording_seed, resource, scope, unix_ns};
use crate::{export::timeline_llm, recording::Recording};

/// Ids of a span: its trace's and its own.
#[derive(Debug, Clone, Copy)]
struct Ids {
    trace: [u8; 16],
    span: [u8; 8],
}

/// One thing to become a span: a probe span or an LLM call, by index.
#[derive(Debug, Clone, Copy)]
enum Item {
    Probe(usize),
    Llm(usize),
}

/// Parents by containment on each thread: an item's parent is the innermost earlier item on
/// its thread whose interval holds it. LLM calls are leaves (calls overlap on an asyncio
/// thread).
fn nest(rec: &Recording) -> Vec<(Item, Option<usize>)> {
    // (start, end, item) per (pid, tid).
    type Interval = (u64, u64, Item);
    let mut by_thread: HashMap<(u32, u32), Vec<Interval>> = HashMap::new();
    for (i, s) in rec.spans.iter().enumerate() {
        by_thread
            .entry((s.pid, s.tid))
            .or_default()
            .push((s.start_ns, s.end_ns, Item::Probe(i)));
    }
    for (i, c) in rec.llm.calls.iter().enumerate() {
        by_thread.entry((c.pid, c.tid)).or_default().push((
            c.start_ns,
            c.end_ns.max(c.start_ns),
            Item::Llm(i),
        ));
    }
    let mut out = Vec::new();
    let mut threads: Vec<_> = by_thread.into_iter().collect();
    threads.sort_by_key(|(k, _)| *k);
    for (_, mut items) in threads {
        // Outer before inner at the same start; probe spans before calls.
        items.sort_by_key(|&(s, e, it)| (s, std::cmp::Reverse(e), matches!(it, Item::Llm(_))));
        let mut open: Vec<(u64, usize)> = Vec::new(); // (end, index in out)
        for (start, end, item) in items {
            // An open span holds this one if it ends no earlier (it started no later).
            while open
                .last()
                .is_some_and(|&(e, _)| e < end || (e <= start && start < end))
            {
                open.pop();
            }
            let parent = open.last().map(|&(_, at)| at);
            out.push((item, parent));
            if matches!(item, Item::Probe(_)) {
                open.push((end, out.len() - 1));
            }
        }
    }
    out
}

/// The spans of a recording, batched into requests.
pub(super) fn requests(rec: &Recording) -> Vec<(ExportTraceServiceRequest, usize)> {
    let seed = recording_seed(rec);
    let nested = nest(rec);
    let mut ids: Vec<Ids> = Vec::with_capacity(nested.len());
    let mut by_pid: BTreeMap<u32, Vec<Span>> = BTreeMap::new();
    for (n, &(item, parent)) in nested.iter().enumerate() {
        let span_id = mix(seed ^ (n as u64 + 1)).max(1).to_be_bytes();
        let trace = match parent {
            Some(p) => ids[p].trace,
            None => {
                let hi = mix(seed).to_be_bytes();
                let lo = mix(seed.rotate_left(17) ^ (n as u64 + 1)).to_be_bytes();
                let mut t = [0u8; 16];
                t[..8].copy_from_slice(&hi);
                t[8..].copy_from_slice(&lo);
                t
            }
        };
        ids.push(Ids {
            trace,
            span: span_id,
        });
        let parent_span_id = parent.map(|p| ids[p].span.to_vec()).unwrap_or_default();
        let (pid, span) = match item {
            Item::Probe(i) => probe_span(rec, i),
            Item::Llm(i) => llm_span(rec, i),
        };
        by_pid.entry(pid).or_default().push(Span {
            trace_id: trace.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id,
            ..span
        });
    }
    let resources = resource::processes(rec);
    super::batched(by_pid, |pid, spans| ResourceSpans {
        resource: Some(resource::of(rec, &resources, pid)),
        scope_spans: vec![ScopeSpans {
            scope: Some(scope()),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    })
    .into_iter()
    .map(|(resource_spans, n)| (ExportTraceServiceRequest { resource_spans }, n))
    .collect()
}

fn probe_span(rec: &Recording, i: usize) -> (u32, Span) {
    let s = &rec.spans[i];
    let probe = &rec.probes[s.probe as usize];
    let mut attributes = vec![
        kv_int("thread.id", s.tid as i64),
        kv_str("code.function.name", probe.function.clone()),
        kv_str("modelprobe.probe.file", probe.path.clone()),
    ];
    if let Some(pack) = &probe.pack {
        attributes.push(kv_str("modelprobe.probe.pack", pack.clone()));
    }
    for (k, v) in &s.attrs {
        attributes.push(kv_json(k, v));
    }
    if !s.args.is_empty() {
        attributes.push(kv_json("modelprobe.args", &serde_json::json!(s.args)));
    }
    match s.ret {
        Some(r) => attributes.push(kv_json("modelprobe.return", &serde_json::json!(r))),
        None => attributes.push(kv_json("modelprobe.unfinished", &serde_json::json!(true))),
    }
    let status = s.attrs.get("error").map(|e| Status {
        code: StatusCode::Error as i32,
        message: e.as_str().map_or_else(|| e.to_string(), str::to_string),
    });
    let span = Span {
        name: probe.function.clone(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: unix_ns(rec, s.start_ns),
        end_time_unix_nano: unix_ns(rec, s.end_ns.max(s.start_ns)),
        attributes,
        status,
        ..Default::default()
    };
    (s.pid, span)
}

fn llm_span(rec: &Recording, i: usize) -> (u32, Span) {
    let c = &rec.llm.calls[i];
    let mut attributes = vec![kv_int("thread.id", c.tid as i64)];
    for (k, v) in timeline_llm::gen_ai_attributes(c) {
        attributes.push(kv_json(&k, &v));
    }
    let failed = c.error.is_some() || c.status >= 400;
    let status = failed.then(|| Status {
        code: StatusCode::Error as i32,
        message: c.error.as_ref().map_or_else(
            || format!("HTTP {}", c.status),
            |e| format!("{}: {}", e.kind, e.message),
        ),
    });
    let mut events = Vec::new();
    if c.first_token_ns > c.start_ns {
        events.push(opentelemetry_proto::tonic::trace::v1::span::Event {
            time_unix_nano: unix_ns(rec, c.first_token_ns),
            name: "gen_ai.first_token".into(),
            ..Default::default()
        });
    }
    let span = Span {
        name: timeline_llm::span_name(c),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: unix_ns(rec, c.start_ns),
        end_time_unix_nano: unix_ns(rec, c.end_ns.max(c.start_ns)),
        attributes,
        events,
        status,
        ..Default::default()
    };
    (c.pid, span)
}
