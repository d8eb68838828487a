//! Addresses to functions: blazesym for ELF symbols and DWARF (file:line, inlined functions,
//! demangled Rust and C++), kallsyms for the kernel, perf maps for JIT code.
//!
//! Work is batched: every distinct address of the recording is resolved once, module by module,
//! from the files [`procmaps`](crate::procmaps) opened while the targets lived. A frame that
//! cannot be named still appears, as `[module+0xoffset]` or `[unknown 0xaddr]`.
use std::collections::HashMap;

use blazesym::symbolize::{
    source::{Elf, Kernel, Source},
    Input, Sym, Symbolized, Symbolizer,
};

use crate::{
    procmaps::{MapsRegistry, ModuleId},
    python::{merge, PyFrameName},
    recording::{Frame, FrameKind},
};

/// A stack as captured: addresses innermost first, as the kernel reports them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawStack {
    /// Process the addresses belong to.
    pub pid: u32,
    /// Kernel frames, innermost first.
    pub kernel: Vec<u64>,
    /// User frames, innermost first.
    pub user: Vec<u64>,
    /// Python frames, innermost first, named while the process lived (merged into the user
    /// frames here, see [`crate::python::merge`]).
    pub python: Vec<PyFrameName>,
}

/// Frames and stacks produced by [`symbolize_stacks`].
#[derive(Debug, Default)]
pub struct SymbolizedStacks {
    /// Interned frames.
    pub frames: Vec<Frame>,
    /// One stack per input stack: frame indices, outermost first.
    pub stacks: Vec<Vec<u32>>,
}

/// Where a user address points, after normalization against the process's mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Location {
    File(ModuleId, u64),
    Other(u32, u64),
}

struct Interner {
    frames: Vec<Frame>,
    ids: HashMap<Frame, u32>,
}

impl Interner {
    fn id(&mut self, frame: Frame) -> u32 {
        if let Some(&id) = self.ids.get(&frame) {
            return id;
        }
        let id = self.frames.len() as u32;
        self.ids.insert(frame.clone(), id);
        self.frames.push(frame);
        id
    }
}

