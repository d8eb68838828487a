//! Builders of the traffic the OpenAI and Anthropic Python clients exchange, and a session
//! that feeds it to a tracker.
#![allow(dead_code)] // Each test file uses a part.

use std::io::Write;

use flate2::{write::GzEncoder, Compression};
use modelprobe_llm::{ConnKey, Direction, Options, Tracker};

pub const PID: u32 = 4242;
pub const TID: u32 = 4243;
pub const SECRET: &str = "sk-test-SECRET123";

pub fn conn(id: u64) -> ConnKey {
    ConnKey { pid: PID, id }
}

/// A request as the openai Python client (2.x) writes it.
pub fn openai_request(path: &str, body: &str) -> Vec<u8> {
    request(
        "api.openai.com",
        path,
        &[
            ("Accept-Encoding", "gzip, deflate"),
            ("Connection", "keep-alive"),
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
            ("User-Agent", "OpenAI/Python 2.8.1"),
            ("X-Stainless-Lang", "python"),
            ("X-Stainless-Package-Version", "2.8.1"),
            ("X-Stainless-Runtime", "CPython"),
            ("Authorization", &format!("Bearer {SECRET}")),
            ("x-stainless-retry-count", "0"),
            ("x-stainless-read-timeout", "600"),
        ],
        body,
    )
}

/// A request as the anthropic Python client writes it.
pub fn anthropic_request(body: &str) -> Vec<u8> {
    request(
        "api.anthropic.com",
        "/v1/messages",
        &[
            ("Accept-Encoding", "gzip, deflate"),
            ("Connection", "keep-alive"),
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
            ("User-Agent", "Anthropic/Python 0.69.0"),
            ("X-Stainless-Lang", "python"),
            ("X-Api-Key", SECRET),
            ("anthropic-version", "2023-06-01"),
            ("x-stainless-timeout", "600"),
        ],
        body,
    )
}

pub fn request(host: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        out += &format!("{name}: {value}\r\n");
    }
    out += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
    out.into_bytes()
}

/// Response headers as OpenAI's edge sends them (before the framing headers).
pub fn openai_response_head(status: &str, content_type: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nDate: Tue, 14 Oct 2025 09:12:01 GMT\r\nContent-Type: {content_type}\r\n\
         Connection: keep-alive\r\naccess-control-expose-headers: X-Request-ID\r\n\
         openai-organization: user-abc\r\nopenai-processing-ms: 412\r\nopenai-version: 2020-10-01\r\n\
         x-ratelimit-limit-requests: 10000\r\nx-request-id: req_0a1b2c\r\n\
         Set-Cookie: __cf_bm=abc; path=/; HttpOnly; Secure\r\nServer: cloudflare\r\n"
    )
}

/// A head (ending in its last header line) plus a body by Content-Length.
pub fn with_length(head: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{head}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// A head plus a chunked body, `size` bytes a chunk, with an extension and a trailer.
pub fn with_chunks(head: &str, body: &[u8], size: usize) -> Vec<u8> {
    let mut out = format!("{head}Transfer-Encoding: chunked\r\n\r\n").into_bytes();
    for chunk in body.chunks(size) {
        out.extend_from_slice(format!("{:x};x=y\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\nX-Trailer: done\r\n\r\n");
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// SSE `data:` events as OpenAI sends them.
pub fn sse(events: &[&str]) -> String {
    events.iter().map(|e| format!("data: {e}\n\n")).collect()
}

/// A tracker fed with a clock that ticks 1 ms a call.
pub struct Session {
    pub tracker: Tracker,
    pub now: u64,
}

impl Session {
    pub fn new(options: Options) -> Session {
        Session {
            tracker: Tracker::new(options),
            now: 1_000_000_000,
        }
    }

    pub fn tick(&mut self) -> u64 {
        self.now += 1_000_000;
        self.now
    }

    pub fn send(&mut self, c: ConnKey, bytes: &[u8]) -> u64 {
        let t = self.tick();
        self.tracker.data(c, TID, Direction::Outbound, t, bytes);
        t
    }

    pub fn recv(&mut self, c: ConnKey, bytes: &[u8]) -> u64 {
        let t = self.tick();
        self.tracker.data(c, TID, Direction::Inbound, t, bytes);
        t
    }

    /// Receives `bytes` in pieces of `size`, one call each.
    pub fn recv_pieces(&mut self, c: ConnKey, bytes: &[u8], size: usize) -> Vec<u64> {
        bytes.chunks(size).map(|p| self.recv(c, p)).collect()
    }
}
