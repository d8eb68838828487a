//! The end-of-run summary: how long, how many samples and threads, where the time went
//! (top functions by self and by total time), and what was lost.
use std::{collections::HashMap, fmt::Write};

use crate::trace::{FrameKind, Recording, SampleKind};

/// One row of a top-functions table.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionShare {
    /// Function name (kernel functions end in ` [k]`).
    pub name: String,
    /// Samples with this function innermost.
    pub self_samples: u64,
    /// Samples with this function anywhere on the stack.
    pub total_samples: u64,
}

/// Per-function CPU sample counts, sorted by self then total samples, descending.
///
/// As in `perf report`, time is attributed to real functions: frames of inlined functions
/// (shown in the flame graph) count toward the function they were inlined into.
pub fn function_shares(rec: &Recording) -> Vec<FunctionShare> {
    let mut by_name: HashMap<String, (u64, u64)> = HashMap::new();
    let mut per_stack: HashMap<u32, u64> = HashMap::new();
    for s in rec.samples.iter().filter(|s| s.kind == SampleKind::Cpu) {
        *per_stack.entry(s.stack).or_default() += 1;
    }
    for (stack, n) in per_stack {
        let frames: Vec<u32> = rec.stacks[stack as usize]
            .iter()
            .copied()
            .filter(|&f| !rec.frames[f as usize].inlined)
            .collect();
        let label = |i: u32| {
            let f = &rec.frames[i as usize];
            if f.kind == FrameKind::Kernel {
                format!("{} [k]", f.name)
            } else {
                f.name.clone()
            }
        };
        let mut seen = Vec::with_capacity(frames.len());
        for &f in &frames {
            let name = label(f);
            if !seen.contains(&name) {
                by_name.entry(name.clone()).or_default().1 += n;
                seen.push(name);
            }
        }
        if let Some(&leaf) = frames.last() {
            by_name.entry(label(leaf)).or_default().0 += n;
        }
    }
    let mut rows: Vec<FunctionShare> = by_name
        .into_iter()
        .map(|(name, (self_samples, total_samples))| FunctionShare {
            name,
            self_samples,
            total_samples,
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.self_samples, b.total_samples, &a.name).cmp(&(a.self_samples, a.total_samples, &b.name))
    });
    rows
}

/// Tokens per second from llama.cpp pack spans: prompt (prefill) and generation (decode).
pub fn llama_throughput(rec: &Recording) -> Option<String> {
    let phase = |name: &str| {
        let spans: Vec<(u64, u64)> = rec
            .spans
            .iter()
            .filter(|s| s.attrs.get("phase").and_then(|p| p.as_str()) == Some(name))
            .map(|s| {
                let n = s
                    .attrs
                    .get("n_tokens")
                    .and_then(|n| n.as_u64())
                    .unwrap_or(0);
                (n, s.end_ns - s.start_ns)
            })
            .collect();
        let tokens: u64 = spans.iter().map(|s| s.0).sum();
        let ns: u64 = spans.iter().map(|s| s.1).sum();
        (tokens, ns)
    };
    let (pre_tok, pre_ns) = phase("prefill");
    let (dec_tok, dec_ns) = phase("decode");
    if pre_tok + dec_tok == 0 {
        return None;
    }
    let rate = |t: u64, ns: u64| {
        if ns == 0 {
            0.0
        } else {
            t as f64 / (ns as f64 / 1e9)
        }
    };
    Some(format!(
        "llama.cpp: prefill {pre_tok} tokens in {:.1} ms ({:.1} tok/s), decode {dec_tok} tokens in {:.1} ms ({:.1} tok/s)",
        pre_ns as f64 / 1e6,
        rate(pre_tok, pre_ns),
        dec_ns as f64 / 1e6,
        rate(dec_tok, dec_ns)
    ))
}

