//! The timeline, `trace.json`: Chrome trace-event JSON, which Perfetto UI, `chrome://tracing`
//! and speedscope open.
//!
//! On one CLOCK_MONOTONIC axis (microseconds with nanosecond fractions): process and thread
//! names, spans as complete (`X`) slices on their thread, off-CPU intervals as slices named by
//! where the thread blocked, CPU samples as instants carrying their stack, lifecycle and signal
//! events as instants, a per-process CPU counter, and the recording's metadata and drop counts
//! in `otherData`. GPU operations get track groups of their own, with flows from the CPU calls
//! that launched them (`export/timeline_gpu.rs`); LLM API calls get async slices with their
//! GenAI attributes (`export/timeline_llm.rs`).
use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use serde_json::{json, Value};

use super::{timeline_gpu, timeline_llm, Exporter};
use crate::{
    recording::{FrameKind, Recording, SampleKind},
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
pub(super) fn leaf_function(rec: &Recording, stack: u32) -> String {
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
    let launching = timeline_gpu::launching_spans(rec);
    for (i, s) in rec.spans.iter().enumerate() {
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
        let mut event = json!({"ph": "X", "cat": "probe", "name": probe.function, "pid": s.pid,
            "tid": s.tid, "ts": us(s.start_ns), "dur": us(s.end_ns - s.start_ns), "args": args});
        if launching[i] {
            // The source of the flows to the GPU work this call launched.
            event["bind_id"] = json!(timeline_gpu::span_flow(i));
            event["flow_out"] = json!(true);
        }
        emit(&mut first, w, &event)?;
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
            // Sums of many short blocks have no place in time: flame graphs and the report count
            // them, the timeline draws the blocks sent one by one.
            SampleKind::OffCpu if s.blocks.is_some() => {}
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
            crate::recording::EventKind::ProcessStart
            | crate::recording::EventKind::ProcessExit
            | crate::recording::EventKind::Exec => "p",
            _ => "t",
        };
        emit(
            &mut first,
            w,
            &json!({"ph": "i", "s": scope, "cat": "event", "name": kind, "pid": e.pid,
            "tid": e.tid, "ts": us(e.time_ns), "args": {"message": e.message, "value": e.value}}),
        )?;
    }
    timeline_llm::write_llm_events(rec, w, &mut |w| comma(&mut first, w))?;
    timeline_gpu::write_gpu_events(rec, w, &mut |w| comma(&mut first, w))
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
    use crate::recording::{ProbeInfo, Span};

    #[test]
    fn spans_samples_and_names_become_trace_events() {
        let mut rec = crate::recording::fixtures::sample_recording();
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
            stack: None,
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

    /// The GPU fixture's trace events, with the names of its tracks and track groups.
    struct GpuEvents {
        events: Vec<Value>,
        /// (pid, tid) -> thread (track) name.
        threads: BTreeMap<(u64, u64), String>,
        /// pid -> process (track group) name.
        processes: BTreeMap<u64, String>,
    }

    fn gpu_fixture_events() -> GpuEvents {
        let events = trace_events(&crate::recording::fixtures::gpu_recording());
        let meta = |name: &str| {
            events
                .iter()
                .filter(|e| e["ph"] == "M" && e["name"] == name)
                .map(|e| {
                    (
                        (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap()),
                        e["args"]["name"].as_str().unwrap().to_string(),
                    )
                })
                .collect::<BTreeMap<_, _>>()
        };
        let threads = meta("thread_name");
        let processes = meta("process_name")
            .into_iter()
            .map(|((pid, _), n)| (pid, n))
            .collect();
        GpuEvents {
            events,
            threads,
            processes,
        }
    }

    #[test]
    fn gpu_ops_get_track_groups_per_process_and_device() {
        let GpuEvents {
            events,
            threads,
            processes,
        } = gpu_fixture_events();
        let gpu_groups: Vec<&String> = processes
            .values()
            .filter(|n| n.starts_with("GPU"))
            .collect();
        assert_eq!(
            gpu_groups,
            ["GPU 0 (pid 10)", "GPU 0 (pid 20)", "GPU 1 (pid 10)"]
        );
        let track = |group: &str, title: &str| {
            let pid = processes.iter().find(|(_, n)| *n == group).unwrap().0;
            threads
                .iter()
                .find(|((p, _), n)| p == pid && *n == title)
                .map(|(k, _)| *k)
                .unwrap_or_else(|| panic!("no track {title} in {group}: {threads:?}"))
        };
        let on = |(pid, tid): (u64, u64)| -> Vec<&Value> {
            events
                .iter()
                .filter(|e| e["ph"] == "X" && e["pid"] == pid && e["tid"] == tid)
                .collect()
        };
        let names = |evs: Vec<&Value>| -> Vec<String> {
            evs.iter()
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            names(on(track("GPU 0 (pid 10)", "stream 7"))),
            [
                "gemm(float*, float*, int)",
                "gemm(float*, float*, int)",
                "relu_kernel",
                "softmax"
            ]
        );
        assert_eq!(
            names(on(track("GPU 0 (pid 10)", "stream 9"))),
            ["memcpy HtoD"]
        );
        assert_eq!(names(on(track("GPU 0 (pid 10)", "stream 8"))), ["softmax"]);
        assert_eq!(
            names(on(track("GPU 0 (pid 10)", "syncs"))),
            ["stream synchronize"]
        );
        assert_eq!(
            names(on(track("GPU 0 (pid 20)", "stream 7"))),
            ["relu_kernel"]
        );
        assert_eq!(
            names(on(track("GPU 1 (pid 10)", "stream 3"))),
            ["memset", "memcpy DtoH"]
        );
        // `load` overlaps the end of `forward` without nesting: a second lane.
        assert_eq!(
            names(on(track("GPU 0 (pid 10)", "NVTX ranges"))),
            ["forward", "step"]
        );
        assert_eq!(
            names(on(track("GPU 0 (pid 10)", "NVTX ranges (2)"))),
            ["load"]
        );
        // Every GPU track's slices nest or are disjoint, as a thread's must.
        for key in threads.keys() {
            let mut open: Vec<f64> = Vec::new();
            for e in on(*key) {
                let (ts, end) = (
                    e["ts"].as_f64().unwrap(),
                    e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap(),
                );
                while open.last().is_some_and(|&o| o <= ts) {
                    open.pop();
                }
                assert!(
                    open.last().is_none_or(|&o| end <= o),
                    "{e} overlaps its track"
                );
                open.push(end);
            }
        }

        let gemm = on(track("GPU 0 (pid 10)", "stream 7"))[0];
        assert_eq!(
            (gemm["ts"].as_f64(), gemm["dur"].as_f64()),
            (Some(1150.0), Some(100.0))
        );
        assert_eq!(
            gemm["args"],
            json!({"kind": "kernel", "grid": [128, 1, 1], "block": [256, 1, 1], "registers": 32,
                "shared_static": 1024, "shared_dynamic": 0, "context": 1, "stream": 7,
                "correlation": 1, "queue_delay_us": 50.0, "launch": "cudaLaunchKernel",
                "launch_tid": 10})
        );
        let copy = on(track("GPU 0 (pid 10)", "stream 9"))[0];
        assert_eq!(copy["args"]["bytes"], 1_000_000);
        assert_eq!(copy["args"]["direction"], "HtoD");
        assert_eq!(copy["args"]["bandwidth_gbs"], 10.0);
        assert_eq!(copy["args"]["queue_delay_us"], 100.0);
        let graph = on(track("GPU 0 (pid 10)", "stream 8"))[0];
        assert_eq!(
            (
                graph["args"]["graph_id"].as_u64(),
                graph["args"]["graph_node"].as_u64()
            ),
            (Some(11), Some(102))
        );
        assert_eq!(graph["args"]["queue_delay_us"], 60.0);
    }

    #[test]
    fn flows_join_each_gpu_op_to_its_launching_call() {
        let events = gpu_fixture_events().events;
        let rec = crate::recording::fixtures::gpu_recording();
        let sources: Vec<&Value> = events.iter().filter(|e| e["flow_out"] == true).collect();
        let sinks: Vec<&Value> = events.iter().filter(|e| e["flow_in"] == true).collect();
        // Spans 0-3 start flows, and the launch known only from its record gets a slice.
        assert_eq!(sources.len(), 5);
        let marker = sources.iter().find(|e| e["cat"] == "gpu_launch").unwrap();
        assert_eq!(
            (
                &marker["name"],
                &marker["pid"],
                &marker["tid"],
                marker["ts"].as_f64()
            ),
            (
                &json!("cudaLaunchKernel"),
                &json!(10),
                &json!(11),
                Some(2000.0)
            )
        );
        // Every launched kernel, copy and memset ends one, after its source started.
        assert_eq!(sinks.len(), 6);
        for sink in &sinks {
            let source: Vec<&&Value> = sources
                .iter()
                .filter(|s| s["bind_id"] == sink["bind_id"])
                .collect();
            assert_eq!(source.len(), 1, "{sink}");
            assert!(source[0]["ts"].as_f64() <= sink["ts"].as_f64());
            assert_eq!(source[0]["tid"], sink["args"]["launch_tid"]);
        }
        // The graph launch fans out to both its kernels.
        let graph: Vec<&&Value> = sinks.iter().filter(|e| e["name"] == "softmax").collect();
        assert_eq!(graph[0]["bind_id"], graph[1]["bind_id"]);
        let span = sources
            .iter()
            .find(|e| e["bind_id"] == graph[0]["bind_id"])
            .unwrap();
        assert_eq!(span["name"], "cudaGraphLaunch");
        assert_eq!(
            span["ts"].as_f64(),
            Some(rec.spans[3].start_ns as f64 / 1000.0)
        );
        // Ops with no known launch have no flow.
        assert!(events
            .iter()
            .filter(|e| e["cat"] == "gpu" && e["args"]["launch"].is_null())
            .all(|e| e.get("bind_id").is_none()));
    }
}
