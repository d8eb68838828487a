//! `modelprobe stacks --pid N`: every thread's native and Python stack now, as `py-spy dump`
//! or gdb's `thread apply all bt` show them, holding the process only while its stacks are
//! copied ([`freeze`]: a few milliseconds).
//!
//! The copies are unwound after the process is let go, by the same rules the BPF side steps
//! through ([`crate::unwind::walk`] over [`crate::unwind::compile`]'s rows), and named by the
//! recording's own symbolization ([`crate::session::snapshot`]): a snapshot is a
//! [`Recording`] with one CPU sample per thread, so its frames read as a profile's do.
pub(crate) mod freeze;
pub(crate) mod python;

use std::{collections::HashMap, fs::File, os::unix::fs::MetadataExt, time::Duration};

use modelprobe_common::{
    flags, kind,
    python::{PyFrame, MAX_PY_DEPTH},
    StackEvent, MAX_STACK_DEPTH, TASK_COMM_LEN,
};

use crate::{
    preflight,
    recording::{Meta, Recording},
    session::snapshot::SnapshotCollector,
    target,
    unwind::{
        compile::{self, ObjectTable},
        walk::{self, End, Object},
    },
    Result,
};

/// One thread of a snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ThreadStack {
    /// Thread id.
    pub tid: u32,
    /// Its name.
    pub name: String,
    /// Its scheduler state before it was held (`R` running, `S` sleeping, `D` in the kernel
    /// uninterruptibly...).
    pub state: String,
    /// Where in the kernel it waited (`/proc/PID/task/TID/wchan`), when it did.
    pub waiting_in: Option<String>,
    /// Its frames, innermost first: Python frames in place of the interpreter's, then native.
    pub frames: Vec<FrameLine>,
    /// True when the walk reached the thread's first frame.
    pub whole: bool,
    /// Callers left out because a return probe (a `--probe`'s or a pack's uretprobe) holds
    /// their return address: the kernel's trampoline stands in its place on the stack.
    pub probed_callers_hidden: usize,
}

/// One frame as shown.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FrameLine {
    /// Function.
    pub name: String,
    /// Source file, where known.
    pub file: Option<String>,
    /// Line, where known.
    pub line: Option<u32>,
    /// The module (library, executable) of a native frame.
    pub module: Option<String>,
    /// `python`, `native`, `jit` or `unknown`.
    pub kind: String,
}

/// Every thread's stack at one instant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    /// The process.
    pub pid: u32,
    /// Its command line.
    pub command: String,
    /// One per thread held.
    pub threads: Vec<ThreadStack>,
    /// Threads not held (exited meanwhile, or did not stop), and why.
    pub missed: Vec<(u32, String)>,
    /// How long the process was held.
    #[serde(serialize_with = "micros")]
    pub pause: Duration,
    /// Whether it runs a CPython whose frames were read.
    pub python: bool,
}

impl Snapshot {
    /// As text, a thread after another: its name, state and frames, innermost first (a
    /// Python thread's interpreter frames left out unless `native`).
    pub fn text(&self, native: bool) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Process {}: {}\nheld for {:.2} ms; {} thread(s){}",
            self.pid,
            self.command,
            self.pause.as_secs_f64() * 1000.0,
            self.threads.len(),
            if self.python {
                ", Python frames read"
            } else {
                ""
            }
        );
        for t in &self.threads {
            let waiting = t
                .waiting_in
                .as_deref()
                .map(|w| format!(", in {w}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "\nThread {} \"{}\" ({}{waiting})",
                t.tid,
                t.name,
                state_word(&t.state)
            );
            let has_python = t.frames.iter().any(|f| f.kind == "python");
            let mut hidden = 0;
            for f in &t.frames {
                // A Python thread's native frames outside its Python ones are the
                // interpreter's.
                if has_python && !native && f.kind != "python" {
                    hidden += 1;
                    continue;
                }
                let at = match (&f.file, f.line) {
                    _ if f.kind == "python" => String::new(),
                    (Some(file), Some(line)) => format!(" ({file}:{line})"),
                    (Some(file), None) => format!(" ({file})"),
                    _ => f
                        .module
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default(),
                };
                let _ = writeln!(out, "    {}{at}", f.name);
            }
            if hidden > 0 {
                let _ = writeln!(out, "    ({hidden} native frames; --native shows them)");
            }
            if t.probed_callers_hidden > 0 {
                let _ = writeln!(
                    out,
                    "    ({} caller frame(s) left out: a return probe holds their return address)",
                    t.probed_callers_hidden
                );
            }
            if t.frames.is_empty() {
                let _ = writeln!(out, "    (no frames could be read)");
            } else if !t.whole {
                let _ = writeln!(out, "    (the outer frames could not be unwound)");
            }
        }
        for (tid, why) in &self.missed {
            let _ = writeln!(out, "\nThread {tid}: not held ({why})");
        }
        out
    }
}

