//! Which CPU call launched each GPU operation: the one join between the CPU and GPU sides.
//!
//! Three facts meet here. A probed CUDA call's span gets the calling stack taken at its entry
//! ([`attach_entry_stacks`]). The injection library reports, from inside each call that
//! queued GPU work, its thread and time and the correlation id CUPTI gives the work; the span
//! on that thread containing that time is the launching call ([`join`]). Every output then
//! asks [`launch_of`] / [`launch_stack`] instead of walking the indices itself.
use std::collections::HashMap;

use crate::{GpuOp, Recording, Span};

/// The CPU call that launched an op.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Launch<'a> {
    /// Process of the calling thread.
    pub pid: u32,
    /// The calling thread.
    pub tid: u32,
    /// When the call started: its span's entry, else the time the injection library saw it.
    pub start_ns: u64,
    /// Index into `rec.spans` of the call's span, when one was recorded.
    pub span: Option<u32>,
    /// Index into `rec.gpu.launches`, when reported.
    pub launch: Option<u32>,
    /// The API function (`cudaLaunchKernel`), when known.
    pub api: Option<&'a str>,
}

impl Launch<'_> {
    /// GPU start minus the call's start, in ns (negative only when clocks disagree).
    pub fn queue_delay_ns(&self, op: &GpuOp) -> i64 {
        op.start_ns as i64 - self.start_ns as i64
    }
}

/// The call that launched `op`, from its span or else its launch record; `None` when neither
/// was joined. Out-of-range indices (refused when reading a recording) count as unknown.
pub fn launch_of<'a>(rec: &'a Recording, op: &GpuOp) -> Option<Launch<'a>> {
    let record = op
        .launch
        .and_then(|l| rec.gpu.launches.get(l as usize).map(|r| (l, r)));
    let span_index = op
        .launch_span
        .or_else(|| record.and_then(|(_, r)| r.span))
        .filter(|&s| (s as usize) < rec.spans.len());
    if let Some(si) = span_index {
        let s = &rec.spans[si as usize];
        let api = record.map(|(_, r)| r.api.as_str()).or_else(|| {
            rec.probes
                .get(s.probe as usize)
                .map(|p| p.function.as_str())
        });
        return Some(Launch {
            pid: s.pid,
            tid: s.tid,
            start_ns: s.start_ns,
            span: Some(si),
            launch: record.map(|(l, _)| l),
            api,
        });
    }
    record.map(|(l, r)| Launch {
        pid: r.pid,
        tid: r.tid,
        start_ns: r.time_ns,
        span: None,
        launch: Some(l),
        api: Some(r.api.as_str()),
    })
}

/// The launch stack of `op` (index into `rec.stacks`), from the span of its launching call.
pub fn launch_stack(rec: &Recording, op: &GpuOp) -> Option<u32> {
    let span = launch_of(rec, op)?.span?;
    rec.spans[span as usize]
        .stack
        .filter(|&s| (s as usize) < rec.stacks.len())
}

/// Gives each span its entry stack: of `stacks` (tid, time, probe id, stack index), the one of
/// the same thread and probe taken during the span (at its entry; calls on one thread do not
/// overlap, so the match is exact). This is the launch stack GPU time is charged to.
pub fn attach_entry_stacks(spans: &mut [Span], stacks: &mut [(u32, u64, u32, u32)]) {
    if stacks.is_empty() {
        return;
    }
    stacks.sort_unstable_by_key(|&(tid, t, _, _)| (tid, t));
    let probes: std::collections::HashSet<u32> = stacks.iter().map(|s| s.2).collect();
    for s in spans.iter_mut().filter(|s| probes.contains(&s.probe)) {
        let from = stacks.partition_point(|&(tid, t, _, _)| (tid, t) < (s.tid, s.start_ns));
        s.stack = stacks[from..]
            .iter()
            .take_while(|&&(tid, t, _, _)| tid == s.tid && t <= s.end_ns)
            .find(|&&(_, _, probe, _)| probe == s.probe)
            .map(|&(_, _, _, stack)| stack);
    }
}

