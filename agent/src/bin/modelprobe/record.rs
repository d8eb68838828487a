//! `attach` and `run`: settings from the command line, the environment and the config file,
//! then a recording session.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    sync::{atomic::AtomicUsize, Arc},
    time::{Duration, SystemTime},
};

use anyhow::Context;
use modelprobe::{
    config::{self, Settings},
    report,
    session::{self, RecordOptions},
};

pub use modelprobe::session::Target;

use crate::args::RecordArgs;

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The settings in effect: the file and the environment (the command line is applied by the
/// caller).
pub fn settings(config: Option<&Path>) -> modelprobe::Result<Settings> {
    let file = config::locate(config, &env_var);
    Settings::load(file.as_deref(), &env_var)
}

fn default_output(parent: Option<&Path>, label: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "-");
    let name = format!("modelprobe-{label}-{stamp}");
    parent.map_or_else(|| PathBuf::from(&name), |p| p.join(&name))
}

pub fn register_signals() -> anyhow::Result<Arc<AtomicUsize>> {
    let stop = Arc::new(AtomicUsize::new(0));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_usize(sig, Arc::clone(&stop), sig as usize)
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

fn label_for(target: &Target) -> String {
    match target {
        Target::Pid(pid) => pid.to_string(),
        Target::Command(command) => command
            .first()
            .map(|c: &OsString| {
                Path::new(c)
                    .file_name()
                    .unwrap_or(c)
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_else(|| "run".into()),
    }
}

/// Applies the command line over `s`.
pub fn apply_cli(s: &mut Settings, args: &RecordArgs) {
    s.frequency_hz.cli(args.freq);
    s.off_cpu.cli(args.off_cpu.then_some(true));
    s.level.cli(args.log_level);
    s.sample_rate.cli(args.sample_rate);
    s.output_dir.cli(args.output.clone().map(Some));
}

/// Records `target` and prints the summary; returns the exit status to use.
pub fn record(
    config: Option<&Path>,
    target: Target,
    duration: Option<Duration>,
    gpu: Option<crate::args::AttachGpuArgs>,
    args: RecordArgs,
    quiet: bool,
) -> anyhow::Result<i32> {
    let mut s = settings(config)?;
    apply_cli(&mut s, &args);
    let label = label_for(&target);
    let output = match args.output {
        Some(dir) => dir,
        None => default_output(s.output_dir.value.as_deref(), &label),
    };
    let mut opts = RecordOptions::new(target, output);
    opts.frequency_hz = s.frequency_hz.value;
    opts.cpu = s.cpu.value;
    opts.duration = duration;
    opts.off_cpu = s.off_cpu.value;
    opts.memory = args.memory.is_some() || s.memory.value;
    if args.memory == Some(crate::args::MemoryMode::Malloc) {
        opts.malloc_sample_bytes = Some(args.malloc_sample_bytes);
    }
    opts.min_log_level = s.level.value;
    opts.span_sample_rate = s.sample_rate.value;
    // Tracing off: no packs, no logs, no probes from the file; --probe still counts.
    opts.probes = if s.tracing.value {
        s.probes.value.clone()
    } else {
        Vec::new()
    };
    opts.probes.extend(args.probes);
    if let Some(window) = args.flight_recorder {
        if window.is_zero() {
            anyhow::bail!("--flight-recorder needs a window longer than 0s, e.g. 60s");
        }
        let dump_now = Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGUSR2, dump_now.clone())
            .context("installing the SIGUSR2 handler")?;
        let mut triggers = args.triggers;
        if triggers.is_empty() {
            triggers = vec![
                modelprobe::session::flight::Trigger::ApiError,
                modelprobe::session::flight::Trigger::Signal,
            ];
        }
        opts.flight = Some(modelprobe::session::flight::FlightOptions {
            window,
            triggers,
            max_dumps: args.max_dumps,
            spacing: args.dump_spacing,
            dump_now,
        });
    }
    if !args.breaks.is_empty() || !args.stop_on.is_empty() {
        if args.stop_max == 0 {
            anyhow::bail!("--stop-max must be at least 1 with --break or --stop-on");
        }
        use modelprobe::session::flight::Trigger;
        let mut stops = modelprobe::stop::StopOptions {
            breaks: args.breaks,
            max: args.stop_max,
            timeout: args.stop_timeout,
            ..Default::default()
        };
        for t in args.stop_on {
            match t {
                Trigger::ApiError => stops.api_error = true,
                Trigger::Log(re) => stops.logs.push(re),
                Trigger::Span { function, min } => stops.slow.push((function, min)),
                Trigger::Signal => {}
            }
        }
        opts.stops = Some(stops);
    }
    opts.capture_io = s.tracing.value && !args.no_logs;
    opts.packs = s.tracing.value && !args.no_packs;
    opts.gpu_packs = s.gpu.value;
    opts.plain_http = args.plain_http;
    opts.metrics_addr = args.metrics_addr;
    opts.export_stream = args.export_stream;
    opts.llm = if args.no_llm || !s.llm.value {
        None
    } else {
        let mut prices = s.llm_prices.value.clone();
        if let Some(path) = &args.prices {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the price table {}", path.display()))?;
            prices
                .merge_yaml(&text)
                .with_context(|| format!("in the price table {}", path.display()))?;
        }
        let mut redact = s.llm_redact.value.clone();
        redact.extend(args.redact);
        Some(modelprobe_llm::Options {
            capture_io: args.capture_io || s.llm_capture_io.value,
            redact,
            prices,
            ..modelprobe_llm::Options::default()
        })
    };
    if !s.gpu.value {
        opts.gpu_metrics = None;
    }
    opts.gpu_trace = s.gpu.value && !args.no_gpu_timings;
    if let Some(g) = gpu {
        opts.inject = match (g.gpu, g.no_inject) {
            (true, _) => session::InjectMode::Always,
            (_, true) => session::InjectMode::Never,
            _ => session::InjectMode::IfCuda,
        };
        opts.retract = g.retract;
    }
    opts.records_ring_bytes = args.ring_buffer_kib.saturating_mul(1024);
    opts.off_cpu_event_min = args.off_cpu_event_min;
    opts.python_frames = !args.no_python;
    opts.unwind_rows = if args.frame_pointers {
        0
    } else {
        args.unwind_rows
    };
    opts.stop = register_signals()?;
    opts.progress = !quiet;
    let outcome = session::record(&opts)?;
    let rec = &outcome.recording;
    if !quiet {
        eprint!("{}", report::summary(rec, args.top));
        eprintln!("\nwrote:");
        for f in &outcome.files {
            eprintln!("  {}", f.display());
        }
        eprintln!(
            "next: modelprobe report {0} | modelprobe view {0}",
            opts.output_dir.display()
        );
    }
    Ok(rec.meta.exit_status.unwrap_or(0))
}
