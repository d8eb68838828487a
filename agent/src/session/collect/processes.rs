//! What is known of each target process while it lives: its name and command line, its threads,
//! its executable mappings (with open handles on the mapped files, see [`MapsRegistry`]) and its
//! JIT perf map. Captured when a process is first seen, and again when a stack points outside
//! what is known (after a `dlopen` or an `exec`) or the periodic rescan finds new files.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use crate::{
    procmaps::MapsRegistry,
    python::Python,
    recording::{Process, Thread},
    symbolize::PerfMap,
    target,
};

/// Shortest gap between two re-reads of one process's mappings (or perf map).
const RECAPTURE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct ProcessInfo {
    name: Option<String>,
    cmdline: Option<String>,
    exe: Option<String>,
    cgroup: Option<String>,
    last_capture: Option<Instant>,
    last_perf_map: Option<Instant>,
}

/// Every target process and thread seen in one session.
#[derive(Debug, Default)]
pub struct Processes {
    maps: MapsRegistry,
    perf_maps: HashMap<u32, PerfMap>,
    info: HashMap<u32, ProcessInfo>,
    threads: HashMap<u32, Thread>,
    exited: HashSet<u32>,
    /// Each process's interpreter and the code objects read from it.
    pub python: Python,
}

/// What [`Processes::finish`] hands to symbolization and the recording.
pub struct Known {
    /// Every process's mappings, with the mapped files kept open.
    pub maps: MapsRegistry,
    /// JIT symbol maps read while their processes lived.
    pub perf_maps: HashMap<u32, PerfMap>,
    /// Processes by pid.
    pub processes: Vec<Process>,
    /// Threads by (pid, tid).
    pub threads: Vec<Thread>,
    /// What reading Python frames found and cost.
    pub python: Python,
}

impl Processes {
    /// Records what is known of `pid` now: its mappings, name and command line (at most every
    /// [`RECAPTURE_EVERY`]).
    pub fn watch(&mut self, pid: u32) {
        let info = self.info.entry(pid).or_default();
        if info
            .last_capture
            .is_some_and(|at| at.elapsed() < RECAPTURE_EVERY)
        {
            return;
        }
        info.last_capture = Some(Instant::now());
        if info.cmdline.is_none() {
            info.cmdline = target::cmdline(pid);
            info.exe = target::exe(pid);
        }
        if info.cgroup.is_none() {
            // Kept across an exec: a cgroup move is rare and a re-read per exec is not free.
            info.cgroup = target::cgroup(pid);
        }
        if let Some(name) = target::comm(pid) {
            info.name = Some(name);
        }
        self.maps.capture(pid);
    }

    /// `child` was forked by `parent`: the same image, command line and mappings, known
    /// without reading anything of the child's (a fork-heavy target costs no file opens).
    /// Its own mappings are read again by the periodic rescan or an exec. A parent not
    /// known yet is watched in the usual way.
    pub fn forked(&mut self, child: u32, parent: u32) {
        if !self.maps.inherit(child, parent) {
            self.watch(child);
            return;
        }
        let from = self.info.get(&parent);
        let info = ProcessInfo {
            name: from.and_then(|p| p.name.clone()),
            cmdline: from.and_then(|p| p.cmdline.clone()),
            exe: from.and_then(|p| p.exe.clone()),
            cgroup: from.and_then(|p| p.cgroup.clone()),
            last_capture: Some(Instant::now()),
            last_perf_map: None,
        };
        self.info.insert(child, info);
    }

    /// The name `pid` was last seen with.
    pub fn name(&self, pid: u32) -> Option<&str> {
        self.info.get(&pid)?.name.as_deref()
    }

    /// True once `pid` has been watched.
    pub fn knows(&self, pid: u32) -> bool {
        self.info.contains_key(&pid)
    }

    /// Re-reads the mappings of every live process seen.
    pub fn rescan(&mut self) {
        for pid in self.live_pids() {
            if self.maps.capture(pid).is_none() {
                self.exited.insert(pid);
            }
        }
    }

    /// Files each process mapped since the last call, however they were found (see
    /// [`MapsRegistry::take_new_files`]).
    pub fn take_new_files(&mut self) -> Vec<(u32, Vec<String>)> {
        self.maps.take_new_files()
    }

    /// Processes seen that have not exited (as far as is known).
    pub fn live_pids(&self) -> Vec<u32> {
        self.info
            .keys()
            .copied()
            .filter(|p| !self.exited.contains(p))
            .collect()
    }

    /// `pid`'s last thread exited.
    pub fn exited(&mut self, pid: u32) {
        self.exited.insert(pid);
        self.python.forget(pid);
    }

