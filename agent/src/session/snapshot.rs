//! The collector's half of a stack snapshot (`modelprobe stacks`, [`crate::snapshot`]): the
//! process's mappings and interpreter are read as for a recording, the stacks taken from its
//! stopped threads go in as CPU samples, and the same symbolization (native frames, Python
//! frames merged in place of the eval loop's) makes them a [`Recording`] of one instant.
use modelprobe_common::{python::PyProc, StackEvent};

use super::Collector;
use crate::{recording::Meta, recording::Recording, sampler::EventSink};

/// A snapshot being put together.
pub struct SnapshotCollector {
    collector: Collector,
    python: Option<PyProc>,
}

impl SnapshotCollector {
    /// Reads what is known of `pid` now: its mappings, names, and its interpreter if it runs
    /// a CPython modelprobe reads.
    pub fn new(pid: u32) -> Self {
        let mut collector = Collector::new();
        collector.watch(pid);
        let python = collector.python_entry(pid);
        SnapshotCollector { collector, python }
    }

    /// The interpreter's layout, to read each thread's Python frames while it is stopped.
    pub fn python(&self) -> Option<PyProc> {
        self.python
    }

    /// One thread's stack.
    pub fn add(&mut self, ev: &StackEvent) {
        self.collector.stack(ev);
    }

    /// The snapshot as a recording: one CPU sample per thread.
    pub fn finish(self, meta: Meta) -> Recording {
        self.collector.finish(meta)
    }
}
