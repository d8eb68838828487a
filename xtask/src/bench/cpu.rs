//! Sampling's cost to the target (slowdown against perf and bpftrace at several
//! frequencies) and the agent's own CPU and memory.
use std::{path::Path, process::Command};

use anyhow::Result;
use serde_json::{json, Value};

use super::*;

/// Slowdown of a CPU-bound multi-threaded workload under sampling at 99 and 999 Hz: modelprobe,
/// `perf record -g`, bpftrace `profile` with user stacks, against no profiler.
pub(super) fn cpu_slowdown(
    root: &Path,
    runs: usize,
    rounds: u64,
    report: &mut Report,
) -> Result<()> {
    let agent = root.join("target/release/modelprobe");
    let workload = root.join("target/release/mp-workload");
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let rounds = rounds.to_string();
    let work: Vec<String> = ["--work", &rounds, "--threads", &threads]
        .map(String::from)
        .to_vec();
    let tmp = std::env::temp_dir().join("modelprobe-bench");
    std::fs::create_dir_all(&tmp)?;
    say(&format!(
        "CPU sampling: {runs} interleaved runs per variant, {threads} threads x {rounds} rounds"
    ));
    report.table(
        "cpu_sampling",
        "Target slowdown under CPU sampling (fixed work on every CPU)",
        &[
            "variant",
            "elapsed ms (median)",
            "slowdown (median of pair ratios)",
            "ratio range",
            "peak RSS of the run",
        ],
    );
    let mut agent_cost = Vec::new();
    for freq in ["99", "999"] {
        let mut variants: Vec<Variant<'_>> = vec![(
            "no profiler".into(),
            Box::new(|| {
                let mut c = Command::new(&workload);
                c.args(&work);
                c
            }),
        )];
        variants.push((
            format!("modelprobe run --freq {freq}"),
            Box::new(|| {
                let mut c = Command::new(&agent);
                c.args(["run", "-q", "--no-logs", "--freq", freq, "-o"])
                    .arg(tmp.join("mp"))
                    .arg("--")
                    .arg(&workload)
                    .args(&work);
                c
            }),
        ));
        // The same with user stacks by frame pointers only (no CFI tables): what the unwinder
        // costs on top.
        variants.push((
            format!("modelprobe run --freq {freq} --frame-pointers"),
            Box::new(|| {
                let mut c = Command::new(&agent);
                c.args([
                    "run",
                    "-q",
                    "--no-logs",
                    "--frame-pointers",
                    "--freq",
                    freq,
                    "-o",
                ])
                .arg(tmp.join("mp-fp"))
                .arg("--")
                .arg(&workload)
                .args(&work);
                c
            }),
        ));
        if have("perf") {
            // perf's answer to code without frame pointers: 8 KiB of stack copied per sample,
            // unwound in user space.
            variants.push((
                format!("perf record -e cpu-clock -F {freq} --call-graph dwarf"),
                Box::new(|| {
                    let mut c = Command::new("perf");
                    c.args(["record", "-q", "-e", "cpu-clock", "-F", freq])
                        .args(["--call-graph", "dwarf", "-o"])
                        .arg(tmp.join("perf-dwarf.data"))
                        .arg("--")
                        .arg(&workload)
                        .args(&work);
                    c
                }),
            ));
            variants.push((
                format!("perf record -e cpu-clock -F {freq} -g"),
                Box::new(|| {
                    let mut c = Command::new("perf");
                    c.args(["record", "-q", "-e", "cpu-clock", "-F", freq, "-g", "-o"])
                        .arg(tmp.join("perf.data"))
                        .arg("--")
                        .arg(&workload)
                        .args(&work);
                    c
                }),
            ));
        }
        if have("bpftrace") {
            let script = format!("profile:hz:{freq} /pid == cpid/ {{ @[ustack] = count(); }}");
            let cmdline = format!("{} {}", workload.display(), work.join(" "));
            variants.push((
                format!("bpftrace profile:hz:{freq} ustack"),
                Box::new(move || {
                    let mut c = Command::new("bpftrace");
                    c.args(["-q", "-e", &script, "-c", &cmdline]);
                    c
                }),
            ));
        }
        for Compared {
            name,
            median_ms: ms,
            ratio,
            lo,
            hi,
            rss_mib: rss,
        } in compare(&variants, runs)?
        {
            report.row(vec![
                json!(name),
                json!(round1(ms)),
                json!(format!("{:+.2}%", (ratio - 1.0) * 100.0)),
                json!(format!("{lo:.3}..{hi:.3}")),
                json!(format!("{rss:.1} MiB")),
            ]);
        }
        agent_cost.push((format!("{freq} Hz"), agent_usage(&tmp.join("mp"))?));
        agent_cost.push((
            format!("{freq} Hz, --frame-pointers"),
            agent_usage(&tmp.join("mp-fp"))?,
        ));
    }
    report.table(
        "agent_cost",
        "What the agent itself used (the last modelprobe run of each frequency, from its recording)",
        &[
            "frequency",
            "recorded s",
            "agent CPU while recording",
            "% of one CPU",
            "CPU incl. symbolization",
            "peak RSS",
        ],
    );
    for (freq, (secs, rec_cpu, total_cpu, rss_kib)) in agent_cost {
        report.row(vec![
            json!(freq),
            json!(round1(secs)),
            json!(format!("{rec_cpu:.3} s")),
            json!(format!("{:.2}%", 100.0 * rec_cpu / secs)),
            json!(format!("{total_cpu:.3} s")),
            json!(format!("{:.1} MiB", rss_kib / 1024.0)),
        ]);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// (recorded seconds, agent CPU s while recording, agent CPU s in all, peak RSS KiB) from a
/// recording's `meta`.
pub(super) fn agent_usage(dir: &Path) -> Result<(f64, f64, f64, f64)> {
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("recording.json"))?)?;
    let m = &rec["meta"];
    let a = &m["agent"];
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    Ok((
        (f(&m["end_ns"]) - f(&m["start_ns"])) / 1e9,
        f(&a["recording_cpu_ns"]) / 1e9,
        f(&a["total_cpu_ns"]) / 1e9,
        f(&a["peak_rss_kib"]),
    ))
}
