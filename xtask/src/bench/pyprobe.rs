//! Python function spans (`--probe py:`): the added cost of a probed call, the cost on calls of
//! functions not probed (a probe set on another function), beside a native span probe's cost per
//! call and what a 3.9-3.11 profile hook (`sys.setprofile`, a C function) costs every call.
//! All timed by the workload's own loop; runs interleaved.
use std::{path::Path, process::Command};

use anyhow::Result;
use serde_json::json;

use super::*;

fn pyenv(minor: u32) -> Option<String> {
    std::fs::read_dir("/root/.pyenv/versions")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("3.{minor}."))
        })
        .map(|e| e.path().join("bin/python3"))
        .find(|p| p.exists())
        .map(|p| p.to_string_lossy().into_owned())
}

pub(super) fn pyprobe(root: &Path, runs: usize, report: &mut Report) -> Result<()> {
    let agent = root.join("target/release/modelprobe");
    let workload = root.join("target/release/mp-workload");
    let script = root.join("tests/fixtures/python/probes/bench_calls.py");
    let out = std::env::temp_dir().join("modelprobe-bench-pyprobe");
    let python = pyenv(12).unwrap_or_else(|| "python3".into());
    let python311 = pyenv(11);
    let calls: u64 = 500_000;
    let n = calls.to_string();
    say(&format!(
        "Python probes: {runs} interleaved runs per variant, {calls} calls, {python}"
    ));
    let plain = |py: &str, which: &str, extra: &[&str]| -> Result<f64> {
        elapsed(Command::new(py).arg(&script).args([which, &n]).args(extra))
    };
    let probed = |which: &str| -> Result<f64> {
        elapsed(
            Command::new(&agent)
                .args([
                    "run",
                    "-q",
                    "--no-logs",
                    "--no-packs",
                    "--probe",
                    "py:__main__:probed",
                    "-o",
                ])
                .arg(&out)
                .arg("--")
                .arg(&python)
                .arg(&script)
                .args([which, &n]),
        )
    };
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("probed(): no modelprobe", vec![]),
        ("probed(): --probe py:__main__:probed", vec![]),
        ("other(): no modelprobe", vec![]),
        (
            "other(): --probe py:__main__:probed (unprobed calls)",
            vec![],
        ),
        ("other(): 3.11, no profile hook", vec![]),
        (
            "other(): 3.11, sys.setprofile(C function) on every call",
            vec![],
        ),
        ("native: mp_tiny, no probe", vec![]),
        ("native: mp_tiny, --probe mp-workload:mp_tiny", vec![]),
    ];
    for _ in 0..runs {
        rows[0].1.push(plain(&python, "probed", &[])?);
        rows[1].1.push(probed("probed")?);
        rows[2].1.push(plain(&python, "other", &[])?);
        rows[3].1.push(probed("other")?);
        if let Some(py) = &python311 {
            rows[4].1.push(plain(py, "other", &[])?);
            rows[5].1.push(plain(py, "other", &["setprofile"])?);
        }
        rows[6]
            .1
            .push(elapsed(Command::new(&workload).args(["--tight", &n]))?);
        rows[7]
            .1
            .push(super::calls::tiny_probed(&agent, &out, &workload, &n)?);
    }
    report.table(
        "python_probe_cost",
        &format!(
            "Python function spans: cost per call ({calls} calls, median of {runs}); each \
             variant against the row above it"
        ),
        &["variant", "elapsed ms", "added per call", "added %"],
    );
    for pair in rows.chunks(2) {
        let [(base_name, base), (name, with)] = pair else {
            continue;
        };
        if base.is_empty() {
            continue;
        }
        let (b, w) = (median(base.clone()), median(with.clone()));
        report.row(vec![
            json!(base_name),
            json!(round1(b)),
            json!(""),
            json!(""),
        ]);
        report.row(vec![
            json!(name),
            json!(round1(w)),
            json!(format!("{:.2} us", (w - b) * 1e3 / calls as f64)),
            json!(format!("{:+.1}%", (w / b - 1.0) * 100.0)),
        ]);
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
