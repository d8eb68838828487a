//! The viewer's GPU tracks: under each device's group, per process a `"spans"` track per
//! stream, one for synchronizations and one for NVTX ranges, each operation a span.
//!
//! Besides the span columns (name: the kernel demangled, `memcpy HtoD`, `memset`, the sync kind
//! or NVTX text; `t`: the op's fixed details as JSON, the same as the timeline's args, shared
//! between calls), a track has a `"gpu"` component of per-op columns:
//!
//! ```text
//! "gpu": {"c": correlation id, "q": queue delay in ns (launch call start to GPU start) or null,
//!         "lt": track index of the launching thread or -1, "li": index of the launch span in
//!         that track's spans or -1, "la": launch API (string index) or -1}
//! ```
//!
//! Columns no op of the track uses are left out.
use std::{
    collections::{BTreeMap, HashMap},
    io::{self, Write},
};

use super::encode::{column, deltas, rel, Strings};
use crate::{
    export::gpu_ops::{launch_of, write_details, GpuNames},
    recording::{GpuDetail, GpuOp, Recording},
};

/// Where the viewer puts each thread and span, so a GPU op can name its launch span.
pub(super) struct LaunchIndex {
    threads: HashMap<(u32, u32), u32>,
    span_pos: Vec<u32>,
}

impl LaunchIndex {
    /// An empty index; it records nothing when the recording has no GPU ops.
    pub(super) fn new(rec: &Recording) -> LaunchIndex {
        let n = if rec.gpu.ops.is_empty() {
            0
        } else {
            rec.spans.len()
        };
        LaunchIndex {
            threads: HashMap::new(),
            span_pos: vec![u32::MAX; n],
        }
    }

    /// Records that thread `(pid, tid)` is track `track`, with `spans` (indices into
    /// `rec.spans`) in its display order.
    pub(super) fn add_thread(&mut self, pid: u32, tid: u32, track: usize, spans: &[usize]) {
        if self.span_pos.is_empty() {
            return;
        }
        self.threads.insert((pid, tid), track as u32);
        for (pos, &i) in spans.iter().enumerate() {
            self.span_pos[i] = pos as u32;
        }
    }

    fn thread(&self, pid: u32, tid: u32) -> Option<u32> {
        let tid = if tid == 0 { pid } else { tid };
        self.threads.get(&(pid, tid)).copied()
    }
}

/// The devices GPU ops ran on.
pub(super) fn devices(rec: &Recording) -> impl Iterator<Item = u32> + '_ {
    rec.gpu.ops.iter().map(|op| op.device)
}

/// A GPU track: device, process, what it holds (0 NVTX ranges, 1 syncs, 2 a stream), stream.
type TrackKey = (u32, u32, u8, u32);

/// Track order: by device, then per process NVTX ranges, syncs, then streams.
fn track_key(op: &GpuOp) -> TrackKey {
    match op.detail {
        GpuDetail::Range => (op.device, op.pid, 0, 0),
        GpuDetail::Sync => (op.device, op.pid, 1, 0),
        _ => (op.device, op.pid, 2, op.stream),
    }
}

/// Writes one track per (device, process, stream / syncs / NVTX), each preceded by a comma
/// unless it is the first track; `group_of` gives each device's group index.
pub(super) fn write_tracks(
    rec: &Recording,
    index: &LaunchIndex,
    group_of: &dyn Fn(u32) -> usize,
    strings: &mut Strings,
    w: &mut dyn Write,
    first_track: &mut bool,
) -> io::Result<()> {
    let mut tracks: BTreeMap<TrackKey, Vec<usize>> = BTreeMap::new();
    for (i, op) in rec.gpu.ops.iter().enumerate() {
        tracks.entry(track_key(op)).or_default().push(i);
    }
    let names = GpuNames::new(&rec.gpu);
    for ((device, pid, kind, stream), mut ops) in tracks {
        ops.sort_by_key(|&i| rec.gpu.ops[i].start_ns);
        if !std::mem::take(first_track) {
            w.write_all(b",")?;
        }
        let title = match kind {
            0 => "NVTX ranges".to_string(),
            1 => "syncs".to_string(),
            _ => format!("stream {stream}"),
        };
        let mut first = true;
        w.write_all(b"{")?;
        column(w, &mut first, "group", &group_of(device))?;
        column(w, &mut first, "kind", &"spans")?;
        column(w, &mut first, "title", &title)?;
        column(
            w,
            &mut first,
            "sub",
            &format!("{} {pid}", rec.process_name(pid)),
        )?;
        column(w, &mut first, "pid", &pid)?;
        column(w, &mut first, "device", &device)?;
        if kind == 2 {
            column(w, &mut first, "stream", &stream)?;
            column(w, &mut first, "context", &rec.gpu.ops[ops[0]].context)?;
        }
        w.write_all(b",\"spans\":")?;
        write_spans(rec, &ops, &names, strings, w)?;
        w.write_all(b",\"gpu\":")?;
        write_launches(rec, &ops, index, strings, w)?;
        w.write_all(b"}")?;
    }
    Ok(())
}

