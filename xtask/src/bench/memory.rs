//! What `--memory` costs: per `mmap`/`munmap` pair and per page fault (beside bpftrace's
//! tracepoint with a user stack and `perf record -e page-faults -g` at the same period), per
//! `malloc`/`free` pair with `--memory=malloc` (beside a bpftrace uprobe+uretprobe pair on
//! `malloc`), the slowdown of an allocation-heavy program in the default mode (target 2%), and
//! the agent's peak RSS on it.
use std::{path::Path, process::Command};

use anyhow::Result;
use serde_json::{json, Value};

use super::*;

/// `libc.so.6` as the fixture maps it, for bpftrace's uprobes.
fn libc_path() -> Option<String> {
    let out = Command::new("ldd").arg("/bin/true").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("libc.so.6"))
        .and_then(|l| l.split("=>").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
}

pub(super) fn memory(root: &Path, runs: usize, report: &mut Report) -> Result<()> {
    let modelprobe = root.join("target/release/modelprobe");
    let app = root.join("target/release/fixtures/mp-mem-app");
    let a = app.display().to_string();
    let out = std::env::temp_dir().join("modelprobe-bench-memory");
    let bpftrace = have("bpftrace");
    let perf = have("perf");
    let profiled = |mode: &str, what: &str, n: &str| -> Result<Run> {
        measure(
            Command::new(&modelprobe)
                .args(["run", "-q", "--no-logs", mode, "-o"])
                .arg(&out)
                .arg("--")
                .arg(&app)
                .args([what, n]),
        )
    };

    // Per mmap/munmap pair.
    let (n_maps, n) = (20_000u64, "20000");
    say("memory: cost per mmap/munmap pair");
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("no profiler", vec![]),
        (
            "modelprobe run --memory (stack per map, record per unmap)",
            vec![],
        ),
    ];
    if bpftrace {
        rows.push(("bpftrace sys_exit_mmap @[ustack] = count()", vec![]));
    }
    for _ in 0..runs {
        rows[0]
            .1
            .push(elapsed(Command::new(&app).args(["bench-mmap", n]))?);
        rows[1]
            .1
            .push(profiled("--memory", "bench-mmap", n)?.elapsed_ms);
        if bpftrace {
            rows[2].1.push(elapsed(Command::new("bpftrace").args([
                "-q",
                "-e",
                "tracepoint:syscalls:sys_exit_mmap /comm == \"mp-mem-app\"/ { @[ustack] = count(); }",
                "-c",
                &format!("{a} bench-mmap {n}"),
            ]))?);
        }
    }
    super::calls::cost_table(
        report,
        "memory_mmap_cost",
        &format!("Cost per mmap/munmap pair of 64 KiB ({n_maps} pairs, median of {runs})"),
        rows,
        n_maps,
    );

    // Per page fault.
    let (n_faults, n) = (400_000u64, "400000");
    say("memory: cost per page fault");
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("no profiler", vec![]),
        ("modelprobe run --memory (1 fault in 64 sampled)", vec![]),
    ];
    if perf {
        rows.push(("perf record -e page-faults -c 64 -g", vec![]));
    }
    for _ in 0..runs {
        rows[0]
            .1
            .push(elapsed(Command::new(&app).args(["bench-faults", n]))?);
        rows[1]
            .1
            .push(profiled("--memory", "bench-faults", n)?.elapsed_ms);
        if perf {
            rows[2].1.push(elapsed(
                Command::new("perf")
                    .args(["record", "-q", "-e", "page-faults", "-c", "64", "-g", "-o"])
                    .arg(out.with_extension("perf.data"))
                    .arg("--")
                    .arg(&app)
                    .args(["bench-faults", n]),
            )?);
        }
    }
    super::calls::cost_table(
        report,
        "memory_fault_cost",
        &format!("Cost per page fault ({n_faults} pages first touched, median of {runs})"),
        rows,
        n_faults,
    );

    // Per malloc/free pair.
    let (n_mallocs, n) = (1_000_000u64, "1000000");
    say("memory: cost per malloc/free pair");
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("no profiler", vec![]),
        ("modelprobe run --memory (syscalls only)", vec![]),
        (
            "modelprobe run --memory=malloc (1 sample per 512 KiB)",
            vec![],
        ),
    ];
    let libc = libc_path().filter(|_| bpftrace);
    if libc.is_some() {
        rows.push(("bpftrace uprobe+uretprobe on malloc", vec![]));
    }
    for _ in 0..runs {
        rows[0]
            .1
            .push(elapsed(Command::new(&app).args(["bench-malloc", n]))?);
        rows[1]
            .1
            .push(profiled("--memory", "bench-malloc", n)?.elapsed_ms);
        rows[2]
            .1
            .push(profiled("--memory=malloc", "bench-malloc", n)?.elapsed_ms);
        if let Some(libc) = &libc {
            rows[3].1.push(elapsed(Command::new("bpftrace").args([
                "-q",
                "-e",
                &format!(
                    "uprobe:{libc}:malloc /pid == cpid/ {{ @s[tid] = arg0; }} uretprobe:{libc}:malloc /pid == cpid/ {{ @b[retval] = @s[tid]; delete(@s[tid]); }}"
                ),
                "-c",
                &format!("{a} bench-malloc {n}"),
            ]))?);
        }
    }
    super::calls::cost_table(
        report,
        "memory_malloc_cost",
        &format!("Cost per malloc/free pair ({n_mallocs} pairs, median of {runs})"),
        rows,
        n_mallocs,
    );

    // Slowdown of an allocation-heavy program, and the agent's memory on it.
    let n = "3000";
    say("memory: slowdown of an allocation-heavy program");
    let mut base = Vec::new();
    let mut plain = Vec::new();
    let mut memory = Vec::new();
    let mut malloc = Vec::new();
    let mut rss_kib = 0i64;
    for _ in 0..runs {
        base.push(elapsed(Command::new(&app).args(["bench-mix", n]))?);
        plain.push(elapsed(
            Command::new(&modelprobe)
                .args(["run", "-q", "--no-logs", "-o"])
                .arg(&out)
                .arg("--")
                .arg(&app)
                .args(["bench-mix", n]),
        )?);
        let m = profiled("--memory", "bench-mix", n)?;
        rss_kib = rss_kib.max(m.max_rss_kb);
        memory.push(m.elapsed_ms);
        malloc.push(profiled("--memory=malloc", "bench-mix", n)?.elapsed_ms);
    }
    let b = median(base);
    report.table(
        "memory_slowdown",
        &format!(
            "Allocation-heavy program ({n} rounds of 1000 malloc/free pairs and a 1 MiB block), median of {runs}"
        ),
        &["variant", "elapsed ms", "slowdown vs no profiler"],
    );
    let mut row = |name: &str, v: f64| {
        report.row(vec![
            json!(name),
            json!(round1(v)),
            json!(format!("{:+.1}%", (v / b - 1.0) * 100.0)),
        ]);
    };
    row("no profiler", b);
    row("modelprobe run (CPU samples, no --memory)", median(plain));
    row("modelprobe run --memory", median(memory));
    row("modelprobe run --memory=malloc", median(malloc));
    report.table(
        "memory_agent_rss",
        "The agent's peak RSS recording the allocation-heavy program with --memory",
        &["peak RSS MiB"],
    );
    report.row(vec![Value::from(round1(rss_kib as f64 / 1024.0))]);
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_file(out.with_extension("perf.data"));
    Ok(())
}
