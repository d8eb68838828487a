//! Phase one: from options to a recording in progress. Checks come first, so a bad option or
//! a missing privilege is one clear error before anything is attached; a launched command
//! waits at a gate until the probes and the sampler watch it, so `run` sees it from its first
//! instruction.
use std::{borrow::Cow, sync::Arc, time::Instant};

use super::{
    gpu::GpuSide, python_probes::PySide, Collector, RecordOptions, Target,
    DEFAULT_MALLOC_SAMPLE_BYTES,
};
use crate::{
    clock,
    live::{JsonLines, Live, LiveMetrics, MetricsServer},
    preflight,
    probes::{packs, ProbeSet, SearchContext},
    progress::Progress,
    sampler::{max_frequency, Sampler, SamplerOptions},
    target::{self, GatedChild},
    Error, Result,
};

/// A recording in progress: what the run and finish phases work with.
pub(super) struct Session<'a> {
    /// The options, with a thread id given to `--pid` replaced by its process.
    pub opts: Cow<'a, RecordOptions>,
    /// The loaded BPF programs and their ring buffers.
    pub sampler: Sampler,
    /// The probes, attached to every process of the target tree.
    pub probes: ProbeSet,
    /// The launched command (`run`), released.
    pub child: Option<GatedChild>,
    /// What has been recorded so far.
    pub collector: Collector,
    /// GPU timings and metrics.
    pub gpu: GpuSide,
    /// Python function spans.
    pub python: PySide,
    /// The target's pid (the launched command's, for `run`).
    pub target_pid: u32,
    /// Its command line, for the recording.
    pub command: String,
    /// CLOCK_MONOTONIC at the start, ns.
    pub start_ns: u64,
    /// Wall clock at the start, ms since the epoch.
    pub start_unix_ms: u64,
    /// When recording began, for the duration and the progress line.
    pub started_at: Instant,
    /// True when the output directory was made by this session (handed to the sudo user).
    pub created_output_dir: bool,
    /// The progress line on stderr.
    pub progress: Progress,
    /// Live outputs (`--metrics-addr`, `--export jsonl:`).
    pub live: LiveOutputs,
    /// Processes handed over while recording ([`RecordOptions::adopt`]).
    pub adopted: Vec<u32>,
    /// Processes this session stopped ([`RecordOptions::stops`]) and when.
    pub held: Vec<(u32, Instant)>,
    /// The flight recorder, when on.
    pub flight: Option<super::flight::Flight>,
    /// Stops the session may still make ([`RecordOptions::stops`]'s `max` less those made).
    pub stops_left: u64,
}

/// The live outputs of a session: the metrics server (stops when dropped) and the stream.
pub(super) struct LiveOutputs {
    /// Metrics and the server answering scrapes.
    pub server: Option<(Arc<LiveMetrics>, MetricsServer)>,
    /// Metrics someone else serves (the continuous agent's).
    pub shared: Option<Arc<LiveMetrics>>,
    /// The JSON-lines stream.
    pub stream: Option<Arc<JsonLines>>,
}

impl LiveOutputs {
    /// Opens what `opts` asks for: a bad address or path is an error before anything is
    /// attached or launched.
    fn open(opts: &RecordOptions) -> Result<Self> {
        let server = match opts.metrics_addr {
            Some(addr) => {
                let metrics = Arc::new(LiveMetrics::new());
                let server = MetricsServer::start(addr, metrics.clone())?;
                Some((metrics, server))
            }
            None => None,
        };
        let shared = opts.shared_metrics.clone();
        if let Some(m) = &shared {
            // A new sampler counts its drops from zero.
            m.new_session();
        }
        let stream = match &opts.export_stream {
            Some(spec) => Some(Arc::new(JsonLines::open(spec)?)),
            None => None,
        };
        Ok(LiveOutputs {
            server,
            shared,
            stream,
        })
    }

    /// What the collector feeds.
    fn live(&self) -> Live {
        Live {
            metrics: self.metrics(),
            stream: self.stream.clone(),
        }
    }

    /// The metrics counted into, served here or elsewhere.
    pub fn metrics(&self) -> Option<Arc<LiveMetrics>> {
        self.server
            .as_ref()
            .map(|(m, _)| m.clone())
            .or_else(|| self.shared.clone())
    }
}

