//! What the LLM APIs say: which requests are LLM calls, what a request asks for, and what a
//! response (a JSON body or a stream of events) reports: ids, models, why generation
//! stopped, token usage, errors and completion text.
//!
//! The OpenAI shapes (chat completions, completions, responses, embeddings; also spoken by
//! OpenAI-compatible servers) are read in [`openai`], Anthropic's messages API in
//! [`anthropic`].

mod anthropic;
mod openai;

use modelprobe_recording::llm::{LlmCall, LlmError, Usage};
use serde_json::Value;

use crate::{io::Capped, sse};

/// An LLM API, by the path of its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// `/chat/completions`.
    ChatCompletions,
    /// `/completions` (legacy text completions).
    Completions,
    /// `/responses`.
    Responses,
    /// `/embeddings`.
    Embeddings,
    /// `/messages` (Anthropic's shape).
    Messages,
}

impl Api {
    /// The API a request path (without its query) is to, if any.
    pub fn from_path(path: &str) -> Option<Api> {
        let path = path.trim_end_matches('/');
        [
            ("/chat/completions", Api::ChatCompletions),
            ("/completions", Api::Completions),
            ("/responses", Api::Responses),
            ("/embeddings", Api::Embeddings),
            ("/messages", Api::Messages),
        ]
        .into_iter()
        .find(|(suffix, _)| path.ends_with(suffix))
        .map(|(_, api)| api)
    }

    /// Its name in [`LlmCall::endpoint`].
    pub fn endpoint(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat.completions",
            Api::Completions => "completions",
            Api::Responses => "responses",
            Api::Embeddings => "embeddings",
            Api::Messages => "messages",
        }
    }
}

/// The provider a request went to: `openai`, `anthropic` or `openai-compatible`.
/// `anthropic_headers`: the request carried `anthropic-version` or `x-api-key`.
pub(crate) fn provider(host: &str, api: Api, anthropic_headers: bool) -> &'static str {
    let host = host
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host == "api.openai.com" || host.ends_with(".openai.azure.com") {
        "openai"
    } else if host.contains("anthropic") || (api == Api::Messages && anthropic_headers) {
        "anthropic"
    } else {
        "openai-compatible"
    }
}

/// Reads what a request body asks for into `call`.
pub(crate) fn read_request(body: &Value, call: &mut LlmCall) {
    if let Some(model) = body.get("model").and_then(Value::as_str) {
        call.model = model.to_owned();
    }
    call.stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    call.max_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|key| body.get(key).and_then(Value::as_u64));
    call.temperature = body.get("temperature").and_then(Value::as_f64);
}

/// What a response has said so far.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    /// The response's id.
    pub id: String,
    /// The model it names.
    pub model: String,
    /// Why generation stopped.
    pub finish_reason: String,
    /// Token counts, once complete.
    pub usage: Option<Usage>,
    /// Usage seen at the start of an Anthropic stream, waiting for the output count.
    partial_usage: Option<Usage>,
    /// A cost the server reported itself.
    pub provider_cost: Option<f64>,
    /// The API's error.
    pub error: Option<LlmError>,
    /// Completion text, when captured.
    pub completion: Option<Capped>,
}

impl Reply {
    fn text(&mut self, text: &str) {
        if let Some(completion) = &mut self.completion {
            completion.push(text);
        }
    }

    fn set_id_model(&mut self, v: &Value) {
        if let Some(id) = v.get("id").and_then(Value::as_str) {
            self.id = id.to_owned();
        }
        if let Some(model) = v.get("model").and_then(Value::as_str) {
            self.model = model.to_owned();
        }
    }

    fn set_finish(&mut self, reason: Option<&Value>) {
        if let Some(reason) = reason.and_then(Value::as_str) {
            self.finish_reason = reason.to_owned();
        }
    }

    fn set_provider_cost(&mut self, v: &Value) {
        let cost = v
            .get("cost")
            .or_else(|| v.get("usage").and_then(|u| u.get("cost")))
            .and_then(Value::as_f64);
        if cost.is_some() {
            self.provider_cost = cost;
        }
    }

    fn set_error(&mut self, v: &Value) {
        if let Some(error) = read_error(v) {
            self.error = Some(error);
        }
    }

    /// Reads a whole JSON response body.
    pub fn read_body(&mut self, api: Api, body: &Value) {
        self.set_error(body);
        self.set_provider_cost(body);
        match api {
            Api::Messages => anthropic::body(body, self),
            _ => openai::body(api, body, self),
        }
    }

    /// Reads one event of a stream; true when it carried content (output text, a tool call,
    /// reasoning).
    pub fn read_event(&mut self, api: Api, event: &sse::Event) -> bool {
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return false;
        };
        match api {
            Api::Messages => anthropic::event(&event.name, &data, self),
            _ => openai::event(api, &event.name, &data, self),
        }
    }
}

/// The error in an OpenAI (`{"error": {"message", "type", "code"}}`) or Anthropic
/// (`{"type": "error", "error": {"type", "message"}}`) error body or event.
pub(crate) fn read_error(v: &Value) -> Option<LlmError> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    match v.get("error")? {
        Value::Object(error) => {
            let code = error.get("code").and_then(|c| match c {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            Some(LlmError {
                kind: code.unwrap_or_else(|| text(error.get("type"))),
                message: text(error.get("message")),
                retry_after_s: None,
            })
        }
        Value::String(message) => Some(LlmError {
            message: message.clone(),
            ..LlmError::default()
        }),
        _ => None,
    }
}

/// A number at a path of object keys.
fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, key| v.get(key))?.as_u64()
}

/// OpenAI usage: chat/completions/embeddings (`prompt_tokens`, `completion_tokens`) or
/// responses (`input_tokens`, `output_tokens`), with cached and reasoning token details.
fn openai_usage(u: &Value) -> Option<Usage> {
    let input = u64_at(u, &["prompt_tokens"]).or_else(|| u64_at(u, &["input_tokens"]))?;
    let first = |paths: &[&[&str]]| paths.iter().find_map(|p| u64_at(u, p)).unwrap_or(0);
    Some(Usage {
        input_tokens: input,
        output_tokens: first(&[&["completion_tokens"], &["output_tokens"]]),
        cache_read_tokens: first(&[
            &["prompt_tokens_details", "cached_tokens"],
            &["input_tokens_details", "cached_tokens"],
        ]),
        cache_creation_tokens: 0,
        reasoning_tokens: first(&[
            &["completion_tokens_details", "reasoning_tokens"],
            &["output_tokens_details", "reasoning_tokens"],
        ]),
    })
}
