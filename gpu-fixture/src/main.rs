//! `mp-gpu-fixture`: a CUDA workload whose every GPU operation is known in advance, for
//! `cargo xtask gpu-check` to hold modelprobe's recording against on a real GPU.
//!
//! Through the driver API (cudarc), with kernels compiled at run time by NVRTC under known
//! names: per iteration, on two streams, a host-to-device copy, `mp_vector_add` (timed with
//! CUDA events), `mp_scale`, a device-to-device copy, a memset and a device-to-host copy; then a
//! CUDA graph of two `mp_scale` nodes launched several times, one cuBLAS SGEMM, and one
//! deliberate API error (a copy from a null device pointer). It prints what it did as one JSON
//! line (`oracle {...}`): counts, bytes, kernel names and its own event timings.
//!
//! Without a CUDA driver or device it says so on stderr and exits with status 3.
use std::{process::ExitCode, sync::Arc};

use cudarc::{
    cublas::{CudaBlas, Gemm, GemmConfig},
    driver::{
        result, sys, CudaContext, CudaFunction, CudaStream, DriverError, LaunchConfig,
        PushKernelArg,
    },
    nvrtc::compile_ptx,
};
use serde_json::json;

/// The kernels, compiled by NVRTC; `extern "C"` keeps their names as written.
const KERNELS: &str = r#"
extern "C" __global__ void mp_vector_add(const float *a, const float *b, float *c, unsigned n) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        c[i] = a[i] + b[i];
}
extern "C" __global__ void mp_scale(float *x, float s, unsigned n) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        x[i] = x[i] * s;
}
"#;

/// Elements per buffer: 128 Mi floats (512 MiB), so that even on an H200 (4.8 TB/s) each
/// `mp_vector_add` runs about 0.3 ms, and the microsecond or two its CUDA events add is well
/// inside the 5% its GPU time is compared at.
const N: usize = 128 << 20;
/// Graph launches; each runs two `mp_scale` nodes.
const GRAPH_LAUNCHES: usize = 4;
/// SGEMM size (square).
const GEMM: i32 = 1024;

fn main() -> ExitCode {
    let iterations: usize = std::env::args()
        .skip_while(|a| a != "--iterations")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    // SAFETY: only tries to load the driver library (cudarc panics on a missing one later).
    if !unsafe { sys::is_culib_present() } {
        eprintln!("mp-gpu-fixture: no CUDA driver (libcuda.so.1) to run on");
        return ExitCode::from(3);
    }
    let ctx = match CudaContext::new(0) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("mp-gpu-fixture: no CUDA device to run on: {e}");
            return ExitCode::from(3);
        }
    };
    match run(&ctx, iterations) {
        Ok(oracle) => {
            println!("oracle {oracle}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mp-gpu-fixture: {e}");
            ExitCode::FAILURE
        }
    }
}

fn launch_config() -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1024, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn scale(
    stream: &Arc<CudaStream>,
    f: &CudaFunction,
    x: &mut cudarc::driver::CudaSlice<f32>,
) -> Result<(), DriverError> {
    let n = N as u32;
    let s = 1.0001f32;
    // SAFETY: mp_scale(float*, float, unsigned) with a buffer of n floats.
    unsafe {
        stream
            .launch_builder(f)
            .arg(x)
            .arg(&s)
            .arg(&n)
            .launch(launch_config())?;
    }
    Ok(())
}

