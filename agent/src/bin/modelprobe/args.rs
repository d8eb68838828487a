//! The command line, as clap structures.
use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use modelprobe::{probes::ProbeSpec, recording::logs::Level};

const EXIT_CODES: &str = "\
Exit codes:
  0    recording finished (attach); for run, the command's own exit status
  1    unexpected failure
  2    bad usage, an option out of range, a bad config file or environment variable
  3    not enough privilege (needs root, or CAP_BPF + CAP_PERFMON)
  4    the target pid does not exist or has already exited
  5    the kernel lacks BPF, BTF, perf events or the scheduler tracepoints
  6    the output directory cannot be written
  127  run: the command cannot be found or executed

Workflow:
  sudo modelprobe run -o out -- CMD     record a command (or: attach --pid N)
  modelprobe report out                 where the time went, spans, errors, logs
  modelprobe analyze out app.log        filter and aggregate recordings and log files
  modelprobe view out                   one HTML file: timeline, flame graphs, tables";

/// Profile an unmodified process: CPU flame graphs, off-CPU time, spans of library calls
/// (CUDA, llama.cpp, any function), events and logs, and a recording to read back.
#[derive(Parser)]
#[command(name = "modelprobe", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only print errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Settings file [default: $MODELPROBE_CONFIG, else /etc/modelprobe/config.yaml if it
    /// exists]; see `modelprobe config show --help`.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        gpu: AttachGpuArgs,
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
    /// Print every thread's stack now, native and Python (like `py-spy dump` or gdb's `thread
    /// apply all bt`): the process is held only while its stacks are copied (a few ms), then
    /// unwound with its CFI and named as a profile's frames are.
    #[command(
        after_help = "Examples:\n  sudo modelprobe stacks --pid 4242\n  sudo modelprobe stacks --pid 4242 --json | jq '.threads[] | {name, top: .frames[0].name}'"
    )]
    Stacks {
        /// The process.
        #[arg(long)]
        pid: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Show native frames under the Python ones too (by default a Python thread's
        /// interpreter frames are left out).
        #[arg(long)]
        native: bool,
    },
    /// Let a process stopped by --break or --stop-on (or any SIGSTOP) go on.
    #[command(after_help = "Example:\n  sudo modelprobe resume 4242")]
    Resume {
        /// The stopped process.
        pid: u32,
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
    /// Tables from a recording: CPU time by function, spans (count, p50/p95/p99, errors), CUDA
    /// launches and copies, tokens/s, events, logs, lost data.
    #[command(
        after_help = "Examples:\n  modelprobe report out\n  modelprobe report out --json | jq '.sections[] | select(.id==\"spans\")'"
    )]
    Report {
        /// Output directory of an earlier attach or run (or its recording.json).
        path: PathBuf,
        /// Rows in the ranked tables.
        #[arg(long, default_value_t = 15)]
        top: usize,
        /// Print the same content as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Filter and summarize recordings and plain log files together: counts per level and
    /// per span, the slowest items, errors grouped by message, a breakdown per input.
    #[command(
        after_help = "Examples:\n  modelprobe analyze out --level WARN\n  modelprobe analyze out server.log --pattern 'cuda|timeout' --since 10s\n  modelprobe analyze run1 run2 --min-duration 50ms --json"
    )]
    Analyze {
        /// Recordings (directories or recording.json) and log files.
        #[arg(required = true, value_name = "INPUT")]
        inputs: Vec<PathBuf>,
        /// Only items at or above this level: ERROR, WARN, INFO or DEBUG.
        #[arg(long, value_parser = parse_level)]
        level: Option<Level>,
        /// Only items lasting at least this long (spans): `1s`, `250ms`.
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        min_duration: Option<Duration>,
        /// Only items whose name or message matches this regular expression.
        #[arg(long, value_name = "REGEX")]
        pattern: Option<String>,
        /// Only items from this time on: a date-time (`2026-11-24 13:00:00`, RFC 3339) or a
        /// duration from each input's start (`30s`).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only items up to this time (same forms as --since).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Rows in the slowest-items and error tables.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// One JSON object per matching item, then a summary object.
        #[arg(long)]
        json: bool,
    },
    /// Write one self-contained HTML file (no network needed) with the timeline, the flame
    /// graphs and the report tables, to open in a browser.
    #[command(after_help = "Example:\n  modelprobe view out && xdg-open out/view.html")]
    View {
        /// Output directory of an earlier attach or run (or its recording.json).
        path: PathBuf,
        /// The HTML file to write [default: DIR/view.html].
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write a recording in a format other tools read. pprof: `cpu.pb.gz` (samples and CPU
    /// nanoseconds), `offcpu.pb.gz` (blocked nanoseconds) and `gpu.pb.gz` (GPU nanoseconds by
    /// launch stack), for `go tool pprof`, Pyroscope, Parca and Grafana, with pid, tid and
    /// thread labels on every sample. speedscope: `profile.speedscope.json`, one profile per
    /// thread and kind of sample, for speedscope.app. otlp: spans (probe spans, LLM calls with
    /// their GenAI attributes), metrics and logs as OTLP/HTTP protobuf bodies in `otlp/`, or
    /// sent to a collector with --endpoint. perfetto: `trace.pftrace` (Perfetto's protobuf
    /// format: threads, spans, GPU streams with flows, LLM calls, counters, CPU samples with
    /// their stacks), which ui.perfetto.dev opens at sizes the JSON timeline cannot.
    #[command(
        after_help = "Examples:\n  modelprobe export out --format pprof && go tool pprof -top out/cpu.pb.gz\n  modelprobe export out --format otlp --endpoint http://localhost:4318\n  modelprobe export out --format memory --at 30s\n  OTEL_EXPORTER_OTLP_HEADERS='x-api-key=...' modelprobe export out --format otlp --endpoint https://otlp.example.com"
    )]
    Export {
        /// Output directory of an earlier attach or run (or its recording.json).
        path: PathBuf,
        /// The format to write.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Where to write the files [default: the recording's directory].
        #[arg(short, long, value_name = "DIR")]
        output: Option<PathBuf>,
        /// otlp: send to this OTLP/HTTP collector (its base URL; /v1/traces, /v1/metrics and
        /// /v1/logs are added) instead of writing files.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// otlp: a header for the collector, NAME=VALUE (repeatable; comma-separated lists
        /// too). OTEL_EXPORTER_OTLP_HEADERS, when set, adds its own. Values are never printed.
        /// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (k=v,...) set resource attributes on
        /// every process's resource, as in any OpenTelemetry SDK.
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// memory: memory in use at this time after the recording's start (`2.5s`) instead
        /// of at its end.
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        at: Option<std::time::Duration>,
    },
    /// Record the processes you choose continuously, window after window, at a low rate: for
    /// a server or a fleet. Each window's recording goes to DIR/window-<ms> (the last --keep
    /// are kept) and, with --endpoint, is pushed as OTLP (--pprof-endpoint: profiles as
    /// pprof); --metrics-addr serves Prometheus metrics for the agent's life. The rules are
    /// checked every second: a process that starts during a window is recorded from then on.
    /// BPF programs are loaded per window and nothing stays attached between windows.
    /// `modelprobe ctl capture` asks it for a deep capture over its control socket.
    /// SIGINT/SIGTERM ends the window in progress (kept) and the agent; SIGHUP reads the
    /// config file's `agent:` rules again.
    #[command(after_help = AGENT_HELP)]
    Agent(AgentArgs),
    /// Talk to a running agent (`modelprobe agent`) over its control socket.
    #[command(subcommand)]
    Ctl(CtlCommand),
    /// Settings: where they come from and what is in effect.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write the GPU library (the CUPTI injection library) and print its path, to set as
    /// CUDA_INJECTION64_PATH in a service's environment: a later `attach --pid` then gets GPU
    /// kernel, copy and sync timings from it. `run` does this by itself.
    #[command(after_help = GPU_LIBRARY_HELP)]
    GpuLibrary {
        /// Folder to write it to [default: /var/lib/modelprobe for root, else
        /// ~/.cache/modelprobe]; must be readable, and not mounted noexec, for the service.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

const GPU_LIBRARY_HELP: &str = "\
Examples:
  sudo modelprobe gpu-library
  # systemd: systemctl edit my-inference.service, then
  #   [Service]
  #   Environment=CUDA_INJECTION64_PATH=/var/lib/modelprobe/libmodelprobe_inject-<...>.so
  # Kubernetes: mount the folder (hostPath) and set the same variable in the container's env.

The library costs one sleeping thread until modelprobe attaches; CUDA loads it at cuInit.";

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print every setting in effect and where it came from (command line > environment >
    /// file > default).
    #[command(after_help = CONFIG_HELP)]
    Show,
}

const CONFIG_HELP: &str = "\
The file (YAML; --config, $MODELPROBE_CONFIG, or /etc/modelprobe/config.yaml):
  tracing:
    enabled: true          # spans, events and logs
    level: INFO            # keep log lines at or above: ERROR, WARN, INFO, DEBUG
    output_dir: /var/tmp/modelprobe
  profiling:
    cpu: true              # sample CPU stacks
    off_cpu: false         # record blocked time
    gpu: true              # trace CUDA, cuBLAS, NCCL calls
    memory: false          # memory by stack (as --memory)
    frequency: 99          # Hz
  sampling:
    rate: 1.0              # fraction of spans kept
  probes:
    - libllama.so:llama_decode@2

Environment (MODELPROBE_-prefixed names win over plain ones):
  ENABLE_TRACING, TRACE_LEVEL, TRACE_OUTPUT_DIR, ENABLE_PROFILING, TRACE_SAMPLE_RATE
Under sudo, pass them with `sudo -E` or `sudo VAR=value modelprobe ...`.";

/// How `attach` gets GPU timings from a process started without preparation.
#[derive(Args, Clone, Copy)]
pub struct AttachGpuArgs {
    /// Load the GPU library into the process now (ptrace; the thread it borrows is held about
    /// a millisecond), even if it has not loaded CUDA yet; fail if that cannot be done. By
    /// default it is loaded into each process of the tree that uses CUDA and lacks it, and a
    /// failure is a warning.
    #[arg(long, conflicts_with = "no_inject")]
    pub gpu: bool,
    /// Never load the GPU library into a running process: GPU timings only where it was set
    /// up at launch (CUDA_INJECTION64_PATH, see `modelprobe gpu-library`).
    #[arg(long)]
    pub no_inject: bool,
    /// Unload the GPU library again when the recording ends (where CUPTI was used it stays,
    /// idle: CUPTI keeps callbacks into it).
    #[arg(long)]
    pub retract: bool,
}

#[derive(Args)]
pub struct RecordArgs {
    /// CPU samples per second on each CPU [default: 99, or the config's profiling.frequency].
    #[arg(short = 'F', long = "freq", value_name = "HZ")]
    pub freq: Option<u64>,
    /// Also record where threads block (sleep, locks, I/O, GPU waits), weighted by time
    /// blocked: offcpu-flamegraph.svg.
    #[arg(long)]
    pub off_cpu: bool,
    /// With --off-cpu: blocks at least this long are drawn one by one on the timeline (at most
    /// 500 a second per CPU); shorter ones are summed by thread and stack in the kernel, so a
    /// busy thread pool costs no lost record. Both count in flame graphs and the report.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION",
          default_value = "1ms")]
    pub off_cpu_event_min: std::time::Duration,
    /// Record a span for every call of a function: TARGET:SYMBOL[@N], where TARGET is a binary
    /// or library (path or file name, e.g. libllama.so), SYMBOL a function name or glob
    /// (handle_*), and @N keeps its first N integer arguments (max 6). Python functions:
    /// py:MODULE:QUALNAME[@args[=N]][@ret] (globs allowed, e.g. py:app.model:Model.predict,
    /// py:__main__:*; @args keeps the repr of the first N arguments (3), @ret the return
    /// value's), CPython 3.12+: set from inside the interpreter with sys.monitoring on those
    /// functions alone (about 0.3-1 us per probed call, nothing on the others; functions of
    /// modules imported later are picked up as they load). Repeatable; added to the config
    /// file's probes.
    #[arg(long = "probe", value_name = "SPEC", value_parser = parse_probe)]
    pub probes: Vec<ProbeSpec>,
    /// Stop the process when this function is called, as a debugger's breakpoint would:
    /// 'TARGET:SYMBOL [if argN OP VALUE] [hit N]' (OP one of == != < <= > >=, compared as
    /// signed integers; stop from the Nth matching call). The thread stops at the call; every
    /// thread's stack is printed; `modelprobe resume PID` (or --stop-timeout) lets it go on.
    #[arg(long = "break", value_name = "SPEC", value_parser = parse_break)]
    pub breaks: Vec<modelprobe::stop::Breakpoint>,
    /// Stop the process at this: `api_error` (a CUDA, cuBLAS or NCCL call that fails, stopped
    /// in the failing thread as the call returns), `log:REGEX` (a line of its output) or
    /// `span:FUNCTION>DURATION` (a probed call that slow; the last two within ~100 ms, from
    /// modelprobe). Repeatable.
    #[arg(long = "stop-on", value_name = "WHAT", value_parser = parse_stop_on)]
    pub stop_on: Vec<modelprobe::session::flight::Trigger>,
    /// A process stopped by --break or --stop-on resumes by itself after this.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "5m")]
    pub stop_timeout: std::time::Duration,
    /// Most stops in one recording (--break and --stop-on together).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub stop_max: u64,
    /// Record memory [default: the config's profiling.memory]: each process's resident,
    /// anonymous, file, shared and swapped MiB once a second; and memory by stack, without a
    /// probe on malloc: the mmap/munmap/mremap/brk syscalls (where the process's memory comes
    /// from) and one page fault in 64 (where it is first touched). Writes memory-inuse.svg,
    /// memory-alloc.svg, memory-faults.svg; `report` names the top holders and leak candidates;
    /// `export --format pprof` a heap profile. --memory=malloc also samples the C library's
    /// malloc/calloc/realloc/free (one allocation per --malloc-sample-bytes allocated, Poisson
    /// like tcmalloc's sampler): the heap by the stack that holds it, at the cost of a probe on
    /// every malloc and free (`cargo xtask bench --only memory` measures it). CUDA allocations
    /// are recorded by the CUDA packs either way; the kernel's OOM kills of a target too.
    #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "syscalls", value_name = "MODE")]
    pub memory: Option<MemoryMode>,
    /// --memory=malloc: mean bytes allocated between two sampled allocations (a sample stands
    /// for this many bytes on average).
    #[arg(long, default_value_t = 512 * 1024, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=1 << 31))]
    pub malloc_sample_bytes: u64,
    /// Flight recorder: keep only the last DURATION of samples, spans, events and logs (memory
    /// follows the window, not the run) and write it to OUTPUT/flight-N-MS/ when a --trigger
    /// fires or modelprobe gets SIGUSR2; recording goes on after each dump.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub flight_recorder: Option<std::time::Duration>,
    /// With --flight-recorder: what writes the window out: api_error, signal (a fatal one),
    /// log:REGEX (a line of the target's output), span:FUNCTION>DURATION (a probed call that
    /// slow). Repeatable [default: api_error and signal].
    #[arg(long = "trigger", value_name = "SPEC", value_parser = parse_trigger, requires = "flight_recorder")]
    pub triggers: Vec<modelprobe::session::flight::Trigger>,
    /// With --flight-recorder: most dumps in one session.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_dumps: u32,
    /// With --flight-recorder: least time between two dumps.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "10s")]
    pub dump_spacing: std::time::Duration,
    /// Do not switch on the built-in probe packs (CUDA runtime and driver, cuBLAS, NCCL,
    /// llama.cpp) when their libraries are in the target, nor the Python ones (PyTorch
    /// nn.Module calls named by module path, transformers generate and tokenizers, vLLM engine
    /// steps) in a `run` of python or an `attach` to a process with PyTorch loaded.
    #[arg(long)]
    pub no_packs: bool,
    /// Do not capture the target's stdout/stderr or its model-file opens.
    #[arg(long)]
    pub no_logs: bool,
    /// Do not read LLM API calls (OpenAI, Anthropic, OpenAI-compatible servers) out of the
    /// target's TLS traffic. By default, once a process maps OpenSSL (or its executable
    /// exports it, as Node's does), the plaintext of its SSL_read/SSL_write calls is parsed in
    /// the agent into calls with model, tokens, time to first token and cost; no payload text
    /// is kept unless --capture-io.
    #[arg(long)]
    pub no_llm: bool,
    /// Keep the prompts (request bodies) and completions of LLM calls in the recording, capped
    /// at 64 KiB each. Headers (Authorization, x-api-key, cookies) are never kept; JSON values
    /// of keys like api_key or password are replaced by [REDACTED], as is what --redact matches.
    #[arg(long)]
    pub capture_io: bool,
    /// Also read LLM calls from plain (unencrypted) HTTP on the target's TCP sockets: an
    /// OpenAI-compatible server on localhost (vLLM, llama.cpp's server, Ollama). Off by
    /// default: it puts tracepoints on every read and write syscall, which every process on
    /// the machine passes through (a map lookup each) and which take time to detach.
    #[arg(long)]
    pub plain_http: bool,
    /// Serve Prometheus metrics on this address while recording (http://ADDR/metrics): CPU
    /// samples and blocked time per process name, span latency histograms per function, LLM
    /// calls, tokens, cost and time to first token per model, and drop counters. E.g.
    /// 127.0.0.1:9464; port 0 picks one (printed).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Stream what happens as JSON lines while recording, for scripts: jsonl:- (stdout) or
    /// jsonl:FILE. One object a line: {"type":"span"} when a probed call returns,
    /// {"type":"llm_call"} when an LLM answer is read, {"type":"event"} for process, thread
    /// and signal events. With `run`, the command's own stdout goes to the same terminal:
    /// prefer a file. (pprof, OTLP, Perfetto: `modelprobe export` on the recording.)
    #[arg(long = "export", value_name = "jsonl:-|jsonl:FILE")]
    pub export_stream: Option<String>,
    /// With --capture-io: also replace what this regular expression matches in captured text
    /// by [REDACTED]. Repeatable.
    #[arg(long, value_name = "REGEX", value_parser = parse_regex)]
    pub redact: Vec<regex::Regex>,
    /// Prices of LLM models, a YAML file (US dollars per million tokens, `prices: {MODEL:
    /// {input: X, output: Y, cached_input: Z}}`, or the `model_pricing:` shape per 1,000
    /// tokens), over the built-in table; also `llm.prices` in the config file.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// No GPU timings from CUPTI: `run` does not set CUDA_INJECTION64_PATH, and the GPU
    /// library is not asked for kernels, copies and syncs (the CUDA probe pack still traces
    /// the calls).
    #[arg(long)]
    pub no_gpu_timings: bool,
    /// Keep only log lines at or above this level: ERROR, WARN, INFO or DEBUG.
    #[arg(long, value_parser = parse_level, value_name = "LEVEL")]
    pub log_level: Option<Level>,
    /// Keep this fraction of each function's spans (0 < F <= 1; spans with errors are kept).
    #[arg(long, value_name = "F", value_parser = modelprobe::config::parse_rate)]
    pub sample_rate: Option<f64>,
    /// Size of the ring buffer for spans, events and logs, in KiB (a power of two). Raise it if
    /// the summary reports lost records.
    #[arg(long, default_value_t = 4096, value_name = "KIB")]
    pub ring_buffer_kib: u32,
    /// Rows of the kernel's unwind table (16 bytes each), shared by every object the targets
    /// map. Raise it if the summary reports objects left out of it.
    #[arg(long, default_value_t = modelprobe_common::unwind::DEFAULT_UNWIND_ROWS, value_name = "ROWS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub unwind_rows: u32,
    /// Walk user stacks by frame pointers only, without the CFI tables: cheaper to set up,
    /// but code built without frame pointers (glibc, libpython, most wheels) loses its callers.
    #[arg(long)]
    pub frame_pointers: bool,
    /// Do not read Python frames: a CPython process's stacks show the interpreter's C
    /// functions (`_PyEval_EvalFrameDefault`) instead of its Python functions. Cheaper per
    /// sample; by default CPython 3.9 to 3.14 have their Python frames merged in.
    #[arg(long)]
    pub no_python: bool,
    /// Output directory [default: <tracing.output_dir or .>/modelprobe-<target>-<time>].
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Rows in the summary's ranked tables.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