/// Symbolizes every stack. Return addresses (all but the innermost frame) are looked up at
/// `addr - 1` so that the call site, not the next instruction, is named.
///
/// `perf_maps` holds JIT symbol maps read while their processes lived; a process missing from it
/// has its map read now, if it still exists.
pub fn symbolize_stacks(
    stacks: &[RawStack],
    maps: &MapsRegistry,
    perf_maps: &HashMap<u32, PerfMap>,
) -> SymbolizedStacks {
    let symbolizer = Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .build();
    let lookup = |i: usize, a: u64| if i == 0 { a } else { a.saturating_sub(1) };

    // Normalize and collect distinct addresses.
    let mut by_module: HashMap<ModuleId, Vec<u64>> = HashMap::new();
    let mut kernel_addrs = Vec::new();
    let mut user_locs: Vec<Vec<Location>> = Vec::with_capacity(stacks.len());
    for s in stacks {
        let mut locs = Vec::with_capacity(s.user.len());
        for (i, &addr) in s.user.iter().enumerate() {
            let addr = lookup(i, addr);
            let loc = match maps.lookup(s.pid, addr) {
                Some(m) if m.module.is_some() => {
                    let id = m.module.expect("checked");
                    let off = addr - m.start + m.offset;
                    by_module.entry(id).or_default().push(off);
                    Location::File(id, off)
                }
                _ => Location::Other(s.pid, addr),
            };
            locs.push(loc);
        }
        user_locs.push(locs);
        kernel_addrs.extend(s.kernel.iter().enumerate().map(|(i, &a)| lookup(i, a)));
    }

    let mut interner = Interner {
        frames: Vec::new(),
        ids: HashMap::new(),
    };
    let mut resolved: HashMap<Location, Vec<u32>> = HashMap::new();
    for (id, mut offsets) in by_module {
        offsets.sort_unstable();
        offsets.dedup();
        let module = maps.module(id);
        let results = module.open_path.as_ref().map(|p| {
            let src = Source::Elf(Elf::new(p.clone()));
            symbolizer.symbolize(&src, Input::FileOffset(&offsets))
        });
        let results = match results {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                log::debug!("symbolizing {}: {e}", module.path);
                Vec::new()
            }
            None => Vec::new(),
        };
        for (i, &off) in offsets.iter().enumerate() {
            let frames = match results.get(i) {
                Some(Symbolized::Sym(sym)) => sym_frames(sym, Some(module.name()), FrameKind::User),
                _ => vec![unknown(
                    format!("[{}+{off:#x}]", module.name()),
                    Some(module.name()),
                )],
            };
            let ids = frames.into_iter().map(|f| interner.id(f)).collect();
            resolved.insert(Location::File(id, off), ids);
        }
    }

    let mut late_perf_maps: HashMap<u32, PerfMap> = HashMap::new();
    let mut user_frames = |loc: Location, interner: &mut Interner| -> Vec<u32> {
        if let Some(ids) = resolved.get(&loc) {
            return ids.clone();
        }
        let Location::Other(pid, addr) = loc else {
            unreachable!("file locations are all resolved above")
        };
        let pm = match perf_maps.get(&pid) {
            Some(pm) => pm,
            None => late_perf_maps
                .entry(pid)
                .or_insert_with(|| PerfMap::load(pid)),
        };
        let frame = match (pm.lookup(addr), maps.lookup(pid, addr)) {
            (Some(name), _) => Frame {
                name: name.to_string(),
                module: Some("[jit]".into()),
                file: None,
                line: None,
                kind: FrameKind::Jit,
                inlined: false,
            },
            (None, Some(m)) if !m.path.is_empty() => {
                unknown(format!("[{}+{:#x}]", m.path, addr - m.start), Some(&m.path))
            }
            _ => unknown(format!("[unknown {addr:#x}]"), None),
        };
        vec![interner.id(frame)]
    };

    // Kernel addresses, all at once.
    kernel_addrs.sort_unstable();
    kernel_addrs.dedup();
    let mut kernel: HashMap<u64, Vec<u32>> = HashMap::new();
    if !kernel_addrs.is_empty() {
        let src = Source::Kernel(Kernel {
            vmlinux: blazesym::MaybeDefault::None,
            ..Kernel::default()
        });
        let results = symbolizer
            .symbolize(&src, Input::AbsAddr(&kernel_addrs))
            .unwrap_or_else(|e| {
                log::warn!("kernel symbolization failed: {e}");
                Vec::new()
            });
        for (i, &addr) in kernel_addrs.iter().enumerate() {
            let frames = match results.get(i) {
                Some(Symbolized::Sym(sym)) => sym_frames(sym, Some("[kernel]"), FrameKind::Kernel),
                _ => vec![Frame {
                    kind: FrameKind::Kernel,
                    ..unknown(format!("[kernel {addr:#x}]"), Some("[kernel]"))
                }],
            };
            kernel.insert(addr, frames.into_iter().map(|f| interner.id(f)).collect());
        }
    }

    let mut out_stacks = Vec::with_capacity(stacks.len());
    for (s, locs) in stacks.iter().zip(user_locs) {
        let mut stack = Vec::new();
        let native: Vec<Vec<u32>> = locs
            .into_iter()
            .map(|loc| user_frames(loc, &mut interner))
            .collect();
        let groups = if s.python.is_empty() {
            native
        } else {
            let native = native
                .into_iter()
                .map(|g| {
                    let eval = g.first().is_some_and(|&id| {
                        merge::is_eval_frame(&interner.frames[id as usize].name)
                    });
                    (g, eval)
                })
                .collect();
            merge::merge(native, &s.python, |f| interner.id(python_frame(f)))
        };
        for group in groups.into_iter().rev() {
            stack.extend(group);
        }
        for (i, &addr) in s.kernel.iter().enumerate().rev() {
            stack.extend(kernel.get(&lookup(i, addr)).into_iter().flatten());
        }
        out_stacks.push(stack);
    }
    SymbolizedStacks {
        frames: interner.frames,
        stacks: out_stacks,
    }
}

/// A Python frame as every output shows it: `qualname (file.py:LINE)`, the whole path in
/// `file`.
fn python_frame(f: &PyFrameName) -> Frame {
    let base = f.file.rsplit('/').next().unwrap_or(&f.file);
    let name = match (f.line, base.is_empty()) {
        (_, true) => f.name.clone(),
        (Some(line), false) => format!("{} ({base}:{line})", f.name),
        (None, false) => format!("{} ({base})", f.name),
    };
    Frame {
        name,
        module: None,
        file: (!f.file.is_empty()).then(|| f.file.clone()),
        line: f.line,
        kind: FrameKind::Python,
        inlined: false,
    }
}

