//! Live outputs. `--metrics-addr`: a real Prometheus server (Debian's `prometheus`) scrapes a
//! recording in progress, and its query API returns the series the recording counts: CPU
//! samples by process, the probed function's latency histogram, the drop counters.
//! `--export jsonl:FILE`: every span and event as a JSON line, as the recording has them.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use modelprobe_tests::*;

/// A port free now on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port, the body (HTTP/1.0: the server closes when done).
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
}

/// The results of a PromQL instant query: (labels, value) per series.
fn query(port: u16, promql: &str) -> Vec<(serde_json::Value, f64)> {
    let q: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let Some(body) = get(port, &format!("/api/v1/query?query={q}")) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let value = r["value"][1]
                .as_str()
                .unwrap_or("nan")
                .parse()
                .unwrap_or(f64::NAN);
            (r["metric"].clone(), value)
        })
        .collect()
}

#[test]
fn prometheus_scrapes_a_recording_in_progress() {
    if !require_bpf("prometheus_scrapes_a_recording_in_progress") {
        return;
    }
    if !Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return missing("prometheus (Debian's package), to scrape --metrics-addr");
    }
    let _bpf = bpf_lock();
    let dir = scratch_dir("live-metrics");
    let (metrics_port, prom_port) = (free_port(), free_port());
    let mut recording = KillOnDrop(
        Command::new(modelprobe_bin())
            .args(["run", "--off-cpu", "--probe", "mp-workload:mp_sleep@1"])
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("-o")
            .arg(dir.join("rec"))
            .arg("--")
            .arg(workload_bin())
            .args(["--seconds", "40"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: modelprobe\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Until Prometheus has scraped the recording a few times.
    let started = Instant::now();
    let spans = loop {
        let r = query(prom_port, "modelprobe_span_duration_seconds_count");
        if r.first().is_some_and(|(_, v)| *v >= 20.0) {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(35),
            "Prometheus has no span series yet: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].0["function"], "mp_sleep");
    assert_eq!(spans[0].0["job"], "modelprobe");

    let up = query(prom_port, "up");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1, 1.0, "the scrape itself failed: {up:?}");
    let cpu = query(prom_port, "modelprobe_cpu_samples_total");
    assert!(
        cpu.iter()
            .any(|(m, v)| m["process"] == "mp-workload" && *v > 10.0),
        "{cpu:?}"
    );
    // The kernel's accounting of the same process's CPU time, beside the samples.
    let kernel = query(prom_port, "modelprobe_process_cpu_seconds_total");
    assert!(
        kernel
            .iter()
            .any(|(m, v)| m["process"] == "mp-workload" && *v > 0.1),
        "{kernel:?}"
    );
    // mp_sleep sleeps 20 ms: the histogram's mean says so.
    let mean = query(
        prom_port,
        "modelprobe_span_duration_seconds_sum / modelprobe_span_duration_seconds_count",
    );
    assert!(
        mean.first().is_some_and(|(_, v)| (0.019..0.1).contains(v)),
        "{mean:?}"
    );
    let blocked = query(prom_port, "modelprobe_off_cpu_seconds_total");
    assert!(
        blocked.first().is_some_and(|(_, v)| *v > 0.1),
        "{blocked:?}"
    );
    let lost = query(prom_port, "modelprobe_lost_total");
    assert!(
        lost.iter().any(|(m, _)| m["kind"] == "cpu_samples"),
        "{lost:?}"
    );

    // Ctrl-C ends the recording as usual, with its files.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(recording.0.id() as i32, libc::SIGINT) };
    let status = recording.0.wait().unwrap();
    let mut err = String::new();
    recording
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(dir.join("rec/recording.json").exists(), "{status:?}\n{err}");
    assert!(
        err.contains(&format!(
            "metrics on http://127.0.0.1:{metrics_port}/metrics"
        )),
        "{err}"
    );
}

#[test]
fn the_jsonl_stream_holds_every_span_and_event_of_the_recording() {
    if !require_bpf("the_jsonl_stream_holds_every_span_and_event_of_the_recording") {
        return;
    }
    let _bpf = bpf_lock();
    let dir = scratch_dir("live-jsonl");
    let stream = dir.join("live.jsonl");
    let r = Session::run(
        &dir.join("rec"),
        &[
            "--probe",
            "mp-workload:mp_span_*@1",
            "--export",
            &format!("jsonl:{}", stream.display()),
        ],
    )
    .workload(&["--calls", "25"])
    .expect_success();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&stream)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rec = r.recording();
    let spans: Vec<_> = lines.iter().filter(|l| l["type"] == "span").collect();
    assert_eq!(spans.len(), rec["spans"].as_array().unwrap().len());
    assert_eq!(spans.len(), 50);
    for i in 0..25u64 {
        let target = spans
            .iter()
            .find(|s| s["function"] == "mp_span_target" && s["args"] == serde_json::json!([i]))
            .unwrap_or_else(|| panic!("no mp_span_target({i})"));
        assert_eq!(target["ret"], 2 * i);
        assert!(target["duration_ms"].as_f64() >= Some(2.0));
    }
    let events: Vec<_> = lines.iter().filter(|l| l["type"] == "event").collect();
    assert_eq!(events.len(), rec["events"].as_array().unwrap().len());
    assert!(
        events.iter().any(|e| e["kind"] == "process_exit"),
        "{events:?}"
    );
    assert!(r
        .stderr()
        .contains(&format!("streamed {} JSON lines", lines.len())));
}
