//! OpenAI calls, in the shapes the openai Python client (2.x) receives.

mod common;

use common::*;
use modelprobe_llm::{Options, PriceTable};
use modelprobe_recording::llm::{LlmError, Usage};

const CHAT_REQUEST: &str = r#"{"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello"}],"model":"gpt-4o-mini","max_completion_tokens":300,"temperature":0.2}"#;

const CHAT_RESPONSE: &str = r#"{
  "id": "chatcmpl-CJ0abcdef",
  "object": "chat.completion",
  "created": 1758012345,
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [
    {
      "index": 0,
      "message": {"role": "assistant", "content": "Hello!", "refusal": null, "annotations": []},
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 1000,
    "completion_tokens": 500,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 200, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 64, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default",
  "system_fingerprint": "fp_560af6e559"
}"#;

fn chunk(content: &str, finish: &str) -> String {
    let finish = if finish.is_empty() {
        "null".to_owned()
    } else {
        format!("\"{finish}\"")
    };
    format!(
        r#"{{"id":"chatcmpl-CJ1stream","object":"chat.completion.chunk","created":1758012346,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_560af6e559","choices":[{{"index":0,"delta":{content},"logprobs":null,"finish_reason":{finish}}}],"usage":null,"obfuscation":"x1"}}"#
    )
}

const USAGE_CHUNK: &str = r#"{"id":"chatcmpl-CJ1stream","object":"chat.completion.chunk","created":1758012346,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_560af6e559","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":3,"total_tokens":23,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"obfuscation":"x2"}"#;

/// A streamed chat completion's events, with or without the usage chunk.
fn chat_stream(usage: bool) -> String {
    let mut events = vec![
        chunk(r#"{"role":"assistant","content":"","refusal":null}"#, ""),
        chunk(r#"{"content":"Hel"}"#, ""),
        chunk(r#"{"content":"lo é"}"#, ""),
        chunk(r#"{"content":"!"}"#, ""),
        chunk("{}", "stop"),
    ];
    if usage {
        events.push(USAGE_CHUNK.to_owned());
    }
    events.push("[DONE]".to_owned());
    sse(&events.iter().map(String::as_str).collect::<Vec<_>>())
}

const STREAM_REQUEST: &str = r#"{"messages":[{"role":"user","content":"Say hello"}],"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}"#;

#[test]
fn keep_alive_calls_gzip_chunked_then_streamed() {
    let mut s = Session::new(Options::default());
    let c = conn(0x7f00_1000);
    let start = s.send(c, &openai_request("/v1/chat/completions", CHAT_REQUEST));
    let head = openai_response_head("200 OK", "application/json") + "Content-Encoding: gzip\r\n";
    let response = with_chunks(&head, &gzip(CHAT_RESPONSE.as_bytes()), 100);
    let times = s.recv_pieces(c, &response, 200);

    let start2 = s.send(c, &openai_request("/v1/chat/completions", STREAM_REQUEST));
    let head = openai_response_head("200 OK", "text/event-stream; charset=utf-8");
    let response2 = with_chunks(&head, chat_stream(true).as_bytes(), 700);
    let times2 = s.recv_pieces(c, &response2, 256);

    let calls = s.tracker.take_calls();
    assert_eq!(calls.len(), 2);
    let call = &calls[0];
    assert_eq!((call.pid, call.tid, call.connection), (PID, TID, 0));
    assert_eq!((call.start_ns, call.first_byte_ns), (start, times[0]));
    assert_eq!(
        (call.end_ns, call.first_token_ns),
        (*times.last().unwrap(), *times.last().unwrap())
    );
    assert_eq!(
        (
            call.provider.as_str(),
            call.endpoint.as_str(),
            call.host.as_str()
        ),
        ("openai", "chat.completions", "api.openai.com")
    );
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(call.model, "gpt-4o-mini");
    assert_eq!(call.response_model, "gpt-4o-mini-2024-07-18");
    assert_eq!(
        (call.stream, call.max_tokens, call.temperature),
        (false, Some(300), Some(0.2))
    );
    assert_eq!(
        (call.status, call.response_id.as_str()),
        (200, "chatcmpl-CJ0abcdef")
    );
    assert_eq!(call.finish_reason, "stop");
    assert_eq!(
        call.usage,
        Some(Usage {
            input_tokens: 1000,
            output_tokens: 500,
            cache_read_tokens: 200,
            cache_creation_tokens: 0,
            reasoning_tokens: 64,
        })
    );
    // 800 × $0.15 + 200 × $0.075 + 500 × $0.60, per million.
    assert_eq!(call.cost_usd, Some(0.000435));
    assert_eq!(call.cost_source, "builtin");
    assert!(!call.incomplete && !call.usage_missing && call.io.is_none() && call.error.is_none());

    let call = &calls[1];
    assert_eq!((call.start_ns, call.first_byte_ns), (start2, times2[0]));
    assert_eq!(call.end_ns, *times2.last().unwrap());
    assert!(call.stream);
    assert_eq!(call.response_id, "chatcmpl-CJ1stream");
    assert_eq!(call.finish_reason, "stop");
    assert_eq!(call.stream_events, 7);
    assert_eq!(
        call.usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((20, 3))
    );
    assert_eq!(call.cost_usd, Some((20.0 * 0.15 + 3.0 * 0.60) / 1e6));
    assert!(call.first_token_ns > call.first_byte_ns && call.first_token_ns < call.end_ns);

    let trace = s.tracker.finish(s.now);
    assert!(trace.calls.is_empty(), "taken already");
    assert_eq!(trace.stats.connections, 1);
    assert_eq!(trace.stats.other_requests, 0);
    assert_eq!(trace.prices_as_of, PriceTable::builtin().as_of());
}

#[test]
fn stream_timing_comes_from_the_reads_that_completed_content_events() {
    let mut s = Session::new(Options::default());
    let c = conn(1);
    s.send(c, &openai_request("/v1/chat/completions", STREAM_REQUEST));
    let head = openai_response_head("200 OK", "text/event-stream; charset=utf-8");
    let mut response = format!("{head}Transfer-Encoding: chunked\r\n\r\n").into_bytes();
    let body = chat_stream(true);
    let events: Vec<&str> = body.split_inclusive("\n\n").collect();
    let frame = |text: &str| format!("{:x}\r\n{text}\r\n", text.len()).into_bytes();
    response.extend(frame(events[0]));
    let t0 = s.recv(c, &response);
    s.now += 50_000_000; // 50 ms to the first token
    let t1 = s.recv(c, &frame(events[1]));
    s.now += 9_000_000;
    let t2 = s.recv(c, &frame(events[2]));
    s.now += 19_000_000;
    let t3 = s.recv(c, &frame(events[3]));
    let rest: String = events[4..].concat();
    let mut tail = frame(&rest);
    tail.extend_from_slice(b"0\r\n\r\n");
    let end = s.recv(c, &tail);
    let call = &s.tracker.finish(end).calls[0];
    assert_eq!(
        (call.first_byte_ns, call.first_token_ns, call.end_ns),
        (t0, t1, end)
    );
    assert_eq!(call.max_inter_chunk_ns, t3 - t2);
    assert_eq!(call.mean_inter_chunk_ns, (t3 - t1) / 2);
    assert_eq!(call.stream_events, 7);
}

#[test]
fn a_stream_without_usage_is_marked_not_guessed() {
    let mut s = Session::new(Options::default());
    let c = conn(2);
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    s.send(c, &openai_request("/v1/chat/completions", body));
    let head = openai_response_head("200 OK", "text/event-stream; charset=utf-8");
    s.recv_pieces(
        c,
        &with_chunks(&head, chat_stream(false).as_bytes(), 64),
        33,
    );
    let call = &s.tracker.finish(s.now).calls[0];
    assert!(call.usage_missing);
    assert_eq!((call.usage, call.cost_usd), (None, None));
    assert_eq!(call.cost_source, "");
    assert_eq!(call.stream_events, 6);
    assert_eq!(call.response_model, "gpt-4o-mini-2024-07-18");
}

#[test]
fn rate_limited_with_retry_after() {
    let mut s = Session::new(Options::default());
    let c = conn(3);
    s.send(c, &openai_request("/v1/chat/completions", CHAT_REQUEST));
    let body = r#"{
    "error": {
        "message": "Rate limit reached for gpt-4o-mini in organization org-abc on requests per min (RPM): Limit 3, Used 3, Requested 1.",
        "type": "requests",
        "param": null,
        "code": "rate_limit_exceeded"
    }
}"#;
    let head =
        openai_response_head("429 Too Many Requests", "application/json") + "retry-after: 20\r\n";
    s.recv(c, &with_length(&head, body.as_bytes()));
    // Then one whose retry-after is a date: no seconds.
    s.send(c, &openai_request("/v1/chat/completions", CHAT_REQUEST));
    let head = openai_response_head("503 Service Unavailable", "application/json")
        + "Retry-After: Wed, 21 Oct 2025 07:28:00 GMT\r\n";
    s.recv(
        c,
        &with_length(
            &head,
            br#"{"error":{"message":"overloaded","type":"server_error","param":null,"code":null}}"#,
        ),
    );
    let trace = s.tracker.finish(s.now);
    let error = trace.calls[0].error.as_ref().unwrap();
    assert_eq!(trace.calls[0].status, 429);
    assert_eq!(error.kind, "rate_limit_exceeded");
    assert!(error
        .message
        .starts_with("Rate limit reached for gpt-4o-mini"));
    assert_eq!(error.retry_after_s, Some(20.0));
    assert_eq!(
        (
            trace.calls[0].usage,
            trace.calls[0].cost_usd,
            trace.calls[0].first_token_ns
        ),
        (None, None, 0)
    );
    assert_eq!(
        trace.calls[1].error,
        Some(LlmError {
            kind: "server_error".to_owned(),
            message: "overloaded".to_owned(),
            retry_after_s: None
        })
    );
}

#[test]
fn responses_api_whole_and_streamed() {
    let mut s = Session::new(Options {
        capture_io: true,
        ..Options::default()
    });
    let c = conn(4);
    let request = r#"{"input":"Write a haiku","model":"gpt-5-mini","max_output_tokens":2000}"#;
    s.send(c, &openai_request("/v1/responses", request));
    let body = r#"{"id":"resp_68c1","object":"response","created_at":1758012345,"status":"incomplete","background":false,"error":null,"incomplete_details":{"reason":"max_output_tokens"},"model":"gpt-5-mini-2025-08-07","output":[{"id":"rs_1","type":"reasoning","summary":[]},{"id":"msg_1","type":"message","status":"incomplete","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Autumn moon"}],"role":"assistant"}],"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":2000,"output_tokens_details":{"reasoning_tokens":1990},"total_tokens":2012}}"#;
    s.recv(
        c,
        &with_length(
            &openai_response_head("200 OK", "application/json"),
            body.as_bytes(),
        ),
    );

    let request = r#"{"input":"Write a haiku","model":"gpt-5-mini","stream":true}"#;
    s.send(c, &openai_request("/v1/responses", request));
    let events = [
        (
            "response.created",
            r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_77","object":"response","status":"in_progress","model":"gpt-5-mini-2025-08-07","output":[],"usage":null}}"#,
        ),
        (
            "response.output_text.delta",
            r#"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"Autumn","logprobs":[]}"#,
        ),
        (
            "response.output_text.delta",
            r#"{"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_1","output_index":1,"content_index":0,"delta":" moon","logprobs":[]}"#,
        ),
        (
            "response.completed",
            r#"{"type":"response.completed","sequence_number":9,"response":{"id":"resp_77","object":"response","status":"completed","model":"gpt-5-mini-2025-08-07","output":[{"type":"message","content":[{"type":"output_text","text":"Autumn moon"}]}],"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":300,"output_tokens_details":{"reasoning_tokens":256},"total_tokens":312}}}"#,
        ),
    ];
    let body: String = events
        .iter()
        .map(|(e, d)| format!("event: {e}\ndata: {d}\n\n"))
        .collect();
    let head = openai_response_head("200 OK", "text/event-stream; charset=utf-8");
    s.recv_pieces(c, &with_chunks(&head, body.as_bytes(), 90), 77);

    let trace = s.tracker.finish(s.now);
    let [whole, streamed] = &trace.calls[..] else {
        panic!("two calls")
    };
    assert_eq!(
        (whole.endpoint.as_str(), whole.response_id.as_str()),
        ("responses", "resp_68c1")
    );
    assert_eq!(
        (whole.max_tokens, whole.finish_reason.as_str()),
        (Some(2000), "max_output_tokens")
    );
    assert_eq!(
        whole.usage.map(|u| (u.output_tokens, u.reasoning_tokens)),
        Some((2000, 1990))
    );
    assert_eq!(whole.cost_usd, Some((12.0 * 0.25 + 2000.0 * 2.0) / 1e6));
    assert_eq!(whole.io.as_ref().unwrap().completion, "Autumn moon");
    assert_eq!(streamed.response_id, "resp_77");
    assert_eq!(streamed.finish_reason, "completed");
    assert_eq!(streamed.stream_events, 4);
    assert_eq!(streamed.usage.map(|u| u.output_tokens), Some(300));
    assert_eq!(streamed.io.as_ref().unwrap().completion, "Autumn moon");
    assert_eq!(streamed.io.as_ref().unwrap().request, request);
}

#[test]
fn embeddings_and_a_provider_reported_cost() {
    let mut s = Session::new(Options::default());
    let c = conn(5);
    s.send(
        c,
        &openai_request(
            "/v1/embeddings",
            r#"{"input":["a","b"],"model":"text-embedding-3-small","encoding_format":"base64"}"#,
        ),
    );
    let body = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AAAA"}],"model":"text-embedding-3-small","usage":{"prompt_tokens":1000000,"total_tokens":1000000}}"#;
    s.recv(
        c,
        &with_length(
            &openai_response_head("200 OK", "application/json"),
            body.as_bytes(),
        ),
    );
    // An OpenRouter-style server reports its own cost.
    let d = conn(6);
    let req = request(
        "openrouter.ai",
        "/api/v1/chat/completions",
        &[("Content-Type", "application/json")],
        r#"{"model":"openai/gpt-4o","messages":[]}"#,
    );
    s.send(d, &req);
    let body = r#"{"id":"gen-1","model":"openai/gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":1,"total_tokens":11,"cost":0.0000345}}"#;
    s.recv(
        d,
        &with_length(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n",
            body.as_bytes(),
        ),
    );
    let trace = s.tracker.finish(s.now);
    let [emb, routed] = &trace.calls[..] else {
        panic!("two calls")
    };
    assert_eq!(
        (emb.endpoint.as_str(), emb.response_model.as_str()),
        ("embeddings", "")
    );
    assert_eq!(
        emb.usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((1_000_000, 0))
    );
    assert_eq!(emb.cost_usd, Some(0.02));
    assert_eq!(routed.provider, "openai-compatible");
    assert_eq!(
        (routed.cost_usd, routed.cost_source.as_str()),
        (Some(0.0000345), "provider")
    );
    assert_eq!(trace.stats.connections, 2);
}
