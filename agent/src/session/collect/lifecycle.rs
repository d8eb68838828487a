//! Process, thread and signal records into events (process and thread starts and exits, execs,
//! renames, signals), and the changes the session acts on (a new process to attach probes to,
//! an exec to resolve them again in).
use modelprobe_common::{kind, Record};

use super::{comm_str, processes::Processes};
use crate::{
    recording::{Event, EventKind},
    signals,
};

/// `CLONE_THREAD` from `linux/sched.h`.
const CLONE_THREAD: u64 = 0x0001_0000;

/// Something the session must act on: a new process to attach probes to, or an exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// A new process was forked by a target.
    NewProcess {
        /// The child.
        pid: u32,
        /// The process that forked it.
        parent: u32,
    },
    /// A target process replaced its image.
    Exec(u32),
}

/// Events so far, and changes not yet taken by the session.
#[derive(Debug, Default)]
pub struct Tasks {
    events: Vec<Event>,
    changes: Vec<Lifecycle>,
}

impl Tasks {
    /// Number of events so far.
    pub fn count(&self) -> usize {
        self.events.len()
    }

    /// Adds an event the session made (a stop).
    pub fn push(&mut self, e: Event) {
        self.events.push(e);
    }

    /// The events after the first `n`.
    pub fn events_since(&self, n: usize) -> &[Event] {
        self.events.get(n..).unwrap_or_default()
    }

    /// Lifecycle changes since the last call.
    pub fn take_changes(&mut self) -> Vec<Lifecycle> {
        std::mem::take(&mut self.changes)
    }

    fn event(
        &mut self,
        procs: &mut Processes,
        rec: &Record,
        kind: EventKind,
        message: String,
        value: Option<i64>,
    ) {
        procs.has_events(rec.pid, rec.tid, comm_str(&rec.comm));
        self.events.push(Event {
            time_ns: rec.time_ns,
            pid: rec.pid,
            tid: rec.tid,
            kind,
            message,
            value,
            stack: None,
        });
    }

    /// Adds one process, thread or signal record.
    pub fn ingest(&mut self, rec: &Record, procs: &mut Processes) {
        let comm = comm_str(&rec.comm);
        match rec.kind {
            kind::TASK_NEW => {
                let child = rec.id as u32;
                if rec.args[0] & CLONE_THREAD != 0 {
                    self.event(
                        procs,
                        rec,
                        EventKind::ThreadStart,
                        format!("thread {child} started"),
                        Some(child as i64),
                    );
                } else {
                    self.event(
                        procs,
                        rec,
                        EventKind::ProcessStart,
                        format!("{comm} forked process {child}"),
                        Some(child as i64),
                    );
                    self.changes.push(Lifecycle::NewProcess {
                        pid: child,
                        parent: rec.pid,
                    });
                    procs.python.inherit(child, rec.pid);
                    procs.forked(child, rec.pid);
                }
            }
            kind::EXEC => {
                self.event(procs, rec, EventKind::Exec, format!("exec {comm}"), None);
                procs.exec(rec.pid, &comm);
                self.changes.push(Lifecycle::Exec(rec.pid));
            }
            kind::TASK_EXIT => {
                if rec.args[0] != 0 {
                    procs.exited(rec.pid);
                }
                let (kind, msg) = if rec.args[0] != 0 {
                    (
                        EventKind::ProcessExit,
                        format!("process {} ({comm}) exited", rec.pid),
                    )
                } else {
                    (
                        EventKind::ThreadExit,
                        format!("thread {} ({comm}) exited", rec.tid),
                    )
                };
                self.event(procs, rec, kind, msg, None);
                // After the event, which names the thread from the record.
                procs.cpu_time(rec.pid, rec.tid, rec.args[1]);
            }
            kind::RENAME => {
                self.event(
                    procs,
                    rec,
                    EventKind::ThreadRename,
                    format!("thread {} renamed to {comm}", rec.tid),
                    None,
                );
                procs.renamed(rec.tid, comm);
            }
            kind::SIGNAL => {
                let sig = rec.id as i32;
                let fatal = rec.args[1] == 0 && signals::default_action_terminates(sig);
                let name = signals::name(sig);
                let (kind, msg) = if fatal {
                    (
                        EventKind::FatalSignal,
                        format!("fatal signal {name} in thread {} ({comm})", rec.tid),
                    )
                } else {
                    (
                        EventKind::Signal,
                        format!("signal {name} delivered to thread {} ({comm})", rec.tid),
                    )
                };
                self.event(procs, rec, kind, msg, Some(sig as i64));
            }
            kind::OOM_KILL => {
                let victim = rec.id as u32;
                let mib = |kib: u64| kib as f64 / 1024.0;
                let name = procs.name(victim).unwrap_or("?").to_string();
                let message = format!(
                    "process {victim} ({name}) chosen by the kernel's OOM killer: anon-rss {:.1} MiB, file-rss {:.1} MiB, shmem-rss {:.1} MiB, total-vm {:.1} MiB (the task out of memory: {} in process {})",
                    mib(rec.args[1]),
                    mib(rec.args[2]),
                    mib(rec.args[3]),
                    mib(rec.args[0]),
                    rec.tid,
                    rec.pid
                );
                self.events.push(Event {
                    time_ns: rec.time_ns,
                    pid: victim,
                    tid: victim,
                    kind: EventKind::OomKill,
                    message,
                    value: Some(rec.args[1] as i64),
                    stack: None,
                });
            }
            other => log::debug!("unknown record kind {other}"),
        }
    }

    /// Drops the events before `t` (a flight recorder's history).
    pub fn evict_before(&mut self, t: u64) {
        self.events.retain(|e| e.time_ns >= t);
    }

    /// The events, in time order, without the SIGKILLs of a normal exit.
    pub fn finish(mut self) -> Vec<Event> {
        self.events.sort_by_key(|e| e.time_ns);
        drop_exit_zaps(&mut self.events);
        self.events
    }
}

/// When a thread calls `exit`, the kernel ends the process's other threads with SIGKILL, and
/// each of them reports it as delivered: that is a normal exit, not a kill. A real SIGKILL
/// reaches every thread, the main one included; the zap of an exit never reaches the thread
/// that exits (normally the main one). So SIGKILLs of a process whose main thread got none
/// are dropped.
pub fn drop_exit_zaps(events: &mut Vec<Event>) {
    let killed_main: std::collections::HashSet<u32> = events
        .iter()
        .filter(|e| is_sigkill(e) && e.tid == e.pid)
        .map(|e| e.pid)
        .collect();
    events.retain(|e| !is_sigkill(e) || killed_main.contains(&e.pid));
}

fn is_sigkill(e: &Event) -> bool {
    e.kind == EventKind::FatalSignal && e.value == Some(i64::from(libc::SIGKILL))
}
