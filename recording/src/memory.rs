//! Memory by stack: what `--memory` recorded (allocations and frees of anonymous memory from
//! the `mmap`/`munmap`/`mremap`/`brk` syscalls, sampled page faults), and the GPU allocations
//! the CUDA packs' spans carry, replayed in time order into live memory by stack at any
//! instant, allocation totals, leak candidates and the top holders at an out-of-memory.
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::{Recording, Span};

/// What `--memory` recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryTrace {
    /// Allocations, frees and page faults, in time order.
    pub events: Vec<MemEvent>,
    /// One page-fault event stands for this many faults (the perf event's period).
    #[serde(default)]
    pub page_fault_period: u64,
    /// `--memory=malloc`: the mean bytes allocated between two sampled heap allocations
    /// (0: the heap was not sampled).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub malloc_sample_bytes: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl MemoryTrace {
    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// What happened to a range of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemEventKind {
    /// `bytes` from `addr` were given to the process (by `stack`).
    Alloc,
    /// `bytes` from `addr` were given back (no stack: the range's own is what counts).
    Free,
    /// A sampled page fault at `addr`; `bytes` is the faults it stands for times the page size.
    PageFault,
}

/// Where the memory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemSource {
    /// An anonymous `mmap` / `munmap`.
    Mmap,
    /// `mremap` (the old range freed, the new one allocated).
    Mremap,
    /// The program break (`brk`).
    Brk,
    /// A page fault.
    Fault,
    /// A sampled heap allocation (`malloc`, `calloc`, `realloc`), or its `free`.
    Malloc,
    /// A block of PyTorch's CUDA caching allocator (`pytorch:malloc`/`pytorch:free`): a
    /// tensor's memory, inside the segments `cudaMalloc` reserved.
    Torch,
    /// GPU device memory (`cudaMalloc`, `cuMemAlloc`, `cuMemCreate`...).
    GpuDevice,
    /// Page-locked host memory from CUDA (`cudaMallocHost`, `cudaHostAlloc`).
    GpuHost,
    /// CUDA managed (unified) memory.
    GpuManaged,
}

/// Which live set a source's memory belongs to: mapped ranges (`mmap`, `brk`: what the
/// kernel gave the process), sampled heap blocks (a view of part of the mapped memory, never
/// added to it), or GPU memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemClass {
    /// Mapped by the process: `mmap`, `mremap`, `brk`.
    Mapped,
    /// Heap blocks sampled at `malloc` (`--memory=malloc`); bytes are estimates.
    Heap,
    /// GPU device, pinned host or managed memory from CUDA (what PyTorch calls reserved).
    Gpu,
    /// PyTorch's tensors, inside the GPU memory its allocator reserved (its "allocated").
    Tensors,
}

impl MemClass {
    /// The name outputs show.
    pub fn name(self) -> &'static str {
        match self {
            MemClass::Mapped => "CPU",
            MemClass::Heap => "heap (sampled)",
            MemClass::Gpu => "GPU",
            MemClass::Tensors => "GPU tensors (PyTorch)",
        }
    }

    /// Memory the process holds (mapped, GPU), as opposed to views inside it (sampled heap
    /// blocks inside mapped memory, tensors inside GPU memory): what totals add up.
    pub fn is_held(self) -> bool {
        matches!(self, MemClass::Mapped | MemClass::Gpu)
    }

    /// Every class, in display order.
    pub const ALL: [MemClass; 4] = [
        MemClass::Mapped,
        MemClass::Heap,
        MemClass::Gpu,
        MemClass::Tensors,
    ];
}

impl MemSource {
    /// The live set its memory belongs to.
    pub fn class(self) -> MemClass {
        match self {
            MemSource::GpuDevice | MemSource::GpuHost | MemSource::GpuManaged => MemClass::Gpu,
            MemSource::Malloc => MemClass::Heap,
            MemSource::Torch => MemClass::Tensors,
            _ => MemClass::Mapped,
        }
    }

