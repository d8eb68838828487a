//! `--memory`'s events into the recording's [`MemoryTrace`](crate::recording::memory::MemoryTrace):
//! allocations and page faults with their stacks interned, frees as they came.
use modelprobe_common::{kind, memory::source, Record, StackEvent};

use super::{processes::Processes, stacks::Stacks};
use crate::recording::memory::{MemEvent, MemEventKind, MemSource, MemoryTrace};

/// Page size the page-fault samples are weighted with.
const PAGE: u64 = 4096;

/// The memory events of a session so far.
#[derive(Debug, Default)]
pub struct Allocations {
    events: Vec<MemEvent>,
    /// Page-fault perf event period (one sample stands for this many faults).
    period: u64,
    /// `--memory=malloc`'s mean bytes between samples (0: off).
    pub malloc_sample_bytes: u64,
}

fn source_of(s: u32) -> MemSource {
    match s {
        source::MREMAP => MemSource::Mremap,
        source::BRK => MemSource::Brk,
        source::MALLOC => MemSource::Malloc,
        source::TORCH => MemSource::Torch,
        _ => MemSource::Mmap,
    }
}

impl Allocations {
    /// An allocation or a page fault, its stack interned in `stacks`.
    pub fn stack_event(&mut self, ev: &StackEvent, stacks: &mut Stacks, procs: &mut Processes) {
        let (kind, source, bytes) = match ev.kind {
            kind::MEM_ALLOC => (MemEventKind::Alloc, source_of(ev.mem_source), ev.weight),
            kind::PAGE_FAULT => {
                self.period = ev.weight;
                (
                    MemEventKind::PageFault,
                    MemSource::Fault,
                    ev.weight.saturating_mul(PAGE),
                )
            }
            _ => return,
        };
        procs.sampled(ev.pid, ev.tid, super::comm_str(&ev.comm));
        let stack = stacks.intern(ev, procs);
        self.events.push(MemEvent {
            time_ns: ev.time_ns,
            pid: ev.pid,
            tid: ev.tid,
            kind,
            source,
            addr: ev.mem_addr,
            bytes,
            stack: Some(stack),
        });
    }

    /// A free (`MEM_FREE` record).
    pub fn free(&mut self, rec: &Record) {
        self.events.push(MemEvent {
            time_ns: rec.time_ns,
            pid: rec.pid,
            tid: rec.tid,
            kind: MemEventKind::Free,
            source: source_of(rec.args[1] as u32),
            addr: rec.id,
            bytes: rec.args[0],
            stack: None,
        });
    }

    /// Drops the events before `t` (a flight recorder's window).
    pub fn evict_before(&mut self, t: u64) {
        self.events.retain(|e| e.time_ns >= t);
    }

    /// The trace, in time order.
    pub fn finish(mut self) -> MemoryTrace {
        self.events.sort_by_key(|e| e.time_ns);
        MemoryTrace {
            events: self.events,
            page_fault_period: self.period,
            malloc_sample_bytes: self.malloc_sample_bytes,
        }
    }
}
