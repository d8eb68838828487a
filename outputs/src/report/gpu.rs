//! The report's GPU sections, from what CUPTI recorded: kernels by GPU time, copies and memsets
//! with their bandwidth, how busy each device was, how long work waited between its launch
//! call and the GPU, and what became of GPU tracing in each process.
//!
//! "GPU time" is the summed duration of kernels, copies and memsets (the GPU flame graph's
//! total); "busy" time is the union of their intervals on a device, so overlapping work on
//! several streams counts once.
use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::{ms, quantile, round, Section};
use crate::{
    export::gpu_ops::{gbps, is_gpu_work, launch_of, GpuNames},
    recording::{GpuDetail, GpuOp, Recording},
};

fn us(ns: f64) -> Value {
    round(ns / 1e3, 2)
}

fn pct(n: u64, total: u64) -> Value {
    round(
        if total == 0 {
            0.0
        } else {
            100.0 * n as f64 / total as f64
        },
        1,
    )
}

fn add(total: &mut u64, x: u64) {
    *total = total.saturating_add(x);
}

/// Why a GPU section has nothing: GPU tracing was not attempted, was off everywhere, or was
/// on and saw none of `what`.
fn absent_reason(rec: &Recording, what: &str) -> String {
    let sources = &rec.gpu.sources;
    let on = sources.iter().filter(|s| s.state == "on").count();
    if sources.is_empty() {
        format!("no {what} in this recording (GPU timings come from CUPTI, which was not active)")
    } else if on == 0 {
        format!(
            "no {what}: GPU tracing was off in every process ({}); see \"GPU tracing\"",
            sources[0].message
        )
    } else {
        format!(
            "no {what} recorded (GPU tracing was on in {on} of {} processes)",
            sources.len()
        )
    }
}

/// GPU time of kernels, copies and memsets, summed.
pub(super) fn gpu_time(rec: &Recording) -> u64 {
    rec.gpu
        .ops
        .iter()
        .filter(|op| is_gpu_work(op))
        .fold(0, |a, op| a.saturating_add(op.duration_ns()))
}

/// Kernels by total GPU time.
pub(super) fn kernels(rec: &Recording, top: usize) -> Section {
    let (id, title) = ("gpu_kernels", "GPU kernels");
    let mut by_name: HashMap<u32, (u64, u64, u64)> = HashMap::new();
    for op in &rec.gpu.ops {
        if let GpuDetail::Kernel { .. } = op.detail {
            let e = by_name.entry(op.name).or_default();
            e.0 += 1;
            add(&mut e.1, op.duration_ns());
            e.2 = e.2.max(op.duration_ns());
        }
    }
    if by_name.is_empty() {
        return Section::absent(id, title, absent_reason(rec, "GPU kernel timings"));
    }
    let names = GpuNames::new(&rec.gpu);
    let total = gpu_time(rec);
    let mut rows: Vec<(&str, (u64, u64, u64))> = by_name
        .into_iter()
        .map(|(n, v)| (names.get(n), v))
        .collect();
    rows.sort_by(|a, b| (b.1 .1, a.0).cmp(&(a.1 .1, b.0)));
    let mut s = Section::table(
        id,
        title,
        &[
            "% of GPU time",
            "total ms",
            "calls",
            "mean us",
            "max us",
            "kernel",
        ],
    );
    for (name, (calls, ns, max)) in rows.into_iter().take(top) {
        s.rows.push(vec![
            pct(ns, total),
            ms(ns),
            json!(calls),
            us(ns as f64 / calls as f64),
            us(max as f64),
            json!(name),
        ]);
    }
    s
}

/// Copies by direction, then memsets: count, bytes, time and bandwidth.
pub(super) fn copies(rec: &Recording) -> Section {
    let (id, title) = ("gpu_memcpy", "GPU memory copies and memsets");
    // kind -> (count, bytes, ns)
    let mut by_kind: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for op in &rec.gpu.ops {
        let (kind, bytes) = match &op.detail {
            GpuDetail::Memcpy {
                bytes, direction, ..
            } => (format!("memcpy {direction}"), *bytes),
            GpuDetail::Memset { bytes, .. } => ("memset".to_string(), *bytes),
            _ => continue,
        };
        let e = by_kind.entry(kind).or_default();
        e.0 += 1;
        add(&mut e.1, bytes);
        add(&mut e.2, op.duration_ns());
    }
    if by_kind.is_empty() {
        return Section::absent(id, title, absent_reason(rec, "GPU copies or memsets"));
    }
    let mut s = Section::table(
        id,
        title,
        &["kind", "count", "bytes", "MiB", "total ms", "GB/s"],
    );
    for (kind, (n, bytes, ns)) in by_kind {
        s.rows.push(vec![
            json!(kind),
            json!(n),
            json!(bytes),
            round(bytes as f64 / 1048576.0, 2),
            ms(ns),
            gbps(bytes, ns).map_or(Value::Null, |g| round(g, 3)),
        ]);
    }
    s
}

