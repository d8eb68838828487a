//! Anthropic's messages API: a whole `message`, or its stream (`message_start`,
//! `content_block_delta`s, `message_delta` with the stop reason and cumulative output
//! tokens, `message_stop`, or an `error` event).

use modelprobe_recording::llm::Usage;
use serde_json::Value;

use super::{u64_at, Reply};

/// Reads a whole `message` body.
pub(super) fn body(v: &Value, reply: &mut Reply) {
    reply.set_id_model(v);
    reply.set_finish(v.get("stop_reason"));
    let texts = v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|block| block.get("text").and_then(Value::as_str));
    for text in texts {
        reply.text(text);
    }
    if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
        reply.usage = Some(merge(Usage::default(), usage));
    }
}

/// Reads one stream event; true when it carried content.
pub(super) fn event(name: &str, v: &Value, reply: &mut Reply) -> bool {
    match v.get("type").and_then(Value::as_str).unwrap_or(name) {
        "message_start" => {
            let Some(message) = v.get("message") else {
                return false;
            };
            reply.set_id_model(message);
            if let Some(usage) = message.get("usage").filter(|u| u.is_object()) {
                reply.partial_usage = Some(merge(Usage::default(), usage));
            }
            false
        }
        "content_block_delta" => {
            let delta = v.get("delta");
            let field = |key: &str| {
                delta
                    .and_then(|d| d.get(key))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            };
            match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                Some("text_delta") => field("text").inspect(|text| reply.text(text)).is_some(),
                Some("input_json_delta") => field("partial_json").is_some(),
                Some("thinking_delta") => field("thinking").is_some(),
                _ => false,
            }
        }
        "message_delta" => {
            reply.set_finish(v.get("delta").and_then(|d| d.get("stop_reason")));
            if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
                let start = reply.partial_usage.unwrap_or_default();
                reply.usage = Some(merge(start, usage));
            }
            false
        }
        "error" => {
            reply.set_error(v);
            false
        }
        _ => false,
    }
}

/// `usage` fields over `base` (a stream's `message_delta` counts are cumulative, and may
/// repeat the input counts of its `message_start`).
fn merge(base: Usage, usage: &Value) -> Usage {
    let get = |key: &str, old: u64| u64_at(usage, &[key]).unwrap_or(old);
    Usage {
        input_tokens: get("input_tokens", base.input_tokens),
        output_tokens: get("output_tokens", base.output_tokens),
        cache_read_tokens: get("cache_read_input_tokens", base.cache_read_tokens),
        cache_creation_tokens: get("cache_creation_input_tokens", base.cache_creation_tokens),
        reasoning_tokens: 0,
    }
}
