//! `cargo xtask bench`: what profiling costs the target, each figure a ratio against a baseline
//! measured in the same run, beside the tools users compare with (`perf record`, bpftrace); and
//! how it holds under load (`load`: a switch flood, process churn); Python stacks beside
//! py-spy (`python`); and LLM calls read from TLS beside bpftrace's uprobes (`llm`).
//! Workloads do a fixed amount of work and report their own elapsed time; runs alternate
//! between the variants so machine drift hits all alike. Results go to
//! `bench/results/<date>.json` and `.md` (`<date>-<part>` for `--only`), and to stdout.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::{build_release_with_fixtures, is_root, results::Report, say};

mod agent;
mod calls;
mod cpu;
mod debug;
mod llm;
mod load;
mod memory;
mod postproc;
mod pyprobe;
mod python;
mod unwind;

use calls::{cuda_cost, event_rate, probe_cost};
use cpu::cpu_slowdown;
use postproc::postproc as post_processing;

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
        bail!("benchmarks attach BPF programs and need root: run `sudo -E cargo xtask bench`");
    }
    const SECTIONS: [&str; 14] = [
        "cpu", "unwind", "load", "python", "llm", "probe", "cuda", "events", "postproc", "agent",
        "debug", "memory", "pyprobe", "fuzz",
    ];
    if let Some(other) = only.filter(|o| !SECTIONS.contains(o)) {
        bail!("--only takes one of {}, not {other:?}", SECTIONS.join(", "));
    }
    build_release_with_fixtures(root)?;
    ensure_comparison_tools();
    let started = std::time::Instant::now();
    let mut report = Report::default();
    if matches!(only, None | Some("cpu")) {
        cpu_slowdown(root, runs, rounds, &mut report)?;
    }
    if matches!(only, None | Some("unwind")) {
        unwind::table_cost(root, &mut report)?;
    }
    if matches!(only, None | Some("load")) {
        load::load(root, runs, &mut report)?;
    }
    if matches!(only, None | Some("python")) {
        python::python(root, runs, &mut report)?;
    }
    if matches!(only, None | Some("llm")) {
        llm::llm(root, runs, &mut report)?;
    }
    if matches!(only, None | Some("probe")) {
        probe_cost(root, runs, &mut report)?;
    }
    if matches!(only, None | Some("cuda")) {
        cuda_cost(root, runs, &mut report)?;
    }
    if matches!(only, None | Some("events")) {
        event_rate(root, &mut report)?;
    }
    if matches!(only, None | Some("postproc")) {
        post_processing(root, &mut report)?;
    }
    if matches!(only, None | Some("agent")) {
        agent::agent(root, &mut report)?;
    }
    if matches!(only, None | Some("debug")) {
        debug::debug(root, &mut report)?;
    }
    if matches!(only, None | Some("memory")) {
        memory::memory(root, runs, &mut report)?;
    }
    if matches!(only, None | Some("pyprobe")) {
        pyprobe::pyprobe(root, runs, &mut report)?;
    }
    if matches!(only, None | Some("fuzz")) {
        crate::fuzz::bench(root, &mut report)?;
    }
    let md = report.markdown();
    println!("{md}");
    let dir = root.join("bench/results");
    std::fs::create_dir_all(&dir)?;
    // A partial run (--only) never overwrites the day's full results.
    let stem = match only {
        Some(part) => dir.join(format!("{}-{part}", today())),
        None => dir.join(today()),
    };
    let doc = json!({
        "date": today(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "runs": runs,
        "duration_s": started.elapsed().as_secs(),
        "sections": report.json(),
    });
    std::fs::write(
        stem.with_extension("json"),
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    std::fs::write(stem.with_extension("md"), md)?;
    say(&format!("wrote {}.json and .md", stem.display()));
    Ok(())
}

/// `perf` and `bpftrace`, the tools users compare against: installed with apt when missing.
fn ensure_comparison_tools() {
    for (tool, package) in [("perf", "linux-perf"), ("bpftrace", "bpftrace")] {
        if have(tool) {
            continue;
        }
        say(&format!("installing {package} to compare against {tool}"));
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            say(&format!(
                "warning: {package} could not be installed; its rows are left out"
            ));
        }
    }
}

/// Today's UTC date, `YYYY-MM-DD` (civil-from-days, Howard Hinnant's algorithm).
fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A variant's figures: median elapsed ms, median ratio to the baseline and its range, peak
/// RSS in MiB.
struct Compared {
    name: String,
    median_ms: f64,
    ratio: f64,
    lo: f64,
    hi: f64,
    rss_mib: f64,
}

/// One variant of a comparison: a name and the command that runs the workload under it.
type Variant<'a> = (String, Box<dyn Fn() -> Command + 'a>);

/// Runs every variant `runs` times, interleaved; returns per variant the median elapsed ms,
/// the median and range of its ratio to variant 0 (the baseline) pair by pair, and peak RSS.
fn compare(variants: &[Variant<'_>], runs: usize) -> Result<Vec<Compared>> {
    let mut elapsed = vec![Vec::new(); variants.len()];
    let mut rss = vec![0i64; variants.len()];
    for _ in 0..runs {
        for (i, (_, cmd)) in variants.iter().enumerate() {
            let r = measure(&mut cmd())?;
            elapsed[i].push(r.elapsed_ms);
            rss[i] = rss[i].max(r.max_rss_kb);
        }
    }
    let base = elapsed[0].clone();
    Ok(variants
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let ratios: Vec<f64> = elapsed[i].iter().zip(&base).map(|(e, b)| e / b).collect();
            Compared {
                name: name.clone(),
                median_ms: median(elapsed[i].clone()),
                ratio: median(ratios.clone()),
                lo: ratios.iter().copied().fold(f64::MAX, f64::min),
                hi: ratios.iter().copied().fold(f64::MIN, f64::max),
                rss_mib: rss[i] as f64 / 1024.0,
            }
        })
        .collect())
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Runs `cmd` and returns the workload's `elapsed_ms` (the command may be a wrapper).
fn elapsed(cmd: &mut Command) -> Result<f64> {
    Ok(measure(cmd)?.elapsed_ms)
}