    /// The name outputs show.
    pub fn name(self) -> &'static str {
        match self {
            MemSource::Mmap => "mmap",
            MemSource::Mremap => "mremap",
            MemSource::Brk => "brk",
            MemSource::Fault => "page fault",
            MemSource::Malloc => "malloc (sampled)",
            MemSource::Torch => "PyTorch tensors",
            MemSource::GpuDevice => "GPU device",
            MemSource::GpuHost => "CUDA pinned host",
            MemSource::GpuManaged => "CUDA managed",
        }
    }

    /// The GPU source a CUDA pack's `space` attribute names.
    fn from_space(space: &str) -> MemSource {
        match space {
            "host" => MemSource::GpuHost,
            "managed" => MemSource::GpuManaged,
            _ => MemSource::GpuDevice,
        }
    }
}

/// One allocation, free or page fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemEvent {
    /// CLOCK_MONOTONIC ns.
    #[serde(rename = "t")]
    pub time_ns: u64,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// What happened.
    pub kind: MemEventKind,
    /// Where the memory came from.
    pub source: MemSource,
    /// Start of the range (the faulting address for a page fault).
    pub addr: u64,
    /// Length of the range in bytes.
    pub bytes: u64,
    /// The allocating (or faulting) stack, index into [`Recording::stacks`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<u32>,
}

/// The GPU allocations and frees the CUDA packs' spans carry (`memory` attribute `alloc` or
/// `free`), as memory events in time order; failed allocations are left out.
///
/// A runtime call that allocates through a probed driver call (`cudaMalloc` over
/// `cuMemAlloc_v2`) is one allocation: of memory spans of one kind nested on a thread, the
/// innermost is kept (it read the pointer; the outer one's out-parameter read came after the
/// inner call's return and names nothing).
pub fn gpu_events(rec: &Recording) -> Vec<MemEvent> {
    let mut mem: Vec<&Span> = rec
        .spans
        .iter()
        .filter(|s| s.attrs.contains_key("memory"))
        .collect();
    mem.sort_by_key(|s| (s.tid, s.start_ns, std::cmp::Reverse(s.end_ns)));
    let what = |s: &Span| {
        s.attrs
            .get("memory")
            .and_then(|m| m.as_str())
            .map(str::to_string)
    };
    let mut out: Vec<MemEvent> = Vec::new();
    for (i, s) in mem.iter().enumerate() {
        let holds_inner = mem[i + 1..]
            .iter()
            .take_while(|o| o.tid == s.tid && o.start_ns <= s.end_ns)
            .any(|o| o.end_ns <= s.end_ns && what(o) == what(s));
        if !holds_inner {
            out.extend(gpu_event(s));
        }
    }
    out.sort_by_key(|e| e.time_ns);
    out
}

fn gpu_event(s: &Span) -> Option<MemEvent> {
    let what = s.attrs.get("memory")?.as_str()?;
    if s.attrs.contains_key("error") {
        return None;
    }
    let hex = |key: &str| {
        let text = s.attrs.get(key)?.as_str()?;
        u64::from_str_radix(text.trim_start_matches("0x"), 16).ok()
    };
    let source = MemSource::from_space(
        s.attrs
            .get("space")
            .and_then(|v| v.as_str())
            .unwrap_or("device"),
    );
    let addr = hex("ptr")?;
    let (kind, bytes, time_ns) = match what {
        "alloc" => (
            MemEventKind::Alloc,
            s.attrs.get("bytes")?.as_u64()?,
            s.end_ns,
        ),
        "free" => (MemEventKind::Free, 0, s.start_ns),
        _ => return None,
    };
    Some(MemEvent {
        time_ns,
        pid: s.pid,
        tid: s.tid,
        kind,
        source,
        addr,
        bytes,
        stack: s.stack,
    })
}

