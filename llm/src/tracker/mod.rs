//! The connections of one session: each one's protocol, found from its first outbound bytes,
//! its two HTTP/1.x parsers and its exchanges in flight, paired request to response in order.
//! Which of their bodies need not be captured is decided in [`skip`].

mod skip;

use std::collections::{HashMap, VecDeque};

use modelprobe_recording::llm::{LlmCall, LlmStats, LlmTrace};

use crate::{
    exchange::{Exchange, Outcome},
    http::{self, Framing, Handler, Head, Kind, Verdict},
    ConnKey, Direction, Options,
};

pub use skip::SkipRequest;

/// Most exchanges waiting for their response on one connection; beyond, the oldest is given
/// up as unanswered (its response was not captured), so memory stays bounded.
const MAX_IN_FLIGHT: usize = 32;

/// The start of HTTP/2's client connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Every connection of one session, turning captured bytes into LLM calls.
pub struct Tracker {
    options: Options,
    conns: HashMap<ConnKey, Connection>,
    /// The next connection number of each process.
    numbers: HashMap<u32, u32>,
    shared: Shared,
    /// Skips asked for since the last take.
    skip_requests: Vec<SkipRequest>,
}

/// What every connection adds to.
#[derive(Default)]
struct Shared {
    stats: LlmStats,
    done: Vec<LlmCall>,
    priced_builtin: bool,
    priced_config: bool,
}

impl Shared {
    fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Call(call) => {
                self.priced_builtin |= call.cost_source == "builtin";
                self.priced_config |= call.cost_source == "config";
                self.done.push(*call);
            }
            Outcome::Other => self.stats.other_requests += 1,
            Outcome::Lost => {}
        }
    }
}

/// What a connection speaks.
enum Protocol {
    /// Not known yet: the first outbound bytes so far.
    Sniffing(Vec<u8>),
    /// HTTP/1.x, parsed.
    Http1,
    /// Anything else (HTTP/2, another protocol, an upgraded connection): ignored.
    Ignored,
}

struct Connection {
    number: u32,
    protocol: Protocol,
    requests: http::Parser,
    responses: http::Parser,
    exchanges: Exchanges,
    /// The bodies whose skip was decided.
    skips: skip::Decided,
}

/// A connection's exchanges in request order. Requests and responses both complete in
/// order, so the one being written is the last, the one being read the first not done.
#[derive(Default)]
struct Exchanges {
    queue: VecDeque<Exchange>,
    reading: Reading,
    /// A response switched protocols: the connection is no longer HTTP/1.x.
    upgraded: bool,
}

/// What the response being read belongs to.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Nothing is being read.
    #[default]
    Idle,
    /// A 1xx response.
    Interim,
    /// A response to no request seen.
    Orphan,
    /// The first exchange whose response is not done.
    Current,
}

impl Exchanges {
    fn writing(&mut self) -> Option<&mut Exchange> {
        self.queue.back_mut().filter(|e| !e.request_done)
    }

    fn reading(&mut self) -> Option<&mut Exchange> {
        if self.reading != Reading::Current {
            return None;
        }
        self.queue.iter_mut().find(|e| !e.response_done)
    }

    /// Passes the exchanges that are over, from the front, to `shared`.
    fn complete(&mut self, options: &Options, shared: &mut Shared) {
        while self
            .queue
            .front()
            .is_some_and(|e| e.request_done && e.response_done)
        {
            let exchange = self.queue.pop_front().expect("front exists");
            shared.record(exchange.finish(0, options));
        }
    }
}

/// The request side of a connection, as a parser's handler.
struct Requests<'a> {
    exchanges: &'a mut Exchanges,
    options: &'a Options,
    shared: &'a mut Shared,
    call: LlmCall,
}

impl Handler for Requests<'_> {
    fn head(&mut self, head: Head, started_ns: u64, now_ns: u64) -> Framing {
        if self.exchanges.queue.len() >= MAX_IN_FLIGHT {
            let mut oldest = self.exchanges.queue.pop_front().expect("queue is full");
            if oldest.response_started && !oldest.response_done {
                self.exchanges.reading = Reading::Idle;
            }
            oldest.request_gap();
            self.shared.record(oldest.finish(now_ns, self.options));
        }
        let exchange = Exchange::request(&head, started_ns, self.call.clone());
        self.exchanges.queue.push_back(exchange);
        head.body_framing()
    }

    fn body(&mut self, bytes: &[u8], _now_ns: u64) {
        if let Some(e) = self.exchanges.writing() {
            e.request_body(bytes);
        }
    }

    fn body_gap(&mut self, _missing: u64) {
        if let Some(e) = self.exchanges.writing() {
            e.request_gap();
        }
    }

    fn end(&mut self, _now_ns: u64) {
        if let Some(e) = self.exchanges.writing() {
            e.request_done = true;
        }
        self.exchanges.complete(self.options, self.shared);
    }

    fn lost(&mut self, head_seen: bool, _now_ns: u64) {
        match self.exchanges.writing() {
            Some(e) if head_seen => {
                e.request_gap();
                e.request_done = true;
            }
            _ => {
                self.shared.stats.unparsed_exchanges += 1;
                self.exchanges.queue.push_back(Exchange::lost());
            }
        }
        self.exchanges.complete(self.options, self.shared);
    }
}

