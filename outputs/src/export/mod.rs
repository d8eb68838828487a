//! Outputs derived from a [`Recording`]: one [`Exporter`] per format, one file per exporter.
use std::path::{Path, PathBuf};

use crate::{recording::Recording, Result};

mod flamegraph;
mod folded;
mod gpu_flamegraph;
pub(crate) mod gpu_ops;
pub mod memory;
pub mod otlp;
pub mod perfetto;
pub mod pprof;
mod speedscope;
mod timeline;
mod timeline_gpu;
mod timeline_llm;
pub mod torch_memory;

pub use flamegraph::FlameGraph;
pub use folded::{folded_stacks, Folded};
pub use gpu_flamegraph::{gpu_folded, GpuFlameGraph};
pub use memory::MemoryGraphs;
pub use otlp::Otlp;
pub use perfetto::Perfetto;
pub use pprof::Pprof;
pub use speedscope::Speedscope;
pub use timeline::{trace_events, write_trace_events, Timeline};
pub use timeline_llm::{gen_ai_attributes, span_name};
pub use torch_memory::TorchMemory;

/// Writes one output format for a recording into an output directory.
///
/// Every format modelprobe writes is one (folded stacks, flame graphs, the timeline, pprof,
/// speedscope, OTLP, Perfetto). A format of your own is an implementation: it reads the
/// [`Recording`] (spans, samples with their interned stacks, events, logs, GPU operations, LLM
/// calls, counters; times in CLOCK_MONOTONIC nanoseconds, Unix time through
/// `meta.start_ns`/`meta.start_unix_ms`), writes its files under `dir`, and returns their
/// paths, or none when the recording has nothing for it:
///
/// ```
/// use std::path::{Path, PathBuf};
/// use modelprobe_outputs::{export::Exporter, Error, Result};
/// use modelprobe_recording::Recording;
///
/// /// One CSV row per probed call: function, pid, tid, start and duration.
/// struct SpansCsv;
///
/// impl Exporter for SpansCsv {
///     fn name(&self) -> &'static str {
///         "spans-csv"
///     }
///
///     fn export(&self, rec: &Recording, dir: &Path) -> Result<Vec<PathBuf>> {
///         if rec.spans.is_empty() {
///             return Ok(Vec::new());
///         }
///         let mut csv = String::from("function,pid,tid,start_ns,duration_ns\n");
///         for s in &rec.spans {
///             let function = &rec.probes[s.probe as usize].function;
///             let duration = s.end_ns.saturating_sub(s.start_ns);
///             csv += &format!("{function},{},{},{},{duration}\n", s.pid, s.tid, s.start_ns);
///         }
///         let path = dir.join("spans.csv");
///         std::fs::write(&path, csv)
///             .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
///         Ok(vec![path])
///     }
/// }
///
/// // A recording read back from an earlier `modelprobe run` would come from
/// // `Recording::read(Path::new("out"))`; an empty one writes nothing.
/// let rec = Recording::new(Default::default());
/// assert!(SpansCsv.export(&rec, &std::env::temp_dir())?.is_empty());
/// # Ok::<(), Error>(())
/// ```
pub trait Exporter {
    /// Short name, for messages.
    fn name(&self) -> &'static str;
    /// Writes the files; returns their paths (none when the recording has nothing for it).
    fn export(&self, recording: &Recording, dir: &Path) -> Result<Vec<PathBuf>>;
}

/// The exporters every recording gets.
pub fn default_exporters() -> Vec<Box<dyn Exporter>> {
    vec![
        Box::new(Folded),
        Box::new(FlameGraph),
        Box::new(GpuFlameGraph),
        Box::new(MemoryGraphs::default()),
        Box::new(Timeline),
    ]
}

/// Runs every default exporter; returns all files written.
pub fn export_all(recording: &Recording, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for exporter in default_exporters() {
        log::debug!("exporting {}", exporter.name());
        written.extend(exporter.export(recording, dir)?);
    }
    Ok(written)
}
