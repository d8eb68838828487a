//! Large bodies that are certainly no LLM call's (model downloads, uploads): asked to be
//! skipped once, framed past when they were, and never asked of an LLM call.

mod common;

use common::*;
use modelprobe_llm::{ConnKey, Direction, Options, SkipRequest};
use modelprobe_recording::llm::Usage;

const MB: u64 = 1_000_000;
/// The default threshold's margin: half of 8 MiB.
const MARGIN: u64 = 4 * 1024 * 1024;

const CHAT_REQUEST: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#;
const CHAT_RESPONSE: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13}}"#;

/// The request `huggingface_hub` makes for a file.
fn download_request(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: huggingface.co\r\nUser-Agent: huggingface_hub/0.35.3\r\n\
         Accept-Encoding: identity\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"
    )
    .into_bytes()
}

/// A response head announcing `len` bytes of `content_type`.
fn head_of(len: u64, content_type: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\
         Connection: keep-alive\r\n\r\n"
    )
    .into_bytes()
}

impl Session {
    /// `n` body bytes of filler, in pieces of 64 KiB, one call each.
    fn filler(&mut self, c: ConnKey, dir: Direction, mut n: u64) {
        let piece = [b'x'; 64 * 1024];
        while n > 0 {
            let len = n.min(piece.len() as u64);
            let t = self.tick();
            self.tracker.data(c, TID, dir, t, &piece[..len as usize]);
            n -= len;
        }
    }

    fn skipped(&mut self, c: ConnKey, dir: Direction, bytes: u64) {
        let t = self.tick();
        self.tracker.skipped(c, dir, t, bytes);
    }

    /// A chat completion on `c`, read whole.
    fn chat(&mut self, c: ConnKey) {
        self.send(c, &openai_request("/v1/chat/completions", CHAT_REQUEST));
        let head = openai_response_head("200 OK", "application/json");
        self.recv(c, &with_length(&head, CHAT_RESPONSE.as_bytes()));
    }
}

/// 100 MB of model weights, 4 KiB read before the skip is acted on, 48 KiB more in flight.
#[test]
fn a_large_download_is_skipped_then_the_connection_parses_on() {
    let mut s = Session::new(Options::default());
    let c = conn(7);
    s.send(
        c,
        &download_request("/Qwen/Qwen3-0.6B/resolve/main/model.safetensors"),
    );
    let body = 100 * MB;
    let mut first = head_of(body, "application/octet-stream");
    first.extend_from_slice(&[0; 4096]);
    s.recv(c, &first);

    let asked = s.tracker.take_skip_requests();
    let bytes = body - 4096 - MARGIN;
    let expected = SkipRequest {
        conn: c,
        dir: Direction::Inbound,
        bytes,
    };
    assert_eq!(asked, [expected]);
    assert!(s.tracker.take_skip_requests().is_empty());

    s.filler(c, Direction::Inbound, 48 * 1024);
    s.skipped(c, Direction::Inbound, bytes);
    s.filler(c, Direction::Inbound, body - 4096 - 48 * 1024 - bytes);
    s.chat(c);
    assert!(s.tracker.take_skip_requests().is_empty());

    let trace = s.tracker.finish(s.now);
    assert_eq!(trace.calls.len(), 1);
    let call = &trace.calls[0];
    assert_eq!(call.endpoint, "chat.completions");
    assert_eq!(call.response_id, "chatcmpl-1");
    assert_eq!(
        call.usage,
        Some(Usage {
            input_tokens: 11,
            output_tokens: 2,
            ..Usage::default()
        })
    );
    assert!(!call.incomplete && !call.usage_missing);
    assert_eq!(trace.stats.bytes_skipped, bytes);
    assert_eq!(trace.stats.bytes_not_captured, 0);
    assert_eq!(trace.stats.other_requests, 1);
    assert_eq!(trace.stats.unparsed_exchanges, 0);
}

#[test]
fn an_llm_call_is_never_skipped_however_large() {
    let mut s = Session::new(Options {
        skip_bodies_over: 1024,
        ..Options::default()
    });
    let c = conn(1);
    let prefix = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":""#;
    let suffix = r#""}]}"#;
    let filler = 10 * MB;
    let len = prefix.len() as u64 + filler + suffix.len() as u64;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n{prefix}"
    );
    s.send(c, head.as_bytes());
    s.filler(c, Direction::Outbound, filler);
    // The response starts before the request's end: not known to be no LLM call's yet.
    s.recv(c, &head_of(20 * MB, "application/json"));
    s.send(c, suffix.as_bytes());
    s.recv(c, b"{\"id\":\"chatcmpl-2\",\"usage\":{\"prompt_tokens\":1");
    assert!(s.tracker.take_skip_requests().is_empty());

    let trace = s.tracker.finish(s.now);
    assert_eq!(trace.calls.len(), 1);
    assert_eq!(trace.calls[0].model, "gpt-4o-mini");
    assert_eq!(trace.stats.bytes_skipped, 0);
}

