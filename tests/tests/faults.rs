//! Fault tests, as root, on the real kernel: the agent killed with SIGKILL, two agents on one
//! process, a target already under ptrace, 100 attach/detach cycles, and output files under
//! sudo. The target must never notice, and nothing of the agent's may stay in the kernel.
use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    process::Command,
    time::{Duration, Instant},
};

use modelprobe_tests::*;

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS of the target")
}

/// Open perf-event file descriptors of `pid` (`anon_inode:[perf_event]`): the agent's sampling
/// and probe events live in the agent, and must never leak into the target. (The agent's own
/// are closed with it; other processes' are other tests' business.)
fn open_perf_events(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("perf_event"))
        })
        .count()
}

#[test]
fn sigkill_of_the_agent_leaves_no_probe_and_the_target_runs_on() {
    if !require_bpf("sigkill_of_the_agent_leaves_no_probe_and_the_target_runs_on") {
        return;
    }
    let _bpf = bpf_lock();
    let workload = start_workload(&["--seconds", "30"]);
    let pid = workload.0.id();
    let out = scratch_dir("sigkill");
    let mut agent = Agent::spawn(
        Command::new(modelprobe_bin())
            .args([
                "attach",
                "--off-cpu",
                "--probe",
                "mp-workload:mp_hot_b",
                "--pid",
                &pid.to_string(),
                "-o",
            ])
            .arg(&out),
    );
    agent.wait_for_programs(6, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    agent.signal(libc::SIGKILL);
    let run = agent.finish(Duration::from_secs(20));
    assert_programs_released(&run.programs, "after SIGKILL");
    // The target keeps running, and its probed function still runs normally.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        target_alive(pid),
        "the target must survive the agent's death"
    );
}

fn target_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn two_agents_on_one_process_both_record() {
    if !require_bpf("two_agents_on_one_process_both_record") {
        return;
    }
    let _bpf = bpf_lock();
    let workload = start_workload(&["--seconds", "30"]);
    let pid = workload.0.id().to_string();
    let (a, b) = (scratch_dir("two-a"), scratch_dir("two-b"));
    let spawn = |out: &std::path::Path| {
        Agent::spawn(
            Command::new(modelprobe_bin())
                .args([
                    "attach",
                    "--duration",
                    "2s",
                    "--probe",
                    "mp-workload:mp_hot_b",
                    "--pid",
                    &pid,
                    "-o",
                ])
                .arg(out),
        )
    };
    let (first, second) = (spawn(&a), spawn(&b));
    let mut held = std::collections::BTreeSet::new();
    for (agent, out) in [(first, &a), (second, &b)] {
        let run = agent.finish(Duration::from_secs(60));
        run.assert_success();
        held.extend(run.programs);
        assert!(self_weight(&read_folded(&out.join("stacks.folded")), "mp_hot_a") > 20);
        let rec = read_recording(out);
        assert!(
            rec["spans"].as_array().is_some_and(|s| s.len() > 10),
            "each agent sees the calls"
        );
    }
    assert_programs_released(&held, "after two agents");
}

#[test]
fn a_target_under_ptrace_is_profiled_normally() {
    if !require_bpf("a_target_under_ptrace_is_profiled_normally") {
        return;
    }
    let _bpf = bpf_lock();
    let workload = start_workload(&["--seconds", "30"]);
    let pid = workload.0.id();
    // This test process becomes its tracer (PTRACE_SEIZE does not stop it).
    // SAFETY: ptrace on our own child with null addr/data, as PTRACE_SEIZE takes.
    let rc = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid as libc::pid_t, 0, 0) };
    assert_eq!(rc, 0, "PTRACE_SEIZE: {}", std::io::Error::last_os_error());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("TracerPid:") && !l.ends_with("\t0")),
        "{status}"
    );
    let r = Session::attach(&scratch_dir("ptraced"), pid, &["--duration", "1s"]).expect_success();
    assert!(self_weight(&r.folded("stacks.folded"), "mp_hot_a") > 10);
    assert!(target_alive(pid));
}

#[test]
fn a_hundred_attach_detach_cycles_leak_nothing() {
    if !require_bpf("a_hundred_attach_detach_cycles_leak_nothing") {
        return;
    }
    let _bpf = bpf_lock();
    // Long enough for a slow, loaded machine; the guard kills it at the end.
    let workload = start_workload(&["--seconds", "1800"]);
    let pid = workload.0.id();
    let target_fds = fd_count(pid);
    let target_rss = rss_kib(pid);
    let out = scratch_dir("cycles");
    let start = Instant::now();
    let mut held = std::collections::BTreeSet::new();
    for i in 0..100 {
        // The programs each cycle is seen holding (watched every 2 ms) must all be released.
        let r = Session::attach(&out, pid, &["--duration", "20ms", "--no-logs", "-q"]).finish();
        assert!(r.status().success(), "cycle {i}: {}", r.stderr());
        assert!(
            out.join("recording.json").exists(),
            "cycle {i} wrote its recording"
        );
        held.extend(r.programs());
    }
    assert_programs_released(&held, "after 100 cycles");
    assert_eq!(
        fd_count(pid),
        target_fds,
        "the target's file descriptors are untouched"
    );
    assert!(target_alive(pid));
    let rss_growth = rss_kib(pid) as i64 - target_rss as i64;
    assert!(
        rss_growth < 1024,
        "the target's resident memory grew {rss_growth} KiB over 100 cycles"
    );
    assert_eq!(
        open_perf_events(pid),
        0,
        "the target holds no perf event after 100 cycles"
    );
    eprintln!(
        "100 attach/detach cycles in {:?}; target RSS change {rss_growth} KiB",
        start.elapsed()
    );
}

#[test]
fn outputs_belong_to_the_sudo_user_and_are_not_world_readable() {
    if !require_bpf("outputs_belong_to_the_sudo_user_and_are_not_world_readable") {
        return;
    }
    let _bpf = bpf_lock();
    let parent = scratch_dir("sudo-owner");
    let out = parent.join("profile");
    let sudo = [("SUDO_UID", "65534"), ("SUDO_GID", "65534")];
    Session::run(&out, &[])
        .workload(&["--calls", "2"])
        .envs(sudo)
        .expect_success();
    let dir = std::fs::metadata(&out).unwrap();
    assert_eq!(
        (dir.uid(), dir.gid()),
        (65534, 65534),
        "the directory it created"
    );
    assert_eq!(
        dir.permissions().mode() & 0o007,
        0,
        "directory not world-accessible"
    );
    let mut files = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let md = entry.unwrap().metadata().unwrap();
        assert_eq!((md.uid(), md.gid()), (65534, 65534));
        assert_eq!(
            md.permissions().mode() & 0o007,
            0,
            "files not world-readable"
        );
        files += 1;
    }
    assert!(
        files >= 4,
        "recording, folded stacks, flame graph, timeline"
    );
    // A directory that already existed is not given away.
    let parent_md = std::fs::metadata(&parent).unwrap();
    assert_eq!(parent_md.uid(), 0);
    Session::run(&parent, &[])
        .workload(&["--calls", "1"])
        .envs(sudo)
        .expect_success();
    assert_eq!(
        std::fs::metadata(&parent).unwrap().uid(),
        0,
        "an existing -o directory keeps its owner"
    );
}
