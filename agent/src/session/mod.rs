//! One profiling session, in three phases that each read top to bottom:
//!
//! - [`start`](start::start): check the options and the machine, launch the command held at a
//!   gate (or find the running target), resolve probes and packs, load and attach the BPF
//!   programs, release the command;
//! - [`run`](run::run): the event loop: drain the ring buffers into the [`Collector`], follow
//!   forks and execs, offer newly mapped libraries to the probe set, poll the GPU libraries,
//!   until the command exits, the duration ends or a signal comes;
//! - [`finish`](finish::finish): take the last GPU records, drain, read the drop counters,
//!   detach, build the [`Recording`] in one step, write it and its outputs.
//!
//! Everything GPU-side (the library's environment for `run`, loading it live for `attach`, the
//! per-process clients, NVML, the merge, retracting) is behind one type, [`gpu::GpuSide`];
//! Python function spans (the same library, preloaded or loaded live, its ring read while
//! recording, its probes removed at the end) behind [`python_probes::PySide`].
//! Whatever ends the session, the same finish runs: nothing recorded is lost.
use std::{
    ffi::OsString,
    path::PathBuf,
    sync::{atomic::AtomicUsize, Arc, Mutex},
    time::Duration,
};

use crate::{probes::ProbeSpec, recording::Recording, Result};

mod collect;
mod finish;
pub mod flight;
mod gpu;
mod python_probes;
mod run;
pub(crate) mod snapshot;
mod start;
mod stops;
mod watching;

pub use collect::log_lines;
use collect::{Collector, Lifecycle};

/// What to profile.
#[derive(Debug, Clone)]
pub enum Target {
    /// A running process (and the children it forks from now on).
    Pid(u32),
    /// A command to launch and profile for its whole life, children included.
    Command(Vec<OsString>),
}

/// Everything a recording needs to know.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// What to profile.
    pub target: Target,
    /// Where outputs go (created if missing).
    pub output_dir: PathBuf,
    /// CPU samples per second.
    pub frequency_hz: u64,
    /// Stop after this long (attach only; `run` follows the command's life).
    pub duration: Option<Duration>,
    /// Also record blocked time.
    pub off_cpu: bool,
    /// Shortest blocked interval recorded.
    pub off_cpu_min: Duration,
    /// Shortest blocked interval drawn on the timeline one by one (shorter ones, and long
    /// ones past the rate limit, are summed by thread and stack in the kernel).
    pub off_cpu_event_min: Duration,
    /// Set to a signal number (by the caller's signal handler) to stop the session.
    pub stop: Arc<AtomicUsize>,
    /// Functions to record spans of (`--probe`).
    pub probes: Vec<ProbeSpec>,
    /// Capture the target's stdout/stderr and model-file opens.
    pub capture_io: bool,
    /// Size of the ring buffer for spans, events and logs, in bytes.
    pub records_ring_bytes: u32,
    /// The other ring buffers at the sizes low rates need
    /// ([`crate::sampler::SMALL_RINGS`]; the continuous agent's).
    pub small_rings: bool,
    /// Capacity of the kernel's unwind-row table; 0: user stacks by frame pointers only.
    pub unwind_rows: u32,
    /// Read the Python frames of CPython targets (`--no-python` turns it off).
    pub python_frames: bool,
    /// Switch on the built-in probe packs (CUDA) where their libraries are found.
    pub packs: bool,
    /// Include the GPU packs (CUDA, cuBLAS, NCCL) when `packs` is on.
    pub gpu_packs: bool,
    /// Capture TLS plaintext (the `openssl` pack, when `packs` is on) and parse LLM API
    /// calls out of it with these options; `None` (`--no-llm`): off.
    pub llm: Option<modelprobe_llm::Options>,
    /// With `llm`: also read plain HTTP on the targets' TCP sockets (`--plain-http`).
    pub plain_http: bool,
    /// Sample CPU stacks (off: spans, events and logs only).
    pub cpu: bool,
    /// Log lines below this level are not kept (unleveled lines count as INFO).
    pub min_log_level: crate::recording::logs::Level,
    /// Fraction of each probe's spans kept (spans with errors are always kept).
    pub span_sample_rate: f64,
    /// Show progress on stderr when it is a terminal.
    pub progress: bool,
    /// Sample NVML device metrics at this interval (`None`: off).
    pub gpu_metrics: Option<Duration>,
    /// Get GPU timings from CUPTI through the injection library: `run` sets
    /// `CUDA_INJECTION64_PATH` for the command, and every target process where the library
    /// is loaded is asked for its GPU activity.
    pub gpu_trace: bool,
    /// `attach`: when to load the library into target processes that lack it (ptrace).
    pub inject: InjectMode,
    /// `attach`: unload a library loaded live when the recording ends.
    pub retract: bool,
    /// Serve Prometheus metrics on this address while recording (`--metrics-addr`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Stream spans, LLM calls and events as JSON lines while recording (`--export
    /// jsonl:-` or `jsonl:FILE`).
    pub export_stream: Option<String>,
    /// With a [`Target::Pid`]: more running processes recorded beside it, each with its
    /// children (the continuous agent's selection). The session ends when all have exited.
    pub more_pids: Vec<u32>,
    /// Count into these live metrics instead of serving a set of this session's own (the
    /// continuous agent serves one set for its whole life).
    pub shared_metrics: Option<Arc<crate::live::LiveMetrics>>,
    /// With a [`Target::Pid`]: running processes handed over while recording, recorded from
    /// then on like `more_pids` (the continuous agent's new matches). With it, the session
    /// ends on its processes' exit only when every one it recorded has exited.
    pub adopt: Option<Arc<Adopt>>,
    /// Breakpoints and `--stop-on` rules: the process is stopped there, its stacks printed,
    /// and it is resumed by `modelprobe resume` or after the timeout.
    pub stops: Option<crate::stop::StopOptions>,
    /// Keep only a window of history and write it when a trigger fires (`--flight-recorder`).
    pub flight: Option<flight::FlightOptions>,
    /// Record memory (`--memory`): each target process's resident, anonymous, file-backed,
    /// shared and swapped MiB once a second, as counters; and memory by stack from the
    /// `mmap`/`munmap`/`mremap`/`brk` syscalls and sampled page faults.
    pub memory: bool,
    /// With `memory`, also sample heap allocations (`--memory=malloc`): the mean bytes between
    /// two samples (`None`: no heap sampling).
    pub malloc_sample_bytes: Option<u64>,
}

