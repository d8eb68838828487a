//! The recording model: what one profiling session captured, symbolized and self-contained.
//!
//! A [`Recording`] is what every output is derived from, and what later commands read back
//! ([`Recording::read`]). Frames and stacks are interned: a sample names a stack, a stack lists
//! frame indices outermost first. All times are CLOCK_MONOTONIC nanoseconds, the clock the
//! kernel side stamps events with. The on-disk format is described in `docs/recording-format.md`.
use serde::{Deserialize, Serialize};

mod demangle;
mod error;
mod gpu;
pub mod intern;
mod io;
pub mod launch;
pub mod llm;
pub mod logs;
pub mod memory;

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;

pub use demangle::demangle;
pub use error::{Error, Result};
pub use gpu::{GpuDetail, GpuLaunch, GpuOp, GpuSource, GpuTrace};
pub use io::{FILE_NAME, FORMAT_NAME, FORMAT_VERSION};

/// One recording.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recording {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written by this build.
    pub version: u32,
    /// How and when it was recorded, and what was lost.
    pub meta: Meta,
    /// Processes seen.
    pub processes: Vec<Process>,
    /// Threads seen, with their last name.
    pub threads: Vec<Thread>,
    /// Interned frames.
    pub frames: Vec<Frame>,
    /// Interned stacks: indices into `frames`, outermost (root) first.
    pub stacks: Vec<Vec<u32>>,
    /// Samples in time order.
    pub samples: Vec<Sample>,
    /// Span probes that were attached; spans refer to them by index.
    #[serde(default)]
    pub probes: Vec<ProbeInfo>,
    /// Spans from probes, in start order.
    #[serde(default)]
    pub spans: Vec<Span>,
    /// Process, thread and signal events, in time order.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Lines the target wrote to stdout and stderr, in time order.
    #[serde(default)]
    pub logs: Vec<crate::logs::LogLine>,
    /// Quantities sampled over time: NVML device metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<Counter>,
    /// GPU activity from CUPTI, joined to the CPU calls that launched it.
    #[serde(default, skip_serializing_if = "GpuTrace::is_empty")]
    pub gpu: GpuTrace,
    /// LLM API calls read from the target's TLS and HTTP traffic.
    #[serde(default, skip_serializing_if = "llm::LlmTrace::is_empty")]
    pub llm: llm::LlmTrace,
    /// Allocations, frees and page faults by stack (`--memory`).
    #[serde(default, skip_serializing_if = "memory::MemoryTrace::is_empty")]
    pub memory: memory::MemoryTrace,
}

/// A quantity sampled over time, such as a GPU's utilization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    /// What it measures (`GPU 0 utilization`).
    pub name: String,
    /// Unit of the values (`%`, `MiB`, `W`, `MHz`, `C`, `MB/s`).
    pub unit: String,
    /// The GPU it belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<u32>,
    /// The process it belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `[CLOCK_MONOTONIC ns, value]` in time order.
    pub points: Vec<(u64, f64)>,
}

/// One attached span probe: a function in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeInfo {
    /// The `--probe` spec it came from.
    pub spec: String,
    /// The file, as the target sees it.
    pub path: String,
    /// The function.
    pub function: String,
    /// How many integer arguments spans keep.
    pub args: u8,
    /// The built-in pack it belongs to (`cuda-runtime`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
}

/// The built-in packs that trace GPU work (CUDA runtime and driver, cuBLAS, NCCL).
pub const GPU_PACKS: &[&str] = &["cuda-runtime", "cuda-driver", "cublas", "cublaslt", "nccl"];

impl ProbeInfo {
    /// True for a function of one of the [`GPU_PACKS`].
    pub fn is_gpu_pack(&self) -> bool {
        self.pack
            .as_deref()
            .is_some_and(|pack| GPU_PACKS.contains(&pack))
    }
}

