//! Holding under load, as root, on the real kernel: a worker pool that switches tens of
//! thousands of times a second (`mp-nofp-app pool`) must not cost a single CPU sample, whatever
//! the off-CPU events it floods its own ring buffer with.
use std::time::Duration;

use modelprobe_tests::*;

#[test]
fn an_off_cpu_flood_costs_no_cpu_sample() {
    if !require_bpf("an_off_cpu_flood_costs_no_cpu_sample") {
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
    assert_eq!(
        row(&lost, "CPU samples (ring buffer full)")[1],
        0,
        "CPU samples lost to the off-CPU flood: {lost:?}"
    );
    let folded = r.folded("stacks.folded");
    let samples: u64 = folded.iter().map(|(_, n)| n).sum();
    assert!(samples > 300, "too few CPU samples: {samples}");
    // The flood itself was recorded (as much of it as its ring held; the rest is counted).
    let blocked = r.folded("offcpu.folded");
    let blocked_us: u64 = blocked.iter().map(|(_, n)| n).sum();
    assert!(blocked_us > 0, "no blocked time recorded at all");
}
