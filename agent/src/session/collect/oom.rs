//! Out-of-memory failures explained from the recording: a CUDA allocation that returned
//! out-of-memory (`cudaErrorMemoryAllocation`, `CUDA_ERROR_OUT_OF_MEMORY`: both 2) and a
//! PyTorch `OutOfMemoryError` printed by the target each become an `oom` event saying the
//! bytes asked for, what was free where known, the top live allocations by stack then and
//! what grew in the seconds before; the kernel OOM killer's `oom_kill` event gets the same
//! account of CPU memory when `--memory` recorded it.
use std::sync::OnceLock;

use regex::Regex;

use crate::recording::{
    memory::{self, human_bytes, MemClass, MemEvent, Replay},
    Event, EventKind, Recording,
};

/// The out-of-memory status of the CUDA runtime and driver APIs.
const CUDA_OUT_OF_MEMORY: u64 = 2;

/// How far back "what grew before" looks.
const GROWTH_WINDOW_NS: u64 = 10_000_000_000;

/// Top holders named in a message.
const TOP: usize = 3;

/// Adds the `oom` events and completes `oom_kill` ones.
pub fn explain(rec: &mut Recording) {
    let events = memory::all_events(rec);
    let mut new = Vec::new();
    for s in rec.spans.iter().filter(|s| {
        s.attrs.get("memory").and_then(|m| m.as_str()) == Some("alloc")
            && s.ret.is_some_and(|r| r & 0xffff_ffff == CUDA_OUT_OF_MEMORY)
    }) {
        let asked = s.attrs.get("bytes").and_then(|b| b.as_u64()).unwrap_or(0);
        let function = rec
            .probes
            .get(s.probe as usize)
            .map_or("allocation", |p| p.function.as_str());
        let error = s
            .attrs
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("out of memory");
        let head = format!("{function} of {} failed ({error})", human_bytes(asked));
        new.push(Event {
            time_ns: s.end_ns,
            pid: s.pid,
            tid: s.tid,
            kind: EventKind::Oom,
            message: format!("{head}; {}", account(rec, &events, s.pid, s.end_ns, true)),
            value: Some(asked as i64),
            stack: s.stack,
        });
    }
    for l in &rec.logs {
        let Some((asked, free)) = torch_oom(&l.message) else {
            continue;
        };
        let mut head = format!("PyTorch could not allocate {}", human_bytes(asked));
        if let Some(free) = free {
            head.push_str(&format!(" ({} free on the GPU)", human_bytes(free)));
        }
        new.push(Event {
            time_ns: l.time_ns,
            pid: l.pid,
            tid: l.tid,
            kind: EventKind::Oom,
            message: format!("{head}; {}", account(rec, &events, l.pid, l.time_ns, true)),
            value: Some(asked as i64),
            stack: None,
        });
    }
    if !rec.memory.is_empty() {
        for i in 0..rec.events.len() {
            let e = &rec.events[i];
            if e.kind != EventKind::OomKill {
                continue;
            }
            let (pid, t) = (e.pid, e.time_ns);
            let more = account(rec, &events, pid, t, false);
            rec.events[i].message.push_str(&format!("; {more}"));
        }
    }
    if !new.is_empty() {
        rec.events.extend(new);
        rec.events.sort_by_key(|e| e.time_ns);
    }
}

/// What was live in process `pid` at `t` (GPU or CPU memory), its top holders by stack, and
/// what grew in the seconds before.
fn account(rec: &Recording, events: &[MemEvent], pid: u32, t: u64, gpu: bool) -> String {
    let class = if gpu { MemClass::Gpu } else { MemClass::Mapped };
    let mine: Vec<MemEvent> = events
        .iter()
        .filter(|e| e.pid == pid && e.source.class() == class)
        .cloned()
        .collect();
    let what = if gpu { "GPU memory" } else { "memory" };
    let now = memory::live_at(&mine, t);
    let (cpu, gpu_bytes) = now.totals();
    let total = if gpu { gpu_bytes } else { cpu };
    if total == 0 {
        return format!("no {what} allocation of this process was seen live");
    }
    let count = now.live().count();
    let top: Vec<String> = memory::by_stack(now.live())
        .into_iter()
        .take(TOP)
        .map(|(stack, bytes, n)| {
            format!(
                "{} in {n} from {}",
                human_bytes(bytes),
                memory::holder(rec, stack)
            )
        })
        .collect();
    let before = memory::live_at(&mine, t.saturating_sub(GROWTH_WINDOW_NS));
    let grew = grown(&before, &now);
    let mut out = format!(
        "{} of {what} live in {count} allocations; top: {}",
        human_bytes(total),
        top.join(", ")
    );
    if let Some((stack, bytes)) = grew {
        out.push_str(&format!(
            "; grew most in the 10 s before: {} (+{})",
            memory::holder(rec, stack),
            human_bytes(bytes)
        ));
    }
    out
}

/// The stack whose live bytes grew most from `before` to `now`.
fn grown(before: &Replay, now: &Replay) -> Option<(Option<u32>, u64)> {
    let old: std::collections::HashMap<Option<u32>, u64> = memory::by_stack(before.live())
        .into_iter()
        .map(|(s, b, _)| (s, b))
        .collect();
    memory::by_stack(now.live())
        .into_iter()
        .map(|(s, b, _)| (s, b.saturating_sub(old.get(&s).copied().unwrap_or(0))))
        .filter(|&(_, grew)| grew > 0)
        .max_by_key(|&(_, grew)| grew)
}

/// The bytes a PyTorch out-of-memory message says it tried to allocate, and the GPU's free
/// bytes when it says them (PyTorch 2.x: `... of which 12.62 MiB is free`; 1.x: `...; 1.03
/// GiB free; ...`).
fn torch_oom(line: &str) -> Option<(u64, Option<u64>)> {
    static TRIED: OnceLock<Regex> = OnceLock::new();
    static FREE: OnceLock<Regex> = OnceLock::new();
    let tried = TRIED.get_or_init(|| {
        Regex::new(
            r"OutOfMemoryError: CUDA out of memory\. Tried to allocate ([0-9.]+) ([KMGT]i?B|B)",
        )
        .expect("valid regex")
    });
    let free = FREE.get_or_init(|| {
        Regex::new(r"(?:of which ([0-9.]+) ([KMGT]i?B|B) is free|; ([0-9.]+) ([KMGT]i?B|B) free)")
            .expect("valid regex")
    });
    let c = tried.captures(line)?;
    let asked = to_bytes(&c[1], &c[2])?;
    let free = free.captures(line).and_then(|c| {
        let (v, u) = match (c.get(1), c.get(2)) {
            (Some(v), Some(u)) => (v, u),
            _ => (c.get(3)?, c.get(4)?),
        };
        to_bytes(v.as_str(), u.as_str())
    });
    Some((asked, free))
}

fn to_bytes(value: &str, unit: &str) -> Option<u64> {
    let v: f64 = value.parse().ok()?;
    let scale = match unit.trim_end_matches("iB").trim_end_matches('B') {
        "" => 1u64,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    Some((v * scale as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytorch_messages_of_both_generations_are_read() {
        let new = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 79.15 GiB of which 12.50 MiB is free. Including non-PyTorch memory";
        assert_eq!(torch_oom(new), Some((20 << 20, Some(13_107_200))));
        let old = "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity; 13.19 GiB already allocated; 1.00 GiB free; 14.2 GiB reserved)";
        assert_eq!(torch_oom(old), Some((2 << 30, Some(1 << 30))));
        assert_eq!(torch_oom("RuntimeError: something else"), None);
    }
}
