//! Replays the fuzz inputs kept in the repository through the fuzz targets' own code: every file
//! of `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/` (crashes found by `cargo fuzz`,
//! kept once fixed). A panic on any of them fails the test, naming the file.
//!
//! The target bodies are `fuzz/bodies/<target>.rs`, included here with `#[path]` so the fuzzer
//! and this test run the same code (the fuzz crate needs nightly and is not a workspace member).
use std::{
    fs,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
};

#[path = "../../fuzz/bodies/config.rs"]
mod config;
#[path = "../../fuzz/bodies/llm_stream.rs"]
mod llm_stream;
#[path = "../../fuzz/bodies/log_file.rs"]
mod log_file;
#[path = "../../fuzz/bodies/log_line.rs"]
mod log_line;
#[path = "../../fuzz/bodies/probe_spec.rs"]
mod probe_spec;
#[path = "../../fuzz/bodies/recording.rs"]
mod recording;

/// A fuzz target's body: runs one input, panics on a bug.
type Body = fn(&[u8]);

/// Every fuzz target: its name (its directory under `fuzz/seeds` and `fuzz/regressions`) and body.
const TARGETS: &[(&str, Body)] = &[
    ("config", config::run),
    ("llm_stream", llm_stream::run),
    ("log_file", log_file::run),
    ("log_line", log_line::run),
    ("probe_spec", probe_spec::run),
    ("recording", recording::run),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The input files of one directory, sorted; none when it does not exist. Dot files (`.gitkeep`)
/// are not inputs.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("reading a fuzz input directory").path())
        .filter(|p| p.is_file())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

#[test]
fn every_kept_input_runs_without_panicking() {
    let mut failures = Vec::new();
    for &(target, run) in TARGETS {
        let seeds = inputs(&fuzz_dir().join("seeds").join(target));
        assert!(
            !seeds.is_empty(),
            "no seeds for fuzz target {target} in fuzz/seeds/{target}"
        );
        let regressions = inputs(&fuzz_dir().join("regressions").join(target));
        for path in seeds.iter().chain(&regressions) {
            let data = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            if panic::catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failures.push(format!("{target}: {}", path.display()));
            }
        }
    }
    let _ = fs::remove_dir_all(recording::scratch_dir());
    assert!(
        failures.is_empty(),
        "fuzz inputs that panic (messages above):\n  {}",
        failures.join("\n  ")
    );
}

/// A target added to the fuzz crate without a row in [`TARGETS`] would go untested.
#[test]
fn every_target_with_seeds_is_replayed() {
    let mut dirs: Vec<String> = fs::read_dir(fuzz_dir().join("seeds"))
        .expect("reading fuzz/seeds")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let names: Vec<&str> = TARGETS.iter().map(|t| t.0).collect();
    assert_eq!(dirs, names, "fuzz/seeds/<target> and TARGETS disagree");
}

/// The recording seeds are real recordings (so the fuzzer starts from inputs that get past the
/// parser), except those named `bad-*`, which must be refused.
#[test]
fn recording_seeds_parse_unless_named_bad() {
    for path in inputs(&fuzz_dir().join("seeds/recording")) {
        let bad = path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("bad-");
        let parsed = modelprobe::recording::Recording::from_slice(&fs::read(&path).unwrap());
        assert_eq!(
            parsed.is_err(),
            bad,
            "{}: {:?}",
            path.display(),
            parsed.err()
        );
    }
}
