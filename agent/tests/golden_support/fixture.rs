//! The fixed recording the golden outputs are made from: one function per section of the
//! recording. Fully deterministic: no BPF, no machine state, no clock, no host name or pid of
//! this machine.
//!
//! Part of the `golden` test (`tests/golden.rs`); kept out of `tests/golden/`, which must hold
//! nothing but expected outputs.
use std::collections::BTreeMap;

use modelprobe::{
    recording::logs::{Level, LogLine, Stream},
    recording::{
        AgentUsage, Counter, Event, EventKind, Frame, FrameKind, GpuDetail, GpuLaunch, GpuOp,
        GpuSource, Lost, Meta, OffCpuStats, ProbeInfo, Process, PythonInterpreter, PythonSummary,
        Recording, Sample, SampleKind, Span, Thread, UnwindSummary,
    },
};
use serde_json::{json, Value};

/// `meta.start_ns`: 5 s of CLOCK_MONOTONIC. The recording lasts 300 ms.
const T0: u64 = 5_000_000_000;

/// CLOCK_MONOTONIC ns `us` microseconds after [`T0`].
fn at(us: u64) -> u64 {
    T0 + us * 1000
}

/// A recording of `python3 serve.py` (pid 100, threads `python3` and `loader`) and its child
/// `worker` (pid 101), with every section filled in.
pub fn golden_recording() -> Recording {
    let mut rec = Recording::new(meta());
    add_processes_and_threads(&mut rec);
    add_frames_and_stacks(&mut rec);
    add_samples(&mut rec);
    add_probes_and_spans(&mut rec);
    add_events(&mut rec);
    add_logs(&mut rec);
    add_counters(&mut rec);
    add_gpu(&mut rec);
    rec
}

/// Session metadata, with fixed stand-ins for everything a real session reads from the machine
/// (version, kernel, host name, wall clock, agent usage) and non-zero lost counters.
fn meta() -> Meta {
    Meta {
        modelprobe_version: "0.0.0-golden".into(),
        mode: "run".into(),
        command: "python3 serve.py --model /models/tiny.gguf".into(),
        target_pid: 100,
        start_ns: T0,
        end_ns: at(300_000),
        start_unix_ms: 1_764_000_000_000,
        frequency_hz: 100,
        off_cpu: true,
        kernel: "6.1.0-golden".into(),
        hostname: "golden-host".into(),
        cpus: 4,
        end_reason: "target-exited".into(),
        exit_status: Some(0),
        lost: Lost {
            cpu_samples: 3,
            off_cpu_events: 1,
            user_stack_errors: 2,
            kernel_stack_errors: 1,
            span_records: 4,
            unmatched_span_returns: 1,
            log_bytes_cut: 120,
            gpu_records: 1,
            ..Lost::default()
        },
        span_sample_rate: None,
        agent: Some(AgentUsage {
            recording_cpu_ns: 45_000_000,
            recording_peak_rss_kib: 20_480,
            total_cpu_ns: 120_000_000,
            peak_rss_kib: 35_840,
        }),
        unwind: Some(UnwindSummary {
            objects: 4,
            rows: 61_234,
            capacity_rows: 2 << 20,
            kernel_bytes: 41_943_040,
            build_ms: 87,
            processes: 2,
            objects_without_info: 1,
            ..UnwindSummary::default()
        }),
        off_cpu_stats: Some(OffCpuStats {
            events: 2,
            summed: 40,
            events_summed: 3,
        }),
        python: Some(PythonSummary {
            interpreters: vec![PythonInterpreter {
                pid: 100,
                version: "3.11".into(),
                object: "python3.11".into(),
            }],
            off: vec![],
            stacks: 19,
            no_thread_state: 1,
            truncated: 1,
            read_errors: 0,
            code_objects: 2,
            unreadable_code: 1,
        }),
        bpf_programs: vec![],
    }
}

