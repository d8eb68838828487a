//! Perfetto's protobuf trace format (`trace.pftrace`), for recordings the JSON timeline cannot
//! hold (it opens in ui.perfetto.dev and `trace_processor` at any size): a track per process and
//! thread, probe spans as nested slices (a thread's spans that do not nest go to child lanes),
//! blocked intervals on a child track, LLM calls, GPU operations on a track per stream with a
//! flow from the call that launched them, logs and lifecycle events as instants, counters, and
//! CPU samples as perf samples whose callstacks are interned once.
//!
//! One packet sequence; its interned data (function names, mappings, frames, callstacks) in
//! the first packet. Timestamps are the recording's (CLOCK_MONOTONIC) nanoseconds.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{gpu_ops::GpuNames, timeline_llm, Exporter};
use crate::{
    recording::{launch::launch_of, EventKind, Recording, SampleKind},
    Error, Result,
};

pub mod proto;
mod stacks;
mod tracks;

use proto::{
    DebugAnnotation, EventType, TracePacket, TrackEvent, SEQ_INCREMENTAL_STATE_CLEARED,
    SEQ_NEEDS_INCREMENTAL_STATE,
};
use tracks::{Lanes, Tracks};

/// The one packet sequence's id.
const SEQUENCE: u32 = 1;

/// A packet, encoded as it is made (as `Trace.packet`: its field key, length and bytes, a
/// few dozen bytes where the message itself would take hundreds), and when it happens;
/// packets are written in time order (stable, so each track's own order stands at equal
/// times).
struct Timed {
    ts: u64,
    bytes: Vec<u8>,
}

impl Timed {
    fn new(ts: u64, packet: &TracePacket) -> Timed {
        let mut bytes = Vec::new();
        prost::encoding::message::encode(1, packet, &mut bytes);
        Timed { ts, bytes }
    }
}

/// Builds the packets of one trace.
struct Builder {
    tracks: Tracks,
    events: Vec<Timed>,
}

fn annotation(name: &str, v: &Value) -> DebugAnnotation {
    let mut a = DebugAnnotation {
        name: Some(name.to_string()),
        ..Default::default()
    };
    match v {
        Value::Bool(b) => a.bool_value = Some(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => a.int_value = Some(i),
            (None, Some(u), _) => a.uint_value = Some(u),
            (_, _, f) => a.double_value = f,
        },
        Value::String(s) => a.string_value = Some(s.clone()),
        Value::Null => a.string_value = Some("null".into()),
        other => a.legacy_json_value = Some(other.to_string()),
    }
    a
}

impl Builder {
    fn push(&mut self, ts: u64, event: TrackEvent) {
        let packet = TracePacket {
            timestamp: Some(ts),
            trusted_packet_sequence_id: Some(SEQUENCE),
            track_event: Some(event),
            ..Default::default()
        };
        self.events.push(Timed::new(ts, &packet));
    }

    /// A named event of type `ty` (a slice's begin, an instant), in `flows`.
    #[allow(clippy::too_many_arguments)]
    fn named(
        &mut self,
        ts: u64,
        ty: EventType,
        track: u64,
        name: String,
        category: &str,
        args: Vec<DebugAnnotation>,
        flows: Vec<u64>,
    ) {
        self.push(
            ts,
            TrackEvent {
                r#type: Some(ty as i32),
                track_uuid: Some(track),
                categories: vec![category.into()],
                name: Some(name),
                debug_annotations: args,
                flow_ids: flows,
                ..Default::default()
            },
        );
    }

    fn end(&mut self, ts: u64, track: u64) {
        self.push(
            ts,
            TrackEvent {
                r#type: Some(EventType::SliceEnd as i32),
                track_uuid: Some(track),
                ..Default::default()
            },
        );
    }

    /// Slices on `base` and lanes under it named `lane_name(k)`: `items` are (start, end, name,
    /// category, annotations, flows), in any order.
    fn slices(&mut self, base: u64, lane_name: &str, mut items: Vec<Slice>) {
        items.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
        let mut lanes = Lanes::default();
        let mut lane_tracks = vec![base];
        let mut track_of = |lane: usize, tracks: &mut Tracks| {
            while lane_tracks.len() <= lane {
                let k = lane_tracks.len();
                lane_tracks.push(tracks.child(base, format!("{lane_name} #{k}")));
            }
            lane_tracks[lane]
        };
        for s in items {
            let (lane, ended) = lanes.place(s.start, s.end);
            let track = track_of(lane, &mut self.tracks);
            for e in ended {
                self.end(e, track);
            }
            self.named(
                s.start,
                EventType::SliceBegin,
                track,
                s.name,
                s.category,
                s.args,
                s.flows,
            );
        }
        for (lane, ends) in lanes.finish() {
            let track = track_of(lane, &mut self.tracks);
            for e in ends {
                self.end(e, track);
            }
        }
    }
}