/// Fills `launch.span` and `op.launch_span` from the spans on each launching thread.
pub fn join(rec: &mut Recording) {
    let mut by_tid: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
    for (i, s) in rec.spans.iter().enumerate() {
        by_tid.entry((s.pid, s.tid)).or_default().push(i as u32);
    }
    for list in by_tid.values_mut() {
        list.sort_by_key(|&i| rec.spans[i as usize].start_ns);
    }
    for l in &mut rec.gpu.launches {
        l.span = by_tid
            .get(&(l.pid, l.tid))
            .and_then(|list| containing(&rec.spans, list, l.time_ns));
    }
    let launches = &rec.gpu.launches;
    for o in &mut rec.gpu.ops {
        o.launch_span = o.launch.and_then(|l| launches[l as usize].span);
    }
}

/// The innermost span of `list` (indices sorted by start) containing `t`, preferring spans
/// that kept a stack. Looks back over at most 64 spans that started before `t`.
fn containing(spans: &[Span], list: &[u32], t: u64) -> Option<u32> {
    let end = list.partition_point(|&i| spans[i as usize].start_ns <= t);
    let mut best: Option<u32> = None;
    for &i in list[..end].iter().rev().take(64) {
        let s = &spans[i as usize];
        if s.end_ns < t {
            continue;
        }
        let better = match best {
            None => true,
            Some(b) => {
                let b = &spans[b as usize];
                (s.stack.is_some() && b.stack.is_none())
                    || (s.stack.is_some() == b.stack.is_some() && s.depth > b.depth)
            }
        };
        if better {
            best = Some(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn launches_resolve_through_spans_or_launch_records() {
        let rec = fixtures::gpu_recording();
        let ops = &rec.gpu.ops;
        let gemm = launch_of(&rec, &ops[2]).unwrap();
        assert_eq!(
            (gemm.tid, gemm.span, gemm.api),
            (10, Some(0), Some("cudaLaunchKernel"))
        );
        assert_eq!(gemm.queue_delay_ns(&ops[2]), 50_000);
        let relu = launch_of(&rec, &ops[7]).unwrap();
        assert_eq!(
            (relu.tid, relu.span, relu.start_ns),
            (11, None, fixtures::T0 + 1_000_000)
        );
        assert_eq!(launch_stack(&rec, &ops[7]), None);
        assert_eq!(launch_stack(&rec, &ops[10]), Some(2));
        assert!(launch_of(&rec, &ops[3]).is_none());
    }
}

/// The spans of some probes (the PyTorch pack's module calls) by thread, to find the ones a
/// launch happened inside: what charges GPU work to the layers that launched it.
#[derive(Debug, Default)]
pub struct Enclosing {
    /// Span indices by (pid, tid), in start order.
    by_thread: HashMap<(u32, u32), Vec<u32>>,
}

impl Enclosing {
    /// The spans of `rec` whose probe `keep` accepts.
    pub fn new(rec: &Recording, keep: impl Fn(u32) -> bool) -> Enclosing {
        let mut by_thread: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
        for (i, s) in rec.spans.iter().enumerate() {
            if keep(s.probe) {
                by_thread.entry((s.pid, s.tid)).or_default().push(i as u32);
            }
        }
        for list in by_thread.values_mut() {
            list.sort_by_key(|&i| rec.spans[i as usize].start_ns);
        }
        Enclosing { by_thread }
    }

    /// True when no span was kept.
    pub fn is_empty(&self) -> bool {
        self.by_thread.is_empty()
    }

    /// The kept spans of thread `(pid, tid)` running at `t`, outermost first (span indices).
    pub fn at(&self, rec: &Recording, pid: u32, tid: u32, t: u64) -> Vec<u32> {
        let Some(list) = self.by_thread.get(&(pid, tid)) else {
            return Vec::new();
        };
        let end = list.partition_point(|&i| rec.spans[i as usize].start_ns <= t);
        let mut out: Vec<u32> = list[..end]
            .iter()
            .rev()
            .copied()
            .filter(|&i| rec.spans[i as usize].end_ns >= t)
            .take(64)
            .collect();
        out.reverse();
        out
    }

    /// The kept spans a GPU op was launched inside, outermost first.
    pub fn of_op(&self, rec: &Recording, op: &GpuOp) -> Vec<u32> {
        if self.is_empty() {
            return Vec::new();
        }
        match launch_of(rec, op) {
            Some(l) => self.at(rec, l.pid, l.tid, l.start_ns),
            None => Vec::new(),
        }
    }
}
