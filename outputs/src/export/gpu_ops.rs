//! What every output says about a GPU operation, so the timeline, the viewer, the GPU flame
//! graph and the report never disagree: its display name (kernels demangled), its details, the
//! CPU call that launched it, and how long it waited between that call and the GPU.
use std::io::{self, Write};

use serde_json::Value;

use modelprobe_recording::{GpuDetail, GpuOp, GpuTrace};

/// The same demangling the CUDA pack applies to kernel names on the CPU side.
pub use modelprobe_recording::demangle;
/// Which CPU call launched an op: one join, in the recording crate.
pub use modelprobe_recording::launch::{launch_of, launch_stack};

/// Display names of a trace's strings: those that name kernels demangled, the rest as they are.
/// Built once per output, so a million ops cost one demangling per distinct kernel.
pub struct GpuNames {
    labels: Vec<String>,
}

impl GpuNames {
    /// The labels of `gpu.names`.
    pub fn new(gpu: &GpuTrace) -> GpuNames {
        let mut kernel = vec![false; gpu.names.len()];
        for op in &gpu.ops {
            if let (GpuDetail::Kernel { .. }, Some(k)) =
                (&op.detail, kernel.get_mut(op.name as usize))
            {
                *k = true;
            }
        }
        let labels = gpu
            .names
            .iter()
            .zip(kernel)
            .map(|(n, k)| if k { demangle(n) } else { n.clone() })
            .collect();
        GpuNames { labels }
    }

    /// The label of string `index` (`""` out of range).
    pub fn get(&self, index: u32) -> &str {
        self.labels.get(index as usize).map_or("", String::as_str)
    }

    /// What an op is called: the kernel (demangled), `memcpy HtoD`, `memset`, the sync's kind or
    /// the NVTX text.
    pub fn op_name(&self, op: &GpuOp) -> String {
        match &op.detail {
            GpuDetail::Memcpy { direction, .. } => format!("memcpy {direction}"),
            GpuDetail::Memset { .. } => "memset".to_string(),
            _ => self.get(op.name).to_string(),
        }
    }
}

/// True for the operations that occupy the GPU: kernels, copies and memsets (not host-side
/// synchronizations, not NVTX ranges). Their durations are "GPU time".
pub fn is_gpu_work(op: &GpuOp) -> bool {
    matches!(
        op.detail,
        GpuDetail::Kernel { .. } | GpuDetail::Memcpy { .. } | GpuDetail::Memset { .. }
    )
}

/// Bytes moved per nanosecond, which is GB/s (10^9 bytes per second); `None` for an instant op.
pub fn gbps(bytes: u64, ns: u64) -> Option<f64> {
    (ns > 0).then(|| bytes as f64 / ns as f64)
}

/// Writes the op's fixed details as the members of a JSON object, without braces:
/// `"kind":"kernel","grid":[128,1,1],...`. What varies per call (correlation id, queue delay,
/// bandwidth) is left to the caller, so the viewer can share one copy between calls.
pub fn write_details(w: &mut dyn Write, op: &GpuOp) -> io::Result<()> {
    write!(w, "\"kind\":\"{}\"", op.detail.kind_name())?;
    match &op.detail {
        GpuDetail::Kernel {
            grid,
            block,
            registers,
            shared_static,
            shared_dynamic,
            graph_id,
            graph_node,
        } => {
            write!(
                w,
                ",\"grid\":[{},{},{}],\"block\":[{},{},{}],\"registers\":{registers},\"shared_static\":{shared_static},\"shared_dynamic\":{shared_dynamic}",
                grid[0], grid[1], grid[2], block[0], block[1], block[2]
            )?;
            write_graph(w, *graph_id, *graph_node)?;
        }
        GpuDetail::Memcpy {
            bytes,
            direction,
            peer,
            graph_id,
        } => {
            write!(
                w,
                ",\"bytes\":{bytes},\"direction\":{}",
                Value::from(direction.as_str())
            )?;
            if let Some((src, dst)) = peer {
                write!(w, ",\"src_device\":{src},\"dst_device\":{dst}")?;
            }
            write_graph(w, *graph_id, 0)?;
        }
        GpuDetail::Memset { bytes, value } => write!(w, ",\"bytes\":{bytes},\"value\":{value}")?,
        GpuDetail::Sync | GpuDetail::Range => {}
    }
    Ok(())
}

