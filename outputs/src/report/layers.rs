//! The per-layer table of the PyTorch pack: one row per `nn.Module` (by path and class), with
//! its calls, the wall time of those calls (children included), and the GPU time of the work
//! launched while they ran on their thread.
use std::collections::HashMap;

use serde_json::json;

use super::{ms, Section};
use crate::recording::Recording;

/// GPU ns of the work each launch queued, per (pid, tid), in launch-time order, as prefix sums.
struct LaunchTimes {
    by_thread: HashMap<(u32, u32), (Vec<u64>, Vec<u64>)>,
}

impl LaunchTimes {
    fn new(rec: &Recording) -> LaunchTimes {
        let mut gpu_ns: HashMap<u32, u64> = HashMap::new();
        for op in &rec.gpu.ops {
            if let Some(l) = op.launch {
                *gpu_ns.entry(l).or_default() += op.duration_ns();
            }
        }
        let mut rows: HashMap<(u32, u32), Vec<(u64, u64)>> = HashMap::new();
        for (i, l) in rec.gpu.launches.iter().enumerate() {
            let ns = gpu_ns.get(&(i as u32)).copied().unwrap_or(0);
            rows.entry((l.pid, l.tid))
                .or_default()
                .push((l.time_ns, ns));
        }
        let by_thread = rows
            .into_iter()
            .map(|(k, mut v)| {
                v.sort_unstable();
                let times = v.iter().map(|r| r.0).collect();
                let mut sum = 0;
                let prefix = std::iter::once(0)
                    .chain(v.iter().map(|r| {
                        sum += r.1;
                        sum
                    }))
                    .collect();
                (k, (times, prefix))
            })
            .collect();
        LaunchTimes { by_thread }
    }

    /// GPU ns of the work launched on `(pid, tid)` within `[start, end]`.
    fn within(&self, pid: u32, tid: u32, start: u64, end: u64) -> u64 {
        let Some((times, prefix)) = self.by_thread.get(&(pid, tid)) else {
            return 0;
        };
        let a = times.partition_point(|&t| t < start);
        let b = times.partition_point(|&t| t <= end);
        prefix[b] - prefix[a]
    }
}

/// One row per module of the PyTorch pack, slowest first.
pub(super) fn pytorch_layers(rec: &Recording, top: usize) -> Option<Section> {
    let layer_probes: Vec<bool> = rec
        .probes
        .iter()
        .map(|p| p.pack.as_deref() == Some("pytorch"))
        .collect();
    if !layer_probes.iter().any(|&b| b) {
        return None;
    }
    let launches = LaunchTimes::new(rec);
    // probe -> (calls, wall ns, GPU ns)
    let mut rows: HashMap<u32, (u64, u64, u64)> = HashMap::new();
    for s in rec
        .spans
        .iter()
        .filter(|s| layer_probes.get(s.probe as usize) == Some(&true))
    {
        let r = rows.entry(s.probe).or_default();
        r.0 += 1;
        r.1 += s.end_ns.saturating_sub(s.start_ns);
        r.2 += launches.within(s.pid, s.tid, s.start_ns, s.end_ns);
    }
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(&b.0)));
    let mut section = Section::table(
        "pytorch_layers",
        "PyTorch modules (calls, time with children, GPU time of the work they launched)",
        &["module", "calls", "total ms", "mean ms", "GPU ms"],
    );
    let gpu = !rec.gpu.launches.is_empty();
    for (probe, (calls, ns, gpu_ns)) in rows.into_iter().take(top) {
        section.rows.push(vec![
            json!(rec.probes[probe as usize].function),
            json!(calls),
            ms(ns),
            ms(ns / calls.max(1)),
            if gpu { ms(gpu_ns) } else { json!(null) },
        ]);
    }
    Some(section.or_absent("no nn.Module was called while recording"))
}
