//! OpenAI's response shapes, also spoken by OpenAI-compatible servers: chat completions and
//! legacy completions (whole or streamed as `chat.completion.chunk`s up to `[DONE]`), the
//! responses API (whole or as `response.*` events) and embeddings.

use serde_json::Value;

use super::{openai_usage, Api, Reply};

/// Reads a whole response body.
pub(super) fn body(api: Api, v: &Value, reply: &mut Reply) {
    match api {
        Api::Responses => response_object(v, reply, true),
        _ => {
            reply.set_id_model(v);
            if let Some(choice) = first_choice(v) {
                reply.set_finish(choice.get("finish_reason"));
                let message = choice.get("message");
                for key in ["content", "refusal"] {
                    if let Some(text) = message.and_then(|m| m.get(key)).and_then(Value::as_str) {
                        reply.text(text);
                    }
                }
                if let Some(text) = choice.get("text").and_then(Value::as_str) {
                    reply.text(text);
                }
            }
            if let Some(usage) = v.get("usage").and_then(openai_usage) {
                reply.usage = Some(usage);
            }
        }
    }
}

/// Reads one stream event; true when it carried content.
pub(super) fn event(api: Api, name: &str, v: &Value, reply: &mut Reply) -> bool {
    match api {
        Api::Responses => responses_event(name, v, reply),
        _ => chunk(v, reply),
    }
}

/// The choices of a completion or chunk.
fn choices(v: &Value) -> &[Value] {
    v.get("choices")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Which of `choices` is the first: the one with index 0, else the first listed.
fn first_index(choices: &[Value]) -> usize {
    choices
        .iter()
        .position(|c| c.get("index").and_then(Value::as_u64) == Some(0))
        .unwrap_or(0)
}

/// The first choice of a completion.
fn first_choice(v: &Value) -> Option<&Value> {
    let choices = choices(v);
    choices.get(first_index(choices))
}

/// A `chat.completion.chunk` (or a streamed legacy completion).
fn chunk(v: &Value, reply: &mut Reply) -> bool {
    reply.set_error(v);
    reply.set_id_model(v);
    reply.set_provider_cost(v);
    if let Some(usage) = v.get("usage").and_then(openai_usage) {
        reply.usage = Some(usage);
    }
    let mut content = false;
    let choices = choices(v);
    let first = first_index(choices);
    for (i, choice) in choices.iter().enumerate() {
        let is_first = i == first;
        let delta = choice.get("delta");
        let delta_text = |key: &str| {
            delta
                .and_then(|d| d.get(key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        for text in [
            delta_text("content"),
            delta_text("refusal"),
            nonempty(choice.get("text")),
        ]
        .into_iter()
        .flatten()
        {
            content = true;
            if is_first {
                reply.text(text);
            }
        }
        let tool_calls = delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
            .is_some_and(|calls| !calls.is_empty());
        let reasoning = delta_text("reasoning_content").or(delta_text("reasoning"));
        content |= tool_calls || reasoning.is_some();
        if is_first || reply.finish_reason.is_empty() {
            reply.set_finish(choice.get("finish_reason"));
        }
    }
    content
}

fn nonempty(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// An event of a streamed responses-API response.
fn responses_event(name: &str, v: &Value, reply: &mut Reply) -> bool {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or(name);
    match kind {
        "response.output_text.delta" | "response.refusal.delta" => {
            if let Some(delta) = nonempty(v.get("delta")) {
                reply.text(delta);
                return true;
            }
            false
        }
        "response.function_call_arguments.delta"
        | "response.reasoning_summary_text.delta"
        | "response.reasoning_text.delta" => nonempty(v.get("delta")).is_some(),
        "error" => {
            let text = |key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default();
            let code = text("code");
            reply.error = Some(modelprobe_recording::llm::LlmError {
                kind: if code.is_empty() { "error" } else { code }.to_owned(),
                message: text("message").to_owned(),
                retry_after_s: None,
            });
            false
        }
        _ => {
            if let Some(response) = v.get("response") {
                response_object(response, reply, false);
            }
            false
        }
    }
}

/// A responses-API `response` object (a whole body, or the one in `response.created`,
/// `response.completed`, `response.incomplete`, `response.failed`). `with_text`: take its
/// output text (a stream's text came in deltas instead).
fn response_object(r: &Value, reply: &mut Reply, with_text: bool) {
    reply.set_id_model(r);
    reply.set_error(r);
    reply.set_provider_cost(r);
    let reason = r
        .get("incomplete_details")
        .and_then(|d| d.get("reason"))
        .or_else(|| r.get("status"));
    reply.set_finish(reason);
    if let Some(usage) = r.get("usage").and_then(openai_usage) {
        reply.usage = Some(usage);
    }
    if with_text {
        let texts = r
            .get("output")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|item| item.get("content").and_then(Value::as_array))
            .flatten()
            .filter(|part| part.get("type").and_then(Value::as_str) == Some("output_text"))
            .filter_map(|part| part.get("text").and_then(Value::as_str));
        for text in texts {
            reply.text(text);
        }
    }
}
