//! The continuous agent (`modelprobe agent`): records the processes its [`Rules`] choose,
//! window after window, at a low rate, for as long as it runs.
//!
//! Each window is a session over every process chosen when it starts (each with its children):
//! CPU stacks with Python frames, the packs' spans (CUDA, LLM calls), at 19 Hz by default.
//! During the window a [`watch::Watcher`] checks the rules every second and hands new matches
//! to the session, which records them from then on. Its recording goes to a directory of its
//! own (the last `keep` are kept, older ones removed, so disk use is bounded) and, with
//! endpoints, its spans, metrics and logs are pushed as OTLP and its profiles as pprof. One set
//! of Prometheus metrics lives across windows. A window ends early when all its processes exit.
//! SIGINT or SIGTERM ends the window in progress (written and pushed as usual) and the agent; a
//! reload request (SIGHUP) ends it too, and the next one starts with the rules read again.
//! A local control socket ([`control`]) takes on-demand deep captures beside the windows.
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
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::{
    export::otlp,
    live::{LiveMetrics, MetricsServer},
    push::{self, Endpoint, PprofEndpoint},
    select::Selector,
    session::{self, Adopt, InjectMode, RecordOptions, Target},
    Error, Result,
};

pub mod capture;
pub mod control;
pub mod watch;

/// Which processes, and how: what a reload can change.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Which processes.
    pub select: Selector,
    /// Length of a window.
    pub window: Duration,
    /// CPU samples per second.
    pub frequency_hz: u64,
    /// How many windows' recordings are kept.
    pub keep: usize,
}

impl Rules {
    /// Checks what a session would only find out later.
    pub fn check(&self) -> Result<()> {
        if self.select.is_empty() {
            return Err(Error::InvalidArgument(
                "agent: say which processes to record (--match REGEX, --cgroup REGEX, --loads LIBRARY, or agent: in the config file)".into(),
            ));
        }
        if self.keep == 0 {
            return Err(Error::InvalidArgument(
                "agent: --keep must be at least 1".into(),
            ));
        }
        if self.window < Duration::from_secs(1) {
            return Err(Error::InvalidArgument(format!(
                "agent: a window of {:?} is too short: use 1s or more",
                self.window
            )));
        }
        Ok(())
    }
}

/// Reading the rules again (SIGHUP): `requested` is set by the signal, `load` reads them.
pub struct Reload {
    /// Set to ask for a reload.
    pub requested: Arc<AtomicBool>,
    /// Reads the rules from their source (the config file and the command line).
    pub load: Box<dyn Fn() -> Result<Rules> + Send + Sync>,
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reload")
            .field("requested", &self.requested)
            .finish_non_exhaustive()
    }
}

/// What the agent records, how often, and where it sends it.
#[derive(Debug)]
pub struct AgentOptions {
    /// Which processes, window length, rate, windows kept.
    pub rules: Rules,
    /// Also record blocked time.
    pub off_cpu: bool,
    /// Parse LLM API calls out of TLS plaintext.
    pub llm: bool,
    /// Where the windows' recordings go.
    pub dir: PathBuf,
    /// Serve Prometheus metrics here for the agent's life.
    pub metrics_addr: Option<SocketAddr>,
    /// Push each window as OTLP here.
    pub endpoint: Option<Endpoint>,
    /// Push each window's profiles as pprof here.
    pub pprof_endpoint: Option<PprofEndpoint>,
    /// Resource attributes for the OTLP push (`service.name` names the pprof push too).
    pub resource: Vec<(String, String)>,
    /// Listen for `modelprobe ctl` here.
    pub control: Option<PathBuf>,
    /// Set to a signal number to stop.
    pub stop: Arc<AtomicUsize>,
    /// How to read the rules again, when asked.
    pub reload: Option<Reload>,
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
    /// Windows pushed to the endpoints.
    pub pushed: u64,
    /// Pushes that failed.
    pub failed_pushes: u64,
    /// Processes handed to a window in progress.
    pub adopted: u64,
    /// Reloads that took effect.
    pub reloads: u64,
}