fn write_spans(
    rec: &Recording,
    idx: &[usize],
    names: &GpuNames,
    strings: &mut Strings,
    w: &mut dyn Write,
) -> io::Result<()> {
    let ops = || idx.iter().map(|&i| &rec.gpu.ops[i]);
    let mut first = true;
    w.write_all(b"{")?;
    column(
        w,
        &mut first,
        "s",
        &deltas(ops().map(|op| rel(rec, op.start_ns))),
    )?;
    column(
        w,
        &mut first,
        "d",
        &ops().map(GpuOp::duration_ns).collect::<Vec<_>>(),
    )?;
    let mut name_ids: HashMap<u32, u32> = HashMap::new();
    let name_col: Vec<u32> = ops()
        .map(|op| match &op.detail {
            GpuDetail::Memcpy { .. } | GpuDetail::Memset { .. } => strings.id(&names.op_name(op)),
            _ => *name_ids
                .entry(op.name)
                .or_insert_with(|| strings.id(names.get(op.name))),
        })
        .collect();
    column(w, &mut first, "n", &name_col)?;
    // Rows: the first whose last op has ended (nested NVTX ranges stack up).
    let mut row_ends: Vec<u64> = Vec::new();
    let rows: Vec<usize> = ops()
        .map(|op| match row_ends.iter().position(|&e| e <= op.start_ns) {
            Some(r) => {
                row_ends[r] = op.end_ns;
                r
            }
            None => {
                row_ends.push(op.end_ns);
                row_ends.len() - 1
            }
        })
        .collect();
    column(w, &mut first, "l", &rows)?;
    let mut text = Vec::new();
    let details: Vec<u32> = ops()
        .map(|op| {
            text.clear();
            text.push(b'{');
            write_details(&mut text, op).expect("writing into memory");
            text.push(b'}');
            strings.id(std::str::from_utf8(&text).expect("details are UTF-8")) + 1
        })
        .collect();
    column(w, &mut first, "t", &details)?;
    w.write_all(b"}")
}

fn write_launches(
    rec: &Recording,
    idx: &[usize],
    index: &LaunchIndex,
    strings: &mut Strings,
    w: &mut dyn Write,
) -> io::Result<()> {
    let ops = || idx.iter().map(|&i| &rec.gpu.ops[i]);
    let n = idx.len();
    let (mut queue, mut thread, mut span, mut api) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for op in ops() {
        let launch = launch_of(rec, op);
        queue.push(launch.map(|l| l.queue_delay_ns(op)));
        thread.push(
            launch
                .and_then(|l| index.thread(l.pid, l.tid))
                .map_or(-1, i64::from),
        );
        span.push(
            launch
                .and_then(|l| l.span)
                .and_then(|s| index.span_pos.get(s as usize))
                .filter(|&&p| p != u32::MAX)
                .map_or(-1, |&p| i64::from(p)),
        );
        api.push(
            launch
                .and_then(|l| l.api)
                .map_or(-1, |a| i64::from(strings.id(a))),
        );
    }
    let mut first = true;
    w.write_all(b"{")?;
    if ops().any(|op| op.correlation != 0) {
        column(
            w,
            &mut first,
            "c",
            &ops().map(|op| op.correlation).collect::<Vec<_>>(),
        )?;
    }
    if queue.iter().any(Option::is_some) {
        column(w, &mut first, "q", &queue)?;
    }
    if thread.iter().any(|&t| t >= 0) {
        column(w, &mut first, "lt", &thread)?;
    }
    if span.iter().any(|&s| s >= 0) {
        column(w, &mut first, "li", &span)?;
    }
    if api.iter().any(|&a| a >= 0) {
        column(w, &mut first, "la", &api)?;
    }
    w.write_all(b"}")
}

