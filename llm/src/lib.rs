//! LLM API calls read off the wire.
//!
//! The agent captures the plaintext a traced process passes to OpenSSL's `SSL_read`/`SSL_write`
//! (and the bytes of its plain-HTTP sockets) as ordered chunks per connection and direction.
//! A [`Tracker`] turns those chunks into [`LlmCall`]s: it frames HTTP/1.x exchanges, pairs
//! responses with requests in order, decodes their bodies (chunked, gzip, deflate, server-sent events),
//! reads what OpenAI, Anthropic and OpenAI-compatible APIs say about tokens and errors, and
//! prices the calls with a [`PriceTable`].
//!
//! Headers are never kept, and payload text only with [`Options::capture_io`] (redacted and
//! capped). Memory per connection is bounded whatever the traffic.
//!
//! Large bodies that are certainly no LLM call's (a model download, an upload) need not be
//! captured at all: the tracker asks for them to be skipped ([`Tracker::take_skip_requests`])
//! and is told when they were ([`Tracker::skipped`]).
//!
//! [`LlmCall`]: modelprobe_recording::llm::LlmCall

mod body;
mod decode;
mod exchange;
mod http;
mod io;
mod prices;
mod provider;
mod sse;
mod tracker;

pub use prices::{cost, Price, PriceError, PriceSource, PriceTable};
pub use tracker::{SkipRequest, Tracker};

/// Which way bytes went, seen from the traced process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    /// Bytes the process wrote: requests.
    Outbound,
    /// Bytes the process read: responses.
    Inbound,
}

/// One connection: a TLS session (`SSL*`) or a socket of one process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ConnKey {
    /// The process.
    pub pid: u32,
    /// The `SSL*` pointer, or the socket's id.
    pub id: u64,
}

/// How a [`Tracker`] records calls.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keep request bodies and completion text ([`LlmCall::io`]).
    ///
    /// [`LlmCall::io`]: modelprobe_recording::llm::LlmCall::io
    pub capture_io: bool,
    /// The most bytes kept of each captured text; what is cut is counted.
    pub io_cap_bytes: usize,
    /// Patterns whose matches in captured text are replaced by `[REDACTED]`.
    pub redact: Vec<regex::Regex>,
    /// Prices to compute costs with.
    pub prices: PriceTable,
    /// A `Content-Length` body certainly not an LLM call's with more than this many bytes still
    /// to come is asked to be skipped ([`Tracker::take_skip_requests`]); 0: never.
    pub skip_bodies_over: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            capture_io: false,
            io_cap_bytes: 64 * 1024,
            redact: Vec::new(),
            prices: PriceTable::builtin(),
            skip_bodies_over: 8 * 1024 * 1024,
        }
    }
}
