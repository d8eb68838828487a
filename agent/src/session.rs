//! One profiling session, start to finish: checks, attach, the event loop, and finalization
//! into a [`Recording`] plus its exports.
//!
//! Whatever ends the session (its duration, a signal, the target exiting), the same
//! finalization runs: drain the ring buffer, read the drop counters, detach, symbolize, write.
use std::{
    ffi::OsString,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use modelprobe_common::lost;

use crate::{
    export, preflight,
    probes::{ProbeSet, ProbeSpec, SearchContext},
    sampler::{max_frequency, Sampler, SamplerOptions},
    target::{self, GatedChild},
    trace::{AgentUsage, Lost, Meta, Recording},
    Error, Result,
};

mod collect;
mod models;

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
    /// Set to a signal number (by the caller's signal handler) to stop the session.
    pub stop: Arc<AtomicUsize>,
    /// Functions to record spans of (`--probe`).
    pub probes: Vec<ProbeSpec>,
    /// Capture the target's stdout/stderr and model-file opens.
    pub capture_io: bool,
    /// Size of the ring buffer for spans, events and logs, in bytes.
    pub records_ring_bytes: u32,
    /// Switch on the built-in probe packs (CUDA) where their libraries are found.
    pub packs: bool,
    /// Include the GPU packs (CUDA, cuBLAS, NCCL) when `packs` is on.
    pub gpu_packs: bool,
    /// Sample CPU stacks (off: spans, events and logs only).
    pub cpu: bool,
    /// Log lines below this level are not kept (unleveled lines count as INFO).
    pub min_log_level: crate::logs::Level,
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
}

/// When `attach` loads the GPU library into a running process ([`crate::inject`]).
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
            stop: Arc::new(AtomicUsize::new(0)),
            probes: Vec::new(),
            capture_io: true,
            records_ring_bytes: crate::sampler::DEFAULT_RECORDS_RING,
            packs: true,
            gpu_packs: true,
            cpu: true,
            min_log_level: crate::logs::Level::Debug,
            span_sample_rate: 1.0,
            progress: false,
            gpu_metrics: Some(crate::gpu::nvml::DEFAULT_INTERVAL),
            gpu_trace: true,
            inject: InjectMode::IfCuda,
            retract: false,
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
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock BPF's `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// True when `SIGINT` most likely came from the terminal, which already delivered it to the
/// launched command (same foreground process group).
fn sigint_from_terminal() -> bool {
    // SAFETY: both calls only read process state; tcgetpgrp fails harmlessly without a tty.
    unsafe { libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp() }
}

