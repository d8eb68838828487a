//! The `modelprobe` command line: parses options, wires signals and logging, calls the library.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{atomic::AtomicUsize, Arc},
    time::{Duration, SystemTime},
};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use modelprobe::{
    error::exit_code,
    probes::ProbeSpec,
    report,
    session::{self, RecordOptions, Target},
    trace::Recording,
};

const EXIT_CODES: &str = "\
Exit codes:
  0    recording finished (attach); for run, the command's own exit status
  1    unexpected failure
  2    bad usage or an option out of range
  3    not enough privilege (needs root, or CAP_BPF + CAP_PERFMON)
  4    the target pid does not exist or has already exited
  5    the kernel lacks BPF, BTF, perf events or the scheduler tracepoints
  6    the output directory cannot be written
  127  run: the command cannot be found or executed";

/// Profile an unmodified process: CPU flame graphs, off-CPU time, and a recording to read back.
#[derive(Parser)]
#[command(name = "modelprobe", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only print errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Profile a running process (and the children it starts) until --duration or Ctrl-C.
    #[command(
        after_help = "Examples:\n  sudo modelprobe attach --pid 4242 --duration 30s\n  sudo modelprobe attach --pid 4242 --off-cpu -o /tmp/server-profile"
    )]
    Attach {
        /// Process id to profile.
        #[arg(short, long)]
        pid: u32,
        /// Stop after this long (`30s`, `2m`, `1h`); default: until Ctrl-C or the process exits.
        #[arg(short, long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        #[command(flatten)]
        record: RecordArgs,
    },
    /// Launch a command and profile its whole life, children included; exits with its status.
    #[command(
        after_help = "Examples:\n  sudo modelprobe run -- python3 serve.py --port 8000\n  sudo modelprobe run --off-cpu -o out -- ./llama-cli -m model.gguf -p hi"
    )]
    Run {
        #[command(flatten)]
        record: RecordArgs,
        /// The command and its arguments (after `--`).
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<OsString>,
    },
    /// Show where --probe specs would attach in a process (file, function, offset), without
    /// attaching anything.
    #[command(
        after_help = "Example:\n  modelprobe probes --pid 4242 --probe 'libllama.so:llama_*' --probe libc.so.6:malloc"
    )]
    Probes {
        /// Process to resolve the specs against.
        #[arg(short, long)]
        pid: u32,
        /// TARGET:SYMBOL[@N] specs, as for attach and run.
        #[arg(long = "probe", value_name = "SPEC", value_parser = parse_probe)]
        probes: Vec<ProbeSpec>,
    },
    /// Print the summary of a recording made earlier (a directory or its recording.json).
    Report {
        /// Output directory of an earlier attach or run.
        path: PathBuf,
        /// Rows in the top-function tables.
        #[arg(long, default_value_t = 15)]
        top: usize,
    },
}

#[derive(Args)]
struct RecordArgs {
    /// CPU samples per second on each CPU.
    #[arg(short = 'F', long = "freq", default_value_t = 99, value_name = "HZ")]
    freq: u64,
    /// Also record where threads block (sleep, locks, I/O, GPU waits), weighted by time
    /// blocked: offcpu-flamegraph.svg.
    #[arg(long)]
    off_cpu: bool,
    /// Record a span for every call of a function: TARGET:SYMBOL[@N], where TARGET is a binary
    /// or library (path or file name, e.g. libllama.so), SYMBOL a function name or glob
    /// (handle_*), and @N keeps its first N integer arguments (max 6). Repeatable.
    #[arg(long = "probe", value_name = "SPEC", value_parser = parse_probe)]
    probes: Vec<ProbeSpec>,
    /// Do not switch on the built-in probe packs (CUDA runtime and driver APIs) when their
    /// libraries are in the target.
    #[arg(long)]
    no_packs: bool,
    /// Do not capture the target's stdout/stderr or its model-file opens.
    #[arg(long)]
    no_logs: bool,
    /// Size of the ring buffer for spans, events and logs, in KiB (a power of two). Raise it if
    /// the summary reports lost records.
    #[arg(long, default_value_t = 4096, value_name = "KIB")]
    ring_buffer_kib: u32,
    /// Output directory [default: ./modelprobe-<target>-<time>].
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Rows in the summary's top-function tables.
    #[arg(long, default_value_t = 10)]
    top: usize,
}

fn parse_probe(s: &str) -> Result<ProbeSpec, String> {
    ProbeSpec::parse(s).map_err(|e| e.to_string())
}

