//! The flight recorder (`--flight-recorder 60s`): the session keeps only the last window of
//! samples, spans, events, logs and LLM calls (older ones are dropped every second, so memory
//! follows the window, not the run), and when a trigger fires it writes that window as a
//! recording of its own (`flight-<n>-<ms>/`) and goes on with a fresh history. Triggers: a
//! failed API call, a fatal signal, a log line matching a pattern, a probed call slower than
//! a threshold, and SIGUSR2 to modelprobe. At most `max_dumps`, at least `spacing` apart.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use regex::Regex;

use super::{collect::triggers::Fired, start::Session};
use crate::{clock, export, recording::Meta, Error, Result};

/// One `--trigger`.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// `api_error`: a CUDA, cuBLAS or NCCL call failed.
    ApiError,
    /// `signal`: a fatal signal reached a target process.
    Signal,
    /// `log:REGEX`: a line of the target's output matched.
    Log(Regex),
    /// `span:FUNCTION>DURATION`: a call of a probed function took at least that long.
    Span {
        /// The function, as the probe table names it.
        function: String,
        /// The threshold.
        min: Duration,
    },
}

impl Trigger {
    /// Parses `api_error`, `signal`, `log:REGEX` or `span:FUNCTION>DURATION`.
    pub fn parse(text: &str) -> Result<Trigger> {
        let bad = |why: String| {
            Error::InvalidArgument(format!(
                "bad --trigger {text:?}: {why} (expected api_error, signal, log:REGEX or span:FUNCTION>DURATION, e.g. 'span:llama_decode>200ms')"
            ))
        };
        match text {
            "api_error" => return Ok(Trigger::ApiError),
            "signal" => return Ok(Trigger::Signal),
            _ => {}
        }
        if let Some(re) = text.strip_prefix("log:") {
            return Regex::new(re).map(Trigger::Log).map_err(|e| {
                bad(format!(
                    "not a regular expression ({})",
                    crate::analyze::regex_problem(&e)
                ))
            });
        }
        if let Some(rest) = text.strip_prefix("span:") {
            let (function, min) = rest
                .split_once('>')
                .ok_or_else(|| bad("no '>' before the duration".into()))?;
            let min = humantime::parse_duration(min.trim())
                .map_err(|e| bad(format!("{min:?} is not a duration ({e})")))?;
            if function.trim().is_empty() {
                return Err(bad("no function".into()));
            }
            return Ok(Trigger::Span {
                function: function.trim().to_string(),
                min,
            });
        }
        Err(bad("unknown trigger".into()))
    }
}

/// A flight recorder's settings.
#[derive(Debug, Clone)]
pub struct FlightOptions {
    /// How much history is kept.
    pub window: Duration,
    /// What writes it out.
    pub triggers: Vec<Trigger>,
    /// Most dumps in one session.
    pub max_dumps: u32,
    /// Least time between two dumps.
    pub spacing: Duration,
    /// Set (by SIGUSR2) to dump now.
    pub dump_now: Arc<AtomicBool>,
}

/// A flight recorder in a session.
#[derive(Debug)]
pub(super) struct Flight {
    dumps: u32,
    last_dump: Option<Instant>,
    last_evict: Instant,
    refused_said: bool,
}

/// Sets the collector's triggers up.
pub(super) fn start(s: &mut Session<'_>) {
    let Some(f) = s.opts.flight.clone() else {
        return;
    };
    s.flight = Some(Flight {
        dumps: 0,
        last_dump: None,
        last_evict: Instant::now(),
        refused_said: false,
    });
    log::info!(
        "flight recorder: keeping the last {}; dumps on {} or SIGUSR2 (at most {}, {} apart)",
        humantime::format_duration(f.window),
        f.triggers
            .iter()
            .map(|t| match t {
                Trigger::ApiError => "api_error".to_string(),
                Trigger::Signal => "signal".to_string(),
                Trigger::Log(re) => format!("log:{re}"),
                Trigger::Span { function, min } =>
                    format!("span:{function}>{}", humantime::format_duration(*min)),
            })
            .collect::<Vec<_>>()
            .join(", "),
        f.max_dumps,
        humantime::format_duration(f.spacing)
    );
}

