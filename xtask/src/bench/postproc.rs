//! Post-processing throughput: folded stacks and SVG against inferno's CLI on the same input.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::*;

/// Post-processing throughput (the `postproc_bench` example) and inferno's own CLI rendering
/// the same folded file.
pub(super) fn postproc(root: &Path, report: &mut Report) -> Result<()> {
    crate::cargo(&[
        "build",
        "--release",
        "-p",
        "modelprobe",
        "--example",
        "postproc_bench",
    ])?;
    let out = std::env::temp_dir().join("modelprobe-postproc");
    say("post-processing: symbolization, 1M-sample flame graph, 1M-span timeline and view");
    let run = Command::new(root.join("target/release/examples/postproc_bench"))
        .arg(&out)
        .stderr(Stdio::inherit())
        .output()?;
    if !run.status.success() {
        bail!("postproc_bench failed: {}", run.status);
    }
    let results: Vec<Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let get = |what: &str, pass: Option<&str>| {
        results
            .iter()
            .find(|r| r["what"] == what && pass.is_none_or(|p| r["pass"] == p))
            .cloned()
            .unwrap_or(Value::Null)
    };
    report.table(
        "postproc",
        "Post-processing throughput",
        &["what", "input", "time", "rate"],
    );
    for pass in ["cold", "warm"] {
        let r = get("symbolize", Some(pass));
        report.row(vec![
            json!(format!(
                "symbolization, {pass} (new symbolizer, as each recording)"
            )),
            json!(format!(
                "{} addresses in this binary (DWARF) and its libraries",
                r["frames"]
            )),
            json!(format!("{:.2} s", r["seconds"].as_f64().unwrap_or(0.0))),
            json!(format!(
                "{:.0} frames/s",
                r["frames_per_s"].as_f64().unwrap_or(0.0)
            )),
        ]);
    }
    let fg = get("flamegraph", None);
    let samples = fg["samples"].as_u64().unwrap_or(0);
    report.row(vec![
        json!("flame graph: modelprobe (fold + inferno library render)"),
        json!(format!(
            "{samples} samples, {} distinct stacks",
            fg["distinct_stacks"]
        )),
        json!(format!("{:.2} s", fg["seconds"].as_f64().unwrap_or(0.0))),
        json!(format!(
            "{:.0} samples/s",
            samples as f64 / fg["seconds"].as_f64().unwrap_or(1.0)
        )),
    ]);
    match ensure_inferno() {
        Some(inferno) => {
            let svg = std::fs::File::create(out.join("inferno.svg"))?;
            let t = std::time::Instant::now();
            let ok = Command::new(&inferno)
                .arg(out.join("stacks.folded"))
                .stdout(svg)
                .status()?
                .success();
            let s = t.elapsed().as_secs_f64();
            if !ok {
                bail!("inferno-flamegraph failed");
            }
            report.row(vec![
                json!("flame graph: inferno-flamegraph CLI on the same folded file"),
                json!(format!(
                    "{samples} samples, {} distinct stacks",
                    fg["distinct_stacks"]
                )),
                json!(format!("{s:.2} s")),
                json!(format!("{:.0} samples/s", samples as f64 / s)),
            ]);
        }
        None => say("warning: inferno-flamegraph could not be installed; its row is left out"),
    }
    for (what, label) in [
        (
            "timeline",
            "timeline trace.json (spans + CPU samples with stacks)",
        ),
        ("view", "view.html (self-contained viewer)"),
    ] {
        let r = get(what, None);
        let spans = r["spans"].as_u64().unwrap_or(0);
        let s = r["seconds"].as_f64().unwrap_or(0.0);
        report.row(vec![
            json!(label),
            json!(format!(
                "{spans} spans + {} samples -> {:.0} MiB",
                r["samples"],
                r["bytes"].as_f64().unwrap_or(0.0) / 1048576.0
            )),
            json!(format!("{s:.2} s")),
            json!(format!(
                "{:.0} spans+samples/s",
                (spans + r["samples"].as_u64().unwrap_or(0)) as f64 / s
            )),
        ]);
    }
    // The export formats, against trace.json's size and time on the same recording.
    let json = get("timeline", None);
    let json_bytes = json["bytes"].as_f64().unwrap_or(0.0);
    let json_s = json["seconds"].as_f64().unwrap_or(0.0);
    for r in results.iter().filter(|r| r["what"] == "export") {
        let s = r["seconds"].as_f64().unwrap_or(0.0);
        let bytes = r["bytes"].as_f64().unwrap_or(0.0);
        report.row(vec![
            json!(format!(
                "export --format {}",
                r["format"].as_str().unwrap_or("?")
            )),
            json!(format!(
                "{} spans + {} samples -> {:.0} MiB in {} files ({:.2}x trace.json's size)",
                r["spans"],
                r["samples"],
                bytes / 1048576.0,
                r["files"],
                bytes / json_bytes.max(1.0)
            )),
            json!(format!(
                "{s:.2} s ({:.2}x trace.json's time)",
                s / json_s.max(1e-9)
            )),
            json!(format!(
                "{:.0} spans+samples/s",
                (r["spans"].as_u64().unwrap_or(0) + r["samples"].as_u64().unwrap_or(0)) as f64
                    / s.max(1e-9)
            )),
        ]);
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// inferno's own `inferno-flamegraph` (same version as the library we use), installed with
/// cargo when missing.
pub(super) fn ensure_inferno() -> Option<std::path::PathBuf> {
    let bin = crate::cargo_home_bin().join("inferno-flamegraph");
    if bin.exists() {
        return Some(bin);
    }
    say("installing inferno 0.12 (its CLI is the flame graph baseline)");
    crate::cargo(&["install", "inferno", "--version", "^0.12", "--locked"]).ok()?;
    bin.exists().then_some(bin)
}