/// Length of the union of intervals given in start order.
#[derive(Default)]
struct Union {
    ops: u64,
    busy: u64,
    open: Option<(u64, u64)>,
}

impl Union {
    fn add(&mut self, start: u64, end: u64) {
        self.ops += 1;
        match &mut self.open {
            Some((_, e)) if start <= *e => *e = (*e).max(end),
            open => {
                if let Some((s, e)) = open.replace((start, end)) {
                    self.busy = self.busy.saturating_add(e - s);
                }
            }
        }
    }

    fn total(&self) -> u64 {
        let open = self.open.map_or(0, |(s, e)| e - s);
        self.busy.saturating_add(open)
    }
}

/// Busy time per device (the union of its kernels, copies and memsets) over the recording, then
/// per stream, busiest first (at most `top` per device).
pub(super) fn utilization(rec: &Recording, top: usize) -> Section {
    let (id, title) = (
        "gpu_utilization",
        "GPU busy time (kernels, copies, memsets)",
    );
    let mut work: Vec<&GpuOp> = rec.gpu.ops.iter().filter(|op| is_gpu_work(op)).collect();
    if work.is_empty() {
        return Section::absent(
            id,
            title,
            absent_reason(rec, "GPU kernels, copies or memsets"),
        );
    }
    work.sort_by_key(|op| op.start_ns);
    // The window: the recording, or the GPU work itself when the recording has no length.
    let (t0, t1) = if rec.duration_ns() > 0 {
        (rec.meta.start_ns, rec.meta.end_ns)
    } else {
        let end = work.iter().map(|op| op.end_ns).max().unwrap_or(0);
        (work[0].start_ns, end)
    };
    let mut devices: BTreeMap<u32, Union> = BTreeMap::new();
    let mut streams: HashMap<(u32, u32, u32), Union> = HashMap::new();
    for op in work {
        let (a, b) = (op.start_ns.clamp(t0, t1), op.end_ns.clamp(t0, t1));
        devices.entry(op.device).or_default().add(a, b);
        streams
            .entry((op.device, op.pid, op.stream))
            .or_default()
            .add(a, b);
    }
    let window = t1 - t0;
    let mut s = Section::table(id, title, &["device", "stream", "ops", "busy ms", "busy %"]);
    for (device, u) in &devices {
        let busy = u.total();
        s.rows.push(vec![
            json!(format!("GPU {device}")),
            json!("all"),
            json!(u.ops),
            ms(busy),
            pct(busy, window),
        ]);
        let mut own: Vec<(u32, u32, u64, u64)> = streams
            .iter()
            .filter(|((d, _, _), _)| d == device)
            .map(|(&(_, pid, stream), u)| (pid, stream, u.ops, u.total()))
            .collect();
        own.sort_by(|a, b| (b.3, a.0, a.1).cmp(&(a.3, b.0, b.1)));
        for (pid, stream, ops, busy) in own.into_iter().take(top) {
            s.rows.push(vec![
                json!(format!("GPU {device}")),
                json!(format!("{stream} (pid {pid})")),
                json!(ops),
                ms(busy),
                pct(busy, window),
            ]);
        }
    }
    s
}

/// Time from the launching call's start to the GPU start, per kind of work.
pub(super) fn queue_delay(rec: &Recording) -> Section {
    let (id, title) = (
        "gpu_queue_delay",
        "GPU queue delay (launch call to GPU start)",
    );
    let mut by_kind: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut work = 0;
    for op in rec.gpu.ops.iter().filter(|op| is_gpu_work(op)) {
        work += 1;
        if let Some(l) = launch_of(rec, op) {
            by_kind
                .entry(op.detail.kind_name())
                .or_default()
                .push(l.queue_delay_ns(op));
        }
    }
    if work == 0 {
        return Section::absent(
            id,
            title,
            absent_reason(rec, "GPU kernels, copies or memsets"),
        );
    }
    if by_kind.is_empty() {
        return Section::absent(
            id,
            title,
            format!("none of the {work} GPU operations is joined to the CPU call that launched it (needs the CUDA probe pack's spans or the injection library's launch records)"),
        );
    }
    let all: Vec<i64> = by_kind.values().flatten().copied().collect();
    let mut s = Section::table(
        id,
        title,
        &["kind", "ops", "of", "p50 us", "p99 us", "max us"],
    );
    let mut row = |kind: &str, mut d: Vec<i64>, of: usize| {
        d.sort_unstable();
        s.rows.push(vec![
            json!(kind),
            json!(d.len()),
            json!(of),
            us(quantile(&d, 0.5) as f64),
            us(quantile(&d, 0.99) as f64),
            us(*d.last().unwrap_or(&0) as f64),
        ]);
    };
    let count = |kind: &str| {
        rec.gpu
            .ops
            .iter()
            .filter(|op| is_gpu_work(op) && op.detail.kind_name() == kind)
            .count()
    };
    for (kind, d) in by_kind {
        row(kind, d, count(kind));
    }
    row("all", all, work);
    s
}

