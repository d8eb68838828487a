//! Commands that read rather than record: `probes`, `report`, `analyze`, `export`, `view`,
//! `config show`.
use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use modelprobe::{
    analyze::{self, AnalyzeOptions},
    probes::ProbeSpec,
    recording::logs::Level,
    recording::Recording,
    report, Error,
};

/// `modelprobe probes`: where specs and packs would attach.
pub fn probes(pid: u32, specs: &[ProbeSpec]) -> anyhow::Result<i32> {
    modelprobe::target::check_pid(pid)?;
    let ctx = modelprobe::probes::SearchContext::for_process(pid);
    for spec in specs {
        if spec.is_python() {
            println!(
                "{}: a Python probe, set inside the interpreter when recording (its module is \
                 searched then, and again as modules load)",
                spec.text
            );
            continue;
        }
        let found = modelprobe::probes::resolve(spec, &ctx)?;
        let mapped = found
            .first()
            .is_some_and(|r| ctx.mapped.contains(&r.target_path));
        println!(
            "{}: {} function(s) in {}{}",
            spec.text,
            found.len(),
            found
                .first()
                .map(|r| r.target_path.display().to_string())
                .unwrap_or_default(),
            if mapped {
                ""
            } else {
                " (not mapped yet: attached on the file, so a later dlopen is covered)"
            }
        );
        for r in &found {
            println!("  {:#010x}  {}", r.file_offset, r.symbol);
        }
    }
    let packs = modelprobe::probes::packs::resolve_packs(&ctx);
    for pack in modelprobe::probes::packs::PACKS {
        let fns: Vec<_> = packs.iter().filter(|p| p.pack == pack.name).collect();
        match fns.first() {
            Some(first) => {
                println!(
                    "pack {}: {} function(s) in {}",
                    pack.name,
                    fns.len(),
                    first.resolved.target_path.display()
                );
                for p in &fns {
                    println!("  {:#010x}  {}", p.resolved.file_offset, p.resolved.symbol);
                }
            }
            None => println!(
                "pack {}: not found ({} absent)",
                pack.name,
                pack.libraries.join(", ")
            ),
        }
    }
    Ok(0)
}

/// `modelprobe report`.
pub fn report(path: &Path, top: usize, json: bool) -> anyhow::Result<i32> {
    let rec = Recording::read(path)?;
    let report = report::build(&rec, top);
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(0)
}

/// Options of `modelprobe analyze`, as given.
pub struct AnalyzeArgs {
    pub level: Option<Level>,
    pub min_duration: Option<Duration>,
    pub pattern: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub top: usize,
    pub json: bool,
}

/// `modelprobe analyze`.
pub fn analyze(inputs: &[PathBuf], args: AnalyzeArgs) -> anyhow::Result<i32> {
    let bad = |what: &str, e: String| Error::InvalidArgument(format!("{what}: {e}"));
    let pattern = args
        .pattern
        .as_deref()
        .map(analyze::parse_pattern)
        .transpose()?;
    let since = args
        .since
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| bad("--since", e))?;
    let until = args
        .until
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| bad("--until", e))?;
    let opts = AnalyzeOptions {
        level: args.level,
        min_duration: args.min_duration,
        pattern,
        since,
        until,
        top: args.top,
    };
    let analysis = analyze::analyze(inputs, &opts)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = if args.json {
        analysis.write_json_lines(&mut out)
    } else {
        analysis.write_text(&mut out)
    }
    .and_then(|()| out.flush());
    match written {
        // `analyze ... | head`: the reader has seen enough.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        other => other.map(|()| 0).map_err(Into::into),
    }
}