/// Runs a whole session: checks, attaches, records until done, writes outputs.
pub fn record(opts: &RecordOptions) -> Result<Outcome> {
    let max = max_frequency();
    if opts.frequency_hz == 0 || opts.frequency_hz > max {
        return Err(Error::InvalidArgument(format!(
            "--freq {} is out of range: use 1..={max} Hz (kernel.perf_event_max_sample_rate)",
            opts.frequency_hz
        )));
    }
    let ring = opts.records_ring_bytes;
    if !ring.is_power_of_two() || ring < 4096 {
        return Err(Error::InvalidArgument(format!(
            "--ring-buffer-kib {} is not a power of two of at least 4",
            ring / 1024
        )));
    }
    preflight::check_privileges()?;
    preflight::check_kernel()?;
    let mut opts = std::borrow::Cow::Borrowed(opts);
    if let Target::Pid(pid) = opts.target {
        target::check_pid(pid)?;
        // A thread id stands for its process: sampling filters on processes.
        if let Some(tgid) = target::thread_group(pid).filter(|&t| t != pid) {
            log::info!("{pid} is a thread of process {tgid}: profiling the process");
            opts.to_mut().target = Target::Pid(tgid);
        }
    }
    let opts = opts.as_ref();
    if let Target::Pid(pid) = opts.target {
        if pid == std::process::id() {
            return Err(Error::InvalidArgument(
                "refusing to profile modelprobe itself".into(),
            ));
        }
        target::check_pid(pid)?;
    }
    let created_output_dir = preflight::prepare_output_dir(&opts.output_dir)?;
    let tracefs = preflight::ensure_tracefs()?;

    let mut child = match &opts.target {
        Target::Command(argv) => Some(GatedChild::spawn(argv, &injection_env(opts))?),
        Target::Pid(_) => None,
    };
    // Resolve probes before attaching anything, so a typo is one clear error.
    let probe_ctx = match (&opts.target, &child) {
        (Target::Pid(pid), _) => SearchContext::for_process(*pid),
        (Target::Command(_), Some(c)) => SearchContext::for_command(&c.program_path),
        (Target::Command(_), None) => unreachable!("a command target always has a child"),
    };
    let probes = ProbeSet::resolve(&opts.probes, &probe_ctx);
    let mut probes = match probes {
        Ok(p) => p,
        Err(e) => {
            abandon(child.take());
            return Err(e);
        }
    };
    probes.keep_launch_stacks(opts.gpu_trace);
    if opts.packs {
        let skip = if opts.gpu_packs {
            &[][..]
        } else {
            crate::probes::packs::GPU_PACKS
        };
        probes.enable_packs(&probe_ctx, skip);
        for pack in crate::probes::packs::PACKS {
            let fns = probes.pack_functions(pack.name);
            if let Some(first) = fns.first() {
                log::info!(
                    "{} pack: {} functions in {}",
                    pack.name,
                    fns.len(),
                    first.path
                );
            }
        }
    }
    let sampler_opts = SamplerOptions {
        frequency_hz: opts.frequency_hz,
        off_cpu: opts.off_cpu,
        off_cpu_min: opts.off_cpu_min,
        capture_io: opts.capture_io,
        cpu: opts.cpu,
        records_ring_bytes: opts.records_ring_bytes,
    };
    let started = Sampler::start(&sampler_opts, &tracefs).and_then(|mut sampler| {
        match (&opts.target, &child) {
            (Target::Pid(pid), _) => {
                sampler.add_target(*pid)?;
                probes.attach_to(&mut sampler, *pid)?;
                for d in target::descendants(*pid) {
                    sampler.add_target(d)?;
                    if let Err(e) = probes.attach_to(&mut sampler, d) {
                        log::warn!("probes not attached to child {d}: {e}");
                    }
                }
            }
            (Target::Command(_), Some(c)) => {
                sampler.add_target(c.pid)?;
                // Uprobes live on files: attached now, they fire from the command's first call.
                probes.attach_to(&mut sampler, c.pid)?;
            }
            (Target::Command(_), None) => unreachable!("a command target always has a child"),
        }
        Ok(sampler)
    });
    let mut sampler = match started {
        Ok(s) => s,
        Err(e) => {
            abandon(child.take());
            return Err(e);
        }
    };
    if probes.function_count() > 0 {
        log::info!("probing {} function(s)", probes.function_count());
    }

    let (target_pid, command) = match (&opts.target, &mut child) {
        (Target::Pid(pid), _) => (
            *pid,
            target::cmdline(*pid)
                .or_else(|| target::comm(*pid))
                .unwrap_or_default(),
        ),
        (Target::Command(argv), Some(c)) => {
            c.release()?;
            let cmd: Vec<String> = argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            (c.pid, cmd.join(" "))
        }
        (Target::Command(_), None) => unreachable!("a command target always has a child"),
    };

    let mut collector = Collector::new();
    collector.set_probes(probes.table());
    collector.watch(target_pid);
    if child.is_none() {
        for d in target::descendants(target_pid) {
            collector.watch(d);
        }
    }

    let start_ns = monotonic_ns();
    if child.is_none() {
        collector.note_loaded_models(target_pid, start_ns);
    }
    let start_unix_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let started_at = Instant::now();
    match &child {
        Some(_) => log::info!(
            "recording `{command}` (pid {target_pid}) at {} Hz",
            opts.frequency_hz
        ),
        None => log::info!(
            "recording pid {target_pid} ({command}) at {} Hz{}; Ctrl-C to stop",
            opts.frequency_hz,
            opts.duration
                .map(|d| format!(" for {}", humantime::format_duration(d)))
                .unwrap_or_default()
        ),
    }

    let mut exit_status = None;
    let mut last_rescan = Instant::now();
    let mut forwarded_at: Option<Instant> = None;
    let nvml =
        opts.gpu_metrics
            .and_then(|every| match crate::gpu::nvml::NvmlSampler::start(every) {
                Ok(s) => {
                    log::info!("GPU metrics: {} GPU(s) every {every:?} (NVML)", s.devices());
                    Some(s)
                }
                Err(why) => {
                    log::info!("GPU metrics off: {why}");
                    None
                }
            });
    let mut gpu = opts
        .gpu_trace
        .then(|| crate::gpu::client::GpuClient::new(Default::default()));
    let injected = match (&opts.target, opts.gpu_trace) {
        (Target::Pid(pid), true) => match inject_live(*pid, opts.inject) {
            Ok(list) => list,
            Err(e) => {
                drop(sampler);
                return Err(e);
            }
        },
        _ => Vec::new(),
    };
    let end_reason;
    let progress = crate::progress::Progress::new(opts.progress);
    let mut last_progress = Instant::now();
    loop {
        if progress.is_active() && last_progress.elapsed() >= Duration::from_millis(500) {
            last_progress = Instant::now();
            progress.set(&collector.progress_line(started_at.elapsed()));
        }
        if sampler.wait(Duration::from_millis(100)) {
            sampler.drain(&mut collector);
            follow_lifecycle(&mut collector, &mut sampler, &mut probes);
        }
        if let Some(gpu) = gpu.as_mut() {
            for line in gpu.poll(&collector.live_pids()) {
                log::info!("{line}");
            }
        }
        // Libraries loaded from outside any search path (a wheel's RPATH, a ctypes load):
        // found by the rescan, or earlier by a sample landing in them.
        if last_rescan.elapsed() >= Duration::from_secs(1) {
            last_rescan = Instant::now();
            collector.rescan_maps();
        }
        for (pid, files) in collector.take_new_files() {
            if let Err(e) = probes.on_new_files(&mut sampler, pid, &files) {
                log::warn!("probes not attached to new libraries of pid {pid}: {e}");
            }
        }
        if let Some(c) = &child {
            if let Some(status) = target::try_wait(c.pid) {
                exit_status = Some(status);
                end_reason = "target-exited";
                break;
            }
        } else if !target::is_alive(target_pid) {
            end_reason = "target-exited";
            break;
        }
        let signal = opts.stop.load(Ordering::Relaxed);
        if signal != 0 {
            match (&child, forwarded_at) {
                (None, _) => {
                    end_reason = "signal";
                    break;
                }
                (Some(c), None) => {
                    if !(signal == libc::SIGINT as usize && sigint_from_terminal()) {
                        // SAFETY: kill has no memory-safety preconditions.
                        unsafe { libc::kill(c.pid as i32, signal as i32) };
                    }
                    log::info!("signal {signal}: waiting up to 5s for the command to exit");
                    forwarded_at = Some(Instant::now());
                }
                (Some(_), Some(at)) if at.elapsed() > Duration::from_secs(5) => {
                    log::warn!("the command is still running; finalizing the recording without it");
                    exit_status = Some(128 + signal as i32);
                    end_reason = "signal";
                    break;
                }
                _ => {}
            }
        }
        if child.is_none() && opts.duration.is_some_and(|d| started_at.elapsed() >= d) {
            end_reason = "duration";
            break;
        }
    }
    let end_ns = monotonic_ns();
    // Ask the injection libraries for their last records while the processes still run.
    let gpu = gpu.map(|g| {
        progress.set("collecting the last GPU records");
        g.finish(GPU_FLUSH_WAIT)
    });
    let gpu_counters = nvml
        .map(crate::gpu::nvml::NvmlSampler::finish)
        .unwrap_or_default();
    sampler.drain(&mut collector);
    let (recording_cpu_ns, recording_peak_rss_kib) = AgentUsage::now();
    let counts = sampler.lost()?;
    let cpus = sampler.cpus();
    drop(sampler); // detach before the heavy lifting, so the target runs unobserved again
    progress.set(&format!(
        "stopped; symbolizing {} samples",
        collector.sample_count()
    ));
    log::info!(
        "stopped ({end_reason}) after {:.1}s; symbolizing {} samples",
        started_at.elapsed().as_secs_f64(),
        collector.sample_count()
    );

    let meta = Meta {
        modelprobe_version: env!("CARGO_PKG_VERSION").to_string(),
        mode: match opts.target {
            Target::Pid(_) => "attach".into(),
            Target::Command(_) => "run".into(),
        },
        command,
        target_pid,
        start_ns,
        end_ns,
        start_unix_ms,
        frequency_hz: if opts.cpu { opts.frequency_hz } else { 0 },
        off_cpu: opts.off_cpu,
        kernel: kernel_release(),
        hostname: hostname(),
        cpus,
        end_reason: end_reason.into(),
        exit_status,
        lost: Lost {
            cpu_samples: counts[lost::CPU_SAMPLE as usize],
            off_cpu_events: counts[lost::OFF_CPU as usize],
            off_cpu_untracked: counts[lost::OFF_CPU_TABLE_FULL as usize],
            children_untracked: counts[lost::TARGETS_FULL as usize],
            span_records: counts[lost::SPAN as usize],
            task_records: counts[lost::TASK as usize],
            log_writes: counts[lost::LOG as usize],
            file_opens: counts[lost::OPEN as usize],
            ..Lost::default()
        },
        span_sample_rate: None,
        agent: None,
    };
    collector.set_probes(probes.table());
    let mut recording = collector.finish(meta);
    let pids = recording.processes.iter().map(|p| p.pid).collect();
    recording.counters = crate::gpu::nvml::only_processes(gpu_counters, &pids);
    recording.keep_logs_from(opts.min_log_level);
    recording.sample_spans(opts.span_sample_rate);
    if let Some((collected, not_injected, lines)) = gpu {
        for line in lines {
            log::info!("{line}");
        }
        crate::gpu::merge::merge(&mut recording, collected, &not_injected);
        for s in &mut recording.gpu.sources {
            if let Some(i) = injected.iter().find(|i| i.pid == s.pid) {
                s.message.push_str(&format!(
                    " (library loaded live: thread {} held {:.2} ms)",
                    i.tid,
                    i.pause.as_secs_f64() * 1e3
                ));
            }
        }
    }
    if opts.retract {
        retract_all(&injected);
    }
    let (total_cpu_ns, peak_rss_kib) = AgentUsage::now();
    recording.meta.agent = Some(AgentUsage {
        recording_cpu_ns,
        recording_peak_rss_kib,
        total_cpu_ns,
        peak_rss_kib,
    });
    progress.set("writing the recording and flame graphs");
    recording.write(&opts.output_dir)?;
    let mut files = vec![opts.output_dir.join(crate::trace::FILE_NAME)];
    files.extend(export::export_all(&recording, &opts.output_dir)?);
    progress.done();
    preflight::hand_over(
        created_output_dir.then_some(opts.output_dir.as_path()),
        &files,
    );
    Ok(Outcome { recording, files })
}

