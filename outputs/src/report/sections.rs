//! The headline and each section of a report, computed from a recording.
use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::{function_shares, llama_phases, ms, quantile, round, Section};

/// Sums without overflowing (a recording read from disk may hold any values).
fn sum<'a>(values: impl IntoIterator<Item = &'a u64>) -> u64 {
    values.into_iter().fold(0, |a, &b| a.saturating_add(b))
}

fn add(total: &mut u64, x: u64) {
    *total = total.saturating_add(x);
}
use crate::{
    logs::Level,
    recording::{EventKind, FrameKind, Recording, SampleKind},
};

fn pct(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * n as f64 / total as f64
    }
}

fn seconds(ns: u64) -> String {
    format!("{:.3} s", ns as f64 / 1e9)
}

/// Key figures: what was recorded, for how long, and what it cost.
pub(super) fn headline(rec: &Recording) -> Vec<(String, String)> {
    let m = &rec.meta;
    let mut h = Vec::new();
    let mut push = |k: &str, v: String| h.push((k.to_string(), v));
    push(
        "command",
        if m.command.is_empty() {
            "?".into()
        } else {
            m.command.clone()
        },
    );
    let mut target = format!("pid {} ({})", m.target_pid, m.mode);
    if let Some(status) = m.exit_status {
        target.push_str(&format!(", exit status {status}"));
    }
    push("target", target);
    push(
        "wall time",
        format!("{} (stopped: {})", seconds(rec.duration_ns()), m.end_reason),
    );
    let samples = rec.cpu_sample_count();
    push(
        "samples",
        format!("{samples} CPU samples at {} Hz", m.frequency_hz),
    );
    // The scheduler's own count when the recording has it: true whatever samples were lost.
    let accounted = rec
        .threads
        .iter()
        .filter_map(|t| t.cpu_ns)
        .reduce(u64::saturating_add);
    let estimated = (samples as u128 * 1_000_000_000)
        .checked_div(m.frequency_hz as u128)
        .map(|ns| ns.min(u64::MAX as u128) as u64);
    let cpu = accounted
        .map(|ns| (ns, "scheduler's count"))
        .or(estimated.map(|ns| (ns, "estimated from samples")));
    if let Some((cpu_ns, source)) = cpu {
        let cores = cpu_ns as f64 / rec.duration_ns().max(1) as f64;
        push(
            "CPU time",
            format!(
                "{} ({cores:.2} cores busy on average, {:.1}% of {} CPUs; {source})",
                seconds(cpu_ns),
                100.0 * cores / m.cpus.max(1) as f64,
                m.cpus
            ),
        );
    }
    if m.off_cpu {
        let mut line = format!("{} blocked", seconds(rec.off_cpu_ns()));
        if let Some(st) = m.off_cpu_stats {
            line.push_str(&format!(
                " ({} blocks: {} on the timeline, {} summed by thread and stack in the kernel)",
                st.events + st.summed,
                st.events,
                st.summed
            ));
        }
        let dropped = m.lost.off_cpu_events + m.lost.off_cpu_untracked;
        if dropped > 0 {
            line.push_str(&format!(
                "; {dropped} block(s) not counted (kernel tables full): blocked time is a lower bound"
            ));
        }
        push("off-CPU time", line);
    }
    push(
        "processes, threads",
        format!("{}, {}", rec.processes.len(), rec.threads.len()),
    );
    if !rec.probes.is_empty() {
        push(
            "spans",
            format!("{} from {} probes", rec.spans.len(), rec.probes.len()),
        );
    }
    if !rec.events.is_empty() {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &rec.events {
            *counts.entry(e.kind.name()).or_default() += 1;
        }
        let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        push("events", parts.join(", "));
    }
    if let Some(gpu) = super::gpu::headline(rec) {
        push("GPU", gpu);
    }
    if let Some(llm) = super::llm::headline(rec) {
        push("LLM calls", llm);
    }
    push("log lines", rec.logs.len().to_string());
    if let Some(a) = m.agent {
        push(
            "agent cost",
            format!(
                "{} CPU while recording ({:.2}% of one CPU), {} with symbolization; peak RSS {:.1} MiB",
                seconds(a.recording_cpu_ns),
                pct(a.recording_cpu_ns, rec.duration_ns()),
                seconds(a.total_cpu_ns),
                a.peak_rss_kib as f64 / 1024.0
            ),
        );
    }
    if let Some(u) = &m.unwind {
        push(
            "unwind tables",
            format!(
                "{} objects, {} rows of {}, {:.1} MiB kernel memory, built in {}",
                u.objects,
                u.rows,
                u.capacity_rows,
                u.kernel_bytes as f64 / (1 << 20) as f64,
                seconds(u.build_ms.saturating_mul(1_000_000))
            ),
        );
    }
    push("lost", format!("{} records dropped", m.lost.dropped()));
    h
}

