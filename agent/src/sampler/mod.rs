//! CPU and off-CPU stack sampling with BPF.
//!
//! [`Sampler::start`] loads the embedded BPF object (see `ebpf/`), patches this kernel's
//! tracepoint offsets into it, attaches a `cpu-clock` perf event on every online CPU plus the
//! scheduler tracepoints, and from then on [`Sampler::drain`] hands out [`StackEvent`]s. The BPF
//! side filters by the `TARGETS` table, which the agent seeds with [`Sampler::add_target`] and
//! the kernel grows on every fork. Dropping the sampler detaches everything: nothing is pinned,
//! so even a killed agent leaves no probe behind.
//!
//! The BPF programs' own diagnostics (aya-log, under the `modelprobe_ebpf` log target) are off
//! unless trace output is asked for (`-vv`): only then is their level raised at load and their
//! ring buffer read.
use std::{os::fd::AsRawFd, path::Path, time::Duration};

use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
        PerfEvent, TracePoint, UProbe,
    },
    util::online_cpus,
    Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
use modelprobe_common::{
    kind, lost,
    offcpu::{OffCpuEvent, ThreadCpu},
    python::PyProc,
    Config, DataHeader, Record, StackEvent, DATA_HEADER, LAUNCH_STACK_COOKIE, STATUS_COOKIE,
};

use crate::{unwind::UnwindTables, Error, Result};

mod btf;
mod memory;
pub mod offcpu;
mod stop;
mod tls;
pub mod tracefs;

pub use memory::DEFAULT_PAGE_FAULT_PERIOD;
pub use offcpu::OffCpu;
pub use tls::{TlsKind, TlsView};

/// The BPF object built by `cargo xtask build-ebpf`, embedded at compile time.
static BPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/modelprobe.bpf.o"));

/// What to sample.
#[derive(Debug, Clone)]
pub struct SamplerOptions {
    /// `cpu-clock` samples per second per CPU.
    pub frequency_hz: u64,
    /// Also record blocked (off-CPU) intervals.
    pub off_cpu: bool,
    /// Blocked intervals shorter than this are not recorded.
    pub off_cpu_min: Duration,
    /// Blocked intervals at least this long are timeline events (rate-limited); the rest are
    /// only summed by (thread, stack) in the kernel.
    pub off_cpu_event_min: Duration,
    /// Wake the agent at once for each new process and exec (it has probes to attach).
    pub lifecycle_wakeup: bool,
    /// Capture stdout/stderr writes and file opens.
    pub capture_io: bool,
    /// Sample CPU stacks.
    pub cpu: bool,
    /// Size of the ring buffer for spans, events and logs, in bytes (a power of two, at least
    /// one page).
    pub records_ring_bytes: u32,
    /// Capacity of the kernel's unwind-row table (16 bytes a row); 0 turns CFI unwinding off
    /// (frame pointers only).
    pub unwind_rows: u32,
    /// Read the Python frames of CPython targets.
    pub python_frames: bool,
    /// Read plain HTTP on the targets' TCP sockets (syscall tracepoints on read and write).
    pub plain_http: bool,
    /// Stop the process at a failed API call (`--stop-on api_error`; within the stop budget
    /// set by [`Sampler::set_stop_budget`]).
    pub stop_on_api_error: bool,
    /// Ring buffers sized for low rates ([`SMALL_RINGS`]): the continuous agent's 19 Hz
    /// needs a fraction of the default rings, which are resident memory while mapped.
    pub small_rings: bool,
    /// Memory by stack (`--memory`): the `mmap`/`munmap`/`mremap`/`brk` tracepoints, and a
    /// page-fault sample every `page_fault_period` faults (0: no page faults).
    pub memory: bool,
    /// See [`SamplerOptions::memory`].
    pub page_fault_period: u64,
    /// `--memory=malloc`: mean bytes allocated between two sampled heap allocations.
    pub heap_sample_bytes: u32,
    /// `--memory=malloc` is on: the table of sampled blocks gets its room.
    pub heap_sampling: bool,
}

