//! Python-probe records into spans: each thread's enters and exits paired innermost first,
//! then the spans, their probes, caller stacks and escaping exceptions put into a recording.
//!
//! A generator or coroutine makes one span per run: from its start (or resumption) to its
//! yield (or return), marked `resumed` / `yielded`; so a generator that yields 3 values to a
//! `for` loop makes 4 spans. An exception leaving a probed function ends its span with `error`
//! (`Type: message`) and, the first time it leaves one on that thread, a `python_exception`
//! event with the function's stack.
use std::collections::{BTreeMap, HashMap};

use modelprobe_common::pyprobe::{flags, Record};
use serde_json::json;

use crate::recording::{
    intern::Interner, Event, EventKind, Frame, FrameKind, ProbeInfo, Recording, Span,
};

/// A code object's names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeDef {
    /// `co_qualname`.
    pub qualname: String,
    /// `co_filename`.
    pub file: String,
    /// The module, when the probe knew it.
    pub module: String,
    /// `co_firstlineno`.
    pub first_line: u32,
    /// [`flags`] bits.
    pub flags: u16,
}

impl CodeDef {
    /// `module.qualname`, or the qualname alone.
    pub fn display(&self) -> String {
        if self.module.is_empty() {
            self.qualname.clone()
        } else {
            format!("{}.{}", self.module, self.qualname)
        }
    }

    fn pack(&self) -> Option<&'static str> {
        if self.flags & flags::PACK_TORCH != 0 {
            Some("pytorch")
        } else if self.flags & flags::PACK_OTHER != 0 {
            Some(if self.module.starts_with("vllm") {
                "vllm"
            } else {
                "transformers"
            })
        } else {
            None
        }
    }
}

#[derive(Debug, Clone)]
struct Open {
    code: u32,
    label: u32,
    start_ns: u64,
    resumed: bool,
    args: String,
    stack: Vec<u32>,
}

/// A finished (or still open) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PySpan {
    /// The code object's id.
    pub code: u32,
    /// Its label's id (0: none).
    pub label: u32,
    /// The thread.
    pub tid: u32,
    /// Start, CLOCK_MONOTONIC ns.
    pub start_ns: u64,
    /// End (`None`: still running when recording stopped).
    pub end_ns: Option<u64>,
    /// Probed calls open on the thread when it started.
    pub depth: u32,
    /// A resumption of a generator or coroutine.
    pub resumed: bool,
    /// Ended by a `yield`.
    pub yielded: bool,
    /// Arguments' `repr`s (`@args`).
    pub args: String,
    /// Return value's `repr` (`@ret`) or length (packs).
    pub ret: String,
    /// `Type: message` of an exception that left it.
    pub error: Option<String>,
    /// The caller stack, code ids innermost first.
    pub stack: Vec<u32>,
}