/// Every allocation and free of the recording, CPU and GPU, in time order (page faults
/// left out).
///
/// A sampled heap allocation's `bytes` is what it stands for: `s / (1 - exp(-s / mean))` for
/// an allocation of `s` bytes sampled with probability `1 - exp(-s / mean)`, so sums over
/// samples estimate the heap's bytes (the recording keeps the sizes asked for).
pub fn all_events(rec: &Recording) -> Vec<MemEvent> {
    let mean = rec.memory.malloc_sample_bytes as f64;
    let mut out: Vec<MemEvent> = rec
        .memory
        .events
        .iter()
        .filter(|e| e.kind != MemEventKind::PageFault)
        .cloned()
        .map(|mut e| {
            if e.source == MemSource::Malloc && e.kind == MemEventKind::Alloc && mean > 0.0 {
                e.bytes = heap_estimate(e.bytes, mean);
            }
            e
        })
        .chain(gpu_events(rec))
        .collect();
    out.sort_by_key(|e| e.time_ns);
    out
}

/// The bytes a sampled allocation of `size` stands for (see [`all_events`]).
pub fn heap_estimate(size: u64, mean: f64) -> u64 {
    let s = size.max(1) as f64;
    (s / (1.0 - (-s / mean).exp())).round() as u64
}

/// A range live at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveRange {
    /// Process id.
    pub pid: u32,
    /// The thread that allocated it.
    pub tid: u32,
    /// Start.
    pub addr: u64,
    /// Length in bytes (what is left of it after partial frees).
    pub bytes: u64,
    /// The stack that allocated it.
    pub stack: Option<u32>,
    /// Where it came from.
    pub source: MemSource,
    /// When it was allocated.
    pub time_ns: u64,
}

/// Live memory as allocations and frees are replayed: ranges by (pid, GPU or not, start),
/// split by partial frees (`munmap` of part of a mapping).
#[derive(Debug, Default)]
pub struct Replay {
    live: BTreeMap<(u32, MemClass, u64), LiveRange>,
    /// Live bytes by (process, class), kept as ranges come and go.
    sums: HashMap<(u32, MemClass), u64>,
    /// Bytes unmapped that no recorded allocation covered (mapped before recording began, or
    /// a file mapping): not live memory this replay knows of.
    pub unknown_freed: u64,
    /// Frees of a pointer (GPU, heap, tensors) no recorded allocation returned.
    pub unknown_frees: u64,
}

impl Replay {
    /// An empty replay.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event (page faults are ignored).
    pub fn apply(&mut self, e: &MemEvent) {
        let class = e.source.class();
        // GPU and heap frees name the pointer an allocation returned: all of it goes.
        let by_pointer = class != MemClass::Mapped;
        match e.kind {
            MemEventKind::PageFault => {}
            MemEventKind::Alloc => {
                if e.bytes == 0 {
                    return;
                }
                // A new mapping over old ones (MAP_FIXED) replaces them.
                if !by_pointer {
                    self.free(e.pid, class, e.addr, e.bytes);
                }
                *self.sums.entry((e.pid, class)).or_default() += e.bytes;
                let replaced = self.live.insert(
                    (e.pid, class, e.addr),
                    LiveRange {
                        pid: e.pid,
                        tid: e.tid,
                        addr: e.addr,
                        bytes: e.bytes,
                        stack: e.stack,
                        source: e.source,
                        time_ns: e.time_ns,
                    },
                );
                // A pointer handed out again without its free seen.
                if let Some(old) = replaced {
                    self.subtract(e.pid, class, old.bytes);
                }
            }
            MemEventKind::Free if by_pointer => match self.live.remove(&(e.pid, class, e.addr)) {
                Some(r) => self.subtract(e.pid, class, r.bytes),
                None => self.unknown_frees += 1,
            },
            MemEventKind::Free => {
                let freed = self.free(e.pid, class, e.addr, e.bytes);
                self.unknown_freed += e.bytes.saturating_sub(freed);
            }
        }
    }