/// The ring sizes `small_rings` sets, in bytes (the defaults are in `ebpf/src/maps.rs`: 8 MiB
/// of CPU samples, 4 MiB each of span stacks and TLS, 1 MiB each of off-CPU and lifecycle).
pub const SMALL_RINGS: [(&str, u32); 5] = [
    ("EVENTS", 1 << 20),
    ("SPAN_STACKS", 512 << 10),
    ("TLS", 1 << 20),
    ("OFFCPU_EVENTS", 256 << 10),
    ("LIFECYCLE", 256 << 10),
];

/// Longest a target's first unwind tables are waited for before it is sampled.
const INITIAL_TABLES_WAIT: Duration = Duration::from_secs(30);

/// Default size of the record ring buffer.
pub const DEFAULT_RECORDS_RING: u32 = 4 << 20;

/// A record with a payload, borrowed from the ring buffer.
#[derive(Debug, Clone, Copy)]
pub struct DataView<'a> {
    /// `kind::LOG`, `kind::OPEN` or `kind::ARG_STRING`.
    pub kind: u32,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// CLOCK_MONOTONIC ns.
    pub time_ns: u64,
    /// LOG: bytes requested; OPEN: open flags.
    pub count: u64,
    /// LOG: file descriptor.
    pub fd: u32,
    /// ARG_STRING: the probe id.
    pub probe: u32,
    /// The payload.
    pub bytes: &'a [u8],
}

/// Per-cause drop counters summed over CPUs, indexed by `modelprobe_common::lost`.
pub type LostCounts = [u64; lost::COUNT as usize];

/// Loaded and attached BPF programs, and the maps the agent talks through.
pub struct Sampler {
    bpf: Ebpf,
    /// CPU samples (each kind of record has its ring: see `ebpf/src/maps.rs`).
    events: RingBuf<MapData>,
    /// Long blocks for the timeline.
    offcpu: RingBuf<MapData>,
    /// Launch and error stacks of probed calls.
    span_stacks: RingBuf<MapData>,
    /// Spans, logs, opens, string arguments.
    records: RingBuf<MapData>,
    /// Process, thread and signal records.
    lifecycle: RingBuf<MapData>,
    /// TLS plaintext.
    tls: RingBuf<MapData>,
    /// Allocations, frees and page faults (`--memory`).
    memory: RingBuf<MapData>,
    /// Static tracepoint specs written to `USDT_SPECS`, by slot.
    usdt_specs: Vec<modelprobe_common::memory::usdt::UsdtSpec>,
    /// Bytes of connections the kernel is asked not to send (`TLS_SKIP`).
    tls_skip: HashMap<MapData, modelprobe_common::TlsSkipKey, u64>,
    /// Off-CPU sums and stacks, per-thread CPU time.
    off: offcpu::OffCpuTables,
    targets: HashMap<MapData, u32, u32>,
    cpus: u32,
    /// Span programs loaded so far (each on its first use).
    span_programs_loaded: Vec<&'static str>,
    /// The BPF programs' log records, read only when [`bpf_log_level`] turned them on.
    bpf_logs: Option<EbpfLogger<&'static dyn log::Log>>,
    /// The CFI tables user stacks are walked with; `None` when turned off.
    unwind: Option<UnwindTables>,
    /// Processes whose Python frames are read: pid to interpreter layout (`PY_PROCS`).
    python: HashMap<MapData, u32, PyProc>,
    /// False when the kernel's BTF did not say where a thread's `%fs` base is.
    python_possible: bool,
}

/// Log target of the BPF programs' records (their crate's module paths start with it).
const BPF_LOG_TARGET: &str = "modelprobe_ebpf";

/// The level the BPF programs log at: everything when trace output is enabled for
/// [`BPF_LOG_TARGET`] (`-vv`, or `MODELPROBE_LOG=modelprobe_ebpf=trace`), else 0: off, and the
/// verifier then drops the logging code from every program.
fn bpf_log_level() -> u8 {
    if log::log_enabled!(target: BPF_LOG_TARGET, log::Level::Trace) {
        aya_log::Level::Trace as u8
    } else {
        0
    }
}

