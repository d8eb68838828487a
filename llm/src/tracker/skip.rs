//! Large bodies that are certainly no LLM call's, skipped instead of captured.
//!
//! A traced process that downloads a model file (or uploads one) would push every byte of it
//! through the capture ring buffer and the parser for nothing. Once a body is known to be
//! delimited by `Content-Length` and its exchange to be certainly no LLM call, and more than
//! [`Options::skip_bodies_over`] bytes of it are still to come, the tracker asks for the rest
//! of it to be skipped ([`Tracker::take_skip_requests`]), once per body. The kernel then
//! reports how many bytes it skipped, in their place in the stream ([`Tracker::skipped`]),
//! and the framing moves past them as though they had been read.
//!
//! Records already in the ring buffer when the request is acted on are still delivered, so
//! the skip asked for ends half of [`Options::skip_bodies_over`] short of the body's end: it
//! never reaches the next message as long as less than that was in flight.
//!
//! [`Options::skip_bodies_over`]: crate::Options::skip_bodies_over

use modelprobe_recording::llm::LlmCall;

use super::{Exchanges, Protocol, Reading, Requests, Responses, Tracker};
use crate::{ConnKey, Direction};

/// A request to skip, rather than capture, the next `bytes` bytes of one direction of a
/// connection, reporting only their count ([`Tracker::skipped`]). They lie inside one body,
/// even counting what was captured of it before the request was acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkipRequest {
    /// The connection.
    pub conn: ConnKey,
    /// The direction whose bytes to skip.
    pub dir: Direction,
    /// How many bytes to skip.
    pub bytes: u64,
}

/// Of each direction of a connection, the message whose body's skip was last decided (asked
/// for, or ruled out since too little of it was left).
#[derive(Default)]
pub(super) struct Decided {
    requests: Option<u64>,
    responses: Option<u64>,
}

impl Tracker {
    /// The skips asked for since the last take, in the order they were decided. Each body is
    /// asked about at most once.
    pub fn take_skip_requests(&mut self) -> Vec<SkipRequest> {
        std::mem::take(&mut self.skip_requests)
    }

    /// `bytes` bytes of this direction of `conn` were skipped at `time_ns`, as asked
    /// ([`SkipRequest`]): the framing moves past them as though they had been received, and
    /// they are counted in [`LlmStats::bytes_skipped`] (not as bytes not captured), marking
    /// nothing incomplete. Any that would pass the end of the body are a gap
    /// ([`Tracker::gap`]). Those of a connection no longer parsed (closed, or no longer
    /// HTTP/1.x) are only counted.
    ///
    /// [`LlmStats::bytes_skipped`]: modelprobe_recording::llm::LlmStats::bytes_skipped
    pub fn skipped(&mut self, conn: ConnKey, dir: Direction, time_ns: u64, bytes: u64) {
        let parsed = self.conns.get_mut(&conn);
        let Some(c) = parsed.filter(|c| matches!(c.protocol, Protocol::Http1)) else {
            self.shared.stats.bytes_skipped += bytes;
            return;
        };
        let outside = match dir {
            Direction::Outbound => {
                let mut h = Requests {
                    exchanges: &mut c.exchanges,
                    options: &self.options,
                    shared: &mut self.shared,
                    call: LlmCall::default(),
                };
                c.requests.skip(bytes, time_ns, &mut h)
            }
            Direction::Inbound => {
                let mut h = Responses {
                    exchanges: &mut c.exchanges,
                    options: &self.options,
                    shared: &mut self.shared,
                };
                c.responses.skip(bytes, time_ns, &mut h)
            }
        };
        self.shared.stats.bytes_skipped += bytes - outside;
        if outside > 0 {
            self.gap(conn, dir, time_ns, outside);
        } else {
            self.consider_skips(conn);
        }
    }

    /// Asks for the rest of each body of `conn` being read to be skipped when it is delimited
    /// by `Content-Length`, certainly no LLM call's, and more than
    /// [`Options::skip_bodies_over`] bytes from its end.
    ///
    /// [`Options::skip_bodies_over`]: crate::Options::skip_bodies_over
    pub(super) fn consider_skips(&mut self, conn: ConnKey) {
        let over = self.options.skip_bodies_over;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if over == 0 || !matches!(c.protocol, Protocol::Http1) {
            return;
        }
        for dir in [Direction::Outbound, Direction::Inbound] {
            let (parser, decided) = match dir {
                Direction::Outbound => (&c.requests, &mut c.skips.requests),
                Direction::Inbound => (&c.responses, &mut c.skips.responses),
            };
            let Some(body) = parser.length_body() else {
                continue;
            };
            // Not certain yet (a response whose request is still being read) is asked again.
            if *decided == Some(body.message) || !not_llm(&mut c.exchanges, dir) {
                continue;
            }
            *decided = Some(body.message);
            if body.left > over {
                self.skip_requests.push(SkipRequest {
                    conn,
                    dir,
                    bytes: body.left - over / 2,
                });
            }
        }
    }
}

/// True when the body being read in `dir` is certainly no LLM call's.
fn not_llm(exchanges: &mut Exchanges, dir: Direction) -> bool {
    match dir {
        Direction::Outbound => exchanges.writing().is_some_and(|e| e.certainly_not_llm()),
        Direction::Inbound => match exchanges.reading {
            // A response to no request seen: nothing reads its body.
            Reading::Orphan => true,
            Reading::Current => exchanges.reading().is_some_and(|e| e.certainly_not_llm()),
            Reading::Idle | Reading::Interim => false,
        },
    }
}