/// Top functions by self time, or by total time.
pub(super) fn top_functions(rec: &Recording, top: usize, by_total: bool) -> Section {
    let samples = rec.cpu_sample_count();
    let mut rows = function_shares(rec);
    let mut s = if by_total {
        rows.sort_by(|a, b| (b.total_samples, &a.name).cmp(&(a.total_samples, &b.name)));
        Section::table(
            "top_total",
            "Top functions by total time",
            &["total %", "self %", "samples", "function"],
        )
    } else {
        Section::table(
            "top_self",
            "Top functions by self time",
            &["self %", "total %", "samples", "function"],
        )
    };
    for r in rows
        .iter()
        .filter(|r| by_total || r.self_samples > 0)
        .take(top)
    {
        let (first, second, n) = if by_total {
            (r.total_samples, r.self_samples, r.total_samples)
        } else {
            (r.self_samples, r.total_samples, r.self_samples)
        };
        s.rows.push(vec![
            round(pct(first, samples), 1),
            round(pct(second, samples), 1),
            json!(n),
            json!(r.name),
        ]);
    }
    s.or_absent("no CPU samples: the target was idle or exited at once")
}

/// Where threads blocked, by the innermost user-space function.
pub(super) fn off_cpu(rec: &Recording, top: usize) -> Section {
    let (id, title) = ("off_cpu", "Off-CPU time by blocking function");
    if !rec.meta.off_cpu {
        return Section::absent(id, title, "off-CPU time was not recorded (use --off-cpu)");
    }
    let total = rec.off_cpu_ns();
    let mut by_fn: HashMap<&str, u64> = HashMap::new();
    for s in rec.samples.iter().filter(|s| s.kind == SampleKind::OffCpu) {
        let frame = rec.stacks[s.stack as usize]
            .iter()
            .rev()
            .map(|&f| &rec.frames[f as usize])
            .find(|f| f.kind != FrameKind::Kernel);
        add(
            by_fn
                .entry(frame.map_or("[kernel only]", |f| f.name.as_str()))
                .or_default(),
            s.weight,
        );
    }
    let mut rows: Vec<(&str, u64)> = by_fn.into_iter().collect();
    rows.sort_by(|a, b| (b.1, a.0).cmp(&(a.1, b.0)));
    let mut s = Section::table(id, title, &["blocked ms", "% of blocked", "function"]);
    for (name, ns) in rows.into_iter().take(top) {
        s.rows
            .push(vec![ms(ns), round(pct(ns, total), 1), json!(name)]);
    }
    s.or_absent("no thread blocked while recording")
}

/// Count, latency percentiles and errors per span name.
pub(super) fn spans(rec: &Recording) -> Section {
    let (id, title) = ("spans", "Spans");
    if rec.probes.is_empty() {
        return Section::absent(
            id,
            title,
            "no span probes were attached (use --probe TARGET:SYMBOL, or trace a process that loads CUDA or llama.cpp)",
        );
    }
    // (name, pack) -> (durations, errors)
    let mut groups: BTreeMap<(&str, &str), (Vec<u64>, u64)> = BTreeMap::new();
    for span in &rec.spans {
        let p = &rec.probes[span.probe as usize];
        let g = groups
            .entry((p.function.as_str(), p.pack.as_deref().unwrap_or("")))
            .or_default();
        g.0.push(span.end_ns - span.start_ns);
        g.1 += span.attrs.contains_key("error") as u64;
    }
    let mut rows: Vec<_> = groups.into_iter().collect();
    rows.sort_by_key(|(_, (d, _))| std::cmp::Reverse(sum(d)));
    let mut s = Section::table(
        id,
        title,
        &[
            "span", "pack", "count", "total ms", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms",
            "errors", "error %",
        ],
    );
    for ((name, pack), (mut d, errors)) in rows {
        d.sort_unstable();
        let total = sum(&d);
        let n = d.len() as u64;
        s.rows.push(vec![
            json!(name),
            json!(pack),
            json!(n),
            ms(total),
            ms(total / n.max(1)),
            ms(quantile(&d, 0.5)),
            ms(quantile(&d, 0.95)),
            ms(quantile(&d, 0.99)),
            ms(*d.last().unwrap_or(&0)),
            json!(errors),
            round(pct(errors, n), 2),
        ]);
    }
    s.or_absent(format!(
        "{} probes attached; none was called while recording",
        rec.probes.len()
    ))
}

