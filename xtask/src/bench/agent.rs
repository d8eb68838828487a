//! The continuous agent's own cost, as a fleet would run it: ten busy targets, `modelprobe
//! agent` at its default 19 Hz in windows, for a minute; its CPU (user + system time from
//! `/proc`, as a share of one CPU) and its memory (resident set, peak and at the end), beside
//! `perf record -F 19 -g` on the same processes for the same time.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::json;

use super::*;

/// Targets, as the target says ("10 targets at 19 Hz").
const TARGETS: usize = 10;

/// How long each variant runs.
const RUN: Duration = Duration::from_secs(60);

/// (CPU seconds used, RSS KiB) of `pid` now.
fn usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / tick;
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((cpu, rss))
}

/// Watches `child` for [`RUN`], then SIGINTs it and waits: (CPU % of one CPU, peak RSS MiB,
/// RSS MiB at the end).
fn watch(mut child: Child) -> Result<(f64, f64, f64)> {
    let pid = child.id();
    let start = Instant::now();
    let (cpu0, _) = usage(pid).context("the tool exited at once")?;
    let (mut peak, mut last, mut cpu) = (0u64, 0u64, cpu0);
    while start.elapsed() < RUN {
        std::thread::sleep(Duration::from_millis(500));
        if let Some((c, rss)) = usage(pid) {
            peak = peak.max(rss);
            last = rss;
            cpu = c;
        }
    }
    let used = cpu - cpu0;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    child.wait()?;
    Ok((
        100.0 * used / start.elapsed().as_secs_f64(),
        peak as f64 / 1024.0,
        last as f64 / 1024.0,
    ))
}

pub(super) fn agent(root: &Path, report: &mut Report) -> Result<()> {
    let modelprobe = root.join("target/release/modelprobe");
    let workload = root.join("target/release/mp-workload");
    let tmp = std::env::temp_dir().join("modelprobe-bench-agent");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    say(&format!(
        "continuous agent: {TARGETS} busy targets, 19 Hz, {} s per variant",
        RUN.as_secs()
    ));
    let seconds = (RUN.as_secs() * 2 + 30).to_string();
    let mut targets: Vec<Child> = (0..TARGETS)
        .map(|_| {
            Command::new(&workload)
                .args(["--seconds", &seconds])
                .stdout(Stdio::null())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let pids: Vec<String> = targets.iter().map(|c| c.id().to_string()).collect();
    std::thread::sleep(Duration::from_millis(500));
    report.table(
        "agent",
        "Continuous agent: its own cost over 10 busy targets at 19 Hz (targets: <= 1% of one CPU, <= 64 MiB)",
        &[
            "variant",
            "CPU (% of one CPU)",
            "peak RSS MiB",
            "RSS at the end MiB",
        ],
    );
    let mut rows = Vec::new();
    let agent = Command::new(&modelprobe)
        .args(["-q", "agent", "--match", "^mp-workload$", "--window", "20s"])
        .args(["--no-control", "--keep", "2", "--dir"])
        .arg(tmp.join("windows"))
        .stdout(Stdio::null())
        .spawn()?;
    rows.push(("modelprobe agent (20 s windows)", watch(agent)?));
    if have("perf") {
        let perf = Command::new("perf")
            .args(["record", "-q", "-F", "19", "-g", "-o"])
            .arg(tmp.join("perf.data"))
            .args(["-p", &pids.join(",")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        rows.push(("perf record -F 19 -g -p (10 pids)", watch(perf)?));
    }
    for t in &mut targets {
        let _ = t.kill();
        let _ = t.wait();
    }
    for (name, (cpu, peak, last)) in rows {
        report.row(vec![
            json!(name),
            json!(round1(cpu * 10.0) / 10.0),
            json!(round1(peak)),
            json!(round1(last)),
        ]);
    }
    Ok(())
}
