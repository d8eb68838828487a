//! GPU time by launch stack: `gpu.folded` and `gpu-flamegraph.svg`.
//!
//! Each kernel, copy and memset is charged, in nanoseconds of GPU time, to the CPU stack of the
//! call that launched it (the `stack` of its launch span), with the kernel (demangled) or
//! `[memcpy HtoD]` / `[memset]` as the leaf: `process;outer;...;inner;kernel NS`. Work whose
//! launch stack is unknown goes under `process;[unknown launch stack]` (then `[thread NAME]`
//! when the launching thread is known), so the graph's total is all the GPU time recorded.
//! Work launched inside PyTorch module calls (the `pytorch` pack's spans) goes under those
//! modules first, outermost first: `process;LM;model (Model);model.layers.0 (Layer);...`.
use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
};

use inferno::flamegraph::{self, color::BasicPalette, Options, Palette};

use super::{
    gpu_ops::{is_gpu_work, launch_of, launch_stack, GpuNames},
    Exporter,
};
use crate::{
    recording::{launch::Enclosing, FrameKind, GpuDetail, Recording},
    Error, Result,
};

/// File name of the folded GPU stacks.
pub const FOLDED_FILE: &str = "gpu.folded";
/// File name of the GPU flame graph.
pub const SVG_FILE: &str = "gpu-flamegraph.svg";
/// The root frame of GPU work launched from an unknown stack.
pub const UNKNOWN_STACK: &str = "[unknown launch stack]";

/// The GPU flame graph exporter: written only when the recording has GPU work.
pub struct GpuFlameGraph;

/// Where one op's time goes: its process, its launch stack or else its launching thread, and
/// its leaf.
#[derive(PartialEq, Eq, Hash)]
struct Key {
    pid: u32,
    /// Probes of the PyTorch module calls it was launched inside, outermost first.
    layers: Vec<u32>,
    stack: Option<u32>,
    thread: Option<u32>,
    leaf: Leaf,
}

#[derive(PartialEq, Eq, Hash)]
enum Leaf {
    Kernel(u32),
    Memcpy(String),
    Memset,
}

/// Folded lines of GPU time (ns) by launch stack, sorted; empty without kernels, copies or
/// memsets.
pub fn gpu_folded(rec: &Recording) -> BTreeMap<String, u64> {
    let mut by_key: HashMap<Key, u64> = HashMap::new();
    let modules = Enclosing::new(rec, |p| {
        rec.probes
            .get(p as usize)
            .is_some_and(|p| p.pack.as_deref() == Some("pytorch"))
    });
    for op in rec.gpu.ops.iter().filter(|op| is_gpu_work(op)) {
        let leaf = match &op.detail {
            GpuDetail::Kernel { .. } => Leaf::Kernel(op.name),
            GpuDetail::Memcpy { direction, .. } => Leaf::Memcpy(direction.clone()),
            _ => Leaf::Memset,
        };
        let stack = launch_stack(rec, op);
        let thread = match stack {
            Some(_) => None,
            None => launch_of(rec, op).map(|l| l.tid),
        };
        let layers = modules
            .of_op(rec, op)
            .into_iter()
            .map(|s| rec.spans[s as usize].probe)
            .collect();
        let key = Key {
            pid: op.pid,
            layers,
            stack,
            thread,
            leaf,
        };
        let w = by_key.entry(key).or_default();
        *w = w.saturating_add(op.duration_ns());
    }
    let names = GpuNames::new(&rec.gpu);
    let mut processes: HashMap<u32, String> = HashMap::new();
    let mut out = BTreeMap::new();
    for (key, ns) in by_key {
        if ns == 0 {
            continue;
        }
        let mut line = processes
            .entry(key.pid)
            .or_insert_with(|| sanitize(&rec.process_name(key.pid)))
            .clone();
        for &probe in &key.layers {
            line.push(';');
            line.push_str(&sanitize(&rec.probes[probe as usize].function));
        }
        match key.stack {
            Some(stack) => {
                for &f in &rec.stacks[stack as usize] {
                    let frame = &rec.frames[f as usize];
                    line.push(';');
                    line.push_str(&sanitize(&frame.name));
                    line.push_str(match frame.kind {
                        FrameKind::Kernel => "_[k]",
                        _ if frame.inlined => "_[i]",
                        FrameKind::Jit => "_[j]",
                        _ => "",
                    });
                }
            }
            None => {
                line.push(';');
                line.push_str(UNKNOWN_STACK);
                if let Some(tid) = key.thread {
                    let name = rec
                        .threads
                        .iter()
                        .find(|t| t.pid == key.pid && t.tid == tid)
                        .map_or_else(|| format!("tid {tid}"), |t| t.name.clone());
                    line.push_str(&format!(";[thread {}]", sanitize(&name)));
                }
            }
        }
        line.push(';');
        match &key.leaf {
            Leaf::Kernel(name) => line.push_str(&sanitize(names.get(*name))),
            Leaf::Memcpy(direction) => line.push_str(&format!("[memcpy {}]", sanitize(direction))),
            Leaf::Memset => line.push_str("[memset]"),
        }
        let w: &mut u64 = out.entry(line).or_default();
        *w = w.saturating_add(ns);
    }
    out
}

