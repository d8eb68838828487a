//! Whole user stacks without frame pointers: the CFI of every executable mapping of a target,
//! compiled into tables the BPF walk (`ebpf/src/unwind.rs`) steps through.
//!
//! - [`compile`]: one ELF object's `.eh_frame` / `.debug_frame` into sorted rows;
//! - [`tables`]: which object's rows are where, and which process maps what;
//! - [`shared`]: the mmapped BPF arrays the rows and mappings are written through.
//!
//! The layout of rows and mappings, shared with the BPF side, is in
//! `modelprobe_common::unwind`.
pub mod compile;
mod shared;
pub mod tables;
pub mod walk;

pub use tables::UnwindTables;
