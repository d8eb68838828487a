//! `cargo xtask bench`: what profiling costs the target, each figure a ratio against a baseline
//! measured in the same run, beside the tools users compare with (`perf record`, bpftrace).
//! Workloads do a fixed amount of work and report their own elapsed time; runs alternate
//! between the variants so machine drift hits all alike. Results go to
//! `bench/results/<date>.json` and `.md` (`<date>-<part>` for `--only`), and to stdout.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

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
        bail!("benchmarks attach BPF programs and need root: run `sudo -E cargo xtask bench`");
    }
    const SECTIONS: [&str; 6] = ["cpu", "probe", "cuda", "events", "postproc", "fuzz"];
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
        postproc(root, &mut report)?;
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

/// Tables of results, for the terminal, Markdown and JSON alike.
#[derive(Default)]
pub(crate) struct Report {
    sections: Vec<Section>,
}

/// One table.
struct Section {
    id: String,
    title: String,
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

impl Report {
    pub(crate) fn table(&mut self, id: &str, title: &str, columns: &[&str]) {
        if self.sections.last().is_some_and(|s| s.id == id) {
            return;
        }
        self.sections.push(Section {
            id: id.into(),
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        });
    }

    pub(crate) fn row(&mut self, row: Vec<Value>) {
        self.sections
            .last_mut()
            .expect("a table first")
            .rows
            .push(row);
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        for Section {
            title,
            columns: cols,
            rows,
            ..
        } in &self.sections
        {
            out.push_str(&format!(
                "\n### {title}\n\n| {} |\n|{}\n",
                cols.join(" | "),
                "---|".repeat(cols.len())
            ));
            for r in rows {
                let cells: Vec<String> = r
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect();
                out.push_str(&format!("| {} |\n", cells.join(" | ")));
            }
        }
        out
    }

