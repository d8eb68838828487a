//! Memory flame graphs (`--memory`, and GPU memory from the CUDA packs): where the bytes are
//! at the end of the recording (or at `--at`), where they were allocated, where pages were
//! first touched, and GPU memory in use; each as folded stacks and an inferno SVG. Weights are
//! bytes.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use inferno::flamegraph::{color::BasicPalette, Palette};

use super::{
    flamegraph::{describe, render_lines},
    folded::{stack_line, write_folded},
    Exporter,
};
use crate::{
    recording::{
        memory::{self, human_bytes, MemClass, MemEventKind},
        Recording,
    },
    Result,
};

/// What a memory flame graph shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryView {
    /// Mapped CPU memory (`mmap`, `brk`) live at an instant (the end when `None`), by
    /// allocating stack.
    InUse(Option<u64>),
    /// Sampled heap blocks (`--memory=malloc`) live at an instant, by allocating stack;
    /// estimated bytes.
    HeapInUse(Option<u64>),
    /// Every byte mapped or allocated on the GPU over the recording, by allocating stack (the
    /// sampled heap and tensors are inside those, and have their in-use views).
    Allocated,
    /// Sampled heap allocations (`--memory=malloc`) over the recording, estimated bytes.
    HeapAllocated,
    /// Sampled page faults: where memory was first touched (made resident).
    PageFaults,
    /// GPU memory live at an instant (the end when `None`), by allocating stack.
    GpuInUse(Option<u64>),
    /// PyTorch's tensors live at an instant (its allocator's tracepoints), by allocating stack.
    TensorsInUse(Option<u64>),
}

impl MemoryView {
    /// The file name, without extension.
    pub fn stem(self) -> &'static str {
        match self {
            MemoryView::InUse(_) => "memory-inuse",
            MemoryView::HeapInUse(_) => "memory-heap-inuse",
            MemoryView::Allocated => "memory-alloc",
            MemoryView::HeapAllocated => "memory-heap-alloc",
            MemoryView::PageFaults => "memory-faults",
            MemoryView::GpuInUse(_) => "gpu-memory-inuse",
            MemoryView::TensorsInUse(_) => "gpu-tensors-inuse",
        }
    }
}

/// Folded lines of a view, by stack, weights in bytes.
pub fn memory_folded(rec: &Recording, view: MemoryView) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut add = |pid: u32, stack: Option<u32>, bytes: u64, leaf: Option<&str>| {
        let mut line = stack_line(rec, pid, stack);
        if let Some(leaf) = leaf {
            line.push(';');
            line.push_str(leaf);
        }
        let w: &mut u64 = out.entry(line).or_default();
        *w = w.saturating_add(bytes);
    };
    match view {
        MemoryView::InUse(at)
        | MemoryView::HeapInUse(at)
        | MemoryView::GpuInUse(at)
        | MemoryView::TensorsInUse(at) => {
            let class = match view {
                MemoryView::GpuInUse(_) => MemClass::Gpu,
                MemoryView::TensorsInUse(_) => MemClass::Tensors,
                MemoryView::HeapInUse(_) => MemClass::Heap,
                _ => MemClass::Mapped,
            };
            let events = memory::all_events(rec);
            let replay = memory::live_at(&events, at.unwrap_or(u64::MAX));
            for r in replay.live().filter(|r| r.source.class() == class) {
                let leaf = (class == MemClass::Gpu).then(|| format!("[{}]", r.source.name()));
                add(r.pid, r.stack, r.bytes, leaf.as_deref());
            }
        }
        MemoryView::Allocated => {
            // Sampled heap blocks and tensors are inside mapped and GPU memory: not added.
            for e in memory::all_events(rec)
                .iter()
                .filter(|e| e.kind == MemEventKind::Alloc && e.source.class().is_held())
            {
                let leaf = format!("[{}]", e.source.name());
                add(e.pid, e.stack, e.bytes, Some(&leaf));
            }
        }
        MemoryView::HeapAllocated => {
            for e in memory::all_events(rec)
                .iter()
                .filter(|e| e.kind == MemEventKind::Alloc && e.source.class() == MemClass::Heap)
            {
                let leaf = format!("[{}]", e.source.name());
                add(e.pid, e.stack, e.bytes, Some(&leaf));
            }
        }
        MemoryView::PageFaults => {
            for e in rec
                .memory
                .events
                .iter()
                .filter(|e| e.kind == MemEventKind::PageFault)
            {
                add(e.pid, e.stack, e.bytes, None);
            }
        }
    }
    out
}

