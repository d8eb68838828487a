//! Span records into spans: entry and return paired per thread, a string argument kept with its
//! call, and the stacks some calls send (the calling stack at a CUDA launch's entry, the caller
//! of a failed API call). At the end, what packs decode from the captured arguments.
use std::collections::{BTreeMap, HashMap};

use modelprobe_common::{Record, COOKIE_ID_MASK, DEREF_ARG0_COOKIE};

use crate::recording::{Event, EventKind, ProbeInfo, Recording, Span};

/// A probed call that has not returned yet.
#[derive(Debug, Clone)]
struct OpenSpan {
    probe: u32,
    start_ns: u64,
    args: [u64; 8],
    /// A string argument sent with the entry (a kernel name).
    text: Option<String>,
}

/// Spans being paired, and the stacks probes sent.
#[derive(Debug, Default)]
pub struct Spans {
    open: HashMap<u32, Vec<OpenSpan>>,
    spans: Vec<Span>,
    unmatched_returns: u64,
    /// (tid, time, stack) of failed API calls' callers.
    error_stacks: Vec<(u32, u64, u32)>,
    /// (tid, time, probe id, stack) of calls that queue GPU work.
    launch_stacks: Vec<(u32, u64, u32, u32)>,
}

/// What [`Spans::finish`] hands to the recording.
pub struct Paired {
    /// Every span, calls still running at the end included, by start.
    pub spans: Vec<Span>,
    /// Returns whose entry was never seen (or whose inner calls lost theirs).
    pub unmatched_returns: u64,
    /// (tid, time, stack) of failed API calls' callers.
    pub error_stacks: Vec<(u32, u64, u32)>,
    /// (tid, time, probe id, stack) of calls that queue GPU work.
    pub launch_stacks: Vec<(u32, u64, u32, u32)>,
}

impl Spans {
    /// Number of spans closed so far.
    pub fn count(&self) -> usize {
        self.spans.len()
    }

    /// A probed function was entered.
    pub fn enter(&mut self, rec: &Record) {
        self.open.entry(rec.tid).or_default().push(OpenSpan {
            probe: (rec.id & COOKIE_ID_MASK) as u32,
            start_ns: rec.time_ns,
            args: rec.args,
            text: None,
        });
    }

    /// A probed function returned: closes the innermost open call of that probe on the thread,
    /// and returns it (none when no call of it was open).
    pub fn exit(&mut self, rec: &Record) -> Option<&Span> {
        let stack = self.open.entry(rec.tid).or_default();
        let probe = (rec.id & COOKIE_ID_MASK) as u32;
        let Some(pos) = stack.iter().rposition(|s| s.probe == probe) else {
            self.unmatched_returns += 1;
            return None;
        };
        // Anything opened above it lost its return: drop those, count them.
        self.unmatched_returns += (stack.len() - pos - 1) as u64;
        stack.truncate(pos + 1);
        let open = stack.pop().expect("pos is in range");
        let mut attrs = BTreeMap::new();
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
        self.spans.last()
    }

    /// A string argument of the open call of `probe` on thread `tid`.
    pub fn arg_string(&mut self, tid: u32, probe: u32, text: String) {
        let open = self
            .open
            .get_mut(&tid)
            .and_then(|stack| stack.iter_mut().rev().find(|s| s.probe == probe));
        if let Some(open) = open {
            open.text = Some(text);
        }
    }

    /// The caller's stack of a call that failed.
    pub fn error_stack(&mut self, tid: u32, time_ns: u64, stack: u32) {
        self.error_stacks.push((tid, time_ns, stack));
    }

    /// The calling stack at the entry of a call of `probe` that queues GPU work.
    pub fn launch_stack(&mut self, tid: u32, time_ns: u64, probe: u32, stack: u32) {
        self.launch_stacks.push((tid, time_ns, probe, stack));
    }

    /// The span closed last.
    pub fn last(&self) -> Option<&Span> {
        self.spans.last()
    }

    /// Drops the spans that ended before `t`, and their stacks (a flight recorder's history).
    pub fn evict_before(&mut self, t: u64) {
        self.spans.retain(|s| s.end_ns >= t);
        self.error_stacks.retain(|&(_, at, _)| at >= t);
        self.launch_stacks.retain(|&(_, at, _, _)| at >= t);
    }

    /// Everything; calls still running at `end_ns` become spans up to it, with no return
    /// value. `pid_of` names a thread's process.
    pub fn finish(mut self, end_ns: u64, pid_of: impl Fn(u32) -> Option<u32>) -> Paired {
        for (tid, stack) in std::mem::take(&mut self.open) {
            let pid = pid_of(tid).unwrap_or(tid);
            for (depth, open) in stack.into_iter().enumerate() {
                self.spans.push(Span {
                    probe: open.probe,
                    pid,
                    tid,
                    start_ns: open.start_ns,
                    end_ns: end_ns.max(open.start_ns),
                    depth: depth as u32,
                    args: open.args.to_vec(),
                    ret: None,
                    attrs: Default::default(),
                    stack: None,
                });
            }
        }
        self.spans.sort_by_key(|s| (s.start_ns, s.depth));
        Paired {
            spans: self.spans,
            unmatched_returns: self.unmatched_returns,
            error_stacks: self.error_stacks,
            launch_stacks: self.launch_stacks,
        }
    }
}

/// The pack function a span's probe stands for, if any.
fn pack_fn(
    span: &Span,
    probes: &[ProbeInfo],
) -> Option<(
    &'static crate::probes::packs::Pack,
    crate::probes::packs::PackFn,
)> {
    let info = probes.get(span.probe as usize)?;
    crate::probes::packs::lookup(info.pack.as_deref()?, &info.function)
}

/// Distinct (pid, host stub address) pairs of pack launches, to be named by the symbolizer.
pub fn host_stubs(spans: &[Span], probes: &[ProbeInfo]) -> Vec<(u32, u64)> {
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
pub fn decode_pack_spans(
    spans: &mut [Span],
    events: &mut Vec<Event>,
    probes: &[ProbeInfo],
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
        if matches!(pf.decoder, packs::Decoder::Alloc { .. }) {
            // What the allocation returned through its out-parameter is the pointer.
            if let Some(ptr) = s.attrs.remove("handle") {
                s.attrs.insert("ptr".into(), ptr);
            }
        }
        if pf.decoder == packs::Decoder::GetFunction {
            if let (Some(name), Some(handle)) = (s.attrs.get("name"), s.attrs.get("handle")) {
                if let (Some(name), Some(handle)) = (name.as_str(), handle.as_str()) {
                    handles.insert(
                        (s.pid, handle.to_string()),
                        crate::recording::demangle(name),
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

/// Gives each API error event the stack its failed call returned to (recorded by the return
/// probe of the same thread, nanoseconds after the return record), and names the caller.
pub fn attach_error_stacks(events: &mut [Event], stacks: &[(u32, u64, u32)], rec: &Recording) {
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
                .find(|f| f.kind != crate::recording::FrameKind::Kernel && !f.inlined)
        });
        if let Some(f) = caller {
            e.message.push_str(&format!(", called from {}", f.name));
        }
    }
}
