//! Turns what the BPF side sends during a recording into the pieces of a recording, one part
//! per kind of record:
//!
//! - [`processes`]: names, threads, mappings and perf maps of every target process;
//! - [`stacks`]: CPU and off-CPU samples, their stacks interned;
//! - [`spans`]: probed calls paired into spans, with their argument strings and stacks;
//! - [`lifecycle`]: process, thread and signal events, and the changes the session acts on;
//! - [`log_lines`]: stdout and stderr writes reassembled into leveled lines;
//! - [`models`]: model files opened or held;
//! - [`allocations`]: `--memory`'s allocations, frees and page faults, by stack; [`memory`]
//!   each process's resident memory over time; [`oom`] explains out-of-memory failures;
//! - [`exceptions`]: uncaught Python exceptions, from the tracebacks printed on stderr;
//! - [`llm`]: TLS plaintext put back in order for the LLM-call parser.
//!
//! [`Collector::finish`] (in `finalize.rs`) is the one step that symbolizes and assembles the
//! whole [`Recording`](crate::recording::Recording).
use std::time::Duration;

use modelprobe_common::{kind, Record, StackEvent};

use crate::{
    recording::{ProbeInfo, SampleKind},
    sampler::{DataView, EventSink, OffCpu, TlsView},
};

mod allocations;
mod exceptions;
mod finalize;
mod lifecycle;
mod llm;
pub mod log_lines;
mod memory;
mod models;
mod oom;
mod processes;
mod spans;
mod stacks;
pub mod triggers;

pub use lifecycle::Lifecycle;

/// Accumulates one session's records.
#[derive(Debug, Default)]
pub struct Collector {
    procs: processes::Processes,
    stacks: stacks::Stacks,
    spans: spans::Spans,
    tasks: lifecycle::Tasks,
    logs: log_lines::LogAssembler,
    models: models::ModelFiles,
    probes: Vec<ProbeInfo>,
    /// The LLM-call parser, when TLS plaintext is captured.
    llm: Option<llm::LlmCapture>,
    /// Processes that exited in the records drained last, and when: their connections end
    /// once everything they sent before has been drained too.
    exited: Vec<(u32, u64)>,
    /// `STOP` records not yet taken by the session.
    stops: Vec<Record>,
    /// Live outputs fed as records arrive (`--metrics-addr`, `--export jsonl:`).
    live: crate::live::Live,
    /// Lifecycle events already handed to the live outputs.
    events_published: usize,
    /// A flight recorder's triggers, when on.
    triggers: Option<triggers::Watch>,
    /// Memory over time, when asked for (`--memory`).
    memory: Option<memory::MemoryCounters>,
    /// Allocations, frees and page faults by stack (`--memory`).
    allocations: allocations::Allocations,
}

/// A `comm` (thread name) up to its NUL.
fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// The text of a payload up to its first NUL (a path, a string argument).
fn c_str(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes.split(|&b| b == 0).next().unwrap_or(&[])).into_owned()
}

/// A path that names a shared object (`libx.so`, `libx.so.1.2`, `mod.cpython-312-x86_64-linux-gnu.so`).
fn is_shared_object(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so") || name.contains(".so.")
}

