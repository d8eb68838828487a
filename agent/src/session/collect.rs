//! Turns raw stack events into samples while recording: interns stacks, names threads, and
//! snapshots each process's mappings the first time it is seen (and again when a new stack
//! points outside what is known, after a `dlopen` or an `exec`).
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use modelprobe_common::{flags, kind, StackEvent};

use crate::{
    procmaps::MapsRegistry,
    symbolize::{symbolize_stacks, PerfMap, RawStack},
    target,
    trace::{Meta, Process, Recording, Sample, SampleKind, Thread},
};

/// Shortest gap between two re-reads of one process's mappings.
const RECAPTURE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct ProcessInfo {
    name: Option<String>,
    cmdline: Option<String>,
    last_capture: Option<Instant>,
    last_perf_map: Option<Instant>,
}

/// Accumulates one session's events.
#[derive(Debug, Default)]
pub struct Collector {
    maps: MapsRegistry,
    stack_ids: HashMap<RawStack, u32>,
    stacks: Vec<RawStack>,
    samples: Vec<Sample>,
    threads: HashMap<u32, Thread>,
    processes: HashMap<u32, ProcessInfo>,
    perf_maps: HashMap<u32, PerfMap>,
    user_stack_errors: u64,
    kernel_stack_errors: u64,
}

fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

impl Collector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of samples so far.
    pub fn sample_count(&self) -> usize {
        self.samples.len()
    }

    /// Records what is known of `pid` now: its mappings, name and command line.
    pub fn watch(&mut self, pid: u32) {
        let info = self.processes.entry(pid).or_default();
        if let Some(at) = info.last_capture {
            if at.elapsed() < RECAPTURE_EVERY {
                return;
            }
        }
        info.last_capture = Some(Instant::now());
        if info.cmdline.is_none() {
            info.cmdline = target::cmdline(pid);
        }
        if let Some(name) = target::comm(pid) {
            info.name = Some(name);
        }
        self.maps.capture(pid);
    }

    /// Re-reads `/tmp/perf-PID.map`, at most every [`RECAPTURE_EVERY`].
    fn refresh_perf_map(&mut self, pid: u32) {
        let info = self.processes.entry(pid).or_default();
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

    /// Adds one event from the BPF side.
    pub fn ingest(&mut self, ev: &StackEvent) {
        let kind = match ev.kind {
            kind::CPU_SAMPLE => SampleKind::Cpu,
            kind::OFF_CPU => SampleKind::OffCpu,
            other => {
                log::debug!("unknown event kind {other}");
                return;
            }
        };
        if ev.flags & flags::USTACK_ERROR != 0 {
            self.user_stack_errors += 1;
        }
        if ev.flags & flags::KSTACK_ERROR != 0 {
            self.kernel_stack_errors += 1;
        }
        let name = comm_str(&ev.comm);
        if !self.processes.contains_key(&ev.pid) {
            self.watch(ev.pid);
        }
        if ev.tid == ev.pid && !name.is_empty() {
            // The main thread's name is the process name; it changes on exec.
            if let Some(p) = self.processes.get_mut(&ev.pid) {
                p.name = Some(name.clone());
            }
        }
        self.threads
            .entry(ev.tid)
            .and_modify(|t| t.name.clone_from(&name))
            .or_insert_with(|| Thread {
                pid: ev.pid,
                tid: ev.tid,
                name,
            });

        let klen = (ev.kstack_len as usize).min(ev.kstack.len());
        let ulen = (ev.ustack_len as usize).min(ev.ustack.len());
        let raw = RawStack {
            pid: ev.pid,
            kernel: ev.kstack[..klen].to_vec(),
            // A frame-pointer walk through code built without frame pointers can end in
            // zeros; they are not frames.
            user: ev.ustack[..ulen]
                .iter()
                .copied()
                .filter(|&a| a != 0)
                .collect(),
        };
        let stack = match self.stack_ids.get(&raw) {
            Some(&id) => id,
            None => {
                // A stack not seen before: make sure its code is in a known mapping while the
                // process can still be asked.
                if raw
                    .user
                    .iter()
                    .any(|&a| self.maps.lookup(ev.pid, a).is_none())
                {
                    self.watch(ev.pid);
                }
                // Code outside any file (JIT output): read the JIT's perf map while it exists.
                let maps = &self.maps;
                if raw
                    .user
                    .iter()
                    .any(|&a| maps.lookup(ev.pid, a).is_none_or(|m| m.module.is_none()))
                {
                    self.refresh_perf_map(ev.pid);
                }
                let id = self.stacks.len() as u32;
                self.stack_ids.insert(raw.clone(), id);
                self.stacks.push(raw);
                id
            }
        };
        self.samples.push(Sample {
            kind,
            time_ns: ev.time_ns,
            pid: ev.pid,
            tid: ev.tid,
            stack,
            weight: ev.weight,
        });
    }

    /// Symbolizes everything and builds the recording.
    pub fn finish(mut self, mut meta: Meta) -> Recording {
        meta.lost.user_stack_errors = self.user_stack_errors;
        meta.lost.kernel_stack_errors = self.kernel_stack_errors;
        let symbolized = symbolize_stacks(&self.stacks, &self.maps, &self.perf_maps);
        let mut rec = Recording::new(meta);
        rec.frames = symbolized.frames;
        rec.stacks = symbolized.stacks;
        self.samples.sort_by_key(|s| s.time_ns);
        rec.samples = self.samples;
        let mut processes: Vec<Process> = self
            .processes
            .into_iter()
            .map(|(pid, info)| Process {
                pid,
                name: info.name.unwrap_or_else(|| format!("pid-{pid}")),
                cmdline: info.cmdline,
            })
            .collect();
        processes.sort_by_key(|p| p.pid);
        rec.processes = processes;
        let mut threads: Vec<Thread> = self.threads.into_values().collect();
        threads.sort_by_key(|t| (t.pid, t.tid));
        rec.threads = threads;
        rec
    }
}
