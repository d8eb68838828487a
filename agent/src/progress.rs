//! A one-line progress display on stderr for long work (recording, symbolizing, rendering).
//!
//! It draws only when stderr is a terminal, and is silent otherwise (pipes, CI logs, files).
//! Log lines call [`clear`] first, so a progress line never gets mixed into them.
use std::{
    io::{IsTerminal, Write},
    sync::atomic::{AtomicBool, Ordering},
};

/// Whether a progress line is on screen now.
static SHOWING: AtomicBool = AtomicBool::new(false);

/// Erases the progress line, if one is showing.
pub fn clear() {
    if SHOWING.swap(false, Ordering::Relaxed) {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}

/// A progress line; inert when not asked for or when stderr is not a terminal.
#[derive(Debug)]
pub struct Progress {
    active: bool,
}

impl Progress {
    /// Shows progress when `wanted` and stderr is a terminal.
    pub fn new(wanted: bool) -> Self {
        Progress {
            active: wanted && std::io::stderr().is_terminal(),
        }
    }

    /// Whether anything will be drawn.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Replaces the line with `msg`.
    pub fn set(&self, msg: &str) {
        if !self.active {
            return;
        }
        let width = terminal_width().saturating_sub(1).max(20);
        let line: String = format!("modelprobe: {msg}").chars().take(width).collect();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        SHOWING.store(true, Ordering::Relaxed);
    }

    /// Erases the line: the work is done.
    pub fn done(&self) {
        if self.active {
            clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done();
    }
}

fn terminal_width() -> usize {
    // SAFETY: an all-zero winsize is valid; TIOCGWINSZ writes into it and fails harmlessly on
    // a non-terminal.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: `ws` is a valid, writable winsize for the ioctl.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inert_when_not_wanted() {
        let p = Progress::new(false);
        assert!(!p.is_active());
        p.set("nothing drawn");
        assert!(!SHOWING.load(Ordering::Relaxed));
    }
}