impl Collector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands what arrives to `live` as well.
    pub fn publish_to(&mut self, live: crate::live::Live) {
        self.live = live;
    }

    /// The process name a metric labels `pid`'s data with.
    fn process_label(&self, pid: u32) -> &str {
        self.procs.name(pid).unwrap_or("unknown")
    }

    /// Hands what finished since the last call to the live outputs (it stays in the
    /// recording): LLM calls, lifecycle events; then flushes the stream. Called after each
    /// drain.
    pub fn publish(&mut self) {
        if !self.live.is_on() {
            return;
        }
        if let Some(llm) = self.llm.as_mut() {
            for c in llm.take_finished() {
                self.live.llm_call(c);
            }
        }
        for e in self.tasks.events_since(self.events_published) {
            self.live.event(e);
        }
        self.events_published = self.tasks.count();
        self.live.flush();
    }

    /// Counts each live process's CPU time, as the kernel accounts it, into the live metrics.
    pub fn publish_process_cpu(&self) {
        let Some(m) = self.live.metrics.as_deref() else {
            return;
        };
        let live = self.live_pids();
        for &pid in &live {
            if let Some(total) = crate::target::cpu_seconds(pid) {
                m.process_cpu(pid, self.process_label(pid), total);
            }
        }
        m.keep_process_cpu(&live);
    }

    /// The live metrics, if any.
    pub fn live_metrics(&self) -> Option<&crate::live::LiveMetrics> {
        self.live.metrics.as_deref()
    }

    /// Parse the TLS plaintext the kernel sends into LLM calls, with `options`.
    pub fn capture_llm_calls(&mut self, options: modelprobe_llm::Options) {
        self.llm = Some(llm::LlmCapture::new(options));
    }

    /// Ends the connections of the processes that exited in the last drain: called after it,
    /// when the TLS records they wrote before exiting have been read too.
    pub fn close_exited_connections(&mut self) {
        let exited = std::mem::take(&mut self.exited);
        if let Some(llm) = self.llm.as_mut() {
            for (pid, time_ns) in exited {
                llm.close_process(pid, time_ns);
            }
        }
    }

    /// Large non-LLM bodies the kernel can stop sending: (pid, connection, read, socket,
    /// bytes), for [`Sampler::skip_plaintext`](crate::sampler::Sampler::skip_plaintext).
    pub fn take_skip_requests(&mut self) -> Vec<(u32, u64, bool, bool, u64)> {
        self.llm
            .as_mut()
            .map(llm::LlmCapture::take_skip_requests)
            .unwrap_or_default()
    }

    /// Number of samples so far.
    pub fn sample_count(&self) -> usize {
        self.stacks.sample_count()
    }

    /// What has been collected so far, for the progress line.
    pub fn progress_line(&self, elapsed: Duration) -> String {
        format!(
            "recording {}s: {} samples, {} spans, {} events (Ctrl-C stops)",
            elapsed.as_secs(),
            self.stacks.sample_count(),
            self.spans.count(),
            self.tasks.count() + self.models.count()
        )
    }

    /// Records what is known of `pid` now: its mappings, name and command line.
    pub fn watch(&mut self, pid: u32) {
        self.procs.watch(pid);
    }

    /// Re-reads the mappings of every live process seen (what they mapped since comes from
    /// [`Collector::take_new_files`]).
    pub fn rescan_maps(&mut self) {
        self.procs.rescan();
    }

    /// Files each process mapped since the last call, however they were found: by the
    /// rescan, by a sample in code not known yet, or by an exec. Each file is handed over
    /// once, so a library that appears is always offered to the probe set.
    pub fn take_new_files(&mut self) -> Vec<(u32, Vec<String>)> {
        self.procs.take_new_files()
    }

    /// Processes seen that have not exited (as far as the collector knows).
    pub fn live_pids(&self) -> Vec<u32> {
        self.procs.live_pids()
    }

    /// The probe table (indexed by probe id): how many arguments spans keep, which pack
    /// decodes them.
    pub fn set_probes(&mut self, probes: Vec<ProbeInfo>) {
        self.probes = probes;
    }

    /// Looks for `pid`'s CPython (again, after an exec or a new library): the layout the
    /// BPF side reads its Python frames with, if it runs one it knows.
    pub fn python_entry(&mut self, pid: u32) -> Option<modelprobe_common::python::PyProc> {
        self.procs.python.detect(pid)
    }

    /// The stops the BPF side made since the last call.
    pub fn take_stops(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.stops)
    }

    /// Records each process's memory from now on ([`Collector::sample_memory`]).
    pub fn record_memory(&mut self) {
        self.memory.get_or_insert_with(Default::default);
    }

    /// Heap allocations are sampled, one per `mean` bytes on average (`--memory=malloc`).
    pub fn sample_heap(&mut self, mean: u64) {
        self.allocations.malloc_sample_bytes = mean;
    }

    /// Reads every live process's memory now (when memory is recorded).
    pub fn sample_memory(&mut self) {
        if self.memory.is_none() {
            return;
        }
        let t = crate::clock::monotonic_ns();
        let pids = self.live_pids();
        if let Some(m) = self.memory.as_mut() {
            for pid in pids {
                m.sample(pid, t);
            }
        }
    }

    /// Adds an event the session made.
    pub fn note_event(&mut self, e: crate::recording::Event) {
        self.tasks.push(e);
    }

    /// Lifecycle changes since the last call, for the session to act on.
    pub fn take_lifecycle(&mut self) -> Vec<Lifecycle> {
        self.tasks.take_changes()
    }

    /// The time on CPU of threads still alive at the end (those that exited said theirs in
    /// their exit record).
    pub fn thread_cpu(&mut self, threads: &[(u32, modelprobe_common::offcpu::ThreadCpu)]) {
        for (tid, t) in threads {
            self.procs.cpu_time(t.pid, *tid, t.cpu_ns);
        }
    }

    /// Records the model files `pid` already has open or mapped (for `attach`: they were
    /// loaded before recording began, so no open will be seen).
    pub fn note_loaded_models(&mut self, pid: u32, now_ns: u64) {
        self.models.already_loaded(pid, now_ns);
    }
}

