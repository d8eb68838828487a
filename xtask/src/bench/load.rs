//! Holding under load: a worker pool's flood of context switches and a fork-heavy parent,
//! each under modelprobe and beside the tools users would reach for (`perf record` on the
//! scheduler tracepoint, a bpftrace `offcputime`-style script), against no profiler. For each:
//! the target's slowdown, what was lost, the agent's CPU, and for the pool how far the recorded
//! blocked time is from the kernel's own accounting of the same threads.
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::*;

/// A bpftrace script that sums blocked time by user stack, as bcc's `offcputime` does.
const BPFTRACE_OFFCPU: &str =
    "tracepoint:sched:sched_switch /pid == cpid && args->prev_state != 0/ \
     { @start[tid] = nsecs; @where[tid] = ustack; } \
     tracepoint:sched:sched_switch /@start[args->next_pid]/ \
     { @off[@where[args->next_pid]] = sum(nsecs - @start[args->next_pid]); \
       delete(@start[args->next_pid]); delete(@where[args->next_pid]); }";

/// A bpftrace script that counts the lifecycle tracepoints modelprobe follows processes by.
const BPFTRACE_LIFECYCLE: &str = "tracepoint:sched:sched_process_fork, \
     tracepoint:sched:sched_process_exec, tracepoint:sched:sched_process_exit \
     { @[probe] = count(); }";

/// Runs `cmd` and returns what it printed on stdout; fails on a non-zero exit.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.stderr(std::process::Stdio::null()).output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `key=value` figure of a `pool-accounting` line.
fn figure(text: &str, key: &str) -> Result<f64> {
    text.lines()
        .find(|l| l.starts_with("pool-accounting"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        })
        .context(format!("no {key}= in the pool's output"))?
        .parse()
        .map_err(Into::into)
}

/// The number after `key ` on a line of its own (`elapsed_ms 1234.5`).
fn line_figure(text: &str, key: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .context(format!("no `{key}` line in the output"))?
        .trim()
        .parse()
        .map_err(Into::into)
}

/// (blocked s of every thread but the main one, CPU samples lost, blocked intervals lost,
/// lifecycle records lost, agent CPU s while recording, recorded s) from a recording.
fn recorded(dir: &Path) -> Result<(f64, u64, u64, u64, f64, f64)> {
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("recording.json"))?)?;
    let pid = rec["meta"]["target_pid"].as_u64().unwrap_or(0);
    let blocked = rec["samples"].as_array().map_or(0, |s| {
        s.iter()
            .filter(|s| s["kind"] == "off_cpu" && s["tid"].as_u64() != Some(pid))
            .map(|s| s["w"].as_u64().unwrap_or(0))
            .sum::<u64>()
    }) as f64
        / 1e9;
    let lost = &rec["meta"]["lost"];
    let n = |k: &str| lost[k].as_u64().unwrap_or(0);
    let (secs, cpu, _, _) = super::cpu::agent_usage(dir)?;
    Ok((
        blocked,
        n("cpu_samples"),
        n("off_cpu_events") + n("off_cpu_untracked"),
        n("task_records"),
        cpu,
        secs,
    ))
}