/// Loads the GPU library into `root` and its descendants that use CUDA (or into `root` alone,
/// whatever it uses, for [`InjectMode::Always`]), unless it is already there.
fn inject_live(root: u32, mode: InjectMode) -> Result<Vec<crate::inject::Injected>> {
    use crate::gpu::{client, library};
    if mode == InjectMode::Never {
        return Ok(Vec::new());
    }
    let mut candidates = vec![root];
    candidates.extend(target::descendants(root));
    let mut done = Vec::new();
    for pid in candidates {
        if client::library_listening(pid) {
            log::info!("pid {pid} already has the GPU library");
            continue;
        }
        let forced = mode == InjectMode::Always && pid == root;
        if !forced && !client::uses_cuda(pid) {
            continue;
        }
        let bytes = match library::bytes() {
            Ok(b) => b,
            Err(e) if forced => return Err(e),
            Err(e) => {
                log::warn!("GPU timings off for pid {pid}: {e}");
                continue;
            }
        };
        let opts = crate::inject::InjectOptions::default();
        match crate::inject::inject(pid, bytes, "modelprobe-gpu", &opts) {
            Ok(inj) => {
                log::info!(
                    "loaded the GPU library into pid {pid} (thread {} held {:.2} ms)",
                    inj.tid,
                    inj.pause.as_secs_f64() * 1e3
                );
                done.push(inj);
            }
            Err(e) if forced => return Err(e.into()),
            Err(e) => log::warn!(
                "GPU timings off for pid {pid}: could not load the GPU library: {e} \
                 (--no-inject skips this)"
            ),
        }
    }
    Ok(done)
}

