//! `modelprobe export --format pprof`, read back by `go tool pprof` as users read it: the
//! fixture workload's known hot spots (`mp_hot_a` three times `mp_hot_b`), the same totals as
//! the folded stacks, and the labels; and `--format speedscope`, held against the same.
use std::{path::Path, process::Command, time::Duration};

use modelprobe_tests::*;

/// `go tool pprof ARGS FILE`'s stdout.
fn pprof(args: &[&str], file: &Path) -> String {
    let out = run_with_timeout(
        Command::new("go")
            .args(["tool", "pprof"])
            .args(args)
            .arg(file)
            .env("HOME", std::env::temp_dir()),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cumulative value of the function whose name ends in `function`, from `pprof -top` rows
/// (`flat flat% sum% cum cum% name [(inline)]`): the hot functions' own work is inlined into
/// them, so their flat value is their callees'.
fn cum(top: &str, function: &str) -> f64 {
    top.lines()
        .find(|l| {
            l.split_whitespace()
                .nth(5)
                .is_some_and(|name| name.ends_with(function))
        })
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or_else(|| panic!("{function} not in:\n{top}"))
}

#[test]
fn pprof_export_opens_in_go_tool_pprof_with_the_known_hot_spots() {
    if !require_bpf("pprof_export_opens_in_go_tool_pprof_with_the_known_hot_spots") {
        return;
    }
    if !Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return missing("go (golang-go), for `go tool pprof`");
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("export-pprof");
    let rec_dir = out.join("rec");
    let r = Session::run(&rec_dir, &["--off-cpu", "--freq", "397"])
        .workload(&["--seconds", "3"])
        .expect_success();
    let pp = out.join("pprof");
    let status = Command::new(modelprobe_bin())
        .args(["export", "--format", "pprof", "-o"])
        .arg(&pp)
        .arg(&rec_dir)
        .status()
        .unwrap();
    assert!(status.success());
    let cpu = pp.join("cpu.pb.gz");
    assert!(pp.join("offcpu.pb.gz").exists(), "no off-CPU profile");

    // Sample counts: the same total as the folded stacks, and the 3:1 split.
    let top = pprof(
        &[
            "-top",
            "-sample_index=samples",
            "-nodefraction=0",
            "-nodecount=1000",
        ],
        &cpu,
    );
    let (a, b) = (cum(&top, "mp_hot_a"), cum(&top, "mp_hot_b"));
    assert!(a > 40.0 && b > 10.0, "too few samples: {a} {b}\n{top}");
    assert!(
        (2.2..=4.2).contains(&(a / b)),
        "mp_hot_a/mp_hot_b = {}",
        a / b
    );
    let folded: u64 = r.folded("stacks.folded").iter().map(|(_, n)| n).sum();
    let total = top
        .lines()
        .find_map(|l| l.split("Total samples = ").nth(1))
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no total in:\n{top}"));
    assert_eq!(total as u64, folded, "pprof total vs stacks.folded\n{top}");

    // Every sample says its process and thread.
    let tags = pprof(&["-tags"], &cpu);
    let pid = r.recording()["meta"]["target_pid"].as_u64().unwrap();
    assert!(
        tags.contains(&format!(": {pid}")),
        "no pid {pid} label:\n{tags}"
    );
    assert!(tags.contains("thread:"), "no thread label:\n{tags}");
    // The profile is named after the workload's executable, its first mapping.
    let head = pprof(&["-top", "-nodecount=1"], &cpu);
    assert!(head.contains("File: mp-workload"), "{head}");
}

#[test]
fn speedscope_export_holds_the_same_samples_per_thread() {
    if !require_bpf("speedscope_export_holds_the_same_samples_per_thread") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("export-speedscope");
    let rec_dir = out.join("rec");
    let r = Session::run(&rec_dir, &["--freq", "397"])
        .workload(&["--seconds", "2"])
        .expect_success();
    let status = Command::new(modelprobe_bin())
        .args(["export", "--format", "speedscope"])
        .arg(&rec_dir)
        .status()
        .unwrap();
    assert!(status.success());
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec_dir.join("profile.speedscope.json")).unwrap())
            .unwrap();
    // The shared frames are the recording's, in its order.
    let rec = r.recording();
    let frames = rec["frames"].as_array().unwrap();
    let period = 1_000_000_000 / 397;
    let mut total = 0;
    let mut hot_a = 0;
    for p in doc["profiles"].as_array().unwrap() {
        assert_eq!(p["type"], "sampled");
        let samples = p["samples"].as_array().unwrap();
        let weights = p["weights"].as_array().unwrap();
        assert_eq!(samples.len(), weights.len());
        for (s, w) in samples.iter().zip(weights) {
            let n = w.as_u64().unwrap() / period;
            total += n;
            // Root first: the leaf function is the last frame neither kernel nor inlined.
            let leaf = s
                .as_array()
                .unwrap()
                .iter()
                .rev()
                .map(|f| &frames[f.as_u64().unwrap() as usize])
                .find(|f| f["kind"] != "kernel" && f["inlined"] != true);
            if leaf.is_some_and(|f| f["name"] == "mp_hot_a") {
                hot_a += n;
            }
        }
    }
    let folded = r.folded("stacks.folded");
    assert_eq!(total, folded.iter().map(|(_, n)| n).sum::<u64>());
    assert_eq!(hot_a, self_weight(&folded, "mp_hot_a"));
}