/// What one process's ring said, assembled.
#[derive(Debug, Default)]
pub struct Assembler {
    /// Code objects by id.
    pub codes: HashMap<u32, CodeDef>,
    /// Labels by id.
    pub labels: HashMap<u32, String>,
    open: HashMap<u32, Vec<Open>>,
    /// Finished spans, in end order.
    pub spans: Vec<PySpan>,
    /// Exceptions that left a probed function: (time, tid, span index).
    escaped: Vec<(u64, u32, usize)>,
    last_exception: HashMap<u32, u64>,
    /// Exits without an entry (calls begun before the probes were set).
    pub unmatched_exits: u64,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Assembler {
    /// Takes one record.
    pub fn feed(&mut self, rec: Record<'_>) {
        match rec {
            Record::Code {
                code,
                qualname,
                file,
                module,
            } => {
                let def = self.codes.entry(code.id).or_default();
                def.qualname = text(qualname);
                def.file = text(file);
                if !module.is_empty() {
                    def.module = text(module);
                }
                def.first_line = code.first_line;
                def.flags |= code.flags;
            }
            Record::Label { id, text: t } => {
                self.labels.insert(id, text(t));
            }
            Record::Enter {
                tid,
                enter,
                stack,
                text: t,
            } => {
                let stack = stack
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                self.open.entry(tid).or_default().push(Open {
                    code: enter.code,
                    label: enter.label,
                    start_ns: enter.time_ns,
                    resumed: enter.flags & flags::RESUMED != 0,
                    args: text(t),
                    stack,
                });
            }
            Record::Exit { tid, exit, text: t } => {
                let open = self.open.entry(tid).or_default();
                let Some(at) = open.iter().rposition(|o| o.code == exit.code) else {
                    self.unmatched_exits += 1;
                    return;
                };
                // Calls above it whose exits never came (events skipped inside a callback)
                // end with it.
                while open.len() > at + 1 {
                    let o = open.pop().expect("longer than at + 1");
                    let depth = open.len() as u32;
                    self.spans.push(finished(
                        o,
                        tid,
                        depth,
                        exit.time_ns,
                        false,
                        String::new(),
                        None,
                    ));
                }
                let o = open.pop().expect("found at `at`");
                let depth = open.len() as u32;
                let raised = exit.flags & flags::RAISED != 0;
                let (ret, error) = if raised {
                    (String::new(), Some(text(t)))
                } else {
                    (text(t), None)
                };
                self.spans.push(finished(
                    o,
                    tid,
                    depth,
                    exit.time_ns,
                    exit.flags & flags::YIELDED != 0,
                    ret,
                    error,
                ));
                if raised && self.last_exception.insert(tid, exit.exception) != Some(exit.exception)
                {
                    self.escaped.push((exit.time_ns, tid, self.spans.len() - 1));
                }
                if !raised {
                    self.last_exception.remove(&tid);
                }
            }
            Record::Unknown(_) => {}
        }
    }

    /// The names of code `id` (`[code N]` if its record never came: the library re-sends a
    /// dropped one, so only a ring read from the middle lacks one).
    fn code(&self, id: u32) -> CodeDef {
        self.codes.get(&id).cloned().unwrap_or_else(|| CodeDef {
            qualname: format!("[code {id}]"),
            ..CodeDef::default()
        })
    }

    /// Code `id` as a frame of a stack: `qualname (file.py)` (the line being run is not known).
    fn frame(&self, id: u32) -> Frame {
        let def = self.code(id);
        let short = def.file.rsplit('/').next().unwrap_or(&def.file).to_string();
        Frame {
            name: format!("{} ({short})", def.qualname),
            module: None,
            file: Some(def.file),
            line: None,
            kind: FrameKind::Python,
            inlined: false,
        }
    }

    /// Calls still running, as spans without an end.
    pub fn close_open(&mut self) {
        for (tid, open) in std::mem::take(&mut self.open) {
            for (depth, o) in open.into_iter().enumerate() {
                let mut s = finished(o, tid, depth as u32, 0, false, String::new(), None);
                s.end_ns = None;
                self.spans.push(s);
            }
        }
    }

    /// Puts the spans of process `pid` into `rec`: a probe per function (per module label for
    /// the PyTorch pack), caller stacks, and a `python_exception` event per escaping exception.
    pub fn into_recording(mut self, pid: u32, rec: &mut Recording) -> usize {
        self.close_open();
        let end = rec.meta.end_ns;
        let mut probe_of: HashMap<(u32, u32), u32> = HashMap::new();
        let mut frames = Interner::new(rec);
        let mut out = Vec::with_capacity(self.spans.len());
        for s in &self.spans {
            let def = self.code(s.code);
            let probe = *probe_of.entry((s.code, s.label)).or_insert_with(|| {
                let function = match self.labels.get(&s.label) {
                    Some(l) if s.label != 0 => l.clone(),
                    _ => def.display(),
                };
                rec.probes.push(ProbeInfo {
                    spec: format!("py:{}:{}", def.module, def.qualname),
                    path: def.file.clone(),
                    function,
                    args: 0,
                    pack: def.pack().map(str::to_string),
                });
                (rec.probes.len() - 1) as u32
            });
            let stack = frames.stack(rec, s.stack.iter().rev().map(|&c| self.frame(c)));
            let mut attrs = BTreeMap::new();
            if !s.args.is_empty() {
                attrs.insert("args".to_string(), json!(s.args));
            }
            if !s.ret.is_empty() {
                attrs.insert("return".to_string(), json!(s.ret));
            }
            if let Some(e) = &s.error {
                attrs.insert("error".to_string(), json!(e));
            }
            if s.resumed {
                attrs.insert("resumed".to_string(), json!(true));
            }
            if s.yielded {
                attrs.insert("yielded".to_string(), json!(true));
            }
            if s.end_ns.is_none() {
                attrs.insert("unfinished".to_string(), json!(true));
            }
            out.push(Span {
                probe,
                pid,
                tid: s.tid,
                start_ns: s.start_ns,
                end_ns: s.end_ns.unwrap_or(end).max(s.start_ns),
                depth: s.depth,
                args: Vec::new(),
                ret: None,
                attrs,
                stack,
            });
        }
        for &(time_ns, tid, i) in &self.escaped {
            let s = &self.spans[i];
            let def = self.code(s.code);
            let with_self = s.stack.iter().rev().copied().chain(std::iter::once(s.code));
            let stack = frames.stack(rec, with_self.map(|c| self.frame(c)));
            rec.events.push(Event {
                time_ns,
                pid,
                tid,
                kind: EventKind::PythonException,
                message: format!(
                    "{} (escaped {})",
                    s.error.as_deref().unwrap_or("exception"),
                    def.display()
                ),
                value: None,
                stack,
            });
        }
        let n = out.len();
        rec.spans.extend(out);
        rec.spans.sort_by_key(|s| s.start_ns);
        rec.events.sort_by_key(|e| e.time_ns);
        n
    }
}

fn finished(
    o: Open,
    tid: u32,
    depth: u32,
    end_ns: u64,
    yielded: bool,
    ret: String,
    error: Option<String>,
) -> PySpan {
    PySpan {
        code: o.code,
        label: o.label,
        tid,
        start_ns: o.start_ns,
        end_ns: Some(end_ns),
        depth,
        resumed: o.resumed,
        yielded,
        args: o.args,
        ret,
        error,
        stack: o.stack,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelprobe_common::pyprobe::{CodeRecord, EnterRecord, ExitRecord};

    fn enter(tid: u32, code: u32, t: u64, fl: u16) -> Record<'static> {
        Record::Enter {
            tid,
            enter: EnterRecord {
                time_ns: t,
                code,
                label: 0,
                flags: fl,
                stack_len: 0,
                _pad: 0,
            },
            stack: &[],
            text: &[],
        }
    }

    fn exit(
        tid: u32,
        code: u32,
        t: u64,
        fl: u16,
        exc: u64,
        text: &'static [u8],
    ) -> Record<'static> {
        Record::Exit {
            tid,
            exit: ExitRecord {
                time_ns: t,
                code,
                flags: fl,
                _pad: 0,
                exception: exc,
            },
            text,
        }
    }