pub(super) fn load(root: &Path, runs: usize, report: &mut Report) -> Result<()> {
    let agent = root.join("target/release/modelprobe");
    let app = root.join("target/release/fixtures/mp-nofp-app");
    let tmp = std::env::temp_dir().join("modelprobe-bench-load");
    std::fs::create_dir_all(&tmp)?;
    let bpftrace_ok = have("bpftrace")
        && Command::new("bpftrace")
            .args(["-q", "-e", BPFTRACE_OFFCPU, "-c", "/bin/true"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !bpftrace_ok {
        say("bpftrace missing or refused the offcputime script: its rows are left out");
    }

    say(&format!(
        "load: a 512-thread pool for 3 s, {runs} interleaved runs per variant"
    ));
    report.table(
        "load_pool",
        "A worker pool (512 threads, ~30 us of work then a 1 ms sleep each, 3 s): work done, loss, accuracy",
        &[
            "variant",
            "iterations (median)",
            "work lost (median of pair ratios)",
            "blocked recorded / kernel's off-CPU",
            "CPU samples lost",
            "blocks lost",
            "agent CPU (% of one CPU)",
        ],
    );
    let pool = ["pool", "3", "512"];
    let mut variants: Vec<(String, Box<dyn Fn() -> Command + '_>)> = vec![(
        "no profiler".into(),
        Box::new(|| {
            let mut c = Command::new(&app);
            c.args(pool);
            c
        }),
    )];
    variants.push((
        "modelprobe run --off-cpu".into(),
        Box::new(|| {
            let mut c = Command::new(&agent);
            c.args(["run", "-q", "--off-cpu", "-o"])
                .arg(tmp.join("mp-pool"))
                .arg("--")
                .arg(&app)
                .args(pool);
            c
        }),
    ));
    if have("perf") {
        variants.push((
            "perf record -e sched:sched_switch -g".into(),
            Box::new(|| {
                let mut c = Command::new("perf");
                c.args(["record", "-q", "-e", "sched:sched_switch", "-g", "-o"])
                    .arg(tmp.join("perf-pool.data"))
                    .arg("--")
                    .arg(&app)
                    .args(pool);
                c
            }),
        ));
    }
    if bpftrace_ok {
        let cmdline = format!("{} {}", app.display(), pool.join(" "));
        variants.push((
            "bpftrace offcputime-style".into(),
            Box::new(move || {
                let mut c = Command::new("bpftrace");
                c.args(["-q", "-e", BPFTRACE_OFFCPU, "-c", &cmdline]);
                c
            }),
        ));
    }
    let mut iterations = vec![Vec::new(); variants.len()];
    let mut accuracy = Vec::new();
    let mut mp = Vec::new();
    for _ in 0..runs {
        for (i, (name, cmd)) in variants.iter().enumerate() {
            let text = output(&mut cmd())?;
            iterations[i].push(figure(&text, "iterations")?);
            if name.starts_with("modelprobe") {
                let kernel_off = figure(&text, "lifetime_s")? - figure(&text, "run_s")?;
                let r = recorded(&tmp.join("mp-pool"))?;
                accuracy.push(r.0 / kernel_off);
                mp.push(r);
            }
        }
    }
    let base = iterations[0].clone();
    for (i, (name, _)) in variants.iter().enumerate() {
        let ratios: Vec<f64> = iterations[i]
            .iter()
            .zip(&base)
            .map(|(n, b)| 1.0 - n / b)
            .collect();
        let mine = name.starts_with("modelprobe") && !mp.is_empty();
        let last = mp.last().copied().unwrap_or_default();
        report.row(vec![
            json!(name),
            json!(median(iterations[i].clone())),
            json!(format!("{:+.2}%", median(ratios) * 100.0)),
            json!(if mine {
                format!("{:.3} (median)", median(accuracy.clone()))
            } else {
                "-".into()
            }),
            json!(if mine { last.1.to_string() } else { "-".into() }),
            json!(if mine { last.2.to_string() } else { "-".into() }),
            json!(if mine {
                format!("{:.1}%", 100.0 * last.4 / last.5.max(1e-9))
            } else {
                "-".into()
            }),
        ]);
    }

    say(&format!(
        "load: 2,000 fork+exec children, {runs} interleaved runs per variant"
    ));
    report.table(
        "load_churn",
        "Process churn: 2,000 children forked one after another, each exec'ing /bin/true. \
         Target time is the parent's own clock around its fork loop; wall time adds the \
         profiler's start-up and stop (BPF verification, detaching, writing)",
        &[
            "variant",
            "target ms (median)",
            "target slowdown (median of pair ratios)",
            "ratio range",
            "wall ms incl. profiler start/stop (median)",
            "lifecycle records lost",
            "agent CPU (% of one CPU)",
        ],
    );
    let spawn = ["spawn", "0", "2000"];
    let mut variants: Vec<Variant<'_>> = vec![(
        "no profiler".into(),
        Box::new(|| {
            let mut c = Command::new(&app);
            c.args(spawn);
            c
        }),
    )];
    variants.push((
        "modelprobe run".into(),
        Box::new(|| {
            let mut c = Command::new(&agent);
            c.args(["run", "-q", "-o"])
                .arg(tmp.join("mp-churn"))
                .arg("--")
                .arg(&app)
                .args(spawn);
            c
        }),
    ));
    if have("perf") {
        variants.push((
            "perf record -F 99 -g".into(),
            Box::new(|| {
                let mut c = Command::new("perf");
                c.args(["record", "-q", "-F", "99", "-g", "-o"])
                    .arg(tmp.join("perf-churn.data"))
                    .arg("--")
                    .arg(&app)
                    .args(spawn);
                c
            }),
        ));
    }
    if bpftrace_ok {
        let cmdline = format!("{} {}", app.display(), spawn.join(" "));
        variants.push((
            "bpftrace fork/exec/exit counts".into(),
            Box::new(move || {
                let mut c = Command::new("bpftrace");
                c.args(["-q", "-e", BPFTRACE_LIFECYCLE, "-c", &cmdline]);
                c
            }),
        ));
    }
    let mut target_ms = vec![Vec::new(); variants.len()];
    let mut wall_ms = vec![Vec::new(); variants.len()];
    let mut mp = None;
    for _ in 0..runs {
        for (i, (name, cmd)) in variants.iter().enumerate() {
            let began = std::time::Instant::now();
            let text = output(&mut cmd())?;
            wall_ms[i].push(began.elapsed().as_secs_f64() * 1e3);
            target_ms[i].push(line_figure(&text, "elapsed_ms")?);
            if name.starts_with("modelprobe") {
                mp = Some(recorded(&tmp.join("mp-churn"))?);
            }
        }
    }
    let base = target_ms[0].clone();
    for (i, (name, _)) in variants.iter().enumerate() {
        let ratios: Vec<f64> = target_ms[i].iter().zip(&base).map(|(t, b)| t / b).collect();
        let lo = ratios.iter().copied().fold(f64::MAX, f64::min);
        let hi = ratios.iter().copied().fold(f64::MIN, f64::max);
        let r = mp.filter(|_| name.starts_with("modelprobe"));
        report.row(vec![
            json!(name),
            json!(round1(median(target_ms[i].clone()))),
            json!(format!("{:+.2}%", (median(ratios) - 1.0) * 100.0)),
            json!(format!("{lo:.3}..{hi:.3}")),
            json!(round1(median(wall_ms[i].clone()))),
            json!(r.map_or("-".into(), |r| r.3.to_string())),
            json!(r.map_or("-".into(), |r| format!(
                "{:.1}%",
                100.0 * r.4 / r.5.max(1e-9)
            ))),
        ]);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
