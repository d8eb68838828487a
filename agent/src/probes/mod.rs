//! User-named span probes: `--probe TARGET:SYMBOL[@N]`.
//!
//! A spec names a binary or library (a path, or a file name like `libllama.so` matched against
//! what the process maps and its library search path) and a function (exact, or a glob with
//! `*` and `?`). Each match becomes a uprobe at the function's entry and a uretprobe at its
//! return, both carrying the probe's id as their attach cookie; the agent pairs them into spans.
//! `@N` keeps the first N integer arguments (at most 6) as span attributes; the return value is
//! always kept.
mod elf;
pub mod packs;
mod resolve;
mod set;
mod spec;
pub mod torch_memory;
pub mod usdt;

pub use elf::{function_symbols, FunctionSymbol};
pub use resolve::{resolve, resolve_target, ResolvedProbe, SearchContext};
pub use set::ProbeSet;
pub use spec::ProbeSpec;

/// Most functions one glob may match; past it the spec is refused.
pub const MAX_GLOB_MATCHES: usize = 64;
