//! Holding one thread of a target: stopping it at a good place, keeping its registers, FPU
//! state and the signals it is sent while held, and letting it go so that it cannot tell.
//!
//! Where the thread is taken decides how it is given back:
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
//!
//! Signals that reach the thread while it is held are taken off it (signal-delivery stops) and
//! sent again after the detach, with their `siginfo` where the kernel allows a forged one
//! (`sigqueue`), else with `tgkill`.
use std::time::{Duration, Instant};

use super::{
    ptrace::{
        signal_name, FpState, Regs, SigInfo, Stop, SyscallPhase, Tracee, WaitError,
        AUDIT_ARCH_X86_64,
    },
    InjectError, InjectOptions,
};

/// What a timeout left behind, when the held thread could be put back.
pub(super) const RESTORED: &str = "the process was restored";

/// `-ERESTARTSYS`, `-ERESTARTNOINTR`, `-ERESTARTNOHAND`, `-ERESTART_RESTARTBLOCK`.
fn is_restart(rax: u64) -> bool {
    matches!(rax as i64, -512 | -513 | -514 | -516)
}
const ERESTART_RESTARTBLOCK: i64 = -516;

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

/// A thread held stopped by this (tracer) thread.
pub(super) struct Held {
    /// The process.
    pub pid: u32,
    /// The held thread.
    pub t: Tracee,
    /// Registers to put back (rewound to re-run the syscall, for [`HeldAt::SyscallEntry`]).
    pub saved: Regs,
    fp: FpState,
    /// Where it was taken.
    pub at: HeldAt,
    /// The tracee is stopped inside the kernel's signal path (an interrupt stop), not at a
    /// syscall exit.
    in_signal_path: bool,
    /// The tracee was resumed and has not stopped since.
    pub running: bool,
    /// The x87/SSE control state was reset for calls.
    fp_reset: bool,
    /// Signals taken off the thread while held.
    stashed: Vec<SigInfo>,
    /// When the thread stopped where it is held.
    since: Instant,
    /// Code run in the thread used `nanosleep` or was cut short with `-ERESTART_RESTARTBLOCK`,
    /// which overwrites the thread's restart block.
    pub restart_block_used: bool,
    /// Limits.
    pub opts: InjectOptions,
    /// The borrowed `syscall` instruction.
    pub syscall_insn: u64,
}

