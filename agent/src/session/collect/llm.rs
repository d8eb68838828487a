//! TLS plaintext into LLM calls: puts the pieces of each `SSL_read`/`SSL_write` call back in
//! order per connection and direction, tells the parser ([`modelprobe_llm::Tracker`]) where
//! bytes are missing (past the per-call capture limit, or lost), and hands it the rest.
use std::collections::HashMap;

use modelprobe_llm::{ConnKey, Direction, Options, Tracker};

use crate::{
    recording::llm::{LlmCall, LlmTrace},
    sampler::{TlsKind, TlsView},
};

/// Set in the [`ConnKey`] id of a plain TCP socket.
const SOCKET_ID: u64 = 1 << 63;

/// Where the current call of one connection and direction stands.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    /// Bytes the call moved.
    call_len: u64,
    /// Bytes of it accounted for (received or skipped).
    next: u64,
}

impl Cursor {
    fn open(&self) -> bool {
        self.next < self.call_len
    }
}

/// The LLM-call parser of one session and the state of each connection's current call.
pub struct LlmCapture {
    /// What it was made with (a flight recorder's next collector is made with the same).
    options: Options,
    tracker: Tracker,
    cursors: HashMap<(ConnKey, bool), Cursor>,
    /// Calls taken from the tracker while recording (for live metrics), in order taken.
    finished: Vec<LlmCall>,
}

impl std::fmt::Debug for LlmCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmCapture")
            .field("connections", &self.cursors.len())
            .finish()
    }
}

impl LlmCapture {
    /// A capture parsing with `options`.
    pub fn new(options: Options) -> Self {
        LlmCapture {
            options: options.clone(),
            tracker: Tracker::new(options),
            cursors: HashMap::new(),
            finished: Vec::new(),
        }
    }

    /// The options it parses with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// One record from the TLS ring.
    pub fn ingest(&mut self, v: &TlsView<'_>) {
        // Socket ids and `SSL *`s never meet: user addresses never have the top bit set.
        let conn = ConnKey {
            pid: v.pid,
            id: if v.socket { v.conn | SOCKET_ID } else { v.conn },
        };
        if v.kind == TlsKind::Close {
            for read in [false, true] {
                self.flush(conn, read, v.time_ns);
                self.cursors.remove(&(conn, read));
            }
            self.tracker.close(conn, v.time_ns);
            return;
        }
        let dir = if v.read {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        let cursor = self.cursors.entry((conn, v.read)).or_default();
        let skipped = v.kind == TlsKind::Skipped;
        if cursor.open() && (skipped || v.offset < cursor.next || v.call_len != cursor.call_len) {
            // The previous call's last pieces never came (lost): skip what was left of it.
            let missing = cursor.call_len - cursor.next;
            self.tracker.gap(conn, dir, v.time_ns, missing);
            cursor.next = cursor.call_len;
        }
        if skipped {
            // A whole call the kernel counted without sending, as asked.
            self.tracker.skipped(conn, dir, v.time_ns, v.call_len);
            return;
        }
        if !cursor.open() {
            *cursor = Cursor {
                call_len: v.call_len,
                next: 0,
            };
        }
        if v.offset > cursor.next {
            self.tracker
                .gap(conn, dir, v.time_ns, v.offset - cursor.next);
        }
        cursor.next = v.offset + v.bytes.len() as u64;
        self.tracker.data(conn, v.tid, dir, v.time_ns, v.bytes);
    }

    /// Process `pid` exited: its connections end (after everything it sent was drained).
    pub fn close_process(&mut self, pid: u32, time_ns: u64) {
        let open: Vec<(ConnKey, bool)> = self
            .cursors
            .keys()
            .filter(|(c, _)| c.pid == pid)
            .copied()
            .collect();
        for (conn, read) in open {
            self.flush(conn, read, time_ns);
            self.cursors.remove(&(conn, read));
        }
        self.tracker.close_process(pid, time_ns);
    }

    /// Bodies the parser would rather the kernel did not send: (pid, the connection as the
    /// kernel names it, read, socket, bytes).
    pub fn take_skip_requests(&mut self) -> Vec<(u32, u64, bool, bool, u64)> {
        self.tracker
            .take_skip_requests()
            .into_iter()
            .map(|r| {
                let socket = r.conn.id & SOCKET_ID != 0;
                (
                    r.conn.pid,
                    r.conn.id & !SOCKET_ID,
                    r.dir == Direction::Inbound,
                    socket,
                    r.bytes,
                )
            })
            .collect()
    }

    /// Skips what is left of the current call of `conn` in one direction.
    fn flush(&mut self, conn: ConnKey, read: bool, time_ns: u64) {
        if let Some(c) = self.cursors.get_mut(&(conn, read)) {
            if c.open() {
                let dir = if read {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                };
                self.tracker.gap(conn, dir, time_ns, c.call_len - c.next);
                c.next = c.call_len;
            }
        }
    }

    /// The calls finished since the last call (they are kept for [`LlmCapture::finish`]).
    pub fn take_finished(&mut self) -> &[LlmCall] {
        let known = self.finished.len();
        self.finished.extend(self.tracker.take_calls());
        &self.finished[known..]
    }

    /// Drops the calls that began before `t` (a flight recorder's history).
    pub fn evict_before(&mut self, t: u64) {
        self.finished.extend(self.tracker.take_calls());
        self.finished.retain(|c| c.start_ns >= t);
    }

    /// The calls, at the end of the recording; `lost` records the kernel dropped.
    pub fn finish(mut self, end_ns: u64, lost: u64) -> LlmTrace {
        let open: Vec<(ConnKey, bool)> = self.cursors.keys().copied().collect();
        for (conn, read) in open {
            self.flush(conn, read, end_ns);
        }
        self.tracker.lost_records(lost);
        let mut trace = self.tracker.finish(end_ns);
        if !self.finished.is_empty() {
            self.finished.append(&mut trace.calls);
            trace.calls = self.finished;
            trace
                .calls
                .sort_by_key(|c| (c.start_ns, c.pid, c.connection));
        }
        trace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece<'a>(
        read: bool,
        time_ns: u64,
        offset: u64,
        call_len: u64,
        bytes: &'a [u8],
    ) -> TlsView<'a> {
        TlsView {
            kind: TlsKind::Data,
            pid: 7,
            tid: 7,
            time_ns,
            conn: 0x55aa,
            call_len,
            offset,
            read,
            socket: false,
            bytes,
        }
    }

