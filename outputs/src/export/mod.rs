//! Outputs derived from a [`Recording`]: one [`Exporter`] per format, one file per exporter.
use std::path::{Path, PathBuf};

use crate::{recording::Recording, Result};

mod flamegraph;
mod folded;
mod gpu_flamegraph;
pub(crate) mod gpu_ops;
pub mod otlp;
pub mod perfetto;
pub mod pprof;
mod speedscope;
mod timeline;
mod timeline_gpu;
mod timeline_llm;

pub use flamegraph::FlameGraph;
pub use folded::{folded_stacks, Folded};
pub use gpu_flamegraph::{gpu_folded, GpuFlameGraph};
pub use otlp::Otlp;
pub use perfetto::Perfetto;
pub use pprof::Pprof;
pub use speedscope::Speedscope;
pub use timeline::{trace_events, write_trace_events, Timeline};
pub use timeline_llm::{gen_ai_attributes, span_name};

/// Writes one output format for a recording into an output directory.
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