/// Receives what the BPF side reports.
pub trait EventSink {
    /// A CPU sample, or a probed call's launch or error stack.
    fn stack(&mut self, ev: &StackEvent);
    /// The stacks behind an off-CPU stack id, handed over once, before the first interval
    /// naming it; `None` when the kernel's store evicted them before they were read.
    fn off_cpu_stack(&mut self, stack_id: u64, stack: Option<&StackEvent>);
    /// A blocked interval, or the sum of one thread's blocks in one place over an interval.
    fn off_cpu(&mut self, interval: &OffCpu);
    /// A span, lifecycle or signal record.
    fn record(&mut self, rec: &Record);
    /// A log write or file open.
    fn data(&mut self, data: &DataView<'_>);
    /// A piece of a TLS call's plaintext, or a TLS connection's end.
    fn tls(&mut self, tls: &TlsView<'_>);
}

/// The highest sampling frequency the kernel allows (`perf_event_max_sample_rate`).
pub fn max_frequency() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100_000)
}

impl Sampler {
    /// Loads the programs and attaches them. Samples flow once a target is added.
    pub fn start(opts: &SamplerOptions, tracefs_root: &Path) -> Result<Sampler> {
        if BPF_OBJECT.is_empty() {
            return Err(Error::MissingBpfObject);
        }
        let f = |cat: &str, ev: &str, field: &str| tracefs::field(tracefs_root, cat, ev, field);
        let prev_state = f("sched", "sched_switch", "prev_state")?;
        // The OOM killer's tracepoint, where the kernel has it (its fields vary by version).
        let oom = |field: &str| {
            f("oom", "mark_victim", field)
                .map(|f| f.offset)
                .unwrap_or(u32::MAX)
        };
        let kernel = btf::kernel_offsets(opts.python_frames);
        let uret = kernel.uretprobes;
        let config = Config {
            switch_prev_state_off: prev_state.offset,
            switch_prev_state_size: prev_state.size,
            switch_next_pid_off: f("sched", "sched_switch", "next_pid")?.offset,
            exit_group_dead_off: f("sched", "sched_process_exit", "group_dead")
                .map(|f| f.offset)
                .unwrap_or(u32::MAX),
            offcpu_min_ns: opts.off_cpu_min.as_nanos().min(u32::MAX as u128) as u32,
            newtask_flags_off: f("task", "task_newtask", "clone_flags")?.offset,
            newtask_pid_off: f("task", "task_newtask", "pid")?.offset,
            rename_newcomm_off: f("task", "task_rename", "newcomm")?.offset,
            deliver_sig_off: f("signal", "signal_deliver", "sig")?.offset,
            deliver_code_off: f("signal", "signal_deliver", "code")?.offset,
            deliver_handler_off: f("signal", "signal_deliver", "sa_handler")?.offset,
            off_cpu: u32::from(opts.off_cpu),
            offcpu_event_min_ns: opts.off_cpu_event_min.as_nanos().min(u32::MAX as u128) as u32,
            lifecycle_wakeup: u32::from(opts.lifecycle_wakeup),
            task_fsbase_off: kernel.task_fsbase.unwrap_or(u32::MAX),
            stop_on_api_error: u32::from(opts.stop_on_api_error),
            oom_pid_off: oom("pid"),
            oom_total_vm_off: oom("total_vm"),
            oom_anon_rss_off: oom("anon_rss"),
            oom_file_rss_off: oom("file_rss"),
            oom_shmem_rss_off: oom("shmem_rss"),
            heap_sample_bytes: opts.heap_sample_bytes.max(1),
            task_utask_off: uret.map_or(u32::MAX, |u| u.task_utask),
            utask_instances_off: uret.map_or(u32::MAX, |u| u.utask_instances),
            ri_stack_off: uret.map_or(u32::MAX, |u| u.ri_stack),
            ri_orig_ret_off: uret.map_or(u32::MAX, |u| u.ri_orig_ret),
            ri_next_off: uret.map_or(u32::MAX, |u| u.ri_next),
        };
        let bpf_log_level = bpf_log_level();
        let mut loader = EbpfLoader::new();
        loader
            .override_global("CONFIG", &config, true)
            .override_global(aya_log::LEVEL, &bpf_log_level, true)
            .map_max_entries("RECORDS", opts.records_ring_bytes)
            .map_max_entries("UNWIND_ROWS", opts.unwind_rows.max(1));
        if opts.small_rings {
            for (name, bytes) in SMALL_RINGS {
                loader.map_max_entries(name, bytes);
            }
        }
        if !opts.memory {
            // One page: nothing is written to it.
            loader.map_max_entries("MEMORY", 4096);
        }
        if !opts.heap_sampling {
            loader.map_max_entries("HEAP_SAMPLED", 1);
        }
        let mut bpf = loader
            .load(BPF_OBJECT)
            .map_err(|e| Error::bpf("loading the BPF object", e))?;
        let bpf_logs = if bpf_log_level == 0 {
            None
        } else {
            EbpfLogger::init(&mut bpf)
                .inspect_err(|e| log::warn!("BPF-side logs unavailable: {e}"))
                .ok()
        };

        attach_tracepoint(&mut bpf, "mp_task_newtask", "task", "task_newtask")?;
        attach_tracepoint(&mut bpf, "mp_sched_exit", "sched", "sched_process_exit")?;
        attach_tracepoint(&mut bpf, "mp_sched_exec", "sched", "sched_process_exec")?;
        attach_tracepoint(&mut bpf, "mp_task_rename", "task", "task_rename")?;
        attach_tracepoint(&mut bpf, "mp_signal_deliver", "signal", "signal_deliver")?;
        if config.oom_pid_off != u32::MAX {
            if let Err(e) = attach_tracepoint(&mut bpf, "mp_oom_victim", "oom", "mark_victim") {
                log::debug!("OOM kills not recorded: {e}");
            }
        }
        // Always: besides blocked intervals (when asked for) it keeps each thread's CPU time.
        attach_tracepoint(&mut bpf, "mp_sched_switch", "sched", "sched_switch")?;
        if opts.capture_io {
            attach_tracepoint(&mut bpf, "mp_sys_write", "syscalls", "sys_enter_write")?;
            attach_tracepoint(&mut bpf, "mp_sys_writev", "syscalls", "sys_enter_writev")?;
            attach_tracepoint(&mut bpf, "mp_sys_openat", "syscalls", "sys_enter_openat")?;
        }
        if opts.plain_http {
            tls::attach_plain_http(&mut bpf)?;
        }

        let cpus = online_cpus().map_err(|(what, e)| Error::io(format!("reading {what}"), e))?;
        if opts.memory {
            memory::attach(&mut bpf, &cpus, opts.page_fault_period)?;
        }
        let prog: &mut PerfEvent = program(&mut bpf, "mp_cpu_sample")?;
        prog.load()
            .map_err(|e| Error::bpf("loading mp_cpu_sample", e))?;
        log_verified("mp_cpu_sample", prog.info().ok());
        for &cpu in cpus.iter().filter(|_| opts.cpu) {
            prog.attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(opts.frequency_hz),
                false,
            )
            .map_err(|e| {
                Error::UnsupportedKernel(format!(
                    "cannot open a cpu-clock perf event on CPU {cpu}: {e}"
                ))
            })?;
        }

