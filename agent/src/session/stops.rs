//! The session's half of stopping the target ([`crate::stop`]): when the BPF side says it
//! stopped a process, the session waits for the stop to take hold, prints every thread's stack
//! and how to go on, records a `stopped` event, and later sees the process resumed (by
//! `modelprobe resume`, a debugger, or its own timeout). A process still stopped when the
//! recording ends is resumed: nothing is left frozen by modelprobe.
use std::time::{Duration, Instant};

use modelprobe_common::stop::reason;

use super::start::Session;
use crate::{
    recording::{Event, EventKind},
    stop, target,
};

/// How long a stop is given to take hold before the stacks are taken anyway.
const STOP_TAKES_HOLD: Duration = Duration::from_secs(1);

/// Acts on the stops made since the last call, and on the processes held.
pub(super) fn follow(s: &mut Session<'_>) {
    let Some(rules) = s.opts.stops.clone() else {
        return;
    };
    for rec in s.collector.take_stops() {
        let pid = rec.pid;
        // The set's table: pack probes attached while recording are in it.
        let function = s
            .probes
            .table()
            .get(rec.id as usize)
            .map_or_else(|| format!("probe {}", rec.id), |p| p.function.clone());
        let what = match rec.args[0] {
            reason::API_ERROR => format!(
                "{function} failed (returned {}) in thread {}",
                rec.args[1] as i64, rec.tid
            ),
            _ => format!(
                "breakpoint: {function}({:#x}, {:#x}, {:#x}, ...) in thread {}",
                rec.args[1], rec.args[2], rec.args[3], rec.tid
            ),
        };
        let since = Instant::now();
        while !stop::is_stopped(pid) && since.elapsed() < STOP_TAKES_HOLD {
            std::thread::sleep(Duration::from_millis(5));
        }
        let stacks = match crate::snapshot::take_with(pid, Some((rec.tid, rec.args[7]))) {
            Ok(snap) => snap.text(false),
            Err(e) => format!("(stacks not read: {e})\n"),
        };
        log::warn!(
            "pid {pid} STOPPED at {what}\n\n{stacks}\nThe process is stopped. To go on: sudo modelprobe resume {pid}\nor look first: sudo gdb -p {pid}, sudo py-spy dump --pid {pid}, sudo modelprobe stacks --pid {pid} --native\n(it resumes by itself in {}; recording goes on)",
            humantime::format_duration(rules.timeout)
        );
        s.collector.note_event(Event {
            time_ns: rec.time_ns,
            pid,
            tid: rec.tid,
            kind: EventKind::Stopped,
            message: what,
            value: None,
            stack: None,
        });
        s.held.push((pid, Instant::now()));
    }
    s.held.retain(|&(pid, at)| {
        if !target::is_alive(pid) {
            log::info!("pid {pid} resumed (and has exited since)");
            return false;
        }
        if !stop::is_stopped(pid) {
            log::info!("pid {pid} resumed");
            return false;
        }
        if at.elapsed() >= rules.timeout {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            log::warn!(
                "pid {pid} resumed after {} stopped (--stop-timeout)",
                humantime::format_duration(rules.timeout)
            );
            return false;
        }
        true
    });
}

/// Resumes what this session stopped and is still stopped.
pub(super) fn release(s: &mut Session<'_>) {
    for (pid, _) in s.held.drain(..) {
        if target::is_alive(pid) && stop::is_stopped(pid) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            log::warn!("pid {pid} resumed: the recording ended while modelprobe held it stopped");
        }
    }
}
