//! The report's memory sections (`--memory`, and GPU memory from the CUDA packs): the top
//! holders of memory at the end by allocating stack, and the leak candidates (stacks whose
//! live bytes grew steadily over the run). Out-of-memory failures are in the events table.
use serde_json::json;

use super::{round, Section};
use crate::recording::{
    memory::{self, human_bytes, MemClass, MemEventKind},
    Recording,
};

/// Stacks holding less than this at the end are not leak candidates.
const LEAK_MIN_BYTES: u64 = 1 << 20;

/// True when the recording has memory by stack (CPU or GPU).
pub(super) fn recorded(rec: &Recording) -> bool {
    !rec.memory.is_empty() || !memory::gpu_events(rec).is_empty()
}

fn mib(bytes: u64) -> serde_json::Value {
    round(bytes as f64 / (1u64 << 20) as f64, 2)
}

/// The headline figure: memory live at the end, CPU and GPU.
pub(super) fn headline(rec: &Recording) -> Option<(String, String)> {
    if !recorded(rec) {
        return None;
    }
    let events = memory::all_events(rec);
    let live = memory::live_at(&events, u64::MAX);
    let (cpu, gpu) = live.totals();
    let mut parts = Vec::new();
    if !rec.memory.is_empty() {
        parts.push(format!("{} CPU (mmap/brk)", human_bytes(cpu)));
    }
    if rec.memory.malloc_sample_bytes > 0 {
        parts.push(format!(
            "{} heap (sampled at malloc)",
            human_bytes(live.total(MemClass::Heap))
        ));
    }
    if events.iter().any(|e| e.source.class() == MemClass::Gpu) {
        parts.push(format!("{} GPU", human_bytes(gpu)));
    }
    Some(("memory in use at the end".into(), parts.join(", ")))
}

/// Top holders of memory at the end, by allocating stack.
pub(super) fn top_holders(rec: &Recording, top: usize) -> Section {
    let mut s = Section::table(
        "memory_top",
        "Memory in use at the end, by allocating stack",
        &[
            "holder",
            "memory",
            "live MiB",
            "live allocations",
            "allocated MiB",
        ],
    );
    let events = memory::all_events(rec);
    let live = memory::live_at(&events, u64::MAX);
    let mut allocated: std::collections::HashMap<(Option<u32>, MemClass), u64> = Default::default();
    for e in events.iter().filter(|e| e.kind == MemEventKind::Alloc) {
        *allocated.entry((e.stack, e.source.class())).or_default() += e.bytes;
    }
    for class in MemClass::ALL {
        let ranges = live.live().filter(|r| r.source.class() == class);
        for (stack, bytes, n) in memory::by_stack(ranges).into_iter().take(top) {
            let all = allocated.get(&(stack, class)).copied().unwrap_or(0);
            s.rows.push(vec![
                json!(memory::holder(rec, stack)),
                json!(class.name()),
                mib(bytes),
                json!(n),
                mib(all),
            ]);
        }
    }
    s.or_absent("no allocation recorded was still live")
}

/// Stacks whose live bytes grew steadily over the run.
pub(super) fn leaks(rec: &Recording, top: usize) -> Section {
    let mut s = Section::table(
        "memory_leaks",
        "Leak candidates: live memory that grew in most tenths of the run",
        &[
            "holder",
            "memory",
            "live MiB",
            "live allocations",
            "tenths growing",
        ],
    );
    let events = memory::all_events(rec);
    for l in memory::leak_candidates(&events, rec.meta.start_ns, rec.meta.end_ns, LEAK_MIN_BYTES)
        .into_iter()
        .take(top)
    {
        s.rows.push(vec![
            json!(memory::holder(rec, l.stack)),
            json!(l.class.name()),
            mib(l.live_bytes),
            json!(l.live_ranges),
            json!(format!("{}/9", l.growing_tenths)),
        ]);
    }
    s.or_absent("no stack's live memory grew steadily")
}
