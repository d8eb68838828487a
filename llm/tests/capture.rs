//! What capture does to the bytes: splits anywhere, gaps, lost records, other protocols,
//! connections closing and the recording ending.

mod common;

use common::*;
use modelprobe_llm::{Direction, Options, Tracker};
use modelprobe_recording::llm::LlmTrace;

const STREAM_REQUEST: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Count to 3 ✓"}],"stream":true,"stream_options":{"include_usage":true}}"#;

fn stream_response() -> Vec<u8> {
    let chunk = |delta: &str, finish: &str| {
        format!(
            r#"{{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}],"usage":null}}"#
        )
    };
    let body = sse(&[
        &chunk(r#"{"role":"assistant","content":""}"#, "null"),
        &chunk(r#"{"content":"1, 2"}"#, "null"),
        &chunk(r#"{"content":", 3 ✓"}"#, "null"),
        &chunk("{}", r#""stop""#),
        r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":14,"completion_tokens":7,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0}}}"#,
        "[DONE]",
    ]);
    let head = openai_response_head("200 OK", "text/event-stream; charset=utf-8")
        + "Content-Encoding: gzip\r\n";
    with_chunks(&head, &gzip(body.as_bytes()), 50)
}

fn json_response() -> Vec<u8> {
    let body = r#"{"id":"chatcmpl-10","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#;
    with_length(
        &openai_response_head("200 OK", "application/json"),
        body.as_bytes(),
    )
}

/// Two exchanges on one connection, each message fed in the pieces given, every piece of a
/// message at the same time.
fn two_exchanges(split: &dyn Fn(&[u8]) -> Vec<Vec<u8>>) -> LlmTrace {
    let mut t = Tracker::new(Options {
        capture_io: true,
        ..Options::default()
    });
    let c = conn(1);
    let messages = [
        (
            Direction::Outbound,
            openai_request("/v1/chat/completions", STREAM_REQUEST),
        ),
        (Direction::Inbound, stream_response()),
        (
            Direction::Outbound,
            openai_request(
                "/v1/chat/completions",
                r#"{"model":"gpt-4o-mini","messages":[]}"#,
            ),
        ),
        (Direction::Inbound, json_response()),
    ];
    for (i, (dir, bytes)) in messages.iter().enumerate() {
        for piece in split(bytes) {
            t.data(c, 7, *dir, 1000 * (i as u64 + 1), &piece);
        }
    }
    t.finish(10_000)
}

#[test]
fn any_split_of_the_bytes_gives_the_same_calls() {
    let whole = two_exchanges(&|b| vec![b.to_vec()]);
    assert_eq!(whole.calls.len(), 2);
    let call = &whole.calls[0];
    assert_eq!(
        (
            call.start_ns,
            call.first_byte_ns,
            call.first_token_ns,
            call.end_ns
        ),
        (1000, 2000, 2000, 2000)
    );
    assert_eq!(
        call.usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((14, 7))
    );
    assert_eq!(call.io.as_ref().unwrap().completion, "1, 2, 3 ✓");
    assert_eq!(call.stream_events, 6);
    assert_eq!(whole.calls[1].usage.map(|u| u.input_tokens), Some(9));
    let longest = stream_response().len();
    for at in 0..=longest {
        let trace = two_exchanges(&|b| {
            let at = at.min(b.len());
            vec![b[..at].to_vec(), b[at..].to_vec()]
        });
        assert_eq!(trace, whole, "split at {at}");
    }
    let bytewise = two_exchanges(&|b| b.chunks(1).map(<[u8]>::to_vec).collect());
    assert_eq!(bytewise, whole, "byte by byte");
    for size in [2, 3, 5, 7, 13, 64] {
        let trace = two_exchanges(&|b| b.chunks(size).map(<[u8]>::to_vec).collect());
        assert_eq!(trace, whole, "pieces of {size}");
    }
}

#[test]
fn a_gap_inside_a_request_body_keeps_the_call_and_the_next_one() {
    let mut s = Session::new(Options::default());
    let c = conn(2);
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"a long prompt that the capture limit cut"}],"max_tokens":50,"temperature":0.5}"#;
    let request = openai_request("/v1/chat/completions", body);
    let cut = request.len() - body.len() + 40;
    s.send(c, &request[..cut]);
    s.tracker.gap(c, Direction::Outbound, s.now, 30);
    s.send(c, &request[cut + 30..]);
    s.recv(c, &json_response());
    s.send(c, &openai_request("/v1/chat/completions", STREAM_REQUEST));
    s.recv_pieces(c, &stream_response(), 100);
    let trace = s.tracker.finish(s.now);
    let [first, second] = &trace.calls[..] else {
        panic!("two calls: {trace:?}")
    };
    assert!(first.incomplete);
    assert_eq!(
        (first.model.as_str(), first.max_tokens, first.temperature),
        ("gpt-4o-mini", Some(50), Some(0.5))
    );
    assert_eq!(
        (first.status, first.usage.map(|u| u.input_tokens)),
        (200, Some(9))
    );
    assert!(!second.incomplete);
    assert_eq!(second.usage.map(|u| u.output_tokens), Some(7));
    assert_eq!(trace.stats.bytes_not_captured, 30);
    assert_eq!(trace.stats.unparsed_exchanges, 0);
}

#[test]
fn a_gap_inside_a_response_body_salvages_its_usage() {
    let mut s = Session::new(Options::default());
    let c = conn(3);
    s.send(
        c,
        &openai_request(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o-mini","messages":[]}"#,
        ),
    );
    let response = json_response();
    let at = response.len() - 120;
    s.recv(c, &response[..at]);
    s.tracker.gap(c, Direction::Inbound, s.now, 10);
    s.recv(c, &response[at + 10..]);
    s.send(
        c,
        &openai_request(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[]}"#,
        ),
    );
    s.recv(c, &json_response());
    let trace = s.tracker.finish(s.now);
    assert_eq!(trace.calls.len(), 2);
    assert!(trace.calls[0].incomplete && !trace.calls[1].incomplete);
    assert_eq!(trace.calls[0].usage.map(|u| u.input_tokens), Some(9));
    assert_eq!(trace.calls[0].response_id, "chatcmpl-10");
    assert_eq!(trace.calls[1].model, "gpt-4o");
}