/// Checks everything, attaches, releases a launched command.
pub(super) fn start(opts: &RecordOptions) -> Result<Session<'_>> {
    let opts = checked(opts)?;
    let created_output_dir = preflight::prepare_output_dir(&opts.output_dir)?;
    let tracefs = preflight::ensure_tracefs()?;
    let live = LiveOutputs::open(&opts)?;

    let mut python = PySide::new();
    let mut child = match &opts.target {
        Target::Command(argv) => {
            let mut env = GpuSide::launch_env(&opts);
            env.extend(python.launch_env(&opts));
            Some(GatedChild::spawn(argv, &env)?)
        }
        Target::Pid(_) => None,
    };
    // From here on, a failure lets a gated child go without running the command.
    let mut collector = Collector::new();
    collector.publish_to(live.live());
    if opts.memory {
        collector.record_memory();
        if let Some(mean) = opts.malloc_sample_bytes {
            collector.sample_heap(mean);
        }
    }
    if let (true, Some(llm)) = (opts.packs, &opts.llm) {
        collector.capture_llm_calls(llm.clone());
    }
    let attached = attach(&opts, child.as_ref(), &tracefs, &mut collector);
    let (sampler, probes) = match attached {
        Ok(a) => a,
        Err(e) => {
            abandon(child.take());
            return Err(e);
        }
    };

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

    collector.set_probes(probes.table());
    let start_ns = clock::monotonic_ns();
    let roots = std::iter::once(target_pid).chain(opts.more_pids.iter().copied());
    for root in roots {
        collector.watch(root);
        if child.is_none() {
            for d in target::descendants(root) {
                collector.watch(d);
            }
            collector.note_loaded_models(root, start_ns);
        }
    }
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
    // For `attach`, the GPU library may be loaded into the running processes now.
    let gpu = GpuSide::start(&opts, child.is_none().then_some(target_pid), live.metrics())?;
    // Python probes: the launched command set them up itself; a running one gets the library.
    python.start(
        &opts,
        child.is_some().then_some(target_pid),
        child.is_none().then_some(target_pid),
    );
    let stops_left = opts.stops.as_ref().map_or(0, |s| s.max);
    Ok(Session {
        progress: Progress::new(opts.progress),
        live,
        opts,
        sampler,
        probes,
        child,
        collector,
        gpu,
        python,
        target_pid,
        command,
        start_ns,
        start_unix_ms: clock::unix_ms(),
        started_at: Instant::now(),
        created_output_dir,
        adopted: Vec::new(),
        held: Vec::new(),
        flight: None,
        stops_left,
    })
}

/// The options checked against the machine, a thread id given to `--pid` replaced by its
/// process; privileges and kernel checked.
fn checked(opts: &RecordOptions) -> Result<Cow<'_, RecordOptions>> {
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
    let mut opts = Cow::Borrowed(opts);
    if let Target::Pid(pid) = opts.target {
        target::check_pid(pid)?;
        // A thread id stands for its process: sampling filters on processes.
        if let Some(tgid) = target::thread_group(pid).filter(|&t| t != pid) {
            log::info!("{pid} is a thread of process {tgid}: profiling the process");
            opts.to_mut().target = Target::Pid(tgid);
        }
    }
    for &pid in &opts.more_pids {
        if pid == std::process::id() {
            return Err(Error::InvalidArgument(
                "refusing to profile modelprobe itself".into(),
            ));
        }
        target::check_pid(pid)?;
    }
    if let Target::Pid(pid) = opts.target {
        if pid == std::process::id() {
            return Err(Error::InvalidArgument(
                "refusing to profile modelprobe itself".into(),
            ));
        }
        target::check_pid(pid)?;
    }
    Ok(opts)
}