fn state_word(s: &str) -> &str {
    match s {
        "R" => "running",
        "S" => "sleeping",
        "D" => "waiting in the kernel",
        "T" => "stopped",
        "t" => "traced",
        "Z" => "zombie",
        other => other,
    }
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

/// The compiled tables of the objects a snapshot's stacks pass through, each read once.
#[derive(Default)]
struct Tables {
    /// Executable mappings: (start, end, file offset, path).
    mappings: Vec<(u64, u64, u64, String)>,
    /// By (device, inode); `None`: unreadable or no CFI.
    objects: HashMap<(u64, u64), Option<ObjectTable>>,
    /// Mapping start to its object's key, for every mapping whose file was tried (`None`:
    /// it could not be opened).
    keys: HashMap<u64, Option<(u64, u64)>>,
    /// The kernel's `[uprobes]` page (return-probe trampolines), if mapped.
    trampolines: Option<(u64, u64)>,
}

impl Tables {
    /// The executable mappings of a `/proc/PID/maps` text; nothing read yet.
    fn new(maps: &str) -> Self {
        let trampolines = maps
            .lines()
            .filter_map(crate::procmaps::parse_line)
            .find(|l| l.path == "[uprobes]")
            .map(|l| (l.start, l.end));
        let mappings = maps
            .lines()
            .filter_map(crate::procmaps::parse_line)
            .filter(|l| l.exec && l.path.starts_with('/'))
            .map(|l| (l.start, l.end, l.offset, l.path.to_string()))
            .collect();
        Tables {
            mappings,
            trampolines,
            ..Tables::default()
        }
    }

    /// Loads the tables of the mappings addresses of `pcs` fall in that were not tried yet;
    /// false when there was none.
    fn load(&mut self, pid: u32, pcs: &[u64]) -> bool {
        let mut tried = false;
        for &pc in pcs {
            let Some(&(start, end, _, ref path)) =
                self.mappings.iter().find(|m| m.0 <= pc && pc < m.1)
            else {
                continue;
            };
            if self.keys.contains_key(&start) {
                continue;
            }
            tried = true;
            let file = File::open(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))
                .or_else(|_| File::open(format!("/proc/{pid}/root{path}")));
            let key = file
                .ok()
                .and_then(|f| f.metadata().ok().map(|md| (f, (md.dev(), md.ino()))));
            self.keys.insert(start, key.as_ref().map(|(_, k)| *k));
            let Some((file, key)) = key else { continue };
            self.objects.entry(key).or_insert_with(|| {
                // SAFETY: mapped read-only and private; a library rewritten in place while
                // mapped would give wrong rows, as for every debugger.
                let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
                compile::compile(&data).ok()
            });
        }
        tried
    }

    /// The rows and bias for `pc`.
    fn object(&self, pc: u64) -> Option<Object<'_>> {
        let &(start, _, offset, _) = self.mappings.iter().find(|m| m.0 <= pc && pc < m.1)?;
        let key = (*self.keys.get(&start)?)?;
        let table = self.objects.get(&key)?.as_ref()?;
        Some(Object {
            rows: &table.rows,
            bias: table.bias(start, offset)?,
        })
    }
}

/// The thread's state letter and name, and its wait channel.
fn state_of(pid: u32, tid: u32) -> (String, Option<String>) {
    let state = target::thread_state(pid, tid).unwrap_or('?').to_string();
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan"))
        .ok()
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty() && w != "0");
    (state, wchan)
}

/// Takes the snapshot.
pub fn take(pid: u32) -> Result<Snapshot> {
    take_with(pid, None)
}