#[test]
fn a_gap_in_a_stream_loses_events_not_the_stream() {
    let mut s = Session::new(Options::default());
    let c = conn(4);
    let body = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}"#;
    s.send(c, &openai_request("/v1/chat/completions", body));
    let events = sse(&[
        r#"{"id":"c1","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"one"},"finish_reason":null}]}"#,
        r#"{"id":"c1","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"two"},"finish_reason":null}]}"#,
        r#"{"id":"c1","model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        r#"{"id":"c1","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
        "[DONE]",
    ]);
    let response = with_length(
        &openai_response_head("200 OK", "text/event-stream"),
        events.as_bytes(),
    );
    let second = response.len() - events.len() + events.find("two").unwrap();
    s.recv(c, &response[..second]);
    s.tracker.gap(c, Direction::Inbound, s.now, 5);
    s.recv(c, &response[second + 5..]);
    let call = &s.tracker.finish(s.now).calls[0];
    assert!(call.incomplete);
    assert_eq!(call.stream_events, 4);
    assert_eq!(
        (
            call.finish_reason.as_str(),
            call.usage.map(|u| u.output_tokens)
        ),
        ("stop", Some(2))
    );
}

#[test]
fn a_lost_request_head_drops_its_exchange_and_resyncs() {
    let mut s = Session::new(Options::default());
    let c = conn(5);
    let first = openai_request(
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","messages":[]}"#,
    );
    s.send(c, &first[..20]);
    s.tracker.gap(c, Direction::Outbound, s.now, 500);
    s.send(c, b"ing tail of the lost request\"}]}");
    s.recv(c, &json_response());
    s.send(
        c,
        &openai_request(
            "/v1/chat/completions",
            r#"{"model":"gpt-4.1","messages":[]}"#,
        ),
    );
    s.recv(c, &json_response());
    let trace = s.tracker.finish(s.now);
    assert_eq!(trace.calls.len(), 1);
    assert_eq!(trace.calls[0].model, "gpt-4.1");
    assert_eq!(trace.stats.unparsed_exchanges, 1);
    assert_eq!(trace.stats.bytes_not_captured, 500);
}

#[test]
fn a_lost_response_start_answers_its_call_with_nothing() {
    let mut s = Session::new(Options::default());
    let c = conn(6);
    s.send(
        c,
        &openai_request(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[]}"#,
        ),
    );
    s.tracker.gap(c, Direction::Inbound, s.now, 4000);
    s.recv(c, b"rest of a body\r\n");
    s.send(
        c,
        &openai_request(
            "/v1/chat/completions",
            r#"{"model":"gpt-4.1","messages":[]}"#,
        ),
    );
    s.recv(c, &json_response());
    let trace = s.tracker.finish(s.now);
    let [lost, ok] = &trace.calls[..] else {
        panic!("two calls")
    };
    assert!(lost.incomplete && lost.status == 0 && lost.usage.is_none());
    assert_eq!((ok.model.as_str(), ok.status), ("gpt-4.1", 200));
}

