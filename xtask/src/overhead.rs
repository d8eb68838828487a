//! `cargo xtask overhead`: what profiling costs the target, measured in one run against its
//! own baseline. The workload does a fixed amount of work on every CPU and reports its own
//! elapsed time; runs alternate baseline / profiled so machine drift hits both alike.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{build_ebpf, cargo, is_root, say, setup};

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

pub fn run(root: &Path, runs: usize, rounds: u64) -> Result<()> {
    if !is_root() {
        bail!("measuring overhead attaches BPF programs and needs root: run `sudo -E cargo xtask overhead`");
    }
    setup()?;
    build_ebpf(root)?;
    cargo(&[
        "build",
        "--release",
        "-p",
        "modelprobe",
        "-p",
        "modelprobe-tests",
        "--bins",
    ])?;
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
