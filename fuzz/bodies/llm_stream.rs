//! LLM traffic (`modelprobe::llm::Tracker`): any bytes, in any split, on a few connections and
//! in both directions, with gaps and closes between them, are parsed without a panic, and what
//! comes out is well formed.
//!
//! The input is a list of frames: a control byte (bit 0: inbound; bit 1: a gap of `len × 97`
//! bytes instead of data; bit 2: the connection closes; bits 3-4: which of four connections),
//! a length byte, then `len` bytes of data.
use modelprobe::llm::{ConnKey, Direction, Options, Tracker};

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut tracker = Tracker::new(Options {
        capture_io: data.first().is_some_and(|b| b & 0x80 != 0),
        ..Options::default()
    });
    let mut t = 1_000u64;
    let mut rest = data;
    while let [ctrl, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        t += 1_000;
        let conn = ConnKey {
            pid: 7,
            id: u64::from((ctrl >> 3) & 3),
        };
        let dir = if ctrl & 1 != 0 {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        if ctrl & 4 != 0 {
            tracker.close(conn, t);
        } else if ctrl & 2 != 0 {
            tracker.gap(conn, dir, t, u64::from(*len) * 97);
        } else {
            tracker.data(conn, 8, dir, t, bytes);
        }
        for skip in tracker.take_skip_requests() {
            assert!(skip.bytes > 0, "an empty skip asked: {skip:?}");
        }
    }
    let trace = tracker.finish(t + 1);
    for c in &trace.calls {
        assert!(
            c.start_ns <= c.end_ns,
            "a call ends before it starts: {c:?}"
        );
        if let Some(cost) = c.cost_usd {
            assert!(cost.is_finite() && cost >= 0.0, "cost {cost}");
        }
    }
    serde_json::to_string(&trace).expect("a trace serializes");
}
