//! Noticing that another tool took CUPTI's activity buffers over during a session.
//!
//! CUPTI's buffer callbacks are process-wide: a tool that registers its own while modelprobe is
//! subscribed (Kineto at each `torch.profiler` trace start does) silently gets every activity
//! record from then on. The API callbacks are per subscriber and keep coming, so the sign is:
//! calls that always make a record (launches, copies, memsets) keep being made, and CUPTI stops
//! asking this library for buffers and handing them back. [`Watch`] tells that apart from slow
//! GPU work (records not complete yet) by forcing a flush once the buffers have been quiet for
//! [`QUIET`]: CUPTI then hands back every buffer with records in it, complete or not, to
//! whoever holds the callbacks. Still nothing after [`AFTER_FORCE`]: taken over.
use std::time::{Duration, Instant};

/// Buffers quiet this long while record-making calls go on: time to force a flush.
pub const QUIET: Duration = Duration::from_secs(2);
/// A forced flush that brings no buffer back within this long: taken over.
pub const AFTER_FORCE: Duration = Duration::from_secs(1);
/// Record-making calls since the last buffer before the quiet counts (a lone call may wait in
/// a buffer CUPTI has not filled).
pub const MIN_CALLS: u64 = 8;

/// What the session's loop should do after a [`Watch::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Fine,
    /// Force a flush (`CUPTI_ACTIVITY_FLAG_FLUSH_FORCED`) to see who gets the buffers.
    ForceFlush,
    /// Another tool holds the buffer callbacks (said once per session).
    TakenOver,
}

/// The state of one session's watch.
#[derive(Debug, Default)]
pub struct Watch {
    buffers: u64,
    calls: u64,
    quiet_since: Option<Instant>,
    forced_at: Option<Instant>,
    reported: bool,
}

impl Watch {
    /// Looks at the counters now: `buffers` counts CUPTI's buffer requests and completions,
    /// `calls` the record-making API calls seen, both since the process started.
    pub fn check(&mut self, buffers: u64, calls: u64, now: Instant) -> Verdict {
        if buffers != self.buffers {
            *self = Watch {
                buffers,
                calls,
                reported: self.reported,
                ..Watch::default()
            };
            return Verdict::Fine;
        }
        if self.reported || calls.saturating_sub(self.calls) < MIN_CALLS {
            return Verdict::Fine;
        }
        let quiet_since = *self.quiet_since.get_or_insert(now);
        match self.forced_at {
            None if now.duration_since(quiet_since) >= QUIET => {
                self.forced_at = Some(now);
                Verdict::ForceFlush
            }
            Some(at) if now.duration_since(at) >= AFTER_FORCE => {
                self.reported = true;
                Verdict::TakenOver
            }
            _ => Verdict::Fine,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn buffers_that_keep_coming_are_fine() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        for i in 0..100u64 {
            // A buffer every 500 ms, calls all the time.
            let v = w.check(i / 10, i * 10, at(t0, i * 50));
            assert_eq!(v, Verdict::Fine, "at {i}");
        }
    }

    #[test]
    fn quiet_buffers_with_calls_force_a_flush_then_say_taken_over_once() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        assert_eq!(w.check(4, 100, t0), Verdict::Fine);
        // Calls go on; the buffer count stays at 4.
        assert_eq!(w.check(4, 120, at(t0, 100)), Verdict::Fine);
        assert_eq!(w.check(4, 140, at(t0, 1000)), Verdict::Fine);
        assert_eq!(w.check(4, 160, at(t0, 2150)), Verdict::ForceFlush);
        assert_eq!(w.check(4, 170, at(t0, 2500)), Verdict::Fine);
        assert_eq!(w.check(4, 180, at(t0, 3200)), Verdict::TakenOver);
        assert_eq!(w.check(4, 999, at(t0, 9000)), Verdict::Fine, "said once");
        // Even if buffers come back later, it is not said again in this session.
        assert_eq!(w.check(5, 999, at(t0, 9100)), Verdict::Fine);
        assert_eq!(w.check(5, 2000, at(t0, 20000)), Verdict::Fine);
    }

    #[test]
    fn a_forced_flush_that_brings_a_buffer_back_clears_it() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        w.check(1, 0, t0);
        assert_eq!(w.check(1, 50, at(t0, 100)), Verdict::Fine);
        assert_eq!(w.check(1, 60, at(t0, 2200)), Verdict::ForceFlush);
        // Long kernels: the forced flush hands the incomplete buffer back to us.
        assert_eq!(w.check(2, 61, at(t0, 2300)), Verdict::Fine);
        assert_eq!(w.check(2, 62, at(t0, 4000)), Verdict::Fine);
    }

    #[test]
    fn an_idle_process_is_not_taken_over() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        w.check(3, 10, t0);
        // A few calls, then nothing for a minute: no records owed.
        for s in 1..60 {
            assert_eq!(w.check(3, 15, at(t0, s * 1000)), Verdict::Fine);
        }
    }
}