fn run(
    ctx: &Arc<CudaContext>,
    iterations: usize,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    // SAFETY: only this thread uses the context; without tracking, cudarc adds no event
    // records or waits of its own, so the calls made are exactly the ones below.
    unsafe { ctx.disable_event_tracking() };
    let module = ctx.load_module(compile_ptx(KERNELS)?)?;
    let add = module.load_function("mp_vector_add")?;
    let scale_fn = module.load_function("mp_scale")?;
    let a_stream = ctx.new_stream()?;
    let b_stream = ctx.new_stream()?;
    let host: Vec<f32> = (0..N).map(|i| (i % 1000) as f32).collect();
    let mut a = a_stream.alloc_zeros::<f32>(N)?;
    let b = a_stream.clone_htod(&host)?;
    let mut c = a_stream.alloc_zeros::<f32>(N)?;
    let mut d = b_stream.alloc_zeros::<f32>(N)?;
    let mut back = vec![0f32; N];
    a_stream.synchronize()?;
    b_stream.synchronize()?;
    let bytes = (N * 4) as u64;
    let n = N as u32;
    let mut add_ms = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        a_stream.memcpy_htod(&host, &mut a)?;
        // SAFETY: mp_vector_add(const float*, const float*, float*, unsigned), n floats each.
        let events = unsafe {
            a_stream
                .launch_builder(&add)
                .arg(&a)
                .arg(&b)
                .arg(&mut c)
                .arg(&n)
                .record_kernel_launch(sys::CUevent_flags::CU_EVENT_DEFAULT)
                .launch(launch_config())?
        };
        scale(&b_stream, &scale_fn, &mut d)?;
        a_stream.memcpy_dtod(&c, &mut a)?;
        b_stream.memset_zeros(&mut d)?;
        a_stream.memcpy_dtoh(&c, &mut back)?;
        a_stream.synchronize()?;
        b_stream.synchronize()?;
        if let Some((start, end)) = events {
            add_ms.push(start.elapsed_ms(&end)?);
        }
    }
    // A CUDA graph: two mp_scale nodes captured on a stream, launched GRAPH_LAUNCHES times.
    let g_stream = ctx.new_stream()?;
    g_stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
    scale(&g_stream, &scale_fn, &mut d)?;
    scale(&g_stream, &scale_fn, &mut d)?;
    let graph = g_stream
        .end_capture(sys::CUgraphInstantiate_flags(0))?
        .ok_or("the stream capture made no graph")?;
    for _ in 0..GRAPH_LAUNCHES {
        graph.launch()?;
    }
    g_stream.synchronize()?;
    // One cuBLAS SGEMM on buffers already on the device.
    let blas = CudaBlas::new(a_stream.clone())?;
    let m = GEMM as usize;
    let x = a_stream.alloc_zeros::<f32>(m * m)?;
    let y = a_stream.alloc_zeros::<f32>(m * m)?;
    let mut z = a_stream.alloc_zeros::<f32>(m * m)?;
    let cfg = GemmConfig {
        transa: cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N,
        transb: cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N,
        m: GEMM,
        n: GEMM,
        k: GEMM,
        alpha: 1.0f32,
        lda: GEMM,
        ldb: GEMM,
        beta: 0.0f32,
        ldc: GEMM,
    };
    // SAFETY: three m×m buffers of f32, column-major, as the config says.
    unsafe { blas.gemm(cfg, &x, &y, &mut z)? };
    a_stream.synchronize()?;
    // One deliberate API error: a copy from the null device pointer.
    let mut one = [0f32; 1];
    // SAFETY: the copy fails before touching memory (an invalid device pointer).
    let error = unsafe { result::memcpy_dtoh_sync(&mut one, 0) }.err();
    Ok(json!({
        "iterations": iterations,
        "elements": N,
        "kernels": {
            "mp_vector_add": iterations,
            "mp_scale": iterations + 2 * GRAPH_LAUNCHES,
        },
        "graph_kernels": 2 * GRAPH_LAUNCHES,
        "graph_launches": GRAPH_LAUNCHES,
        // Outside the timed loop: the initial copy of `b` (and cuBLAS's own, if any, which
        // are not counted here: its kernels and copies are its business).
        "copies": {
            "HtoD": iterations + 1,
            "DtoD": iterations,
            "DtoH": iterations,
        },
        "copy_bytes": bytes,
        // alloc_zeros sets each new buffer: a, c, d, x, y, z.
        "memsets": iterations + 6,
        "gemm": {"m": GEMM, "n": GEMM, "k": GEMM},
        "error": error.map(|e| e.to_string()),
        "event_ms": {"mp_vector_add": add_ms},
    }))
}
