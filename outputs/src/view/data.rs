//! The viewer's data: a [`Recording`] turned into the compact, columnar JSON the page reads.
//!
//! Everything the page draws lives in *tracks* grouped under *groups* (a process, or a GPU). A track holds any of these components, each a set of parallel columns sorted by
//! time, with times in nanoseconds relative to `meta.start_ns` and **delta-encoded** (each
//! value is the difference from the previous one, the first from 0), so a million spans cost
//! a few bytes each:
//!
//! ```text
//! {
//!   "v": 1,
//!   "meta":   {"command", "mode", "target_pid", "start_ns" (a string: it can exceed 2^53),
//!              "dur_ns", "start_unix_ms", "frequency_hz", "off_cpu", "kernel", "hostname",
//!              "cpus", "end_reason", "exit_status", "version", "lost": {...}},
//!   "sets":   [{"id": "cpu", "title", "unit": "samples"|"ns", "interval": bool, "hz"}],
//!   "groups": [{"kind": "process", "title", "sub", "pid", "cmd"} | {"kind": "gpu", "title",
//!              "sub", "device"}],
//!   "tracks": [{"group", "kind": "thread"|"spans"|"counter", "title", "sub", "pid", "tid",
//!       (GPU tracks: "device", "stream", "context")
//!       "spans": {"s": starts Δ, "d": durations, "n": name (string index), "l": depth,
//!                 "ac": argument count, "a": arguments (flat), "r": return value or null,
//!                 "t": attributes (string index + 1 of their JSON; 0: none)},
//!       "ev":    {"t": times Δ, "k": kind (string index), "m": message (string index),
//!                 "v": value or null, "st": stack or -1},
//!       "lg":    {"t": times Δ, "lv": level (0 none, 1 DEBUG .. 5 FATAL), "m": message,
//!                 "o": stream (0 stdout, 1 stderr)},
//!       "sm":    {"<set id>": {"t": times Δ, "s": stack, "w": weights (absent: all 1)}},
//!                (sets: `cpu`, `off_cpu`, `memory`: allocations, weights in bytes)
//!       "c":     {"unit", "t": times Δ, "v": values},
//!       "gpu":   {"c": correlation, "q": queue delay ns or null, "lt": launching thread's
//!                 track or -1, "li": launch span's index in it or -1, "la": API or -1}}],
//!   "frames": {"n": name, "m": module (-1: none), "k": 0 user 1 kernel 2 jit 3 unknown,
//!              "i": inlined 0/1, "f": file (-1: none), "ln": line (0: none)},
//!   "stacks": {"o": offsets into "f" (one more than there are stacks), "f": frames, root first},
//!   "probes": [{"spec", "path", "function", "args", "pack"}],
//!   "report": the report JSON, verbatim,
//!   "strings": [the string table every "string index" refers to]
//! }
//! ```
//!
//! Integers that do not fit a JavaScript number exactly (beyond ±2^53: pointers, `-1` as
//! unsigned) are written as hexadecimal strings. Columns no item uses (`ac`/`a` without
//! arguments, `r` without return values, `t` without attributes) are left out. A GPU stream is a
//! `"spans"` track in a `"gpu"` group whose spans are the stream's operations, with a `"gpu"`
//! component (`view/gpu.rs`); a process's LLM API calls are a `"spans"` track in its group
//! (`view/llm.rs`); an NVML reading is a `"counter"` track there, and GPU samples
//! would be another entry of `sets`: the page draws each kind of component wherever it appears.
use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use super::encode::{column, deltas, json, key, rel, write_int, Strings};
use super::stacks;
use crate::{
    logs::{Level, Stream},
    recording::{Recording, SampleKind},
};

/// Version of the page's data layout, checked by the page.
const DATA_VERSION: u32 = 1;

/// Points a CPU-usage counter aims for over the whole recording.
const COUNTER_POINTS: u64 = 600;

/// One thread's items, as indices into the recording's vectors.
#[derive(Default)]
struct ThreadItems {
    spans: Vec<usize>,
    events: Vec<usize>,
    logs: Vec<usize>,
    cpu: Vec<usize>,
    off_cpu: Vec<usize>,
    /// Allocations with their stack (`--memory`, CUDA packs): (time, stack, bytes).
    memory: Vec<(u64, u32, u64)>,
}

/// A process and its threads, in display order.
struct Group {
    pid: u32,
    threads: Vec<(u32, ThreadItems)>,
}

