//! The timeline's GPU tracks: per (process, device) a track group `GPU 0 (pid 1234)` with a
//! track per stream, one for synchronizations and one for NVTX ranges; each operation a
//! complete (`X`) slice with its details, and a flow arrow from the CPU call that launched it.
//!
//! Flows are the v2 kind Perfetto and Chrome read (`bind_id` with `flow_out` on the source
//! slice, `flow_in` on the destination): each binds to its own slice, whatever the order of
//! equal timestamps. One flow id per launching call, so a graph launch fans out to all its
//! kernels. The source is the call's span; without a span, a zero-length `gpu_launch` slice
//! at the launch record's time on the launching thread.
//!
//! Track groups are not processes, so they get ids no process can have (from 2^30 up; Linux
//! pids stay below 2^22), each group a block of 2^16 ids for its tracks.
use std::{
    collections::HashMap,
    io::{self, Write},
};

use serde_json::Value;

use super::gpu_ops::{launch_of, write_details, GpuNames};
use crate::recording::{GpuDetail, GpuOp, Recording};

/// Id of the first GPU track group.
const GPU_PID_BASE: u32 = 1 << 30;
/// Ids per GPU track group: the group itself, then its tracks.
const GPU_PID_STRIDE: u32 = 1 << 16;
/// Most lanes one track splits into when its slices overlap without nesting; beyond, they
/// share the last one.
const MAX_LANES: usize = 16;

fn us(ns: u64) -> Value {
    Value::from(ns as f64 / 1000.0)
}

/// Spans that launched GPU work: their slices start flows.
pub(super) fn launching_spans(rec: &Recording) -> Vec<bool> {
    let mut out = vec![false; rec.spans.len()];
    for op in &rec.gpu.ops {
        if let Some(s) = launch_of(rec, op).and_then(|l| l.span) {
            out[s as usize] = true;
        }
    }
    out
}

/// The flow id of a span that launched GPU work.
pub(super) fn span_flow(span: usize) -> u64 {
    span as u64 + 1
}

/// What a track of a GPU group holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Nvtx,
    Syncs,
    Stream(u32),
}

impl Kind {
    fn of(op: &GpuOp) -> Kind {
        match op.detail {
            GpuDetail::Range => Kind::Nvtx,
            GpuDetail::Sync => Kind::Syncs,
            _ => Kind::Stream(op.stream),
        }
    }

    fn title(self) -> String {
        match self {
            Kind::Nvtx => "NVTX ranges".into(),
            Kind::Syncs => "syncs".into(),
            Kind::Stream(s) => format!("stream {s}"),
        }
    }

    fn sort_index(self) -> i64 {
        match self {
            Kind::Nvtx => 0,
            Kind::Syncs => 1,
            Kind::Stream(s) => 2 + i64::from(s),
        }
    }
}

/// A track's lanes: slices of one lane nest or are disjoint, as a thread's slices must.
struct Lanes {
    /// Per lane: its thread id and the ends of its open slices, outermost first.
    lanes: Vec<(u32, Vec<u64>)>,
}

impl Lanes {
    /// The lane `[start, end)` fits in (slices come in start order), if any.
    fn place(&mut self, start: u64, end: u64) -> Option<usize> {
        for (i, (_, open)) in self.lanes.iter_mut().enumerate() {
            while open.last().is_some_and(|&e| e <= start) {
                open.pop();
            }
            if open.last().is_none_or(|&e| end <= e) {
                open.push(end);
                return Some(i);
            }
        }
        None
    }
}

/// A (process, device) group: its id and how many track ids it gave out.
struct Group {
    pid: u32,
    tracks: u32,
}