fn add_processes_and_threads(rec: &mut Recording) {
    rec.processes = vec![
        Process {
            pid: 100,
            name: "python3".into(),
            cmdline: Some("python3 serve.py --model /models/tiny.gguf".into()),
            exe: None,
            cgroup: None,
        },
        Process {
            pid: 101,
            name: "worker".into(),
            cmdline: None,
            exe: None,
            cgroup: None,
        },
    ];
    let thread = |pid, tid, name: &str| Thread {
        pid,
        tid,
        name: name.into(),
        // The scheduler's count, a little over what the samples say.
        cpu_ns: Some(if pid == tid { 70_000_000 } else { 40_000_000 }),
    };
    rec.threads = vec![
        thread(100, 100, "python3"),
        thread(100, 102, "loader"),
        thread(101, 101, "worker"),
    ];
}

/// Stack indices of [`add_frames_and_stacks`].
mod stack {
    /// main → handle_request → matmul → sgemm (the hot leaf).
    pub const SGEMM: u32 = 0;
    /// main → handle_request → tokenize (inlined).
    pub const TOKENIZE: u32 = 1;
    /// main → handle_request → matmul (self time).
    pub const MATMUL: u32 = 2;
    /// main → py::forward (JIT) → cudaLaunchKernel → an unsymbolized libcuda frame.
    pub const LIBCUDA: u32 = 3;
    /// main → pthread_cond_wait → do_syscall_64 → futex_wait (blocking).
    pub const FUTEX: u32 = 4;
    /// worker_loop → read → ksys_read.
    pub const READ: u32 = 5;
    /// A kernel-only stack.
    pub const KERNEL_ONLY: u32 = 6;
    /// main → py::forward → cudaLaunchKernel: where CUDA calls are made.
    pub const LAUNCH: u32 = 7;
    /// main → serve (Python) → Model.forward (Python) → matmul → sgemm: a native operator
    /// under the Python line that called it.
    pub const PY_SGEMM: u32 = 9;
    /// main → handle_request: the caller of the failed CUDA call.
    pub const REQUEST: u32 = 8;
}

/// Frames of every kind (user with and without source lines, inlined, kernel, JIT, unknown),
/// including names the outputs must escape (`;`, `<`, `>`, `&`).
fn add_frames_and_stacks(rec: &mut Recording) {
    let frame = |name: &str, module: Option<&str>, kind| Frame {
        name: name.into(),
        module: module.map(Into::into),
        file: None,
        line: None,
        kind,
        inlined: false,
    };
    let user = |name, module| frame(name, Some(module), FrameKind::User);
    let kernel = |name| frame(name, Some("[kernel]"), FrameKind::Kernel);
    rec.frames = vec![
        user("main", "python3.11"),
        Frame {
            file: Some("src/serve.rs".into()),
            line: Some(42),
            ..user("serve::handle_request", "libserve.so")
        },
        Frame {
            file: Some("src/tokenize.rs".into()),
            line: Some(7),
            inlined: true,
            ..user("serve::tokenize", "libserve.so")
        },
        user("matmul<f32, &Layout>", "libserve.so"),
        user("sgemm_kernel;avx2", "libopenblas.so.0"),
        kernel("do_syscall_64"),
        kernel("futex_wait"),
        user("pthread_cond_wait", "libc.so.6"),
        frame("py::forward", None, FrameKind::Jit),
        user("cudaLaunchKernel", "libcudart.so.12"),
        frame(
            "[libcuda.so.1+0x1a2b3c]",
            Some("libcuda.so.1"),
            FrameKind::Unknown,
        ),
        user("worker_loop", "worker"),
        user("read", "libc.so.6"),
        kernel("ksys_read"),
        Frame {
            file: Some("/srv/serve.py".into()),
            line: Some(12),
            ..frame("serve (serve.py:12)", None, FrameKind::Python)
        },
        Frame {
            file: Some("/srv/model.py".into()),
            line: Some(30),
            ..frame("Model.forward (model.py:30)", None, FrameKind::Python)
        },
    ];
    rec.stacks = vec![
        vec![0, 1, 3, 4],
        vec![0, 1, 2],
        vec![0, 1, 3],
        vec![0, 8, 9, 10],
        vec![0, 7, 5, 6],
        vec![11, 12, 13],
        vec![5],
        vec![0, 8, 9],
        vec![0, 1],
        vec![0, 14, 15, 3, 4],
    ];
}

