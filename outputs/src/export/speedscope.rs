//! speedscope's file format (`profile.speedscope.json`, https://www.speedscope.app): one sampled
//! profile per thread and kind of sample, CPU first, then off-CPU, then GPU time by launch
//! stack, all in nanoseconds, over one shared frame table. Open it at speedscope.app or with
//! `speedscope FILE`: its left-heavy, sandwich and time-order views per thread.
use std::{
    collections::BTreeMap,
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
};

use serde_json::{json, Value};

use super::{
    gpu_ops::{is_gpu_work, launch_of, launch_stack, GpuNames},
    Exporter,
};
use crate::{
    recording::{FrameKind, Recording, SampleKind},
    Error, Result,
};

/// File name of the speedscope profile.
pub const FILE: &str = "profile.speedscope.json";

/// The speedscope exporter (`modelprobe export DIR --format speedscope`).
pub struct Speedscope;

/// Samples of one profile: (root-first frame indices, weight), in time order.
type Stacks = Vec<(Vec<usize>, u64)>;

/// The speedscope document of `rec`, or `None` when it has no samples or GPU work.
pub fn document(rec: &Recording) -> Option<Value> {
    let mut frames: Vec<Value> = rec
        .frames
        .iter()
        .map(|f| {
            let name = match f.kind {
                FrameKind::Kernel => format!("{} [k]", f.name),
                _ => f.name.clone(),
            };
            let mut v = json!({ "name": name });
            if let Some(file) = f.file.as_ref().or(f.module.as_ref()) {
                v["file"] = json!(file);
            }
            if let Some(line) = f.line {
                v["line"] = json!(line);
            }
            v
        })
        .collect();
    let stack = |s: u32| -> Vec<usize> {
        rec.stacks
            .get(s as usize)
            .map(|s| s.iter().map(|&f| f as usize).collect())
            .unwrap_or_default()
    };
    // (kind order, pid, tid) -> samples.
    let mut profiles: BTreeMap<(u8, u32, u32), Stacks> = BTreeMap::new();
    let period = 1_000_000_000 / rec.meta.frequency_hz.max(1);
    for s in &rec.samples {
        let (order, weight) = match s.kind {
            SampleKind::Cpu => (0, s.weight.saturating_mul(period)),
            SampleKind::OffCpu => (1, s.weight),
        };
        profiles
            .entry((order, s.pid, s.tid))
            .or_default()
            .push((stack(s.stack), weight));
    }
    let names = GpuNames::new(&rec.gpu);
    let mut leaves: BTreeMap<String, usize> = BTreeMap::new();
    for op in rec.gpu.ops.iter().filter(|op| is_gpu_work(op)) {
        let name = names.op_name(op);
        let leaf = *leaves.entry(name.clone()).or_insert_with(|| {
            frames.push(json!({ "name": name, "file": "[gpu]" }));
            frames.len() - 1
        });
        let mut frames_of = launch_stack(rec, op).map(&stack).unwrap_or_default();
        frames_of.push(leaf);
        let tid = launch_of(rec, op).map_or(0, |l| l.tid);
        profiles
            .entry((2, op.pid, tid))
            .or_default()
            .push((frames_of, op.duration_ns()));
    }
    if profiles.is_empty() {
        return None;
    }
    let profiles: Vec<Value> = profiles
        .into_iter()
        .map(|((order, pid, tid), samples)| {
            let what = ["CPU", "off-CPU", "GPU"][order as usize];
            let thread = if tid == 0 {
                rec.process_name(pid)
            } else {
                format!("{} (tid {tid})", rec.thread_name(pid, tid))
            };
            let total = samples
                .iter()
                .map(|(_, w)| *w)
                .fold(0u64, u64::saturating_add);
            let (stacks, weights): (Vec<Vec<usize>>, Vec<u64>) = samples.into_iter().unzip();
            json!({
                "type": "sampled",
                "name": format!("{what}: {thread} · pid {pid}"),
                "unit": "nanoseconds",
                "startValue": 0,
                "endValue": total,
                "samples": stacks,
                "weights": weights,
            })
        })
        .collect();
    Some(json!({
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": { "frames": frames },
        "profiles": profiles,
        "name": format!("modelprobe {}: {}", rec.meta.mode, rec.meta.command),
        "activeProfileIndex": 0,
        "exporter": format!("modelprobe {}", env!("CARGO_PKG_VERSION")),
    }))
}

impl Exporter for Speedscope {
    fn name(&self) -> &'static str {
        "speedscope"
    }

    fn export(&self, rec: &Recording, dir: &Path) -> Result<Vec<PathBuf>> {
        let Some(doc) = document(rec) else {
            return Ok(Vec::new());
        };
        let path = dir.join(FILE);
        let err = |e| Error::io(format!("writing {}", path.display()), e);
        let file = File::create(&path).map_err(err)?;
        serde_json::to_writer(BufWriter::new(file), &doc)
            .map_err(|e| err(std::io::Error::from(e)))?;
        Ok(vec![path])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::fixtures::sample_recording;

    #[test]
    fn a_profile_per_thread_and_kind_over_shared_frames() {
        let mut rec = sample_recording();
        rec.meta.frequency_hz = 100;
        let doc = document(&rec).unwrap();
        let frames = doc["shared"]["frames"].as_array().unwrap();
        assert_eq!(frames[2]["name"], "do_syscall_64 [k]");
        let profiles = doc["profiles"].as_array().unwrap();
        assert_eq!(profiles.len(), 2, "{doc:#}");
        let cpu = &profiles[0];
        assert!(
            cpu["name"].as_str().unwrap().starts_with("CPU: app"),
            "{cpu}"
        );
        // Root first: main, then the leaf; 10 ms a sample at 100 Hz.
        assert_eq!(cpu["samples"], json!([[0, 1], [0, 1], [0, 2]]));
        assert_eq!(cpu["weights"], json!([10_000_000, 10_000_000, 10_000_000]));
        assert_eq!(cpu["endValue"], 30_000_000);
        let off = &profiles[1];
        assert!(off["name"].as_str().unwrap().starts_with("off-CPU"));
        assert_eq!(off["weights"], json!([2_500_000]));
        assert!(document(&crate::recording::Recording::new(Default::default())).is_none());
    }
}
