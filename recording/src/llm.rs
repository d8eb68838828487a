//! LLM API calls seen on the wire: HTTP requests to OpenAI, Anthropic and OpenAI-compatible
//! servers, read as plaintext from OpenSSL's `SSL_read`/`SSL_write` (or from the socket for
//! plain HTTP), with their tokens, timings and cost.
//!
//! The agent parses the traffic while it records; only what is described here reaches the
//! recording. Prompt and completion text is kept only with `--capture-io` ([`LlmCall::io`]),
//! and never any header that carries a credential.
use serde::{Deserialize, Serialize};

/// Every LLM call of one recording, and what could not be parsed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmTrace {
    /// Calls in request order.
    pub calls: Vec<LlmCall>,
    /// What the capture and the parser could not account for.
    pub stats: LlmStats,
    /// The date the built-in price table was last checked (`2026-11-15`), or `config` when every
    /// price came from the user's table.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prices_as_of: String,
}

impl LlmTrace {
    /// True when nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.stats == LlmStats::default()
    }
}

/// Counters of what was captured but not turned into calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmStats {
    /// TLS connections (distinct `SSL*` per process) and plain-HTTP sockets that carried data.
    pub connections: u64,
    /// Connections that spoke HTTP/2 (their preface was seen): counted, not parsed.
    pub http2_connections: u64,
    /// Connections whose bytes were neither HTTP/1.x nor HTTP/2 (another protocol on TLS).
    pub other_connections: u64,
    /// HTTP exchanges parsed that were not to an LLM API (other hosts or paths).
    pub other_requests: u64,
    /// Bytes of `SSL_read`/`SSL_write` calls that were not captured (beyond the per-call
    /// capture limit, or records lost): the parser skipped over them.
    pub bytes_not_captured: u64,
    /// Capture records dropped because the ring buffer was full.
    pub records_lost: u64,
    /// Exchanges whose bytes could not be parsed as HTTP/1.x (after a gap, say): dropped.
    pub unparsed_exchanges: u64,
    /// Bytes of large non-LLM bodies (model downloads, uploads) the kernel was asked not to
    /// send: counted, never captured, and not in `bytes_not_captured`.
    #[serde(default)]
    pub bytes_skipped: u64,
}

/// One request/response exchange with an LLM API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// Process id.
    pub pid: u32,
    /// Thread that wrote the request.
    pub tid: u32,
    /// A number for the connection within its process (the order it was first seen).
    pub connection: u32,
    /// CLOCK_MONOTONIC ns when the request's first byte was written.
    pub start_ns: u64,
    /// When the response's first byte was read (0 when no response arrived).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub first_byte_ns: u64,
    /// When the first content token was read: the first SSE event carrying output text (or
    /// the whole body for a non-streamed call). 0 when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub first_token_ns: u64,
    /// When the response's last byte was read (the recording's end if it never completed).
    pub end_ns: u64,
    /// `openai`, `anthropic` or `openai-compatible`.
    pub provider: String,
    /// The API (`chat.completions`, `responses`, `completions`, `embeddings`, `messages`).
    pub endpoint: String,
    /// Host header.
    pub host: String,
    /// HTTP method.
    pub method: String,
    /// Request path, without the query.
    pub path: String,
    /// The model asked for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// The model the response names, when it differs (a dated snapshot).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub response_model: String,
    /// `stream: true` in the request.
    pub stream: bool,
    /// `max_tokens` / `max_completion_tokens` / `max_output_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// `temperature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// HTTP status (0 when no response arrived).
    pub status: u16,
    /// The response's id (`chatcmpl-...`, `msg_...`, `resp_...`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub response_id: String,
    /// Why generation stopped (`stop`, `length`, `end_turn`, `tool_calls`...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub finish_reason: String,
    /// Token counts, when the response reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// A streamed response whose usage never arrived (not asked for, or cut): its tokens are
    /// unknown, not guessed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub usage_missing: bool,
    /// Stream events (SSE `data:` messages) read, for a streamed response.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stream_events: u64,
    /// Largest gap between two consecutive content events of a stream, in ns.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_inter_chunk_ns: u64,
    /// Mean gap between consecutive content events of a stream, in ns.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mean_inter_chunk_ns: u64,
    /// The API's error, for a 4xx/5xx answer or an error event in a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<LlmError>,
    /// Cost in US dollars: the provider's own figure when it reported one, else tokens × the
    /// price table. None when the tokens or the model's price are unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Where the cost came from: `provider`, `builtin` or `config`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cost_source: String,
    /// The response's `Content-Encoding` (`zstd`) could not be decoded: what its body said
    /// (usage, id, errors) is unknown.
    #[serde(default, skip_serializing_if = "is_false")]
    pub body_not_decoded: bool,
    /// True when part of the exchange was not captured (the parser skipped bytes, or the
    /// connection or the recording ended before the response did).
    #[serde(default, skip_serializing_if = "is_false")]
    pub incomplete: bool,
    /// Prompt and completion text, only with `--capture-io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<LlmIo>,
}

/// Token counts as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input (prompt) tokens, including cached ones for OpenAI; excluding them for Anthropic,
    /// as each reports (the cost computation knows which).
    pub input_tokens: u64,
    /// Output (completion) tokens, including reasoning tokens.
    pub output_tokens: u64,
    /// Input tokens read from the provider's prompt cache.
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Input tokens written to the provider's prompt cache (Anthropic).
    #[serde(default)]
    pub cache_creation_tokens: u64,
    /// Output tokens spent reasoning (OpenAI's `reasoning_tokens`).
    #[serde(default)]
    pub reasoning_tokens: u64,
}

/// An error the API answered with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmError {
    /// The error's type or code (`rate_limit_error`, `invalid_request_error`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Its message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// `retry-after` seconds of a 429 or 503, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<f64>,
}

/// What a call sent and received, with `--capture-io` only; credentials never included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmIo {
    /// The request body (JSON), redacted and capped.
    pub request: String,
    /// The completion text (a stream reassembled), capped.
    pub completion: String,
    /// Bytes dropped by the caps.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated_bytes: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}