/// Groups processes and threads: the target first, then by pid; in a process the main thread
/// first, then by tid. Threads seen only in items (never named) get a track too.
fn group(rec: &Recording) -> Vec<Group> {
    let mut by_thread: BTreeMap<(u32, u32), ThreadItems> = BTreeMap::new();
    for p in &rec.processes {
        by_thread.entry((p.pid, p.pid)).or_default();
    }
    for t in &rec.threads {
        by_thread.entry((t.pid, t.tid)).or_default();
    }
    // tid 0 means "the process": put it on the main thread.
    let key = |pid: u32, tid: u32| (pid, if tid == 0 { pid } else { tid });
    for (i, s) in rec.spans.iter().enumerate() {
        by_thread
            .entry(key(s.pid, s.tid))
            .or_default()
            .spans
            .push(i);
    }
    for (i, e) in rec.events.iter().enumerate() {
        by_thread
            .entry(key(e.pid, e.tid))
            .or_default()
            .events
            .push(i);
    }
    for (i, l) in rec.logs.iter().enumerate() {
        by_thread.entry(key(l.pid, l.tid)).or_default().logs.push(i);
    }
    for (i, s) in rec.samples.iter().enumerate() {
        let items = by_thread.entry(key(s.pid, s.tid)).or_default();
        match s.kind {
            SampleKind::Cpu => items.cpu.push(i),
            SampleKind::OffCpu => items.off_cpu.push(i),
        }
    }
    for e in crate::recording::memory::all_events(rec)
        .into_iter()
        .filter(|e| {
            e.kind == crate::recording::memory::MemEventKind::Alloc && e.source.class().is_held()
        })
    {
        if let Some(stack) = e.stack {
            by_thread
                .entry(key(e.pid, e.tid))
                .or_default()
                .memory
                .push((e.time_ns, stack, e.bytes));
        }
    }
    let mut groups: Vec<Group> = Vec::new();
    for ((pid, tid), mut items) in by_thread {
        items.spans.sort_by_key(|&i| rec.spans[i].start_ns);
        items.events.sort_by_key(|&i| rec.events[i].time_ns);
        items.logs.sort_by_key(|&i| rec.logs[i].time_ns);
        items.cpu.sort_by_key(|&i| rec.samples[i].time_ns);
        items.off_cpu.sort_by_key(|&i| rec.samples[i].time_ns);
        match groups.last_mut() {
            Some(g) if g.pid == pid => g.threads.push((tid, items)),
            _ => groups.push(Group {
                pid,
                threads: vec![(tid, items)],
            }),
        }
    }
    for g in &mut groups {
        // The main thread first; the rest stay in tid order (the sort is stable).
        g.threads.sort_by_key(|(tid, _)| *tid != g.pid);
    }
    let target = rec.meta.target_pid;
    groups.sort_by_key(|g| g.pid != target);
    groups
}

