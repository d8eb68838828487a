//! `modelprobe agent`, the continuous agent: against a long-lived matching process and 100
//! short-lived ones started one after another, it records window after window, keeps only the
//! last `--keep` windows on disk, serves one set of metrics across windows, holds its memory
//! flat, ends cleanly on SIGINT and leaves no BPF program behind. A process that starts
//! mid-window is recorded from then on; `modelprobe ctl capture` gets a deep capture over the
//! control socket; SIGHUP reads the config file's rules again; profiles go to a pprof ingest
//! endpoint that `go tool pprof` reads.
use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use modelprobe_tests::*;

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// KiB of the process's resident memory in BPF map mappings (ring buffers, mmapped arrays).
fn bpf_map_rss_kib(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_map = false;
    let mut total = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            in_map = line.contains("anon_inode:bpf-map");
        } else if let (true, Some(kib)) = (in_map, line.strip_prefix("Rss:")) {
            total += kib
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
    }
    total
}

fn metrics(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The value of the series line starting with `series` (`name{labels}`).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[test]
fn the_agent_records_window_after_window_with_bounded_disk_and_memory() {
    if !require_bpf("the_agent_records_window_after_window_with_bounded_disk_and_memory") {
        return;
    }
    let _bpf = bpf_lock();
    let dir = scratch_dir("agent");
    let windows = dir.join("windows");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let long = start_workload(&["--seconds", "40"]);
    let long_pid = long.0.id();
    let mut agent = Agent::spawn(
        Command::new(modelprobe_bin())
            .args(["agent", "--match", "^mp-workload$", "--window", "2s"])
            .args(["--keep", "3", "--no-control", "--metrics-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--dir")
            .arg(&windows),
    );
    agent.wait_for_programs(1, Duration::from_secs(30));

    // 100 short-lived matching processes, one after another, while the agent works.
    let started = Instant::now();
    let mut rss = Vec::new();
    for i in 0..100 {
        let status = Command::new(workload_bin())
            .args(["--seconds", "0.05"])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        if i % 5 == 0 {
            rss.extend(rss_kib(agent.pid()));
        }
    }
    // At least 5 windows in all, sampling the agent's memory (its BPF maps' share too: between
    // two windows it holds none, so the most seen counts).
    let mut maps = 0;
    while started.elapsed() < Duration::from_secs(14) {
        rss.extend(rss_kib(agent.pid()));
        maps = maps.max(bpf_map_rss_kib(agent.pid()));
        std::thread::sleep(Duration::from_millis(250));
    }
    // The rings are sized for 19 Hz and the unwind table is mapped only while written: the
    // BPF maps hold little of the agent's memory (the defaults would be 80 MiB and more).
    assert!(
        maps > 0 && maps < 16 * 1024,
        "{maps} KiB resident in BPF maps"
    );
    let text = metrics(port).expect("the agent's /metrics");
    let samples = value(
        &text,
        "modelprobe_cpu_samples_total{process=\"mp-workload\"}",
    )
    .unwrap_or_else(|| panic!("no CPU samples series:\n{text}"));
    // One set of metrics across windows: far more samples than one 2 s window at 19 Hz holds.
    assert!(samples > 100.0, "{samples} samples:\n{text}");

    agent.signal(libc::SIGINT);
    let run = agent.finish(Duration::from_secs(30));
    run.assert_success();
    assert_programs_released(&run.programs, "after the agent");
    drop(long);

    let err = run.stderr();
    let recorded: u64 = err
        .lines()
        .filter(|l| l.contains("window(s) recorded"))
        .find_map(|l| {
            l.strip_prefix("modelprobe: agent: ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no summary line:\n{err}"));
    assert!(recorded >= 5, "{recorded} windows:\n{err}");
    let kept: Vec<_> = std::fs::read_dir(&windows)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(kept.len(), 3, "--keep 3: {kept:?}");
    for w in &kept {
        let rec = read_recording(w);
        assert_eq!(rec["meta"]["frequency_hz"], 19);
        assert!(
            rec["processes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["pid"] == long_pid),
            "the long-lived process is in every window"
        );
    }

    // Memory stays flat: the last third of the readings no higher than the first third's
    // peak plus 16 MiB.
    assert!(rss.len() >= 9, "{rss:?}");
    let third = rss.len() / 3;
    let early = rss[..third].iter().max().unwrap();
    let late = rss[rss.len() - third..].iter().max().unwrap();
    eprintln!("agent: {recorded} windows; RSS peak {early} KiB in the first third, {late} KiB in the last; {maps} KiB in BPF maps");
    assert!(
        late <= &(early + 16 * 1024),
        "RSS grew: {early} KiB -> {late} KiB ({rss:?})"
    );
}

#[test]
fn the_agent_picks_up_new_processes_takes_captures_and_reloads_its_rules() {
    if !require_bpf("the_agent_picks_up_new_processes_takes_captures_and_reloads_its_rules") {
        return;
    }
    let _bpf = bpf_lock();
    let dir = scratch_dir("agent-ctl");
    let windows = dir.join("windows");
    let socket = dir.join("ctl.sock");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "agent:\n  match: ['^mp-workload$']\n  window: 60s\n",
    )
    .unwrap();
    let first = start_workload(&["--seconds", "60"]);
    let first_pid = first.0.id();
    let mut agent = Agent::spawn(
        Command::new(modelprobe_bin())
            .arg("--config")
            .arg(&config)
            .args(["agent", "--control"])
            .arg(&socket)
            .arg("--dir")
            .arg(&windows),
    );
    agent.wait_for_stderr("window of 60s over 1 process(es)", Duration::from_secs(30));
    agent.wait_for_programs(1, Duration::from_secs(30));

    // A matching process started mid-window is recorded from then on, within a few seconds.
    let second = start_workload(&["--seconds", "60"]);
    let second_pid = second.0.id();
    agent.wait_for_stderr(
        &format!("recording pid {second_pid} "),
        Duration::from_secs(10),
    );

    // A deep capture through the control socket, beside the window.
    let out = run_with_timeout(
        Command::new(modelprobe_bin())
            .args(["ctl", "capture", "--pid"])
            .arg(first_pid.to_string())
            .args(["--duration", "2s", "--print-dir", "--socket"])
            .arg(&socket),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "ctl capture: {}\nagent: {}",
        String::from_utf8_lossy(&out.stderr),
        agent.stderr_so_far()
    );
    let capture = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(capture.starts_with(windows.join("captures")), "{capture:?}");
    let rec = read_recording(&capture);
    assert_eq!(
        rec["meta"]["frequency_hz"], 99,
        "a capture samples at 99 Hz"
    );
    assert_eq!(
        rec["meta"]["off_cpu"], true,
        "a capture records blocked time"
    );
    assert_eq!(rec["meta"]["target_pid"], first_pid);
    let cpu = rec["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "cpu")
        .count();
    assert!(
        cpu > 20,
        "{cpu} CPU sample records in a 2 s capture at 99 Hz"
    );
    // A capture of a process that is not there is a clear error, and the agent goes on.
    let out = run_with_timeout(
        Command::new(modelprobe_bin())
            .args([
                "ctl",
                "capture",
                "--pid",
                "4194000",
                "--duration",
                "1s",
                "--socket",
            ])
            .arg(&socket),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not capture pid 4194000"), "{err}");

    // New rules: SIGHUP ends the 60 s window early (written) and the next uses them.
    std::fs::write(
        &config,
        "agent:\n  match: ['^mp-workload$']\n  window: 3s\n",
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    agent.wait_for_stderr("rules reloaded", Duration::from_secs(15));
    agent.wait_for_stderr("window of 3s over 2 process(es)", Duration::from_secs(15));
    // A bad file keeps the old rules.
    std::fs::write(&config, "agent:\n  window: soon\n").unwrap();
    agent.signal(libc::SIGHUP);
    agent.wait_for_stderr("rules not reloaded", Duration::from_secs(15));

    agent.signal(libc::SIGINT);
    let run = agent.finish(Duration::from_secs(60));
    run.assert_success();
    assert_programs_released(&run.programs, "after the agent and its capture");
    assert!(!socket.exists(), "the control socket is removed");
    let err = run.stderr();
    assert!(
        err.contains("1 process(es) picked up mid-window, 2 reload(s)")
            || err.contains("1 process(es) picked up mid-window, 1 reload(s)"),
        "{err}"
    );
    // The window the reload ended holds both processes.
    let both = std::fs::read_dir(&windows)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("window-"))
        .map(|e| read_recording(&e.path()))
        .any(|rec| {
            let pids: Vec<u64> = rec["processes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["pid"].as_u64())
                .collect();
            pids.contains(&(first_pid as u64)) && pids.contains(&(second_pid as u64))
        });
    assert!(both, "no window recorded both processes:\n{err}");
    drop((first, second));
}

#[test]
fn the_agent_pushes_each_window_as_otlp_and_its_profiles_as_pprof() {
    if !require_bpf("the_agent_pushes_each_window_as_otlp_and_its_profiles_as_pprof") {
        return;
    }
    if !have_go() {
        return;
    }
    let _bpf = bpf_lock();
    let dir = scratch_dir("agent-push");
    let Some((_receiver, url, received)) = otlp_receiver(&dir, &[]) else {
        return;
    };
    let workload = start_workload(&["--seconds", "30"]);
    let run = run_agent(
        Command::new(modelprobe_bin())
            .args([
                "agent",
                "--match",
                "^mp-workload$",
                "--window",
                "3s",
                "--windows",
                "1",
            ])
            .args([
                "--freq",
                "199",
                "--no-control",
                "--endpoint",
                &url,
                "--pprof-endpoint",
                &url,
            ])
            .arg("--dir")
            .arg(dir.join("windows"))
            .env("OTEL_SERVICE_NAME", "mp-agent-test"),
        Duration::from_secs(60),
    );
    run.assert_success();
    drop(workload);
    let err = run.stderr();
    assert!(err.contains("1 window(s) recorded, 1 pushed"), "{err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&received)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let signals: Vec<&str> = lines.iter().filter_map(|l| l["signal"].as_str()).collect();
    assert!(signals.contains(&"metrics"), "{signals:?}");
    let cpu = lines
        .iter()
        .find(|l| l["signal"] == "pprof" && l["query"]["name"] == "mp-agent-test.cpu")
        .unwrap_or_else(|| panic!("no CPU profile pushed: {lines:?}"));
    // The same profile as OTLP's profiles signal, read by the official protos: the workload's
    // resource, its hot functions in the dictionary.
    let otlp = lines
        .iter()
        .find(|l| l["signal"] == "profiles")
        .unwrap_or_else(|| panic!("no OTLP profiles pushed: {signals:?}"));
    let req = &otlp["request"];
    let strings: Vec<&str> = req["dictionary"]["stringTable"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert!(
        strings.contains(&"mp_hot_a") && strings.contains(&"samples"),
        "{strings:?}"
    );
    let rp = &req["resourceProfiles"][0];
    let attrs = rp["resource"]["attributes"].to_string();
    assert!(attrs.contains("mp-agent-test"), "{attrs}");
    assert!(attrs.contains("process.pid"), "{attrs}");
    let samples = rp["scopeProfiles"][0]["profiles"][0]["samples"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(samples > 0, "{rp}");
    let from: u64 = cpu["query"]["from"].as_str().unwrap().parse().unwrap();
    let until: u64 = cpu["query"]["until"].as_str().unwrap().parse().unwrap();
    assert!(until > from && until - from <= 10, "{from}..{until}");
    // The pushed profile opens in `go tool pprof` with the workload's hot functions.
    let text = go_pprof(
        &["-top", "-nodecount=1000", "-sample_index=samples"],
        std::path::Path::new(cpu["file"].as_str().unwrap()),
    );
    assert!(
        text.contains("mp_hot_a") && text.contains("mp_hot_b"),
        "{text}"
    );
}

#[test]
fn the_agent_says_what_it_needs() {
    let o = Command::new(modelprobe_bin())
        .args(["agent", "--window", "1s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("say which processes to record") && err.trim().lines().count() == 1,
        "{err}"
    );
}