impl EventSink for Collector {
    fn stack(&mut self, ev: &StackEvent) {
        match ev.kind {
            kind::CPU_SAMPLE => {
                self.stacks.sample(ev, SampleKind::Cpu, &mut self.procs);
                if self.live.metrics.is_some() {
                    self.live.cpu_sample(self.process_label(ev.pid));
                }
            }
            kind::API_ERROR_STACK => {
                let stack = self.stacks.intern(ev, &mut self.procs);
                self.spans.error_stack(ev.tid, ev.time_ns, stack);
                self.trigger_api_error(ev.probe, ev.tid);
            }
            kind::SPAN_STACK => {
                let stack = self
                    .stacks
                    .intern(&stacks::with_caller(ev), &mut self.procs);
                self.spans.launch_stack(ev.tid, ev.time_ns, ev.probe, stack);
            }
            kind::MEM_ALLOC | kind::PAGE_FAULT => {
                self.allocations
                    .stack_event(ev, &mut self.stacks, &mut self.procs)
            }
            other => log::debug!("unknown event kind {other}"),
        }
    }

    fn off_cpu_stack(&mut self, stack_id: u64, stack: Option<&StackEvent>) {
        self.stacks.off_cpu_stack(stack_id, stack, &mut self.procs);
    }

    fn off_cpu(&mut self, interval: &OffCpu) {
        self.stacks.off_cpu(interval, &mut self.procs);
        if self.live.metrics.is_some() {
            self.live
                .blocked(self.process_label(interval.pid), interval.blocked_ns);
        }
    }

    fn record(&mut self, rec: &Record) {
        match rec.kind {
            kind::SPAN_ENTER => self.spans.enter(rec),
            kind::SPAN_EXIT => {
                let closed = self
                    .spans
                    .exit(rec)
                    .map(|s| (s.probe, s.end_ns.saturating_sub(s.start_ns)));
                if let Some((probe, ns)) = closed {
                    self.trigger_span(probe, ns, rec.pid);
                    if self.live.is_on() {
                        if let (Some(span), Some(p)) =
                            (self.spans.last(), self.probes.get(probe as usize))
                        {
                            self.live.span(p, span);
                        }
                    }
                }
            }
            kind::STOP => self.stops.push(*rec),
            kind::MEM_FREE => self.allocations.free(rec),
            kind::TASK_EXIT if rec.args[0] == 1 && self.llm.is_some() => {
                self.exited.push((rec.pid, rec.time_ns));
                self.tasks.ingest(rec, &mut self.procs);
            }
            _ => self.tasks.ingest(rec, &mut self.procs),
        }
    }

