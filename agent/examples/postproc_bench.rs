//! Post-processing throughput, run by `cargo xtask bench`: symbolization (frames/s, cold and
//! warm), flame graph rendering of 1,000,000 samples, trace.json and view.html writing of
//! 1,000,000 spans. Prints one JSON object per measurement on stdout and leaves the folded
//! file it rendered in OUT_DIR, so the bench can time inferno's own CLI on the same input.
//!
//! Usage: `postproc_bench OUT_DIR [SAMPLES] [SPANS]`
use std::{collections::HashMap, path::PathBuf, time::Instant};

use modelprobe::{
    export::{folded_stacks, Exporter, FlameGraph, Timeline},
    procmaps::MapsRegistry,
    recording::{Frame, FrameKind, Meta, ProbeInfo, Recording, Sample, SampleKind, Span},
    symbolize::{symbolize_stacks, RawStack},
};
use serde_json::json;

/// Addresses spread over every executable file mapping of this process (this binary, with
/// DWARF, and its shared libraries): realistic lookups, none of them repeated.
fn code_addresses(count: usize) -> Vec<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("reading /proc/self/maps");
    let ranges: Vec<(u64, u64)> = maps
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|p| p.contains('x')))
        .filter(|l| {
            l.split_whitespace()
                .nth(5)
                .is_some_and(|p| p.starts_with('/'))
        })
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect();
    let total: u64 = ranges.iter().map(|(a, b)| b - a).sum();
    let step = (total / count as u64).max(1);
    let mut out = Vec::with_capacity(count);
    for (a, b) in ranges {
        let mut x = a;
        while x < b && out.len() < count {
            out.push(x);
            x += step;
        }
    }
    out
}

fn symbolization(frames: usize) {
    let pid = std::process::id();
    let mut maps = MapsRegistry::default();
    maps.capture(pid).expect("own maps");
    let addrs = code_addresses(frames);
    // Leaf-only stacks of 32 frames: every address is looked up as given (no return-address
    // adjustment), as the innermost frame of a sample is.
    let stacks: Vec<RawStack> = addrs
        .chunks(32)
        .map(|c| RawStack {
            pid,
            kernel: Vec::new(),
            user: c.to_vec(),
            python: Vec::new(),
        })
        .collect();
    for pass in ["cold", "warm"] {
        let t = Instant::now();
        let out = symbolize_stacks(&stacks, &maps, &HashMap::new());
        let s = t.elapsed().as_secs_f64();
        let named = out
            .frames
            .iter()
            .filter(|f| f.kind == FrameKind::User)
            .count();
        println!(
            "{}",
            json!({"what": "symbolize", "pass": pass, "frames": addrs.len(), "seconds": s,
                   "frames_per_s": addrs.len() as f64 / s, "distinct_named_frames": named})
        );
    }
}

/// A recording with `samples` CPU samples over 5,000 distinct stacks of depth 8..40, and
/// `spans` spans over 8 threads.
fn synthetic(samples: usize, spans: usize) -> Recording {
    let mut rec = Recording::new(Meta {
        mode: "run".into(),
        command: "synthetic".into(),
        frequency_hz: 999,
        start_ns: 1_000_000_000,
        end_ns: 1_000_000_000 + 60_000_000_000,
        cpus: 8,
        ..Meta::default()
    });
    for i in 0..2_000 {
        rec.frames.push(Frame {
            name: format!(
                "namespace::module_{}::function_{i}(int, float const*)",
                i % 37
            ),
            module: Some("libsynthetic.so".into()),
            file: Some(format!("src/file_{}.cc", i % 97)),
            line: Some(i as u32),
            kind: FrameKind::User,
            inlined: false,
        });
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..5_000 {
        let depth = 8 + (rand() % 33) as usize;
        let stack: Vec<u32> = (0..depth)
            .map(|d| ((rand() % 50) as u32) * 40 + d as u32)
            .collect();
        rec.stacks.push(stack);
    }
    for i in 0..samples {
        rec.samples.push(Sample {
            kind: SampleKind::Cpu,
            time_ns: rec.meta.start_ns + i as u64 * 60_000,
            pid: 1,
            tid: 1 + (i % 8) as u32,
            stack: (rand() % 5_000) as u32,
            weight: 1,
            blocks: None,
        });
    }
    for f in [
        "cudaLaunchKernel",
        "cudaMemcpy",
        "llama_decode",
        "handle_request",
    ] {
        rec.probes.push(ProbeInfo {
            spec: format!("lib.so:{f}"),
            path: "/usr/lib/lib.so".into(),
            function: f.into(),
            args: 2,
            pack: None,
        });
    }
    for i in 0..spans {
        let start = rec.meta.start_ns + i as u64 * 50_000;
        rec.spans.push(Span {
            probe: (i % 4) as u32,
            pid: 1,
            tid: 1 + (i % 8) as u32,
            start_ns: start,
            end_ns: start + 1_000 + rand() % 40_000,
            depth: 0,
            args: vec![i as u64, 4096],
            ret: Some(0),
            attrs: Default::default(),
            stack: None,
        });
    }
    rec
}

/// This process's resident memory now and its peak, in KiB (`/proc/self/status`).
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .expect("usage: postproc_bench OUT_DIR [SAMPLES] [SPANS]"),
    );
    let samples: usize = args
        .next()
        .map_or(1_000_000, |s| s.parse().expect("SAMPLES"));
    let spans: usize = args.next().map_or(1_000_000, |s| s.parse().expect("SPANS"));
    std::fs::create_dir_all(&out).expect("creating OUT_DIR");

    symbolization(100_000);

    let rec = synthetic(samples, spans);
    let t = Instant::now();
    let folded = folded_stacks(&rec, SampleKind::Cpu);
    let fold_s = t.elapsed().as_secs_f64();
    let text: String = folded.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    std::fs::write(out.join("stacks.folded"), text).expect("writing stacks.folded");
    let t = Instant::now();
    FlameGraph.export(&rec, &out).expect("flame graph");
    let svg_s = t.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"what": "flamegraph", "samples": samples, "distinct_stacks": folded.len(),
               "fold_seconds": fold_s, "seconds": svg_s})
    );

    let t = Instant::now();
    Timeline.export(&rec, &out).expect("timeline");
    let s = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(out.join("trace.json")).map_or(0, |m| m.len());
    println!(
        "{}",
        json!({"what": "timeline", "spans": spans, "samples": samples, "seconds": s,
               "spans_per_s": spans as f64 / s, "bytes": bytes})
    );

    // The formats other tools read, on the same recording: time and size beside trace.json.
    let otlp = modelprobe::export::Otlp::default();
    let formats: [&dyn Exporter; 4] = [
        &modelprobe::export::Perfetto,
        &otlp,
        &modelprobe::export::Pprof,
        &modelprobe::export::Speedscope,
    ];
    for exporter in formats {
        let t = Instant::now();
        let files = exporter.export(&rec, &out).expect("export");
        let s = t.elapsed().as_secs_f64();
        let bytes: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .sum();
        let (rss, peak) = rss_kib();
        println!(
            "{}",
            json!({"what": "export", "format": exporter.name(), "spans": spans,
                   "samples": samples, "seconds": s, "bytes": bytes, "files": files.len(),
                   "rss_kib": rss, "peak_rss_kib": peak})
        );
    }

    let t = Instant::now();
    let report = modelprobe::report::build(&rec, 50).to_json();
    let stats = modelprobe::view::write_html(&rec, &report, &out.join("view.html")).expect("view");
    let s = t.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"what": "view", "spans": spans, "samples": samples, "seconds": s,
               "bytes": stats.bytes})
    );
}
