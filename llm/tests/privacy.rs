//! What reaches the recording: never a header, payload text only with `capture_io`,
//! redacted and capped.

mod common;

use common::*;
use modelprobe_llm::Options;
use regex::Regex;

const REQUEST: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"My SSN is 123-45-6789; reply briefly"}],"metadata":{"api_key":"sk-test-SECRET123","apiKey":"sk-test-SECRET123"}}"#;

fn record(options: Options) -> String {
    let mut s = Session::new(options);
    let c = conn(1);
    // Both an OpenAI-style and an Anthropic-style credential header.
    let mut request = openai_request("/v1/chat/completions", REQUEST);
    let at = request.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    request.splice(
        at..at,
        format!("x-api-key: {SECRET}\r\nCookie: session={SECRET}\r\n").bytes(),
    );
    s.send(c, &request);
    let body = r#"{"id":"chatcmpl-1","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Noted: 123-45-6789. Anything else?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":9}}"#;
    let head = openai_response_head("200 OK", "application/json");
    s.recv(c, &with_length(&head, body.as_bytes()));
    let trace = s.tracker.finish(s.now);
    assert_eq!(trace.calls.len(), 1);
    serde_json::to_string(&trace).unwrap()
}

#[test]
fn credentials_never_reach_the_recording() {
    let plain = record(Options::default());
    assert!(!plain.contains("SECRET123"), "{plain}");
    let captured = record(Options {
        capture_io: true,
        ..Options::default()
    });
    assert!(!captured.contains("SECRET123"), "{captured}");
    assert!(captured.contains("reply briefly"), "{captured}");
}

#[test]
fn without_capture_io_no_payload_text_is_kept() {
    let plain = record(Options::default());
    for text in ["SSN", "Noted", "reply briefly", "\"io\""] {
        assert!(!plain.contains(text), "{text} in {plain}");
    }
}

#[test]
fn captured_text_is_redacted_then_capped() {
    let options = Options {
        capture_io: true,
        io_cap_bytes: 40,
        redact: vec![Regex::new(r"\d{3}-\d{2}-\d{4}").unwrap()],
        ..Options::default()
    };
    let json = record(options);
    let trace: modelprobe_recording::llm::LlmTrace = serde_json::from_str(&json).unwrap();
    let io = trace.calls[0].io.as_ref().unwrap();
    assert_eq!(io.completion, "Noted: [REDACTED]. Anything else?");
    assert_eq!(io.request, &REQUEST[..40]);
    // Counted after redaction, which shortened the SSN by 1 and each key by 7.
    assert_eq!(io.truncated_bytes, (REQUEST.len() - 1 - 7 - 7 - 40) as u64);
    assert!(!json.contains("6789"));
}