/// What GPU tracing did in each process CUDA was found in, with CUPTI's own counters.
pub(super) fn sources(rec: &Recording) -> Section {
    let (id, title) = ("gpu_sources", "GPU tracing");
    if rec.gpu.sources.is_empty() {
        return Section::absent(
            id,
            title,
            "no CUDA process was reached by the GPU tracer (none loaded CUDA, or GPU tracing is off)",
        );
    }
    let mut s = Section::table(
        id,
        title,
        &[
            "pid",
            "process",
            "state",
            "CUPTI",
            "dropped",
            "drift ns/min",
            "residual ns",
            "message",
        ],
    );
    for src in &rec.gpu.sources {
        s.rows.push(vec![
            json!(src.pid),
            json!(rec.process_name(src.pid)),
            json!(src.state),
            json!(src.cupti_version),
            json!(src.dropped),
            src.drift_ns_per_min.map_or(Value::Null, |d| round(d, 1)),
            src.clock_residual_ns.map_or(Value::Null, |d| round(d, 0)),
            json!(src.message),
        ]);
    }
    s
}

/// True when the recording shows the process used CUDA: a call into a GPU pack's library was
/// traced, or GPU tracing reached a process (CUPTI records or a tracer state).
pub(super) fn used_cuda(rec: &Recording) -> bool {
    let gpu_probe = |probe: u32| {
        rec.probes
            .get(probe as usize)
            .is_some_and(|p| p.is_gpu_pack())
    };
    !rec.gpu.is_empty() || rec.spans.iter().any(|s| gpu_probe(s.probe))
}

/// For a process that used no CUDA, the GPU sections with nothing in them become one line
/// (a section with data, such as device metrics from NVML, stays).
pub(super) fn fold_unused(rec: &Recording, sections: Vec<Section>) -> Vec<Section> {
    if used_cuda(rec) {
        return sections;
    }
    let mut kept: Vec<Section> = sections
        .into_iter()
        .filter(|s| s.absent.is_none())
        .collect();
    kept.insert(
        0,
        Section::absent(
            "gpu",
            "GPU",
            "the process used no CUDA (no call into a CUDA library was traced and GPU tracing \
             reached no process)",
        ),
    );
    kept
}

/// The headline's GPU line: how much GPU work, where, and whether tracing was off anywhere.
pub(super) fn headline(rec: &Recording) -> Option<String> {
    let gpu = &rec.gpu;
    if gpu.is_empty() {
        return None;
    }
    let mut counts = [0u64; 3];
    let mut devices = std::collections::BTreeSet::new();
    for op in &gpu.ops {
        let i = match op.detail {
            GpuDetail::Kernel { .. } => 0,
            GpuDetail::Memcpy { .. } => 1,
            GpuDetail::Memset { .. } => 2,
            _ => continue,
        };
        counts[i] += 1;
        devices.insert(op.device);
    }
    let n = |count: u64, one: &str, many: &str| {
        format!("{count} {}", if count == 1 { one } else { many })
    };
    let mut line = format!(
        "{}, {}, {} on {}: {:.3} ms of GPU time",
        n(counts[0], "kernel", "kernels"),
        n(counts[1], "copy", "copies"),
        n(counts[2], "memset", "memsets"),
        n(devices.len() as u64, "device", "devices"),
        gpu_time(rec) as f64 / 1e6
    );
    let off = gpu.sources.iter().filter(|s| s.state != "on").count();
    if off > 0 {
        line.push_str(&format!(
            "; tracing off in {off} of {} processes (see GPU tracing)",
            gpu.sources.len()
        ));
    }
    Some(line)
}

#[cfg(test)]
mod tests;
