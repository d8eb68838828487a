//! What runs beside a window: every second, new processes the rules choose are handed to the
//! window's session ([`Adopt`]), so a server that starts mid-window is recorded within a
//! second, not from the next window; and a stop (SIGINT/SIGTERM) or a reload request ends the
//! window, which is written as usual.
use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{select::Selector, session::Adopt};

/// How often the rules are checked against `/proc` during a window.
pub const SCAN_EVERY: Duration = Duration::from_secs(1);

/// Why a window's own stop flag was set: the agent's stop signal, or this (a reload).
pub const RELOAD: usize = usize::MAX;

/// The watcher of one window; stops when dropped.
pub struct Watcher {
    done: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// What a watcher watches.
pub struct Watched {
    /// The rules in effect for this window.
    pub select: Selector,
    /// Processes the window already records (with their children, followed by the kernel).
    pub known: Vec<u32>,
    /// Where new ones go.
    pub adopt: Arc<Adopt>,
    /// The agent's stop flag (a signal number).
    pub stop: Arc<AtomicUsize>,
    /// Set when a reload is asked for.
    pub reload: Option<Arc<AtomicBool>>,
    /// The window's session's stop flag, set from the two above.
    pub window_stop: Arc<AtomicUsize>,
}

impl Watcher {
    /// Starts watching.
    pub fn start(w: Watched) -> Watcher {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let handle = std::thread::Builder::new()
            .name("mp-agent-watch".into())
            .spawn(move || watch(w, &d))
            .ok();
        Watcher { done, handle }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn watch(w: Watched, done: &AtomicBool) {
    let mut known: HashSet<u32> = w.known.iter().copied().collect();
    let mut last_scan = Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let signal = w.stop.load(Ordering::Relaxed);
        if signal != 0 {
            w.window_stop.store(signal, Ordering::Relaxed);
            return;
        }
        if w.reload.as_ref().is_some_and(|r| r.load(Ordering::Relaxed)) {
            w.window_stop.store(RELOAD, Ordering::Relaxed);
            return;
        }
        if last_scan.elapsed() < SCAN_EVERY {
            continue;
        }
        last_scan = Instant::now();
        let now = w.select.select(&[]);
        for &pid in &now {
            if known.insert(pid) {
                w.adopt.push(pid);
            }
        }
        // A pid that went away may come back as another process.
        known.retain(|p| now.contains(p) || crate::target::is_alive(*p));
    }
}
