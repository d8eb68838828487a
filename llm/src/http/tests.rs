//! Tests of HTTP/1.x framing: every split of the input gives the same messages.

use super::*;

/// What a handler saw, as text.
#[derive(Default)]
struct Log {
    events: Vec<String>,
    body: Vec<u8>,
    /// Framing to answer each head with; `None`: the head's own.
    framing: Option<Framing>,
}

impl Handler for Log {
    fn head(&mut self, head: Head, _started_ns: u64, _now_ns: u64) -> Framing {
        let line = match head.status {
            0 => format!("head {} {}", head.method, head.target),
            status => format!("head {status}"),
        };
        self.events.push(line);
        self.framing.unwrap_or_else(|| head.body_framing())
    }

    fn body(&mut self, bytes: &[u8], _now_ns: u64) {
        self.body.extend_from_slice(bytes);
    }

    fn body_gap(&mut self, missing: u64) {
        self.flush_body();
        self.events.push(format!("gap {missing}"));
    }

    fn end(&mut self, _now_ns: u64) {
        self.flush_body();
        self.events.push("end".to_owned());
    }

    fn lost(&mut self, head_seen: bool, _now_ns: u64) {
        self.flush_body();
        self.events.push(format!("lost {head_seen}"));
    }
}

impl Log {
    fn flush_body(&mut self) {
        if !self.body.is_empty() {
            let body = String::from_utf8_lossy(&std::mem::take(&mut self.body)).into_owned();
            self.events.push(format!("body {body}"));
        }
    }
}

fn parse(kind: Kind, pieces: &[&[u8]]) -> Vec<String> {
    let mut parser = Parser::new(kind);
    let mut log = Log::default();
    for piece in pieces {
        parser.feed(piece, 1, &mut log);
    }
    parser.close(2, &mut log);
    log.flush_body();
    log.events
}