#[test]
fn http2_other_protocols_and_other_requests_are_counted() {
    let mut t = Tracker::new(Options::default());
    t.data(conn(1), 1, Direction::Outbound, 1, b"PRI * HTTP/2.0\r");
    t.data(
        conn(1),
        1,
        Direction::Outbound,
        2,
        b"\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
    );
    t.data(
        conn(2),
        1,
        Direction::Outbound,
        3,
        b"\x00\x00\x00\x2a\x02\x00postgres",
    );
    t.data(
        conn(3),
        1,
        Direction::Inbound,
        4,
        b"220 smtp.example.com ESMTP\r\n",
    );
    t.data(conn(3), 1, Direction::Outbound, 5, b"EHLO me\r\n");
    t.data(
        conn(4),
        1,
        Direction::Outbound,
        6,
        b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
    );
    t.data(
        conn(4),
        1,
        Direction::Inbound,
        7,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    );
    t.lost_records(3);
    let trace = t.finish(8);
    assert!(trace.calls.is_empty());
    assert_eq!(trace.stats.connections, 4);
    assert_eq!(trace.stats.http2_connections, 1);
    assert_eq!(trace.stats.other_connections, 2);
    assert_eq!(trace.stats.other_requests, 1);
    assert_eq!(trace.stats.records_lost, 3);
    assert_eq!(trace.prices_as_of, "");
}

#[test]
fn continue_head_and_bodiless_responses() {
    let mut s = Session::new(Options::default());
    let c = conn(7);
    let mut request = openai_request(
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","messages":[]}"#,
    );
    let body_at = request.len() - 33;
    request.splice(
        body_at - 2..body_at - 2,
        b"Expect: 100-continue\r\n".iter().copied(),
    );
    let body_at = request.len() - 33;
    s.send(c, &request[..body_at]);
    s.recv(c, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.send(c, &request[body_at..]);
    s.recv(c, &json_response());
    s.send(
        c,
        b"HEAD /v1/files HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
    );
    s.recv(c, b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
    s.send(
        c,
        &openai_request(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[]}"#,
        ),
    );
    s.recv(c, b"HTTP/1.1 204 No Content\r\n\r\n");
    s.send(
        c,
        &openai_request(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o-mini","messages":[]}"#,
        ),
    );
    s.recv(c, &json_response());
    let trace = s.tracker.finish(s.now);
    let statuses: Vec<u16> = trace.calls.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [200, 204, 200]);
    assert_eq!(trace.calls[0].usage.map(|u| u.input_tokens), Some(9));
    assert_eq!(trace.stats.other_requests, 1);
    assert_eq!(trace.stats.unparsed_exchanges, 0);
}

#[test]
fn closing_and_the_end_of_the_recording_end_open_calls() {
    let mut s = Session::new(Options::default());
    let c = conn(8);
    s.send(c, &openai_request("/v1/chat/completions", STREAM_REQUEST));
    let response = stream_response();
    s.recv(c, &response[..response.len() - 100]);
    let closed = s.tick();
    s.tracker.close(c, closed);
    // The same id, a new connection; read until close.
    s.send(
        c,
        &openai_request(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[]}"#,
        ),
    );
    s.recv(
        c,
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"id\":\"x\",\"choices\":[],",
    );
    s.recv(c, br#""usage":{"prompt_tokens":4,"completion_tokens":0}}"#);
    let closed2 = s.tick();
    s.tracker.close(c, closed2);
    // A call the recording's end cuts.
    let d = conn(9);
    let started = s.send(
        d,
        &openai_request(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[]}"#,
        ),
    );
    let trace = s.tracker.finish(s.now + 5);
    let [cut, until_close, open] = &trace.calls[..] else {
        panic!("three calls")
    };
    assert_eq!((cut.connection, cut.end_ns, cut.status), (0, closed, 200));
    assert!(cut.usage.is_none() && cut.usage_missing);
    assert_eq!((until_close.connection, until_close.end_ns), (1, closed2));
    assert_eq!(until_close.usage.map(|u| u.input_tokens), Some(4));
    assert_eq!(
        (open.connection, open.start_ns, open.end_ns, open.status),
        (2, started, s.now + 5, 0)
    );
    assert_eq!(trace.stats.connections, 3);
}

#[test]
fn config_prices_are_named() {
    let mut options = Options::default();
    options
        .prices
        .merge_yaml("prices:\n  gpt-4o-mini: {input: 1, output: 1}\n")
        .unwrap();
    let mut s = Session::new(options);
    let c = conn(10);
    s.send(
        c,
        &openai_request(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o-mini","messages":[]}"#,
        ),
    );
    s.recv(c, &json_response());
    let trace = s.tracker.finish(s.now);
    assert_eq!(
        (trace.calls[0].cost_usd, trace.calls[0].cost_source.as_str()),
        (Some(10.0 / 1e6), "config")
    );
    assert_eq!(trace.prices_as_of, "config");
}

#[test]
fn requests_never_answered_are_given_up_in_order() {
    let mut s = Session::new(Options::default());
    let c = conn(11);
    for _ in 0..40 {
        s.send(
            c,
            &openai_request(
                "/v1/chat/completions",
                r#"{"model":"gpt-4o","messages":[]}"#,
            ),
        );
    }
    let given_up = s.tracker.take_calls();
    assert_eq!(given_up.len(), 8);
    assert!(given_up.iter().all(|c| c.incomplete && c.status == 0));
    assert!(given_up.windows(2).all(|w| w[0].start_ns < w[1].start_ns));
    assert_eq!(s.tracker.finish(s.now).calls.len(), 32);
}