/// One call of a probed function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Index into [`Recording::probes`].
    pub probe: u32,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// CLOCK_MONOTONIC ns at entry.
    pub start_ns: u64,
    /// CLOCK_MONOTONIC ns at return (the recording's end if it never returned).
    pub end_ns: u64,
    /// Probed calls already open on this thread when it was entered.
    pub depth: u32,
    /// The first integer arguments, as many as the probe keeps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<u64>,
    /// Return value (as a 64-bit integer), when it returned while recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<u64>,
    /// What a pack decoded from the arguments (kernel name, grid, bytes, direction...).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attrs: std::collections::BTreeMap<String, serde_json::Value>,
    /// The calling stack at entry (index into [`Recording::stacks`]), for probes that keep it
    /// (the CUDA launch and copy calls, whose GPU work is charged to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<u32>,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A target forked a new process (`value`: its pid).
    ProcessStart,
    /// A process's last thread exited.
    ProcessExit,
    /// A thread was created (`value`: its tid).
    ThreadStart,
    /// A thread exited.
    ThreadExit,
    /// A thread renamed itself (`message`: the new name).
    ThreadRename,
    /// A process called `execve` (`message`: its new name).
    Exec,
    /// A signal was delivered and handled or ignored (`value`: the signal number).
    Signal,
    /// A signal was delivered whose default action ends the process (`value`: the number).
    FatalSignal,
    /// A model-weight file was opened (`message`: its path, `value`: its size in bytes).
    ModelLoad,
    /// A call of a pack's API (CUDA) returned an error (`value`: the error code).
    ApiError,
    /// modelprobe stopped the process at a breakpoint or a failed call (`--break`,
    /// `--stop-on`; `message`: why and where, `tid`: the thread that hit it, `stack`: its
    /// stack at the stop).
    Stopped,
    /// The kernel's OOM killer chose this process (`pid`: the victim; `message`: its memory
    /// then; `value`: its anonymous resident KiB).
    OomKill,
    /// An allocation failed for lack of memory: a CUDA allocation returned out-of-memory, or
    /// the target printed PyTorch's `OutOfMemoryError` (`value`: the bytes asked for, where
    /// known; `message`: what was free and the top live allocations by stack then; `stack`:
    /// where it was asked for).
    Oom,
    /// A Python exception nobody caught ended the process or a thread (`message`: type,
    /// message, thread, where it was raised; `stack`: its traceback's frames).
    PythonException,
}

impl EventKind {
    /// The name the recording format writes (`process_start`, `api_error`...).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::ProcessStart => "process_start",
            EventKind::ProcessExit => "process_exit",
            EventKind::ThreadStart => "thread_start",
            EventKind::ThreadExit => "thread_exit",
            EventKind::ThreadRename => "thread_rename",
            EventKind::Exec => "exec",
            EventKind::Signal => "signal",
            EventKind::FatalSignal => "fatal_signal",
            EventKind::ModelLoad => "model_load",
            EventKind::ApiError => "api_error",
            EventKind::Stopped => "stopped",
            EventKind::OomKill => "oom_kill",
            EventKind::Oom => "oom",
            EventKind::PythonException => "python_exception",
        }
    }
}

/// A process, thread or signal event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// CLOCK_MONOTONIC ns.
    #[serde(rename = "t")]
    pub time_ns: u64,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// What happened.
    pub kind: EventKind,
    /// Human-readable description.
    pub message: String,
    /// A number the kind defines (pid, tid, signal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<i64>,
    /// Where it happened, when known (index into [`Recording::stacks`]): for `api_error`, the
    /// stack of the failed call's caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<u32>,
}

/// Session metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    /// Version of the modelprobe that recorded it.
    pub modelprobe_version: String,
    /// `attach` or `run`.
    pub mode: String,
    /// The target's command line.
    pub command: String,
    /// The pid attached to or launched.
    pub target_pid: u32,
    /// CLOCK_MONOTONIC ns when recording started.
    pub start_ns: u64,
    /// CLOCK_MONOTONIC ns when recording stopped.
    pub end_ns: u64,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub start_unix_ms: u64,
    /// CPU sampling frequency in Hz.
    pub frequency_hz: u64,
    /// Whether off-CPU (blocked) time was recorded.
    pub off_cpu: bool,
    /// `uname -r`.
    pub kernel: String,
    /// Host name.
    pub hostname: String,
    /// Online CPUs sampled.
    pub cpus: u32,
    /// Why recording stopped: `duration`, `signal` or `target-exited`.
    pub end_reason: String,
    /// For `run`: the command's exit status (128 + signal if killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// Everything dropped.
    pub lost: Lost,
    /// Fraction of spans kept, when less than all were (`sampling.rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_sample_rate: Option<f64>,
    /// What the agent itself cost, when it measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentUsage>,
    /// The CFI unwind tables the user stacks were walked with, when they were used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwind: Option<UnwindSummary>,
    /// Where blocked intervals went: timeline events or in-kernel sums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_cpu_stats: Option<OffCpuStats>,
    /// The Python interpreters found in the targets and how their frames were read; `None`
    /// when no target ran Python.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonSummary>,
    /// What each BPF program cost in the kernel, when the kernel counted it
    /// (`kernel.bpf_stats_enabled=1`); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bpf_programs: Vec<BpfProgramCost>,
}