/// Writes the data object for `rec` with `report` embedded verbatim.
pub(super) fn write_data(
    rec: &Recording,
    report: &serde_json::Value,
    w: &mut dyn Write,
) -> io::Result<()> {
    let mut strings = Strings::default();
    let groups = group(rec);
    write!(w, "{{\"v\":{DATA_VERSION},\"meta\":")?;
    write_meta(rec, w)?;
    w.write_all(b",\"sets\":")?;
    let mut sets = vec![serde_json::json!({
        "id": "cpu", "title": "CPU", "unit": "samples", "interval": false,
        "hz": rec.meta.frequency_hz,
    })];
    if rec.meta.off_cpu || rec.samples.iter().any(|s| s.kind == SampleKind::OffCpu) {
        sets.push(serde_json::json!({
            "id": "off_cpu", "title": "Off-CPU", "unit": "ns", "interval": true,
        }));
    }
    if groups
        .iter()
        .any(|g| g.threads.iter().any(|(_, t)| !t.memory.is_empty()))
    {
        sets.push(serde_json::json!({
            "id": "memory", "title": "Memory allocated", "unit": "bytes", "interval": false,
        }));
    }
    json(w, &sets)?;
    w.write_all(b",\"groups\":[")?;
    for (gi, g) in groups.iter().enumerate() {
        if gi > 0 {
            w.write_all(b",")?;
        }
        let proc = rec.processes.iter().find(|p| p.pid == g.pid);
        json(
            w,
            &serde_json::json!({
                "kind": "process",
                "title": rec.process_name(g.pid),
                "sub": format!("pid {}", g.pid),
                "pid": g.pid,
                "cmd": proc.and_then(|p| p.cmdline.as_deref()),
            }),
        )?;
    }
    // One group per GPU that NVML counters or GPU ops name, after the processes.
    let gpus: std::collections::BTreeSet<u32> = rec
        .counters
        .iter()
        .map(|c| c.device.unwrap_or(0))
        .chain(super::gpu::devices(rec))
        .collect();
    for (i, d) in gpus.iter().enumerate() {
        if !groups.is_empty() || i > 0 {
            w.write_all(b",")?;
        }
        json(
            w,
            &serde_json::json!({"kind": "gpu", "title": format!("GPU {d}"),
                "sub": super::gpu::group_sub(rec, *d), "device": d}),
        )?;
    }
    let gpu_group =
        |device: u32| groups.len() + gpus.iter().position(|&d| d == device).unwrap_or(0);
    w.write_all(b"],\"tracks\":[")?;
    let mut first_track = true;
    // Track indices of threads and positions of spans, for GPU ops to name their launch.
    let mut launches = super::gpu::LaunchIndex::new(rec);
    let mut track = 0;
    for (gi, g) in groups.iter().enumerate() {
        for (tid, items) in &g.threads {
            if !std::mem::take(&mut first_track) {
                w.write_all(b",")?;
            }
            write_thread_track(rec, gi, g.pid, *tid, items, &mut strings, w)?;
            launches.add_thread(g.pid, *tid, track, &items.spans);
            track += 1;
        }
        if let Some(counter) = cpu_counter(rec, g) {
            track += 1;
            w.write_all(b",")?;
            write!(
                w,
                "{{\"group\":{gi},\"kind\":\"counter\",\"title\":\"CPU usage\",\"sub\":\"% of one CPU\",\"pid\":{},\"c\":{{\"unit\":\"%\",",
                g.pid
            )?;
            let mut first = true;
            column(w, &mut first, "t", &deltas(counter.iter().map(|p| p.0)))?;
            column(
                w,
                &mut first,
                "v",
                &counter.iter().map(|p| p.1).collect::<Vec<_>>(),
            )?;
            w.write_all(b"}}")?;
        }
    }
    for c in rec.counters.iter().filter(|c| !c.points.is_empty()) {
        let gi = gpu_group(c.device.unwrap_or(0));
        if !std::mem::take(&mut first_track) {
            w.write_all(b",")?;
        }
        write!(w, "{{\"group\":{gi},\"kind\":\"counter\",\"title\":")?;
        json(w, &c.name)?;
        w.write_all(b",\"sub\":")?;
        json(w, &c.unit)?;
        w.write_all(b",\"c\":{\"unit\":")?;
        json(w, &c.unit)?;
        let mut first = false;
        column(
            w,
            &mut first,
            "t",
            &deltas(c.points.iter().map(|p| rel(rec, p.0))),
        )?;
        column(
            w,
            &mut first,
            "v",
            &c.points.iter().map(|p| p.1).collect::<Vec<_>>(),
        )?;
        w.write_all(b"}}")?;
    }
    super::llm::write_tracks(
        rec,
        &|pid| groups.iter().position(|g| g.pid == pid),
        &mut strings,
        w,
        &mut first_track,
    )?;
    super::gpu::write_tracks(
        rec,
        &launches,
        &gpu_group,
        &mut strings,
        w,
        &mut first_track,
    )?;
    w.write_all(b"],\"frames\":")?;
    stacks::write_frames(rec, &mut strings, w)?;
    w.write_all(b",\"stacks\":")?;
    let mut offsets = Vec::with_capacity(rec.stacks.len() + 1);
    let mut flat = Vec::new();
    offsets.push(0);
    for s in &rec.stacks {
        flat.extend_from_slice(s);
        offsets.push(flat.len());
    }
    let mut first = true;
    w.write_all(b"{")?;
    column(w, &mut first, "o", &offsets)?;
    column(w, &mut first, "f", &flat)?;
    w.write_all(b"},\"probes\":")?;
    json(w, &rec.probes)?;
    w.write_all(b",\"report\":")?;
    json(w, report)?;
    w.write_all(b",\"strings\":")?;
    json(w, &strings.list())?;
    w.write_all(b"}")
}

fn write_meta(rec: &Recording, w: &mut dyn Write) -> io::Result<()> {
    let m = &rec.meta;
    json(
        w,
        &serde_json::json!({
            "command": m.command,
            "mode": m.mode,
            "target_pid": m.target_pid,
            "start_ns": m.start_ns.to_string(),
            "dur_ns": rec.duration_ns(),
            "start_unix_ms": m.start_unix_ms,
            "frequency_hz": m.frequency_hz,
            "off_cpu": m.off_cpu,
            "kernel": m.kernel,
            "hostname": m.hostname,
            "cpus": m.cpus,
            "end_reason": m.end_reason,
            "exit_status": m.exit_status,
            "version": m.modelprobe_version,
            "lost": m.lost,
        }),
    )
}

