//! Stopping a process without a debugger attached: `--break` with a condition stops the
//! thread at the call, prints every thread's stack, and `modelprobe resume` lets the process
//! finish with its output unchanged; the timeout resumes it by itself; `--stop-on api_error`
//! stops the failing thread as the failed CUDA call returns to its caller.
use std::{process::Command, time::Duration};

use modelprobe_tests::*;

/// The pid in a "pid N STOPPED at ..." line.
fn stopped_pid(stderr: &str) -> u32 {
    stderr
        .lines()
        .filter(|l| l.contains(" STOPPED at "))
        .find_map(|l| l.split("pid ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no STOPPED line: {stderr}"))
}

fn state(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_default()
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn a_conditional_breakpoint_stops_at_the_call_and_resume_lets_it_finish() {
    if !require_bpf("a_conditional_breakpoint_stops_at_the_call_and_resume_lets_it_finish") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("stop-break");
    let reference = Command::new(workload_bin())
        .args(["--calls", "20"])
        .output()
        .unwrap();
    let mut agent = Agent::spawn(
        Command::new(modelprobe_bin())
            .args(["run", "-o"])
            .arg(out.join("rec"))
            .args(["--break", "mp-workload:mp_span_target if arg0 == 7"])
            .args(["--stop-timeout", "60s", "--"])
            .arg(workload_bin())
            .args(["--calls", "20"]),
    );
    agent.wait_for_stderr(
        "STOPPED at breakpoint: mp_span_target(0x7,",
        Duration::from_secs(30),
    );
    agent.wait_for_stderr("resumes by itself in 1m", Duration::from_secs(10));
    let err = agent.stderr_so_far();
    let pid = stopped_pid(&err);
    assert_eq!(state(pid), "T", "the target is stopped");
    // The stopped thread's innermost frame is the call that hit the breakpoint.
    let thread = err
        .split(&format!("Thread {pid} "))
        .nth(1)
        .unwrap_or_else(|| panic!("no stack of thread {pid}: {err}"));
    let first = thread.lines().nth(1).unwrap_or("").trim();
    assert!(first.starts_with("mp_span_target"), "{thread}");
    // Its caller too, though the span's return probe hides the return address on the stack.
    assert_eq!(
        thread.lines().nth(2).unwrap_or("").trim().split(' ').next(),
        Some("mp_span_outer"),
        "{thread}"
    );
    assert!(thread.contains("mp_workload::main"), "{thread}");
    // Still stopped a while later: nothing but resume (or the timeout) lets it go.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(pid), "T");
    let resumed = Command::new(modelprobe_bin())
        .args(["resume", &pid.to_string()])
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{resumed:?}");
    let run = agent.finish(Duration::from_secs(60));
    run.assert_success();
    assert_programs_released(&run.programs, "after the stop");
    assert!(run.stderr().contains(&format!("pid {pid} resumed")));
    assert_eq!(
        run.output.stdout.split(|&b| b == b'\n').nth(1),
        reference.stdout.split(|&b| b == b'\n').nth(1),
        "the output is unchanged"
    );
    let rec = read_recording(&out.join("rec"));
    let stopped: Vec<_> = rec["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "stopped")
        .collect();
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert!(stopped[0]["message"]
        .as_str()
        .unwrap()
        .contains("mp_span_target(0x7"));
    // The span of the stopped call lasts as long as the stop did.
    let longest = rec["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["end_ns"].as_u64().unwrap() - s["start_ns"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(longest > 400_000_000, "{longest} ns");
}

#[test]
fn the_timeout_resumes_a_stopped_process() {
    if !require_bpf("the_timeout_resumes_a_stopped_process") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("stop-timeout");
    let run = run_agent(
        Command::new(modelprobe_bin())
            .args(["run", "-o"])
            .arg(out.join("rec"))
            .args(["--break", "mp-workload:mp_span_target hit 3"])
            .args(["--stop-timeout", "1s", "--"])
            .arg(workload_bin())
            .args(["--calls", "10"]),
        Duration::from_secs(60),
    );
    run.assert_success();
    let err = run.stderr();
    assert!(
        err.contains("STOPPED at breakpoint: mp_span_target(0x2,"),
        "the third call: {err}"
    );
    assert!(err.contains("resumed after 1s stopped"), "{err}");
    assert!(String::from_utf8_lossy(&run.output.stdout).contains("calls 10 sum 100"));
}

#[test]
fn a_failed_cuda_call_stops_its_thread_where_it_returns() {
    if !require_bpf("a_failed_cuda_call_stops_its_thread_where_it_returns") {
        return;
    }
    let _bpf = bpf_lock();
    let fixtures = fixture_lib_dir();
    let out = scratch_dir("stop-api-error");
    let run = run_agent(
        Command::new(modelprobe_bin())
            .args(["run", "-o"])
            .arg(out.join("rec"))
            .args(["--stop-on", "api_error", "--stop-timeout", "1s", "--"])
            .arg(fixtures.join("mp-cuda-app"))
            .env("MP_CUDA_DIR", fixtures.join("cuda"))
            .env("MP_CUDA_SETTLE_MS", "2500"),
        Duration::from_secs(90),
    );
    run.assert_success();
    let err = run.stderr();
    assert!(
        err.contains("STOPPED at cudaMemcpy failed (returned 1)"),
        "{err}"
    );
    let pid = stopped_pid(&err);
    let thread = err.split(&format!("Thread {pid} ")).nth(1).unwrap_or("");
    let first = thread.lines().nth(1).unwrap_or("").trim();
    assert!(
        first.starts_with("main "),
        "stopped in the caller of the failed call: {thread}"
    );
    // One stop (--stop-max 1): the later failures are recorded, not stopped at.
    assert_eq!(err.matches("STOPPED").count(), 1);
}

#[test]
fn a_log_line_stops_the_process_from_user_space() {
    if !require_bpf("a_log_line_stops_the_process_from_user_space") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("stop-log");
    let script = "for i in $(seq 30); do echo tick $i; sleep 0.05; if [ $i = 10 ]; then echo 'ERROR boom'; fi; done";
    let mut agent = Agent::spawn(
        Command::new(modelprobe_bin())
            .args(["run", "-o"])
            .arg(out.join("rec"))
            .args(["--stop-on", "log:ERROR boom", "--stop-timeout", "60s"])
            .args(["--", "sh", "-c", script]),
    );
    agent.wait_for_stderr("STOPPED at log line: ERROR boom", Duration::from_secs(30));
    let pid = stopped_pid(&agent.stderr_so_far());
    // Stopped within ~100 ms of the line: a few ticks at most came after it.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(state(pid), "T");
    let ticks_after = |out: &str| {
        out.lines()
            .skip_while(|l| !l.contains("ERROR boom"))
            .filter(|l| l.starts_with("tick"))
            .count()
    };
    let resumed = Command::new(modelprobe_bin())
        .args(["resume", &pid.to_string()])
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{resumed:?}");
    let run = agent.finish(Duration::from_secs(60));
    run.assert_success();
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert_eq!(
        ticks_after(&stdout),
        20,
        "the script went on to its end: {stdout}"
    );
    let rec = read_recording(&out.join("rec"));
    assert!(rec["events"].to_string().contains("\"stopped\""));
}