/// The `"sub"` of a device's group: where its tracks come from.
pub(super) fn group_sub(rec: &Recording, device: u32) -> &'static str {
    let nvml = rec.counters.iter().any(|c| c.device.unwrap_or(0) == device);
    let cupti = rec.gpu.ops.iter().any(|op| op.device == device);
    match (nvml, cupti) {
        (true, true) => "NVML, CUPTI",
        (false, true) => "CUPTI",
        _ => "NVML",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::recording::fixtures::{gpu_recording, T0};

    fn data(rec: &Recording) -> Value {
        let mut out = Vec::new();
        super::super::data::write_data(rec, &json!({}), &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    use super::*;

    fn undelta(v: &Value) -> Vec<i64> {
        let mut t = 0;
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| {
                t += d.as_i64().unwrap();
                t
            })
            .collect()
    }

    #[test]
    fn gpu_ops_are_span_tracks_under_each_device() {
        let rec = gpu_recording();
        let v = data(&rec);
        let strings = v["strings"].as_array().unwrap();
        let s = |i: &Value| strings[i.as_u64().unwrap() as usize].as_str().unwrap();
        let groups = v["groups"].as_array().unwrap();
        let gpu0 = groups.iter().position(|g| g["title"] == "GPU 0").unwrap();
        assert_eq!(
            (&groups[gpu0]["kind"], &groups[gpu0]["sub"]),
            (&json!("gpu"), &json!("CUPTI"))
        );
        assert!(groups.iter().any(|g| g["title"] == "GPU 1"));
        let tracks = v["tracks"].as_array().unwrap();
        let find = |title: &str, pid: u32| {
            tracks
                .iter()
                .find(|t| t["title"] == title && t["pid"] == pid && t["group"] == gpu0)
                .unwrap_or_else(|| panic!("no {title} track of pid {pid}"))
        };
        let stream = find("stream 7", 10);
        assert_eq!(
            (&stream["kind"], &stream["sub"]),
            (&json!("spans"), &json!("trainer 10"))
        );
        let sp = &stream["spans"];
        let names: Vec<&str> = sp["n"].as_array().unwrap().iter().map(s).collect();
        assert_eq!(
            names,
            [
                "gemm(float*, float*, int)",
                "gemm(float*, float*, int)",
                "relu_kernel",
                "softmax"
            ]
        );
        assert_eq!(undelta(&sp["s"]), [150_000, 250_000, 1_100_000, 4_050_000]);
        assert_eq!(sp["d"], json!([100_000, 200_000, 50_000, 30_000]));
        let details: Value = serde_json::from_str(
            strings[sp["t"][3].as_u64().unwrap() as usize - 1]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (&details["kind"], &details["graph_node"]),
            (&json!("kernel"), &json!(101))
        );
        let g = &stream["gpu"];
        assert_eq!(g["c"], json!([1, 2, 4, 5]));
        assert_eq!(g["q"], json!([50_000, 50_000, 100_000, 50_000]));
        let apis: Vec<&str> = g["la"].as_array().unwrap().iter().map(s).collect();
        assert_eq!(
            apis,
            [
                "cudaLaunchKernel",
                "cudaLaunchKernel",
                "cudaLaunchKernel",
                "cudaGraphLaunch"
            ]
        );
        // The launch span of each op: its thread's track, and its place among that track's spans.
        let main = &tracks[g["lt"][0].as_u64().unwrap() as usize];
        assert_eq!(
            (&main["kind"], &main["tid"]),
            (&json!("thread"), &json!(10))
        );
        assert_eq!(g["li"], json!([0, 1, -1, 2]));
        let starts = undelta(&main["spans"]["s"]);
        assert_eq!(starts[2], (rec.spans[3].start_ns - T0) as i64);
        let loader = &tracks[g["lt"][2].as_u64().unwrap() as usize];
        assert_eq!(
            loader["tid"], 11,
            "the launch record's thread, without a span"
        );
        // NVTX ranges: `step` nests under `forward`, `load` fits the row `step` left.
        let nvtx = find("NVTX ranges", 10);
        assert_eq!(nvtx["spans"]["l"], json!([0, 1, 1]));
        assert!(
            nvtx["gpu"].as_object().unwrap().is_empty(),
            "NVTX ranges have no launch"
        );
        let other = find("stream 7", 20);
        assert!(
            other["gpu"]["q"].is_null(),
            "nothing joined: no queue delay column"
        );
        let copies = tracks.iter().find(|t| t["title"] == "stream 3").unwrap();
        let copy_names: Vec<&str> = copies["spans"]["n"]
            .as_array()
            .unwrap()
            .iter()
            .map(s)
            .collect();
        assert_eq!(copy_names, ["memset", "memcpy DtoH"]);
    }

    #[test]
    fn nvml_and_cupti_share_a_device_group() {
        let mut rec = gpu_recording();
        rec.counters.push(crate::recording::Counter {
            name: "GPU 1 utilization".into(),
            unit: "%".into(),
            device: Some(1),
            pid: None,
            points: vec![(T0, 10.0)],
        });
        let v = data(&rec);
        let groups = v["groups"].as_array().unwrap();
        let gpu1: Vec<usize> = (0..groups.len())
            .filter(|&i| groups[i]["title"] == "GPU 1")
            .collect();
        assert_eq!(gpu1.len(), 1);
        assert_eq!(groups[gpu1[0]]["sub"], "NVML, CUPTI");
        let in_group: Vec<&Value> = v["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["group"] == gpu1[0])
            .map(|t| &t["title"])
            .collect();
        assert_eq!(in_group, [&json!("GPU 1 utilization"), &json!("stream 3")]);
    }
}