fn unknown(name: String, module: Option<&str>) -> Frame {
    Frame {
        name,
        module: module.map(str::to_string),
        file: None,
        line: None,
        kind: FrameKind::Unknown,
        inlined: false,
    }
}

/// The frames one symbol stands for, outermost first: the function, then any functions
/// inlined into it at this address.
fn sym_frames(sym: &Sym<'_>, module: Option<&str>, kind: FrameKind) -> Vec<Frame> {
    let code = |ci: Option<&blazesym::symbolize::CodeInfo<'_>>| {
        ci.map(|c| (c.to_path().display().to_string(), c.line))
    };
    // blazesym gives each frame its own position: the outer function's is the call site of
    // the first inlined function, the innermost one's is the instruction itself.
    let outer_code = code(sym.code_info.as_deref());
    let mut frames = vec![Frame {
        name: sym.name.to_string(),
        module: module.map(str::to_string),
        file: outer_code.as_ref().map(|c| c.0.clone()),
        line: outer_code.and_then(|c| c.1),
        kind,
        inlined: false,
    }];
    for inl in sym.inlined.iter() {
        let c = code(inl.code_info.as_ref());
        frames.push(Frame {
            name: inl.name.to_string(),
            module: module.map(str::to_string),
            file: c.as_ref().map(|c| c.0.clone()),
            line: c.and_then(|c| c.1),
            kind,
            inlined: true,
        });
    }
    frames
}

/// A JIT's symbol map, `/tmp/perf-PID.map`: lines of `START SIZE NAME`, hex.
#[derive(Debug, Default)]
pub struct PerfMap {
    entries: Vec<(u64, u64, String)>,
}

impl PerfMap {
    /// True if the map names no symbol.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Loads the map of `pid` from its own root (containers) or from this `/tmp`.
    pub fn load(pid: u32) -> PerfMap {
        let candidates = [
            format!("/proc/{pid}/root/tmp/perf-{pid}.map"),
            format!("/tmp/perf-{pid}.map"),
        ];
        candidates
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|text| PerfMap::parse(&text))
            .unwrap_or_default()
    }

    /// Parses perf-map text; malformed lines are skipped.
    pub fn parse(text: &str) -> PerfMap {
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        let mut entries: Vec<_> = text
            .lines()
            .filter_map(|line| {
                let mut it = line.splitn(3, ' ');
                let start = hex(it.next()?)?;
                let size = hex(it.next()?)?;
                Some((
                    start,
                    start.checked_add(size)?,
                    it.next()?.trim().to_string(),
                ))
            })
            .collect();
        entries.sort_by_key(|e| e.0);
        PerfMap { entries }
    }

    /// The name of the symbol covering `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.entries.partition_point(|e| e.0 <= addr);
        let e = self.entries.get(i.checked_sub(1)?)?;
        (addr < e.1).then_some(e.2.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_map_lookup() {
        let pm = PerfMap::parse("1000 10 jitted_a\n0x2000 0x20 py::fn b\nbad line\n");
        assert_eq!(pm.lookup(0x1000), Some("jitted_a"));
        assert_eq!(pm.lookup(0x100f), Some("jitted_a"));
        assert_eq!(pm.lookup(0x1010), None);
        assert_eq!(pm.lookup(0x2010), Some("py::fn b"));
        assert_eq!(pm.lookup(0x10), None);
    }

    #[inline(never)]
    #[no_mangle]
    extern "C" fn mp_symbolize_test_marker() -> u64 {
        std::hint::black_box(42)
    }

    #[test]
    fn names_own_function_from_a_maps_snapshot() {
        let pid = std::process::id();
        let mut maps = MapsRegistry::default();
        maps.capture(pid);
        let addr = mp_symbolize_test_marker as *const () as u64;
        let unmapped = 0x10u64;
        let stacks = vec![RawStack {
            pid,
            kernel: vec![],
            user: vec![addr + 1, unmapped],
            python: vec![],
        }];
        let out = symbolize_stacks(&stacks, &maps, &HashMap::new());
        let names: Vec<&str> = out.stacks[0]
            .iter()
            .map(|&i| out.frames[i as usize].name.as_str())
            .collect();
        // Outermost first: the unmapped frame (as the caller), then the marker.
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(names[0], "[unknown 0xf]");
        assert_eq!(names[1], "mp_symbolize_test_marker");
    }
}