impl Held {
    /// Seizes thread `tid` of `pid` and stops it where it is safe to run code (see the module
    /// docs). On error nothing was changed: the caller's tracer thread exits, which detaches.
    pub fn acquire(
        pid: u32,
        tid: u32,
        syscall_insn: u64,
        opts: &InjectOptions,
    ) -> Result<Held, InjectError> {
        let t = Tracee::seize(tid).map_err(|e| super::load::seize_error(pid, tid, e))?;
        let unchanged = |what: &str, e: WaitError| {
            wait_error(pid, what, opts.step_timeout, e, "nothing was changed")
        };
        let perr = |op: &'static str| {
            move |source| InjectError::Ptrace {
                pid,
                tid,
                op,
                source,
            }
        };
        t.interrupt().map_err(perr("interrupt"))?;
        let first = wait_event(&t, opts.step_timeout).map_err(|e| unchanged("stop", e))?;
        if first != libc::SIGTRAP {
            // A group stop (SIGSTOP): leave it stopped, as it was.
            let _ = t.detach(0);
            return Err(InjectError::Stopped { pid });
        }
        let regs = t.regs().map_err(perr("getregs"))?;
        let in_syscall = (regs.orig_rax as i64) >= 0;
        let (at, saved) =
            if in_syscall && (is_restart(regs.rax) || !is_memory_syscall(regs.orig_rax)) {
                (HeldAt::InSyscall(regs.orig_rax), regs)
            } else {
                seek_boundary(pid, &t, opts)?
            };
        let since = Instant::now();
        let fp = t.fp_state().map_err(perr("getfpregs"))?;
        let mut held = Held {
            pid,
            t,
            saved,
            fp,
            at,
            in_signal_path: true,
            running: false,
            fp_reset: false,
            stashed: Vec::new(),
            since,
            restart_block_used: false,
            opts: opts.clone(),
            syscall_insn,
        };
        if let HeldAt::SyscallEntry(_) = at {
            // Run getpid instead of the call, which re-runs after the detach.
            let mut r = t.regs().map_err(perr("getregs"))?;
            r.orig_rax = libc::SYS_getpid as u64;
            t.set_regs(&r).map_err(perr("setregs"))?;
            held.resume()?;
            let step = opts.step_timeout;
            held.next_syscall_stop(
                Instant::now() + step,
                "leave a syscall entry",
                step,
                RESTORED,
            )?;
            held.in_signal_path = false;
        }
        log::debug!(
            "inject: holding thread {tid} of {pid} at {at:?}, rip {:#x}",
            held.saved.rip
        );
        Ok(held)
    }

    /// Resumes the tracee to its next syscall stop.
    pub fn resume(&mut self) -> Result<(), InjectError> {
        self.t
            .syscall(0)
            .map_err(|e| self.ptrace_err("syscall", e))?;
        self.running = true;
        Ok(())
    }

    /// Waits for the next syscall stop before `deadline`, taking signals off the thread on the
    /// way; a fault signal (the code run crashed) is an error.
    /// `limit` and `outcome` go into the timeout error ("the process was restored").
    pub fn next_syscall_stop(
        &mut self,
        deadline: Instant,
        what: &str,
        limit: Duration,
        outcome: &str,
    ) -> Result<(), InjectError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let stop = self
                .t
                .wait(left)
                .map_err(|e| wait_error(self.pid, what, limit, e, outcome))?;
            match stop {
                Stop::Syscall => {
                    self.running = false;
                    return Ok(());
                }
                Stop::Signal(sig) => {
                    let info = self
                        .t
                        .siginfo()
                        .map_err(|e| self.ptrace_err("getsiginfo", e))?;
                    if is_fault(&info) {
                        self.running = false;
                        return Err(InjectError::Crashed {
                            pid: self.pid,
                            what: what.to_string(),
                            signal: sig,
                            addr: info.addr(),
                        });
                    }
                    log::debug!("inject: {} held back while {what}", signal_name(sig));
                    self.stashed.push(info);
                }
                // A leftover interrupt, or a group stop: the thread keeps working for us.
                Stop::Event(_) | Stop::Other(_) => {}
            }
            self.t
                .syscall(0)
                .map_err(|e| self.ptrace_err("syscall", e))?;
        }
    }

    /// Resets the x87/SSE control state to the ABI's (once); put back by [`release`].
    pub fn prepare_call(&mut self) -> Result<(), InjectError> {
        if !self.fp_reset {
            let fx = self.fp.for_call();
            self.t
                .set_fxsave(&fx)
                .map_err(|e| self.ptrace_err("setfpregs", e))?;
            self.fp_reset = true;
        }
        Ok(())
    }

    /// Puts registers and FPU state back and detaches; then sends again the signals held back.
    /// Returns how long the thread was held.
    pub fn release(mut self) -> Result<Duration, InjectError> {
        if self.running {
            self.regain()?;
        }
        let mut saved = self.saved;
        let mut signal_path = matches!(self.at, HeldAt::InSyscall(_));
        if signal_path && self.restart_block_used && saved.rax as i64 == ERESTART_RESTARTBLOCK {
            // The code run overwrote the restart block: re-run the call from the start (a
            // sleep lasts longer than asked, never shorter) instead of resuming it.
            log::warn!(
                "inject: the held thread's interrupted syscall {} restarts from the beginning",
                saved.orig_rax
            );
            saved.rax = saved.orig_rax;
            saved.rip -= 2;
            saved.orig_rax = u64::MAX;
            signal_path = false;
        }
        self.t
            .set_fp_state(&self.fp)
            .map_err(|e| self.ptrace_err("setfpregs", e))?;
        self.t
            .set_regs(&saved)
            .map_err(|e| self.ptrace_err("setregs", e))?;
        let mut detach_sig = 0;
        if signal_path && !self.in_signal_path {
            // Move from the syscall exit into the kernel's signal path without running any user
            // code: interrupt, continue, and the thread stops there at once.
            self.t
                .interrupt()
                .map_err(|e| self.ptrace_err("interrupt", e))?;
            self.t.cont(0).map_err(|e| self.ptrace_err("cont", e))?;
            detach_sig = self.wait_signal_path()?;
            self.t
                .set_regs(&saved)
                .map_err(|e| self.ptrace_err("setregs", e))?;
        }
        let pause = self.since.elapsed();
        self.t
            .detach(detach_sig)
            .map_err(|e| self.ptrace_err("detach", e))?;
        self.redeliver();
        Ok(pause)
    }

    /// Waits for the stop in the signal path after [`release`]'s interrupt; a signal-delivery
    /// stop is one too, and its signal is delivered by the detach.
    fn wait_signal_path(&mut self) -> Result<i32, InjectError> {
        let deadline = Instant::now() + self.opts.step_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let stop = self.t.wait(left).map_err(|e| {
                wait_error(
                    self.pid,
                    "stop for release",
                    self.opts.step_timeout,
                    e,
                    "its thread may stay stopped until modelprobe exits",
                )
            })?;
            match stop {
                Stop::Event(_) => return Ok(0),
                Stop::Signal(sig) => return Ok(sig),
                Stop::Syscall | Stop::Other(_) => {
                    self.t.cont(0).map_err(|e| self.ptrace_err("cont", e))?;
                }
            }
        }
    }

    /// Stops a tracee that is still running code of ours (a call that timed out), wherever it
    /// is, so its registers can be put back.
    fn regain(&mut self) -> Result<(), InjectError> {
        self.t
            .interrupt()
            .map_err(|e| self.ptrace_err("interrupt", e))?;
        let deadline = Instant::now() + self.opts.step_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let stop = self.t.wait(left).map_err(|e| {
                wait_error(
                    self.pid,
                    "stop again",
                    self.opts.step_timeout,
                    e,
                    "its thread runs on in the injector's code",
                )
            })?;
            match stop {
                Stop::Event(_) => break,
                Stop::Signal(_) => {
                    if let Ok(info) = self.t.siginfo() {
                        if !is_fault(&info) {
                            self.stashed.push(info);
                        }
                    }
                    self.t
                        .syscall(0)
                        .map_err(|e| self.ptrace_err("syscall", e))?;
                }
                Stop::Syscall | Stop::Other(_) => {
                    self.t
                        .syscall(0)
                        .map_err(|e| self.ptrace_err("syscall", e))?;
                }
            }
        }
        self.running = false;
        self.in_signal_path = true;
        Ok(())
    }

    /// Marks the tracee as stopped at a syscall exit (after a remote syscall or call).
    pub fn at_syscall_exit(&mut self) {
        self.in_signal_path = false;
    }

    /// Sends the held-back signals again, to the same thread.
    fn redeliver(&mut self) {
        const SI_TKILL: i32 = -6;
        for info in std::mem::take(&mut self.stashed) {
            let sig = info.signo();
            for attempt in 0.. {
                let r = if info.code() < 0 && info.code() != SI_TKILL {
                    // SAFETY: info is a complete 128-byte siginfo_t the kernel gave us.
                    unsafe {
                        libc::syscall(
                            libc::SYS_rt_tgsigqueueinfo,
                            self.pid as libc::pid_t,
                            self.t.tid as libc::pid_t,
                            sig,
                            info.0.as_ptr(),
                        )
                    }
                } else {
                    // SAFETY: tgkill takes plain integers.
                    unsafe {
                        libc::syscall(
                            libc::SYS_tgkill,
                            self.pid as libc::pid_t,
                            self.t.tid as libc::pid_t,
                            sig,
                        )
                    }
                };
                if r == 0 {
                    break;
                }
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EAGAIN) || attempt == 200 {
                    log::warn!(
                        "inject: could not re-send {} to thread {}: {e}",
                        signal_name(sig),
                        self.t.tid
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// A ptrace failure on this thread.
    pub fn ptrace_err(&self, op: &'static str, source: std::io::Error) -> InjectError {
        InjectError::Ptrace {
            pid: self.pid,
            tid: self.t.tid,
            op,
            source,
        }
    }
}

/// Waits for the first interrupt stop after the seize, delivering any signal that comes first
/// (nothing is changed yet, so it is delivered as it would have been). Returns the stop's
/// signal: SIGTRAP for the interrupt, a stop signal for a group stop.
fn wait_event(t: &Tracee, limit: Duration) -> Result<i32, WaitError> {
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
fn seek_boundary(
    pid: u32,
    t: &Tracee,
    opts: &InjectOptions,
) -> Result<(HeldAt, Regs), InjectError> {
    let tid = t.tid;
    let perr = |op: &'static str| {
        move |source| InjectError::Ptrace {
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

/// A fault raised by code running in the thread (not a signal someone sent).
fn is_fault(info: &SigInfo) -> bool {
    matches!(
        info.signo(),
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP | libc::SIGSYS
    ) && info.code() > 0
}

/// The error for a failed wait.
pub(super) fn wait_error(
    pid: u32,
    what: &str,
    after: Duration,
    e: WaitError,
    outcome: &str,
) -> InjectError {
    match e {
        WaitError::Timeout => InjectError::Timeout {
            pid,
            what: what.to_string(),
            after,
            outcome: outcome.to_string(),
        },
        WaitError::Gone(how) => InjectError::TargetDied {
            pid,
            how,
            hint: super::load::seccomp_hint(pid),
        },
        WaitError::Os(source) => InjectError::Ptrace {
            pid,
            tid: pid,
            op: "waitpid",
            source,
        },
    }
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