    /// `pid` replaced its image: its name, command line and mappings are read again.
    pub fn exec(&mut self, pid: u32, comm: &str) {
        self.python.forget(pid);
        if let Some(p) = self.info.get_mut(&pid) {
            p.name = Some(comm.to_string());
            p.cmdline = None;
            p.last_capture = None;
        }
        self.watch(pid);
    }

    /// A sample of thread `tid` named `name`: the thread is known by its current name (and the
    /// main thread's name is the process's).
    pub fn sampled(&mut self, pid: u32, tid: u32, name: String) {
        if !self.knows(pid) {
            self.watch(pid);
        }
        if tid == pid && !name.is_empty() {
            if let Some(p) = self.info.get_mut(&pid) {
                p.name = Some(name.clone());
            }
        }
        self.threads
            .entry(tid)
            .and_modify(|t| t.name.clone_from(&name))
            .or_insert_with(|| Thread {
                pid,
                tid,
                name,
                cpu_ns: None,
            });
    }

    /// A thread that has events is a known thread, even one that never ran into a sample (a
    /// library's idle helper thread).
    pub fn has_events(&mut self, pid: u32, tid: u32, name: String) {
        self.threads.entry(tid).or_insert_with(|| Thread {
            pid,
            tid,
            name,
            cpu_ns: None,
        });
    }

    /// Thread `tid` of `pid` ran `cpu_ns` on CPU while recording (the scheduler's count: at
    /// its exit, or for the threads still alive at the end).
    pub fn cpu_time(&mut self, pid: u32, tid: u32, cpu_ns: u64) {
        self.seen_thread(pid, tid);
        if let Some(t) = self.threads.get_mut(&tid) {
            t.cpu_ns = Some(t.cpu_ns.unwrap_or(0).saturating_add(cpu_ns));
        }
    }

    /// A thread known only by its ids (an off-CPU sum names no `comm`): named from `/proc`
    /// while it lives.
    pub fn seen_thread(&mut self, pid: u32, tid: u32) {
        if !self.threads.contains_key(&tid) {
            // `/proc/TID` answers for any thread, listed or not.
            let name = crate::target::comm(tid).unwrap_or_default();
            self.has_events(pid, tid, name);
        }
    }

    /// Thread `tid` renamed itself.
    pub fn renamed(&mut self, tid: u32, name: String) {
        if let Some(t) = self.threads.get_mut(&tid) {
            t.name = name;
        }
    }

    /// The process thread `tid` belongs to, if it was seen.
    pub fn pid_of(&self, tid: u32) -> Option<u32> {
        self.threads.get(&tid).map(|t| t.pid)
    }

    /// True when every address is inside a file-backed mapping of `pid` known now.
    fn in_known_files(&self, pid: u32, user: &[u64]) -> bool {
        user.iter()
            .all(|&a| self.maps.lookup(pid, a).is_some_and(|m| m.module.is_some()))
    }

    /// A stack not seen before: makes sure its code is known while the process can still be
    /// asked (its mappings, and for code outside any file, the JIT's perf map).
    pub fn learn_code(&mut self, pid: u32, user: &[u64]) {
        if user.iter().any(|&a| self.maps.lookup(pid, a).is_none()) {
            self.watch(pid);
        }
        if !self.in_known_files(pid, user) {
            self.refresh_perf_map(pid);
        }
    }

    /// Re-reads `/tmp/perf-PID.map`, at most every [`RECAPTURE_EVERY`].
    fn refresh_perf_map(&mut self, pid: u32) {
        let info = self.info.entry(pid).or_default();
        if info
            .last_perf_map
            .is_some_and(|at| at.elapsed() < RECAPTURE_EVERY)
        {
            return;
        }
        info.last_perf_map = Some(Instant::now());
        let map = PerfMap::load(pid);
        if !map.is_empty() {
            self.perf_maps.insert(pid, map);
        }
    }

    /// Everything known, for symbolization and the recording.
    pub fn finish(self) -> Known {
        let mut processes: Vec<Process> = self
            .info
            .into_iter()
            .map(|(pid, info)| Process {
                pid,
                name: info.name.unwrap_or_else(|| format!("pid-{pid}")),
                cmdline: info.cmdline,
                exe: info.exe,
                cgroup: info.cgroup,
            })
            .collect();
        processes.sort_by_key(|p| p.pid);
        let mut threads: Vec<Thread> = self.threads.into_values().collect();
        threads.sort_by_key(|t| (t.pid, t.tid));
        Known {
            maps: self.maps,
            perf_maps: self.perf_maps,
            processes,
            threads,
            python: self.python,
        }
    }
}