/// CPU samples every 10 ms on three threads of two processes (some in the same 100 ms counter
/// bin), and off-CPU intervals, one too short (999 ns) to reach a microsecond.
fn add_samples(rec: &mut Recording) {
    use stack::*;
    let cpu: [(u32, u32, u32); 17] = [
        (100, 100, SGEMM),
        (100, 100, SGEMM),
        (100, 100, TOKENIZE),
        (101, 101, READ),
        (100, 100, SGEMM),
        (100, 100, MATMUL),
        (100, 100, LIBCUDA),
        (100, 102, TOKENIZE),
        (100, 100, SGEMM),
        (101, 101, READ),
        (100, 100, MATMUL),
        (100, 100, TOKENIZE),
        (100, 100, LIBCUDA),
        (100, 100, PY_SGEMM),
        (101, 101, READ),
        (100, 102, SGEMM),
        (100, 100, PY_SGEMM),
    ];
    let mut samples: Vec<Sample> = cpu
        .iter()
        .enumerate()
        .map(|(i, &(pid, tid, stack))| Sample {
            kind: SampleKind::Cpu,
            time_ns: at(10_000 * (i as u64 + 1)),
            pid,
            tid,
            stack,
            weight: 1,
            blocks: None,
        })
        .collect();
    let off = |t_us, pid, tid, stack, ns| Sample {
        kind: SampleKind::OffCpu,
        time_ns: at(t_us),
        pid,
        tid,
        stack,
        weight: ns,
        blocks: None,
    };
    samples.extend([
        off(55_000, 100, 100, FUTEX, 12_500_000),
        off(95_000, 100, 102, FUTEX, 3_000_000),
        off(125_000, 101, 101, READ, 40_000_000),
        off(175_000, 100, 100, KERNEL_ONLY, 999),
        off(205_000, 101, 101, KERNEL_ONLY, 2_000_000),
        // Forty short blocks summed in the kernel: counted, not drawn on the timeline.
        Sample {
            blocks: Some(40),
            ..off(10_000, 100, 102, FUTEX, 4_000_000)
        },
    ]);
    samples.sort_by_key(|s| s.time_ns);
    rec.samples = samples;
}

/// Index of each probe in `rec.probes`.
mod probe {
    pub const HANDLE_REQUEST: u32 = 0;
    pub const LAUNCH: u32 = 1;
    pub const MEMCPY: u32 = 2;
    pub const DECODE: u32 = 3;
}