    fn data(&mut self, d: &DataView<'_>) {
        match d.kind {
            kind::LOG => self
                .logs
                .write(d.time_ns, d.pid, d.tid, d.fd, d.bytes, d.count),
            kind::ARG_STRING => self.spans.arg_string(d.tid, d.probe, c_str(d.bytes)),
            kind::OPEN => {
                let path = c_str(d.bytes);
                // A shared object opened is about to be mapped (dlopen): read the mappings
                // again now, so its unwind table and probes come before its first samples do.
                if is_shared_object(&path) {
                    self.procs.watch(d.pid);
                }
                self.models.opened(d.time_ns, d.pid, d.tid, &path, d.count)
            }
            other => log::debug!("unknown data record kind {other}"),
        }
    }

    fn tls(&mut self, t: &TlsView<'_>) {
        if let Some(llm) = self.llm.as_mut() {
            llm.ingest(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{EventKind, Meta};

    /// `CLONE_THREAD` from `linux/sched.h`.
    const CLONE_THREAD: u64 = 0x0001_0000;

    fn rec(kind: u32, tid: u32, t: u64, id: u64, a0: u64) -> Record {
        Record {
            kind,
            cpu: 0,
            pid: 1,
            tid,
            time_ns: t,
            id,
            args: [a0, 2, 3, 4, 5, 6, 7, 8],
            comm: *b"app\0\0\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    #[test]
    fn pairs_nested_spans_and_counts_lost_returns() {
        let mut c = Collector::new();
        let probe = |args| ProbeInfo {
            spec: String::new(),
            path: String::new(),
            function: "f".into(),
            args,
            pack: None,
        };
        c.set_probes(vec![probe(2), probe(0)]);
        c.record(&rec(kind::SPAN_ENTER, 7, 10, 0, 42));
        c.record(&rec(kind::SPAN_ENTER, 7, 20, 1, 0));
        c.record(&rec(kind::SPAN_EXIT, 7, 30, 1, 9));
        c.record(&rec(kind::SPAN_EXIT, 7, 40, 0, 84));
        c.record(&rec(kind::SPAN_EXIT, 7, 50, 0, 0)); // no entry
        c.record(&rec(kind::SPAN_ENTER, 8, 60, 0, 1)); // never returns
        let r = c.finish(Meta {
            end_ns: 100,
            ..Meta::default()
        });
        assert_eq!(r.spans.len(), 3);
        let outer = &r.spans[0];
        assert_eq!(
            (outer.start_ns, outer.end_ns, outer.depth, outer.ret),
            (10, 40, 0, Some(84))
        );
        assert_eq!(outer.args, vec![42, 2]);
        let inner = &r.spans[1];
        assert_eq!((inner.start_ns, inner.end_ns, inner.depth), (20, 30, 1));
        assert!(inner.args.is_empty());
        let open = &r.spans[2];
        assert_eq!((open.end_ns, open.ret), (100, None));
        assert_eq!(r.meta.lost.unmatched_span_returns, 1);
    }

    #[test]
    fn lifecycle_and_signals_become_events() {
        let mut c = Collector::new();
        c.record(&rec(kind::TASK_NEW, 1, 1, 5, CLONE_THREAD));
        c.record(&rec(kind::TASK_NEW, 1, 2, 6, 0));
        let mut segv = rec(kind::SIGNAL, 1, 3, libc::SIGSEGV as u64, 0);
        segv.args[1] = 0; // SIG_DFL: the default action, death
        c.record(&segv);
        let mut handled = rec(kind::SIGNAL, 1, 4, libc::SIGUSR1 as u64, 0);
        handled.args[1] = 0x1234; // a handler is installed
        c.record(&handled);
        assert_eq!(
            c.take_lifecycle(),
            vec![Lifecycle::NewProcess { pid: 6, parent: 1 }]
        );
        let r = c.finish(Meta::default());
        let kinds: Vec<EventKind> = r.events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::ThreadStart,
                EventKind::ProcessStart,
                EventKind::FatalSignal,
                EventKind::Signal
            ]
        );
        assert!(r.events[2].message.contains("SIGSEGV"));
    }
}