#[test]
fn a_chunked_download_is_never_skipped() {
    let mut s = Session::new(Options::default());
    let c = conn(2);
    s.send(
        c,
        &download_request("/datasets/x/resolve/main/train.parquet"),
    );
    s.recv(
        c,
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
          Transfer-Encoding: chunked\r\n\r\n5f5e100\r\n",
    );
    s.filler(c, Direction::Inbound, 1024 * 1024);
    assert!(s.tracker.take_skip_requests().is_empty());
}

#[test]
fn no_skip_is_asked_when_turned_off() {
    let mut s = Session::new(Options {
        skip_bodies_over: 0,
        ..Options::default()
    });
    let c = conn(3);
    s.send(
        c,
        &download_request("/Qwen/Qwen3-0.6B/resolve/main/model.safetensors"),
    );
    s.recv(c, &head_of(100 * MB, "application/octet-stream"));
    s.filler(c, Direction::Inbound, 64 * 1024);
    assert!(s.tracker.take_skip_requests().is_empty());
}

#[test]
fn a_large_upload_is_skipped_outbound() {
    let mut s = Session::new(Options::default());
    let c = conn(4);
    let body = 50 * MB;
    let mut first = format!(
        "PUT /upload/model.bin HTTP/1.1\r\nHost: storage.example.com\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {body}\r\n\r\n"
    )
    .into_bytes();
    first.extend_from_slice(&[0; 1024]);
    s.send(c, &first);
    let bytes = body - 1024 - MARGIN;
    let expected = SkipRequest {
        conn: c,
        dir: Direction::Outbound,
        bytes,
    };
    assert_eq!(s.tracker.take_skip_requests(), [expected]);

    s.skipped(c, Direction::Outbound, bytes);
    s.filler(c, Direction::Outbound, body - 1024 - bytes);
    s.recv(c, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    s.chat(c);

    let trace = s.tracker.finish(s.now);
    assert_eq!(trace.calls.len(), 1);
    assert!(!trace.calls[0].incomplete);
    assert_eq!(trace.calls[0].usage.map(|u| u.output_tokens), Some(2));
    assert_eq!(trace.stats.bytes_skipped, bytes);
    assert_eq!(trace.stats.bytes_not_captured, 0);
    assert_eq!(trace.stats.unparsed_exchanges, 0);
}

/// A POST to an LLM path whose body is not JSON is no LLM call: its large response is asked
/// to be skipped once the request is read to its end, not before.
#[test]
fn a_response_is_skipped_once_its_request_is_known_not_to_be_json() {
    let mut s = Session::new(Options::default());
    let c = conn(5);
    s.send(
        c,
        b"POST /api/chat/completions HTTP/1.1\r\nHost: example.com\r\n\
          Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhel",
    );
    s.recv(c, &head_of(20 * MB, "application/octet-stream"));
    assert!(s.tracker.take_skip_requests().is_empty());
    s.send(c, b"lo");
    let expected = SkipRequest {
        conn: c,
        dir: Direction::Inbound,
        bytes: 20 * MB - MARGIN,
    };
    assert_eq!(s.tracker.take_skip_requests(), [expected]);
    s.filler(c, Direction::Inbound, 1024 * 1024);
    assert!(s.tracker.take_skip_requests().is_empty());
}

/// A skip past the body's end: the rest is a gap, counted as not captured.
#[test]
fn a_skip_past_the_end_of_the_body_is_a_gap() {
    let mut s = Session::new(Options::default());
    let c = conn(6);
    s.send(c, &download_request("/a/resolve/main/b.bin"));
    s.recv(c, &head_of(20 * MB, "application/octet-stream"));
    assert_eq!(s.tracker.take_skip_requests().len(), 1);
    s.skipped(c, Direction::Inbound, 20 * MB + 100);

    let trace = s.tracker.finish(s.now);
    assert_eq!(trace.stats.bytes_skipped, 20 * MB);
    assert_eq!(trace.stats.bytes_not_captured, 100);
}

/// The connection closes while the kernel skips; its report comes after.
#[test]
fn a_connection_closed_mid_skip() {
    let mut s = Session::new(Options::default());
    let c = conn(8);
    s.send(c, &download_request("/a/resolve/main/b.bin"));
    s.recv(c, &head_of(20 * MB, "application/octet-stream"));
    let asked = s.tracker.take_skip_requests();
    s.skipped(c, Direction::Inbound, 1000);
    let t = s.tick();
    s.tracker.close(c, t);
    s.skipped(c, Direction::Inbound, asked[0].bytes - 1000);

    let trace = s.tracker.finish(s.now);
    assert_eq!(trace.stats.bytes_skipped, asked[0].bytes);
    assert_eq!(trace.stats.bytes_not_captured, 0);
    assert_eq!(trace.stats.connections, 1);
    assert_eq!(trace.stats.other_requests, 1);
}
