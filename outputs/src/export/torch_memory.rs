//! GPU memory in PyTorch's memory snapshot format (`torch.cuda.memory._snapshot()`, pickled):
//! `gpu-memory-snapshot.pickle` opens in PyTorch's memory visualizer
//! (<https://pytorch.org/memory_viz>) and in `torch.cuda._memory_viz`. Each CUDA allocation
//! the packs saw is a segment (what `cudaMalloc` returns is a segment to PyTorch's caching
//! allocator: `segment_alloc`/`segment_free`); the tensors in it come from PyTorch's
//! `pytorch:malloc`/`pytorch:free` tracepoints (`alloc`/`free_completed`), or, without them,
//! each segment is one block. Frames are the allocating stack, innermost first.
//!
//! serde-pickle writes the pickle: the format is Python's, and a hand-written one would have
//! to track its opcodes.
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Exporter;
use crate::{
    recording::{
        memory::{self, MemEvent, MemEventKind, MemSource},
        Recording,
    },
    Error, Result,
};

/// File name of the snapshot.
pub const FILE: &str = "gpu-memory-snapshot.pickle";

/// The snapshot exporter.
pub struct TorchMemory;

/// One frame, as PyTorch's snapshot holds it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnapFrame {
    /// Source file (or the module where there is none).
    pub filename: String,
    /// Source line (0: unknown).
    pub line: u32,
    /// Function.
    pub name: String,
}

/// A trace entry of `device_traces`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraceEntry {
    /// `segment_alloc`, `alloc`, `free_completed`, `segment_free`.
    pub action: &'static str,
    /// The pointer.
    pub addr: u64,
    /// Bytes.
    pub size: u64,
    /// Always 0: the stream is not recorded.
    pub stream: u64,
    /// Microseconds since the Unix epoch.
    pub time_us: u64,
    /// The allocating stack, innermost first.
    pub frames: Vec<SnapFrame>,
}

/// A block of a segment.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Block {
    /// Its address.
    pub address: u64,
    /// Bytes.
    pub size: u64,
    /// Bytes asked for.
    pub requested_size: u64,
    /// Always `active_allocated` (the whole segment is the allocation).
    pub state: &'static str,
    /// The allocating stack.
    pub frames: Vec<SnapFrame>,
}

/// A segment live at the end.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Segment {
    /// Device index (0: the device is not recorded per allocation).
    pub device: u32,
    /// Its address.
    pub address: u64,
    /// Bytes.
    pub total_size: u64,
    /// Bytes allocated in it.
    pub allocated_size: u64,
    /// Bytes active in it.
    pub active_size: u64,
    /// Bytes asked for.
    pub requested_size: u64,
    /// Always 0.
    pub stream: u64,
    /// `large` (one allocation per segment).
    pub segment_type: &'static str,
    /// Its one block.
    pub blocks: Vec<Block>,
    /// The allocating stack.
    pub frames: Vec<SnapFrame>,
}

/// The snapshot.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Snapshot {
    /// Segments live at the end.
    pub segments: Vec<Segment>,
    /// One trace per device (here one).
    pub device_traces: Vec<Vec<TraceEntry>>,
}

fn frames(rec: &Recording, stack: Option<u32>) -> Vec<SnapFrame> {
    stack
        .and_then(|s| rec.stacks.get(s as usize))
        .into_iter()
        .flatten()
        .rev()
        .filter_map(|&f| rec.frames.get(f as usize))
        .map(|f| SnapFrame {
            filename: f
                .file
                .clone()
                .or_else(|| f.module.clone())
                .unwrap_or_else(|| "??".into()),
            line: f.line.unwrap_or(0),
            name: f.name.clone(),
        })
        .collect()
}