fn thread_name(rec: &Recording, pid: u32, tid: u32) -> String {
    rec.thread_name(pid, tid)
}

fn write_thread_track(
    rec: &Recording,
    gi: usize,
    pid: u32,
    tid: u32,
    items: &ThreadItems,
    strings: &mut Strings,
    w: &mut dyn Write,
) -> io::Result<()> {
    let mut first = true;
    w.write_all(b"{")?;
    column(w, &mut first, "group", &gi)?;
    column(w, &mut first, "kind", &"thread")?;
    column(w, &mut first, "title", &thread_name(rec, pid, tid))?;
    column(w, &mut first, "sub", &format!("tid {tid}"))?;
    column(w, &mut first, "pid", &pid)?;
    column(w, &mut first, "tid", &tid)?;
    if !items.spans.is_empty() {
        w.write_all(b",\"spans\":")?;
        write_spans(rec, &items.spans, strings, w)?;
    }
    if !items.events.is_empty() {
        w.write_all(b",\"ev\":")?;
        write_events(rec, &items.events, strings, w)?;
    }
    if !items.logs.is_empty() {
        w.write_all(b",\"lg\":")?;
        write_logs(rec, &items.logs, strings, w)?;
    }
    if !items.cpu.is_empty() || !items.off_cpu.is_empty() || !items.memory.is_empty() {
        w.write_all(b",\"sm\":{")?;
        let mut first = true;
        for (id, idx) in [("cpu", &items.cpu), ("off_cpu", &items.off_cpu)] {
            if idx.is_empty() {
                continue;
            }
            key(w, &mut first, id)?;
            stacks::write_samples(rec, idx, w)?;
        }
        if !items.memory.is_empty() {
            key(w, &mut first, "memory")?;
            let mut inner = true;
            w.write_all(b"{")?;
            let mut m = items.memory.clone();
            m.sort_by_key(|p| p.0);
            column(w, &mut inner, "t", &deltas(m.iter().map(|p| rel(rec, p.0))))?;
            column(
                w,
                &mut inner,
                "s",
                &m.iter().map(|p| p.1).collect::<Vec<_>>(),
            )?;
            column(
                w,
                &mut inner,
                "w",
                &m.iter().map(|p| p.2).collect::<Vec<_>>(),
            )?;
            w.write_all(b"}")?;
        }
        w.write_all(b"}")?;
    }
    w.write_all(b"}")
}

fn write_spans(
    rec: &Recording,
    idx: &[usize],
    strings: &mut Strings,
    w: &mut dyn Write,
) -> io::Result<()> {
    let spans = || idx.iter().map(|&i| &rec.spans[i]);
    let names: Vec<u32> = rec.probes.iter().map(|p| strings.id(&p.function)).collect();
    let mut first = true;
    w.write_all(b"{")?;
    column(
        w,
        &mut first,
        "s",
        &deltas(spans().map(|s| rel(rec, s.start_ns))),
    )?;
    let durs: Vec<u64> = spans()
        .map(|s| s.end_ns.saturating_sub(s.start_ns))
        .collect();
    column(w, &mut first, "d", &durs)?;
    let name_of = |s: &crate::recording::Span| match names.get(s.probe as usize) {
        Some(&n) => n,
        None => u32::MAX,
    };
    let mut name_col: Vec<u32> = spans().map(name_of).collect();
    if name_col.contains(&u32::MAX) {
        let unknown = strings.id("[unknown probe]");
        name_col
            .iter_mut()
            .filter(|n| **n == u32::MAX)
            .for_each(|n| *n = unknown);
    }
    column(w, &mut first, "n", &name_col)?;
    column(
        w,
        &mut first,
        "l",
        &spans().map(|s| s.depth).collect::<Vec<_>>(),
    )?;
    if spans().any(|s| !s.args.is_empty()) {
        column(
            w,
            &mut first,
            "ac",
            &spans().map(|s| s.args.len()).collect::<Vec<_>>(),
        )?;
        key(w, &mut first, "a")?;
        w.write_all(b"[")?;
        for (i, a) in spans().flat_map(|s| &s.args).enumerate() {
            if i > 0 {
                w.write_all(b",")?;
            }
            write_int(w, *a)?;
        }
        w.write_all(b"]")?;
    }
    if spans().any(|s| s.ret.is_some()) {
        key(w, &mut first, "r")?;
        w.write_all(b"[")?;
        for (i, s) in spans().enumerate() {
            if i > 0 {
                w.write_all(b",")?;
            }
            match s.ret {
                Some(r) => write_int(w, r)?,
                None => w.write_all(b"null")?,
            }
        }
        w.write_all(b"]")?;
    }
    if spans().any(|s| !s.attrs.is_empty()) {
        let mut attrs = Vec::with_capacity(idx.len());
        let mut text = Vec::new();
        for s in spans() {
            attrs.push(if s.attrs.is_empty() {
                0
            } else {
                text.clear();
                serde_json::to_writer(&mut text, &s.attrs).map_err(io::Error::from)?;
                let text = std::str::from_utf8(&text).expect("serde_json writes UTF-8");
                strings.id(text) + 1
            });
        }
        column(w, &mut first, "t", &attrs)?;
    }
    w.write_all(b"}")
}