/// A user probe with two arguments (one call never returns), CUDA calls with decoded
/// attributes (one failing), and llama.cpp decode calls with token counts.
fn add_probes_and_spans(rec: &mut Recording) {
    let info = |spec: &str, path: &str, function: &str, args, pack: Option<&str>| ProbeInfo {
        spec: spec.into(),
        path: path.into(),
        function: function.into(),
        args,
        pack: pack.map(Into::into),
    };
    rec.probes = vec![
        info(
            "libserve.so:handle_request",
            "/opt/serve/libserve.so",
            "handle_request",
            2,
            None,
        ),
        info(
            "libcudart.so:cudaLaunchKernel",
            "/usr/lib/libcudart.so.12",
            "cudaLaunchKernel",
            0,
            Some("cuda-runtime"),
        ),
        info(
            "libcudart.so:cudaMemcpy",
            "/usr/lib/libcudart.so.12",
            "cudaMemcpy",
            0,
            Some("cuda-runtime"),
        ),
        info(
            "libllama.so:llama_decode",
            "/opt/llama/libllama.so",
            "llama_decode",
            0,
            Some("llama.cpp"),
        ),
    ];
    let span = |probe, tid, start_us: u64, dur_us: u64, depth| Span {
        probe,
        pid: 100,
        tid,
        start_ns: at(start_us),
        end_ns: at(start_us + dur_us),
        depth,
        args: vec![],
        ret: Some(0),
        attrs: BTreeMap::new(),
        stack: None,
    };
    let attrs = |pairs: &[(&str, Value)]| -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let kernel = json!("matmul(float*, float*, int)");
    rec.spans = vec![
        Span {
            args: vec![7, 4096],
            ..span(probe::HANDLE_REQUEST, 100, 20_000, 80_000, 0)
        },
        Span {
            attrs: attrs(&[("kernel", kernel.clone()), ("grid", json!([64, 1, 1]))]),
            stack: Some(stack::LAUNCH),
            ..span(probe::LAUNCH, 100, 30_000, 15, 1)
        },
        Span {
            attrs: attrs(&[("bytes", json!(4_194_304)), ("direction", json!("HtoD"))]),
            stack: Some(stack::LAUNCH),
            ..span(probe::MEMCPY, 100, 40_000, 200, 1)
        },
        Span {
            ret: Some(2),
            attrs: attrs(&[
                ("kernel", kernel),
                ("error", json!("cudaErrorMemoryAllocation")),
            ]),
            stack: Some(stack::LAUNCH),
            ..span(probe::LAUNCH, 100, 60_000, 12, 1)
        },
        Span {
            attrs: attrs(&[("phase", json!("prefill")), ("n_tokens", json!(32))]),
            ..span(probe::DECODE, 100, 110_000, 30_000, 0)
        },
        Span {
            attrs: attrs(&[("phase", json!("decode")), ("n_tokens", json!(1))]),
            ..span(probe::DECODE, 100, 145_000, 5_000, 0)
        },
        // Never returned: it ends with the recording.
        Span {
            args: vec![8, 0],
            ret: None,
            end_ns: at(300_000),
            ..span(probe::HANDLE_REQUEST, 102, 150_000, 0, 0)
        },
        Span {
            attrs: attrs(&[("phase", json!("decode")), ("n_tokens", json!(1))]),
            ..span(probe::DECODE, 100, 155_000, 5_000, 0)
        },
    ];
}

/// One event of each kind, in time order; the API error points at its caller's stack.
fn add_events(rec: &mut Recording) {
    let event = |t_us, pid, tid, kind, message: &str, value| Event {
        time_ns: at(t_us),
        pid,
        tid,
        kind,
        message: message.into(),
        value,
        stack: None,
    };
    use EventKind::*;
    rec.events = vec![
        event(5_000, 100, 100, ProcessStart, "forked pid 101", Some(101)),
        event(8_000, 100, 100, ThreadStart, "thread 102", Some(102)),
        event(9_000, 100, 102, ThreadRename, "loader", None),
        event(10_000, 101, 101, Exec, "worker", None),
        event(
            12_000,
            100,
            102,
            ModelLoad,
            "/models/tiny.gguf",
            Some(123_456_789),
        ),
        Event {
            stack: Some(stack::REQUEST),
            ..event(
                60_012,
                100,
                100,
                ApiError,
                "cudaLaunchKernel returned 2 (cudaErrorMemoryAllocation)",
                Some(2),
            )
        },
        event(200_000, 101, 101, Signal, "SIGUSR1", Some(10)),
        event(240_000, 100, 102, ThreadExit, "loader exited", None),
        event(250_000, 101, 101, FatalSignal, "SIGSEGV", Some(11)),
        event(251_000, 101, 101, ProcessExit, "worker exited", None),
    ];
}

/// Lines at every level and one without, on both streams, with characters JSON, HTML and the
/// text report must keep (`"`, `<`, `&`, a tab, non-ASCII).
fn add_logs(rec: &mut Recording) {
    let line = |t_us, pid, stream, level, message: &str| LogLine {
        time_ns: at(t_us),
        pid,
        tid: pid,
        stream,
        level,
        message: message.into(),
    };
    use Stream::*;
    rec.logs = vec![
        line(
            15_000,
            100,
            Stdout,
            Some(Level::Info),
            "INFO:serve:loading model \"tiny\"",
        ),
        line(
            16_000,
            100,
            Stdout,
            Some(Level::Debug),
            "DEBUG:serve:cache=on",
        ),
        line(
            25_000,
            100,
            Stdout,
            None,
            "request 7 accepted\t(queue < 1 & ok)",
        ),
        line(
            62_000,
            100,
            Stderr,
            Some(Level::Error),
            "ERROR:serve:CUDA error: out of memory",
        ),
        line(
            100_000,
            100,
            Stderr,
            Some(Level::Warn),
            "WARNING: retrying on CPU — slower",
        ),
        line(
            249_000,
            101,
            Stderr,
            Some(Level::Fatal),
            "FATAL: worker crashed",
        ),
    ];
}