/// The response side of a connection, as a parser's handler.
struct Responses<'a> {
    exchanges: &'a mut Exchanges,
    options: &'a Options,
    shared: &'a mut Shared,
}

impl Handler for Responses<'_> {
    fn head(&mut self, head: Head, started_ns: u64, _now_ns: u64) -> Framing {
        if (100..200).contains(&head.status) {
            self.exchanges.reading = Reading::Interim;
            if head.status == 101 {
                // Switching protocols: what follows is not HTTP/1.x.
                self.exchanges.upgraded = true;
                return Framing::UntilClose;
            }
            return Framing::Empty;
        }
        let next = self
            .exchanges
            .queue
            .iter_mut()
            .find(|e| !e.response_started);
        match next {
            Some(e) => {
                self.exchanges.reading = Reading::Current;
                e.response_head(&head, started_ns, self.options)
            }
            None => {
                self.exchanges.reading = Reading::Orphan;
                self.shared.stats.unparsed_exchanges += 1;
                head.body_framing()
            }
        }
    }

    fn body(&mut self, bytes: &[u8], now_ns: u64) {
        if let Some(e) = self.exchanges.reading() {
            e.response_body(bytes, now_ns);
        }
    }

    fn body_gap(&mut self, _missing: u64) {
        if let Some(e) = self.exchanges.reading() {
            e.response_gap();
        }
    }

    fn end(&mut self, now_ns: u64) {
        if let Some(e) = self.exchanges.reading() {
            e.response_end(now_ns, false);
        }
        self.exchanges.reading = Reading::Idle;
        self.exchanges.complete(self.options, self.shared);
    }

    fn lost(&mut self, head_seen: bool, now_ns: u64) {
        let cut = if head_seen {
            self.exchanges.reading()
        } else {
            // The next response's start was lost: its exchange gets no answer.
            self.exchanges
                .queue
                .iter_mut()
                .find(|e| !e.response_started)
        };
        match cut {
            Some(e) => e.response_end(now_ns, true),
            None if !head_seen => self.shared.stats.unparsed_exchanges += 1,
            None => {}
        }
        self.exchanges.reading = Reading::Idle;
        self.exchanges.complete(self.options, self.shared);
    }
}

impl Tracker {
    /// A tracker with no connections yet.
    pub fn new(options: Options) -> Tracker {
        Tracker {
            options,
            conns: HashMap::new(),
            numbers: HashMap::new(),
            shared: Shared::default(),
            skip_requests: Vec::new(),
        }
    }

    /// Captured bytes of one `SSL_read`/`SSL_write` (or socket read/write) call, in order per
    /// connection and direction. `tid` is the thread that made the call, `time_ns` when it
    /// returned (CLOCK_MONOTONIC).
    pub fn data(&mut self, conn: ConnKey, tid: u32, dir: Direction, time_ns: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let c = connection(
            &mut self.conns,
            &mut self.numbers,
            &mut self.shared.stats,
            conn,
        );
        if let Protocol::Sniffing(seen) = &mut c.protocol {
            if dir == Direction::Inbound {
                // A reply to nothing seen (the capture began mid-connection).
                return;
            }
            seen.extend_from_slice(bytes);
            let prefix = seen.len().min(H2_PREFACE.len());
            if seen[..prefix] == H2_PREFACE[..prefix] {
                if prefix == H2_PREFACE.len() {
                    self.shared.stats.http2_connections += 1;
                    c.protocol = Protocol::Ignored;
                }
                return;
            }
            match http::looks_like_start(seen, Kind::Request) {
                Verdict::Maybe => return,
                Verdict::No => {
                    self.shared.stats.other_connections += 1;
                    c.protocol = Protocol::Ignored;
                    return;
                }
                Verdict::Yes => {
                    let seen = std::mem::take(seen);
                    c.protocol = Protocol::Http1;
                    self.feed(conn, tid, dir, time_ns, &seen);
                    return;
                }
            }
        }
        self.feed(conn, tid, dir, time_ns, bytes);
    }

    /// Feeds an HTTP/1.x connection.
    fn feed(&mut self, conn: ConnKey, tid: u32, dir: Direction, time_ns: u64, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !matches!(c.protocol, Protocol::Http1) {
            return;
        }
        match dir {
            Direction::Outbound => {
                let call = LlmCall {
                    pid: conn.pid,
                    tid,
                    connection: c.number,
                    ..LlmCall::default()
                };
                let mut h = Requests {
                    exchanges: &mut c.exchanges,
                    options: &self.options,
                    shared: &mut self.shared,
                    call,
                };
                c.requests.feed(bytes, time_ns, &mut h);
            }
            Direction::Inbound => {
                let mut h = Responses {
                    exchanges: &mut c.exchanges,
                    options: &self.options,
                    shared: &mut self.shared,
                };
                c.responses.feed(bytes, time_ns, &mut h);
            }
        }
        if c.exchanges.upgraded {
            c.protocol = Protocol::Ignored;
        }
        self.consider_skips(conn);
    }

