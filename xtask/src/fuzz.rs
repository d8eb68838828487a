//! Bounded fuzzing for `cargo xtask bench` (and `cargo xtask fuzz`): every cargo-fuzz target in
//! `fuzz/` for a fixed time, via `fuzz/run.sh`, with execs/s and the corpus size per target.
use std::{path::Path, process::Command};

use anyhow::{Context, Result};
use serde_json::json;

use crate::{cargo_home_bin, results::Report, say};

/// Seconds each target runs in the bench.
pub const BENCH_SECONDS: u64 = 30;

/// cargo-fuzz, installed when missing (it needs the nightly toolchain, which setup installs).
pub fn ensure_cargo_fuzz() -> Result<()> {
    if cargo_home_bin().join("cargo-fuzz").exists() {
        return Ok(());
    }
    say("installing cargo-fuzz (bounded fuzzing of every parser of outside input)");
    crate::cargo(&["install", "cargo-fuzz", "--locked"])
}

/// Runs every target for `seconds`; returns one line per target (`fuzz: <target> ok, ...`),
/// and whether all of them finished without a crash.
pub fn run(root: &Path, seconds: u64) -> Result<(Vec<String>, bool)> {
    crate::setup()?;
    ensure_cargo_fuzz()?;
    let out = Command::new("bash")
        .arg(root.join("fuzz/run.sh"))
        .arg(seconds.to_string())
        .current_dir(root)
        .output()
        .context("running fuzz/run.sh")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = stdout
        .lines()
        .filter(|l| l.starts_with("fuzz: "))
        .map(str::to_string)
        .collect();
    if lines.is_empty() {
        anyhow::bail!(
            "fuzz/run.sh ran no target: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !out.status.success() {
        eprint!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((lines, out.status.success()))
}

/// The bench's fuzzing table.
pub fn bench(root: &Path, report: &mut Report) -> Result<()> {
    say(&format!(
        "fuzzing: every target for {BENCH_SECONDS} s (cargo-fuzz, libFuzzer)"
    ));
    let (lines, ok) = run(root, BENCH_SECONDS)?;
    report.table(
        "fuzz",
        &format!("Bounded fuzzing, {BENCH_SECONDS} s per target"),
        &["target", "result"],
    );
    for l in lines {
        let rest = l.trim_start_matches("fuzz: ");
        let (target, result) = rest.split_once(' ').unwrap_or((rest, ""));
        report.row(vec![json!(target), json!(result)]);
    }
    if !ok {
        say("warning: a fuzz target crashed: minimize it into fuzz/regressions/<target>/ (fuzz/README.md)");
    }
    Ok(())
}