/// Writes the GPU track groups, slices and flows; `event` starts each event (the comma).
pub(super) fn write_gpu_events(
    rec: &Recording,
    w: &mut dyn Write,
    event: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let gpu = &rec.gpu;
    if gpu.ops.is_empty() {
        return Ok(());
    }
    let names = GpuNames::new(gpu);
    // Slice names as JSON text, once per distinct name.
    let mut name_text: HashMap<(u8, u32), String> = HashMap::new();
    let mut copy_text: HashMap<&str, String> = HashMap::new();
    let mut groups: HashMap<(u32, u32), Group> = HashMap::new();
    let mut tracks: HashMap<(u32, u32, Kind), Lanes> = HashMap::new();
    let mut marked = vec![false; gpu.launches.len()];
    let mut order: Vec<usize> = (0..gpu.ops.len()).collect();
    if !gpu.ops.is_sorted_by_key(|op| op.start_ns) {
        order.sort_by_key(|&i| gpu.ops[i].start_ns);
    }
    for i in order {
        let op = &gpu.ops[i];
        let next_group =
            GPU_PID_BASE.saturating_add((groups.len() as u32).saturating_mul(GPU_PID_STRIDE));
        let group = groups.entry((op.pid, op.device)).or_insert_with(|| Group {
            pid: next_group,
            tracks: 0,
        });
        if group.tracks == 0 {
            group.tracks = 1;
            event(w)?;
            write!(
                w,
                r#"{{"ph":"M","name":"process_name","pid":{0},"tid":{0},"args":{{"name":"GPU {1} (pid {2})"}}}}"#,
                group.pid, op.device, op.pid
            )?;
            event(w)?;
            write!(
                w,
                r#"{{"ph":"M","name":"process_sort_index","pid":{0},"tid":{0},"args":{{"sort_index":{1}}}}}"#,
                group.pid,
                i64::from(group.pid - GPU_PID_BASE) / i64::from(GPU_PID_STRIDE) + 1_000_000
            )?;
        }
        let kind = Kind::of(op);
        let lanes = tracks
            .entry((op.pid, op.device, kind))
            .or_insert_with(|| Lanes { lanes: Vec::new() });
        let end = op.end_ns.max(op.start_ns);
        let lane = match lanes.place(op.start_ns, end) {
            Some(lane) => lane,
            None if lanes.lanes.len() < MAX_LANES && group.tracks < GPU_PID_STRIDE => {
                let tid = group.pid + group.tracks;
                group.tracks += 1;
                lanes.lanes.push((tid, vec![end]));
                let n = lanes.lanes.len();
                let title = if n == 1 {
                    kind.title()
                } else {
                    format!("{} ({n})", kind.title())
                };
                event(w)?;
                write!(
                    w,
                    r#"{{"ph":"M","name":"thread_name","pid":{},"tid":{tid},"args":{{"name":{}}}}}"#,
                    group.pid,
                    Value::from(title)
                )?;
                event(w)?;
                write!(
                    w,
                    r#"{{"ph":"M","name":"thread_sort_index","pid":{},"tid":{tid},"args":{{"sort_index":{}}}}}"#,
                    group.pid,
                    kind.sort_index()
                )?;
                n - 1
            }
            // Out of lanes: overlap on the last one rather than lose the slice.
            None => lanes.lanes.len() - 1,
        };
        let tid = lanes.lanes[lane].0;
        let name: &str = match &op.detail {
            GpuDetail::Memcpy { direction, .. } => copy_text
                .entry(direction.as_str())
                .or_insert_with(|| Value::from(format!("memcpy {direction}")).to_string()),
            GpuDetail::Memset { .. } => name_text
                .entry((1, 0))
                .or_insert_with(|| Value::from("memset").to_string()),
            _ => name_text
                .entry((0, op.name))
                .or_insert_with(|| Value::from(names.get(op.name)).to_string()),
        };
        let launch = launch_of(rec, op);
        let flow = launch.and_then(|l| match (l.span, l.launch) {
            (Some(s), _) => Some(span_flow(s as usize)),
            (None, Some(l)) => Some(rec.spans.len() as u64 + u64::from(l) + 1),
            (None, None) => None,
        });
        // A launch known only from its record: a zero-length slice there starts the flow.
        if let (Some(l), Some(flow)) = (launch, flow) {
            if let (None, Some(li)) = (l.span, l.launch) {
                if !std::mem::replace(&mut marked[li as usize], true) {
                    event(w)?;
                    write!(
                        w,
                        r#"{{"ph":"X","cat":"gpu_launch","name":{},"pid":{},"tid":{},"ts":{},"dur":0,"args":{{"correlation":{}}},"bind_id":{flow},"flow_out":true}}"#,
                        Value::from(l.api.unwrap_or("launch")),
                        l.pid,
                        l.tid,
                        us(l.start_ns),
                        gpu.launches[li as usize].correlation
                    )?;
                }
            }
        }
        event(w)?;
        write!(
            w,
            r#"{{"ph":"X","cat":"gpu","name":{name},"pid":{},"tid":{tid},"ts":{},"dur":{},"args":{{"#,
            group.pid,
            us(op.start_ns),
            us(op.duration_ns())
        )?;
        write_details(w, op)?;
        // The process and device name the track group; the stream, its track.
        write!(w, r#","context":{},"stream":{}"#, op.context, op.stream)?;
        if op.correlation != 0 {
            write!(w, r#","correlation":{}"#, op.correlation)?;
        }
        if let GpuDetail::Memcpy { bytes, .. } | GpuDetail::Memset { bytes, .. } = op.detail {
            if let Some(gbps) = super::gpu_ops::gbps(bytes, op.duration_ns()) {
                write!(w, r#","bandwidth_gbs":{}"#, Value::from(gbps))?;
            }
        }
        if let Some(l) = launch {
            write!(
                w,
                r#","queue_delay_us":{},"launch":{},"launch_tid":{}"#,
                Value::from(l.queue_delay_ns(op) as f64 / 1000.0),
                Value::from(l.api.unwrap_or("")),
                l.tid
            )?;
        }
        w.write_all(b"}")?;
        if let Some(flow) = flow {
            write!(w, r#","bind_id":{flow},"flow_in":true"#)?;
        }
        w.write_all(b"}")?;
    }
    Ok(())
}