/// NVML device metrics: utilization and memory of GPU 0.
fn add_counters(rec: &mut Recording) {
    let counter = |name: &str, unit: &str, values: [f64; 3]| Counter {
        name: name.into(),
        unit: unit.into(),
        device: Some(0),
        pid: None,
        points: values
            .iter()
            .enumerate()
            .map(|(i, &v)| (at(100_000 * i as u64), v))
            .collect(),
    };
    rec.counters = vec![
        counter("GPU 0 utilization", "%", [0.0, 87.5, 42.0]),
        counter("GPU 0 memory used", "MiB", [1024.0, 5120.0, 5120.0]),
    ];
}

/// CUPTI activity of pid 100 on device 0: an NVTX range, a kernel and a copy joined to their
/// spans and launch stack, a synchronization, a kernel from a launch record without a span (on
/// the `loader` thread) and a memset launched from nowhere known. Pid 101 was not reached.
fn add_gpu(rec: &mut Recording) {
    rec.gpu.names = [
        "_Z6matmulPfS_i",
        "HtoD",
        "forward",
        "stream synchronize",
        "relu_kernel",
        "memset",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let launch = |tid, t_us, correlation, api: &str, span| GpuLaunch {
        pid: 100,
        tid,
        time_ns: at(t_us),
        correlation,
        api: api.into(),
        span,
    };
    rec.gpu.launches = vec![
        launch(100, 30_005, 1, "cudaLaunchKernel", Some(1)),
        launch(100, 40_002, 2, "cudaMemcpy", Some(2)),
        launch(102, 69_900, 9, "cudaLaunchKernel", None),
    ];
    let op = |stream, (a, b): (u64, u64), correlation, name, detail| GpuOp {
        pid: 100,
        device: 0,
        context: 1,
        stream,
        start_ns: at(a),
        end_ns: at(b),
        correlation,
        name,
        launch_span: None,
        launch: None,
        detail,
    };
    let kernel = |grid| GpuDetail::Kernel {
        grid: [grid, 1, 1],
        block: [256, 1, 1],
        registers: 32,
        shared_static: 1024,
        shared_dynamic: 0,
        graph_id: 0,
        graph_node: 0,
    };
    rec.gpu.ops = vec![
        op(0, (25_000, 100_000), 0, 2, GpuDetail::Range),
        GpuOp {
            launch_span: Some(1),
            launch: Some(0),
            ..op(7, (30_050, 30_550), 1, 0, kernel(64))
        },
        GpuOp {
            launch_span: Some(2),
            launch: Some(1),
            ..op(
                7,
                (40_010, 40_190),
                2,
                1,
                GpuDetail::Memcpy {
                    bytes: 4_194_304,
                    direction: "HtoD".into(),
                    peer: None,
                    graph_id: 0,
                },
            )
        },
        op(7, (40_200, 40_210), 3, 3, GpuDetail::Sync),
        GpuOp {
            launch: Some(2),
            ..op(8, (70_000, 70_100), 9, 4, kernel(16))
        },
        op(
            8,
            (80_000, 80_010),
            10,
            5,
            GpuDetail::Memset {
                bytes: 65_536,
                value: 0,
            },
        ),
    ];
    rec.gpu.sources = vec![
        GpuSource {
            pid: 100,
            state: "on".into(),
            message: "CUPTI 12.4 from /usr/local/cuda/lib64/libcupti.so.12".into(),
            cupti_version: Some(22),
            dropped: 1,
            drift_ns_per_min: Some(3.5),
            clock_residual_ns: Some(20.0),
        },
        GpuSource {
            pid: 101,
            state: "not-injected".into(),
            message: "GPU timings off: the injection library is not in this process".into(),
            cupti_version: None,
            dropped: 0,
            drift_ns_per_min: None,
            clock_residual_ns: None,
        },
    ];
}
