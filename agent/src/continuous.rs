//! The continuous agent (`modelprobe agent`): records the processes a [`Selector`] chooses,
//! window after window, at a low rate, for as long as it runs.
//!
//! Each window is a session over every process chosen when it starts (each with its children):
//! CPU stacks with Python frames, the packs' spans (CUDA, LLM calls), at 19 Hz by default.
//! Its recording goes to a directory of its own (the last `keep` are kept, older ones removed,
//! so disk use is bounded) and, with an endpoint, its spans, metrics and logs are pushed as
//! OTLP. One set of Prometheus metrics lives across windows. A process that starts during a
//! window is recorded from the next one; a window ends early when all its processes exit.
//! SIGINT or SIGTERM ends the window in progress (written and pushed as usual) and the agent.
//!
//! Windows are whole sessions: the BPF programs are loaded at each window's start and
//! detached at its end, which costs a few hundred milliseconds of CPU per window (the default
//! 60 s windows make that about 0.5% of one CPU), and nothing of the agent's stays attached
//! between windows or after it exits.
use std::{
    collections::VecDeque,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::{
    export::otlp,
    live::{LiveMetrics, MetricsServer},
    push::{self, Endpoint},
    select::Selector,
    session::{self, InjectMode, RecordOptions, Target},
    Error, Result,
};

/// What the agent records, how often, and where it sends it.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Which processes.
    pub select: Selector,
    /// Length of a window.
    pub window: Duration,
    /// CPU samples per second.
    pub frequency_hz: u64,
    /// Also record blocked time.
    pub off_cpu: bool,
    /// Parse LLM API calls out of TLS plaintext.
    pub llm: bool,
    /// Where the windows' recordings go.
    pub dir: PathBuf,
    /// How many windows' recordings are kept.
    pub keep: usize,
    /// Serve Prometheus metrics here for the agent's life.
    pub metrics_addr: Option<SocketAddr>,
    /// Push each window as OTLP here.
    pub endpoint: Option<Endpoint>,
    /// Resource attributes for the OTLP push.
    pub resource: Vec<(String, String)>,
    /// Set to a signal number to stop.
    pub stop: Arc<AtomicUsize>,
    /// Stop after this many windows (tests; `None`: until a signal).
    pub max_windows: Option<u64>,
}

/// What a run of the agent did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AgentSummary {
    /// Windows recorded.
    pub windows: u64,
    /// Windows that could not be recorded (a chosen process gone before the attach...).
    pub failed_windows: u64,
    /// Windows pushed to the endpoint.
    pub pushed: u64,
    /// Pushes that failed.
    pub failed_pushes: u64,
}

/// Sleeps `d` in short steps; false when a stop came.
fn wait(d: Duration, stop: &AtomicUsize) -> bool {
    let step = Duration::from_millis(100);
    let mut left = d;
    while !left.is_zero() {
        if stop.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
    stop.load(Ordering::Relaxed) == 0
}

/// Runs until a stop (or `max_windows`).
pub fn run(opts: &AgentOptions) -> Result<AgentSummary> {
    if opts.select.is_empty() {
        return Err(Error::InvalidArgument(
            "agent: say which processes to record (--match REGEX, --loads LIBRARY)".into(),
        ));
    }
    if opts.keep == 0 {
        return Err(Error::InvalidArgument(
            "agent: --keep must be at least 1".into(),
        ));
    }
    std::fs::create_dir_all(&opts.dir).map_err(|e| {
        Error::InvalidArgument(format!("agent: cannot create {} ({e})", opts.dir.display()))
    })?;
    let metrics = Arc::new(LiveMetrics::new());
    let _server = match opts.metrics_addr {
        Some(addr) => Some(MetricsServer::start(addr, metrics.clone())?),
        None => None,
    };
    let mut kept: VecDeque<PathBuf> = VecDeque::new();
    let mut summary = AgentSummary::default();
    let mut idle_said = false;
    while opts.stop.load(Ordering::Relaxed) == 0
        && opts.max_windows.is_none_or(|m| summary.windows < m)
    {
        let pids = opts.select.select(&[]);
        metrics.progress(pids.len(), 0.0);
        let Some((&first, rest)) = pids.split_first() else {
            if !idle_said {
                log::info!("agent: no process matches yet; looking every second");
                idle_said = true;
            }
            if !wait(Duration::from_secs(1), &opts.stop) {
                break;
            }
            continue;
        };
        idle_said = false;
        let dir = opts.dir.join(format!("window-{}", crate::clock::unix_ms()));
        let mut ro = RecordOptions::new(Target::Pid(first), dir.clone());
        ro.more_pids = rest.to_vec();
        ro.duration = Some(opts.window);
        ro.frequency_hz = opts.frequency_hz;
        ro.off_cpu = opts.off_cpu;
        ro.stop = opts.stop.clone();
        ro.shared_metrics = Some(metrics.clone());
        // Light by default: no output capture, no GPU library loaded into anyone.
        ro.capture_io = false;
        ro.gpu_trace = false;
        ro.inject = InjectMode::Never;
        if !opts.llm {
            ro.llm = None;
        }
        log::info!(
            "agent: window of {:?} over {} process(es)",
            opts.window,
            pids.len()
        );
        match session::record(&ro) {
            Ok(outcome) => {
                summary.windows += 1;
                if let Some(endpoint) = &opts.endpoint {
                    let requests = otlp::requests_with(&outcome.recording, &opts.resource);
                    match push::push(endpoint, &requests, |_, _| {}) {
                        Ok(_) => summary.pushed += 1,
                        Err(e) => {
                            summary.failed_pushes += 1;
                            log::warn!("agent: window not pushed: {e}");
                        }
                    }
                }
                kept.push_back(dir);
                while kept.len() > opts.keep {
                    if let Some(old) = kept.pop_front() {
                        if let Err(e) = std::fs::remove_dir_all(&old) {
                            log::warn!("agent: cannot remove {}: {e}", old.display());
                        }
                    }
                }
            }
            Err(e) => {
                summary.failed_windows += 1;
                log::warn!("agent: window not recorded: {e}");
                let _ = std::fs::remove_dir_all(&dir);
                if !wait(Duration::from_secs(1), &opts.stop) {
                    break;
                }
            }
        }
    }
    log::info!(
        "agent: {} window(s) recorded, {} pushed",
        summary.windows,
        summary.pushed
    );
    Ok(summary)
}