/// CUDA kernel launches seen on the CPU side, by kernel.
pub(super) fn kernel_launches(rec: &Recording, top: usize) -> Section {
    let mut by_kernel: HashMap<&str, (u64, u64)> = HashMap::new();
    for span in &rec.spans {
        if let Some(k) = span.attrs.get("kernel").and_then(Value::as_str) {
            let e = by_kernel.entry(k).or_default();
            e.0 += 1;
            add(&mut e.1, span.end_ns - span.start_ns);
        }
    }
    let mut rows: Vec<_> = by_kernel.into_iter().collect();
    rows.sort_by(|a, b| (b.1 .0, a.0).cmp(&(a.1 .0, b.0)));
    let mut s = Section::table(
        "kernel_launches",
        "CUDA kernel launches (CPU side)",
        &["launches", "launch total ms", "mean launch us", "kernel"],
    );
    for (name, (n, ns)) in rows.into_iter().take(top) {
        s.rows.push(vec![
            json!(n),
            ms(ns),
            round(ns as f64 / n as f64 / 1e3, 2),
            json!(name),
        ]);
    }
    s.or_absent("no CUDA kernel launches traced")
}

/// CUDA memory copies by direction; bandwidth from the synchronous ones.
pub(super) fn memcpy(rec: &Recording) -> Section {
    #[derive(Default)]
    struct Dir {
        calls: u64,
        bytes: u64,
        sync_bytes: u64,
        sync_ns: u64,
    }
    let mut by_dir: BTreeMap<String, Dir> = BTreeMap::new();
    for span in &rec.spans {
        let (Some(bytes), Some(dir)) = (
            span.attrs.get("bytes").and_then(Value::as_u64),
            span.attrs.get("direction").and_then(Value::as_str),
        ) else {
            continue;
        };
        let d = by_dir.entry(dir.to_string()).or_default();
        d.calls += 1;
        add(&mut d.bytes, bytes);
        if !rec.probes[span.probe as usize].function.contains("Async") {
            add(&mut d.sync_bytes, bytes);
            add(&mut d.sync_ns, span.end_ns - span.start_ns);
        }
    }
    let mut s = Section::table(
        "memcpy",
        "CUDA memory copies",
        &[
            "direction",
            "calls",
            "bytes",
            "MiB",
            "sync copy ms",
            "sync GB/s",
        ],
    );
    for (dir, d) in by_dir {
        let gbps = if d.sync_ns == 0 {
            Value::Null
        } else {
            round(d.sync_bytes as f64 / d.sync_ns as f64, 3)
        };
        s.rows.push(vec![
            json!(dir),
            json!(d.calls),
            json!(d.bytes),
            round(d.bytes as f64 / 1048576.0, 2),
            ms(d.sync_ns),
            gbps,
        ]);
    }
    s.or_absent("no CUDA memory copies traced")
}

/// Tokens per second from llama.cpp.
pub(super) fn tokens(rec: &Recording) -> Section {
    let (id, title) = ("tokens", "Token throughput (llama.cpp)");
    let Some(phases) = llama_phases(rec) else {
        return Section::absent(
            id,
            title,
            "no token source in this recording (the llama.cpp pack reads llama_decode)",
        );
    };
    let mut s = Section::table(id, title, &["phase", "calls", "tokens", "ms", "tokens/s"]);
    for (name, p) in phases {
        s.rows.push(vec![
            json!(name),
            json!(p.calls),
            json!(p.tokens),
            ms(p.ns),
            round(p.rate(), 1),
        ]);
    }
    s
}

/// Errors, model loads, fatal signals and execs, in time order.
pub(super) fn events(rec: &Recording, top: usize) -> Section {
    let mut s = Section::table(
        "events",
        "Events: errors, model loads, signals, execs",
        &["t s", "pid", "kind", "message"],
    );
    for e in rec
        .events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::FatalSignal
                    | EventKind::Signal
                    | EventKind::Exec
                    | EventKind::ModelLoad
                    | EventKind::ApiError
                    | EventKind::Stopped
                    | EventKind::OomKill
                    | EventKind::Oom
                    | EventKind::PythonException
            )
        })
        .take(top)
    {
        s.rows.push(vec![
            round(e.time_ns.saturating_sub(rec.meta.start_ns) as f64 / 1e9, 3),
            json!(e.pid),
            json!(e.kind.name()),
            json!(e.message),
        ]);
    }
    s.or_absent("no errors, model loads, signals or execs")
}

