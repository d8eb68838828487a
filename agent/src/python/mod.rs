//! Python frames in every stack: the agent's half.
//!
//! - [`detect`]: which CPython a process runs (shared `libpython3.X.so` or a static
//!   executable), where its `_PyRuntime` is, and which [`layout`] its version has; the BPF
//!   side gets the result as a `PyProc` and reads each thread's frames when a stack is taken
//!   (`ebpf/src/python.rs`).
//! - [`objects`]: the code objects those frames name, read out of the live process once each;
//!   [`lines`]: their line tables.
//! - [`merge`]: each `_PyEval_EvalFrameDefault` frame of the native stack replaced by the
//!   Python frames it was running, at symbolization.
//!
//! A process whose interpreter is not one of the versions read keeps its native frames and
//! gets one line saying so; no Python frame is ever made up.
pub mod detect;
pub mod layout;
pub mod lines;
pub mod merge;
pub mod objects;

use std::{collections::HashMap, sync::Arc};

use modelprobe_common::python::{frame, PyFrame, PyProc};

pub use detect::{Found, Interpreter};
use objects::{Code, Memory};

use crate::recording::{PythonInterpreter, PythonSummary};

/// A Python frame of a stack, named: what the recording shows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PyFrameName {
    /// The function's qualified name (3.11+; the bare name before).
    pub name: String,
    /// Its source file.
    pub file: String,
    /// The line being run, where the line table says.
    pub line: Option<u32>,
    /// `modelprobe_common::python::frame` bits.
    pub flags: u32,
}

/// What the Python frames cost and lost over a session.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PythonStats {
    /// Distinct code objects read.
    pub code_objects: u64,
    /// Code objects that could not be read (freed, or not code): named by address.
    pub unreadable: u64,
}

/// Per-process interpreters and the code objects read from them.
#[derive(Debug, Default)]
pub struct Python {
    found: HashMap<u32, Found>,
    objects: detect::ObjectCache,
    codes: HashMap<(u32, u64), Option<Arc<Code>>>,
    stats: PythonStats,
    /// Every process whose frames were read, kept past its exit and exec for the summary.
    seen: std::collections::BTreeMap<u32, PythonInterpreter>,
    /// One line per reason an interpreter was not read (with the first pid it was seen in).
    notes: Vec<String>,
}

impl Python {
    /// Looks (again, unless already found) for `pid`'s interpreter; the BPF entry to publish
    /// when there is one.
    pub fn detect(&mut self, pid: u32) -> Option<PyProc> {
        if let Some(Found::Interpreter(i)) = self.found.get(&pid) {
            return Some(i.bpf_entry());
        }
        let found = detect::find(pid, &mut self.objects);
        if let Found::Unsupported(why) = &found {
            // One line per reason, however many processes share it (a pool of workers).
            if !self.notes.iter().any(|n| n.contains(why.as_str())) {
                let line = format!("pid {pid}: Python frames are off ({why}); native frames kept");
                log::warn!("{line}");
                self.notes.push(line);
            }
        }
        if let Found::Interpreter(i) = &found {
            self.note_seen(pid, i);
            log::info!(
                "pid {pid}: CPython {}.{} in {}: Python frames on",
                i.layout.version.0,
                i.layout.version.1,
                i.object
            );
        }
        let entry = match &found {
            Found::Interpreter(i) => Some(i.bpf_entry()),
            _ => None,
        };
        self.found.insert(pid, found);
        entry
    }

    /// `child` was forked by `parent`: the same interpreter at the same addresses (the kernel
    /// copied the BPF entry at the fork), known without reading anything.
    pub fn inherit(&mut self, child: u32, parent: u32) {
        // A reused pid: nothing of the process it was before holds.
        self.forget(child);
        if let Some(found) = self.found.get(&parent).cloned() {
            if let Found::Interpreter(i) = &found {
                self.note_seen(child, i);
            }
            self.found.insert(child, found);
        }
    }

    fn note_seen(&mut self, pid: u32, i: &Interpreter) {
        self.seen.insert(
            pid,
            PythonInterpreter {
                pid,
                version: format!("{}.{}", i.layout.version.0, i.layout.version.1),
                object: i.object.rsplit('/').next().unwrap_or(&i.object).to_string(),
            },
        );
    }

    /// `pid` ran `execve` or exited: what was known of its interpreter and code is stale (the
    /// summary keeps that it ran Python).
    pub fn forget(&mut self, pid: u32) {
        self.found.remove(&pid);
        self.codes.retain(|&(p, _), _| p != pid);
    }

    /// The interpreter found in `pid`, if any.
    pub fn interpreter(&self, pid: u32) -> Option<&Arc<Interpreter>> {
        match self.found.get(&pid) {
            Some(Found::Interpreter(i)) => Some(i),
            _ => None,
        }
    }

    /// Names the Python frames of a stack of `pid`, innermost first; shim frames are kept
    /// (with their flag) for [`merge`] to split on.
    pub fn name_frames(&mut self, pid: u32, frames: &[PyFrame]) -> Vec<PyFrameName> {
        let Some(interp) = self.interpreter(pid).cloned() else {
            return Vec::new();
        };
        frames
            .iter()
            .map(|f| {
                if f.flags & frame::SHIM != 0 {
                    return PyFrameName {
                        name: String::new(),
                        file: String::new(),
                        line: None,
                        flags: f.flags,
                    };
                }
                let code = self.code(pid, f.code, &interp);
                match code {
                    Some(c) => PyFrameName {
                        name: c.name.clone(),
                        file: c.file.clone(),
                        line: lines::line_at(
                            interp.layout.line_table,
                            &c.line_table,
                            c.first_line,
                            f.offset,
                        ),
                        flags: f.flags,
                    },
                    None => PyFrameName {
                        name: format!("[Python code {:#x}]", f.code),
                        file: String::new(),
                        line: None,
                        flags: f.flags,
                    },
                }
            })
            .collect()
    }

    /// The code object at `addr` in `pid`, read once.
    fn code(&mut self, pid: u32, addr: u64, interp: &Interpreter) -> Option<Arc<Code>> {
        if let Some(c) = self.codes.get(&(pid, addr)) {
            return c.clone();
        }
        let code = match (Memory { pid }).code(addr, &interp.layout, interp.code_type) {
            Ok(c) => {
                self.stats.code_objects += 1;
                Some(Arc::new(c))
            }
            Err(e) => {
                // Not kept: a code object made at this address later is read then.
                log::debug!("pid {pid}: {e}");
                self.stats.unreadable += 1;
                return None;
            }
        };
        self.codes.insert((pid, addr), code.clone());
        code
    }

    /// Totals so far.
    pub fn stats(&self) -> PythonStats {
        self.stats
    }

    /// What the recording says of Python (the stack counts left for the caller, who counted
    /// them): `None` when no target ran it.
    pub fn summary(&self) -> Option<PythonSummary> {
        let interpreters: Vec<PythonInterpreter> = self.seen.values().cloned().collect();
        if interpreters.is_empty() && self.notes.is_empty() {
            return None;
        }
        Some(PythonSummary {
            interpreters,
            off: self.notes.clone(),
            code_objects: self.stats.code_objects,
            unreadable_code: self.stats.unreadable,
            ..PythonSummary::default()
        })
    }
}
