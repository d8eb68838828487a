//! Anthropic calls, in the shapes the anthropic Python client receives.

mod common;

use common::*;
use modelprobe_llm::Options;
use modelprobe_recording::llm::Usage;

const REQUEST: &str = r#"{"max_tokens":1024,"messages":[{"role":"user","content":"Hello, Claude"}],"model":"claude-sonnet-4-5","temperature":1}"#;

fn response_head(status: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nDate: Tue, 14 Oct 2025 09:12:01 GMT\r\nContent-Type: application/json\r\n\
         Connection: keep-alive\r\nanthropic-ratelimit-requests-limit: 50\r\n\
         request-id: req_011CTy\r\nanthropic-organization-id: 0b1c\r\nvia: 1.1 google\r\n\
         cf-cache-status: DYNAMIC\r\nServer: cloudflare\r\n"
    )
}

#[test]
fn a_whole_message_with_cache_tokens_priced() {
    let mut s = Session::new(Options::default());
    let c = conn(10);
    s.send(c, &anthropic_request(REQUEST));
    let body = r#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hello! How can I help?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":100,"cache_creation_input_tokens":2000,"cache_read_input_tokens":10000,"cache_creation":{"ephemeral_5m_input_tokens":2000,"ephemeral_1h_input_tokens":0},"output_tokens":1000,"service_tier":"standard"}}"#;
    let response = with_chunks(&response_head("200 OK"), body.as_bytes(), 128);
    s.recv_pieces(c, &response, 100);
    let trace = s.tracker.finish(s.now);
    let call = &trace.calls[0];
    assert_eq!(
        (call.provider.as_str(), call.endpoint.as_str()),
        ("anthropic", "messages")
    );
    assert_eq!(
        (call.model.as_str(), call.response_model.as_str()),
        ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929")
    );
    assert_eq!((call.max_tokens, call.temperature), (Some(1024), Some(1.0)));
    assert_eq!(
        (call.response_id.as_str(), call.finish_reason.as_str()),
        ("msg_01XFDUDYJgAACzvnptvVoYEL", "end_turn")
    );
    assert_eq!(
        call.usage,
        Some(Usage {
            input_tokens: 100,
            output_tokens: 1000,
            cache_read_tokens: 10_000,
            cache_creation_tokens: 2000,
            reasoning_tokens: 0
        })
    );
    // 100 × $3 + 10000 × $0.30 + 2000 × $3.75 + 1000 × $15, per million.
    assert_eq!(call.cost_usd, Some(0.0258));
    assert_eq!(call.first_token_ns, call.end_ns);
}

const STREAM: &[(&str, &str)] = &[
    (
        "message_start",
        r#"{"type":"message_start","message":{"id":"msg_01Stream","type":"message","role":"assistant","model":"claude-haiku-4-5-20251001","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}}"#,
    ),
    (
        "content_block_start",
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Greet."}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}"#,
    ),
    (
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#,
    ),
    ("ping", r#"{"type": "ping"}"#),
    (
        "content_block_start",
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello"}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":", world ✓"}}"#,
    ),
    (
        "content_block_stop",
        r#"{"type":"content_block_stop","index":1}"#,
    ),
    (
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
    ),
    ("message_stop", r#"{"type":"message_stop"}"#),
];

fn stream_body(events: &[(&str, &str)]) -> String {
    events
        .iter()
        .map(|(e, d)| format!("event: {e}\r\ndata: {d}\r\n\r\n"))
        .collect()
}

fn stream_head() -> String {
    response_head("200 OK").replace("application/json", "text/event-stream; charset=utf-8")
}