/// One BPF program's runs and time, from the kernel's statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfProgramCost {
    /// The program (`mp_cpu_sample`).
    pub name: String,
    /// Times it ran.
    pub runs: u64,
    /// Nanoseconds it ran in all.
    pub run_ns: u64,
}

/// The Python interpreters found in the targets, and how whole their Python stacks were.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonSummary {
    /// Processes whose Python frames were read.
    pub interpreters: Vec<PythonInterpreter>,
    /// Processes running a CPython whose frames were not read, one line each saying why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub off: Vec<String>,
    /// Stacks taken in those processes (CPU samples, blocked, launch and error stacks).
    pub stacks: u64,
    /// Of those, stacks of a thread with no Python thread state (a native thread, or the
    /// interpreter not started yet).
    pub no_thread_state: u64,
    /// Stacks whose Python frames were cut at the depth limit (the outermost missing).
    pub truncated: u64,
    /// Stacks whose walk stopped at a frame it could not read (the frames read are kept).
    pub read_errors: u64,
    /// Distinct code objects read.
    pub code_objects: u64,
    /// Code objects that could not be read (freed before they were): named by address.
    pub unreadable_code: u64,
}

/// One process's interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonInterpreter {
    /// The process.
    pub pid: u32,
    /// `3.12`.
    pub version: String,
    /// The file that holds it (`libpython3.12.so.1.0` or the executable).
    pub object: String,
}

/// How the kernel handed blocked intervals over (see `modelprobe_common::offcpu`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffCpuStats {
    /// Blocks sent one by one, for the timeline.
    pub events: u64,
    /// Blocks summed in the kernel by (thread, stack).
    pub summed: u64,
    /// Of those summed, blocks long enough for a timeline event that the rate limit or a
    /// busy ring sent to the sums instead.
    pub events_summed: u64,
}

/// What the unwind tables held and cost: objects compiled, rows, kernel memory, build time,
/// and what did not fit (unwound by frame pointers instead).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnwindSummary {
    /// Objects (distinct build ids) with a table.
    pub objects: u64,
    /// Rows written, all objects together.
    pub rows: u64,
    /// Rows the kernel table holds at most (`--unwind-rows`).
    pub capacity_rows: u64,
    /// Kernel memory of the row and mapping tables, in bytes.
    pub kernel_bytes: u64,
    /// Time spent compiling tables, in ms.
    pub build_ms: u64,
    /// Processes given tables.
    pub processes: u64,
    /// Executable objects with no usable CFI.
    pub objects_without_info: u64,
    /// Objects left out because the row table was full.
    pub objects_over_capacity: u64,
    /// Mappings left out because a process had more than the per-process limit.
    pub mappings_over_limit: u64,
    /// Processes left out because every process slot was taken.
    pub processes_over_limit: u64,
}

/// CPU time and memory of the agent process, from `getrusage(RUSAGE_SELF)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentUsage {
    /// CPU time (user + system) from start to the end of recording, in ns.
    pub recording_cpu_ns: u64,
    /// Peak resident memory when recording ended, in KiB.
    pub recording_peak_rss_kib: u64,
    /// CPU time including symbolization, in ns.
    pub total_cpu_ns: u64,
    /// Peak resident memory including symbolization, in KiB.
    pub peak_rss_kib: u64,
}