/// Frame names must not contain the separators of the format.
fn sanitize(name: &str) -> String {
    name.replace([';', '\n', '\r'], ":")
}

fn render(rec: &Recording, lines: &BTreeMap<String, u64>, path: &Path) -> Result<()> {
    let total: u64 = lines.values().fold(0, |a, &b| a.saturating_add(b));
    let ops = rec.gpu.ops.iter().filter(|op| is_gpu_work(op)).count();
    let mut opts = Options::default();
    opts.title = "GPU time by launch stack".into();
    opts.subtitle = Some(format!(
        "{} (pid {}): {:.3} ms of GPU time in {ops} kernels, copies and memsets",
        rec.meta.command,
        rec.meta.target_pid,
        total as f64 / 1e6
    ));
    opts.count_name = "ns".into();
    opts.colors = Palette::Basic(BasicPalette::Green);
    opts.deterministic = true;
    let err = |e: std::io::Error| Error::io(format!("writing {}", path.display()), e);
    let file = File::create(path).map_err(err)?;
    let text: Vec<String> = lines.iter().map(|(s, n)| format!("{s} {n}")).collect();
    flamegraph::from_lines(
        &mut opts,
        text.iter().map(String::as_str),
        BufWriter::new(file),
    )
    .map_err(err)
}

impl Exporter for GpuFlameGraph {
    fn name(&self) -> &'static str {
        "GPU flame graph"
    }

    fn export(&self, rec: &Recording, dir: &Path) -> Result<Vec<PathBuf>> {
        let lines = gpu_folded(rec);
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let folded = dir.join(FOLDED_FILE);
        let mut text = String::new();
        for (stack, n) in &lines {
            text.push_str(stack);
            text.push(' ');
            text.push_str(&n.to_string());
            text.push('\n');
        }
        std::fs::write(&folded, text)
            .map_err(|e| Error::io(format!("writing {}", folded.display()), e))?;
        let svg = dir.join(SVG_FILE);
        render(rec, &lines, &svg)?;
        Ok(vec![folded, svg])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::fixtures::gpu_recording;

    #[test]
    fn gpu_time_folds_by_launch_stack_with_every_ns_kept() {
        let rec = gpu_recording();
        let folded = gpu_folded(&rec);
        let expected: BTreeMap<String, u64> = [
            (
                "trainer;main;train_step;launch_gemm;gemm(float*, float*, int)",
                300_000,
            ),
            ("trainer;main;copy_weights;[memcpy HtoD]", 100_000),
            ("trainer;main;train_step;run_graph;softmax", 70_000),
            (
                "trainer;[unknown launch stack];[thread loader];relu_kernel",
                50_000,
            ),
            ("trainer;[unknown launch stack];[memset]", 10_000),
            ("trainer;[unknown launch stack];[memcpy DtoH]", 100_000),
            ("server;[unknown launch stack];relu_kernel", 100_000),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(folded, expected);
        let gpu_time: u64 = rec
            .gpu
            .ops
            .iter()
            .filter(|op| is_gpu_work(op))
            .map(|op| op.duration_ns())
            .sum();
        assert_eq!(folded.values().sum::<u64>(), gpu_time);
        assert_eq!(gpu_time, 730_000);
    }

    #[test]
    fn gpu_time_goes_under_the_pytorch_modules_that_launched_it() {
        let folded = gpu_folded(&crate::recording::fixtures::with_a_layer());
        assert_eq!(
            folded.get("trainer;model.layers.0 (Layer);main;train_step;launch_gemm;gemm(float*, float*, int)"),
            Some(&300_000)
        );
        assert!(
            !folded.contains_key("trainer;main;train_step;launch_gemm;gemm(float*, float*, int)")
        );
        assert_eq!(
            folded.values().sum::<u64>(),
            730_000,
            "every ns still counted once"
        );
    }

    #[test]
    fn writes_folded_and_svg_only_with_gpu_work() {
        let dir = std::env::temp_dir().join(format!("mp-gpu-fg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let none = GpuFlameGraph
            .export(&crate::recording::fixtures::sample_recording(), &dir)
            .unwrap();
        assert!(none.is_empty());
        let files = GpuFlameGraph.export(&gpu_recording(), &dir).unwrap();
        assert_eq!(files, [dir.join(FOLDED_FILE), dir.join(SVG_FILE)]);
        let folded = std::fs::read_to_string(&files[0]).unwrap();
        assert!(folded.contains("trainer;main;copy_weights;[memcpy HtoD] 100000\n"));
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("GPU time by launch stack"));
        assert!(svg.contains("gemm(float*, float*, int)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
