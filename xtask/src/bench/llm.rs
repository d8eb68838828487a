//! LLM calls: what reading TLS plaintext costs a client making many small HTTPS calls (the
//! real `openai` client against the tests' stand-in server on loopback), beside bpftrace
//! with uprobes on the same OpenSSL functions, against no profiler; and the kernel's own
//! count of what each `SSL_read`/`SSL_write` probe costs.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::*;

/// Calls per run: about 1 ms each on loopback.
const CALLS: &str = "1500";

pub(super) fn llm(root: &Path, runs: usize, report: &mut Report) -> Result<()> {
    crate::ensure_numpy_venv(root)?;
    let python = root.join(crate::NUMPY_VENV).join("bin/python");
    let agent = root.join("target/release/modelprobe");
    let tmp = std::env::temp_dir().join("modelprobe-bench-llm");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let (base, cert, _server) = start_server(root, &python, &tmp)?;
    let client = root.join("tests/fixtures/llm/client.py");
    let libssl = "/lib/x86_64-linux-gnu/libssl.so.3";
    say(&format!(
        "LLM calls: {runs} interleaved runs per variant, {CALLS} chat completions over HTTPS"
    ));
    let plain = || {
        let mut c = Command::new(&python);
        c.arg(&client)
            .args(["--base", &base, "--ca"])
            .arg(&cert)
            .args(["--repeat", CALLS]);
        c
    };
    let modelprobe = |extra: &'static [&'static str], out: &'static str| {
        let (agent, tmp, plain) = (&agent, &tmp, &plain);
        move || {
            let inner = plain();
            let mut c = Command::new(agent);
            c.args(["run", "-q", "--no-logs", "--freq", "99"])
                .args(extra)
                .arg("-o")
                .arg(tmp.join(out))
                .arg("--")
                .arg(inner.get_program())
                .args(inner.get_args());
            c
        }
    };
    // The same uprobes, counting in a map: the cheapest thing a uprobe can do.
    let bpftrace_script = format!(
        "uprobe:{libssl}:SSL_write_ex,uprobe:{libssl}:SSL_read_ex {{ @[probe] = count(); }} \
         uretprobe:{libssl}:SSL_write_ex,uretprobe:{libssl}:SSL_read_ex {{ @[probe] = count(); }}"
    );
    let bpftrace = || {
        let inner = plain();
        let mut c = Command::new("bpftrace");
        c.arg("-q").arg("-e").arg(&bpftrace_script).arg("-c").arg(
            std::iter::once(inner.get_program())
                .chain(inner.get_args())
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
        );
        c
    };
    let mut variants: Vec<Variant<'_>> = vec![
        ("no profiler".into(), Box::new(plain)),
        (
            "modelprobe run (LLM calls parsed)".into(),
            Box::new(modelprobe(&[], "mp")),
        ),
        (
            "modelprobe run --no-llm".into(),
            Box::new(modelprobe(&["--no-llm"], "mp-no-llm")),
        ),
    ];
    if tool_exists("bpftrace") {
        variants.push((
            "bpftrace: uprobe+uretprobe on SSL_read_ex/SSL_write_ex, count".into(),
            Box::new(bpftrace),
        ));
    }
    report.table(
        "llm_latency",
        &format!(
            "Added latency of {CALLS} small chat completions over HTTPS on loopback (openai client, CPython 3.13)"
        ),
        &[
            "variant",
            "elapsed ms (median)",
            "per request us",
            "added latency (median of pair ratios)",
            "ratio range",
        ],
    );
    let calls: f64 = CALLS.parse()?;
    for c in compare(&variants, runs)? {
        report.row(vec![
            json!(c.name),
            json!(round1(c.median_ms)),
            json!(round1(c.median_ms * 1000.0 / calls)),
            json!(format!("{:+.2}%", (c.ratio - 1.0) * 100.0)),
            json!(format!("{:.3}..{:.3}", c.lo, c.hi)),
        ]);
    }

    // The kernel's count of the TLS programs' cost, and that every call was accounted.
    let stats = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(stats).unwrap_or_default();
    std::fs::write(stats, "1").context("turning on kernel.bpf_stats_enabled")?;
    let measured = elapsed(&mut modelprobe(&[], "mp-cost")());
    std::fs::write(stats, before.trim()).ok();
    measured?;
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(
        tmp.join("mp-cost/recording.json"),
    )?)?;
    report.table(
        "llm_probe_cost",
        "Cost of the TLS programs in the kernel (kernel.bpf_stats_enabled), and calls accounted",
        &["program", "runs", "ns per run (mean)"],
    );
    for p in rec["meta"]["bpf_programs"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("");
        if name.starts_with("mp_tls") {
            let runs = p["runs"].as_u64().unwrap_or(0);
            let ns = p["run_ns"].as_f64().unwrap_or(0.0) / runs.max(1) as f64;
            report.row(vec![json!(name), json!(runs), json!(round1(ns))]);
        }
    }
    let accounted = rec["llm"]["calls"].as_array().map_or(0, Vec::len);
    let expected = calls as usize + 1;
    report.row(vec![
        json!(format!("LLM calls accounted (of {expected})")),
        json!(accounted),
        json!(""),
    ]);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn tool_exists(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The tests' stand-in API server on a loopback port: (base URL, its certificate, the child).
fn start_server(
    root: &Path,
    python: &Path,
    dir: &Path,
) -> Result<(String, std::path::PathBuf, KillOnDrop)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("openssl req failed");
    }
    let port_file = dir.join("port");
    let child = KillOnDrop(
        Command::new(python)
            .arg(root.join("tests/fixtures/llm/server.py"))
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg("--port-file")
            .arg(&port_file)
            .spawn()?,
    );
    let start = Instant::now();
    loop {
        if let Ok(port) = std::fs::read_to_string(&port_file) {
            return Ok((format!("https://127.0.0.1:{}", port.trim()), cert, child));
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("the stand-in API server did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