    fn subtract(&mut self, pid: u32, class: MemClass, bytes: u64) {
        let sum = self.sums.entry((pid, class)).or_default();
        *sum = sum.saturating_sub(bytes);
    }

    /// Live bytes of process `pid` in `class` now.
    pub fn live_bytes(&self, pid: u32, class: MemClass) -> u64 {
        self.sums.get(&(pid, class)).copied().unwrap_or(0)
    }

    /// Frees `[addr, addr + len)` of process `pid`: removes what it covers, trims or splits
    /// what it overlaps. Returns the bytes that were live.
    fn free(&mut self, pid: u32, gpu: MemClass, addr: u64, len: u64) -> u64 {
        let end = addr.saturating_add(len);
        // Ranges start before `end`; the last one starting before `addr` may overlap too.
        let lo = self
            .live
            .range((pid, gpu, 0)..(pid, gpu, addr))
            .next_back()
            .map_or(addr, |(k, _)| k.2);
        let keys: Vec<u64> = self
            .live
            .range((pid, gpu, lo)..(pid, gpu, end))
            .map(|(k, _)| k.2)
            .collect();
        let mut freed = 0;
        for start in keys {
            let r = self.live[&(pid, gpu, start)];
            let r_end = r.addr.saturating_add(r.bytes);
            if r_end <= addr {
                continue;
            }
            self.live.remove(&(pid, gpu, start));
            let (cut_lo, cut_hi) = (addr.max(r.addr), end.min(r_end));
            freed += cut_hi - cut_lo;
            if r.addr < cut_lo {
                let head = LiveRange {
                    bytes: cut_lo - r.addr,
                    ..r
                };
                self.live.insert((pid, gpu, r.addr), head);
            }
            if cut_hi < r_end {
                let tail = LiveRange {
                    addr: cut_hi,
                    bytes: r_end - cut_hi,
                    ..r
                };
                self.live.insert((pid, gpu, cut_hi), tail);
            }
        }
        self.subtract(pid, gpu, freed);
        freed
    }

    /// Ranges live now.
    pub fn live(&self) -> impl Iterator<Item = &LiveRange> {
        self.live.values()
    }

    /// Live bytes now, (mapped CPU memory, GPU memory); see [`Replay::total`].
    pub fn totals(&self) -> (u64, u64) {
        (self.total(MemClass::Mapped), self.total(MemClass::Gpu))
    }

    /// Live bytes of one class now.
    pub fn total(&self, class: MemClass) -> u64 {
        self.live
            .values()
            .filter(|r| r.source.class() == class)
            .map(|r| r.bytes)
            .sum()
    }
}

/// Live bytes by stack (`None`: allocations whose stack is unknown), largest first.
pub fn by_stack<'a>(ranges: impl Iterator<Item = &'a LiveRange>) -> Vec<(Option<u32>, u64, u64)> {
    let mut sums: HashMap<Option<u32>, (u64, u64)> = HashMap::new();
    for r in ranges {
        let e = sums.entry(r.stack).or_default();
        e.0 += r.bytes;
        e.1 += 1;
    }
    let mut out: Vec<(Option<u32>, u64, u64)> =
        sums.into_iter().map(|(s, (b, n))| (s, b, n)).collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// The replay of `events` up to and including `t`.
pub fn live_at(events: &[MemEvent], t: u64) -> Replay {
    let mut r = Replay::new();
    for e in events.iter().take_while(|e| e.time_ns <= t) {
        r.apply(e);
    }
    r
}

/// A stack whose live bytes grew steadily over the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakCandidate {
    /// The allocating stack.
    pub stack: Option<u32>,
    /// Live bytes at the end.
    pub live_bytes: u64,
    /// Live ranges at the end.
    pub live_ranges: u64,
    /// Of the run's tenths (after the first), those in which its live bytes grew.
    pub growing_tenths: u32,
    /// Which memory.
    pub class: MemClass,
}

