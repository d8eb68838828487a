//! The session's half of stopping the target ([`crate::stop`]): when the BPF side says it
//! stopped a process, the session waits for the stop to take hold, prints every thread's stack
//! and how to go on, records a `stopped` event, and later sees the process resumed (by
//! `modelprobe resume`, a debugger, or its own timeout). A process still stopped when the
//! recording ends is resumed: nothing is left frozen by modelprobe.
use std::time::{Duration, Instant};

use modelprobe_common::stop::reason;

use super::{collect::triggers::Fired, start::Session};
use crate::{
    recording::{Event, EventKind},
    stop, target,
};

/// How long a stop is given to take hold before the stacks are taken anyway.
const STOP_TAKES_HOLD: Duration = Duration::from_secs(1);

/// Acts on the stops the BPF side made since the last call, makes the ones user-space rules
/// ask for (`fired`), and follows the processes held.
pub(super) fn follow(s: &mut Session<'_>, fired: &[Fired]) {
    let Some(rules) = s.opts.stops.clone() else {
        return;
    };
    let stops = s.collector.take_stops();
    // The probe table is read only when there is something to name.
    let table = if stops.is_empty() && fired.is_empty() {
        Vec::new()
    } else {
        s.probes.table()
    };
    let name = |probe: u64| {
        table
            .get(probe as usize)
            .map_or_else(|| format!("probe {probe}"), |p| p.function.clone())
    };
    for rec in stops {
        // The BPF side spent one of its budget; the session's count follows.
        s.stops_left = s.stops_left.saturating_sub(1);
        let function = name(rec.id);
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
        held(
            s,
            &rules,
            rec.pid,
            rec.tid,
            rec.time_ns,
            what,
            Some((rec.tid, rec.args[7])),
        );
    }
    for f in fired {
        let (pid, what) = match f {
            Fired::Log { line, pid } if rules.logs.iter().any(|r| r.is_match(line)) => (
                *pid,
                format!("log line: {}", line.chars().take(160).collect::<String>()),
            ),
            Fired::SlowSpan { probe, ns, pid } => {
                let function = name(u64::from(*probe));
                let slow = rules
                    .slow
                    .iter()
                    .any(|(f, min)| *f == function && *ns >= min.as_nanos() as u64);
                if !slow {
                    continue;
                }
                (*pid, format!("{function} took {:.1} ms", *ns as f64 / 1e6))
            }
            _ => continue,
        };
        if s.stops_left == 0 || !target::is_alive(pid) || stop::is_stopped(pid) {
            continue;
        }
        s.stops_left -= 1;
        // The BPF side's budget follows, so that --stop-max counts both.
        if let Err(e) = s.sampler.set_stop_budget(s.stops_left) {
            log::debug!("stop budget not updated: {e}");
        }
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        held(s, &rules, pid, 0, crate::clock::monotonic_ns(), what, None);
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

/// A process just stopped: its stacks printed, a `stopped` event, and it is followed until
/// it goes on.
fn held(
    s: &mut Session<'_>,
    rules: &crate::stop::StopOptions,
    pid: u32,
    tid: u32,
    time_ns: u64,
    what: String,
    hint: Option<(u32, u64)>,
) {
    let since = Instant::now();
    while !stop::is_stopped(pid) && since.elapsed() < STOP_TAKES_HOLD {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stacks = match crate::snapshot::take_with(pid, hint) {
        Ok(snap) => snap.text(false),
        Err(e) => format!("(stacks not read: {e})\n"),
    };
    log::warn!(
        "pid {pid} STOPPED at {what}\n\n{stacks}\nThe process is stopped. To go on: sudo modelprobe resume {pid}\nor look first: sudo gdb -p {pid}, sudo py-spy dump --pid {pid}, sudo modelprobe stacks --pid {pid} --native\n(it resumes by itself in {}; recording goes on)",
        humantime::format_duration(rules.timeout)
    );
    s.collector.note_event(Event {
        time_ns,
        pid,
        tid,
        kind: EventKind::Stopped,
        message: what,
        value: None,
        stack: None,
    });
    s.held.push((pid, Instant::now()));
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