/// `modelprobe view`.
/// `modelprobe export DIR --format F`.
pub fn export(
    path: &Path,
    format: crate::args::ExportFormat,
    output: Option<PathBuf>,
    endpoint: Option<String>,
    headers: &[String],
    at: Option<std::time::Duration>,
    quiet: bool,
) -> anyhow::Result<i32> {
    use modelprobe::export::Exporter;
    if at.is_some() && format != crate::args::ExportFormat::Memory {
        anyhow::bail!("--at is for --format memory");
    }
    let endpoint = match (endpoint, format) {
        (Some(url), crate::args::ExportFormat::Otlp) => {
            let mut headers = headers.to_vec();
            headers.extend(std::env::var("OTEL_EXPORTER_OTLP_HEADERS").ok());
            Some(modelprobe::push::Endpoint::new(&url, &headers)?)
        }
        (Some(_), _) => anyhow::bail!("--endpoint is for --format otlp"),
        (None, _) => None,
    };
    let rec = Recording::read(path)?;
    if let Some(endpoint) = endpoint {
        return push_otlp(&rec, &endpoint, quiet);
    }
    let dir = output.unwrap_or_else(|| {
        if path.is_dir() {
            path.to_path_buf()
        } else {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        }
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let exporter: Box<dyn Exporter> = match format {
        crate::args::ExportFormat::Pprof => Box::new(modelprobe::export::Pprof),
        crate::args::ExportFormat::Speedscope => Box::new(modelprobe::export::Speedscope),
        crate::args::ExportFormat::Otlp => Box::new(modelprobe::export::Otlp {
            resource: otel_resource(),
        }),
        crate::args::ExportFormat::Perfetto => Box::new(modelprobe::export::Perfetto),
        crate::args::ExportFormat::Memory => Box::new(modelprobe::export::MemoryGraphs {
            at: at.map(|d| rec.meta.start_ns + d.as_nanos() as u64),
        }),
        crate::args::ExportFormat::TorchMemory => Box::new(modelprobe::export::TorchMemory),
    };
    let files = exporter.export(&rec, &dir)?;
    modelprobe::preflight::hand_over(None, &files);
    if files.is_empty() {
        anyhow::bail!(
            "{} has nothing to write as {} (no samples, spans, events or memory by stack: --memory, the CUDA packs' allocations)",
            path.display(),
            exporter.name()
        );
    }
    if !quiet {
        for f in &files {
            eprintln!("modelprobe: wrote {}", f.display());
        }
    }
    Ok(0)
}

/// The resource attributes of `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`.
pub fn otel_resource() -> Vec<(String, String)> {
    let var = |k: &str| std::env::var(k).ok();
    modelprobe::export::otlp::resource_from_env(
        var("OTEL_RESOURCE_ATTRIBUTES").as_deref(),
        var("OTEL_SERVICE_NAME").as_deref(),
    )
}

/// `export --format otlp --endpoint URL`: every request, in order, with progress.
fn push_otlp(
    rec: &Recording,
    endpoint: &modelprobe::push::Endpoint,
    quiet: bool,
) -> anyhow::Result<i32> {
    let requests = modelprobe::export::otlp::requests_with(rec, &otel_resource());
    let progress = modelprobe::progress::Progress::new(!quiet);
    let total = requests.len();
    let pushed = modelprobe::push::push(endpoint, &requests, |n, r| {
        progress.set(&format!(
            "sending {} {} ({}/{total})",
            r.items,
            r.signal.name(),
            n + 1
        ))
    })?;
    progress.done();
    if !quiet {
        let [spans, points, logs, samples] = pushed.items;
        eprintln!(
            "modelprobe: sent {spans} spans, {points} metrics, {logs} log records and {samples} profile samples to {} in {} requests ({:.1} KiB)",
            endpoint.base(),
            pushed.requests,
            pushed.bytes as f64 / 1024.0
        );
    }
    if pushed.rejected > 0 {
        anyhow::bail!(
            "the collector rejected {} items (see the warnings above)",
            pushed.rejected
        );
    }
    Ok(0)
}

pub fn view(path: &Path, output: Option<PathBuf>, quiet: bool) -> anyhow::Result<i32> {
    let started = Instant::now();
    let progress = modelprobe::progress::Progress::new(!quiet);
    progress.set(&format!("reading {}", path.display()));
    let rec = Recording::read(path)?;
    let output = output.unwrap_or_else(|| {
        let dir = if path.is_dir() {
            path.to_path_buf()
        } else {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        dir.join("view.html")
    });
    progress.set("building the report");
    let report = report::build(&rec, 50).to_json();
    progress.set(&format!("writing {}", output.display()));
    let stats = modelprobe::view::write_html(&rec, &report, &output)?;
    modelprobe::preflight::hand_over(None, std::slice::from_ref(&output));
    progress.done();
    if !quiet {
        eprintln!(
            "modelprobe: wrote {} ({:.1} MiB: {} spans, {} events, {} log lines, {} samples) in {:.2}s",
            output.display(),
            stats.bytes as f64 / 1048576.0,
            stats.spans,
            stats.events,
            stats.logs,
            stats.samples,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(0)
}

/// `modelprobe config show`.
pub fn config_show(config: Option<&Path>) -> anyhow::Result<i32> {
    let s = crate::record::settings(config)?;
    match &s.file {
        Some(f) => println!("config file: {}", f.display()),
        None => println!(
            "config file: none (--config, $MODELPROBE_CONFIG, or {})",
            modelprobe::config::DEFAULT_PATH
        ),
    }
    let rows = s.rows();
    let kw = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let vw = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    for (key, value, source) in rows {
        println!("{key:<kw$}  {value:<vw$}  ({source})");
    }
    Ok(0)
}

/// `modelprobe gpu-library`: writes the injection library and prints its path.
pub fn gpu_library(dir: Option<PathBuf>) -> anyhow::Result<i32> {
    use modelprobe::gpu::library;
    let dir = dir.unwrap_or_else(library::default_dir);
    let path = library::write_to(&dir)?;
    println!("{}", path.display());
    Ok(0)
}

/// `modelprobe stacks`.
pub fn stacks(pid: u32, json: bool, native: bool) -> anyhow::Result<i32> {
    let snap = modelprobe::snapshot::take(pid)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
    } else {
        print!("{}", snap.text(native));
    }
    Ok(0)
}