fn default_output(label: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "-");
    PathBuf::from(format!("modelprobe-{label}-{stamp}"))
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(
        env_logger::Env::default().filter_or("MODELPROBE_LOG", format!("warn,modelprobe={level}")),
    )
    .format(|buf, record| {
        use std::io::Write;
        match record.level() {
            log::Level::Info => writeln!(buf, "modelprobe: {}", record.args()),
            level => writeln!(
                buf,
                "modelprobe: {}: {}",
                level.as_str().to_lowercase(),
                record.args()
            ),
        }
    })
    .init();
}

fn register_signals() -> anyhow::Result<Arc<AtomicUsize>> {
    let stop = Arc::new(AtomicUsize::new(0));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_usize(sig, Arc::clone(&stop), sig as usize)
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

fn record(
    target: Target,
    label: &str,
    duration: Option<Duration>,
    args: RecordArgs,
) -> anyhow::Result<i32> {
    let output = args.output.unwrap_or_else(|| default_output(label));
    let mut opts = RecordOptions::new(target, output);
    opts.frequency_hz = args.freq;
    opts.duration = duration;
    opts.off_cpu = args.off_cpu;
    opts.probes = args.probes;
    opts.capture_io = !args.no_logs;
    opts.packs = !args.no_packs;
    opts.records_ring_bytes = args.ring_buffer_kib.saturating_mul(1024);
    opts.stop = register_signals()?;
    let outcome = session::record(&opts)?;
    let rec = &outcome.recording;
    eprint!("{}", report::summary(rec, args.top));
    eprintln!("\nwrote:");
    for f in &outcome.files {
        eprintln!("  {}", f.display());
    }
    Ok(rec.meta.exit_status.unwrap_or(0))
}

fn label_for(command: &[OsString]) -> String {
    command
        .first()
        .map(|c| {
            Path::new(c)
                .file_name()
                .unwrap_or(c)
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_else(|| "run".into())
}

fn real_main(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Attach {
            pid,
            duration,
            record: args,
        } => record(Target::Pid(pid), &pid.to_string(), duration, args),
        Command::Run {
            record: args,
            command,
        } => {
            let label = label_for(&command);
            record(Target::Command(command), &label, None, args)
        }
        Command::Probes { pid, probes } => {
            modelprobe::target::check_pid(pid)?;
            let ctx = modelprobe::probes::SearchContext::for_process(pid);
            for spec in &probes {
                let found = modelprobe::probes::resolve(spec, &ctx)?;
                let mapped = found
                    .first()
                    .is_some_and(|r| ctx.mapped.contains(&r.target_path));
                println!(
                    "{}: {} function(s) in {}{}",
                    spec.text,
                    found.len(),
                    found
                        .first()
                        .map(|r| r.target_path.display().to_string())
                        .unwrap_or_default(),
                    if mapped {
                        ""
                    } else {
                        " (not mapped yet: attached on the file, so a later dlopen is covered)"
                    }
                );
                for r in &found {
                    println!("  {:#010x}  {}", r.file_offset, r.symbol);
                }
            }
            let packs = modelprobe::probes::packs::resolve_packs(&ctx);
            for pack in modelprobe::probes::packs::PACKS {
                let fns: Vec<_> = packs.iter().filter(|p| p.pack == pack.name).collect();
                match fns.first() {
                    Some(first) => {
                        println!(
                            "pack {}: {} function(s) in {}",
                            pack.name,
                            fns.len(),
                            first.resolved.target_path.display()
                        );
                        for p in &fns {
                            println!("  {:#010x}  {}", p.resolved.file_offset, p.resolved.symbol);
                        }
                    }
                    None => println!(
                        "pack {}: not found ({} absent)",
                        pack.name,
                        pack.libraries.join(", ")
                    ),
                }
            }
            Ok(0)
        }
        Command::Report { path, top } => {
            let rec = Recording::read(&path)?;
            print!("{}", report::summary(&rec, top));
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    modelprobe::preflight::restrict_new_files();
    match real_main(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(err) => {
            // Library errors already name their cause in one line; others get anyhow's chain.
            let code = match err.downcast_ref::<modelprobe::Error>() {
                Some(e) => {
                    eprintln!("modelprobe: error: {e}");
                    e.exit_code()
                }
                None => {
                    eprintln!("modelprobe: error: {err:#}");
                    exit_code::FAILURE
                }
            };
            ExitCode::from(code as u8)
        }
    }
}
