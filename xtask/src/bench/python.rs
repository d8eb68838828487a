//! Python stacks: what reading Python frames costs the target and the kernel, beside py-spy
//! (the tool users compare against, blocking and `--nonblocking`) on the same CPU-bound
//! script, against no profiler; and how many samples carry Python frames.
use std::{path::Path, process::Command};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::*;

/// The interpreter measured: pyenv's 3.12 (the PyTorch 2.x servers' Python), else `python3`.
fn interpreter() -> String {
    std::fs::read_dir("/root/.pyenv/versions")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/python3"))
        .find(|p| p.to_string_lossy().contains("/3.12"))
        .map_or_else(|| "python3".into(), |p| p.to_string_lossy().into_owned())
}

pub(super) fn python(root: &Path, runs: usize, report: &mut Report) -> Result<()> {
    crate::ensure_numpy_venv(root)?;
    let agent = root.join("target/release/modelprobe");
    let py_spy = root.join(crate::NUMPY_VENV).join("bin/py-spy");
    let python = interpreter();
    let tmp = std::env::temp_dir().join("modelprobe-bench-python");
    std::fs::create_dir_all(&tmp)?;
    // A fixed amount of Python work (`serve` calling `tokenize` and `attention`), timed by the
    // script itself so interpreter start-up is not counted; the tests' workload.
    let script = root.join("tests/fixtures/python/serve_ratio.py");
    // About 5 s of work on this machine (3 ms a round).
    let rounds = "1600";
    say(&format!(
        "Python stacks: {runs} interleaved runs per variant, {python} serve.py {rounds}"
    ));
    let plain = || {
        let mut c = Command::new(&python);
        c.arg(&script).args(["--rounds", rounds]);
        c
    };
    let modelprobe = |extra: &'static [&'static str], out: &'static str| {
        let (agent, tmp, python, script) = (&agent, &tmp, &python, &script);
        move || {
            let mut c = Command::new(agent);
            c.args(["run", "-q", "--no-logs", "--freq", "99"])
                .args(extra)
                .arg("-o")
                .arg(tmp.join(out))
                .arg("--")
                .arg(python)
                .arg(script)
                .args(["--rounds", rounds]);
            c
        }
    };
    let spy = |extra: &'static [&'static str]| {
        let (py_spy, tmp, python, script) = (&py_spy, &tmp, &python, &script);
        move || {
            let mut c = Command::new(py_spy);
            c.args(["record", "-r", "99", "-f", "raw"])
                .args(extra)
                .arg("-o")
                .arg(tmp.join("py-spy.txt"))
                .arg("--")
                .arg(python)
                .arg(script)
                .args(["--rounds", rounds]);
            c
        }
    };
    let variants: Vec<Variant<'_>> = vec![
        ("no profiler".into(), Box::new(plain)),
        (
            "modelprobe run --freq 99".into(),
            Box::new(modelprobe(&[], "mp")),
        ),
        (
            "modelprobe run --freq 99 --no-python (native frames only)".into(),
            Box::new(modelprobe(&["--no-python"], "mp-native")),
        ),
        ("py-spy record -r 99".into(), Box::new(spy(&[]))),
        (
            "py-spy record -r 99 --nonblocking".into(),
            Box::new(spy(&["--nonblocking"])),
        ),
    ];
    report.table(
        "python_slowdown",
        "Target slowdown of a CPU-bound Python script at 99 Hz (CPython 3.12)",
        &[
            "variant",
            "elapsed ms (median)",
            "slowdown (median of pair ratios)",
            "ratio range",
        ],
    );
    for c in compare(&variants, runs)? {
        report.row(vec![
            json!(c.name),
            json!(round1(c.median_ms)),
            json!(format!("{:+.2}%", (c.ratio - 1.0) * 100.0)),
            json!(format!("{:.3}..{:.3}", c.lo, c.hi)),
        ]);
    }

    // The kernel's own count of each sample's cost, with and without Python frames.
    report.table(
        "python_sample_cost",
        "Cost of one CPU sample in the kernel (mp_cpu_sample, kernel.bpf_stats_enabled), and samples with Python frames",
        &[
            "variant",
            "samples",
            "ns per sample (mean)",
            "samples with Python frames",
        ],
    );
    let stats = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(stats).unwrap_or_default();
    std::fs::write(stats, "1").context("turning on kernel.bpf_stats_enabled")?;
    let measured = (|| -> Result<Vec<(String, u64, f64, f64)>> {
        let mut rows = Vec::new();
        for (name, extra, out) in [
            ("with Python frames", &[][..], "mp-cost"),
            ("--no-python", &["--no-python"][..], "mp-cost-native"),
        ] {
            elapsed(&mut modelprobe(extra, out)())?;
            let (runs, ns, share) = sample_cost(&tmp.join(out))?;
            rows.push((name.to_string(), runs, ns, share));
        }
        Ok(rows)
    })();
    std::fs::write(stats, before.trim()).ok();
    for (name, runs, ns, share) in measured? {
        report.row(vec![
            json!(name),
            json!(runs),
            json!(round1(ns)),
            json!(format!("{:.1}%", 100.0 * share)),
        ]);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// (runs of mp_cpu_sample, mean ns per run, share of CPU samples with a Python frame) from a
/// recording.
fn sample_cost(dir: &Path) -> Result<(u64, f64, f64)> {
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("recording.json"))?)?;
    let prog = rec["meta"]["bpf_programs"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "mp_cpu_sample"))
        .context("no mp_cpu_sample statistics in the recording")?;
    let runs = prog["runs"].as_u64().unwrap_or(0);
    let ns = prog["run_ns"].as_f64().unwrap_or(0.0) / runs.max(1) as f64;
    let frames = rec["frames"].as_array().context("frames")?;
    let python_stack: Vec<bool> = rec["stacks"]
        .as_array()
        .context("stacks")?
        .iter()
        .map(|s| {
            s.as_array().into_iter().flatten().any(|f| {
                frames[f.as_u64().unwrap_or(0) as usize]["kind"].as_str() == Some("python")
            })
        })
        .collect();
    let (mut all, mut with) = (0u64, 0u64);
    for s in rec["samples"].as_array().context("samples")? {
        if s["kind"] == "cpu" {
            all += 1;
            with += u64::from(python_stack[s["stack"].as_u64().unwrap_or(0) as usize]);
        }
    }
    Ok((runs, ns, with as f64 / all.max(1) as f64))
}