fn write_graph(w: &mut dyn Write, graph_id: u32, graph_node: u64) -> io::Result<()> {
    if graph_id != 0 {
        write!(w, ",\"graph_id\":{graph_id}")?;
    }
    if graph_node != 0 {
        write!(w, ",\"graph_node\":{graph_node}")?;
    }
    Ok(())
}

/// Recordings with GPU activity whose every total is known, for the tests of each output.
#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;
    use modelprobe_recording::fixtures;

    #[test]
    fn kernel_names_are_demangled_once_and_the_rest_kept() {
        let rec = fixtures::gpu_recording();
        let names = GpuNames::new(&rec.gpu);
        assert_eq!(names.get(0), "gemm(float*, float*, int)");
        assert_eq!(names.get(1), "relu_kernel");
        assert_eq!(names.get(6), "forward");
        assert_eq!(names.op_name(&rec.gpu.ops[5]), "memcpy HtoD");
        assert_eq!(demangle("_Z9vectorAddPfi"), "vectorAdd(float*, int)");
    }

    #[test]
    fn details_are_json_members() {
        let rec = fixtures::gpu_recording();
        let text = |op: &GpuOp| {
            let mut out = b"{".to_vec();
            write_details(&mut out, op).unwrap();
            out.push(b'}');
            serde_json::from_slice::<Value>(&out).unwrap()
        };
        assert_eq!(
            text(&rec.gpu.ops[10]),
            serde_json::json!({"kind": "kernel", "grid": [8, 1, 1], "block": [256, 1, 1],
                "registers": 32, "shared_static": 1024, "shared_dynamic": 0,
                "graph_id": 11, "graph_node": 101})
        );
        assert_eq!(
            text(&rec.gpu.ops[5]),
            serde_json::json!({"kind": "memcpy", "bytes": 1_000_000, "direction": "HtoD"})
        );
        assert_eq!(text(&rec.gpu.ops[6]), serde_json::json!({"kind": "sync"}));
        assert_eq!(gbps(1_000_000, 100_000), Some(10.0));
    }

    /// Every GPU output over a million ops:
    /// `cargo test --release -p modelprobe --lib million_gpu_ops -- --ignored --nocapture`.
    #[test]
    #[ignore = "a scale measurement: slow in debug builds"]
    fn million_gpu_ops() {
        let rec = fixtures::synthetic_gpu(1_000_000);
        // MP_GPU_SCALE_OUT keeps the files (to open `view.html` in a browser).
        let keep = std::env::var_os("MP_GPU_SCALE_OUT").map(std::path::PathBuf::from);
        let dir = keep.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("mp-gpu-scale-{}", std::process::id()))
        });
        std::fs::create_dir_all(&dir).unwrap();
        let time = |what: &str, f: &mut dyn FnMut()| {
            let t = std::time::Instant::now();
            f();
            eprintln!("{what}: {:.2} s", t.elapsed().as_secs_f64());
        };
        use crate::export::Exporter;
        let mut cpu_only = rec.clone();
        cpu_only.gpu = Default::default();
        time("timeline without GPU ops", &mut || {
            crate::export::Timeline.export(&cpu_only, &dir).unwrap();
        });
        eprintln!(
            "  {:.1} MiB",
            std::fs::metadata(dir.join("trace.json")).unwrap().len() as f64 / 1048576.0
        );
        time("timeline", &mut || {
            crate::export::Timeline.export(&rec, &dir).unwrap();
        });
        time("GPU flame graph", &mut || {
            crate::export::GpuFlameGraph.export(&rec, &dir).unwrap();
        });
        let mut report = serde_json::Value::Null;
        time("report", &mut || {
            report = crate::report::build(&rec, 20).to_json()
        });
        time("viewer", &mut || {
            crate::view::write_html(&rec, &report, &dir.join("view.html")).unwrap();
        });
        for f in ["trace.json", "view.html"] {
            let len = std::fs::metadata(dir.join(f)).unwrap().len();
            eprintln!("{f}: {:.1} MiB", len as f64 / 1048576.0);
        }
        if keep.is_none() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
