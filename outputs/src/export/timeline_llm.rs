//! LLM calls on the timeline: one async slice per call (calls overlap on an asyncio thread, so
//! they get their own tracks rather than nesting on the thread), named `chat gpt-4o` after the
//! OpenTelemetry GenAI span convention, with its `gen_ai.*` attributes and an instant at the
//! first token.
use std::io::Write;

use serde_json::{json, Map, Value};

use crate::recording::{llm::LlmCall, Recording};

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// The GenAI operation (`gen_ai.operation.name`) of an endpoint.
pub(crate) fn operation(endpoint: &str) -> &'static str {
    match endpoint {
        "embeddings" => "embeddings",
        "completions" => "text_completion",
        "responses" => "generate_content",
        _ => "chat",
    }
}

/// A call's attributes in the OpenTelemetry GenAI semantic conventions (and HTTP's).
pub fn gen_ai_attributes(c: &LlmCall) -> Map<String, Value> {
    let mut a = Map::new();
    let mut put = |k: &str, v: Value| {
        a.insert(k.to_string(), v);
    };
    put("gen_ai.operation.name", json!(operation(&c.endpoint)));
    put("gen_ai.provider.name", json!(c.provider));
    put("gen_ai.request.model", json!(c.model));
    if !c.response_model.is_empty() {
        put("gen_ai.response.model", json!(c.response_model));
    }
    if let Some(m) = c.max_tokens {
        put("gen_ai.request.max_tokens", json!(m));
    }
    if let Some(t) = c.temperature {
        put("gen_ai.request.temperature", json!(t));
    }
    if !c.response_id.is_empty() {
        put("gen_ai.response.id", json!(c.response_id));
    }
    if !c.finish_reason.is_empty() {
        put("gen_ai.response.finish_reasons", json!([c.finish_reason]));
    }
    if let Some(u) = c.usage {
        put("gen_ai.usage.input_tokens", json!(u.input_tokens));
        put("gen_ai.usage.output_tokens", json!(u.output_tokens));
        put(
            "gen_ai.usage.cache_read.input_tokens",
            json!(u.cache_read_tokens),
        );
        put(
            "gen_ai.usage.cache_creation.input_tokens",
            json!(u.cache_creation_tokens),
        );
    }
    put("server.address", json!(c.host));
    put("http.request.method", json!(c.method));
    put("url.path", json!(c.path));
    if c.status != 0 {
        put("http.response.status_code", json!(c.status));
    }
    if let Some(e) = &c.error {
        put(
            "error.type",
            json!(if e.kind.is_empty() { "error" } else { &e.kind }),
        );
    }
    if let Some(cost) = c.cost_usd {
        put("modelprobe.cost_usd", json!(cost));
    }
    if c.first_token_ns > c.start_ns {
        put(
            "modelprobe.time_to_first_token_ms",
            json!((c.first_token_ns - c.start_ns) as f64 / 1e6),
        );
    }
    if c.usage_missing {
        put("modelprobe.usage_missing", json!(true));
    }
    a
}

/// The span name the GenAI convention gives a call: `{operation} {model}`.
pub fn span_name(c: &LlmCall) -> String {
    format!("{} {}", operation(&c.endpoint), c.model)
}

/// Writes each call's begin, first-token and end events; `sep` writes the separator before
/// each event.
pub(super) fn write_llm_events(
    rec: &Recording,
    w: &mut dyn Write,
    sep: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    for (i, c) in rec.llm.calls.iter().enumerate() {
        let name = span_name(c);
        let id = format!("llm{i}");
        let common = |ph: &str, ts: u64| {
            json!({"ph": ph, "cat": "llm", "id": id, "name": name, "pid": c.pid, "tid": c.tid,
                "ts": us(ts)})
        };
        let mut begin = common("b", c.start_ns);
        begin["args"] = Value::Object(gen_ai_attributes(c));
        let mut events = vec![begin];
        if c.first_token_ns > c.start_ns {
            let mut first = common("n", c.first_token_ns);
            first["name"] = json!("first token");
            events.push(first);
        }
        events.push(common("e", c.end_ns.max(c.start_ns)));
        for e in events {
            sep(w)?;
            serde_json::to_writer(&mut *w, &e).map_err(std::io::Error::from)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::llm::{LlmError, Usage};

    #[test]
    fn a_call_becomes_async_events_with_gen_ai_attributes() {
        let mut rec = crate::recording::fixtures::sample_recording();
        rec.llm.calls.push(LlmCall {
            pid: 7,
            tid: 8,
            start_ns: 1_000_000,
            first_token_ns: 3_000_000,
            end_ns: 9_000_000,
            provider: "openai".into(),
            endpoint: "chat.completions".into(),
            model: "gpt-4o".into(),
            status: 429,
            usage: Some(Usage {
                input_tokens: 5,
                output_tokens: 2,
                ..Usage::default()
            }),
            error: Some(LlmError {
                kind: "rate_limit_exceeded".into(),
                ..LlmError::default()
            }),
            ..LlmCall::default()
        });
        let mut buf = Vec::new();
        write_llm_events(&rec, &mut buf, &mut |w| w.write_all(b"\n")).unwrap();
        let events: Vec<Value> = String::from_utf8(buf)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let phases: Vec<&str> = events.iter().map(|e| e["ph"].as_str().unwrap()).collect();
        assert_eq!(phases, ["b", "n", "e"]);
        let b = &events[0];
        assert_eq!(b["name"], "chat gpt-4o");
        assert_eq!(b["args"]["gen_ai.usage.input_tokens"], 5);
        assert_eq!(b["args"]["error.type"], "rate_limit_exceeded");
        assert_eq!(b["args"]["modelprobe.time_to_first_token_ms"], 2.0);
        assert_eq!(
            (b["ts"].as_f64(), events[2]["ts"].as_f64()),
            (Some(1000.0), Some(9000.0))
        );
        assert!(events.iter().all(|e| e["id"] == "llm0"));
    }
}
