//! Recordings with GPU activity whose every total is known, for the tests of each output.
use crate::trace::{
    Frame, FrameKind, GpuDetail, GpuLaunch, GpuOp, GpuSource, Meta, ProbeInfo, Process, Recording,
    Span, Thread,
};

/// `meta.start_ns`; the recording lasts 10 ms.
pub const T0: u64 = 1_000_000;

/// Times below are µs after [`T0`].
fn at(us: u64) -> u64 {
    T0 + us * 1000
}

fn kernel(grid: u32, graph: (u32, u64)) -> GpuDetail {
    GpuDetail::Kernel {
        grid: [grid as i32, 1, 1],
        block: [256, 1, 1],
        registers: 32,
        shared_static: 1024,
        shared_dynamic: 0,
        graph_id: graph.0,
        graph_node: graph.1,
    }
}

fn memcpy(bytes: u64, direction: &str) -> GpuDetail {
    GpuDetail::Memcpy {
        bytes,
        direction: direction.into(),
        peer: None,
        graph_id: 0,
    }
}

/// Two processes (10 `trainer`, threads 10 `main` and 11 `loader`; 20 `server`), two
/// devices. `gpu.ops`, times in µs after [`T0`] (`[a, b)`), with what launched each:
///
/// | op | pid | dev | stream | what | when | launched by (call start) |
/// |---|---|---|---|---|---|---|
/// | 0 | 10 | 0 | - | NVTX `forward` | 50–4200 | - |
/// | 1 | 10 | 0 | - | NVTX `step`, inside `forward` | 100–600 | - |
/// | 2 | 10 | 0 | 7 | kernel `_Z4gemmPfS_i` (`gemm(float*, float*, int)`) | 150–250 | span 0, stack 0 (100) |
/// | 3 | 20 | 0 | 7 | kernel `relu_kernel` | 200–300 | unknown |
/// | 4 | 10 | 0 | 7 | kernel `gemm` | 250–450 | span 1, stack 0 (200) |
/// | 5 | 10 | 0 | 9 | memcpy HtoD, 1 MB | 400–500 | span 2 on thread 11, stack 1 (300) |
/// | 6 | 10 | 0 | 7 | stream synchronize | 460–470 | unknown |
/// | 7 | 10 | 0 | 7 | kernel `relu_kernel` | 1100–1150 | launch record 3 only, thread 11 (1000) |
/// | 8 | 10 | 1 | 3 | memset, 4096 B | 2000–2010 | unknown |
/// | 9 | 10 | 1 | 3 | memcpy DtoH, 0.5 MB | 3000–3100 | unknown |
/// | 10 | 10 | 0 | 7 | kernel `softmax`, graph 11 node 101 | 4050–4080 | span 3, stack 2 (4000) |
/// | 11 | 10 | 0 | 8 | kernel `softmax`, graph 11 node 102 | 4060–4100 | span 3, stack 2 (4000) |
/// | 12 | 10 | 0 | - | NVTX `load`, overlapping the end of `forward` | 4100–4300 | - |
///
/// GPU time: gemm 300 µs, relu 150, softmax 70, copies 200, memset 10: 730 µs. Device 0 is
/// busy 450 µs (150–500, 1100–1150, 4050–4100) of the 10 ms, device 1 110 µs. Queue delays
/// of the joined ops: 50, 50, 100, 100, 50, 60 µs.
pub fn gpu_recording() -> Recording {
    let mut rec = Recording::new(Meta {
        command: "python3 train.py".into(),
        target_pid: 10,
        start_ns: T0,
        end_ns: T0 + 10_000_000,
        frequency_hz: 99,
        ..Meta::default()
    });
    rec.processes = vec![
        Process {
            pid: 10,
            name: "trainer".into(),
            cmdline: None,
        },
        Process {
            pid: 20,
            name: "server".into(),
            cmdline: None,
        },
    ];
    let thread = |pid, tid, name: &str| Thread {
        pid,
        tid,
        name: name.into(),
    };
    rec.threads = vec![
        thread(10, 10, "main"),
        thread(10, 11, "loader"),
        thread(20, 20, "server"),
    ];
    rec.frames = [
        "main",
        "train_step",
        "launch_gemm",
        "copy_weights",
        "run_graph",
    ]
    .iter()
    .map(|n| Frame {
        name: n.to_string(),
        module: Some("train.so".into()),
        file: None,
        line: None,
        kind: FrameKind::User,
        inlined: false,
    })
    .collect();
    rec.stacks = vec![vec![0, 1, 2], vec![0, 3], vec![0, 1, 4]];
    let probe = |function: &str| ProbeInfo {
        spec: format!("libcudart.so:{function}"),
        path: "/usr/lib/libcudart.so.12".into(),
        function: function.into(),
        args: 0,
        pack: Some("cuda-runtime".into()),
    };
    rec.probes = vec![
        probe("cudaLaunchKernel"),
        probe("cudaMemcpyAsync"),
        probe("cudaGraphLaunch"),
    ];
    let span = |probe, tid, start: u64, dur: u64, stack| Span {
        probe,
        pid: 10,
        tid,
        start_ns: at(start),
        end_ns: at(start + dur),
        depth: 0,
        args: vec![],
        ret: Some(0),
        attrs: Default::default(),
        stack: Some(stack),
    };
    rec.spans = vec![
        span(0, 10, 100, 10, 0),
        span(0, 10, 200, 5, 0),
        span(1, 11, 300, 20, 1),
        span(2, 10, 4000, 10, 2),
    ];
    let launch = |tid, t: u64, correlation, api: &str, span| GpuLaunch {
        pid: 10,
        tid,
        time_ns: at(t),
        correlation,
        api: api.into(),
        span,
    };
    rec.gpu.launches = vec![
        launch(10, 105, 1, "cudaLaunchKernel", Some(0)),
        launch(10, 202, 2, "cudaLaunchKernel", Some(1)),
        launch(11, 310, 3, "cudaMemcpyAsync", Some(2)),
        launch(11, 1000, 4, "cudaLaunchKernel", None),
        launch(10, 4005, 5, "cudaGraphLaunch", Some(3)),
    ];
    rec.gpu.names = [
        "_Z4gemmPfS_i",
        "relu_kernel",
        "HtoD",
        "DtoH",
        "memset",
        "stream synchronize",
        "forward",
        "softmax",
        "step",
        "load",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    #[allow(clippy::too_many_arguments)]
    fn op(
        pid: u32,
        device: u32,
        stream: u32,
        (a, b): (u64, u64),
        correlation: u32,
        name: u32,
        launch: (Option<u32>, Option<u32>),
        detail: GpuDetail,
    ) -> GpuOp {
        GpuOp {
            pid,
            device,
            context: device + 1,
            stream,
            start_ns: at(a),
            end_ns: at(b),
            correlation,
            name,
            launch_span: launch.0,
            launch: launch.1,
            detail,
        }
    }
    let none = (None, None);
    rec.gpu.ops = vec![
        op(10, 0, 0, (50, 4200), 0, 6, none, GpuDetail::Range),
        op(10, 0, 0, (100, 600), 0, 8, none, GpuDetail::Range),
        op(
            10,
            0,
            7,
            (150, 250),
            1,
            0,
            (Some(0), Some(0)),
            kernel(128, (0, 0)),
        ),
        op(20, 0, 7, (200, 300), 9, 1, none, kernel(64, (0, 0))),
        op(
            10,
            0,
            7,
            (250, 450),
            2,
            0,
            (Some(1), Some(1)),
            kernel(128, (0, 0)),
        ),
        op(
            10,
            0,
            9,
            (400, 500),
            3,
            2,
            (Some(2), Some(2)),
            memcpy(1_000_000, "HtoD"),
        ),
        op(10, 0, 7, (460, 470), 6, 5, none, GpuDetail::Sync),
        op(
            10,
            0,
            7,
            (1100, 1150),
            4,
            1,
            (None, Some(3)),
            kernel(32, (0, 0)),
        ),
        op(
            10,
            1,
            3,
            (2000, 2010),
            0,
            4,
            none,
            GpuDetail::Memset {
                bytes: 4096,
                value: 0,
            },
        ),
        op(10, 1, 3, (3000, 3100), 0, 3, none, memcpy(500_000, "DtoH")),
        op(
            10,
            0,
            7,
            (4050, 4080),
            5,
            7,
            (Some(3), Some(4)),
            kernel(8, (11, 101)),
        ),
        op(
            10,
            0,
            8,
            (4060, 4100),
            5,
            7,
            (Some(3), Some(4)),
            kernel(8, (11, 102)),
        ),
        op(10, 0, 0, (4100, 4300), 0, 9, none, GpuDetail::Range),
    ];
    rec.gpu.sources = vec![
        GpuSource {
            pid: 10,
            state: "on".into(),
            message: "CUPTI 12.4 from /usr/local/cuda/lib64/libcupti.so.12".into(),
            cupti_version: Some(22),
            dropped: 3,
            drift_ns_per_min: Some(12.5),
            clock_residual_ns: Some(40.0),
        },
        GpuSource {
            pid: 20,
            state: "busy".into(),
            message: "GPU timings off: another tool holds CUPTI (nsys?); stop it and retry".into(),
            cupti_version: None,
            dropped: 0,
            drift_ns_per_min: None,
            clock_residual_ns: None,
        },
    ];
    rec.meta.lost.gpu_records = 3;
    let text = serde_json::to_vec(&rec).unwrap();
    Recording::from_slice(&text).expect("the fixture is a valid recording")
}
/// A recording of `n` GPU ops (kernels of 50 names, with every eighth a copy) over two
/// devices and four streams, each launched by a span with a stack, for scale measurements.
pub fn synthetic_gpu(n: usize) -> Recording {
    let mut rec = gpu_recording();
    rec.gpu.ops.clear();
    rec.gpu.launches.clear();
    rec.spans.clear();
    rec.meta.end_ns = T0 + n as u64 * 2_000 + 1_000_000;
    let first_name = rec.gpu.names.len() as u32;
    rec.gpu
        .names
        .extend((0..50).map(|i| format!("_ZN5torch6native6kernelILi{i}EEEvPfS2_i")));
    for i in 0..n {
        let t = T0 + i as u64 * 2_000;
        rec.spans.push(Span {
            probe: 0,
            pid: 10,
            tid: 10 + (i % 2) as u32,
            start_ns: t,
            end_ns: t + 800,
            depth: 0,
            args: vec![],
            ret: Some(0),
            attrs: Default::default(),
            stack: Some((i % 3) as u32),
        });
        let detail = if i % 8 == 0 {
            memcpy(4096 * (i as u64 % 7 + 1), "HtoD")
        } else {
            kernel(1 + (i % 5) as u32, (0, 0))
        };
        rec.gpu.ops.push(GpuOp {
            pid: 10,
            device: (i % 2) as u32,
            context: 1,
            stream: 7 + (i % 4) as u32,
            start_ns: t + 5_000,
            end_ns: t + 5_000 + 1_500 + (i as u64 % 4) * 100,
            correlation: i as u32 + 1,
            name: if i % 8 == 0 {
                2
            } else {
                first_name + (i % 50) as u32
            },
            launch_span: Some(i as u32),
            launch: None,
            detail,
        });
    }
    rec
}