fn pct(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * n as f64 / total as f64
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// The human-readable summary printed at the end of a recording and by `modelprobe report`.
pub fn summary(rec: &Recording, top: usize) -> String {
    let mut out = String::new();
    let samples = rec.cpu_sample_count();
    let threads = rec.threads.len();
    let _ = writeln!(
        out,
        "recorded {:.2}s of {} (pid {}): {} CPU samples at {} Hz, {} process{}, {} thread{}",
        rec.duration_ns() as f64 / 1e9,
        if rec.meta.command.is_empty() {
            "?"
        } else {
            &rec.meta.command
        },
        rec.meta.target_pid,
        samples,
        rec.meta.frequency_hz,
        rec.processes.len(),
        if rec.processes.len() == 1 { "" } else { "es" },
        threads,
        if threads == 1 { "" } else { "s" },
    );
    if rec.meta.off_cpu {
        let _ = writeln!(
            out,
            "off-CPU: {:.3}s blocked in total",
            rec.off_cpu_ns() as f64 / 1e9
        );
    }
    let rows = function_shares(rec);
    if samples > 0 && !rows.is_empty() {
        let _ = writeln!(out, "\ntop functions by self time:");
        let _ = writeln!(out, "  {:>7} {:>7}  function", "self%", "total%");
        for r in rows.iter().take(top) {
            let _ = writeln!(
                out,
                "  {:>6.1}% {:>6.1}%  {}",
                pct(r.self_samples, samples),
                pct(r.total_samples, samples),
                truncate(&r.name, 100)
            );
        }
        let mut by_total = rows.clone();
        by_total.sort_by(|a, b| (b.total_samples, &a.name).cmp(&(a.total_samples, &b.name)));
        let _ = writeln!(out, "\ntop functions by total time:");
        let _ = writeln!(out, "  {:>7} {:>7}  function", "total%", "self%");
        for r in by_total.iter().take(top) {
            let _ = writeln!(
                out,
                "  {:>6.1}% {:>6.1}%  {}",
                pct(r.total_samples, samples),
                pct(r.self_samples, samples),
                truncate(&r.name, 100)
            );
        }
    } else {
        let _ = writeln!(
            out,
            "\nno CPU samples: the target was idle or exited at once"
        );
    }
    if !rec.probes.is_empty() {
        let _ = writeln!(out, "\nspans:");
        let _ = writeln!(
            out,
            "  {:>8} {:>11} {:>11} {:>11}  function",
            "calls", "total ms", "mean ms", "max ms"
        );
        for (i, p) in rec.probes.iter().enumerate() {
            let durations: Vec<u64> = rec
                .spans
                .iter()
                .filter(|s| s.probe == i as u32)
                .map(|s| s.end_ns - s.start_ns)
                .collect();
            if durations.is_empty() && p.pack.is_some() {
                continue; // a pack function the target never called
            }
            let total: u64 = durations.iter().sum();
            let max = durations.iter().copied().max().unwrap_or(0);
            let mean = if durations.is_empty() {
                0.0
            } else {
                total as f64 / durations.len() as f64
            };
            let _ = writeln!(
                out,
                "  {:>8} {:>11.3} {:>11.3} {:>11.3}  {}",
                durations.len(),
                total as f64 / 1e6,
                mean / 1e6,
                max as f64 / 1e6,
                p.function
            );
        }
    }
    if let Some(line) = llama_throughput(rec) {
        let _ = writeln!(out, "{line}");
    }
    let notable: Vec<&crate::trace::Event> = rec
        .events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                crate::trace::EventKind::FatalSignal
                    | crate::trace::EventKind::Exec
                    | crate::trace::EventKind::ModelLoad
                    | crate::trace::EventKind::ApiError
            )
        })
        .collect();
    if !notable.is_empty() {
        let _ = writeln!(out, "\nevents:");
        for e in notable.iter().take(top) {
            let _ = writeln!(
                out,
                "  +{:.3}s  pid {}  {}",
                e.time_ns.saturating_sub(rec.meta.start_ns) as f64 / 1e9,
                e.pid,
                e.message
            );
        }
    }
    if !rec.logs.is_empty() {
        use crate::logs::Level;
        let count = |l: Level| rec.logs.iter().filter(|x| x.level == Some(l)).count();
        let _ = writeln!(
            out,
            "\nlogs: {} lines ({} fatal, {} error, {} warn, {} info, {} debug, {} unleveled)",
            rec.logs.len(),
            count(Level::Fatal),
            count(Level::Error),
            count(Level::Warn),
            count(Level::Info),
            count(Level::Debug),
            rec.logs.iter().filter(|x| x.level.is_none()).count()
        );
        for l in rec
            .logs
            .iter()
            .filter(|l| l.level >= Some(Level::Error))
            .take(5)
        {
            let _ = writeln!(out, "  pid {}: {}", l.pid, truncate(&l.message, 120));
        }
    }
    let lost = &rec.meta.lost;
    let _ = write!(out, "\nlost: {} CPU samples", lost.cpu_samples);
    if rec.meta.off_cpu {
        let _ = write!(
            out,
            ", {} off-CPU events, {} blocked intervals untracked",
            lost.off_cpu_events, lost.off_cpu_untracked
        );
    }
    let _ = write!(
        out,
        ", {} child processes unfollowed",
        lost.children_untracked
    );
    if !rec.probes.is_empty() {
        let _ = write!(
            out,
            ", {} span records, {} returns without entry",
            lost.span_records, lost.unmatched_span_returns
        );
    }
    let _ = writeln!(
        out,
        ", {} process/thread records, {} log writes, {} file opens",
        lost.task_records, lost.log_writes, lost.file_opens
    );
    if lost.log_bytes_cut > 0 {
        let _ = writeln!(
            out,
            "log bytes cut (over-long writes or lines): {}",
            lost.log_bytes_cut
        );
    }
    if lost.user_stack_errors + lost.kernel_stack_errors > 0 {
        let _ = writeln!(
            out,
            "stack read errors: {} user, {} kernel (frames of those samples are partial)",
            lost.user_stack_errors, lost.kernel_stack_errors
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_and_total_shares() {
        let rec = crate::trace::fixtures::sample_recording();
        let rows = function_shares(&rec);
        let get = |n: &str| rows.iter().find(|r| r.name == n).unwrap().clone();
        assert_eq!(
            (get("main").self_samples, get("main").total_samples),
            (0, 3)
        );
        assert_eq!(
            (get("hot;a").self_samples, get("hot;a").total_samples),
            (2, 2)
        );
        assert_eq!(get("do_syscall_64 [k]").self_samples, 1);
        assert_eq!(rows[0].name, "hot;a");
        let text = summary(&rec, 5);
        assert!(text.contains("3 CPU samples"), "{text}");
        assert!(text.contains("66.7%"), "{text}");
        assert!(text.contains("lost: 0 CPU samples"), "{text}");
    }
}