/// `--retract`: unloads what [`inject_live`] loaded.
fn retract_all(injected: &[crate::inject::Injected]) {
    let opts = crate::inject::InjectOptions::default();
    for inj in injected {
        match crate::inject::retract(inj, &opts) {
            Ok(pause) => log::info!(
                "unloaded the GPU library from pid {} (held {:.2} ms)",
                inj.pid,
                pause.as_secs_f64() * 1e3
            ),
            Err(crate::inject::InjectError::StopFailed { code: 1, .. }) => log::info!(
                "the GPU library stays in pid {}, idle: CUPTI keeps callbacks into it (one \
                 sleeping thread; CUPTI is off)",
                inj.pid
            ),
            Err(e) => log::warn!("could not unload the GPU library from pid {}: {e}", inj.pid),
        }
    }
}

/// How long the end of a recording waits for the injection libraries' final flush.
const GPU_FLUSH_WAIT: Duration = Duration::from_secs(3);

/// The environment that makes a launched command load the CUPTI injection library at
/// `cuInit`; empty (with the reason logged) when GPU timings are off or the user already
/// set `CUDA_INJECTION64_PATH`.
fn injection_env(opts: &RecordOptions) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    use crate::gpu::library;
    if !opts.gpu_trace {
        return Vec::new();
    }
    if let Some(set) = std::env::var_os(library::ENV) {
        log::info!(
            "{} is already set ({}): leaving it; GPU timings come only if that is modelprobe's library",
            library::ENV,
            set.to_string_lossy()
        );
        return Vec::new();
    }
    match library::write_to(&library::default_dir()) {
        Ok(path) => vec![(library::ENV.into(), path.into_os_string())],
        Err(e) => {
            log::warn!("GPU timings off: {e}");
            Vec::new()
        }
    }
}

/// Lets a gated child that will never be released exit, and reaps it.
fn abandon(child: Option<GatedChild>) {
    if let Some(c) = child {
        let pid = c.pid;
        drop(c); // closes the gate: the child exits without running the command
        while target::try_wait(pid).is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Attaches probes to processes the target forked, and re-resolves them after an exec.
fn follow_lifecycle(collector: &mut Collector, sampler: &mut Sampler, probes: &mut ProbeSet) {
    if probes.is_empty() {
        collector.take_lifecycle();
        return;
    }
    for change in collector.take_lifecycle() {
        let result = match change {
            Lifecycle::NewProcess(pid) => probes.attach_to(sampler, pid),
            Lifecycle::Exec(pid) => probes.on_exec(sampler, pid),
        };
        if let Err(e) = result {
            log::warn!("probes not attached after {change:?}: {e}");
        }
    }
}
