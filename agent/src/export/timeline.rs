//! The timeline, `trace.json`: Chrome trace-event JSON, which Perfetto UI, `chrome://tracing`
//! and speedscope open.
//!
//! On one CLOCK_MONOTONIC axis (microseconds with nanosecond fractions): process and thread
//! names, spans as complete (`X`) slices on their thread, off-CPU intervals as slices named by
//! where the thread blocked, CPU samples as instants carrying their stack, lifecycle and signal
//! events as instants, a per-process CPU counter, and the recording's metadata and drop counts
//! in `otherData`.
use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use serde_json::{json, Value};

use super::Exporter;
use crate::{
    trace::{FrameKind, Recording, SampleKind},
    Error, Result,
};

/// File name of the timeline.
pub const FILE: &str = "trace.json";

/// Width of the CPU counter's bins.
const COUNTER_BIN_NS: u64 = 100_000_000;

/// Frames of a sample's stack kept in its instant event (innermost first).
const STACK_IN_EVENT: usize = 16;

/// The timeline exporter.
pub struct Timeline;

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn frame_label(rec: &Recording, f: u32) -> String {
    let frame = &rec.frames[f as usize];
    match frame.kind {
        FrameKind::Kernel => format!("{} [k]", frame.name),
        _ => frame.name.clone(),
    }
}

/// The innermost real (not inlined) function of a stack, for naming slices.
fn leaf_function(rec: &Recording, stack: u32) -> String {
    rec.stacks[stack as usize]
        .iter()
        .rev()
        .copied()
        .find(|&f| {
            let fr = &rec.frames[f as usize];
            !fr.inlined && fr.kind != FrameKind::Kernel
        })
        .or_else(|| rec.stacks[stack as usize].last().copied())
        .map(|f| frame_label(rec, f))
        .unwrap_or_else(|| "[no stack]".into())
}

/// Every trace event of the timeline, parsed back into values (for tests and small
/// recordings; the exporter streams them with [`write_trace_events`]).
pub fn trace_events(rec: &Recording) -> Vec<Value> {
    let mut buf = vec![b'['];
    write_trace_events(rec, &mut buf).expect("writing to memory");
    buf.push(b']');
    serde_json::from_slice(&buf).expect("trace events are JSON")
}

/// Writes every trace event, comma-separated, in time order within each kind. Events are
/// streamed one by one; a sample's stack is serialized once per distinct stack, so a million
/// samples cost a million small writes, not a million JSON trees.
pub fn write_trace_events(rec: &Recording, w: &mut dyn Write) -> std::io::Result<()> {
    let mut first = true;
    fn comma(first: &mut bool, w: &mut dyn Write) -> std::io::Result<()> {
        if !std::mem::take(first) {
            w.write_all(b",\n")?;
        }
        Ok(())
    }
    fn emit(first: &mut bool, w: &mut dyn Write, v: &Value) -> std::io::Result<()> {
        comma(first, w)?;
        serde_json::to_writer(&mut *w, v).map_err(std::io::Error::from)
    }
    for p in &rec.processes {
        emit(
            &mut first,
            w,
            &json!({"ph": "M", "name": "process_name", "pid": p.pid, "tid": p.pid,
            "args": {"name": format!("{} ({})", p.name, p.pid)}}),
        )?;
    }
    for t in &rec.threads {
        emit(
            &mut first,
            w,
            &json!({"ph": "M", "name": "thread_name", "pid": t.pid, "tid": t.tid,
            "args": {"name": t.name}}),
        )?;
    }
    for s in &rec.spans {
        let probe = &rec.probes[s.probe as usize];
        let mut args = json!({"depth": s.depth, "file": probe.path});
        for (k, v) in &s.attrs {
            args[k] = v.clone();
        }
        if !s.args.is_empty() {
            args["args"] = json!(s.args);
        }
        if let Some(ret) = s.ret {
            args["ret"] = json!(ret);
        } else {
            args["unfinished"] = json!(true);
        }
        emit(
            &mut first,
            w,
            &json!({"ph": "X", "cat": "probe", "name": probe.function, "pid": s.pid,
            "tid": s.tid, "ts": us(s.start_ns), "dur": us(s.end_ns - s.start_ns), "args": args}),
        )?;
    }
    // Per distinct stack: its leaf function's name and its frames, as JSON text.
    let mut cached: Vec<Option<(String, String)>> = vec![None; rec.stacks.len()];
    let mut cpu_bins: BTreeMap<(u32, u64), u64> = BTreeMap::new();
    for s in &rec.samples {
        match s.kind {
            SampleKind::Cpu => {
                let (leaf, stack) = cached[s.stack as usize].get_or_insert_with(|| {
                    let frames: Vec<String> = rec.stacks[s.stack as usize]
                        .iter()
                        .rev()
                        .take(STACK_IN_EVENT)
                        .map(|&f| frame_label(rec, f))
                        .collect();
                    (
                        Value::from(leaf_function(rec, s.stack)).to_string(),
                        Value::from(frames).to_string(),
                    )
                });
                comma(&mut first, w)?;
                write!(
                    w,
                    r#"{{"ph":"i","s":"t","cat":"cpu","name":{leaf},"pid":{},"tid":{},"ts":{},"args":{{"stack":{stack}}}}}"#,
                    s.pid,
                    s.tid,
                    Value::from(us(s.time_ns)),
                )?;
                *cpu_bins
                    .entry((s.pid, s.time_ns / COUNTER_BIN_NS))
                    .or_default() += 1;
            }
            SampleKind::OffCpu => {
                emit(
                    &mut first,
                    w,
                    &json!({"ph": "X", "cat": "off_cpu",
                    "name": format!("off-CPU: {}", leaf_function(rec, s.stack)), "pid": s.pid,
                    "tid": s.tid, "ts": us(s.time_ns), "dur": us(s.weight)}),
                )?;
            }
        }
    }
    // CPU use per process: samples per bin over the samples a fully busy CPU would give.
    let per_bin = (rec.meta.frequency_hz as f64 * COUNTER_BIN_NS as f64 / 1e9).max(1.0);
    for ((pid, bin), n) in cpu_bins {
        emit(
            &mut first,
            w,
            &json!({"ph": "C", "name": "CPU %", "pid": pid, "tid": pid,
            "ts": us(bin * COUNTER_BIN_NS), "args": {"cpu": 100.0 * n as f64 / per_bin}}),
        )?;
    }
    for l in &rec.logs {
        let name = l.level.map_or(l.stream.name(), crate::logs::Level::name);
        emit(
            &mut first,
            w,
            &json!({"ph": "i", "s": "t", "cat": "log", "name": name, "pid": l.pid,
            "tid": l.tid, "ts": us(l.time_ns), "args": {"message": l.message, "stream": l.stream}}),
        )?;
    }
    for e in &rec.events {
        let kind = e.kind.name();
        let scope = match e.kind {
            crate::trace::EventKind::ProcessStart
            | crate::trace::EventKind::ProcessExit
            | crate::trace::EventKind::Exec => "p",
            _ => "t",
        };
        emit(
            &mut first,
            w,
            &json!({"ph": "i", "s": scope, "cat": "event", "name": kind, "pid": e.pid,
            "tid": e.tid, "ts": us(e.time_ns), "args": {"message": e.message, "value": e.value}}),
        )?;
    }
    Ok(())
}