/// Log lines per level, with the first of each.
pub(super) fn logs(rec: &Recording) -> Section {
    let mut s = Section::table("logs", "Logs by level", &["level", "lines", "first line"]);
    let levels = [
        Some(Level::Fatal),
        Some(Level::Error),
        Some(Level::Warn),
        Some(Level::Info),
        Some(Level::Debug),
        None,
    ];
    for level in levels {
        let mut lines = rec.logs.iter().filter(|l| l.level == level);
        if let Some(first) = lines.next() {
            s.rows.push(vec![
                json!(level.map_or("(none)", Level::name)),
                json!(1 + lines.count()),
                json!(first.message),
            ]);
        }
    }
    s.or_absent("no log lines captured (--no-logs, or the target printed nothing)")
}

/// Everything dropped, by cause.
pub(super) fn lost(rec: &Recording) -> Section {
    let l = &rec.meta.lost;
    let mut s = Section::table("lost", "Lost data", &["what", "count"]);
    let mut row = |what: &str, n: u64| s.rows.push(vec![json!(what), json!(n)]);
    row("CPU samples (ring buffer full)", l.cpu_samples);
    if rec.meta.off_cpu {
        row(
            "blocked intervals not summed (sum table full)",
            l.off_cpu_events,
        );
        row(
            "blocked intervals untracked (blocked-thread table full)",
            l.off_cpu_untracked,
        );
        row(
            "off-CPU stacks evicted before read (time kept, stack unknown)",
            l.off_cpu_stacks_evicted,
        );
    }
    row("child processes not followed", l.children_untracked);
    if !rec.memory.is_empty() || l.memory_events > 0 {
        row(
            "memory events (ring buffer or pending table full)",
            l.memory_events,
        );
    }
    if !rec.probes.is_empty() {
        row("span records", l.span_records);
        row("returns without an entry", l.unmatched_span_returns);
    }
    let python_probes = rec.probes.iter().any(|p| p.spec.starts_with("py:"));
    if python_probes || l.python_span_records + l.python_events_reentered + l.python_values_cut > 0
    {
        row("Python span records (ring full)", l.python_span_records);
        row(
            "Python events inside a callback (a repr calling a probe)",
            l.python_events_reentered,
        );
        row("Python values cut to 256 bytes", l.python_values_cut);
    }
    row("process/thread records", l.task_records);
    row("log writes", l.log_writes);
    row("log bytes cut (over-long lines)", l.log_bytes_cut);
    row("file opens", l.file_opens);
    if !rec.gpu.is_empty() || l.gpu_records > 0 {
        row("GPU activity records (CUPTI)", l.gpu_records);
    }
    if !rec.llm.is_empty() || l.tls_records + l.tls_calls_untracked > 0 {
        row("TLS plaintext records (ring buffer full)", l.tls_records);
        row("TLS calls untracked (table full)", l.tls_calls_untracked);
    }
    row("user stacks unreadable", l.user_stack_errors);
    row("kernel stacks unreadable", l.kernel_stack_errors);
    row(
        "user stacks cut at the depth limit",
        l.user_stacks_truncated,
    );
    row(
        "user stacks with frames without unwind info",
        l.user_stacks_without_unwind_info,
    );
    row(
        "user stacks stopped at an unsupported rule",
        l.user_stacks_stopped,
    );
    if let Some(p) = &rec.meta.python {
        row("Python stacks cut at the depth limit", p.truncated);
        row(
            "Python stacks stopped at an unreadable frame",
            p.read_errors,
        );
        row(
            "Python code objects unreadable (named by address)",
            p.unreadable_code,
        );
    }
    if let Some(u) = &rec.meta.unwind {
        row(
            "objects left out of the unwind table (full)",
            u.objects_over_capacity,
        );
        row(
            "mappings over the per-process unwind limit",
            u.mappings_over_limit,
        );
        row(
            "processes over the unwind-table limit",
            u.processes_over_limit,
        );
    }
    s
}

/// NVML device metrics: average and maximum of each counter.
pub(super) fn gpu_metrics(rec: &Recording) -> Section {
    let mut s = Section::table(
        "gpu_metrics",
        "GPU utilization and memory (NVML)",
        &["metric", "unit", "avg", "max", "readings"],
    );
    for c in &rec.counters {
        let n = c.points.len();
        if n == 0 {
            continue;
        }
        let sum: f64 = c.points.iter().map(|p| p.1).sum();
        let max = c.points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
        s.rows.push(vec![
            json!(c.name),
            json!(c.unit),
            round(sum / n as f64, 1),
            round(max, 1),
            json!(n),
        ]);
    }
    s.or_absent(
        "no NVML device metrics in this recording (no NVIDIA driver or GPU, or profiling.gpu is off)",
    )
}