/// Stacks whose live bytes grew in at least 6 of the run's last 9 tenths and fell by less
/// than half what they grew, and hold at least `min_bytes` at the run's last allocation: the
/// leak candidates, largest first.
pub fn leak_candidates(
    events: &[MemEvent],
    start: u64,
    end: u64,
    min_bytes: u64,
) -> Vec<LeakCandidate> {
    // The run ends at its last allocation: what a process frees on its way out (an
    // interpreter's teardown) says nothing about what it held while it ran.
    let end = events
        .iter()
        .filter(|e| e.kind == MemEventKind::Alloc)
        .map(|e| e.time_ns)
        .max()
        .map_or(end, |last| last.min(end));
    let span = end.saturating_sub(start).max(10);
    let mut replay = Replay::new();
    let mut at = events.iter().peekable();
    // Live bytes of each stack at the end of each tenth.
    let mut series: HashMap<(Option<u32>, MemClass), [u64; 10]> = HashMap::new();
    for tenth in 0..10u64 {
        let until = start + span * (tenth + 1) / 10;
        while let Some(e) = at.next_if(|e| e.time_ns <= until) {
            replay.apply(e);
        }
        let mut now: HashMap<(Option<u32>, MemClass), u64> = HashMap::new();
        for r in replay.live() {
            *now.entry((r.stack, r.source.class())).or_default() += r.bytes;
        }
        for (key, bytes) in now {
            series.entry(key).or_insert([0; 10])[tenth as usize] = bytes;
        }
    }
    let mut out = Vec::new();
    for ((stack, class), s) in series {
        let growing = s.windows(2).filter(|w| w[1] > w[0]).count() as u32;
        let fell: u64 = s.windows(2).map(|w| w[0].saturating_sub(w[1])).sum();
        let grew: u64 = s.windows(2).map(|w| w[1].saturating_sub(w[0])).sum();
        let (live_bytes, live_ranges) = replay
            .live()
            .filter(|r| r.stack == stack && r.source.class() == class)
            .fold((0, 0), |(b, n), r| (b + r.bytes, n + 1));
        if growing >= 6 && fell < grew / 2 && live_bytes >= min_bytes {
            out.push(LeakCandidate {
                stack,
                live_bytes,
                live_ranges,
                growing_tenths: growing,
                class,
            });
        }
    }
    out.sort_by(|a, b| b.live_bytes.cmp(&a.live_bytes).then(a.stack.cmp(&b.stack)));
    out
}

/// Live memory over time as counters, one per process and class with allocations
/// (`memory live mapped`, `memory live heap (sampled)`, `GPU memory reserved`, `GPU tensors
/// allocated`; MiB), at most one point per `step_ns` (the last value in each step): memory by
/// stack on the timeline beside the resident-set counters.
pub fn live_counters(rec: &Recording, step_ns: u64) -> Vec<crate::Counter> {
    let events = all_events(rec);
    let name = |class: MemClass| match class {
        MemClass::Mapped => "memory live mapped",
        MemClass::Heap => "memory live heap (sampled)",
        MemClass::Gpu => "GPU memory reserved",
        MemClass::Tensors => "GPU tensors allocated",
    };
    let mut live: HashMap<(u32, MemClass), u64> = HashMap::new();
    let mut series: BTreeMap<(u32, MemClass), Vec<(u64, f64)>> = BTreeMap::new();
    let mut replay = Replay::new();
    for e in &events {
        replay.apply(e);
        let key = (e.pid, e.source.class());
        let now = replay.live_bytes(key.0, key.1);
        if live.insert(key, now) == Some(now) {
            continue;
        }
        let points = series.entry(key).or_default();
        let mib = now as f64 / (1u64 << 20) as f64;
        match points.last_mut() {
            Some(last) if e.time_ns < last.0.saturating_add(step_ns.max(1)) => last.1 = mib,
            _ => points.push((e.time_ns, mib)),
        }
    }
    series
        .into_iter()
        .map(|((pid, class), points)| crate::Counter {
            name: name(class).to_string(),
            unit: "MiB".into(),
            device: None,
            pid: Some(pid),
            points,
        })
        .collect()
}

