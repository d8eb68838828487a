//! `--memory`'s kernel side: the `mmap`/`munmap`/`mremap`/`brk` tracepoints and the sampled
//! `page-faults` perf event (see `ebpf/src/memory.rs`), attached only when asked for.
use aya::{
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        PerfEvent, TracePoint,
    },
    Ebpf,
};

use super::{log_verified, program};
use crate::{Error, Result};

/// Page faults one sample stands for by default: a sample every 64 faults (256 KiB of 4 KiB
/// pages first touched) keeps the cost per fault a counter increment.
pub const DEFAULT_PAGE_FAULT_PERIOD: u64 = 64;

/// The entry tracepoints and their programs; every exit goes to `mp_mem_exit`.
const ENTRIES: [(&str, &str); 4] = [
    ("mp_mem_mmap_enter", "sys_enter_mmap"),
    ("mp_mem_mremap_enter", "sys_enter_mremap"),
    ("mp_mem_brk_enter", "sys_enter_brk"),
    ("mp_mem_munmap", "sys_enter_munmap"),
];

/// The exit tracepoints `mp_mem_exit` is attached to.
const EXITS: [&str; 3] = ["sys_exit_mmap", "sys_exit_mremap", "sys_exit_brk"];

/// Attaches the memory programs: the syscall tracepoints, and a page-fault perf event with
/// `period` on each of `cpus` (0: none).
pub(super) fn attach(bpf: &mut Ebpf, cpus: &[u32], period: u64) -> Result<()> {
    for (name, event) in ENTRIES {
        super::attach_tracepoint(bpf, name, "syscalls", event)?;
    }
    let exit: &mut TracePoint = program(bpf, "mp_mem_exit")?;
    exit.load()
        .map_err(|e| Error::bpf("loading mp_mem_exit", e))?;
    log_verified("mp_mem_exit", exit.info().ok());
    for event in EXITS {
        exit.attach("syscalls", event)
            .map_err(|e| Error::bpf(format!("attaching mp_mem_exit to syscalls/{event}"), e))?;
    }
    if period == 0 {
        return Ok(());
    }
    let faults: &mut PerfEvent = program(bpf, "mp_page_fault")?;
    faults
        .load()
        .map_err(|e| Error::bpf("loading mp_page_fault", e))?;
    log_verified("mp_page_fault", faults.info().ok());
    for &cpu in cpus {
        faults
            .attach(
                PerfEventConfig::Software(SoftwareEvent::PageFaults),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Period(period),
                false,
            )
            .map_err(|e| {
                Error::UnsupportedKernel(format!(
                    "cannot open a page-faults perf event on CPU {cpu}: {e}"
                ))
            })?;
    }
    Ok(())
}

impl super::Sampler {
    /// Attaches the heap sampler to one allocator function (`which`: a `heap_fn` constant)
    /// at `file_offset` of `path`, for process `pid` (`--memory=malloc`).
    pub fn attach_heap(
        &mut self,
        path: &std::path::Path,
        file_offset: u64,
        which: u64,
        pid: u32,
    ) -> Result<()> {
        let names: &[&'static str] = if which == modelprobe_common::memory::heap_fn::FREE {
            &["mp_heap_enter"]
        } else {
            &["mp_heap_enter", "mp_heap_exit"]
        };
        self.attach_uprobes(names, path, file_offset, which, pid)
    }
}