    fn json(&self) -> Value {
        Value::Array(
            self.sections
                .iter()
                .map(
                    |t| json!({"id": t.id, "title": t.title, "columns": t.columns, "rows": t.rows}),
                )
                .collect(),
        )
    }
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

/// Slowdown of a CPU-bound multi-threaded workload under sampling at 99 and 999 Hz: modelprobe,
/// `perf record -g`, bpftrace `profile` with user stacks, against no profiler.
fn cpu_slowdown(root: &Path, runs: usize, rounds: u64, report: &mut Report) -> Result<()> {
    let agent = root.join("target/release/modelprobe");
    let workload = root.join("target/release/mp-workload");
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let rounds = rounds.to_string();
    let work: Vec<String> = ["--work", &rounds, "--threads", &threads]
        .map(String::from)
        .to_vec();
    let tmp = std::env::temp_dir().join("modelprobe-bench");
    std::fs::create_dir_all(&tmp)?;
    say(&format!(
        "CPU sampling: {runs} interleaved runs per variant, {threads} threads x {rounds} rounds"
    ));
    report.table(
        "cpu_sampling",
        "Target slowdown under CPU sampling (fixed work on every CPU)",
        &[
            "variant",
            "elapsed ms (median)",
            "slowdown (median of pair ratios)",
            "ratio range",
            "peak RSS of the run",
        ],
    );
    let mut agent_cost = Vec::new();
    for freq in ["99", "999"] {
        let mut variants: Vec<Variant<'_>> = vec![(
            "no profiler".into(),
            Box::new(|| {
                let mut c = Command::new(&workload);
                c.args(&work);
                c
            }),
        )];
        variants.push((
            format!("modelprobe run --freq {freq}"),
            Box::new(|| {
                let mut c = Command::new(&agent);
                c.args(["run", "-q", "--no-logs", "--freq", freq, "-o"])
                    .arg(tmp.join("mp"))
                    .arg("--")
                    .arg(&workload)
                    .args(&work);
                c
            }),
        ));
        if have("perf") {
            variants.push((
                format!("perf record -e cpu-clock -F {freq} -g"),
                Box::new(|| {
                    let mut c = Command::new("perf");
                    c.args(["record", "-q", "-e", "cpu-clock", "-F", freq, "-g", "-o"])
                        .arg(tmp.join("perf.data"))
                        .arg("--")
                        .arg(&workload)
                        .args(&work);
                    c
                }),
            ));
        }
        if have("bpftrace") {
            let script = format!("profile:hz:{freq} /pid == cpid/ {{ @[ustack] = count(); }}");
            let cmdline = format!("{} {}", workload.display(), work.join(" "));
            variants.push((
                format!("bpftrace profile:hz:{freq} ustack"),
                Box::new(move || {
                    let mut c = Command::new("bpftrace");
                    c.args(["-q", "-e", &script, "-c", &cmdline]);
                    c
                }),
            ));
        }
        for Compared {
            name,
            median_ms: ms,
            ratio,
            lo,
            hi,
            rss_mib: rss,
        } in compare(&variants, runs)?
        {
            report.row(vec![
                json!(name),
                json!(round1(ms)),
                json!(format!("{:+.2}%", (ratio - 1.0) * 100.0)),
                json!(format!("{lo:.3}..{hi:.3}")),
                json!(format!("{rss:.1} MiB")),
            ]);
        }
        agent_cost.push((freq, agent_usage(&tmp.join("mp"))?));
    }
    report.table(
        "agent_cost",
        "What the agent itself used (the last modelprobe run of each frequency, from its recording)",
        &[
            "frequency",
            "recorded s",
            "agent CPU while recording",
            "% of one CPU",
            "CPU incl. symbolization",
            "peak RSS",
        ],
    );
    for (freq, (secs, rec_cpu, total_cpu, rss_kib)) in agent_cost {
        report.row(vec![
            json!(format!("{freq} Hz")),
            json!(round1(secs)),
            json!(format!("{rec_cpu:.3} s")),
            json!(format!("{:.2}%", 100.0 * rec_cpu / secs)),
            json!(format!("{total_cpu:.3} s")),
            json!(format!("{:.1} MiB", rss_kib / 1024.0)),
        ]);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// (recorded seconds, agent CPU s while recording, agent CPU s in all, peak RSS KiB) from a
/// recording's `meta`.
fn agent_usage(dir: &Path) -> Result<(f64, f64, f64, f64)> {
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("recording.json"))?)?;
    let m = &rec["meta"];
    let a = &m["agent"];
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    Ok((
        (f(&m["end_ns"]) - f(&m["start_ns"])) / 1e9,
        f(&a["recording_cpu_ns"]) / 1e9,
        f(&a["total_cpu_ns"]) / 1e9,
        f(&a["peak_rss_kib"]),
    ))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Runs `cmd` and returns the workload's `elapsed_ms` (the command may be a wrapper).
fn elapsed(cmd: &mut Command) -> Result<f64> {
    Ok(measure(cmd)?.elapsed_ms)
}

/// Cost per call of a probed function: `modelprobe --probe` (entry + return) against no probe,
/// a bpftrace uprobe counting calls, and a bpftrace uprobe + uretprobe pair (the same work).
fn probe_cost(root: &Path, runs: usize, report: &mut Report) -> Result<()> {
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
    cost_table(
        report,
        "probe_cost",
        &format!("Cost per call of a probed function ({calls} calls of a tiny function, median of {runs})"),
        rows,
        calls,
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// A per-call cost table: each variant's median elapsed ms over `calls` calls, and what it adds
/// per call over the first variant (the baseline).
fn cost_table(report: &mut Report, id: &str, title: &str, rows: Vec<(&str, Vec<f64>)>, calls: u64) {
    let base = median(rows[0].1.clone());
    report.table(id, title, &["variant", "elapsed ms", "added cost per call"]);
    for (name, v) in rows {
        let m = median(v);
        report.row(vec![
            json!(name),
            json!(round1(m)),
            json!(format!("{:.2} us", (m - base) * 1e3 / calls as f64)),
        ]);
    }
}

/// The highest stdout/stderr line rate the agent records with zero loss (1000-byte lines,
/// 2 s at each rate), and the loss it reports above that.
fn event_rate(root: &Path, report: &mut Report) -> Result<()> {
    let agent = root.join("target/release/modelprobe");
    let workload = root.join("target/release/mp-workload");
    let out = std::env::temp_dir().join("modelprobe-event-rate");
    report.table(
        "event_rate",
        "Event ingestion: stdout lines of 1000 bytes, 2 s per rate",
        &[
            "lines/s offered",
            "lines/s achieved",
            "recorded",
            "lost",
            "lost %",
        ],
    );
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
        report.row(vec![
            json!(rate),
            json!((lines as f64 / (elapsed_ms / 1e3)).round()),
            json!(recorded),
            json!(lost),
            json!(format!("{:.2}%", 100.0 * lost as f64 / lines as f64)),
        ]);
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// Cost per CUDA API call with the CUDA pack attached: 100,000 `cudaLaunchKernel` calls into
/// the stand-in runtime (the same symbols as libcudart), against no profiler and a bpftrace
/// uprobe + uretprobe pair on the same function; without GPU timings (no launch stacks), and
/// with them through the stand-in CUPTI (launch stack, the library's API callback and its
/// activity records: every launch must come back as a kernel).
fn cuda_cost(root: &Path, runs: usize, report: &mut Report) -> Result<()> {
    let agent = root.join("target/release/modelprobe");
    let fixtures = root.join("target/release/fixtures/cuda");
    let app = root.join("target/release/fixtures/mp-cuda-app");
    let lib = fixtures.join("libcudart.so.12");
    let calls: u64 = 100_000;
    let n = calls.to_string();
    let out = std::env::temp_dir().join("modelprobe-cuda-cost");
    let with_lib = |c: &mut Command| {
        c.env("LD_LIBRARY_PATH", &fixtures)
            .env("MP_CUDA_NO_PAUSE", "1");
    };
    let cupti = root.join("target/release/examples/libcupti_standin.so");
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("no profiler", vec![]),
        ("modelprobe run --no-gpu-timings (CUDA pack)", vec![]),
        (
            "modelprobe run (CUDA pack + launch stacks, no CUPTI)",
            vec![],
        ),
        (
            "modelprobe run (CUDA pack + GPU timings, stand-in CUPTI)",
            vec![],
        ),
    ];
    let bpftrace = have("bpftrace");
    if bpftrace {
        rows.push(("bpftrace uprobe+uretprobe cudaLaunchKernel", vec![]));
    }
    say(&format!(
        "CUDA pack: {calls} cudaLaunchKernel calls, {runs} runs per variant"
    ));
    for _ in 0..runs {
        let mut c = Command::new(&app);
        c.args(["--launches", &n]);
        with_lib(&mut c);
        rows[0].1.push(elapsed(&mut c)?);
        let mut c = Command::new(&agent);
        c.args(["run", "-q", "--no-logs", "--no-gpu-timings", "-o"])
            .arg(&out)
            .arg("--")
            .arg(&app)
            .args(["--launches", &n]);
        with_lib(&mut c);
        rows[1].1.push(elapsed(&mut c)?);
        let mut c = Command::new(&agent);
        c.args(["run", "-q", "--no-logs", "-o"])
            .arg(&out)
            .arg("--")
            .arg(&app)
            .args(["--launches", &n])
            .env_remove("MODELPROBE_CUPTI");
        with_lib(&mut c);
        rows[2].1.push(elapsed(&mut c)?);
        let mut c = Command::new(&agent);
        c.args(["run", "-q", "--no-logs", "-o"])
            .arg(&out)
            .arg("--")
            .arg(&app)
            .args(["--launches", &n])
            .env("MODELPROBE_CUPTI", &cupti)
            // The GPU library appears at cuInit: let the agent connect before the calls.
            .env("MP_CUDA_SETTLE_MS", "1500");
        with_lib(&mut c);
        rows[3].1.push(elapsed(&mut c)?);
        let kernels = {
            let rec: Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("recording.json"))?)?;
            rec["gpu"]["ops"].as_array().map_or(0, |o| {
                o.iter().filter(|o| o["kind"] == "kernel").count() as u64
            })
        };
        if kernels != calls {
            bail!("GPU timings returned {kernels} kernels for {calls} launches");
        }
        let spans = {
            let rec: Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("recording.json"))?)?;
            rec["spans"].as_array().map_or(0, |s| s.len() as u64)
        };
        if spans < calls {
            bail!("the CUDA pack recorded {spans} spans for {calls} launches");
        }
        if bpftrace {
            let l = lib.display();
            let mut c = Command::new("bpftrace");
            c.args([
                "-q",
                "-e",
                &format!(
                    "uprobe:{l}:cudaLaunchKernel {{ @s[tid] = nsecs; }} uretprobe:{l}:cudaLaunchKernel {{ @d = hist(nsecs - @s[tid]); }}"
                ),
                "-c",
                &format!("{} --launches {n}", app.display()),
            ]);
            with_lib(&mut c);
            rows[4].1.push(elapsed(&mut c)?);
        }
    }
    cost_table(
        report,
        "cuda_cost",
        &format!(
            "Cost per CUDA API call ({calls} cudaLaunchKernel calls into the stand-in runtime, median of {runs})"
        ),
        rows,
        calls,
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// Post-processing throughput (the `postproc_bench` example) and inferno's own CLI rendering
/// the same folded file.
fn postproc(root: &Path, report: &mut Report) -> Result<()> {
    crate::cargo(&[
        "build",
        "--release",
        "-p",
        "modelprobe",
        "--example",
        "postproc_bench",
    ])?;
    let out = std::env::temp_dir().join("modelprobe-postproc");
    say("post-processing: symbolization, 1M-sample flame graph, 1M-span timeline and view");
    let run = Command::new(root.join("target/release/examples/postproc_bench"))
        .arg(&out)
        .stderr(Stdio::inherit())
        .output()?;
    if !run.status.success() {
        bail!("postproc_bench failed: {}", run.status);
    }
    let results: Vec<Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let get = |what: &str, pass: Option<&str>| {
        results
            .iter()
            .find(|r| r["what"] == what && pass.is_none_or(|p| r["pass"] == p))
            .cloned()
            .unwrap_or(Value::Null)
    };
    report.table(
        "postproc",
        "Post-processing throughput",
        &["what", "input", "time", "rate"],
    );
    for pass in ["cold", "warm"] {
        let r = get("symbolize", Some(pass));
        report.row(vec![
            json!(format!(
                "symbolization, {pass} (new symbolizer, as each recording)"
            )),
            json!(format!(
                "{} addresses in this binary (DWARF) and its libraries",
                r["frames"]
            )),
            json!(format!("{:.2} s", r["seconds"].as_f64().unwrap_or(0.0))),
            json!(format!(
                "{:.0} frames/s",
                r["frames_per_s"].as_f64().unwrap_or(0.0)
            )),
        ]);
    }
    let fg = get("flamegraph", None);
    let samples = fg["samples"].as_u64().unwrap_or(0);
    report.row(vec![
        json!("flame graph: modelprobe (fold + inferno library render)"),
        json!(format!(
            "{samples} samples, {} distinct stacks",
            fg["distinct_stacks"]
        )),
        json!(format!("{:.2} s", fg["seconds"].as_f64().unwrap_or(0.0))),
        json!(format!(
            "{:.0} samples/s",
            samples as f64 / fg["seconds"].as_f64().unwrap_or(1.0)
        )),
    ]);
    match ensure_inferno() {
        Some(inferno) => {
            let svg = std::fs::File::create(out.join("inferno.svg"))?;
            let t = std::time::Instant::now();
            let ok = Command::new(&inferno)
                .arg(out.join("stacks.folded"))
                .stdout(svg)
                .status()?
                .success();
            let s = t.elapsed().as_secs_f64();
            if !ok {
                bail!("inferno-flamegraph failed");
            }
            report.row(vec![
                json!("flame graph: inferno-flamegraph CLI on the same folded file"),
                json!(format!(
                    "{samples} samples, {} distinct stacks",
                    fg["distinct_stacks"]
                )),
                json!(format!("{s:.2} s")),
                json!(format!("{:.0} samples/s", samples as f64 / s)),
            ]);
        }
        None => say("warning: inferno-flamegraph could not be installed; its row is left out"),
    }
    for (what, label) in [
        (
            "timeline",
            "timeline trace.json (spans + CPU samples with stacks)",
        ),
        ("view", "view.html (self-contained viewer)"),
    ] {
        let r = get(what, None);
        let spans = r["spans"].as_u64().unwrap_or(0);
        let s = r["seconds"].as_f64().unwrap_or(0.0);
        report.row(vec![
            json!(label),
            json!(format!(
                "{spans} spans + {} samples -> {:.0} MiB",
                r["samples"],
                r["bytes"].as_f64().unwrap_or(0.0) / 1048576.0
            )),
            json!(format!("{s:.2} s")),
            json!(format!(
                "{:.0} spans+samples/s",
                (spans + r["samples"].as_u64().unwrap_or(0)) as f64 / s
            )),
        ]);
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// inferno's own `inferno-flamegraph` (same version as the library we use), installed with
/// cargo when missing.
fn ensure_inferno() -> Option<std::path::PathBuf> {
    let bin = crate::cargo_home_bin().join("inferno-flamegraph");
    if bin.exists() {
        return Some(bin);
    }
    say("installing inferno 0.12 (its CLI is the flame graph baseline)");
    crate::cargo(&["install", "inferno", "--version", "^0.12", "--locked"]).ok()?;
    bin.exists().then_some(bin)
}
