//! Cost per probed call and per CUDA call (against bpftrace on the same function), and the
//! event rate the agent keeps without loss.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::*;

/// `mp-workload --tight N` (N calls of `mp_tiny`) under `modelprobe run --probe mp_tiny`: its
/// own elapsed ms.
pub(super) fn tiny_probed(agent: &Path, out: &Path, workload: &Path, n: &str) -> Result<f64> {
    elapsed(
        Command::new(agent)
            .args([
                "run",
                "-q",
                "--no-logs",
                "--probe",
                "mp-workload:mp_tiny",
                "-o",
            ])
            .arg(out)
            .arg("--")
            .arg(workload)
            .args(["--tight", n]),
    )
}

/// Cost per call of a probed function: `modelprobe --probe` (entry + return) against no probe,
/// a bpftrace uprobe counting calls, and a bpftrace uprobe + uretprobe pair (the same work).
pub(super) fn probe_cost(root: &Path, runs: usize, report: &mut Report) -> Result<()> {
    let agent = root.join("target/release/modelprobe");
    let workload = root.join("target/release/mp-workload");
    let calls: u64 = 100_000;
    let n = calls.to_string();
    let w = workload.display().to_string();
    let bpftrace = Command::new("bpftrace").arg("--version").output().is_ok();
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("no probe", vec![]),
        ("modelprobe --probe (entry+return)", vec![]),
    ];
    if bpftrace {
        rows.push(("bpftrace uprobe count()", vec![]));
        rows.push(("bpftrace uprobe+uretprobe", vec![]));
    } else {
        say("bpftrace not installed: `apt-get install bpftrace` to compare against it");
    }
    let out = std::env::temp_dir().join("modelprobe-probe-cost");
    for _ in 0..runs {
        rows[0]
            .1
            .push(elapsed(Command::new(&workload).args(["--tight", &n]))?);
        rows[1].1.push(tiny_probed(&agent, &out, &workload, &n)?);
        if bpftrace {
            rows[2].1.push(elapsed(Command::new("bpftrace").args([
                "-q",
                "-e",
                &format!("uprobe:{w}:mp_tiny {{ @c = count(); }}"),
                "-c",
                &format!("{w} --tight {n}"),
            ]))?);
            rows[3].1.push(elapsed(Command::new("bpftrace").args([
                "-q",
                "-e",
                &format!(
                    "uprobe:{w}:mp_tiny {{ @s[tid] = nsecs; }} uretprobe:{w}:mp_tiny {{ @d = hist(nsecs - @s[tid]); }}"
                ),
                "-c",
                &format!("{w} --tight {n}"),
            ]))?);
        }
    }
    cost_table(
        report,
        "probe_cost",
        &format!("Cost per call of a probed function ({calls} calls of a tiny function, median of {runs})"),
        rows,
        calls,
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// A per-call cost table: each variant's median elapsed ms over `calls` calls, and what it adds
/// per call over the first variant (the baseline).
pub(super) fn cost_table(
    report: &mut Report,
    id: &str,
    title: &str,
    rows: Vec<(&str, Vec<f64>)>,
    calls: u64,
) {
    let base = median(rows[0].1.clone());
    report.table(id, title, &["variant", "elapsed ms", "added cost per call"]);
    for (name, v) in rows {
        let m = median(v);
        report.row(vec![
            json!(name),
            json!(round1(m)),
            json!(format!("{:.2} us", (m - base) * 1e3 / calls as f64)),
        ]);
    }
}

/// The highest stdout/stderr line rate the agent records with zero loss (1000-byte lines,
/// 2 s at each rate), and the loss it reports above that.
pub(super) fn event_rate(root: &Path, report: &mut Report) -> Result<()> {
    let agent = root.join("target/release/modelprobe");
    let workload = root.join("target/release/mp-workload");
    let out = std::env::temp_dir().join("modelprobe-event-rate");
    report.table(
        "event_rate",
        "Event ingestion: stdout lines of 1000 bytes, 2 s per rate",
        &[
            "lines/s offered",
            "lines/s achieved",
            "recorded",
            "lost",
            "lost %",
        ],
    );
    for rate in [10_000u64, 50_000, 100_000, 200_000, 400_000, 1_000_000] {
        let lines = rate * 2;
        let flood = format!(
            "exec {} --flood {lines} --rate {rate} 2>/dev/null",
            workload.display()
        );
        let run = Command::new(&agent)
            .args(["run", "-q", "-o"])
            .arg(&out)
            .args(["--", "sh", "-c", &flood])
            .stderr(Stdio::null())
            .output()?;
        if !run.status.success() {
            bail!("flood at {rate}/s failed: {}", run.status);
        }
        let elapsed_ms: f64 = String::from_utf8_lossy(&run.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("elapsed_ms "))
            .context("no elapsed_ms from the flood")?
            .trim()
            .parse()?;
        let rec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("recording.json"))?)?;
        let lost = rec["meta"]["lost"]["log_writes"].as_u64().unwrap_or(0);
        let recorded = rec["logs"].as_array().map_or(0, |l| {
            l.iter().filter(|x| x["stream"] == "stderr").count() as u64
        });
        report.row(vec![
            json!(rate),
            json!((lines as f64 / (elapsed_ms / 1e3)).round()),
            json!(recorded),
            json!(lost),
            json!(format!("{:.2}%", 100.0 * lost as f64 / lines as f64)),
        ]);
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// Cost per CUDA API call with the CUDA pack attached: 100,000 `cudaLaunchKernel` calls into
/// the stand-in runtime (the same symbols as libcudart), against no profiler and a bpftrace
/// uprobe + uretprobe pair on the same function; without GPU timings (no launch stacks), and
/// with them through the stand-in CUPTI (launch stack, the library's API callback and its
/// activity records: every launch must come back as a kernel).
pub(super) fn cuda_cost(root: &Path, runs: usize, report: &mut Report) -> Result<()> {
    let agent = root.join("target/release/modelprobe");
    let fixtures = root.join("target/release/fixtures/cuda");
    let app = root.join("target/release/fixtures/mp-cuda-app");
    let lib = fixtures.join("libcudart.so.12");
    let calls: u64 = 100_000;
    let n = calls.to_string();
    let out = std::env::temp_dir().join("modelprobe-cuda-cost");
    let with_lib = |c: &mut Command| {
        c.env("LD_LIBRARY_PATH", &fixtures)
            .env("MP_CUDA_NO_PAUSE", "1");
    };
    let cupti = root.join("target/release/examples/libcupti_standin.so");
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("no profiler", vec![]),
        ("modelprobe run --no-gpu-timings (CUDA pack)", vec![]),
        (
            "modelprobe run --frame-pointers (CUDA pack + launch stacks by frame pointer, no CUPTI)",
            vec![],
        ),
        (
            "modelprobe run (CUDA pack + launch stacks, no CUPTI)",
            vec![],
        ),
        (
            "modelprobe run (CUDA pack + GPU timings, stand-in CUPTI)",
            vec![],
        ),
    ];
    let bpftrace = have("bpftrace");
    if bpftrace {
        rows.push(("bpftrace uprobe+uretprobe cudaLaunchKernel", vec![]));
    }
    say(&format!(
        "CUDA pack: {calls} cudaLaunchKernel calls, {runs} runs per variant"
    ));
    for _ in 0..runs {
        let mut c = Command::new(&app);
        c.args(["--launches", &n]);
        with_lib(&mut c);
        rows[0].1.push(elapsed(&mut c)?);
        let mut c = Command::new(&agent);
        c.args(["run", "-q", "--no-logs", "--no-gpu-timings", "-o"])
            .arg(&out)
            .arg("--")
            .arg(&app)
            .args(["--launches", &n]);
        with_lib(&mut c);
        rows[1].1.push(elapsed(&mut c)?);
        // Launch stacks walked by frame pointers (the kernel's walk), then with the CFI tables.
        for (row, extra) in [(2, &["--frame-pointers"][..]), (3, &[][..])] {
            let mut c = Command::new(&agent);
            c.args(["run", "-q", "--no-logs"])
                .args(extra)
                .arg("-o")
                .arg(&out)
                .arg("--")
                .arg(&app)
                .args(["--launches", &n])
                .env_remove("MODELPROBE_CUPTI");
            with_lib(&mut c);
            rows[row].1.push(elapsed(&mut c)?);
        }
        let mut c = Command::new(&agent);
        c.args(["run", "-q", "--no-logs", "-o"])
            .arg(&out)
            .arg("--")
            .arg(&app)
            .args(["--launches", &n])
            .env("MODELPROBE_CUPTI", &cupti)
            // The GPU library appears at cuInit: let the agent connect before the calls.
            .env("MP_CUDA_SETTLE_MS", "1500");
        with_lib(&mut c);
        rows[4].1.push(elapsed(&mut c)?);
        let kernels = {
            let rec: Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("recording.json"))?)?;
            rec["gpu"]["ops"].as_array().map_or(0, |o| {
                o.iter().filter(|o| o["kind"] == "kernel").count() as u64
            })
        };
        if kernels != calls {
            bail!("GPU timings returned {kernels} kernels for {calls} launches");
        }
        let spans = {
            let rec: Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("recording.json"))?)?;
            rec["spans"].as_array().map_or(0, |s| s.len() as u64)
        };
        if spans < calls {
            bail!("the CUDA pack recorded {spans} spans for {calls} launches");
        }
        if bpftrace {
            let l = lib.display();
            let mut c = Command::new("bpftrace");
            c.args([
                "-q",
                "-e",
                &format!(
                    "uprobe:{l}:cudaLaunchKernel {{ @s[tid] = nsecs; }} uretprobe:{l}:cudaLaunchKernel {{ @d = hist(nsecs - @s[tid]); }}"
                ),
                "-c",
                &format!("{} --launches {n}", app.display()),
            ]);
            with_lib(&mut c);
            rows[5].1.push(elapsed(&mut c)?);
        }
    }
    cost_table(
        report,
        "cuda_cost",
        &format!(
            "Cost per CUDA API call ({calls} cudaLaunchKernel calls into the stand-in runtime, median of {runs})"
        ),
        rows,
        calls,
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
