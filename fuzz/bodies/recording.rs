//! `recording`: `Recording::from_slice` on arbitrary bytes (a `recording.json` read from disk),
//! then everything that reads a recording back: the report, every default exporter and the
//! formats `export` writes (pprof, speedscope, OTLP, Perfetto).
//!
//! Shared by the fuzz target and `agent/tests/fuzz_regressions.rs` (included with `#[path]`).
use std::{path::PathBuf, sync::OnceLock};

use modelprobe::{
    export::{self, Exporter},
    recording::Recording,
    report,
};

/// Where the exporters write: one directory per process, reused by every input.
pub fn scratch_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("modelprobe-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the fuzz scratch directory");
        dir
    })
}

/// Parses the input; a recording that parses must report and export without panicking.
pub fn run(data: &[u8]) {
    let Ok(rec) = Recording::from_slice(data) else {
        return;
    };
    let _ = report::summary(&rec, 10);
    let _ = report::build(&rec, 10).to_json();
    if let Err(e) = export::export_all(&rec, scratch_dir()) {
        panic!("a recording that parses failed to export: {e}");
    }
    let otlp = export::Otlp::default();
    let on_demand: [&dyn Exporter; 4] = [
        &export::Pprof,
        &export::Speedscope,
        &otlp,
        &export::Perfetto,
    ];
    for exporter in on_demand {
        if let Err(e) = exporter.export(&rec, scratch_dir()) {
            panic!(
                "a recording that parses failed to export as {}: {e}",
                exporter.name()
            );
        }
    }
}
