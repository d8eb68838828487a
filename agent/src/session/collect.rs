//! Turns raw stack events into samples while recording: interns stacks, names threads, and
//! snapshots each process's mappings the first time it is seen (and again when a new stack
//! points outside what is known, after a `dlopen` or an `exec`).
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use modelprobe_common::{flags, kind, Record, StackEvent, COOKIE_ID_MASK, DEREF_ARG0_COOKIE};

use crate::{
    logs::LogAssembler,
    procmaps::MapsRegistry,
    sampler::{DataView, EventSink},
    symbolize::{symbolize_stacks, PerfMap, RawStack},
    target,
    trace::{Event, EventKind, Meta, Process, Recording, Sample, SampleKind, Span, Thread},
};

/// `CLONE_THREAD` from `linux/sched.h`.
const CLONE_THREAD: u64 = 0x0001_0000;

/// A probed call that has not returned yet.
#[derive(Debug, Clone)]
struct OpenSpan {
    probe: u32,
    start_ns: u64,
    args: [u64; 8],
    /// A string argument sent with the entry (a kernel name).
    text: Option<String>,
}

/// Something the session must act on: a new process to attach probes to, or an exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// A new process was forked by a target.
    NewProcess(u32),
    /// A target process replaced its image.
    Exec(u32),
}

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
    open_spans: HashMap<u32, Vec<OpenSpan>>,
    spans: Vec<Span>,
    events: Vec<Event>,
    lifecycle: Vec<Lifecycle>,
    probes: Vec<crate::trace::ProbeInfo>,
    unmatched_returns: u64,
    logs: LogAssembler,
    models: super::models::ModelFiles,
    error_stacks: Vec<(u32, u64, u32)>,
    /// (tid, time, probe id, stack) of calls that queue GPU work.
    launch_stacks: Vec<(u32, u64, u32, u32)>,
    exited: std::collections::HashSet<u32>,
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

    /// What has been collected so far, for the progress line.
    pub fn progress_line(&self, elapsed: Duration) -> String {
        format!(
            "recording {}s: {} samples, {} spans, {} events (Ctrl-C stops)",
            elapsed.as_secs(),
            self.samples.len(),
            self.spans.len(),
            self.events.len() + self.models.count()
        )
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

    /// Re-reads the mappings of every live process seen (what they mapped since comes from
    /// [`Collector::take_new_files`]).
    pub fn rescan_maps(&mut self) {
        let pids: Vec<u32> = self
            .processes
            .keys()
            .copied()
            .filter(|p| !self.exited.contains(p))
            .collect();
        for pid in pids {
            if self.maps.capture(pid).is_none() {
                self.exited.insert(pid);
            }
        }
    }

    /// Files each process mapped since the last call, however they were found: by the
    /// rescan, by a sample in code not known yet, or by an exec. Each file is handed over
    /// once, so a library that appears is always offered to the probe set.
    pub fn take_new_files(&mut self) -> Vec<(u32, Vec<String>)> {
        self.maps.take_new_files()
    }

    /// Processes seen that have not exited (as far as the collector knows).
    pub fn live_pids(&self) -> Vec<u32> {
        self.processes
            .keys()
            .copied()
            .filter(|p| !self.exited.contains(p))
            .collect()
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

    /// The probe table (indexed by probe id): how many arguments spans keep, which pack
    /// decodes them.
    pub fn set_probes(&mut self, probes: Vec<crate::trace::ProbeInfo>) {
        self.probes = probes;
    }

    /// Lifecycle changes since the last call, for the session to act on.
    pub fn take_lifecycle(&mut self) -> Vec<Lifecycle> {
        std::mem::take(&mut self.lifecycle)
    }

    fn event(&mut self, rec: &Record, kind: EventKind, message: String, value: Option<i64>) {
        // A thread that never ran into a sample (a library's idle helper thread) still has
        // events: it must be a known thread, with its name.
        self.threads.entry(rec.tid).or_insert_with(|| Thread {
            pid: rec.pid,
            tid: rec.tid,
            name: comm_str(&rec.comm),
        });
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

    /// Adds one span, lifecycle or signal record.
    pub fn ingest_record(&mut self, rec: &Record) {
        let comm = comm_str(&rec.comm);
        match rec.kind {
            kind::SPAN_ENTER => {
                self.open_spans.entry(rec.tid).or_default().push(OpenSpan {
                    probe: (rec.id & COOKIE_ID_MASK) as u32,
                    start_ns: rec.time_ns,
                    args: rec.args,
                    text: None,
                });
            }
            kind::SPAN_EXIT => {
                let stack = self.open_spans.entry(rec.tid).or_default();
                let probe = (rec.id & COOKIE_ID_MASK) as u32;
                let Some(pos) = stack.iter().rposition(|s| s.probe == probe) else {
                    self.unmatched_returns += 1;
                    return;
                };
                // Anything opened above it lost its return: drop those, count them.
                self.unmatched_returns += (stack.len() - pos - 1) as u64;
                stack.truncate(pos + 1);
                let open = stack.pop().expect("pos is in range");
                let mut attrs = std::collections::BTreeMap::new();
                if let Some(text) = open.text {
                    attrs.insert("name".to_string(), serde_json::json!(text));
                }
                if rec.id & DEREF_ARG0_COOKIE != 0 {
                    attrs.insert(
                        "handle".to_string(),
                        serde_json::json!(format!("{:#x}", rec.args[1])),
                    );
                }
                self.spans.push(Span {
                    probe: open.probe,
                    pid: rec.pid,
                    tid: rec.tid,
                    start_ns: open.start_ns,
                    end_ns: rec.time_ns,
                    depth: pos as u32,
                    args: open.args.to_vec(),
                    ret: Some(rec.args[0]),
                    attrs,
                    stack: None,
                });
            }
            kind::TASK_NEW => {
                let child = rec.id as u32;
                if rec.args[0] & CLONE_THREAD != 0 {
                    self.event(
                        rec,
                        EventKind::ThreadStart,
                        format!("thread {child} started"),
                        Some(child as i64),
                    );
                } else {
                    self.event(
                        rec,
                        EventKind::ProcessStart,
                        format!("{comm} forked process {child}"),
                        Some(child as i64),
                    );
                    self.lifecycle.push(Lifecycle::NewProcess(child));
                    self.watch(child);
                }
            }
            kind::EXEC => {
                self.event(rec, EventKind::Exec, format!("exec {comm}"), None);
                if let Some(p) = self.processes.get_mut(&rec.pid) {
                    p.name = Some(comm.clone());
                    p.cmdline = None;
                    p.last_capture = None;
                }
                self.watch(rec.pid);
                self.lifecycle.push(Lifecycle::Exec(rec.pid));
            }
            kind::TASK_EXIT => {
                if rec.args[0] != 0 {
                    self.exited.insert(rec.pid);
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
                self.event(rec, kind, msg, None);
            }
            kind::RENAME => {
                self.event(
                    rec,
                    EventKind::ThreadRename,
                    format!("thread {} renamed to {comm}", rec.tid),
                    None,
                );
                if let Some(t) = self.threads.get_mut(&rec.tid) {
                    t.name = comm;
                }
            }
            kind::SIGNAL => {
                let sig = rec.id as i32;
                let fatal = rec.args[1] == 0 && default_action_terminates(sig);
                let name = signal_name(sig);
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
                self.event(rec, kind, msg, Some(sig as i64));
            }
            other => log::debug!("unknown record kind {other}"),
        }
    }

    /// Interns an event's stacks; a stack not seen before makes sure its code is known.
    fn intern_stack(&mut self, ev: &StackEvent) -> u32 {
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
        match self.stack_ids.get(&raw) {
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
        }
    }

    /// Adds one event from the BPF side.
    pub fn ingest(&mut self, ev: &StackEvent) {
        let kind = match ev.kind {
            kind::CPU_SAMPLE => SampleKind::Cpu,
            kind::OFF_CPU => SampleKind::OffCpu,
            kind::API_ERROR_STACK => {
                let stack = self.intern_stack(ev);
                self.error_stacks.push((ev.tid, ev.time_ns, stack));
                return;
            }
            kind::SPAN_STACK => {
                let stack = self.intern_stack(&with_caller(ev));
                self.launch_stacks
                    .push((ev.tid, ev.time_ns, ev.probe, stack));
                return;
            }
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

        let stack = self.intern_stack(ev);
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
        meta.lost.unmatched_span_returns = self.unmatched_returns;
        let (logs, cut) = std::mem::take(&mut self.logs).finish();
        meta.lost.log_bytes_cut = cut;
        // Calls still running at the end become spans up to the end, with no return value.
        for (tid, stack) in std::mem::take(&mut self.open_spans) {
            let pid = self.threads.get(&tid).map(|t| t.pid).unwrap_or(tid);
            for (depth, open) in stack.into_iter().enumerate() {
                self.spans.push(Span {
                    probe: open.probe,
                    pid,
                    tid,
                    start_ns: open.start_ns,
                    end_ns: meta.end_ns.max(open.start_ns),
                    depth: depth as u32,
                    args: open.args.to_vec(),
                    ret: None,
                    attrs: Default::default(),
                    stack: None,
                });
            }
        }
        self.spans.sort_by_key(|s| (s.start_ns, s.depth));
        let (model_loads, _repeated_opens) = std::mem::take(&mut self.models).finish();
        self.events.extend(model_loads);
        self.events.sort_by_key(|e| e.time_ns);
        drop_exit_zaps(&mut self.events);
        // Kernel host stubs are named in the same pass as the stacks: one symbolizer, each
        // module parsed once.
        let stubs = host_stubs(&self.spans, &self.probes);
        let mut raw = std::mem::take(&mut self.stacks);
        let sample_stacks = raw.len();
        raw.extend(stubs.iter().map(|&(pid, addr)| RawStack {
            pid,
            kernel: vec![],
            user: vec![addr],
        }));
        let mut symbolized = symbolize_stacks(&raw, &self.maps, &self.perf_maps);
        let stub_stacks = symbolized.stacks.split_off(sample_stacks);
        let stub_names: HashMap<(u32, u64), String> = stubs
            .into_iter()
            .zip(stub_stacks)
            .filter_map(|(key, stack)| {
                let frame = &symbolized.frames[*stack.first()? as usize];
                (frame.kind != crate::trace::FrameKind::Unknown).then(|| (key, frame.name.clone()))
            })
            .collect();
        let mut rec = Recording::new(meta);
        rec.frames = symbolized.frames;
        rec.stacks = symbolized.stacks;
        self.samples.sort_by_key(|s| s.time_ns);
        rec.samples = self.samples;
        // Spans carry every captured word until here: probes attached mid-recording (packs found
        // by a rescan) were not in the table when their spans were paired.
        decode_pack_spans(&mut self.spans, &mut self.events, &self.probes, &stub_names);
        attach_error_stacks(&mut self.events, &self.error_stacks, &rec);
        attach_launch_stacks(&mut self.spans, &mut self.launch_stacks);
        for s in &mut self.spans {
            let keep = self
                .probes
                .get(s.probe as usize)
                .map_or(0, |p| p.args.min(8) as usize);
            s.args.truncate(keep);
        }
        rec.spans = self.spans;
        rec.probes = self.probes;
        rec.events = self.events;
        rec.logs = logs;
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

/// The pack function a span's probe stands for, if any.
fn pack_fn(
    span: &Span,
    probes: &[crate::trace::ProbeInfo],
) -> Option<(
    &'static crate::probes::packs::Pack,
    crate::probes::packs::PackFn,
)> {
    let info = probes.get(span.probe as usize)?;
    crate::probes::packs::lookup(info.pack.as_deref()?, &info.function)
}

/// Distinct (pid, host stub address) pairs of pack launches, to be named by the symbolizer.
fn host_stubs(spans: &[Span], probes: &[crate::trace::ProbeInfo]) -> Vec<(u32, u64)> {
    let mut stubs: Vec<(u32, u64)> = spans
        .iter()
        .filter_map(|s| {
            let arg = pack_fn(s, probes)?.1.decoder.host_stub_arg()?;
            Some((s.pid, *s.args.get(arg)?))
        })
        .collect();
    stubs.sort_unstable();
    stubs.dedup();
    stubs
}

/// Fills in what packs decode from span arguments, and turns failed pack calls into events.
/// `stub_names` names kernel host stubs (see [`host_stubs`]).
fn decode_pack_spans(
    spans: &mut [Span],
    events: &mut Vec<Event>,
    probes: &[crate::trace::ProbeInfo],
    stub_names: &HashMap<(u32, u64), String>,
) {
    use crate::probes::packs;
    // Driver function handles are named by the cuModuleGetFunction calls that returned them
    // (in time order, so a lookup always precedes the launches that use it).
    let mut handles: HashMap<(u32, String), String> = HashMap::new();
    for s in spans.iter_mut() {
        let Some((pack, pf)) = pack_fn(s, probes) else {
            continue;
        };
        let info = &probes[s.probe as usize];
        let pid = s.pid;
        let mut symbol = |addr: u64| stub_names.get(&(pid, addr)).cloned();
        s.attrs
            .extend(packs::decode(pf.decoder, &s.args, &mut symbol));
        if pf.decoder == packs::Decoder::GetFunction {
            if let (Some(name), Some(handle)) = (s.attrs.get("name"), s.attrs.get("handle")) {
                if let (Some(name), Some(handle)) = (name.as_str(), handle.as_str()) {
                    handles.insert(
                        (s.pid, handle.to_string()),
                        crate::symbolize::demangle(name),
                    );
                }
            }
        }
        if pf.decoder == packs::Decoder::DriverLaunch {
            let handle = s
                .attrs
                .get("function_handle")
                .and_then(|h| h.as_str())
                .map(str::to_string);
            if let Some(name) = handle.and_then(|h| handles.get(&(s.pid, h))) {
                s.attrs.insert("kernel".into(), serde_json::json!(name));
            }
        }
        if let Some(ret) = s.ret.filter(|r| pf.returns_status && r & 0xffff_ffff != 0) {
            let name = packs::error_name(pack, ret);
            s.attrs.insert("error".into(), serde_json::json!(name));
            events.push(Event {
                time_ns: s.end_ns,
                pid: s.pid,
                tid: s.tid,
                kind: EventKind::ApiError,
                message: format!("{} returned {} ({name})", info.function, ret & 0xffff_ffff),
                value: Some((ret & 0xffff_ffff) as i64),
                stack: None,
            });
        }
    }
    events.sort_by_key(|e| e.time_ns);
}

/// A stack taken at a function's entry, with its caller put back when the frame-pointer walk
/// skipped it (see [`flags::ENTRY_RET`]).
fn with_caller(ev: &StackEvent) -> StackEvent {
    let mut ev = *ev;
    let ret = ev.user_bp;
    let len = (ev.ustack_len as usize).min(ev.ustack.len());
    if ev.flags & flags::ENTRY_RET != 0
        && ret != 0
        && len >= 1
        && len < ev.ustack.len()
        && (len < 2 || ev.ustack[1] != ret)
    {
        ev.ustack.copy_within(1..len, 2);
        ev.ustack[1] = ret;
        ev.ustack_len += 1;
    }
    ev
}

/// When a thread calls `exit`, the kernel ends the process's other threads with SIGKILL, and
/// each of them reports it as delivered: that is a normal exit, not a kill. A real SIGKILL
/// reaches every thread, the main one included; the zap of an exit never reaches the thread
/// that exits (normally the main one). So SIGKILLs of a process whose main thread got none
/// are dropped.
fn drop_exit_zaps(events: &mut Vec<Event>) {
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

/// Gives each span its entry stack: the stack event of the same thread and probe taken during
/// the span (at its entry; calls on one thread do not overlap, so the match is exact).
fn attach_launch_stacks(spans: &mut [Span], stacks: &mut [(u32, u64, u32, u32)]) {
    if stacks.is_empty() {
        return;
    }
    stacks.sort_unstable_by_key(|&(tid, t, _, _)| (tid, t));
    let probes: std::collections::HashSet<u32> = stacks.iter().map(|s| s.2).collect();
    for s in spans.iter_mut().filter(|s| probes.contains(&s.probe)) {
        let from = stacks.partition_point(|&(tid, t, _, _)| (tid, t) < (s.tid, s.start_ns));
        s.stack = stacks[from..]
            .iter()
            .take_while(|&&(tid, t, _, _)| tid == s.tid && t <= s.end_ns)
            .find(|&&(_, _, probe, _)| probe == s.probe)
            .map(|&(_, _, _, stack)| stack);
    }
}

/// Gives each API error event the stack its failed call returned to (recorded by the return
/// probe of the same thread, nanoseconds after the return record), and names the caller.
fn attach_error_stacks(events: &mut [Event], stacks: &[(u32, u64, u32)], rec: &Recording) {
    for e in events.iter_mut().filter(|e| e.kind == EventKind::ApiError) {
        let found = stacks
            .iter()
            .filter(|(tid, t, _)| *tid == e.tid && t.abs_diff(e.time_ns) < 1_000_000)
            .min_by_key(|(_, t, _)| t.abs_diff(e.time_ns));
        let Some(&(_, _, stack)) = found else {
            continue;
        };
        e.stack = Some(stack);
        // The innermost real user frame is the caller (the return probe runs on its way back).
        let caller = rec.stacks.get(stack as usize).and_then(|frames| {
            frames
                .iter()
                .rev()
                .map(|&f| &rec.frames[f as usize])
                .find(|f| f.kind != crate::trace::FrameKind::Kernel && !f.inlined)
        });
        if let Some(f) = caller {
            e.message.push_str(&format!(", called from {}", f.name));
        }
    }
}

impl Collector {
    /// Records the model files `pid` already has open or mapped (for `attach`: they were
    /// loaded before recording began, so no open will be seen).
    pub fn note_loaded_models(&mut self, pid: u32, now_ns: u64) {
        self.models.already_loaded(pid, now_ns);
    }
}

impl Collector {
    /// Adds one log write or file open.
    pub fn ingest_data(&mut self, d: &DataView<'_>) {
        match d.kind {
            kind::LOG => self
                .logs
                .write(d.time_ns, d.pid, d.tid, d.fd, d.bytes, d.count),
            kind::ARG_STRING => {
                let text =
                    String::from_utf8_lossy(d.bytes.split(|&b| b == 0).next().unwrap_or(&[]))
                        .into_owned();
                let open = self
                    .open_spans
                    .get_mut(&d.tid)
                    .and_then(|stack| stack.iter_mut().rev().find(|s| s.probe == d.probe));
                if let Some(open) = open {
                    open.text = Some(text);
                }
            }
            kind::OPEN => {
                let path =
                    String::from_utf8_lossy(d.bytes.split(|&b| b == 0).next().unwrap_or(&[]))
                        .into_owned();
                self.models.opened(d.time_ns, d.pid, d.tid, &path, d.count);
            }
            other => log::debug!("unknown data record kind {other}"),
        }
    }
}

impl EventSink for Collector {
    fn data(&mut self, d: &DataView<'_>) {
        self.ingest_data(d);
    }

    fn stack(&mut self, ev: &StackEvent) {
        self.ingest(ev);
    }

    fn record(&mut self, rec: &Record) {
        self.ingest_record(rec);
    }
}

/// True for signals whose default action ends the process (with or without a core dump).
fn default_action_terminates(sig: i32) -> bool {
    !matches!(
        sig,
        libc::SIGCHLD
            | libc::SIGCONT
            | libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
            | libc::SIGURG
            | libc::SIGWINCH
    ) && sig > 0
        && sig < 32
}

/// `SIGSEGV`, or `signal N` for numbers without a name.
fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let probe = |args| crate::trace::ProbeInfo {
            spec: String::new(),
            path: String::new(),
            function: "f".into(),
            args,
            pack: None,
        };
        c.set_probes(vec![probe(2), probe(0)]);
        c.ingest_record(&rec(kind::SPAN_ENTER, 7, 10, 0, 42));
        c.ingest_record(&rec(kind::SPAN_ENTER, 7, 20, 1, 0));
        c.ingest_record(&rec(kind::SPAN_EXIT, 7, 30, 1, 9));
        c.ingest_record(&rec(kind::SPAN_EXIT, 7, 40, 0, 84));
        c.ingest_record(&rec(kind::SPAN_EXIT, 7, 50, 0, 0)); // no entry
        c.ingest_record(&rec(kind::SPAN_ENTER, 8, 60, 0, 1)); // never returns
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
        c.ingest_record(&rec(kind::TASK_NEW, 1, 1, 5, CLONE_THREAD));
        c.ingest_record(&rec(kind::TASK_NEW, 1, 2, 6, 0));
        let mut segv = rec(kind::SIGNAL, 1, 3, libc::SIGSEGV as u64, 0);
        segv.args[1] = 0; // SIG_DFL: the default action, death
        c.ingest_record(&segv);
        let mut handled = rec(kind::SIGNAL, 1, 4, libc::SIGUSR1 as u64, 0);
        handled.args[1] = 0x1234; // a handler is installed
        c.ingest_record(&handled);
        assert_eq!(c.take_lifecycle(), vec![Lifecycle::NewProcess(6)]);
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
