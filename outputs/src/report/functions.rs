//! Where CPU time went by function (self and total), and token throughput from llama.cpp spans.
use std::collections::HashMap;

use crate::recording::{FrameKind, Recording, SampleKind};

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

/// Tokens and time of one llama.cpp phase (prefill or decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Phase {
    /// Tokens processed.
    pub tokens: u64,
    /// Calls.
    pub calls: u64,
    /// Time inside the calls, ns.
    pub ns: u64,
}

impl Phase {
    /// Tokens per second inside the calls.
    pub fn rate(&self) -> f64 {
        if self.ns == 0 {
            0.0
        } else {
            self.tokens as f64 / (self.ns as f64 / 1e9)
        }
    }
}

/// Prefill and decode phases from llama.cpp pack spans; `None` without any tokens.
pub fn llama_phases(rec: &Recording) -> Option<[(&'static str, Phase); 2]> {
    let phase = |name: &str| {
        let mut p = Phase::default();
        for s in rec
            .spans
            .iter()
            .filter(|s| s.attrs.get("phase").and_then(|p| p.as_str()) == Some(name))
        {
            p.tokens = p.tokens.saturating_add(
                s.attrs
                    .get("n_tokens")
                    .and_then(|n| n.as_u64())
                    .unwrap_or(0),
            );
            p.calls += 1;
            p.ns = p.ns.saturating_add(s.end_ns - s.start_ns);
        }
        p
    };
    let phases = [("prefill", phase("prefill")), ("decode", phase("decode"))];
    (phases[0].1.tokens + phases[1].1.tokens > 0).then_some(phases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_and_total_shares() {
        let rec = crate::recording::fixtures::sample_recording();
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
    }
}