/// A slice to place.
struct Slice {
    start: u64,
    end: u64,
    name: String,
    category: &'static str,
    args: Vec<DebugAnnotation>,
    flows: Vec<u64>,
}

/// The flow id of the launching call `span`, shared by the GPU work it launched.
fn span_flow(span: u32) -> u64 {
    span as u64 + 1
}

/// A recording's trace, encoded (a `perfetto.protos.Trace`): interned data first, then the
/// track descriptors, then every event in time order; `None` when it has nothing to show.
pub fn encode(rec: &Recording) -> Option<Vec<u8>> {
    let mut b = Builder {
        tracks: Tracks::default(),
        events: Vec::new(),
    };
    // Launching calls start flows to their GPU work.
    let mut flows_of_span: HashMap<u32, u64> = HashMap::new();
    let mut op_flow: Vec<Option<u64>> = Vec::with_capacity(rec.gpu.ops.len());
    for op in &rec.gpu.ops {
        let flow = launch_of(rec, op).and_then(|l| l.span).map(|s| {
            flows_of_span.insert(s, span_flow(s));
            span_flow(s)
        });
        op_flow.push(flow);
    }

    // Probe spans, per thread.
    let mut by_thread: HashMap<(u32, u32), Vec<Slice>> = HashMap::new();
    for (i, s) in rec.spans.iter().enumerate() {
        let probe = &rec.probes[s.probe as usize];
        let mut args: Vec<DebugAnnotation> =
            s.attrs.iter().map(|(k, v)| annotation(k, v)).collect();
        if !s.args.is_empty() {
            args.push(annotation("args", &serde_json::json!(s.args)));
        }
        match s.ret {
            Some(r) => args.push(annotation("ret", &serde_json::json!(r))),
            None => args.push(annotation("unfinished", &Value::Bool(true))),
        }
        by_thread.entry((s.pid, s.tid)).or_default().push(Slice {
            start: s.start_ns,
            end: s.end_ns.max(s.start_ns),
            name: probe.function.clone(),
            category: "probe",
            args,
            flows: flows_of_span
                .get(&(i as u32))
                .copied()
                .into_iter()
                .collect(),
        });
    }
    let mut threads: Vec<_> = by_thread.into_iter().collect();
    threads.sort_by_key(|(k, _)| *k);
    for ((pid, tid), slices) in threads {
        let track = b.tracks.thread(rec, pid, tid);
        b.slices(track, "overlapping spans", slices);
    }

    // Blocked intervals sent one by one (sums have no place in time), per thread.
    let mut blocked: HashMap<(u32, u32), Vec<Slice>> = HashMap::new();
    for s in rec
        .samples
        .iter()
        .filter(|s| s.kind == SampleKind::OffCpu && s.blocks.is_none())
    {
        blocked.entry((s.pid, s.tid)).or_default().push(Slice {
            start: s.time_ns,
            end: s.time_ns.saturating_add(s.weight),
            name: format!("off-CPU: {}", super::timeline::leaf_function(rec, s.stack)),
            category: "off_cpu",
            args: Vec::new(),
            flows: Vec::new(),
        });
    }
    let mut blocked: Vec<_> = blocked.into_iter().collect();
    blocked.sort_by_key(|(k, _)| *k);
    for ((pid, tid), slices) in blocked {
        let thread = b.tracks.thread(rec, pid, tid);
        let track = b.tracks.child(thread, "off-CPU".into());
        b.slices(track, "off-CPU", slices);
    }

    // LLM calls, per process.
    let mut calls: HashMap<u32, Vec<Slice>> = HashMap::new();
    for c in &rec.llm.calls {
        let args = timeline_llm::gen_ai_attributes(c)
            .iter()
            .map(|(k, v)| annotation(k, v))
            .collect();
        calls.entry(c.pid).or_default().push(Slice {
            start: c.start_ns,
            end: c.end_ns.max(c.start_ns),
            name: timeline_llm::span_name(c),
            category: "llm",
            args,
            flows: Vec::new(),
        });
    }
    let mut calls: Vec<_> = calls.into_iter().collect();
    calls.sort_by_key(|(k, _)| *k);
    for (pid, slices) in calls {
        let process = b.tracks.process(rec, pid);
        let track = b.tracks.child(process, "LLM calls".into());
        b.slices(track, "LLM calls", slices);
    }

    // GPU work, per (process, device, stream).
    let names = GpuNames::new(&rec.gpu);
    let mut streams: HashMap<(u32, u32, u32), Vec<Slice>> = HashMap::new();
    for (op, flow) in rec.gpu.ops.iter().zip(op_flow) {
        streams
            .entry((op.pid, op.device, op.stream))
            .or_default()
            .push(Slice {
                start: op.start_ns,
                end: op.end_ns.max(op.start_ns),
                name: names.op_name(op),
                category: "gpu",
                args: vec![annotation(
                    "correlation",
                    &serde_json::json!(op.correlation),
                )],
                flows: flow.into_iter().collect(),
            });
    }
    let mut streams: Vec<_> = streams.into_iter().collect();
    streams.sort_by_key(|(k, _)| *k);
    for ((pid, device, stream), slices) in streams {
        let process = b.tracks.process(rec, pid);
        let track = b
            .tracks
            .child(process, format!("GPU {device} stream {stream}"));
        b.slices(track, &format!("GPU {device} stream {stream}"), slices);
    }

    // Logs and events as instants.
    for l in &rec.logs {
        let track = b.tracks.thread(rec, l.pid, l.tid);
        let name = l.level.map_or(l.stream.name(), |lv| lv.name()).to_string();
        let args = vec![annotation("message", &Value::String(l.message.clone()))];
        b.named(
            l.time_ns,
            EventType::Instant,
            track,
            name,
            "log",
            args,
            Vec::new(),
        );
    }
    for e in &rec.events {
        let track = match e.kind {
            EventKind::ProcessStart | EventKind::ProcessExit | EventKind::Exec => {
                b.tracks.process(rec, e.pid)
            }
            _ => b.tracks.thread(rec, e.pid, e.tid),
        };
        let mut args = vec![annotation("message", &Value::String(e.message.clone()))];
        if let Some(v) = e.value {
            args.push(annotation("value", &serde_json::json!(v)));
        }
        b.named(
            e.time_ns,
            EventType::Instant,
            track,
            e.kind.name().to_string(),
            "event",
            args,
            Vec::new(),
        );
    }

    // Counters.
    for c in &rec.counters {
        let name = if c.unit.is_empty() {
            c.name.clone()
        } else {
            format!("{} ({})", c.name, c.unit)
        };
        let track = b.tracks.counter(rec, c.pid, &name);
        for &(t, v) in &c.points {
            b.push(
                t,
                TrackEvent {
                    r#type: Some(EventType::Counter as i32),
                    track_uuid: Some(track),
                    double_counter_value: Some(v),
                    ..Default::default()
                },
            );
        }
    }

    // CPU samples, their stacks interned.
    let mut interner = stacks::Interner::new(rec);
    for s in rec.samples.iter().filter(|s| s.kind == SampleKind::Cpu) {
        let callstack = interner.callstack(s.stack);
        b.tracks.thread(rec, s.pid, s.tid);
        let packet = TracePacket {
            timestamp: Some(s.time_ns),
            trusted_packet_sequence_id: Some(SEQUENCE),
            sequence_flags: Some(SEQ_NEEDS_INCREMENTAL_STATE),
            perf_sample: Some(proto::PerfSample {
                pid: Some(s.pid),
                tid: Some(s.tid),
                callstack_iid: Some(callstack),
                cpu_mode: Some(proto::CPU_MODE_USER),
                ..Default::default()
            }),
            ..Default::default()
        };
        b.events.push(Timed::new(s.time_ns, &packet));
    }

    if b.events.is_empty() {
        return None;
    }
    b.events.sort_by_key(|t| t.ts);
    let first_ts = b.events.first().map_or(rec.meta.start_ns, |t| t.ts);
    let body: usize = b.events.iter().map(|t| t.bytes.len()).sum();
    let mut out = Vec::with_capacity(body + 4096);
    // The sequence's start: its interned data, then the tracks.
    let start = TracePacket {
        timestamp: Some(first_ts),
        trusted_packet_sequence_id: Some(SEQUENCE),
        sequence_flags: Some(SEQ_INCREMENTAL_STATE_CLEARED),
        interned_data: Some(interner.finish()),
        ..Default::default()
    };
    prost::encoding::message::encode(1, &start, &mut out);
    for d in b.tracks.descriptors {
        let packet = TracePacket {
            timestamp: Some(first_ts),
            trusted_packet_sequence_id: Some(SEQUENCE),
            track_descriptor: Some(d),
            ..Default::default()
        };
        prost::encoding::message::encode(1, &packet, &mut out);
    }
    for t in b.events {
        out.extend_from_slice(&t.bytes);
    }
    Some(out)
}

/// `export --format perfetto`: `trace.pftrace`, for ui.perfetto.dev and `trace_processor`.
pub struct Perfetto;

impl Exporter for Perfetto {
    fn name(&self) -> &'static str {
        "perfetto"
    }

    fn export(&self, rec: &Recording, dir: &Path) -> Result<Vec<PathBuf>> {
        let Some(bytes) = encode(rec) else {
            return Ok(Vec::new());
        };
        let path = dir.join("trace.pftrace");
        std::fs::write(&path, bytes)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(vec![path])
    }
}

#[cfg(test)]
mod tests;