    const REQUEST: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\nContent-Length: 26\r\n\r\n{\"model\":\"gpt-4o\",\"n\":1}  ";

    #[test]
    fn pieces_past_the_cursor_are_gaps_and_an_exit_ends_the_call() {
        let mut c = LlmCapture::new(Options::default());
        // The request in two pieces of one call, its last two bytes never sent.
        let len = REQUEST.len() as u64;
        c.ingest(&piece(false, 1_000, 0, len, &REQUEST[..40]));
        c.ingest(&piece(
            false,
            1_000,
            40,
            len,
            &REQUEST[40..REQUEST.len() - 2],
        ));
        // The process exits before any answer: the rest of the call is a gap, and its call ends
        // then, not at the recording's end.
        c.close_process(7, 5_000);
        let trace = c.finish(9_999, 0);
        assert_eq!(trace.stats.bytes_not_captured, 2);
        assert_eq!(trace.calls.len(), 1, "{trace:#?}");
        let call = &trace.calls[0];
        assert_eq!((call.start_ns, call.end_ns, call.status), (1_000, 5_000, 0));
        assert!(call.incomplete);
    }

    #[test]
    fn a_skipped_call_is_counted_not_lost() {
        let mut c = LlmCapture::new(Options::default());
        let head = b"GET /files/big HTTP/1.1\r\nHost: h\r\n\r\n";
        c.ingest(&piece(false, 1_000, 0, head.len() as u64, head));
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
        c.ingest(&piece(true, 2_000, 0, response.len() as u64, response));
        c.ingest(&TlsView {
            kind: TlsKind::Skipped,
            ..piece(true, 3_000, 0, 100_000, &[])
        });
        let trace = c.finish(9_999, 0);
        assert_eq!(trace.stats.bytes_skipped, 100_000);
        assert_eq!(trace.stats.bytes_not_captured, 0);
        assert_eq!(trace.stats.other_requests, 1);
    }
}