/// Frames of the allocator itself (libc, the C++ runtime, CPython's allocator), skipped when
/// naming who holds memory: the caller of `malloc` is the holder, not `malloc`.
const ALLOCATOR_PREFIXES: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "free",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "operator new",
    "sysmalloc",
    "_int_",
    "__libc_",
    "mmap",
    "__mmap",
    "mremap",
    "__mremap",
    "brk",
    "__brk",
    "sbrk",
    "__sbrk",
    "tcache",
    "PyMem_",
    "_PyMem_",
    "PyObject_Malloc",
    "PyObject_Realloc",
    "PyObject_Calloc",
    "_PyObject_",
    "new_arena",
    "pymalloc",
    "allocate_from_new_pool",
    "cudaMalloc",
    "cudaHostAlloc",
    "cudaFree",
    "cuMemAlloc",
    "cuMemCreate",
];

/// Libraries whose frames are the allocator's or the runtime's, not the holder's.
const RUNTIME_MODULES: &[&str] = &[
    "libc.so",
    "libc-",
    "ld-linux",
    "libstdc++",
    "libpthread",
    "libcudart",
    "libcuda.so",
    "libc10",
];

/// Who holds memory allocated by `stack`: its innermost Python function if it has one, else
/// its innermost frame that is neither the kernel, the allocator nor the C runtime.
pub fn holder(rec: &Recording, stack: Option<u32>) -> String {
    let Some(frames) = stack.and_then(|s| rec.stacks.get(s as usize)) else {
        return "[unknown stack]".into();
    };
    let frames: Vec<&crate::Frame> = frames
        .iter()
        .rev()
        .filter_map(|&f| rec.frames.get(f as usize))
        .collect();
    if let Some(py) = frames.iter().find(|f| f.kind == crate::FrameKind::Python) {
        return py.name.clone();
    }
    frames
        .iter()
        .find(|f| {
            f.kind != crate::FrameKind::Kernel
                && !ALLOCATOR_PREFIXES.iter().any(|p| f.name.starts_with(p))
                && !f
                    .module
                    .as_deref()
                    .is_some_and(|m| RUNTIME_MODULES.iter().any(|r| m.starts_with(r)))
        })
        .or(frames.first())
        .map_or_else(|| "[unknown stack]".into(), |f| f.name.clone())
}

