//! Phase two: the event loop. Every ~100 ms it drains the ring buffers into the collector and
//! acts on what they said (a fork to attach probes to, an exec to resolve them again in, a
//! newly mapped library to look for packs in), polls the GPU libraries, and checks whether the
//! session is over.
use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use super::{start::Session, Collector, Lifecycle, Target};
use crate::{clock, probes::ProbeSet, sampler::Sampler, target};

/// How and when the loop ended.
pub(super) struct Stopped {
    /// `target-exited`, `signal` or `duration`.
    pub end_reason: &'static str,
    /// For `run`: the command's exit status (128 + signal if killed).
    pub exit_status: Option<i32>,
    /// CLOCK_MONOTONIC when it ended, ns.
    pub end_ns: u64,
}

/// How long `run` waits for the command to exit after forwarding a signal to it.
const FORWARD_GRACE: Duration = Duration::from_secs(5);

/// Records until the command exits, the target exits, the duration ends or a signal comes.
pub(super) fn run(s: &mut Session<'_>) -> Stopped {
    super::flight::start(s);
    super::watching::start(s);
    let mut probes_seen = usize::MAX;
    // Memory from the start (then once a second).
    s.collector.sample_memory();
    let mut last_rescan = Instant::now();
    let mut last_progress = Instant::now();
    let mut forwarded_at: Option<Instant> = None;
    loop {
        if s.progress.is_active() && last_progress.elapsed() >= Duration::from_millis(500) {
            last_progress = Instant::now();
            s.progress
                .set(&s.collector.progress_line(s.started_at.elapsed()));
        }
        if s.sampler.wait(Duration::from_millis(100)) {
            s.sampler.drain(&mut s.collector);
            follow_lifecycle(&mut s.collector, &mut s.sampler, &mut s.probes);
            for (pid, conn, read, socket, bytes) in s.collector.take_skip_requests() {
                s.sampler.skip_plaintext(pid, conn, read, socket, bytes);
            }
            s.collector.close_exited_connections();
            s.collector.publish();
        }
        s.gpu.poll(&s.collector.live_pids());
        s.python.offer(&s.collector.live_pids());
        // Libraries loaded from outside any search path (a wheel's RPATH, a ctypes load):
        // found by the rescan, or earlier by a sample landing in them.
        if last_rescan.elapsed() >= Duration::from_secs(1) {
            last_rescan = Instant::now();
            s.collector.rescan_maps();
            s.collector.sample_memory();
            s.sampler.forget_exited();
            s.sampler.drain_off_cpu_sums(&mut s.collector, false);
            publish_progress(s);
        }
        for (pid, files) in s.collector.take_new_files() {
            if let Err(e) = s.probes.on_new_files(&mut s.sampler, pid, &files) {
                log::warn!("probes not attached to new libraries of pid {pid}: {e}");
            }
            s.sampler.refresh_unwind(pid);
            // A static interpreter is found at the exec; a shared one when it is mapped.
            if files.iter().any(|f| crate::python::detect::is_libpython(f)) {
                s.sampler.set_python(pid, || s.collector.python_entry(pid));
            }
        }
        s.sampler.poll_unwind();
        adopt(s);
        let fired = super::watching::take(s, &mut probes_seen);
        super::stops::follow(s, &fired);
        super::flight::follow(s, &fired);
        if let Some(stopped) = check_end(s, &mut forwarded_at) {
            super::stops::release(s);
            if s.opts.flight.is_some() {
                // What the end brought (a fatal signal, a last error) can still trigger a dump.
                s.sampler.drain(&mut s.collector);
                let fired = super::watching::take(s, &mut probes_seen);
                super::flight::follow(s, &fired);
            }
            return stopped;
        }
    }
}

/// The live metrics' running figures: drop counters and how much is recorded.
fn publish_progress(s: &Session<'_>) {
    let Some(live) = s.collector.live_metrics() else {
        return;
    };
    s.collector.publish_process_cpu();
    match s.sampler.lost() {
        Ok(counts) => live.lost(&super::finish::lost_in_kernel(&counts)),
        Err(e) => log::debug!("metrics: drop counters not read: {e}"),
    }
    live.progress(
        s.collector.live_pids().len(),
        s.started_at.elapsed().as_secs_f64(),
    );
}

