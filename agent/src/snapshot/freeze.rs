//! Holding every thread of a process for the moment it takes to copy what a stack needs:
//! `PTRACE_SEIZE` and `PTRACE_INTERRUPT` each thread, read its registers, copy its stack from
//! `%rsp` up (bounded) and read its Python frames, then let every thread go. Nothing is
//! unwound or named while the process is held: that is done on the copies after.
//!
//! A thread stopped in a signal's delivery is given its signal back at the detach; a process
//! stopped by a stop signal (SIGSTOP, `--stop-on`) stays stopped.
use std::{
    io,
    time::{Duration, Instant},
};

use modelprobe_common::python::{PyFrame, PyProc};

use super::python;
use crate::{
    live_load::ptrace::{Regs, Stop, Tracee, WaitError},
    python::objects::Memory,
    Error, Result,
};

/// Most bytes of a stack copied, from `%rsp` up.
pub const MAX_STACK_COPY: u64 = 512 << 10;

/// The x86-64 red zone below `%rsp` a leaf function may use without moving it.
const RED_ZONE: u64 = 128;

/// How long one thread is given to stop.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// What was copied of one thread.
pub struct Copied {
    /// Thread id.
    pub tid: u32,
    /// Its registers.
    pub regs: Regs,
    /// Its stack from `stack_start` up.
    pub stack: Vec<u8>,
    /// Address of `stack[0]`.
    pub stack_start: u64,
    /// Its Python frames, innermost first.
    pub python: Vec<PyFrame>,
    /// `PYSTACK*` bits of the Python read.
    pub python_bits: u32,
}

impl Copied {
    /// A word of the copied stack.
    pub fn word(&self, addr: u64) -> Option<u64> {
        let at = usize::try_from(addr.checked_sub(self.stack_start)?).ok()?;
        let bytes = self.stack.get(at..at + 8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

/// Every thread's copy, and how long the process was held.
pub struct Frozen {
    /// One per thread that could be held.
    pub threads: Vec<Copied>,
    /// Threads that exited before they could be held, or did not stop in time.
    pub missed: Vec<(u32, String)>,
    /// From the first thread held to the last let go.
    pub pause: Duration,
}

/// The mapping holding `addr` (its end), from `maps` text.
fn mapping_end(maps: &str, addr: u64) -> Option<u64> {
    maps.lines()
        .filter_map(crate::procmaps::parse_line)
        .find(|l| l.start <= addr && addr < l.end)
        .map(|l| l.end)
}

/// Holds every thread of `pid`, copies what its stacks need, lets them go; `maps` is its
/// `/proc/PID/maps` text (where each stack ends).
pub fn freeze(pid: u32, py: Option<&PyProc>, maps: &str) -> Result<Frozen> {
    let tids = crate::target::thread_ids(pid);
    if tids.is_empty() {
        return Err(Error::ProcessExited(pid));
    }
    let mem = Memory { pid };
    let started = Instant::now();
    let mut held: Vec<Tracee> = Vec::new();
    let mut missed = Vec::new();
    let mut first_error = None;
    for &tid in &tids {
        match Tracee::seize(tid).and_then(|t| t.interrupt().map(|()| t)) {
            Ok(t) => held.push(t),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => missed.push((tid, "exited".into())),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let mut threads = Vec::new();
    let mut resignal: Vec<(Tracee, i32)> = Vec::new();
    if first_error.is_none() {
        for t in &held {
            let sig = match t.wait(STOP_WAIT) {
                Ok(Stop::Signal(sig)) => sig,
                Ok(_) => 0,
                Err(WaitError::Gone(how)) => {
                    missed.push((t.tid, how));
                    continue;
                }
                Err(e) => {
                    missed.push((t.tid, format!("did not stop ({e:?})")));
                    continue;
                }
            };
            resignal.push((*t, sig));
            let Ok(regs) = t.regs() else {
                missed.push((t.tid, "registers not readable".into()));
                continue;
            };
            let start = regs.rsp.saturating_sub(RED_ZONE);
            let end = mapping_end(maps, regs.rsp)
                .unwrap_or(regs.rsp + 4096)
                .min(regs.rsp + MAX_STACK_COPY);
            let mut stack = vec![0u8; end.saturating_sub(start) as usize];
            if mem.read(start, &mut stack).is_err() {
                stack.clear();
            }
            let (python, python_bits) = match py {
                Some(py) => python::frames(&mem, py, regs.fs_base),
                None => (Vec::new(), 0),
            };
            threads.push(Copied {
                tid: t.tid,
                regs,
                stack,
                stack_start: start,
                python,
                python_bits,
            });
        }
    }
    // Every seized thread goes, stopped or not (an interrupt not yet taken is dropped with
    // the detach).
    for t in &held {
        let sig = resignal
            .iter()
            .find(|(r, _)| r.tid == t.tid)
            .map_or(0, |(_, s)| *s);
        let _ = t.detach(sig);
    }
    let pause = started.elapsed();
    if let Some(e) = first_error {
        return Err(seize_error(pid, &e));
    }
    Ok(Frozen {
        threads,
        missed,
        pause,
    })
}

fn seize_error(pid: u32, e: &io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EPERM) => Error::InvalidArgument(format!(
            "cannot hold the threads of pid {pid}: it is being traced already (a debugger, \
             py-spy, strace?), or ptrace is restricted (kernel.yama.ptrace_scope)"
        )),
        _ => Error::io(
            format!("holding the threads of pid {pid}"),
            io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0)),
        ),
    }
}