/// Bytes for people: `512 B`, `3.0 KiB`, `1.5 GiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64, kind: MemEventKind, addr: u64, bytes: u64, stack: u32) -> MemEvent {
        MemEvent {
            time_ns: t,
            pid: 1,
            tid: 1,
            kind,
            source: MemSource::Mmap,
            addr,
            bytes,
            stack: Some(stack),
        }
    }

    #[test]
    fn partial_unmaps_split_and_trim_ranges() {
        let mut r = Replay::new();
        r.apply(&ev(1, MemEventKind::Alloc, 0x1000, 0x4000, 7));
        // Free the middle page: head and tail stay, under the same stack.
        r.apply(&ev(2, MemEventKind::Free, 0x2000, 0x1000, 0));
        let live: Vec<_> = r.live().map(|l| (l.addr, l.bytes, l.stack)).collect();
        assert_eq!(
            live,
            vec![(0x1000, 0x1000, Some(7)), (0x3000, 0x2000, Some(7))]
        );
        // A free over the tail and beyond: only what was live counts.
        r.apply(&ev(3, MemEventKind::Free, 0x4000, 0x3000, 0));
        assert_eq!(r.totals(), (0x2000, 0));
        assert_eq!(r.unknown_freed, 0x2000);
        // MAP_FIXED over the head replaces it.
        r.apply(&ev(4, MemEventKind::Alloc, 0x1000, 0x1000, 9));
        assert_eq!(
            by_stack(r.live()),
            vec![(Some(7), 0x1000, 1), (Some(9), 0x1000, 1)]
        );
    }

    #[test]
    fn a_stack_that_grows_every_tenth_is_a_leak_candidate_and_a_churning_one_is_not() {
        let mut events = Vec::new();
        for i in 0..100u64 {
            // Stack 1 leaks 1 MiB every 10 ns; stack 2 maps and unmaps.
            events.push(ev(
                i * 10,
                MemEventKind::Alloc,
                0x100_0000 + i * 0x10_0000,
                0x10_0000,
                1,
            ));
            events.push(ev(
                i * 10 + 1,
                MemEventKind::Alloc,
                0x9000_0000,
                0x10_0000,
                2,
            ));
            events.push(ev(
                i * 10 + 2,
                MemEventKind::Free,
                0x9000_0000,
                0x10_0000,
                0,
            ));
        }
        let leaks = leak_candidates(&events, 0, 1000, 1);
        assert_eq!(leaks.len(), 1, "{leaks:?}");
        assert_eq!(leaks[0].stack, Some(1));
        assert_eq!(leaks[0].live_bytes, 100 << 20);
        assert_eq!(leaks[0].live_ranges, 100);
        assert!(live_at(&events, 55).totals().0 == 6 << 20);
    }

    #[test]
    fn live_sums_follow_the_ranges_and_become_counters() {
        let mut events = vec![
            ev(0, MemEventKind::Alloc, 0x1000, 0x4000, 1),
            ev(10, MemEventKind::Free, 0x2000, 0x1000, 0),
            ev(20, MemEventKind::Alloc, 0x10000, 0x2000, 2),
        ];
        let mut r = Replay::new();
        for e in &events {
            r.apply(e);
        }
        let sum: u64 = r.live().map(|l| l.bytes).sum();
        assert_eq!(r.live_bytes(1, MemClass::Mapped), sum);
        assert_eq!(sum, 0x5000);
        events.push(ev(1_000_000_000, MemEventKind::Free, 0x1000, 0x20000, 0));
        let mut rec = crate::Recording::new(Default::default());
        rec.memory.events = events;
        let c = live_counters(&rec, 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, "memory live mapped");
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        assert_eq!(
            c[0].points,
            vec![
                (0, mib(0x4000)),
                (10, mib(0x3000)),
                (20, mib(0x5000)),
                (1_000_000_000, 0.0)
            ]
        );
        // One point per step: the step's last value at its first change's time.
        let c = live_counters(&rec, 100);
        assert_eq!(c[0].points, vec![(0, mib(0x5000)), (1_000_000_000, 0.0)]);
    }

    #[test]
    fn a_runtime_allocation_through_a_driver_allocation_counts_once() {
        let mut rec = crate::Recording::new(Default::default());
        let span = |start: u64, end: u64, attrs: serde_json::Value| crate::Span {
            probe: 0,
            pid: 1,
            tid: 1,
            start_ns: start,
            end_ns: end,
            depth: 0,
            args: vec![],
            ret: Some(0),
            attrs: serde_json::from_value(attrs).unwrap(),
            stack: Some(0),
        };
        rec.spans = vec![
            // cudaMalloc (its out-parameter read after cuMemAlloc_v2's return: 0x0) ...
            span(
                10,
                100,
                serde_json::json!({"memory": "alloc", "bytes": 64, "ptr": "0x0"}),
            ),
            // ... over cuMemAlloc_v2, which read the pointer.
            span(
                20,
                90,
                serde_json::json!({"memory": "alloc", "bytes": 64, "ptr": "0x7000"}),
            ),
            span(
                200,
                210,
                serde_json::json!({"memory": "free", "ptr": "0x7000"}),
            ),
        ];
        let ev = gpu_events(&rec);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!((ev[0].addr, ev[0].bytes), (0x7000, 64));
        assert_eq!(live_at(&ev, u64::MAX).totals(), (0, 0));
    }

    #[test]
    fn bytes_read_for_people() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 10), "3.0 KiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