/// Sleeps `d` in short steps; false when a stop (or a reload request) came.
fn wait(d: Duration, stop: &AtomicUsize, reload: Option<&AtomicBool>) -> bool {
    let step = Duration::from_millis(100);
    let mut left = d;
    while !left.is_zero() {
        if stop.load(Ordering::Relaxed) != 0 || reload.is_some_and(|r| r.load(Ordering::Relaxed)) {
            return false;
        }
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
    true
}

/// Runs until a stop (or `max_windows`).
pub fn run(opts: &AgentOptions) -> Result<AgentSummary> {
    opts.rules.check()?;
    std::fs::create_dir_all(&opts.dir).map_err(|e| {
        Error::InvalidArgument(format!("agent: cannot create {} ({e})", opts.dir.display()))
    })?;
    let metrics = Arc::new(LiveMetrics::new());
    let _server = match opts.metrics_addr {
        Some(addr) => Some(MetricsServer::start(addr, metrics.clone())?),
        None => None,
    };
    let _control = match &opts.control {
        Some(path) => Some(control::ControlServer::start(
            path,
            capture::Captures::new(opts.dir.join("captures"), opts.stop.clone()),
        )?),
        None => None,
    };
    let mut rules = opts.rules.clone();
    log::info!(
        "agent: recording {} in windows of {:?} at {} Hz",
        rules.select.describe(),
        rules.window,
        rules.frequency_hz
    );
    let mut kept: VecDeque<PathBuf> = VecDeque::new();
    let mut summary = AgentSummary::default();
    let mut idle_said = false;
    let reload_flag = opts.reload.as_ref().map(|r| r.requested.clone());
    while opts.stop.load(Ordering::Relaxed) == 0
        && opts.max_windows.is_none_or(|m| summary.windows < m)
    {
        if let Some(reload) = &opts.reload {
            if reload.requested.swap(false, Ordering::Relaxed) {
                match (reload.load)().and_then(|r| r.check().map(|()| r)) {
                    Ok(r) => {
                        log::info!(
                            "agent: rules reloaded: {} in windows of {:?} at {} Hz, keeping {}",
                            r.select.describe(),
                            r.window,
                            r.frequency_hz,
                            r.keep
                        );
                        rules = r;
                        summary.reloads += 1;
                        idle_said = false;
                    }
                    Err(e) => log::warn!("agent: rules not reloaded, the old ones stay: {e}"),
                }
            }
        }
        let pids = rules.select.select(&[]);
        metrics.progress(pids.len(), 0.0);
        let Some((&first, rest)) = pids.split_first() else {
            if !idle_said {
                log::info!("agent: no process matches yet; looking every second");
                idle_said = true;
            }
            wait(Duration::from_secs(1), &opts.stop, reload_flag.as_deref());
            continue;
        };
        idle_said = false;
        let dir = opts.dir.join(format!("window-{}", crate::clock::unix_ms()));
        let adopt = Arc::new(Adopt::default());
        let window_stop = Arc::new(AtomicUsize::new(0));
        let mut ro = RecordOptions::new(Target::Pid(first), dir.clone());
        ro.more_pids = rest.to_vec();
        ro.adopt = Some(adopt.clone());
        ro.duration = Some(rules.window);
        ro.frequency_hz = rules.frequency_hz;
        ro.off_cpu = opts.off_cpu;
        ro.stop = window_stop.clone();
        ro.shared_metrics = Some(metrics.clone());
        // Rings for low rates, not for 999 Hz (mapped rings are resident memory).
        if rules.frequency_hz <= 99 {
            ro.small_rings = true;
            ro.records_ring_bytes = 512 << 10;
        }
        // Light by default: no output capture, no GPU library loaded into anyone.
        ro.capture_io = false;
        ro.gpu_trace = false;
        ro.inject = InjectMode::Never;
        if !opts.llm {
            ro.llm = None;
        }
        log::info!(
            "agent: window of {:?} over {} process(es)",
            rules.window,
            pids.len()
        );
        let watcher = watch::Watcher::start(watch::Watched {
            select: rules.select.clone(),
            known: pids.clone(),
            adopt,
            stop: opts.stop.clone(),
            reload: reload_flag.clone(),
            window_stop,
        });
        let recorded = session::record(&ro);
        drop(watcher);
        match recorded {
            Ok(outcome) => {
                summary.windows += 1;
                summary.adopted += outcome.adopted as u64;
                let pushed = push_window(opts, &outcome.recording);
                if let Some(ok) = pushed {
                    if ok {
                        summary.pushed += 1;
                    } else {
                        summary.failed_pushes += 1;
                    }
                }
                kept.push_back(dir);
                while kept.len() > rules.keep {
                    if let Some(old) = kept.pop_front() {
                        if let Err(e) = std::fs::remove_dir_all(&old) {
                            log::warn!("agent: cannot remove {}: {e}", old.display());
                        }
                    }
                }
            }
            // What no later window can get past: the agent stops.
            Err(
                e @ (Error::MissingBpfObject
                | Error::Permission
                | Error::UnsupportedKernel(_)
                | Error::Output { .. }),
            ) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
            Err(e) => {
                summary.failed_windows += 1;
                log::warn!("agent: window not recorded: {e}");
                let _ = std::fs::remove_dir_all(&dir);
                wait(Duration::from_secs(1), &opts.stop, None);
            }
        }
    }
    log::info!(
        "agent: {} window(s) recorded, {} pushed, {} process(es) picked up mid-window, {} reload(s)",
        summary.windows,
        summary.pushed,
        summary.adopted,
        summary.reloads
    );
    Ok(summary)
}

/// Pushes a window to the endpoints there are: `None` with none, else whether all took it.
fn push_window(opts: &AgentOptions, rec: &crate::recording::Recording) -> Option<bool> {
    if opts.endpoint.is_none() && opts.pprof_endpoint.is_none() {
        return None;
    }
    let mut ok = true;
    if let Some(endpoint) = &opts.endpoint {
        let requests = otlp::requests_with(rec, &opts.resource);
        if let Err(e) = push::push(endpoint, &requests, |_, _| {}) {
            ok = false;
            log::warn!("agent: window not pushed as OTLP: {e}");
        }
    }
    if let Some(endpoint) = &opts.pprof_endpoint {
        let service = opts
            .resource
            .iter()
            .find(|(k, _)| k == "service.name")
            .map_or("modelprobe", |(_, v)| v.as_str());
        if let Err(e) = push::push_pprof(endpoint, rec, service) {
            ok = false;
            log::warn!("agent: window's profiles not pushed: {e}");
        }
    }
    Some(ok)
}
