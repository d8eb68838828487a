//! Debugging without a debugger: what the flight recorder's history costs in memory per
//! second of window (the same run with two windows, against keeping everything), and how long
//! `modelprobe stacks` holds a process (eight Python threads), beside `py-spy dump`'s wall time
//! on the same process.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::*;

/// Seconds each flight-recorder run lasts.
const RUN_S: &str = "20";

fn peak_rss_mib(dir: &Path) -> Result<f64> {
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("recording.json"))?)?;
    Ok(rec["meta"]["agent"]["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0)
}

pub(super) fn debug(root: &Path, report: &mut Report) -> Result<()> {
    let modelprobe = root.join("target/release/modelprobe");
    let workload = root.join("target/release/mp-workload");
    let tmp = std::env::temp_dir().join("modelprobe-bench-debug");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    say(&format!(
        "flight recorder: {RUN_S} s of a busy workload at 999 Hz with a span per hot call, windows of 2 s and 12 s, and no window"
    ));
    let run = |name: &str, window: Option<&str>| -> Result<f64> {
        let out = tmp.join(name);
        let mut c = Command::new(&modelprobe);
        c.args([
            "run",
            "-q",
            "--freq",
            "999",
            "--probe",
            "mp-workload:mp_hot_*",
            "-o",
        ])
        .arg(&out);
        if let Some(w) = window {
            c.args(["--flight-recorder", w]);
        }
        c.arg("--").arg(&workload).args(["--seconds", RUN_S]);
        let st = c.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
        if !st.success() {
            bail!("{c:?} failed ({st})");
        }
        peak_rss_mib(&out)
    };
    let w2 = run("w2", Some("2s"))?;
    let w12 = run("w12", Some("12s"))?;
    let all = run("all", None)?;
    report.table(
        "flight_memory",
        "Flight recorder: agent peak RSS by window (20 s busy run, 999 Hz, spans on every hot call)",
        &["history kept", "peak RSS MiB"],
    );
    report.row(vec![json!("2 s window"), json!(round1(w2))]);
    report.row(vec![json!("12 s window"), json!(round1(w12))]);
    report.row(vec![
        json!("everything (no --flight-recorder)"),
        json!(round1(all)),
    ]);
    report.row(vec![
        json!("per second of window (12 s - 2 s) / 10"),
        json!(round1((w12 - w2) / 10.0 * 100.0) / 100.0),
    ]);

    // Stacks: eight Python threads.
    let python = std::fs::read_dir("/root/.pyenv/versions")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/python3"))
        .find(|p| p.to_string_lossy().contains("/3.12"));
    let Some(python) = python else {
        say("no pyenv CPython 3.12: the stacks rows are left out");
        return Ok(());
    };
    let script = root.join("tests/fixtures/python/eight_threads.py");
    let mut target = Command::new(&python)
        .arg(&script)
        .arg("60")
        .stdout(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(2));
    let pid = target.id().to_string();
    let mut pauses = Vec::new();
    let mut walls = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let out = Command::new(&modelprobe)
            .args(["stacks", "--json", "--pid", &pid])
            .output()?;
        walls.push(t.elapsed().as_secs_f64() * 1000.0);
        if !out.status.success() {
            let _ = target.kill();
            bail!(
                "modelprobe stacks failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        pauses.push(v["pause"].as_f64().unwrap_or(0.0) / 1000.0);
    }
    let spy = root.join(crate::NUMPY_VENV).join("bin/py-spy");
    let mut spy_walls = Vec::new();
    if spy.exists() {
        for _ in 0..10 {
            let t = Instant::now();
            let ok = Command::new(&spy)
                .args(["dump", "--pid", &pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if ok {
                spy_walls.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let _ = target.kill();
    let _ = target.wait();
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    report.table(
        "stacks_pause",
        "modelprobe stacks on 9 threads of CPython 3.12 (10 runs; target: pause <= 10 ms)",
        &[
            "tool",
            "process held ms (median)",
            "held ms (max)",
            "command wall ms (median)",
        ],
    );
    report.row(vec![
        json!("modelprobe stacks"),
        json!(round1(median(pauses.clone()) * 100.0) / 100.0),
        json!(round1(max(&pauses) * 100.0) / 100.0),
        json!(round1(median(walls))),
    ]);
    if !spy_walls.is_empty() {
        report.row(vec![
            json!("py-spy dump (pauses the process for its whole read by default)"),
            json!("-"),
            json!("-"),
            json!(round1(median(spy_walls))),
        ]);
    }
    Ok(())
}