/// Whether the session is over: the target exited, a signal came (forwarded to a launched
/// command, which then gets [`FORWARD_GRACE`] to exit), or the duration ran out.
fn check_end(s: &Session<'_>, forwarded_at: &mut Option<Instant>) -> Option<Stopped> {
    let stopped = |end_reason, exit_status| Stopped {
        end_reason,
        exit_status,
        end_ns: clock::monotonic_ns(),
    };
    match &s.child {
        Some(c) => {
            if let Some(status) = target::try_wait(c.pid) {
                return Some(stopped("target-exited", Some(status)));
            }
        }
        None if !target::is_alive(s.target_pid)
            && !s.opts.more_pids.iter().any(|&p| target::is_alive(p))
            && !s.adopted.iter().any(|&p| target::is_alive(p)) =>
        {
            return Some(stopped("target-exited", None))
        }
        None => {}
    }
    let signal = s.opts.stop.load(Ordering::Relaxed);
    if signal != 0 {
        match (&s.child, *forwarded_at) {
            (None, _) => return Some(stopped("signal", None)),
            (Some(c), None) => {
                if !(signal == libc::SIGINT as usize && sigint_from_terminal()) {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(c.pid as i32, signal as i32) };
                }
                log::info!(
                    "signal {signal}: waiting up to {}s for the command to exit",
                    FORWARD_GRACE.as_secs()
                );
                *forwarded_at = Some(Instant::now());
            }
            (Some(_), Some(at)) if at.elapsed() > FORWARD_GRACE => {
                log::warn!("the command is still running; finalizing the recording without it");
                return Some(stopped("signal", Some(128 + signal as i32)));
            }
            _ => {}
        }
    }
    let attach = matches!(s.opts.target, Target::Pid(_));
    if attach && s.opts.duration.is_some_and(|d| s.started_at.elapsed() >= d) {
        return Some(stopped("duration", None));
    }
    None
}

/// Records the processes handed over since the last call ([`super::RecordOptions::adopt`])
/// as the ones named at the start are: their children, unwind tables, Python frames, probes.
fn adopt(s: &mut Session<'_>) {
    let Some(adopt) = &s.opts.adopt else {
        return;
    };
    let start_ns = clock::monotonic_ns();
    for pid in adopt.take() {
        let known = pid == s.target_pid
            || s.opts.more_pids.contains(&pid)
            || s.adopted.contains(&pid)
            || s.collector.live_pids().contains(&pid);
        if known || !target::is_alive(pid) {
            continue;
        }
        log::info!(
            "recording pid {pid} ({}) from now on",
            target::cmdline(pid).unwrap_or_default()
        );
        s.adopted.push(pid);
        let tree: Vec<u32> = std::iter::once(pid)
            .chain(target::descendants(pid))
            .collect();
        for &p in &tree {
            s.collector.watch(p);
            s.sampler.set_python(p, || s.collector.python_entry(p));
            if let Err(e) = s.sampler.add_target(p) {
                log::warn!("pid {p} not sampled: {e}");
                continue;
            }
            if let Err(e) = s.probes.attach_to(&mut s.sampler, p) {
                log::warn!("probes not attached to {p}: {e}");
            }
        }
        s.collector.note_loaded_models(pid, start_ns);
    }
}

/// True when `SIGINT` most likely came from the terminal, which already delivered it to the
/// launched command (same foreground process group).
fn sigint_from_terminal() -> bool {
    // SAFETY: both calls only read process state; tcgetpgrp fails harmlessly without a tty.
    unsafe { libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp() }
}

/// Gives processes the target forked their unwind tables and probes, and both again after an
/// exec. A fork shares its parent's tables and mappings (nothing of its own is read); an exec
/// is a new image to read.
fn follow_lifecycle(collector: &mut Collector, sampler: &mut Sampler, probes: &mut ProbeSet) {
    for change in collector.take_lifecycle() {
        let pid = match change {
            Lifecycle::NewProcess { pid, parent } => {
                if !sampler.inherit_unwind(pid, parent) && crate::target::is_alive(pid) {
                    sampler.refresh_unwind(pid);
                }
                // The child's interpreter is its parent's (the kernel copied its entry).
                if probes.is_empty() {
                    continue;
                }
                pid
            }
            Lifecycle::Exec(pid) => pid,
        };
        // A short-lived child (a shell, a tool an agent runs) is often gone by the time its
        // record is read: nothing to attach to or walk.
        if !crate::target::is_alive(pid) {
            continue;
        }
        let result = match change {
            Lifecycle::NewProcess { pid, .. } => probes.attach_to(sampler, pid),
            Lifecycle::Exec(pid) => {
                // Tables are built off this thread: asking costs nothing now.
                sampler.refresh_unwind(pid);
                sampler.set_python(pid, || collector.python_entry(pid));
                if probes.is_empty() {
                    continue;
                }
                probes.on_exec(sampler, pid)
            }
        };
        if let Err(e) = result {
            log::warn!("probes not attached after {change:?}: {e}");
        }
    }
}