/// Counts of data dropped, by cause. Never silent: the summary prints any that are non-zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// CPU samples dropped because the ring buffer was full.
    pub cpu_samples: u64,
    /// Blocked intervals dropped because the in-kernel sum table was full.
    pub off_cpu_events: u64,
    /// Blocked intervals not tracked because the in-kernel table was full.
    pub off_cpu_untracked: u64,
    /// Child processes not followed because the in-kernel target table was full.
    pub children_untracked: u64,
    /// Samples whose user stack could not be read (kernel threads, faults).
    pub user_stack_errors: u64,
    /// Samples whose kernel stack could not be read.
    pub kernel_stack_errors: u64,
    /// Stacks (samples, launch and error stacks) cut at the depth limit.
    #[serde(default)]
    pub user_stacks_truncated: u64,
    /// Stacks with at least one frame that had no unwind table (stepped by frame pointer).
    #[serde(default)]
    pub user_stacks_without_unwind_info: u64,
    /// Stacks stopped at a rule the unwinder does not evaluate, or at a corrupt frame.
    #[serde(default)]
    pub user_stacks_stopped: u64,
    /// Stacks whose innermost frame had no CFI (hand-written assembly), its caller found by a
    /// validated scan of the stack: whole, but worth knowing.
    #[serde(default)]
    pub user_stacks_scanned: u64,
    /// Span records (entries or returns) dropped because the record ring buffer was full.
    #[serde(default)]
    pub span_records: u64,
    /// Process, thread and signal records dropped because the record ring buffer was full.
    #[serde(default)]
    pub task_records: u64,
    /// Returns seen without their entry (the entry was lost or came before attaching).
    #[serde(default)]
    pub unmatched_span_returns: u64,
    /// stdout/stderr writes dropped because the record ring buffer was full.
    #[serde(default)]
    pub log_writes: u64,
    /// Log bytes not kept: writes longer than one capture, or lines over the line limit.
    #[serde(default)]
    pub log_bytes_cut: u64,
    /// File opens dropped because the record ring buffer was full.
    #[serde(default)]
    pub file_opens: u64,
    /// GPU activity records CUPTI dropped or the injection library could not hand over.
    #[serde(default)]
    pub gpu_records: u64,
    /// Off-CPU stacks the kernel's store evicted before the agent read them: their time is
    /// kept, under an empty stack.
    #[serde(default)]
    pub off_cpu_stacks_evicted: u64,
    /// TLS plaintext records dropped because their ring buffer was full (the LLM calls they
    /// belonged to are marked incomplete).
    #[serde(default)]
    pub tls_records: u64,
    /// TLS calls not followed because the table of calls in progress was full.
    #[serde(default)]
    pub tls_calls_untracked: u64,
    /// Allocations, frees and page faults (`--memory`) dropped because their ring buffer or
    /// the table of syscalls in progress was full: live memory by stack misses them.
    #[serde(default)]
    pub memory_events: u64,
    /// Python-probe records (`--probe py:`) the in-process library could not write because
    /// its ring was full.
    #[serde(default)]
    pub python_span_records: u64,
    /// Python argument, return and exception texts cut to their length limit.
    #[serde(default)]
    pub python_values_cut: u64,
    /// Python-probe events not recorded because they came while a callback ran on the same
    /// thread (a probed function called by an argument's `repr`).
    #[serde(default)]
    pub python_events_reentered: u64,
}

impl Lost {
    /// Every counter by its name in the recording format (`cpu_samples`, `tls_records`...),
    /// zeros included: for outputs that list them all (metrics by kind).
    pub fn by_kind(&self) -> Vec<(String, u64)> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(kinds)) => kinds
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.as_u64()?)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Events that were dropped outright (stack read errors excluded).
    pub fn dropped(&self) -> u64 {
        [
            self.cpu_samples,
            self.off_cpu_events,
            self.off_cpu_untracked,
            self.children_untracked,
            self.span_records,
            self.task_records,
            self.log_writes,
            self.file_opens,
            self.gpu_records,
            self.tls_records,
            self.tls_calls_untracked,
            self.memory_events,
            self.python_span_records,
            self.python_events_reentered,
        ]
        .into_iter()
        .fold(0, u64::saturating_add)
    }
}

/// A process seen during the recording.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Name (`comm` of the main thread).
    pub name: String,
    /// Command line, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Path of its executable (`/proc/PID/exe`), when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Its cgroup path (the v2 line of `/proc/PID/cgroup`): names a container or a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// A thread seen during the recording.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Thread {
    /// Owning process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name (`comm`), as last seen.
    pub name: String,
    /// Nanoseconds on CPU while recording, as the scheduler accounted them (absent when not
    /// measured: recordings from before this field, a full accounting table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ns: Option<u64>,
}

