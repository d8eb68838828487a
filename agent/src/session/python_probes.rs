//! Python function spans for a session (`--probe py:`, the framework packs): the in-process
//! library's environment for a launched command, loading it live into a running interpreter,
//! reading each process's ring while recording, asking the library to remove its probes at the
//! end (so the process runs on as it was), and the spans into the recording.
use std::{
    ffi::OsString,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use modelprobe_common::pyprobe::{state, CONFIG_ENV};

use super::{RecordOptions, Target};
use crate::{
    gpu::library,
    live_load,
    probes::ProbeSpec,
    pyprobe::{self, ring::RingReader, spans::Assembler},
    recording::Recording,
    target,
};

/// How long the end of a recording waits for the libraries to remove their probes.
const STOP_WAIT: Duration = Duration::from_secs(3);
/// How long a library loaded live may wait for the GIL before the agent gives up on it.
const GIL_WAIT: Duration = Duration::from_secs(5);
/// How often the rings are read: a hot probed function fills one in tens of milliseconds.
const READ_EVERY: Duration = Duration::from_millis(5);
/// How often a process of a launched tree is searched for a ring, and for how long after it
/// appeared (a Python process sets up as its main code starts).
const SEARCH_EVERY: Duration = Duration::from_millis(50);
const SEARCH_FOR: Duration = Duration::from_secs(10);

/// One process with the library.
struct Watched {
    pid: u32,
    since: Instant,
    /// When its descriptors were last searched for a ring.
    searched: Option<Instant>,
    /// The library was loaded live (its thread waits for the GIL), not preloaded.
    loaded_live: bool,
    ring: Option<RingReader>,
    spans: Assembler,
    /// The last state logged.
    said: Option<u32>,
}

/// The Python-probe side of one session.
pub(super) struct PySide {
    token: u64,
    /// A launched command's tree is watched (each of its processes may set up).
    tree: bool,
    /// The launched command.
    root: Option<u32>,
    watched: Arc<Mutex<Vec<Watched>>>,
    /// The thread reading the rings, and its stop flag.
    reader: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
}

/// The Python probes among `specs`.
fn python_specs(specs: &[ProbeSpec]) -> Vec<ProbeSpec> {
    specs.iter().filter(|s| s.is_python()).cloned().collect()
}

/// A session token: tells this session's rings from any other's.
fn new_token() -> u64 {
    let nanos = crate::clock::monotonic_ns();
    nanos ^ (u64::from(std::process::id()) << 40) ^ 0x9e37_79b9_7f4a_7c15
}

/// True when `argv` runs a Python interpreter directly (`python3`, `python3.12`, a venv's).
fn runs_python(argv: &[OsString]) -> bool {
    argv.first()
        .and_then(|a| {
            std::path::Path::new(a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .is_some_and(|n| n.starts_with("python"))
}

impl PySide {
    /// A side with nothing to do (no Python probes, no packs wanted).
    pub fn new() -> PySide {
        PySide {
            token: new_token(),
            tree: false,
            root: None,
            watched: Arc::default(),
            reader: None,
        }
    }

    /// The environment that makes a launched Python command set the probes up before its main
    /// code runs (`LD_PRELOAD` of the library, the settings in `MODELPROBE_PY_CONFIG`); empty
    /// when no Python probe was asked for and the packs are off or the command is not Python.
    /// When it is not empty, the launched tree is watched from [`PySide::start`] on.
    pub fn launch_env(&mut self, opts: &RecordOptions) -> Vec<(OsString, OsString)> {
        let Target::Command(argv) = &opts.target else {
            return Vec::new();
        };
        let specs = python_specs(&opts.probes);
        if specs.is_empty() && !(opts.packs && runs_python(argv)) {
            return Vec::new();
        }
        let path = match library::write_to(&library::default_dir()) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("Python probes off: {e}");
                return Vec::new();
            }
        };
        let mut preload = path.into_os_string();
        if let Some(theirs) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
            preload.push(" ");
            preload.push(theirs);
        }
        let config = pyprobe::config(self.token, &specs, opts.packs);
        self.tree = true;
        vec![
            ("LD_PRELOAD".into(), preload),
            (CONFIG_ENV.into(), config.into()),
        ]
    }

    /// Starts watching: the launched command (whose library was preloaded), or, for `attach`,
    /// loads the library into `running` when it asked for Python probes or uses PyTorch.
    pub fn start(&mut self, opts: &RecordOptions, launched: Option<u32>, running: Option<u32>) {
        if let Some(pid) = launched {
            // `launch_env` preloaded the library (or decided not to).
            if self.tree {
                self.root = Some(pid);
                self.watch(pid);
            }
            return;
        }
        let Some(pid) = running else {
            return;
        };
        let specs = python_specs(&opts.probes);
        if specs.is_empty() && !(opts.packs && target::maps_library(pid, "libtorch_python.so")) {
            return;
        }
        let image = match library::bytes()
            .map_err(|e| e.to_string())
            .and_then(|b| pyprobe::patch_image(b, &pyprobe::config(self.token, &specs, opts.packs)))
        {
            Ok(i) => i,
            Err(e) => {
                log::warn!("Python probes off for pid {pid}: {e}");
                return;
            }
        };
        match live_load::load(
            pid,
            &image,
            "modelprobe-pylib",
            &live_load::LoadOptions::default(),
        ) {
            Ok(l) => {
                log::info!(
                    "loaded the Python-probe library into pid {pid} (thread {} held {:.2} ms)",
                    l.tid,
                    l.pause.as_secs_f64() * 1e3
                );
                self.watch(pid);
            }
            Err(e) => {
                log::warn!("Python probes off for pid {pid}: could not load the library: {e}")
            }
        }
    }

    /// The live processes of the session: those of a launched tree not watched yet are.
    pub fn offer(&mut self, pids: &[u32]) {
        if !self.tree {
            return;
        }
        let new: Vec<u32> = {
            let watched = self.lock();
            pids.iter()
                .copied()
                .filter(|p| !watched.iter().any(|w| w.pid == *p))
                .collect()
        };
        for pid in new {
            self.watch(pid);
        }
    }

    fn watch(&mut self, pid: u32) {
        self.lock().push(Watched {
            pid,
            since: Instant::now(),
            searched: None,
            loaded_live: !self.tree,
            ring: None,
            spans: Assembler::default(),
            said: None,
        });
        if self.reader.is_some() {
            return;
        }
        let (watched, token) = (self.watched.clone(), self.token);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("mp-pyprobe".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    poll(
                        &mut watched.lock().unwrap_or_else(|p| p.into_inner()),
                        token,
                    );
                    std::thread::sleep(READ_EVERY);
                }
            });
        match spawned {
            Ok(t) => self.reader = Some((t, stop)),
            Err(e) => log::warn!("Python probes: no reading thread ({e}); read once at the end"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks every library to remove its probes (the process runs on as it was) and reads the
    /// last records.
    pub fn collect_last(&mut self) {
        if let Some((thread, stop)) = self.reader.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
        let token = self.token;
        let mut watched = self.lock();
        poll(&mut watched, token);
        collect_last(&mut watched);
    }

    /// Puts the spans, probes, stacks and exception events into `rec`, with what was lost.
    pub fn finish(self, rec: &mut Recording) {
        let watched = std::mem::take(&mut *self.lock());
        if let Some(root) = self
            .root
            .filter(|_| watched.iter().all(|w| w.ring.is_none()))
        {
            log::warn!(
                "Python probes off for pid {root}: no CPython interpreter reported (the command \
                 is not Python 3, or it ended first)"
            );
        }
        finish(watched, rec);
    }
}

/// Finds rings that appeared, reads what the libraries wrote, and says what they report.
fn poll(watched: &mut [Watched], token: u64) {
    for w in watched.iter_mut() {
        let due = w.searched.is_none_or(|t| t.elapsed() >= SEARCH_EVERY);
        if w.ring.is_none() && due && w.since.elapsed() < SEARCH_FOR {
            w.searched = Some(Instant::now());
            w.ring = RingReader::find(w.pid, token);
        }
        let Some(ring) = w.ring.as_mut() else {
            continue;
        };
        ring.drain(|r| w.spans.feed(r));
        let status = ring.status();
        if w.said != Some(status.state) {
            w.said = Some(status.state);
            match status.state {
                state::ACTIVE => {
                    log::info!("Python probes in pid {}: {}", w.pid, status.message)
                }
                state::FAILED => {
                    log::warn!("Python probes off for pid {}: {}", w.pid, status.message)
                }
                _ => {}
            }
        }
        if status.state == state::PENDING && w.since.elapsed() > GIL_WAIT {
            log::warn!(
                "Python probes off for pid {}: no GIL-safe moment within {}s (the \
                     interpreter holds the GIL in native code, or is not running Python)",
                w.pid,
                GIL_WAIT.as_secs()
            );
            ring.request_stop();
            w.said = Some(state::FAILED);
        }
    }
}

/// Asks every library to remove its probes and reads the last records.
fn collect_last(watched: &mut [Watched]) {
    for w in watched.iter_mut() {
        if let Some(r) = w.ring.as_mut() {
            r.request_stop();
        }
    }
    let deadline = Instant::now() + STOP_WAIT;
    for w in watched.iter_mut() {
        let Some(r) = w.ring.as_mut() else {
            continue;
        };
        let alive = || std::path::Path::new(&format!("/proc/{}", w.pid)).exists();
        while !r.ended() && Instant::now() < deadline && alive() {
            r.drain(|rec| w.spans.feed(rec));
            std::thread::sleep(Duration::from_millis(10));
        }
        r.drain(|rec| w.spans.feed(rec));
        let status = r.status();
        if status.state == state::STOPPED {
            log::info!("Python probes in pid {}: {}", w.pid, status.message);
        } else if status.state == state::ACTIVE && alive() {
            log::warn!(
                "Python probes in pid {}: still set after {}s (the GIL never came); they \
                     stay until the process ends, writing nowhere",
                w.pid,
                STOP_WAIT.as_secs()
            );
        }
    }
}

/// The spans, probes, stacks and exception events of every watched process into `rec`.
fn finish(watched: Vec<Watched>, rec: &mut Recording) {
    for mut w in watched {
        let Some(mut ring) = w.ring.take() else {
            if w.loaded_live {
                log::warn!(
                    "Python probes off for pid {}: the library loaded but never reported",
                    w.pid
                );
            }
            continue;
        };
        let status = ring.status();
        let lost = &mut rec.meta.lost;
        lost.python_span_records += status.dropped;
        lost.python_values_cut += status.truncated;
        lost.python_events_reentered += status.reentered;
        lost.unmatched_span_returns += w.spans.unmatched_exits;
        let n = w.spans.into_recording(w.pid, rec);
        if status.state == state::FAILED {
            continue;
        }
        log::info!(
            "Python probes in pid {}: {n} spans from {} function(s)",
            w.pid,
            status.probed
        );
    }
}