/// Each turn of the event loop: bounds the history, and dumps it when a trigger fired.
pub(super) fn follow(s: &mut Session<'_>, fired: &[Fired]) {
    let (Some(opts), Some(flight)) = (s.opts.flight.clone(), s.flight.as_mut()) else {
        return;
    };
    if flight.last_evict.elapsed() >= Duration::from_secs(1) {
        flight.last_evict = Instant::now();
        let cutoff = clock::monotonic_ns().saturating_sub(opts.window.as_nanos() as u64);
        s.collector.evict_before(cutoff);
    }
    let dump_now = opts.dump_now.swap(false, Ordering::Relaxed);
    if fired.is_empty() && !dump_now {
        return;
    }
    let table = s.probes.table();
    let name = |probe: u32| {
        table
            .get(probe as usize)
            .map_or("a call", |p| p.function.as_str())
    };
    let has = |want: fn(&Trigger) -> bool| opts.triggers.iter().any(want);
    let slow_for = |function: &str| {
        opts.triggers.iter().find_map(|t| match t {
            Trigger::Span { function: f, min } if f == function => Some(min.as_nanos() as u64),
            _ => None,
        })
    };
    // The stop rules' patterns and thresholds are watched too: only the flight's count here.
    let mut reasons: Vec<String> = fired
        .iter()
        .filter_map(|f| match f {
            Fired::Log { line, .. } => opts
                .triggers
                .iter()
                .any(|t| matches!(t, Trigger::Log(r) if r.is_match(line)))
                .then(|| format!("log: {}", line.chars().take(120).collect::<String>())),
            Fired::SlowSpan { probe, ns, .. } => slow_for(name(*probe))
                .is_some_and(|min| *ns >= min)
                .then(|| format!("span: {} took {:.1} ms", name(*probe), *ns as f64 / 1e6)),
            Fired::ApiError { probe, tid } => has(|t| matches!(t, Trigger::ApiError))
                .then(|| format!("api_error: {} failed in thread {tid}", name(*probe))),
            Fired::FatalSignal(m) => {
                has(|t| matches!(t, Trigger::Signal)).then(|| format!("signal: {m}"))
            }
        })
        .collect();
    if dump_now {
        reasons.push("SIGUSR2".into());
    }
    let Some(reason) = reasons.into_iter().next() else {
        return;
    };
    let spaced = flight.last_dump.is_none_or(|t| t.elapsed() >= opts.spacing);
    if flight.dumps >= opts.max_dumps || !spaced {
        if !flight.refused_said {
            log::info!(
                "flight recorder: {reason}: not written ({})",
                if spaced {
                    "--max-dumps reached"
                } else {
                    "within --dump-spacing of the last dump"
                }
            );
            flight.refused_said = flight.dumps >= opts.max_dumps;
        }
        return;
    }
    flight.dumps += 1;
    flight.last_dump = Some(Instant::now());
    let n = flight.dumps;
    if let Err(e) = dump(s, &opts, n, &reason) {
        log::warn!("flight recorder: {reason}: the dump failed: {e}");
    }
}

/// Writes the history as a recording and goes on with a fresh one.
fn dump(s: &mut Session<'_>, opts: &FlightOptions, n: u32, reason: &str) -> Result<()> {
    let fired_at = Instant::now();
    let end_ns = clock::monotonic_ns();
    let start_ns = end_ns
        .saturating_sub(opts.window.as_nanos() as u64)
        .max(s.start_ns);
    // History is dropped once a second: what is older than the window goes now, so the dump
    // holds the window and nothing before it (a window longer than the run keeps it all).
    if start_ns > s.start_ns {
        s.collector.evict_before(start_ns);
    }
    let next = s.collector.successor();
    let mut old = std::mem::replace(&mut s.collector, next);
    old.set_probes(s.probes.table());
    let meta = Meta {
        modelprobe_version: env!("CARGO_PKG_VERSION").to_string(),
        mode: "flight-recorder".into(),
        command: s.command.clone(),
        target_pid: s.target_pid,
        start_ns,
        end_ns,
        start_unix_ms: s.start_unix_ms + (start_ns - s.start_ns) / 1_000_000,
        frequency_hz: if s.opts.cpu { s.opts.frequency_hz } else { 0 },
        off_cpu: s.opts.off_cpu,
        kernel: super::finish::kernel_release(),
        hostname: super::finish::hostname(),
        cpus: s.sampler.cpus(),
        end_reason: format!("trigger: {reason}"),
        ..Meta::default()
    };
    let rec = old.finish(meta);
    let dir = s
        .opts
        .output_dir
        .join(format!("flight-{n}-{}", clock::unix_ms()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Output {
        path: dir.clone(),
        source: e,
    })?;
    rec.write(&dir)?;
    export::export_all(&rec, &dir)?;
    log::warn!(
        "flight recorder: {reason}: the last {} written to {} in {:.2} s ({} samples, {} spans, {} events)",
        humantime::format_duration(Duration::from_nanos(end_ns - start_ns)),
        dir.display(),
        fired_at.elapsed().as_secs_f64(),
        rec.samples.len(),
        rec.spans.len(),
        rec.events.len()
    );
    Ok(())
}
