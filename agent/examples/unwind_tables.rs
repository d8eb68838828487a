//! Unwind-table build cost, run by `cargo xtask bench`: compiles the CFI of each ELF file named
//! (or, with none, of the largest shared libraries under /usr/lib and the toolchains) into the
//! rows the BPF walk uses, and prints one JSON object per file: rows, kernel bytes, build time,
//! and the agent's peak RSS after it.
//!
//! Usage: `unwind_tables [FILE...]`
use std::{path::PathBuf, time::Instant};

use modelprobe::unwind::compile;
use serde_json::json;

/// The largest `.so` files under the usual roots, biggest first.
fn largest_libraries(n: usize) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs: Vec<PathBuf> = [
        "/usr/lib",
        "/root/.rustup/toolchains",
        "/root/.pyenv/versions",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let path = e.path();
            if ft.is_dir() {
                dirs.push(path);
            } else if ft.is_file() && path.to_string_lossy().contains(".so") {
                if let Ok(md) = e.metadata() {
                    found.push((md.len(), path));
                }
            }
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().take(n).map(|(_, p)| p).collect()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let mut files: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if files.is_empty() {
        files = largest_libraries(3);
    }
    for path in files {
        let Ok(file) = std::fs::File::open(&path) else {
            eprintln!("{}: cannot open", path.display());
            continue;
        };
        let size = file.metadata().map_or(0, |m| m.len());
        // SAFETY: a read-only private mapping of a file nothing here writes.
        let data = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");
        let began = Instant::now();
        let result = compile::compile(&data);
        let ms = began.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(t) => println!(
                "{}",
                json!({
                    "file": path.display().to_string(),
                    "file_mib": size as f64 / (1 << 20) as f64,
                    "rows": t.rows.len(),
                    "kernel_mib": (t.rows.len() * 16) as f64 / (1 << 20) as f64,
                    "build_ms": ms,
                    "peak_rss_mib": peak_rss_kib() as f64 / 1024.0,
                })
            ),
            Err(e) => eprintln!("{}: {e}", path.display()),
        }
    }
}