    #[test]
    fn pairs_nested_calls_generators_and_exceptions() {
        let mut a = Assembler::default();
        for (id, name) in [(1, "outer"), (2, "inner")] {
            a.feed(Record::Code {
                code: CodeRecord {
                    id,
                    first_line: 1,
                    flags: flags::PROBED,
                    _pad: [0; 3],
                },
                qualname: name.as_bytes(),
                file: b"/app/m.py",
                module: b"m",
            });
        }
        a.feed(exit(7, 2, 5, 0, 0, b"")); // began before the probes
        a.feed(enter(7, 1, 10, 0));
        a.feed(enter(7, 2, 11, 0));
        a.feed(exit(7, 2, 12, flags::YIELDED, 0, b""));
        a.feed(enter(7, 2, 13, flags::RESUMED));
        a.feed(exit(7, 2, 14, flags::RAISED, 0xabc, b"ValueError: no"));
        a.feed(exit(7, 1, 15, flags::RAISED, 0xabc, b"ValueError: no"));
        a.feed(enter(8, 1, 20, 0));
        assert_eq!(a.unmatched_exits, 1);
        assert_eq!(a.spans.len(), 3);
        assert_eq!((a.spans[0].depth, a.spans[0].yielded), (1, true));
        assert!(a.spans[1].resumed);
        assert_eq!(a.spans[2].error.as_deref(), Some("ValueError: no"));
        assert_eq!(
            a.escaped.len(),
            1,
            "one event for one exception leaving two frames"
        );
        let mut rec = Recording::new(crate::recording::Meta {
            end_ns: 30,
            ..Default::default()
        });
        assert_eq!(a.into_recording(42, &mut rec), 4);
        assert_eq!(rec.probes.len(), 2);
        assert_eq!(rec.probes[0].function, "m.inner");
        let open = rec.spans.iter().find(|s| s.tid == 8).unwrap();
        assert_eq!(
            (open.end_ns, open.attrs.get("unfinished")),
            (30, Some(&json!(true)))
        );
        assert_eq!(rec.events.len(), 1);
        assert_eq!(rec.events[0].message, "ValueError: no (escaped m.inner)");
        let stack = &rec.stacks[rec.events[0].stack.unwrap() as usize];
        assert_eq!(rec.frames[stack[0] as usize].name, "inner (m.py)");
    }
}
