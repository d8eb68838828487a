//! `cargo xtask overhead`: what profiling costs the target, measured in one run against its
//! own baseline. The workload does a fixed amount of work on every CPU and reports its own
//! elapsed time; runs alternate baseline / profiled so machine drift hits both alike.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{build_release_with_fixtures, is_root, say};

struct Run {
    elapsed_ms: f64,
    max_rss_kb: i64,
}

/// Runs `cmd`, parses the workload's `elapsed_ms` line, and takes the peak RSS of the process
/// tree's largest member from wait4 (the agent, when profiling).
fn measure(cmd: &mut Command) -> Result<Run> {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let pid = child.id() as i32;
    let output = {
        use std::io::Read;
        let mut s = String::new();
        child.stdout.context("stdout")?.read_to_string(&mut s)?;
        s
    };
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid out-pointers; `pid` is our unreaped child.
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed (status {status})");
    }
    let elapsed_ms = output
        .lines()
        .find_map(|l| l.strip_prefix("elapsed_ms "))
        .context("workload printed no elapsed_ms")?
        .trim()
        .parse()?;
    Ok(Run {
        elapsed_ms,
        max_rss_kb: usage.ru_maxrss,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(root: &Path, runs: usize, rounds: u64, only: Option<&str>) -> Result<()> {
    if !is_root() {
        bail!("measuring overhead attaches BPF programs and needs root: run `sudo -E cargo xtask overhead`");
    }
    build_release_with_fixtures(root)?;
    match only {
        None | Some("cpu") => cpu_slowdown(root, runs, rounds)?,
        Some("probe" | "events") => {}
        Some(other) => bail!("--only takes cpu, probe or events, not {other:?}"),
    }
    if matches!(only, None | Some("probe")) {
        probe_cost(root, runs)?;
    }
    if matches!(only, None | Some("events")) {
        event_rate(root)?;
    }
    Ok(())
}

/// Slowdown of a CPU-bound workload under sampling at 99 and 999 Hz, and the agent's RSS.
fn cpu_slowdown(root: &Path, runs: usize, rounds: u64) -> Result<()> {
    let agent = root.join("target/release/modelprobe");
    let workload = root.join("target/release/mp-workload");
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let rounds = rounds.to_string();
    let work = ["--work", rounds.as_str(), "--threads", threads.as_str()];
    let out = std::env::temp_dir().join("modelprobe-overhead");
    say(&format!(
        "{runs} baseline/profiled pairs per frequency, {threads} threads x {rounds} rounds"
    ));

    println!("| frequency | baseline ms (median) | profiled ms (median) | slowdown (median of pair ratios) | ratio min..max | agent peak RSS |");
    println!("|---|---|---|---|---|---|");
    for freq in ["99", "999"] {
        let (mut base, mut prof, mut ratios, mut rss) = (vec![], vec![], vec![], 0);
        for _ in 0..runs {
            let b = measure(Command::new(&workload).args(work))?;
            let p = measure(
                Command::new(&agent)
                    .args(["run", "-q", "--freq", freq, "-o"])
                    .arg(&out)
                    .arg("--")
                    .arg(&workload)
                    .args(work),
            )?;
            ratios.push(p.elapsed_ms / b.elapsed_ms);
            base.push(b.elapsed_ms);
            prof.push(p.elapsed_ms);
            rss = rss.max(p.max_rss_kb);
        }
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        println!(
            "| {freq} Hz | {:.1} | {:.1} | {:+.2}% | {:.3}..{:.3} | {:.1} MiB |",
            median(base),
            median(prof),
            (median(ratios) - 1.0) * 100.0,
            lo,
            hi,
            rss as f64 / 1024.0
        );
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// Runs `cmd` and returns the workload's `elapsed_ms` (the command may be a wrapper).
fn elapsed(cmd: &mut Command) -> Result<f64> {
    Ok(measure(cmd)?.elapsed_ms)
}

/// Cost per call of a probed function: `modelprobe --probe` (entry + return) against no probe,
/// a bpftrace uprobe counting calls, and a bpftrace uprobe + uretprobe pair (the same work).
pub fn probe_cost(root: &Path, runs: usize) -> Result<()> {
    let agent = root.join("target/release/modelprobe");
    let workload = root.join("target/release/mp-workload");
    let calls: u64 = 100_000;
    let n = calls.to_string();
    let w = workload.display().to_string();
    let bpftrace = Command::new("bpftrace").arg("--version").output().is_ok();
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("no probe", vec![]),
        ("modelprobe --probe (entry+return)", vec![]),
    ];
    if bpftrace {
        rows.push(("bpftrace uprobe count()", vec![]));
        rows.push(("bpftrace uprobe+uretprobe", vec![]));
    } else {
        say("bpftrace not installed: `apt-get install bpftrace` to compare against it");
    }
    let out = std::env::temp_dir().join("modelprobe-probe-cost");
    for _ in 0..runs {
        rows[0]
            .1
            .push(elapsed(Command::new(&workload).args(["--tight", &n]))?);
        rows[1].1.push(elapsed(
            Command::new(&agent)
                .args([
                    "run",
                    "-q",
                    "--no-logs",
                    "--probe",
                    "mp-workload:mp_tiny",
                    "-o",
                ])
                .arg(&out)
                .arg("--")
                .arg(&workload)
                .args(["--tight", &n]),
        )?);
        if bpftrace {
            rows[2].1.push(elapsed(Command::new("bpftrace").args([
                "-q",
                "-e",
                &format!("uprobe:{w}:mp_tiny {{ @c = count(); }}"),
                "-c",
                &format!("{w} --tight {n}"),
            ]))?);
            rows[3].1.push(elapsed(Command::new("bpftrace").args([
                "-q",
                "-e",
                &format!(
                    "uprobe:{w}:mp_tiny {{ @s[tid] = nsecs; }} uretprobe:{w}:mp_tiny {{ @d = hist(nsecs - @s[tid]); }}"
                ),
                "-c",
                &format!("{w} --tight {n}"),
            ]))?);
        }
    }
    let base = median(rows[0].1.clone());
    println!("\n| {calls} calls of a tiny function | elapsed ms (median of {runs}) | added cost per call |");
    println!("|---|---|---|");
    for (name, v) in rows {
        let m = median(v);
        println!(
            "| {name} | {m:.1} | {:.2} us |",
            (m - base) * 1e3 / calls as f64
        );
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// The highest stdout/stderr line rate the agent records with zero loss (1000-byte lines,
/// 2 s at each rate), and the loss it reports above that.
pub fn event_rate(root: &Path) -> Result<()> {
    let agent = root.join("target/release/modelprobe");
    let workload = root.join("target/release/mp-workload");
    let out = std::env::temp_dir().join("modelprobe-event-rate");
    println!("\n| lines/s offered (1000 B each) | lines/s achieved | recorded | lost | lost % |");
    println!("|---|---|---|---|---|");
    for rate in [10_000u64, 50_000, 100_000, 200_000, 400_000, 1_000_000] {
        let lines = rate * 2;
        let flood = format!(
            "exec {} --flood {lines} --rate {rate} 2>/dev/null",
            workload.display()
        );
        let run = Command::new(&agent)
            .args(["run", "-q", "-o"])
            .arg(&out)
            .args(["--", "sh", "-c", &flood])
            .stderr(Stdio::null())
            .output()?;
        if !run.status.success() {
            bail!("flood at {rate}/s failed: {}", run.status);
        }
        let elapsed_ms: f64 = String::from_utf8_lossy(&run.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("elapsed_ms "))
            .context("no elapsed_ms from the flood")?
            .trim()
            .parse()?;
        let rec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("recording.json"))?)?;
        let lost = rec["meta"]["lost"]["log_writes"].as_u64().unwrap_or(0);
        let recorded = rec["logs"].as_array().map_or(0, |l| {
            l.iter().filter(|x| x["stream"] == "stderr").count() as u64
        });
        println!(
            "| {rate} | {:.0} | {recorded} | {lost} | {:.2}% |",
            lines as f64 / (elapsed_ms / 1e3),
            100.0 * lost as f64 / lines as f64
        );
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