fn parse_probe(s: &str) -> Result<ProbeSpec, String> {
    ProbeSpec::parse(s).map_err(|e| e.to_string())
}

/// What `--memory` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MemoryMode {
    /// The mmap/munmap/mremap/brk syscalls and sampled page faults (nothing per malloc).
    Syscalls,
    /// The same, and a sampled heap profile from malloc/calloc/realloc/free.
    Malloc,
}

/// The formats `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// pprof's profile.proto, gzipped: one file per kind of sample.
    Pprof,
    /// speedscope's JSON: one profile per thread and kind of sample.
    Speedscope,
    /// OTLP (OpenTelemetry): spans, metrics and logs, as files or sent with --endpoint.
    Otlp,
    /// Perfetto's protobuf trace: trace.pftrace, for ui.perfetto.dev at any size.
    Perfetto,
    /// Memory flame graphs and folded stacks (--memory; GPU memory from the CUDA packs): in
    /// use at the end (or --at), allocated, page faults, GPU memory in use.
    Memory,
    /// GPU memory as PyTorch's memory snapshot (gpu-memory-snapshot.pickle): open it at
    /// https://pytorch.org/memory_viz.
    TorchMemory,
}

const AGENT_HELP: &str = "Examples:
  sudo modelprobe agent --match '^vllm' --metrics-addr 0.0.0.0:9464
  sudo modelprobe agent --loads libcuda --loads libpython --window 60s --endpoint http://otel-collector:4318
  sudo modelprobe agent --cgroup 'kubepods.*pod' --pprof-endpoint http://pyroscope:4040
  sudo modelprobe ctl capture --pid 4242 --duration 10s

