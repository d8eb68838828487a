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
        let (names, at): (&[&'static str], u64) =
            if which == modelprobe_common::memory::heap_fn::FREE {
                (
                    &["mp_heap_enter"],
                    file_offset + null_check_len(path, file_offset),
                )
            } else {
                (&["mp_heap_enter", "mp_heap_exit"], file_offset)
            };
        self.attach_uprobes(names, path, at, which, pid)
    }
}

impl super::Sampler {
    /// Attaches `mp_usdt` to a static tracepoint at `file_offset` of `path` for process `pid`,
    /// its arguments read as `spec` says (sites with the same spec share a slot).
    pub fn attach_usdt(
        &mut self,
        path: &std::path::Path,
        file_offset: u64,
        spec: modelprobe_common::memory::usdt::UsdtSpec,
        pid: u32,
    ) -> Result<()> {
        use modelprobe_common::memory::usdt::MAX_USDT_SITES;
        let slot = match self.usdt_specs.iter().position(|s| *s == spec) {
            Some(i) => i as u32,
            None => {
                let i = self.usdt_specs.len() as u32;
                if i >= MAX_USDT_SITES {
                    return Err(Error::InvalidArgument(format!(
                        "more than {MAX_USDT_SITES} kinds of static tracepoint sites"
                    )));
                }
                let map = self
                    .bpf
                    .map_mut("USDT_SPECS")
                    .ok_or_else(|| super::missing("USDT_SPECS"))?;
                let mut specs =
                    aya::maps::Array::<_, modelprobe_common::memory::usdt::UsdtSpec>::try_from(map)
                        .map_err(|e| Error::bpf("opening USDT_SPECS", e))?;
                specs
                    .set(i, spec, 0)
                    .map_err(|e| Error::bpf("writing USDT_SPECS", e))?;
                self.usdt_specs.push(spec);
                i
            }
        };
        self.attach_uprobes(&["mp_usdt"], path, file_offset, slot as u64, pid)
    }
}

/// The length of a `free`'s leading null check (`test %rdi,%rdi; je ...`), 0 when it has none.
///
/// A uprobe on an instruction the kernel cannot emulate is single-stepped out of line: two
/// traps, which in a VM cost microseconds each (glibc's `free` begins with that `test`; its
/// `malloc` with a `push`, which is emulated). Probed after the check (`free(NULL)` does
/// nothing anyway), `free` costs what `malloc` does: `cargo xtask bench --only memory`.
fn null_check_len(path: &std::path::Path, offset: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut code = [0u8; 5];
    let Ok(file) = std::fs::File::open(path) else {
        return 0;
    };
    if file.read_exact_at(&mut code, offset).is_err() {
        return 0;
    }
    match code {
        // test %rdi,%rdi; je rel32
        [0x48, 0x85, 0xff, 0x0f, 0x84] => 9,
        // test %rdi,%rdi; je rel8
        [0x48, 0x85, 0xff, 0x74, _] => 5,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_leading_null_check_is_skipped_and_other_code_is_not() {
        let dir = std::env::temp_dir().join(format!("mp-nullcheck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("code");
        std::fs::write(
            &f,
            [
                0x48, 0x85, 0xff, 0x0f, 0x84, 1, 0, 0, 0, 0x55, // test; je rel32; push
                0x48, 0x85, 0xff, 0x74, 0x10, 0x55, // test; je rel8; push
                0x53, 0x48, 0x89, 0xfb, 0x90, // push; mov
            ],
        )
        .unwrap();
        assert_eq!(super::null_check_len(&f, 0), 9);
        assert_eq!(super::null_check_len(&f, 10), 5);
        assert_eq!(super::null_check_len(&f, 16), 0);
        assert_eq!(super::null_check_len(&f, 100), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