fn write_events(
    rec: &Recording,
    idx: &[usize],
    strings: &mut Strings,
    w: &mut dyn Write,
) -> io::Result<()> {
    let events = || idx.iter().map(|&i| &rec.events[i]);
    let mut first = true;
    w.write_all(b"{")?;
    column(
        w,
        &mut first,
        "t",
        &deltas(events().map(|e| rel(rec, e.time_ns))),
    )?;
    let kinds: Vec<u32> = events().map(|e| strings.id(e.kind.name())).collect();
    column(w, &mut first, "k", &kinds)?;
    let messages: Vec<u32> = events().map(|e| strings.id(&e.message)).collect();
    column(w, &mut first, "m", &messages)?;
    column(
        w,
        &mut first,
        "v",
        &events().map(|e| e.value).collect::<Vec<_>>(),
    )?;
    column(
        w,
        &mut first,
        "st",
        &events()
            .map(|e| e.stack.map_or(-1, i64::from))
            .collect::<Vec<_>>(),
    )?;
    w.write_all(b"}")
}

fn write_logs(
    rec: &Recording,
    idx: &[usize],
    strings: &mut Strings,
    w: &mut dyn Write,
) -> io::Result<()> {
    let logs = || idx.iter().map(|&i| &rec.logs[i]);
    let mut first = true;
    w.write_all(b"{")?;
    column(
        w,
        &mut first,
        "t",
        &deltas(logs().map(|l| rel(rec, l.time_ns))),
    )?;
    let level = |l: Option<Level>| match l {
        None => 0,
        Some(Level::Debug) => 1,
        Some(Level::Info) => 2,
        Some(Level::Warn) => 3,
        Some(Level::Error) => 4,
        Some(Level::Fatal) => 5,
    };
    column(
        w,
        &mut first,
        "lv",
        &logs().map(|l| level(l.level)).collect::<Vec<u8>>(),
    )?;
    let messages: Vec<u32> = logs().map(|l| strings.id(&l.message)).collect();
    column(w, &mut first, "m", &messages)?;
    column(
        w,
        &mut first,
        "o",
        &logs()
            .map(|l| u8::from(l.stream == Stream::Stderr))
            .collect::<Vec<_>>(),
    )?;
    w.write_all(b"}")
}

/// A process's CPU use over time, as `(relative time, % of one CPU)` points, one per bin; none
/// without CPU samples or a known sampling frequency.
fn cpu_counter(rec: &Recording, g: &Group) -> Option<Vec<(i64, f64)>> {
    let hz = rec.meta.frequency_hz;
    let times: Vec<i64> = {
        let mut t: Vec<i64> = g
            .threads
            .iter()
            .flat_map(|(_, items)| &items.cpu)
            .map(|&i| rel(rec, rec.samples[i].time_ns))
            .collect();
        t.sort_unstable();
        t
    };
    if hz == 0 || times.is_empty() {
        return None;
    }
    let end = times[times.len() - 1].max(rec.duration_ns() as i64);
    let start = times[0].min(0);
    // Wide enough to hold several samples per bin, narrow enough to show phases.
    let bin = ((end - start) as u64 / COUNTER_POINTS)
        .max(10 * 1_000_000_000 / hz)
        .max(1) as i64;
    let bins = ((end - start) / bin + 1) as usize;
    let mut counts = vec![0u64; bins];
    for t in &times {
        counts[((t - start) / bin) as usize] += 1;
    }
    let full = hz as f64 * bin as f64 / 1e9;
    let mut points: Vec<(i64, f64)> = counts
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let pct = 100.0 * n as f64 / full;
            (start + i as i64 * bin, (pct * 10.0).round() / 10.0)
        })
        .collect();
    // A last point where the last bin ends, so the final step has a width.
    if let Some(&(_, v)) = points.last() {
        points.push((start + bins as i64 * bin, v));
    }
    Some(points)
}