/// Resolves the probes and packs (before attaching anything, so a typo is one clear error),
/// loads the BPF programs and attaches them to the target tree.
fn attach(
    opts: &RecordOptions,
    child: Option<&GatedChild>,
    tracefs: &std::path::Path,
    collector: &mut Collector,
) -> Result<(Sampler, ProbeSet)> {
    let ctx = match (&opts.target, child) {
        (Target::Pid(pid), _) => SearchContext::for_process(*pid),
        (Target::Command(_), Some(c)) => SearchContext::for_command(&c.program_path),
        (Target::Command(_), None) => unreachable!("a command target always has a child"),
    };
    // Python probes are set from inside the interpreter (`python_probes`), not by uprobes.
    let mut specs: Vec<_> = opts
        .probes
        .iter()
        .filter(|s| !s.is_python())
        .cloned()
        .collect();
    let breaks = opts.stops.as_ref().map_or(&[][..], |s| &s.breaks[..]);
    specs.extend(breaks.iter().map(|b| b.spec.clone()));
    let mut probes = ProbeSet::resolve(&specs, &ctx)?;
    probes.keep_launch_stacks(opts.gpu_trace);
    if opts.memory {
        probes.trace_torch_memory();
    }
    let heap_sampling = opts.memory && opts.malloc_sample_bytes.is_some();
    if opts.packs || heap_sampling {
        let mut skip: Vec<&'static str> = Vec::new();
        if !opts.packs {
            // --no-packs --memory=malloc: the allocator's probes only.
            skip.extend(
                packs::PACKS
                    .iter()
                    .map(|p| p.name)
                    .filter(|&n| n != packs::MALLOC_PACK),
            );
        }
        if !opts.gpu_packs {
            skip.extend_from_slice(packs::GPU_PACKS);
        }
        if opts.llm.is_none() {
            skip.push(packs::OPENSSL_PACK);
        }
        if !heap_sampling {
            skip.push(packs::MALLOC_PACK);
        }
        probes.enable_packs(&ctx, &skip);
        for pack in packs::PACKS {
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
        off_cpu_event_min: opts.off_cpu_event_min,
        // A user's probes are attached to each new process at once; the packs' libraries
        // (CUDA...) take far longer to load than the agent's 100 ms poll, so for them
        // lifecycle records wait for the batch and short-lived children cost nothing.
        lifecycle_wakeup: !specs.is_empty(),
        capture_io: opts.capture_io,
        cpu: opts.cpu,
        records_ring_bytes: opts.records_ring_bytes,
        unwind_rows: opts.unwind_rows,
        python_frames: opts.python_frames,
        plain_http: opts.plain_http && opts.packs && opts.llm.is_some(),
        small_rings: opts.small_rings,
        stop_on_api_error: opts.stops.as_ref().is_some_and(|s| s.api_error),
        memory: opts.memory,
        page_fault_period: crate::sampler::DEFAULT_PAGE_FAULT_PERIOD,
        heap_sample_bytes: opts
            .malloc_sample_bytes
            .unwrap_or(DEFAULT_MALLOC_SAMPLE_BYTES)
            .clamp(1, u32::MAX as u64) as u32,
        heap_sampling,
    };
    let mut sampler = Sampler::start(&sampler_opts, tracefs)?;
    if let Some(stops) = &opts.stops {
        let table = probes.table();
        for b in &stops.breaks {
            for (id, _) in table
                .iter()
                .enumerate()
                .filter(|(_, p)| p.spec == b.spec.text)
            {
                sampler.set_stop_rule(id as u32, b.rule)?;
            }
        }
        sampler.set_stop_budget(stops.max)?;
        log::info!(
            "stopping the process {}; at most {} time(s), resumed after {} unless `modelprobe resume PID` comes first",
            stops.describe(),
            stops.max,
            humantime::format_duration(stops.timeout)
        );
    }
    match (&opts.target, child) {
        (Target::Pid(pid), _) => {
            for root in std::iter::once(*pid).chain(opts.more_pids.iter().copied()) {
                // Python frames from the first sample: the interpreter is found before
                // sampling.
                sampler.set_python(root, || collector.python_entry(root));
                sampler.add_target(root)?;
                if root == *pid {
                    probes.attach_to(&mut sampler, root)?;
                } else if let Err(e) = probes.attach_to(&mut sampler, root) {
                    log::warn!("probes not attached to {root}: {e}");
                }
                for d in target::descendants(root) {
                    sampler.set_python(d, || collector.python_entry(d));
                    sampler.add_target(d)?;
                    if let Err(e) = probes.attach_to(&mut sampler, d) {
                        log::warn!("probes not attached to child {d}: {e}");
                    }
                }
            }
        }
        (Target::Command(_), Some(c)) => {
            // Its tables are published at the exec record; built now, they are ready then even
            // if the command's threads leave the agent little CPU.
            sampler.prebuild_unwind(&c.program_path);
            sampler.add_gated_target(c.pid)?;
            // Uprobes live on files: attached now, they fire from the command's first call.
            probes.attach_to(&mut sampler, c.pid)?;
        }
        (Target::Command(_), None) => unreachable!("a command target always has a child"),
    }
    if probes.function_count() > 0 {
        log::info!("probing {} function(s)", probes.function_count());
    }
    Ok((sampler, probes))
}

/// Lets a gated child that will never be released exit, and reaps it.
fn abandon(child: Option<GatedChild>) {
    if let Some(c) = child {
        let pid = c.pid;
        drop(c); // closes the gate: the child exits without running the command
        while target::try_wait(pid).is_none() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