impl Exporter for Timeline {
    fn name(&self) -> &'static str {
        "timeline"
    }

    fn export(&self, rec: &Recording, dir: &Path) -> Result<Vec<PathBuf>> {
        let path = dir.join(FILE);
        let err = |e: std::io::Error| Error::io(format!("writing {}", path.display()), e);
        let meta = &rec.meta;
        let doc = json!({
            "displayTimeUnit": "ns",
            "otherData": {
                "producer": format!("modelprobe {}", meta.modelprobe_version),
                "clock": "CLOCK_MONOTONIC",
                "command": meta.command,
                "target_pid": meta.target_pid,
                "mode": meta.mode,
                "kernel": meta.kernel,
                "hostname": meta.hostname,
                "start_ns": meta.start_ns,
                "end_ns": meta.end_ns,
                "duration_s": rec.duration_ns() as f64 / 1e9,
                "frequency_hz": meta.frequency_hz,
                "end_reason": meta.end_reason,
                "lost": meta.lost,
            },
        });
        // The document without its events, then the events streamed into its array.
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&path).map_err(err)?);
        let head = doc.to_string();
        w.write_all(&head.as_bytes()[..head.len() - 1])
            .map_err(err)?;
        w.write_all(b",\"traceEvents\":[\n").map_err(err)?;
        write_trace_events(rec, &mut w).map_err(err)?;
        w.write_all(b"]}\n").map_err(err)?;
        w.flush().map_err(err)?;
        Ok(vec![path])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{ProbeInfo, Span};

    #[test]
    fn spans_samples_and_names_become_trace_events() {
        let mut rec = crate::trace::fixtures::sample_recording();
        rec.meta.frequency_hz = 99;
        rec.probes.push(ProbeInfo {
            spec: "app:f".into(),
            path: "/app".into(),
            function: "f".into(),
            args: 1,
            pack: None,
        });
        rec.spans.push(Span {
            probe: 0,
            pid: 7,
            tid: 7,
            start_ns: 1_000,
            end_ns: 3_500,
            depth: 0,
            args: vec![4],
            ret: Some(8),
            attrs: [("bytes".to_string(), json!(64))].into(),
        });
        let events = trace_events(&rec);
        let span = events
            .iter()
            .find(|e| e["ph"] == "X" && e["cat"] == "probe")
            .unwrap();
        assert_eq!(
            (span["ts"].as_f64(), span["dur"].as_f64()),
            (Some(1.0), Some(2.5))
        );
        assert_eq!(span["args"]["ret"], 8);
        assert_eq!(span["args"]["args"], json!([4]));
        assert_eq!(
            span["args"]["bytes"], 64,
            "decoded attributes travel with the span"
        );
        let off = events.iter().find(|e| e["cat"] == "off_cpu").unwrap();
        assert_eq!(off["dur"].as_f64(), Some(2500.0));
        assert!(events
            .iter()
            .any(|e| e["ph"] == "M" && e["args"]["name"] == "app (7)"));
        let samples = events.iter().filter(|e| e["cat"] == "cpu").count();
        assert_eq!(samples, 3);
        assert!(events.iter().any(|e| e["ph"] == "C"));
    }
}
