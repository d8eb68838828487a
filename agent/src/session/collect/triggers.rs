//! What a flight recorder's triggers watch for ([`crate::session::flight`]), seen as records
//! arrive: a failed API call (its error stack), a probed call slower than its threshold, and,
//! looked for at each check, a fatal signal and a log line matching a pattern. Also the
//! history's bound: everything older than the window is dropped.
use std::collections::HashMap;

use regex::Regex;

use super::Collector;
use crate::recording::EventKind;

/// What fired, for the session to name and act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    /// A status-returning call of probe `probe` failed in thread `tid`.
    ApiError {
        /// The probe id.
        probe: u32,
        /// The thread.
        tid: u32,
    },
    /// A call of probe `probe` took `ns`, in process `pid`.
    SlowSpan {
        /// The probe id.
        probe: u32,
        /// How long it took.
        ns: u64,
        /// The process.
        pid: u32,
    },
    /// A fatal signal reached a process (the event's message).
    FatalSignal(String),
    /// A log line of process `pid` matched one of the patterns.
    Log {
        /// The line.
        line: String,
        /// The process.
        pid: u32,
    },
}

/// The triggers' state in the collector.
#[derive(Debug, Default)]
pub struct Watch {
    /// Fire on failed API calls.
    pub api_error: bool,
    /// Fire on fatal signals.
    pub fatal_signal: bool,
    /// Fire on log lines matching one of these.
    pub logs: Vec<Regex>,
    /// Fire on calls of these probes at least this long (ns).
    pub slow: HashMap<u32, u64>,
    fired: Vec<Fired>,
    log_cursor: usize,
    event_cursor: usize,
}

impl Collector {
    /// Watches for what `watch` says (a flight recorder's triggers).
    pub fn watch_triggers(&mut self, watch: Watch) {
        self.triggers = Some(watch);
    }

    /// Sets the slow-call thresholds by probe id (the probe table grows as packs are found).
    pub fn set_slow_spans(&mut self, slow: HashMap<u32, u64>) {
        if let Some(w) = self.triggers.as_mut() {
            w.slow = slow;
        }
    }

    /// A failed call's error stack arrived.
    pub(super) fn trigger_api_error(&mut self, probe: u32, tid: u32) {
        if let Some(w) = self.triggers.as_mut().filter(|w| w.api_error) {
            w.fired.push(Fired::ApiError { probe, tid });
        }
    }

    /// A probed call closed.
    pub(super) fn trigger_span(&mut self, probe: u32, ns: u64, pid: u32) {
        if let Some(w) = self.triggers.as_mut() {
            if w.slow.get(&probe).is_some_and(|&min| ns >= min) {
                w.fired.push(Fired::SlowSpan { probe, ns, pid });
            }
        }
    }

    /// What fired since the last call.
    pub fn take_fired(&mut self) -> Vec<Fired> {
        let Some(w) = self.triggers.as_mut() else {
            return Vec::new();
        };
        if !w.logs.is_empty() {
            for l in self.logs.lines_since(w.log_cursor) {
                if w.logs.iter().any(|r| r.is_match(&l.message)) {
                    w.fired.push(Fired::Log {
                        line: l.message.clone(),
                        pid: l.pid,
                    });
                }
            }
        }
        w.log_cursor = self.logs.line_count();
        if w.fatal_signal {
            for e in self.tasks.events_since(w.event_cursor) {
                if e.kind == EventKind::FatalSignal {
                    w.fired.push(Fired::FatalSignal(e.message.clone()));
                }
            }
        }
        w.event_cursor = self.tasks.count();
        std::mem::take(&mut w.fired)
    }

    /// A collector to go on with after this one's history is written out: the same live
    /// outputs, probe table, LLM options and triggers, and the processes still alive watched
    /// again (mappings, names, interpreters).
    pub fn successor(&mut self) -> Collector {
        let mut next = Collector::new();
        next.live = self.live.clone();
        next.probes = self.probes.clone();
        if let Some(llm) = &self.llm {
            next.llm = Some(super::llm::LlmCapture::new(llm.options().clone()));
        }
        if self.memory.is_some() {
            next.record_memory();
        }
        next.triggers = self.triggers.take().map(|w| Watch {
            fired: Vec::new(),
            log_cursor: 0,
            event_cursor: 0,
            ..w
        });
        for pid in self.live_pids() {
            next.watch(pid);
            let _ = next.python_entry(pid);
        }
        next
    }

    /// Drops everything recorded before `t` (a flight recorder's window).
    pub fn evict_before(&mut self, t: u64) {
        let events = self.tasks.count();
        let lines = self.logs.line_count();
        self.stacks.evict_before(t);
        self.spans.evict_before(t);
        self.tasks.evict_before(t);
        self.logs.evict_before(t);
        self.models.evict_before(t);
        if let Some(llm) = self.llm.as_mut() {
            llm.evict_before(t);
        }
        if let Some(m) = self.memory.as_mut() {
            m.evict_before(t);
        }
        self.allocations.evict_before(t);
        // Cursors into the event and line lists move with them.
        let events_gone = events - self.tasks.count();
        let lines_gone = lines - self.logs.line_count();
        self.events_published = self.events_published.saturating_sub(events_gone);
        if let Some(w) = self.triggers.as_mut() {
            w.event_cursor = w.event_cursor.saturating_sub(events_gone);
            w.log_cursor = w.log_cursor.saturating_sub(lines_gone);
        }
    }
}
