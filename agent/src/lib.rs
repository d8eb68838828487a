//! modelprobe: attach to an unmodified process and record where its time goes.
//!
//! The library does the work; the `modelprobe` binary is a thin CLI over it. A recording flows
//! through these modules, in order:
//!
//! - [`preflight`]: privileges, kernel features, tracefs, output directory, all checked before
//!   anything is attached, each failure a one-line [`Error`] with its own exit code;
//! - [`target`]: the process to watch, found by pid or launched held at a gate until the
//!   sampler is ready;
//! - [`sampler`]: loads the BPF programs, attaches `cpu-clock` perf events and scheduler
//!   tracepoints, and pumps stack events out of the ring buffer;
//! - [`procmaps`]: snapshots of each target's memory mappings (with open handles on the mapped
//!   files), taken while it lives, so symbolization works after it exits;
//! - [`python`]: which CPython a target runs, for the BPF side to read each thread's Python
//!   frames with every stack, and the code objects that name them;
//! - [`symbolize`]: turns addresses into functions with blazesym (ELF, DWARF, kallsyms, perf maps),
//!   with Python frames merged in place of the interpreter's eval-loop frames;
//! - [`gpu`]: GPU timings from the CUPTI injection library inside each CUDA process (joined to
//!   the launching calls) and NVML device metrics; [`inject`] loads that library into a
//!   process that is already running;
//! - [`recording`] (the `modelprobe-recording` crate): the recording model, its versioned
//!   on-disk format, and the queries every output shares (which call launched a GPU op);
//! - [`live`]: Prometheus metrics served while a recording runs (`--metrics-addr`);
//! - [`push`]: sends the OTLP export to a collector over HTTP;
//! - [`export`], [`report`], [`view`], [`analyze`] (the `modelprobe-outputs` crate): folded
//!   stacks, flame graphs, the timeline, the summary, the HTML viewer, log analysis, built on
//!   the recording alone.
//!
//! [`session`] ties them together:
//!
//! ```no_run
//! use modelprobe::session::{self, RecordOptions, Target};
//! let opts = RecordOptions::new(Target::Pid(4242), "out".into());
//! let outcome = session::record(&opts)?;
//! println!("{} samples", outcome.recording.cpu_sample_count());
//! # Ok::<(), modelprobe::Error>(())
//! ```

pub mod clock;
pub mod config;
pub mod continuous;
pub mod error;
pub mod gpu;
pub mod live;
pub mod live_load;
pub mod preflight;
pub mod probes;
pub mod procmaps;
pub mod progress;
pub mod push;
pub mod pyprobe;
pub mod python;
pub mod sampler;
pub mod select;
pub mod session;
pub mod signals;
pub mod snapshot;
pub mod stop;
pub mod symbolize;
pub mod target;
pub mod unwind;

pub use error::{Error, Result};
/// The recording model and format (the `modelprobe-recording` crate).
pub use modelprobe_llm as llm;
/// The outputs, built on the recording alone (the `modelprobe-outputs` crate).
pub use modelprobe_outputs::{analyze, export, report, view};
pub use modelprobe_recording as recording;