/// The memory flame graphs exporter: writes the views the recording has data for.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryGraphs {
    /// In-use views at this instant (CLOCK_MONOTONIC ns) instead of the end.
    pub at: Option<u64>,
}

impl Exporter for MemoryGraphs {
    fn name(&self) -> &'static str {
        "memory flame graphs"
    }

    fn export(&self, rec: &Recording, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        let when = match self.at {
            Some(t) => format!(
                "at {:.3}s",
                t.saturating_sub(rec.meta.start_ns) as f64 / 1e9
            ),
            None => "at the end".to_string(),
        };
        for view in [
            MemoryView::InUse(self.at),
            MemoryView::HeapInUse(self.at),
            MemoryView::Allocated,
            MemoryView::HeapAllocated,
            MemoryView::PageFaults,
            MemoryView::GpuInUse(self.at),
            MemoryView::TensorsInUse(self.at),
        ] {
            let lines = memory_folded(rec, view);
            if lines.is_empty() {
                continue;
            }
            let total: u64 = lines.values().sum();
            let title = match view {
                MemoryView::InUse(_) => format!("Memory in use {when}: {}", human_bytes(total)),
                MemoryView::HeapInUse(_) => format!(
                    "Heap in use {when} (sampled at malloc, estimated): {}",
                    human_bytes(total)
                ),
                MemoryView::Allocated => format!("Memory allocated: {}", human_bytes(total)),
                MemoryView::HeapAllocated => format!(
                    "Heap allocated (sampled at malloc, estimated): {}",
                    human_bytes(total)
                ),
                MemoryView::PageFaults => format!(
                    "Pages first touched (page faults, sampled): {}",
                    human_bytes(total)
                ),
                MemoryView::GpuInUse(_) => {
                    format!("GPU memory in use {when}: {}", human_bytes(total))
                }
                MemoryView::TensorsInUse(_) => {
                    format!("PyTorch tensors in use {when}: {}", human_bytes(total))
                }
            };
            let folded = dir.join(format!("{}.folded", view.stem()));
            write_folded(&folded, &lines)?;
            let svg = dir.join(format!("{}.svg", view.stem()));
            render_lines(
                &lines,
                format!("{title}, {}", describe(rec)),
                "bytes".into(),
                Palette::Basic(BasicPalette::Mem),
                &svg,
            )?;
            written.push(folded);
            written.push(svg);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::memory::{MemEvent, MemSource};

    fn ev(t: u64, kind: MemEventKind, source: MemSource, addr: u64, bytes: u64) -> MemEvent {
        MemEvent {
            time_ns: t,
            pid: 1,
            tid: 1,
            kind,
            source,
            addr,
            bytes,
            stack: Some(0),
        }
    }

    #[test]
    fn in_use_allocated_and_faults_fold_by_stack() {
        let mut rec = crate::recording::fixtures::sample_recording();
        let start = rec.meta.start_ns;
        rec.memory.events = vec![
            ev(
                start + 1,
                MemEventKind::Alloc,
                MemSource::Mmap,
                0x1000,
                4096,
            ),
            ev(start + 2, MemEventKind::Alloc, MemSource::Brk, 0x9000, 8192),
            ev(start + 3, MemEventKind::Free, MemSource::Mmap, 0x1000, 4096),
            ev(
                start + 4,
                MemEventKind::PageFault,
                MemSource::Fault,
                0x9000,
                64 * 4096,
            ),
        ];
        let line = stack_line(&rec, 1, Some(0));
        let inuse = memory_folded(&rec, MemoryView::InUse(None));
        assert_eq!(inuse, BTreeMap::from([(line.clone(), 8192)]));
        let before_free = memory_folded(&rec, MemoryView::InUse(Some(start + 2)));
        assert_eq!(before_free.values().sum::<u64>(), 4096 + 8192);
        let alloc = memory_folded(&rec, MemoryView::Allocated);
        assert_eq!(alloc.get(&format!("{line};[mmap]")), Some(&4096));
        assert_eq!(alloc.get(&format!("{line};[brk]")), Some(&8192));
        let faults = memory_folded(&rec, MemoryView::PageFaults);
        assert_eq!(faults, BTreeMap::from([(line, 64 * 4096)]));
        let dir = std::env::temp_dir().join(format!("mp-memfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = MemoryGraphs::default().export(&rec, &dir).unwrap();
        assert_eq!(files.len(), 6, "{files:?}");
        let svg = std::fs::read_to_string(dir.join("memory-inuse.svg")).unwrap();
        assert!(
            svg.contains("Memory in use at the end: 8.0 KiB"),
            "{svg:.300}"
        );
    }
}