        let events = RingBuf::try_from(take_map(&mut bpf, "EVENTS")?)
            .map_err(|e| Error::bpf("opening the EVENTS ring buffer", e))?;
        let offcpu = RingBuf::try_from(take_map(&mut bpf, "OFFCPU_EVENTS")?)
            .map_err(|e| Error::bpf("opening the OFFCPU_EVENTS ring buffer", e))?;
        let records = RingBuf::try_from(take_map(&mut bpf, "RECORDS")?)
            .map_err(|e| Error::bpf("opening the RECORDS ring buffer", e))?;
        let span_stacks = RingBuf::try_from(take_map(&mut bpf, "SPAN_STACKS")?)
            .map_err(|e| Error::bpf("opening the SPAN_STACKS ring buffer", e))?;
        let lifecycle = RingBuf::try_from(take_map(&mut bpf, "LIFECYCLE")?)
            .map_err(|e| Error::bpf("opening the LIFECYCLE ring buffer", e))?;
        let tls = RingBuf::try_from(take_map(&mut bpf, "TLS")?)
            .map_err(|e| Error::bpf("opening the TLS ring buffer", e))?;
        let memory = RingBuf::try_from(take_map(&mut bpf, "MEMORY")?)
            .map_err(|e| Error::bpf("opening the MEMORY ring buffer", e))?;
        let tls_skip = HashMap::try_from(take_map(&mut bpf, "TLS_SKIP")?)
            .map_err(|e| Error::bpf("opening the TLS_SKIP map", e))?;
        let off = offcpu::OffCpuTables::new(&mut bpf, crate::clock::monotonic_ns())?;
        let targets = HashMap::try_from(take_map(&mut bpf, "TARGETS")?)
            .map_err(|e| Error::bpf("opening the TARGETS map", e))?;
        let python = HashMap::try_from(take_map(&mut bpf, "PY_PROCS")?)
            .map_err(|e| Error::bpf("opening the PY_PROCS map", e))?;
        let unwind = if opts.unwind_rows == 0 {
            None
        } else {
            let data = |bpf: &mut Ebpf, name: &str| match take_map(bpf, name)? {
                aya::maps::Map::Array(d) | aya::maps::Map::HashMap(d) => Ok(d),
                _ => Err(missing(name)),
            };
            Some(UnwindTables::new(
                data(&mut bpf, "UNWIND_ROWS")?,
                opts.unwind_rows,
                data(&mut bpf, "UNWIND_MAPPINGS")?,
                data(&mut bpf, "UNWIND_PROCS")?,
            )?)
        };
        Ok(Sampler {
            unwind,
            python,
            python_possible: config.task_fsbase_off != u32::MAX,
            bpf,
            events,
            offcpu,
            span_stacks,
            records,
            lifecycle,
            tls,
            memory,
            usdt_specs: Vec::new(),
            tls_skip,
            off,
            targets,
            cpus: cpus.len() as u32,
            span_programs_loaded: Vec::new(),
            bpf_logs,
        })
    }

    /// Number of CPUs sampled.
    pub fn cpus(&self) -> u32 {
        self.cpus
    }

    /// Starts sampling process `pid` (and, from now on, every process it forks), and gives it
    /// unwind tables.
    pub fn add_target(&mut self, pid: u32) -> Result<()> {
        // Tables first, waited for: a sample taken before them would be walked by frame
        // pointers.
        self.refresh_unwind(pid);
        if let Some(u) = self.unwind.as_mut() {
            u.wait(INITIAL_TABLES_WAIT);
        }
        self.add_gated_target(pid)
    }

    /// Starts sampling a launched command held before its `execve`: its image now is the
    /// agent's own, so its unwind tables wait for the exec record (no table is built for an
    /// image about to be replaced).
    pub fn add_gated_target(&mut self, pid: u32) -> Result<()> {
        self.targets
            .insert(pid, 1, 0)
            .map_err(|e| Error::bpf(format!("adding pid {pid} to the target table"), e))
    }

    /// Builds unwind tables ahead of time for objects a launched command will map: the
    /// program, and the agent's own shared libraries (the same C library and loader).
    pub fn prebuild_unwind(&mut self, program: &Path) {
        let Some(u) = self.unwind.as_mut() else {
            return;
        };
        u.prebuild(program);
        let own = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for line in own.lines().filter_map(crate::procmaps::parse_line) {
            if line.exec
                && line.path.starts_with('/')
                && line.path.contains(".so")
                && seen.insert(line.path.to_string())
            {
                u.prebuild(Path::new(line.path));
            }
        }
    }

    /// Publishes `pid`'s unwind tables again: a new process, an exec, a library mapped since.
    /// A failure costs whole stacks, not the recording: it is logged.
    pub fn refresh_unwind(&mut self, pid: u32) {
        if let Some(u) = self.unwind.as_mut() {
            if let Err(e) = u.register(pid) {
                log::warn!("pid {pid}: unwind tables not published ({e}); frame pointers only");
            }
        }
    }

    /// `child` was forked by `parent`: it unwinds with its parent's tables (shared, no read of
    /// its maps). False when the parent has none (then [`Sampler::refresh_unwind`] is the way).
    pub fn inherit_unwind(&mut self, child: u32, parent: u32) -> bool {
        self.unwind
            .as_mut()
            .is_some_and(|u| u.inherit(child, parent))
    }

    /// Reads `pid`'s Python frames with the interpreter layout `find` returns, or stops
    /// reading them (`None`: not Python, or no longer). `find` is not called when Python frames
    /// are off.
    pub fn set_python(&mut self, pid: u32, find: impl FnOnce() -> Option<PyProc>) {
        if !self.python_possible {
            return;
        }
        match find() {
            Some(e) => {
                if let Err(e) = self.python.insert(pid, e, 0) {
                    log::warn!("pid {pid}: Python frames not published ({e})");
                }
            }
            // Not Python (any more): an entry of its parent's, or of its old image, goes; most
            // often there is none.
            None => {
                let _ = self.python.remove(&pid);
            }
        }
    }

    /// Publishes the unwind tables finished since the last call (built off the session's
    /// thread).
    pub fn poll_unwind(&mut self) {
        if let Some(u) = self.unwind.as_mut() {
            u.poll();
        }
    }

    /// Releases the unwind slots and Python entries of processes that have exited.
    pub fn forget_exited(&mut self) {
        if let Some(u) = self.unwind.as_mut() {
            u.forget_exited();
        }
        let gone: Vec<u32> = self
            .python
            .keys()
            .flatten()
            .filter(|&pid| !crate::target::is_alive(pid))
            .collect();
        for pid in gone {
            let _ = self.python.remove(&pid);
        }
    }

    /// Runs and time of each program, when the kernel counts them (`kernel.bpf_stats_enabled`);
    /// empty otherwise.
    pub fn program_costs(&self) -> Vec<crate::recording::BpfProgramCost> {
        let mut costs: Vec<_> = self
            .bpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                (info.run_count() > 0).then(|| crate::recording::BpfProgramCost {
                    name: name.to_string(),
                    runs: info.run_count(),
                    run_ns: info.run_time().as_nanos() as u64,
                })
            })
            .collect();
        costs.sort_by(|a, b| a.name.cmp(&b.name));
        costs
    }

    /// What the unwind tables held and cost; `None` when CFI unwinding is off.
    pub fn unwind_summary(&self) -> Option<crate::recording::UnwindSummary> {
        self.unwind.as_ref().map(UnwindTables::summary)
    }

    /// Waits up to `timeout` for events; true if some are ready.
    pub fn wait(&self, timeout: Duration) -> bool {
        // A negative fd is skipped by poll(2): the BPF logs when they are off.
        let logs = self.bpf_logs.as_ref().map_or(-1, |l| l.as_raw_fd());
        let mut pfds = [
            self.events.as_raw_fd(),
            self.offcpu.as_raw_fd(),
            self.span_stacks.as_raw_fd(),
            self.records.as_raw_fd(),
            self.lifecycle.as_raw_fd(),
            self.tls.as_raw_fd(),
            logs,
        ]
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: `pfds` is an array of valid pollfds (or skipped negative fds) for the duration
        // of the call, and the count passed is its length.
        let n = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                timeout.as_millis() as i32,
            )
        };
        n > 0
    }

    /// Hands every ready event to `sink`; returns how many there were.
    pub fn drain(&mut self, sink: &mut impl EventSink) -> usize {
        if let Some(logs) = self.bpf_logs.as_mut() {
            logs.flush();
        }
        let mut n = 0;
        // Lifecycle, then records: a process's and a span's records should be seen before the
        // samples and stacks inside them.
        while let Some(item) = self.lifecycle.next() {
            if let Some(rec) = read_pod::<Record>(&item) {
                sink.record(&rec);
                n += 1;
            }
        }
        while let Some(item) = self.records.next() {
            // Every RECORDS item starts with its kind (offset 0 of Record and DataHeader, checked
            // in modelprobe-common's layout assertions).
            let record_kind = read_pod::<u32>(&item);
            if matches!(record_kind, Some(kind::LOG | kind::OPEN | kind::ARG_STRING)) {
                if let Some(view) = data_view(&item) {
                    sink.data(&view);
                    n += 1;
                }
            } else if let Some(rec) = read_pod::<Record>(&item) {
                sink.record(&rec);
                n += 1;
            }
        }
        while let Some(item) = self.tls.next() {
            if let Some(view) = tls::tls_view(&item) {
                sink.tls(&view);
                n += 1;
            }
        }
        for ring in [&mut self.span_stacks, &mut self.events] {
            while let Some(item) = ring.next() {
                if let Some(ev) = read_pod::<StackEvent>(&item) {
                    sink.stack(&ev);
                    n += 1;
                }
            }
        }
        while let Some(item) = self.memory.next() {
            // Allocations and faults are `StackEvent`s, frees `Record`s: both start with kind.
            if read_pod::<u32>(&item) == Some(kind::MEM_FREE) {
                if let Some(rec) = read_pod::<Record>(&item) {
                    sink.record(&rec);
                    n += 1;
                }
            } else if let Some(ev) = read_pod::<StackEvent>(&item) {
                sink.stack(&ev);
                n += 1;
            }
        }
        while let Some(item) = self.offcpu.next() {
            if let Some(ev) = read_pod::<OffCpuEvent>(&item) {
                self.off.event(&ev, sink);
                n += 1;
            }
        }
        n
    }

    /// Hands over the off-CPU sums the kernel finished writing (see
    /// [`offcpu::OffCpuTables::drain_sums`]); `last` at the end of the recording.
    pub fn drain_off_cpu_sums(&mut self, sink: &mut impl EventSink, last: bool) -> usize {
        self.off
            .drain_sums(crate::clock::monotonic_ns(), last, sink)
    }

    /// Each live target thread's time on CPU so far: (tid, its entry).
    pub fn thread_cpu(&self) -> Vec<(u32, ThreadCpu)> {
        self.off.thread_cpu()
    }

    /// Where blocked intervals went: timeline events or sums.
    pub fn off_cpu_stats(&self) -> crate::recording::OffCpuStats {
        self.off.stats()
    }

    /// Loads span program `name` if it is not yet. The plain ones verify in milliseconds; the
    /// `_stack` ones (the stack walk) take the verifier a good part of a second, and are only
    /// loaded for probes that keep stacks (the CUDA packs' launch and status probes).
    fn load_span_program(&mut self, name: &'static str) -> Result<()> {
        if !self.span_programs_loaded.contains(&name) {
            let prog: &mut UProbe = program(&mut self.bpf, name)?;
            prog.load()
                .map_err(|e| Error::bpf(format!("loading {name}"), e))?;
            log_verified(name, prog.info().ok());
            self.span_programs_loaded.push(name);
        }
        Ok(())
    }

    /// Attaches the span programs to the function at `file_offset` of `path`, for process `pid`
    /// only; records carry `cookie`.
    pub fn attach_span(
        &mut self,
        path: &Path,
        file_offset: u64,
        cookie: u64,
        pid: u32,
    ) -> Result<()> {
        // The entry program keeps the calling stack only for launch probes, the return program
        // only for status probes: the others get the programs without the stack walk.
        let enter = if cookie & LAUNCH_STACK_COOKIE != 0 {
            "mp_span_enter_stack"
        } else {
            "mp_span_enter"
        };
        let exit = if cookie & STATUS_COOKIE != 0 {
            "mp_span_exit_stack"
        } else {
            "mp_span_exit"
        };
        self.attach_uprobes(&[enter, exit], path, file_offset, cookie, pid)
    }

    /// Loads (once) and attaches uprobe programs `names` at `file_offset` of `path`, for
    /// process `pid` only, with attach cookie `cookie`.
    fn attach_uprobes(
        &mut self,
        names: &[&'static str],
        path: &Path,
        file_offset: u64,
        cookie: u64,
        pid: u32,
    ) -> Result<()> {
        let scope = UProbeScope::OneProcess(
            std::num::NonZeroU32::new(pid).ok_or_else(|| Error::InvalidArgument("pid 0".into()))?,
        );
        for &name in names {
            self.load_span_program(name)?;
            let prog: &mut UProbe = program(&mut self.bpf, name)?;
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(file_offset),
                cookie: Some(cookie),
            };
            prog.attach(point, path, scope).map_err(|e| {
                Error::bpf(
                    format!(
                        "attaching {name} to {}+{file_offset:#x} in pid {pid}",
                        path.display()
                    ),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// Drop counters, summed over CPUs.
    pub fn lost(&self) -> Result<LostCounts> {
        let map = self.bpf.map("LOST").ok_or_else(|| missing("LOST"))?;
        let array = PerCpuArray::<_, u64>::try_from(map)
            .map_err(|e| Error::bpf("opening the LOST counters", e))?;
        let mut out = [0u64; lost::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let values = array
                .get(&(i as u32), 0)
                .map_err(|e| Error::bpf("reading the LOST counters", e))?;
            *slot = values.iter().sum();
        }
        Ok(out)
    }
}

pub(super) fn missing(name: &str) -> Error {
    Error::bpf(
        format!("finding {name} in the BPF object"),
        std::io::Error::new(std::io::ErrorKind::NotFound, "not in this object"),
    )
}

fn take_map(bpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    bpf.take_map(name).ok_or_else(|| missing(name))
}

fn program<'a, T>(bpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = bpf.program_mut(name).ok_or_else(|| missing(name))?;
    prog.try_into()
        .map_err(|e| Error::bpf(format!("opening {name}"), e))
}

fn attach_tracepoint(bpf: &mut Ebpf, prog_name: &str, category: &str, event: &str) -> Result<()> {
    let prog: &mut TracePoint = program(bpf, prog_name)?;
    prog.load()
        .map_err(|e| Error::bpf(format!("loading {prog_name}"), e))?;
    log_verified(prog_name, prog.info().ok());
    prog.attach(category, event)
        .map_err(|e| Error::bpf(format!("attaching {prog_name} to {category}/{event}"), e))?;
    Ok(())
}

/// Logs (at debug) how many instructions the verifier walked for a program: the unwinder's
/// loops make this the number to watch against the kernel's limit of a million.
fn log_verified(name: &str, info: Option<aya::programs::ProgramInfo>) {
    if let Some(n) = info.and_then(|i| i.verified_instruction_count()) {
        log::debug!("{name}: verified in {n} instructions");
    }
}

/// Reads a variable-length data record: a [`DataHeader`], then `len` payload bytes.
fn data_view(item: &[u8]) -> Option<DataView<'_>> {
    let header = read_pod::<DataHeader>(item)?;
    let payload = &item[DATA_HEADER..];
    let len = (header.len as usize).min(payload.len());
    Some(DataView {
        kind: header.kind,
        pid: header.pid,
        tid: header.tid,
        time_ns: header.time_ns,
        count: header.count,
        fd: header.fd,
        probe: header.probe,
        bytes: &payload[..len],
    })
}

/// Copies a `T` out of a ring-buffer item, or `None` (logged) if the item is too short.
fn read_pod<T: aya::Pod>(item: &[u8]) -> Option<T> {
    if item.len() < size_of::<T>() {
        log::warn!("short ring-buffer item of {} bytes ignored", item.len());
        return None;
    }
    // SAFETY: the item holds at least size_of::<T>() bytes written by the BPF side as a T
    // (layouts checked in modelprobe-common); T is Pod, so any bit pattern is valid, and
    // read_unaligned copes with the ring buffer's 8-byte alignment.
    Some(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data record as the BPF side lays it out, field by field.
    fn item(kind: u32, len: u32, probe: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [kind, 1, 2, 3] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        for v in [4u64, 5] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        for v in [6, len, probe, 0] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn data_view_reads_the_header_then_len_bytes() {
        let raw = item(kind::ARG_STRING, 3, 42, b"abcdef");
        let v = data_view(&raw).expect("a whole header");
        assert_eq!(
            (v.kind, v.pid, v.tid, v.time_ns, v.count, v.fd, v.probe),
            (kind::ARG_STRING, 2, 3, 4, 5, 6, 42)
        );
        assert_eq!(v.bytes, b"abc");
    }

    #[test]
    fn data_view_clamps_len_and_rejects_short_items() {
        let raw = item(kind::LOG, 100, 0, b"xy");
        assert_eq!(data_view(&raw).expect("a whole header").bytes, b"xy");
        assert!(data_view(&raw[..DATA_HEADER - 1]).is_none());
    }
}