Rules can also live in the config file (reloaded on SIGHUP; the command line adds to them):
  agent:
    match: ['^vllm']
    cgroup: ['kubepods']
    loads: [libcuda]
    window: 60s
    frequency: 19
    keep: 10";

/// `modelprobe agent`'s options.
#[derive(Args)]
pub struct AgentArgs {
    /// Record processes whose name or command line matches this regular expression
    /// (repeatable).
    #[arg(long = "match", value_name = "REGEX", value_parser = parse_regex)]
    pub matches: Vec<regex::Regex>,
    /// Record processes whose cgroup path matches this regular expression: a container, a
    /// Kubernetes pod, a systemd service (repeatable).
    #[arg(long = "cgroup", value_name = "REGEX", value_parser = parse_regex)]
    pub cgroups: Vec<regex::Regex>,
    /// Record processes that map a file whose name contains this (libcuda, libpython;
    /// repeatable).
    #[arg(long, value_name = "LIBRARY")]
    pub loads: Vec<String>,
    /// Length of each window [default: 60s, or agent.window].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub window: Option<std::time::Duration>,
    /// CPU samples per second [default: 19, or agent.frequency].
    #[arg(long, value_name = "HZ")]
    pub freq: Option<u64>,
    /// Also record blocked (off-CPU) time.
    #[arg(long)]
    pub off_cpu: bool,
    /// Do not parse LLM API calls.
    #[arg(long)]
    pub no_llm: bool,
    /// Where the windows' recordings (and captures, under captures/) go.
    #[arg(long, value_name = "DIR", default_value = "modelprobe-agent")]
    pub dir: PathBuf,
    /// How many windows' recordings to keep, older ones removed [default: 10, or
    /// agent.keep].
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// Serve Prometheus metrics here for the agent's life (http://ADDR/metrics).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Push each window's spans, metrics and logs to this OTLP/HTTP collector.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Push each window's CPU, off-CPU and GPU profiles as pprof to this ingest URL
    /// (Pyroscope: http://HOST:4040, posted to /ingest).
    #[arg(long, value_name = "URL")]
    pub pprof_endpoint: Option<String>,
    /// A header for the endpoints, NAME=VALUE (repeatable); OTEL_EXPORTER_OTLP_HEADERS too.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// The control socket `modelprobe ctl` talks to.
    #[arg(long, value_name = "PATH", default_value = modelprobe::continuous::control::DEFAULT_SOCKET)]
    pub control: PathBuf,
    /// Do not listen on a control socket.
    #[arg(long, conflicts_with = "control")]
    pub no_control: bool,
    /// Stop after this many windows (default: until a signal).
    #[arg(long, value_name = "N")]
    pub windows: Option<u64>,
}

