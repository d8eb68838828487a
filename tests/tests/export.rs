//! `modelprobe export --format pprof`, read back by `go tool pprof` as users read it: the
//! fixture workload's known hot spots (`mp_hot_a` three times `mp_hot_b`), the same totals as
//! the folded stacks, and the labels.
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
