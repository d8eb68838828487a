//! Where to stop the thread to hold: at a syscall boundary if it reaches one within
//! `wait_for_syscall` (never at one of the memory syscalls malloc makes under its lock), else
//! wherever it is. Where it was taken decides how it is given back:
//!
//! - **in a syscall** that the interrupt cut short (`read`, `nanosleep`, `futex`: the return
//!   value is `-ERESTART*`), or that had just returned: the registers are put back in a stop
//!   inside the kernel's signal handling (an interrupt stop), so the kernel itself restarts the
//!   call after the detach, exactly as after any signal: `-ERESTARTSYS` re-runs it,
//!   `-ERESTART_RESTARTBLOCK` resumes `nanosleep` with the time left (kept in the thread's
//!   `restart_block`, which the injector's own system calls do not touch), and a saved signal
//!   mask (`ppoll`, `pselect`) is put back;
//! - **at a syscall entry**: the call is replaced by `getpid` now and re-run from its
//!   instruction after the detach;
//! - **in user code** (a busy loop that makes no syscall within `wait_for_syscall`): the
//!   registers are simply put back.
use std::time::{Duration, Instant};

use super::{
    failure::wait_error,
    ptrace::{Regs, Stop, SyscallPhase, Tracee, WaitError, AUDIT_ARCH_X86_64},
    LiveLoadError, LoadOptions,
};

/// `-ERESTARTSYS`, `-ERESTARTNOINTR`, `-ERESTARTNOHAND`, `-ERESTART_RESTARTBLOCK`.
fn is_restart(rax: u64) -> bool {
    matches!(rax as i64, -512 | -513 | -514 | -516)
}
/// The return value of a syscall that resumes from the thread's restart block.
pub(super) const ERESTART_RESTARTBLOCK: i64 = -516;

/// Syscalls malloc makes while it holds an arena lock: a thread stopped at one of them would
/// deadlock a `dlopen` that allocates.
fn is_memory_syscall(nr: u64) -> bool {
    [
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mprotect,
        libc::SYS_brk,
        libc::SYS_mremap,
        libc::SYS_madvise,
    ]
    .contains(&(nr as i64))
}

/// True when a thread found inside syscall `regs.orig_rax` may be held right there: the call
/// was cut short (it restarts), or it is not one malloc makes under its lock.
pub(super) fn good_in_syscall(regs: &Regs) -> bool {
    is_restart(regs.rax) || !is_memory_syscall(regs.orig_rax)
}

/// Where the held thread was taken (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeldAt {
    /// In user code; registers are put back as they were.
    User,
    /// At the entry of syscall `nr`; it is re-run after the detach.
    SyscallEntry(u64),
    /// Inside syscall `nr`, interrupted (or just returned); put back in the kernel's signal path.
    InSyscall(u64),
}

/// Waits for the first interrupt stop after the seize, delivering any signal that comes first
/// (nothing is changed yet, so it is delivered as it would have been). Returns the stop's
/// signal: SIGTRAP for the interrupt, a stop signal for a group stop.
pub(super) fn wait_event(t: &Tracee, limit: Duration) -> Result<i32, WaitError> {
    let deadline = Instant::now() + limit;
    loop {
        match t.wait(deadline.saturating_duration_since(Instant::now()))? {
            Stop::Event(sig) => return Ok(sig),
            Stop::Signal(sig) => t.cont(sig).map_err(WaitError::Os)?,
            Stop::Syscall | Stop::Other(_) => t.cont(0).map_err(WaitError::Os)?,
        }
    }
}

/// From the first interrupt stop, lets the thread run to a syscall entry (for at most
/// `wait_for_syscall`), else takes it where it is. Returns where, and the registers to restore.
pub(super) fn seek_boundary(
    pid: u32,
    t: &Tracee,
    opts: &LoadOptions,
) -> Result<(HeldAt, Regs), LiveLoadError> {
    let tid = t.tid;
    let perr = |op: &'static str| {
        move |source| LiveLoadError::Ptrace {
            pid,
            tid,
            op,
            source,
        }
    };
    let unchanged = |what: &str, e: WaitError| {
        wait_error(pid, what, opts.step_timeout, e, "nothing was changed")
    };
    let deadline = Instant::now() + opts.wait_for_syscall;
    t.syscall(0).map_err(perr("syscall"))?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let stop = match t.wait(left) {
            Ok(stop) => stop,
            Err(WaitError::Timeout) => break,
            Err(e) => return Err(unchanged("reach a syscall", e)),
        };
        match stop {
            Stop::Syscall => {
                let regs = t.regs().map_err(perr("getregs"))?;
                let entry = match t.syscall_phase() {
                    SyscallPhase::Entry { arch } => arch == AUDIT_ARCH_X86_64,
                    SyscallPhase::Exit => false,
                    SyscallPhase::Unknown => regs.rax as i64 == -(libc::ENOSYS as i64),
                };
                if entry && regs.orig_rax < 0x4000_0000 && !is_memory_syscall(regs.orig_rax) {
                    let mut saved = regs;
                    saved.rax = regs.orig_rax;
                    saved.rip -= 2;
                    saved.orig_rax = u64::MAX;
                    return Ok((HeldAt::SyscallEntry(regs.orig_rax), saved));
                }
                t.syscall(0).map_err(perr("syscall"))?;
            }
            Stop::Signal(sig) => t.syscall(sig).map_err(perr("syscall"))?,
            Stop::Event(_) | Stop::Other(_) => t.syscall(0).map_err(perr("syscall"))?,
        }
    }
    // No suitable syscall in time: a busy loop. Take it wherever it is now.
    t.interrupt().map_err(perr("interrupt"))?;
    let deadline = Instant::now() + opts.step_timeout;
    loop {
        let stop = t
            .wait(deadline.saturating_duration_since(Instant::now()))
            .map_err(|e| unchanged("stop", e))?;
        match stop {
            Stop::Event(_) => break,
            Stop::Signal(sig) => t.cont(sig).map_err(perr("cont"))?,
            Stop::Syscall | Stop::Other(_) => t.cont(0).map_err(perr("cont"))?,
        }
    }
    let regs = t.regs().map_err(perr("getregs"))?;
    let at = if (regs.orig_rax as i64) >= 0 {
        HeldAt::InSyscall(regs.orig_rax)
    } else {
        HeldAt::User
    };
    Ok((at, regs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_codes() {
        assert!(is_restart((-512i64) as u64));
        assert!(is_restart((-516i64) as u64));
        assert!(!is_restart((-4i64) as u64)); // EINTR is a result, not a restart
        assert!(!is_restart(0));
        assert!(is_memory_syscall(9) && !is_memory_syscall(0));
    }
}