/// `modelprobe ctl`.
#[derive(Subcommand)]
pub enum CtlCommand {
    /// Have the agent record one process in depth for a while: CPU and off-CPU stacks at
    /// 99 Hz, every pack's spans, and GPU timings where it uses CUDA (the GPU library is loaded
    /// into it and unloaded after). Waits until the recording is written and prints where.
    #[command(
        after_help = "Example:\n  sudo modelprobe ctl capture --pid 4242 --duration 10s\n  sudo modelprobe report $(sudo modelprobe ctl capture --pid 4242 --duration 10s --print-dir)"
    )]
    Capture {
        /// The process.
        #[arg(long)]
        pid: u32,
        /// For how long (100ms to 1h).
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "10s")]
        duration: std::time::Duration,
        /// Where the recording goes [default: a new folder under the agent's DIR/captures].
        #[arg(short, long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// CPU samples per second.
        #[arg(long, value_name = "HZ")]
        freq: Option<u64>,
        /// Print only the recording's folder (for scripts).
        #[arg(long)]
        print_dir: bool,
        /// The agent's control socket.
        #[arg(long, value_name = "PATH", default_value = modelprobe::continuous::control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

fn parse_trigger(s: &str) -> Result<modelprobe::session::flight::Trigger, String> {
    modelprobe::session::flight::Trigger::parse(s).map_err(|e| e.to_string())
}

fn parse_break(s: &str) -> Result<modelprobe::stop::Breakpoint, String> {
    modelprobe::stop::Breakpoint::parse(s).map_err(|e| e.to_string())
}

fn parse_stop_on(s: &str) -> Result<modelprobe::session::flight::Trigger, String> {
    modelprobe::stop::parse_stop_on(s).map_err(|e| e.to_string())
}

fn parse_regex(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| {
        format!(
            "not a regular expression: {}",
            modelprobe::analyze::regex_problem(&e)
        )
    })
}

fn parse_level(s: &str) -> Result<Level, String> {
    modelprobe::config::parse_level(s)
}