/// The snapshot of the recording's GPU memory, or `None` when it has none.
pub fn snapshot(rec: &Recording) -> Option<Snapshot> {
    let segments_ev: Vec<MemEvent> = memory::gpu_events(rec);
    let tensors_ev: Vec<MemEvent> = rec
        .memory
        .events
        .iter()
        .filter(|e| e.source == MemSource::Torch && e.kind != MemEventKind::PageFault)
        .cloned()
        .collect();
    if segments_ev.is_empty() && tensors_ev.is_empty() {
        return None;
    }
    let unix_us = |t: u64| {
        let since = t as i64 - rec.meta.start_ns as i64;
        (rec.meta.start_unix_ms as i64 * 1000 + since / 1000).max(0) as u64
    };
    // Without PyTorch's own tracepoints, each CUDA allocation is a segment holding one block.
    let blocks_too = tensors_ev.is_empty();
    let mut trace = Vec::new();
    let mut push = |events: &[MemEvent], alloc: &[&'static str], free: &[&'static str]| {
        // A free names the pointer only: its size is the allocation's.
        let mut sizes: std::collections::HashMap<(u32, u64), (u64, Option<u32>)> =
            Default::default();
        for e in events {
            let (size, stack, actions) = match e.kind {
                MemEventKind::Alloc => {
                    sizes.insert((e.pid, e.addr), (e.bytes, e.stack));
                    (e.bytes, e.stack, alloc)
                }
                _ => match sizes.remove(&(e.pid, e.addr)) {
                    Some((size, stack)) => (size, stack, free),
                    None => continue,
                },
            };
            for &action in actions {
                trace.push(TraceEntry {
                    action,
                    addr: e.addr,
                    size,
                    stream: 0,
                    time_us: unix_us(e.time_ns),
                    frames: frames(rec, stack),
                });
            }
        }
    };
    if blocks_too {
        push(
            &segments_ev,
            &["segment_alloc", "alloc"],
            &["free_completed", "segment_free"],
        );
    } else {
        push(&segments_ev, &["segment_alloc"], &["segment_free"]);
        push(&tensors_ev, &["alloc"], &["free_completed"]);
    }
    trace.sort_by_key(|e| e.time_us);
    let live_segments = memory::live_at(&segments_ev, u64::MAX);
    let live_tensors = memory::live_at(&tensors_ev, u64::MAX);
    let segments = live_segments
        .live()
        .map(|r| {
            let blocks: Vec<Block> = if blocks_too {
                vec![Block {
                    address: r.addr,
                    size: r.bytes,
                    requested_size: r.bytes,
                    state: "active_allocated",
                    frames: frames(rec, r.stack),
                }]
            } else {
                live_tensors
                    .live()
                    .filter(|t| {
                        t.pid == r.pid
                            && t.addr >= r.addr
                            && t.addr < r.addr.saturating_add(r.bytes)
                    })
                    .map(|t| Block {
                        address: t.addr,
                        size: t.bytes,
                        requested_size: t.bytes,
                        state: "active_allocated",
                        frames: frames(rec, t.stack),
                    })
                    .collect()
            };
            let allocated: u64 = blocks.iter().map(|b| b.size).sum();
            Segment {
                device: 0,
                address: r.addr,
                total_size: r.bytes,
                allocated_size: allocated,
                active_size: allocated,
                requested_size: allocated,
                stream: 0,
                segment_type: "large",
                blocks,
                frames: frames(rec, r.stack),
            }
        })
        .collect();
    Some(Snapshot {
        segments,
        device_traces: vec![trace],
    })
}

impl Exporter for TorchMemory {
    fn name(&self) -> &'static str {
        "PyTorch memory snapshot"
    }

    fn export(&self, rec: &Recording, dir: &Path) -> Result<Vec<PathBuf>> {
        let Some(snap) = snapshot(rec) else {
            return Ok(Vec::new());
        };
        let path = dir.join(FILE);
        let bytes = serde_pickle::to_vec(&snap, serde_pickle::SerOptions::new()).map_err(|e| {
            Error::io(
                format!("encoding {}", path.display()),
                std::io::Error::other(e.to_string()),
            )
        })?;
        std::fs::write(&path, bytes)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(vec![path])
    }
}