    /// `missing` bytes of this direction were not captured at this point: the parser skips
    /// them, and the calls they belonged to are marked incomplete.
    pub fn gap(&mut self, conn: ConnKey, dir: Direction, time_ns: u64, missing: u64) {
        if missing == 0 {
            return;
        }
        self.shared.stats.bytes_not_captured += missing;
        let c = connection(
            &mut self.conns,
            &mut self.numbers,
            &mut self.shared.stats,
            conn,
        );
        if let (Protocol::Sniffing(seen), Direction::Outbound) = (&mut c.protocol, dir) {
            if seen.is_empty() {
                return;
            }
            // What was seen was the start of a request line (or of the HTTP/2 preface).
            let seen = std::mem::take(seen);
            if H2_PREFACE.starts_with(&seen) {
                self.shared.stats.http2_connections += 1;
                c.protocol = Protocol::Ignored;
                return;
            }
            c.protocol = Protocol::Http1;
            // A partial start line completes no head: no thread is named.
            self.feed(conn, 0, dir, time_ns, &seen);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match (&mut c.protocol, dir) {
            (Protocol::Http1, Direction::Outbound) => {
                let mut h = Requests {
                    exchanges: &mut c.exchanges,
                    options: &self.options,
                    shared: &mut self.shared,
                    call: LlmCall::default(),
                };
                c.requests.gap(missing, time_ns, &mut h);
            }
            (Protocol::Http1, Direction::Inbound) => {
                let mut h = Responses {
                    exchanges: &mut c.exchanges,
                    options: &self.options,
                    shared: &mut self.shared,
                };
                c.responses.gap(missing, time_ns, &mut h);
            }
            _ => return,
        }
        self.consider_skips(conn);
    }

    /// The connection ended (`SSL_free`, `close`): what is open on it ends at `time_ns`, and
    /// it is forgotten (its id may come back for a new connection).
    pub fn close(&mut self, conn: ConnKey, time_ns: u64) {
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        if let Protocol::Http1 = c.protocol {
            let mut h = Responses {
                exchanges: &mut c.exchanges,
                options: &self.options,
                shared: &mut self.shared,
            };
            c.responses.close(time_ns, &mut h);
        }
        for exchange in c.exchanges.queue.drain(..) {
            self.shared.record(exchange.finish(time_ns, &self.options));
        }
    }

    /// Process `pid` exited: every connection it still had ends at `time_ns` (a process that
    /// exits without `SSL_free` would otherwise keep its connections' state for the session).
    pub fn close_process(&mut self, pid: u32, time_ns: u64) {
        let mut conns: Vec<ConnKey> = self
            .conns
            .keys()
            .filter(|c| c.pid == pid)
            .copied()
            .collect();
        conns.sort();
        for conn in conns {
            self.close(conn, time_ns);
        }
    }

    /// Capture records the kernel dropped (its ring buffer was full).
    pub fn lost_records(&mut self, n: u64) {
        self.shared.stats.records_lost += n;
    }

    /// The calls completed since the last take, in request order.
    pub fn take_calls(&mut self) -> Vec<LlmCall> {
        let mut calls = std::mem::take(&mut self.shared.done);
        sort(&mut calls);
        calls
    }

    /// The end of the recording: every connection still open ends at `end_ns` (a call with
    /// no full response ends there), and the trace of the calls not taken is returned.
    pub fn finish(mut self, end_ns: u64) -> LlmTrace {
        let mut open: Vec<ConnKey> = self.conns.keys().copied().collect();
        open.sort();
        for conn in open {
            self.close(conn, end_ns);
        }
        let prices_as_of = if self.shared.priced_builtin {
            self.options.prices.as_of().to_owned()
        } else if self.shared.priced_config {
            "config".to_owned()
        } else {
            String::new()
        };
        let mut calls = self.shared.done;
        sort(&mut calls);
        LlmTrace {
            calls,
            stats: self.shared.stats,
            prices_as_of,
        }
    }
}

/// The state of a connection, new when it was not seen (or was closed).
fn connection<'a>(
    conns: &'a mut HashMap<ConnKey, Connection>,
    numbers: &mut HashMap<u32, u32>,
    stats: &mut LlmStats,
    conn: ConnKey,
) -> &'a mut Connection {
    conns.entry(conn).or_insert_with(|| {
        stats.connections += 1;
        let next = numbers.entry(conn.pid).or_default();
        let number = *next;
        *next += 1;
        Connection {
            number,
            protocol: Protocol::Sniffing(Vec::new()),
            requests: http::Parser::new(Kind::Request),
            responses: http::Parser::new(Kind::Response),
            exchanges: Exchanges::default(),
            skips: skip::Decided::default(),
        }
    })
}

fn sort(calls: &mut [LlmCall]) {
    calls.sort_by_key(|c| (c.start_ns, c.pid, c.connection));
}
