//! The flight recorder: only the last window is kept, a trigger writes it out within a second
//! with the seconds before it, SIGUSR2 writes it too, and recording goes on after each dump.
use std::{process::Command, time::Duration};

use modelprobe_tests::*;

/// The `tick N` numbers of a recording's log lines.
fn ticks(rec: &serde_json::Value) -> Vec<u32> {
    rec["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| {
            l["message"]
                .as_str()?
                .strip_prefix("tick ")?
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn a_log_trigger_and_sigusr2_write_the_window_before_them() {
    if !require_bpf("a_log_trigger_and_sigusr2_write_the_window_before_them") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("flight");
    // A tick every 100 ms; "ERROR boom" after tick 30 (about 3 s in); 30 more ticks.
    let script = "for i in $(seq 60); do echo tick $i; sleep 0.1; if [ $i = 30 ]; then echo 'ERROR boom'; fi; done";
    let mut agent = Agent::spawn(
        Command::new(modelprobe_bin())
            .args(["run", "-o"])
            .arg(out.join("rec"))
            .args(["--flight-recorder", "1s", "--trigger", "log:ERROR boom"])
            .args(["--dump-spacing", "1s", "--", "sh", "-c", script]),
    );
    agent.wait_for_stderr(
        "flight recorder: log: ERROR boom: the last",
        Duration::from_secs(30),
    );
    // SIGUSR2 writes the window too.
    std::thread::sleep(Duration::from_millis(1500));
    agent.signal(libc::SIGUSR2);
    agent.wait_for_stderr(
        "flight recorder: SIGUSR2: the last",
        Duration::from_secs(10),
    );
    let run = agent.finish(Duration::from_secs(60));
    run.assert_success();
    let mut dumps: Vec<_> = std::fs::read_dir(out.join("rec"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("flight-")
        })
        .collect();
    dumps.sort();
    assert_eq!(dumps.len(), 2, "{dumps:?}");
    let first = read_recording(&dumps[0]);
    assert!(first["meta"]["end_reason"]
        .as_str()
        .unwrap()
        .contains("log: ERROR boom"));
    let logs = first["logs"].to_string();
    assert!(logs.contains("ERROR boom"), "{logs}");
    // The second before the trigger, not the start: ticks 21..=30 or so.
    let t = ticks(&first);
    assert!(!t.is_empty(), "{logs}");
    assert!(
        *t.iter().min().unwrap() >= 15,
        "older history was dropped: {t:?}"
    );
    assert!(*t.iter().max().unwrap() <= 33, "{t:?}");
    let window =
        first["meta"]["end_ns"].as_u64().unwrap() - first["meta"]["start_ns"].as_u64().unwrap();
    assert!(window <= 1_100_000_000, "{window} ns");
    // The SIGUSR2 dump holds what came after the first dump.
    let second = read_recording(&dumps[1]);
    assert_eq!(second["meta"]["end_reason"], "trigger: SIGUSR2");
    let t2 = ticks(&second);
    assert!(t2.iter().all(|&n| n > 30), "{t2:?}");
    // The recording at the end holds only the last window too.
    let last = read_recording(&out.join("rec"));
    let t3 = ticks(&last);
    assert!(t3.iter().all(|&n| n > 45), "{t3:?}");
}

#[test]
fn bad_triggers_are_one_line_errors() {
    for (args, want) in [
        (
            vec!["--flight-recorder", "10s", "--trigger", "span:f"],
            "no '>'",
        ),
        (
            vec!["--flight-recorder", "10s", "--trigger", "oom"],
            "unknown trigger",
        ),
        (
            vec!["--flight-recorder", "10s", "--trigger", "log:("],
            "regular expression",
        ),
        (vec!["--trigger", "signal"], "--flight-recorder"),
    ] {
        let o = Command::new(modelprobe_bin())
            .arg("run")
            .args(&args)
            .args(["--", "true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// KiB resident of `pid` now.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn history_memory_follows_the_window_not_the_run() {
    if !require_bpf("history_memory_follows_the_window_not_the_run") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("flight-bounded");
    // 10,000 lines of 1000 bytes a second for 7 s: 70 MB of output, 10 MB a window.
    let mut agent = Agent::spawn(
        Command::new(modelprobe_bin())
            .args(["run", "-o"])
            .arg(out.join("rec"))
            .args(["--flight-recorder", "1s", "--"])
            .arg(workload_bin())
            .args(["--flood", "70000", "--rate", "10000"]),
    );
    agent.wait_for_programs(1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let early = rss_kib(agent.pid());
    std::thread::sleep(Duration::from_secs(4));
    let late = rss_kib(agent.pid());
    let run = agent.finish(Duration::from_secs(90));
    run.assert_success();
    eprintln!(
        "flight recorder, 1 s window, 10 MB/s of output: RSS {early} KiB at 2 s, {late} KiB at 6 s"
    );
    assert!(
        late < early + 16 * 1024,
        "the history grew with the run: {early} KiB -> {late} KiB"
    );
    // What is kept is the last second, and what came since the last eviction (each second):
    // 10,000 to 20,000 lines, not 70,000.
    let rec = read_recording(&out.join("rec"));
    let lines = rec["logs"].as_array().unwrap().len();
    assert!(lines > 1000 && lines <= 25_000, "{lines} lines kept");
}

#[test]
fn api_error_signal_and_slow_call_triggers_each_write_a_dump() {
    if !require_bpf("api_error_signal_and_slow_call_triggers_each_write_a_dump") {
        return;
    }
    let _bpf = bpf_lock();
    let fixtures = fixture_lib_dir();
    let cases: Vec<(&str, Vec<&str>, Command, &str)> = vec![
        (
            "span",
            vec![
                "--trigger",
                "span:mp_span_target>1ms",
                "--probe",
                "mp-workload:mp_span_target",
            ],
            {
                let mut c = Command::new(workload_bin());
                c.args(["--calls", "20"]);
                c
            },
            "span: mp_span_target took",
        ),
        (
            "signal",
            vec!["--trigger", "signal"],
            {
                let mut c = Command::new(workload_bin());
                c.arg("--segv");
                c
            },
            "signal: ",
        ),
        (
            "api_error",
            vec!["--trigger", "api_error"],
            {
                let mut c = Command::new(fixtures.join("mp-cuda-app"));
                c.env("MP_CUDA_DIR", fixtures.join("cuda"))
                    .env("MP_CUDA_SETTLE_MS", "2500");
                c
            },
            "api_error: cudaMemcpy failed",
        ),
    ];
    for (name, trigger, target, reason) in cases {
        let out = scratch_dir(&format!("flight-{name}"));
        let mut cmd = Command::new(modelprobe_bin());
        cmd.args(["run", "-o"])
            .arg(out.join("rec"))
            .args(["--flight-recorder", "30s"])
            .args(&trigger)
            .arg("--")
            .arg(target.get_program())
            .args(target.get_args());
        for (k, v) in target.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        let run = run_agent(&mut cmd, Duration::from_secs(90));
        let err = run.stderr();
        assert!(
            err.contains(&format!("flight recorder: {reason}")),
            "{name}: {err}"
        );
        let dump = std::fs::read_dir(out.join("rec"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("flight-1-")
            })
            .unwrap_or_else(|| panic!("{name}: no dump: {err}"));
        let rec = read_recording(&dump);
        let why = rec["meta"]["end_reason"].as_str().unwrap();
        assert!(why.contains(reason), "{name}: {why}");
        // The seconds before it: the process's start is in the window (30 s), so its exec is.
        assert!(
            rec["events"].to_string().contains("\"exec\""),
            "{name}: the dump holds the run up to the trigger"
        );
    }
}