/// Takes the snapshot knowing, for thread `hint.0`, the address its probed call returns to
/// (`hint.1`): where a return probe's trampoline stands in for it on that thread's stack (or
/// in its instruction pointer), the caller is named after all.
pub fn take_with(pid: u32, hint: Option<(u32, u64)>) -> Result<Snapshot> {
    preflight::check_privileges()?;
    target::check_pid(pid)?;
    if pid == std::process::id() {
        return Err(crate::Error::InvalidArgument(
            "refusing to hold modelprobe itself".into(),
        ));
    }
    let mut collector = SnapshotCollector::new(pid);
    let py = collector.python();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|_| crate::Error::ProcessExited(pid))?;
    let mut tables = Tables::new(&maps);
    // Before the hold: the states it is in, not "traced".
    let states: HashMap<u32, (String, Option<String>)> = target::thread_ids(pid)
        .into_iter()
        .map(|tid| (tid, state_of(pid, tid)))
        .collect();
    let start_ns = crate::clock::monotonic_ns();
    let frozen = freeze::freeze(pid, py.as_ref(), &maps)?;
    let mut wholes = HashMap::new();
    let mut hidden: HashMap<u32, usize> = HashMap::new();
    for t in &frozen.threads {
        let trampolines = tables.trampolines;
        let in_trampoline =
            move |pc: u64| trampolines.is_some_and(|(lo, hi)| (lo..hi).contains(&pc));
        let known_return = hint
            .filter(|&(tid, ra)| tid == t.tid && ra != 0)
            .map(|(_, ra)| ra);
        let ip = match known_return {
            Some(ra) if in_trampoline(t.regs.rip) => ra,
            _ => t.regs.rip,
        };
        let regs = (ip, t.regs.rsp, t.regs.rbp);
        let read = |a: u64| {
            let w = t.word(a)?;
            Some(match known_return {
                Some(ra) if in_trampoline(w) => ra,
                _ => w,
            })
        };
        // Tables only for the objects the walk goes through: walk, read the tables of the
        // frames it could not step through, walk again (each turn reads at least one new one).
        let mut walked = walk::walk(regs, MAX_STACK_DEPTH, |pc| tables.object(pc), read);
        while tables.load(pid, &walked.0) {
            walked = walk::walk(regs, MAX_STACK_DEPTH, |pc| tables.object(pc), read);
        }
        let (mut frames, end) = walked;
        wholes.insert(t.tid, end == End::Whole);
        let before = frames.len();
        if let Some((lo, hi)) = tables.trampolines {
            frames.retain(|&pc| !(lo..hi).contains(&pc));
        }
        hidden.insert(t.tid, before - frames.len());
        let name = target::thread_comm(pid, t.tid).unwrap_or_default();
        let mut comm = [0u8; TASK_COMM_LEN];
        for (d, s) in comm.iter_mut().zip(name.bytes().take(TASK_COMM_LEN - 1)) {
            *d = s;
        }
        let mut ustack = [0u64; MAX_STACK_DEPTH];
        ustack[..frames.len()].copy_from_slice(&frames);
        let mut pystack = [PyFrame::default(); MAX_PY_DEPTH];
        let py_len = t.python.len().min(MAX_PY_DEPTH);
        pystack[..py_len].copy_from_slice(&t.python[..py_len]);
        let mut bits = flags::USER_REGS | flags::USTACK_CFI | t.python_bits;
        match end {
            End::Truncated => bits |= flags::USTACK_TRUNCATED,
            End::Stopped => bits |= flags::USTACK_UNSUPPORTED,
            End::Whole => {}
        }
        collector.add(&StackEvent {
            kind: kind::CPU_SAMPLE,
            cpu: 0,
            pid,
            tid: t.tid,
            time_ns: start_ns,
            weight: 1,
            user_ip: t.regs.rip,
            user_sp: t.regs.rsp,
            user_bp: t.regs.rbp,
            comm,
            kstack_len: 0,
            ustack_len: frames.len() as u32,
            flags: bits,
            probe: 0,
            kstack: [0; MAX_STACK_DEPTH],
            ustack,
            py_len: py_len as u32,
            mem_source: 0,
            pystack,
            mem_addr: 0,
        });
    }
    let command = target::cmdline(pid).unwrap_or_default();
    let rec = collector.finish(Meta {
        modelprobe_version: env!("CARGO_PKG_VERSION").to_string(),
        mode: "stacks".into(),
        command: command.clone(),
        target_pid: pid,
        start_ns,
        end_ns: start_ns,
        ..Meta::default()
    });
    let threads = frozen
        .threads
        .iter()
        .map(|t| {
            let (state, waiting_in) = states.get(&t.tid).cloned().unwrap_or_default();
            ThreadStack {
                tid: t.tid,
                name: rec.thread_name(pid, t.tid),
                state,
                waiting_in,
                frames: frames_of(&rec, t.tid),
                whole: wholes.get(&t.tid).copied().unwrap_or(false),
                probed_callers_hidden: hidden.get(&t.tid).copied().unwrap_or(0),
            }
        })
        .collect();
    Ok(Snapshot {
        pid,
        command,
        threads,
        missed: frozen.missed,
        pause: frozen.pause,
        python: py.is_some(),
    })
}

/// The named frames of thread `tid`'s sample, innermost first.
fn frames_of(rec: &Recording, tid: u32) -> Vec<FrameLine> {
    let Some(sample) = rec.samples.iter().find(|s| s.tid == tid) else {
        return Vec::new();
    };
    let Some(stack) = rec.stacks.get(sample.stack as usize) else {
        return Vec::new();
    };
    // Stacks are stored root first.
    stack
        .iter()
        .rev()
        .filter_map(|&i| rec.frames.get(i as usize))
        .map(|f| FrameLine {
            name: f.name.clone(),
            file: f.file.clone(),
            line: f.line,
            module: f.module.clone(),
            kind: format!("{:?}", f.kind).to_lowercase(),
        })
        .collect()
}