/// Where a frame's code lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// Native user-space code in a file-backed mapping.
    User,
    /// Kernel code.
    Kernel,
    /// JIT code named by a perf map (`/tmp/perf-PID.map`).
    Jit,
    /// Not symbolized: `name` says the module and offset, or the bare address.
    Unknown,
    /// A Python function, read from the interpreter: `name` is `qualname (file.py:LINE)`,
    /// `file` the whole path and `line` the line being run.
    Python,
}

/// A symbolized frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    /// Function name (demangled), or `[module+0xoffset]` / `[unknown 0xaddr]` if unknown.
    pub name: String,
    /// File name of the module (`libc.so.6`, `[kernel]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Source file, where debug info has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Source line, where debug info has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// Where the code lives.
    pub kind: FrameKind,
    /// True for a function inlined into its caller (it has no frame of its own).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inlined: bool,
}

/// What a sample measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleKind {
    /// A thread running on a CPU; weight 1.
    Cpu,
    /// A thread blocked; weight is nanoseconds blocked, time is when it blocked.
    OffCpu,
}

/// One sample.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// What it measures.
    pub kind: SampleKind,
    /// CLOCK_MONOTONIC ns.
    #[serde(rename = "t")]
    pub time_ns: u64,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Index into [`Recording::stacks`].
    pub stack: u32,
    /// 1 for CPU samples; nanoseconds for off-CPU samples.
    #[serde(rename = "w")]
    pub weight: u64,
    /// For an off-CPU sample summed in the kernel: how many blocks of this thread in this
    /// stack it sums (they ended in the interval that began at `t`). Absent for one block that
    /// began at `t` and lasted `w`, and for CPU samples.
    #[serde(default, rename = "n", skip_serializing_if = "Option::is_none")]
    pub blocks: Option<u64>,
}

impl Recording {
    /// An empty recording of the current format.
    pub fn new(meta: Meta) -> Self {
        Recording {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            meta,
            processes: Vec::new(),
            threads: Vec::new(),
            frames: Vec::new(),
            stacks: Vec::new(),
            samples: Vec::new(),
            probes: Vec::new(),
            spans: Vec::new(),
            events: Vec::new(),
            logs: Vec::new(),
            counters: Vec::new(),
            gpu: GpuTrace::default(),
            llm: llm::LlmTrace::default(),
            memory: memory::MemoryTrace::default(),
        }
    }

    /// Number of CPU samples.
    pub fn cpu_sample_count(&self) -> u64 {
        self.samples
            .iter()
            .filter(|s| s.kind == SampleKind::Cpu)
            .count() as u64
    }

    /// Total off-CPU time recorded, in nanoseconds.
    pub fn off_cpu_ns(&self) -> u64 {
        self.samples
            .iter()
            .filter(|s| s.kind == SampleKind::OffCpu)
            .fold(0u64, |a, s| a.saturating_add(s.weight))
    }

    /// Drops log lines below `min` (lines without a level count as INFO).
    pub fn keep_logs_from(&mut self, min: crate::logs::Level) {
        use crate::logs::Level;
        self.logs.retain(|l| l.level.unwrap_or(Level::Info) >= min);
    }

    /// Keeps a `rate` fraction of each probe's spans, evenly spread (every 1/rate-th call);
    /// spans with an error are always kept.
    pub fn sample_spans(&mut self, rate: f64) {
        if rate >= 1.0 {
            return;
        }
        let mut seen: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
        self.spans.retain(|s| {
            let n = seen.entry(s.probe).or_default();
            *n += 1;
            let keep = (*n as f64 * rate).floor() > ((*n - 1) as f64 * rate).floor();
            keep || s.attrs.contains_key("error")
        });
        self.meta.span_sample_rate = Some(rate);
    }

    /// Recorded duration in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.meta.end_ns.saturating_sub(self.meta.start_ns)
    }

    /// Name of process `pid`, or `pid-N` if it was never named.
    pub fn process_name(&self, pid: u32) -> String {
        self.processes
            .iter()
            .find(|p| p.pid == pid)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| format!("pid-{pid}"))
    }

    /// Name of thread `tid` of `pid`: its last name, its process's for a main thread never
    /// named, else `tid N`.
    pub fn thread_name(&self, pid: u32, tid: u32) -> String {
        self.threads
            .iter()
            .find(|t| t.pid == pid && t.tid == tid)
            .map(|t| t.name.clone())
            .or_else(|| (tid == pid).then(|| self.process_name(pid)))
            .unwrap_or_else(|| format!("tid {tid}"))
    }
}
