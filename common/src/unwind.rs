//! The unwind tables the agent builds from each executable's CFI (`.eh_frame`, `.debug_frame`)
//! and the BPF side steps through to take whole user stacks without frame pointers.
//!
//! Three maps hold them (see `ebpf/src/unwind.rs`):
//! - `UNWIND_ROWS`: every object's [`UnwindRow`]s, each object's a contiguous run sorted by
//!   `pc`, shared by every process that maps the object (one run per file, built once);
//! - `UNWIND_MAPPINGS`: per process slot, up to [`MAX_UNWIND_MAPPINGS`] [`UnwindMapping`]s sorted
//!   by `start`: which run of rows covers which address range, and the load bias;
//! - `UNWIND_PROCS`: process id to its [`UnwindProc`] (slot and mapping count).
//!
//! x86-64 only: the return address is always at CFA - 8, so a row needs only the CFA rule and
//! where `%rbp` was saved.

/// Mappings with unwind tables one process can have; more are unwound by frame pointers and
/// counted.
pub const MAX_UNWIND_MAPPINGS: u32 = 512;

/// Processes that can have unwind tables at once; more are unwound by frame pointers.
pub const MAX_UNWIND_PROCS: u32 = 512;

/// Default capacity of `UNWIND_ROWS`: 2 Mi rows, 32 MiB of kernel memory (the kernel keeps
/// each 12-byte row in 16).
pub const DEFAULT_UNWIND_ROWS: u32 = 2 << 20;

/// Binary-search steps the BPF side takes in one object's rows: objects with more than
/// 2^this rows get no table.
pub const ROW_SEARCH_STEPS: u32 = 23;

/// Binary-search steps in one process's mappings (2^9 = [`MAX_UNWIND_MAPPINGS`]).
pub const MAPPING_SEARCH_STEPS: u32 = 10;

/// How a row computes the canonical frame address (CFA: the stack pointer just before the call
/// that made the frame). Values of [`UnwindRow::cfa`].
pub mod cfa {
    /// No CFI covers this address (a gap between functions): step by frame pointer.
    pub const NONE: u8 = 0;
    /// CFA = `%rsp` + `cfa_offset`.
    pub const RSP: u8 = 1;
    /// CFA = `%rbp` + `cfa_offset`.
    pub const RBP: u8 = 2;
    /// A PLT stub's expression: CFA = `%rsp` + 8, plus 8 more once `(%rip & 15) >=
    /// plt_threshold` (the stub has pushed its relocation index).
    pub const PLT: u8 = 3;
    /// A signal trampoline (`__restore_rt`): the interrupted registers are in the
    /// `ucontext_t` at `%rsp`; the next frame's address is exact, not a return address.
    pub const SIGNAL: u8 = 4;
    /// The outermost frame (`_start`, a thread's start: the return address is undefined): the
    /// stack is whole.
    pub const END: u8 = 5;
    /// A rule the BPF side does not evaluate (a general DWARF expression): the walk stops and
    /// the stack is marked [`USTACK_UNSUPPORTED`](super::super::flags::USTACK_UNSUPPORTED).
    pub const UNSUPPORTED: u8 = 6;
}

/// Where the caller's `%rbp` is. Values of [`UnwindRow::rbp`].
pub mod rbp {
    /// Unchanged: the caller's `%rbp` is this frame's.
    pub const SAME: u8 = 0;
    /// Saved at CFA + `rbp_offset`.
    pub const AT_CFA: u8 = 1;
}

/// One row of an object's unwind table: the rules that hold from `pc` up to the next row's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    /// Start address, as an ELF virtual address of the object (add the load bias for a
    /// process's).
    pub pc: u32,
    /// The offset of [`cfa::RSP`] and [`cfa::RBP`]; 0 otherwise.
    pub cfa_offset: i16,
    /// The offset of [`rbp::AT_CFA`]; 0 otherwise.
    pub rbp_offset: i16,
    /// A [`cfa`] constant.
    pub cfa: u8,
    /// A [`rbp`] constant.
    pub rbp: u8,
    /// The threshold of [`cfa::PLT`] (10 or 11); 0 otherwise.
    pub plt_threshold: u8,
    /// Explicit padding; always 0.
    pub _pad: u8,
}

/// One executable mapping of a process that has an unwind table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindMapping {
    /// First address of the mapping.
    pub start: u64,
    /// One past its last address.
    pub end: u64,
    /// Runtime address minus ELF virtual address, for this mapping.
    pub bias: u64,
    /// Index of the object's first row in `UNWIND_ROWS`.
    pub rows_start: u32,
    /// Number of the object's rows.
    pub rows_len: u32,
}

/// A process's entry in `UNWIND_PROCS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindProc {
    /// Its slot: its mappings are `UNWIND_MAPPINGS[slot * MAX_UNWIND_MAPPINGS ..][..len]`.
    pub slot: u32,
    /// Number of mappings, at most [`MAX_UNWIND_MAPPINGS`].
    pub len: u32,
}

// SAFETY: plain integers with no implicit padding (checked below): any bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for UnwindRow {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for UnwindMapping {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for UnwindProc {}

mod layout {
    use core::mem::size_of;

    use super::*;

    const _: () = assert!(size_of::<UnwindRow>() == 12);
    const _: () = assert!(size_of::<UnwindMapping>() == 32);
    const _: () = assert!(size_of::<UnwindProc>() == 8);
    const _: () = assert!(1 << (MAPPING_SEARCH_STEPS - 1) == MAX_UNWIND_MAPPINGS);
}