/// `--memory=malloc`'s default mean bytes between two sampled heap allocations.
pub const DEFAULT_MALLOC_SAMPLE_BYTES: u64 = 512 << 10;

/// Processes handed to a session in progress, taken by its event loop (every ~100 ms): each
/// gets its unwind tables, Python frames and probes, and its children are followed, as for a
/// process named at the start.
#[derive(Debug, Default)]
pub struct Adopt {
    pending: Mutex<Vec<u32>>,
}

impl Adopt {
    /// Hands `pid` over (one the session already records is ignored).
    pub fn push(&self, pid: u32) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pid);
    }

    /// What was handed over since the last call.
    fn take(&self) -> Vec<u32> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// When `attach` loads the GPU library into a running process ([`crate::live_load`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectMode {
    /// Never (`--no-inject`): GPU timings only where the library was set up at launch.
    Never,
    /// Into each process of the target's tree that has loaded the CUDA driver (the default);
    /// a failure is a warning.
    IfCuda,
    /// Into the target whether or not it uses CUDA yet (`--gpu`); a failure is an error.
    Always,
}

impl RecordOptions {
    /// Defaults: 99 Hz, no time limit, CPU only.
    pub fn new(target: Target, output_dir: PathBuf) -> Self {
        RecordOptions {
            target,
            output_dir,
            frequency_hz: 99,
            duration: None,
            off_cpu: false,
            off_cpu_min: Duration::from_micros(1),
            off_cpu_event_min: Duration::from_millis(1),
            stop: Arc::new(AtomicUsize::new(0)),
            probes: Vec::new(),
            capture_io: true,
            records_ring_bytes: crate::sampler::DEFAULT_RECORDS_RING,
            small_rings: false,
            unwind_rows: modelprobe_common::unwind::DEFAULT_UNWIND_ROWS,
            python_frames: true,
            packs: true,
            gpu_packs: true,
            llm: Some(modelprobe_llm::Options::default()),
            plain_http: false,
            cpu: true,
            min_log_level: crate::recording::logs::Level::Debug,
            span_sample_rate: 1.0,
            progress: false,
            gpu_metrics: Some(crate::gpu::nvml::DEFAULT_INTERVAL),
            gpu_trace: true,
            inject: InjectMode::IfCuda,
            retract: false,
            metrics_addr: None,
            export_stream: None,
            more_pids: Vec::new(),
            shared_metrics: None,
            adopt: None,
            stops: None,
            flight: None,
            memory: false,
            malloc_sample_bytes: None,
        }
    }
}

/// What a finished session produced.
#[derive(Debug)]
pub struct Outcome {
    /// The recording, as written.
    pub recording: Recording,
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// Processes handed over while recording ([`RecordOptions::adopt`]) and recorded.
    pub adopted: usize,
}

/// Runs a whole session: checks, attaches, records until done, writes outputs.
pub fn record(opts: &RecordOptions) -> Result<Outcome> {
    let mut session = start::start(opts)?;
    let stopped = run::run(&mut session);
    finish::finish(session, stopped)
}
