//! What modelprobe makes of a recording, built on [`modelprobe_recording`] alone (no BPF, no
//! symbolizer, no NVML), so a recording made on a server can be read on a laptop:
//!
//! - [`export`]: folded stacks; CPU, off-CPU and GPU flame graph SVGs; the `trace.json`
//!   timeline; and the formats other tools read: pprof, speedscope, OTLP, Perfetto;
//! - [`report`]: the tables of the end-of-run summary, as text or JSON;
//! - [`view`]: one self-contained HTML page with the timeline, flame graphs and report;
//! - [`analyze`]: search and summaries over recordings and plain log files.
pub mod analyze;
mod error;
pub mod export;
pub mod report;
pub mod view;

pub use error::{Error, Result};

// The recording crate, by the names every module here uses.
use modelprobe_recording::{self as recording, logs};