#[test]
fn a_stream_split_across_many_reads() {
    let mut s = Session::new(Options {
        capture_io: true,
        ..Options::default()
    });
    let c = conn(11);
    let request = r#"{"max_tokens":2048,"messages":[{"role":"user","content":"Hi"}],"model":"claude-haiku-4-5","stream":true,"thinking":{"type":"enabled","budget_tokens":1024}}"#;
    s.send(c, &anthropic_request(request));
    let response = with_chunks(&stream_head(), stream_body(STREAM).as_bytes(), 61);
    s.recv_pieces(c, &response, 17);
    let call = &s.tracker.finish(s.now).calls[0];
    assert!(call.stream && !call.usage_missing);
    assert_eq!(call.stream_events, 12);
    assert_eq!(
        (call.response_id.as_str(), call.finish_reason.as_str()),
        ("msg_01Stream", "end_turn")
    );
    assert_eq!(
        call.usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((25, 15))
    );
    assert_eq!(call.cost_usd, Some((25.0 * 1.0 + 15.0 * 5.0) / 1e6));
    assert_eq!(call.io.as_ref().unwrap().completion, "Hello, world ✓");
    assert!(call.first_token_ns > call.first_byte_ns);
    assert!(call.max_inter_chunk_ns > 0 && call.mean_inter_chunk_ns > 0);
}

#[test]
fn an_error_event_in_a_stream_and_a_rate_limit() {
    let mut s = Session::new(Options::default());
    let c = conn(12);
    s.send(
        c,
        &anthropic_request(&REQUEST.replace("\"temperature\":1", "\"stream\":true")),
    );
    let overloaded = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#;
    let body = stream_body(&[STREAM[0], ("error", overloaded)]);
    s.recv(c, &with_chunks(&stream_head(), body.as_bytes(), 1000));
    s.send(c, &anthropic_request(REQUEST));
    let limited = r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization of 50 requests per minute."},"request_id":"req_2"}"#;
    let head =
        response_head("429 Too Many Requests") + "retry-after: 7\r\nx-should-retry: true\r\n";
    s.recv(c, &with_length(&head, limited.as_bytes()));
    let trace = s.tracker.finish(s.now);
    let [failed, limited] = &trace.calls[..] else {
        panic!("two calls")
    };
    let error = failed.error.as_ref().unwrap();
    assert_eq!(
        (error.kind.as_str(), error.message.as_str()),
        ("overloaded_error", "Overloaded")
    );
    assert!(failed.usage_missing && failed.usage.is_none() && failed.cost_usd.is_none());
    assert_eq!(failed.status, 200);
    let error = limited.error.as_ref().unwrap();
    assert_eq!(
        (limited.status, error.kind.as_str(), error.retry_after_s),
        (429, "rate_limit_error", Some(7.0))
    );
}

#[test]
fn messages_to_other_hosts() {
    let mut s = Session::new(Options::default());
    let c = conn(13);
    // A proxy of the Anthropic API, recognised by its headers.
    let headers = [
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
    ];
    s.send(
        c,
        &request(
            "llm-proxy.internal:8080",
            "/anthropic/v1/messages",
            &headers,
            REQUEST,
        ),
    );
    s.recv(c, &with_length("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n", br#"{"id":"msg_2","type":"message","model":"claude-sonnet-4-5","content":[],"stop_reason":"max_tokens","usage":{"input_tokens":3,"output_tokens":1024}}"#));
    // A chat app's own `/messages` endpoint is not an LLM call.
    let headers = [("content-type", "application/json")];
    s.send(
        c,
        &request(
            "chat.example.com",
            "/api/rooms/7/messages",
            &headers,
            r#"{"text":"hi"}"#,
        ),
    );
    s.recv(c, &with_length("HTTP/1.1 201 Created\r\n", b"{}"));
    let trace = s.tracker.finish(s.now);
    assert_eq!(trace.calls.len(), 1);
    assert_eq!(trace.calls[0].provider, "anthropic");
    assert_eq!(trace.calls[0].finish_reason, "max_tokens");
    assert_eq!(
        trace.calls[0].cost_usd,
        Some((3.0 * 3.0 + 1024.0 * 15.0) / 1e6)
    );
    assert_eq!(trace.stats.other_requests, 1);
}