/// Parses `input` whole, split in two at every offset, and byte by byte: all the same.
fn parse_every_split(kind: Kind, input: &[u8]) -> Vec<String> {
    let whole = parse(kind, &[input]);
    for at in 0..=input.len() {
        assert_eq!(
            parse(kind, &[&input[..at], &input[at..]]),
            whole,
            "split at {at}"
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(parse(kind, &bytes), whole, "byte by byte");
    whole
}

const REQUESTS: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n\
    Content-Length: 11\r\n\r\n{\"a\":\"bcd\"}\
    POST /v1/embeddings HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
    4;ext=1\r\n{\"x\"\r\nA\r\n:123456789\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n\
    GET /health HTTP/1.1\r\nHost: h\r\n\r\n";

#[test]
fn requests_by_length_chunked_and_bodiless_in_any_split() {
    assert_eq!(
        parse_every_split(Kind::Request, REQUESTS),
        [
            "head POST /v1/chat/completions",
            "body {\"a\":\"bcd\"}",
            "end",
            "head POST /v1/embeddings",
            "body {\"x\":123456789}",
            "end",
            "head GET /health",
            "end",
        ]
    );
}

#[test]
fn a_response_without_length_runs_to_close() {
    let input = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it";
    assert_eq!(
        parse_every_split(Kind::Response, input),
        ["head 200", "body all of it", "end"]
    );
}

#[test]
fn header_names_are_case_insensitive_and_values_trimmed() {
    let head = parse_head(
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After:  3 \r\nCONTENT-LENGTH: 0\r\n\r\n",
        Kind::Response,
    )
    .unwrap();
    assert_eq!(head.status, 429);
    assert_eq!(head.header("retry-after"), Some("3"));
    assert_eq!(head.body_framing(), Framing::Empty);
}

#[test]
fn a_gap_inside_a_known_length_is_skipped() {
    let mut parser = Parser::new(Kind::Request);
    let mut log = Log::default();
    parser.feed(
        b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123",
        1,
        &mut log,
    );
    parser.gap(4, 1, &mut log);
    parser.feed(b"89POST /b HTTP/1.1\r\n\r\n", 1, &mut log);
    assert_eq!(
        log.events,
        [
            "head POST /a",
            "body 0123",
            "gap 4",
            "body 89",
            "end",
            "head POST /b",
            "end"
        ]
    );
}

#[test]
fn a_gap_past_the_body_loses_the_next_message_and_resyncs() {
    let mut parser = Parser::new(Kind::Response);
    let mut log = Log::default();
    parser.feed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab",
        1,
        &mut log,
    );
    parser.gap(30, 1, &mut log);
    parser.feed(b"der: x\r\n\r\nHTTP/1.1 404 Not Found\r", 1, &mut log);
    parser.feed(b"\nContent-Length: 1\r\n\r\nz", 1, &mut log);
    assert_eq!(
        log.events,
        [
            "head 200",
            "body ab",
            "gap 2",
            "end",
            "lost false",
            "head 404",
            "body z",
            "end"
        ]
    );
}

#[test]
fn a_gap_in_chunk_framing_loses_the_message() {
    let mut parser = Parser::new(Kind::Response);
    let mut log = Log::default();
    parser.feed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        1,
        &mut log,
    );
    parser.gap(3, 1, &mut log);
    parser.feed(b"\r\n", 1, &mut log);
    parser.gap(1, 1, &mut log);
    parser.feed(
        b"\r\nxyz\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        1,
        &mut log,
    );
    parser.close(2, &mut log);
    assert_eq!(
        log.events,
        // The 204 has no length: the test handler reads it to close.
        [
            "head 200",
            "body ab",
            "gap 3",
            "lost true",
            "head 204",
            "end"
        ]
    );
}

#[test]
fn garbage_where_a_head_should_be_is_lost_then_resynced() {
    let input = b"\x16\x03\x01garbage\r\nGET / HTTP/1.1\r\n\r\n";
    assert_eq!(
        parse(Kind::Request, &[input]),
        ["lost false", "head GET /", "end"]
    );
}

#[test]
fn an_oversized_head_is_lost() {
    let mut input = b"GET / HTTP/1.1\r\n".to_vec();
    while input.len() <= MAX_HEAD {
        input.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    input.extend_from_slice(b"\r\nGET /next HTTP/1.1\r\n\r\n");
    assert_eq!(
        parse(Kind::Request, &[&input]),
        ["lost false", "head GET /next", "end"]
    );
}

#[test]
fn start_lines_are_recognised_from_their_prefixes() {
    let req = |b: &[u8]| looks_like_start(b, Kind::Request);
    assert_eq!(req(b"POST /v1/x HTTP/1.1\r\n"), Verdict::Yes);
    assert_eq!(req(b"POST /v1/x HTT"), Verdict::Maybe);
    assert_eq!(req(b"PO"), Verdict::Maybe);
    assert_eq!(req(b"PRI * HTTP/2.0\r\n"), Verdict::No);
    assert_eq!(req(b"post / HTTP/1.1\r\n"), Verdict::No);
    assert_eq!(req(b"\x16\x03\x01"), Verdict::No);
    let resp = |b: &[u8]| looks_like_start(b, Kind::Response);
    assert_eq!(resp(b"HTTP/1.1 200 OK\r\n"), Verdict::Yes);
    assert_eq!(resp(b"HTTP/1.1 20"), Verdict::Maybe);
    assert_eq!(resp(b"HTTP/2 200"), Verdict::No);
}

#[test]
fn skipped_bytes_advance_a_length_body_unseen() {
    let mut parser = Parser::new(Kind::Response);
    let mut log = Log::default();
    assert_eq!(parser.length_body(), None);
    parser.feed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab",
        1,
        &mut log,
    );
    let body = parser.length_body();
    assert_eq!(
        body,
        Some(LengthBody {
            message: 1,
            left: 8
        })
    );
    assert_eq!(parser.skip(5, 1, &mut log), 0);
    parser.feed(
        b"xyzHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n",
        1,
        &mut log,
    );
    assert_eq!(
        parser.length_body(),
        Some(LengthBody {
            message: 2,
            left: 4
        })
    );
    // Past the end of the body: the rest is returned, the message ends.
    assert_eq!(parser.skip(6, 1, &mut log), 2);
    assert_eq!(parser.length_body(), None);
    assert_eq!(parser.skip(3, 1, &mut log), 3);
    log.flush_body();
    assert_eq!(
        log.events,
        ["head 200", "body abxyz", "end", "head 200", "end"]
    );
}
