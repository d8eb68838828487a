//! Holding under load, as root, on the real kernel. A worker pool that switches tens of
//! thousands of times a second (`mp-nofp-app pool`) must cost no CPU sample and no blocked
//! interval, and its blocked and CPU time must agree with the kernel's own accounting of the
//! same threads; 2,000 children forked one after another must each be a paired start and exit.
use std::{collections::BTreeSet, time::Duration};

use modelprobe_tests::*;
use serde_json::Value;

/// A `key=value` figure of the fixture's `pool-accounting` line.
fn figure(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// The text of the first captured log line that starts with `prefix`.
fn log_line(rec: &Value, prefix: &str) -> String {
    rec["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(|l| l["message"].as_str())
        .find(|m| m.starts_with(prefix))
        .unwrap_or_else(|| panic!("no log line starting {prefix:?}"))
        .to_string()
}

#[test]
fn a_thread_pool_loses_nothing_and_matches_the_kernels_accounting() {
    if !require_bpf("a_thread_pool_loses_nothing_and_matches_the_kernels_accounting") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("load-pool");
    // 256 threads, each ~30 us of work then a 1 ms sleep, for 3 s on this machine's CPUs.
    let r = Session::run(&out, &["--off-cpu", "--freq", "199"])
        .command(fixture_lib_dir().join("mp-nofp-app"), &["pool", "3", "256"])
        .timeout(Duration::from_secs(90))
        .expect_success();
    let lost = r.report_rows("lost");
    for what in [
        "CPU samples (ring buffer full)",
        "blocked intervals not summed (sum table full)",
        "blocked intervals untracked (blocked-thread table full)",
        "process/thread records",
    ] {
        assert_eq!(row(&lost, what)[1], 0, "{what}: {lost:?}");
    }
    let folded = r.folded("stacks.folded");
    let samples: u64 = folded.iter().map(|(_, n)| n).sum();
    assert!(samples > 300, "too few CPU samples: {samples}");

    let rec = r.recording();
    let line = log_line(&rec, "pool-accounting");
    let kernel_off_s = figure(&line, "lifetime_s") - figure(&line, "run_s");
    let kernel_run_s = figure(&line, "run_s");
    // The workers are every thread but the main one.
    let pid = rec["meta"]["target_pid"].as_u64().expect("target pid");
    let workers = |v: &&Value| v["tid"].as_u64() != Some(pid);
    let ours_off_s = rec["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter(|s| s["kind"] == "off_cpu")
        .filter(workers)
        .map(|s| s["w"].as_u64().unwrap_or(0))
        .sum::<u64>() as f64
        / 1e9;
    let ours_run_s = rec["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .filter(workers)
        .map(|t| t["cpu_ns"].as_u64().expect("every worker's CPU time"))
        .sum::<u64>() as f64
        / 1e9;
    eprintln!(
        "pool: blocked {ours_off_s:.2} s vs the kernel's off-CPU {kernel_off_s:.2} s; \
         on CPU {ours_run_s:.3} s vs {kernel_run_s:.3} s"
    );
    assert!(
        (ours_off_s - kernel_off_s).abs() <= 0.10 * kernel_off_s,
        "blocked {ours_off_s:.2} s is not within 10% of the kernel's {kernel_off_s:.2} s"
    );
    assert!(
        (ours_run_s - kernel_run_s).abs() <= 0.10 * kernel_run_s,
        "CPU time {ours_run_s:.3} s is not within 10% of the kernel's {kernel_run_s:.3} s"
    );
    // The summed blocks keep whole stacks: nearly all the workers' blocked time is under the
    // worker function (its tables were built before the command ran).
    let blocked = r.folded("offcpu.folded");
    let total: u64 = blocked.iter().map(|(_, n)| n).sum();
    let in_worker: u64 = blocked
        .iter()
        .filter(|(s, _)| s.contains("nofp_pool_worker;usleep"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        in_worker as f64 >= 0.8 * total as f64,
        "only {in_worker} of {total} us blocked under nofp_pool_worker: {blocked:?}"
    );
}

#[test]
fn two_thousand_forks_are_each_a_paired_start_and_exit() {
    if !require_bpf("two_thousand_forks_are_each_a_paired_start_and_exit") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("load-forks");
    let r = Session::run(&out, &[])
        .command(
            fixture_lib_dir().join("mp-nofp-app"),
            &["forks", "0", "2000"],
        )
        .timeout(Duration::from_secs(90))
        .expect_success();
    let lost = r.report_rows("lost");
    assert_eq!(row(&lost, "process/thread records")[1], 0, "{lost:?}");
    let rec = r.recording();
    let pid = rec["meta"]["target_pid"].as_u64().expect("target pid");
    let events = rec["events"].as_array().expect("events");
    let of_kind = |kind: &str| -> BTreeSet<u64> {
        events
            .iter()
            .filter(|e| e["kind"] == kind)
            .filter_map(|e| match kind {
                "process_start" => e["value"].as_u64(),
                _ => e["pid"].as_u64(),
            })
            .collect()
    };
    let started = of_kind("process_start");
    let mut exited = of_kind("process_exit");
    assert!(exited.remove(&pid), "the parent's own exit is missing");
    assert_eq!(started.len(), 2000, "process starts recorded");
    assert_eq!(
        started, exited,
        "every child started must have exited, and no other"
    );
}
