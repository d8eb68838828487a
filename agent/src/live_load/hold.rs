//! Holding one thread of a target: stopping it at a good place, keeping its registers, FPU
//! state and the signals it is sent while held, and letting it go so that it cannot tell.
//!
//! Where the thread is taken, and so how it is given back, is [`boundary`](super::boundary)'s
//! business.
//!
//! Signals that reach the thread while it is held are taken off it (signal-delivery stops) and
//! sent again after the detach, with their `siginfo` where the kernel allows a forged one
//! (`sigqueue`), else with `tgkill`.
use std::time::{Duration, Instant};

use super::{
    boundary::{seek_boundary, wait_event, HeldAt, ERESTART_RESTARTBLOCK},
    failure::{wait_error, RESTORED},
    ptrace::{signal_name, FpState, Regs, SigInfo, Stop, Tracee, WaitError},
    LiveLoadError, LoadOptions,
};

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
    /// The held thread's syscall resumes from its restart block (`-ERESTART_RESTARTBLOCK`:
    /// `nanosleep`, `poll` with a timeout): calls then watch every syscall they make.
    pub watch_syscalls: bool,
    /// Code run in the thread used `nanosleep` or was cut short with `-ERESTART_RESTARTBLOCK`,
    /// which overwrites the thread's restart block.
    pub restart_block_used: bool,
    /// Limits.
    pub opts: LoadOptions,
    /// The borrowed `syscall` instruction.
    pub syscall_insn: u64,
    /// [`release`](Held::release) ran (or was attempted).
    released: bool,
    /// What the thread runs for us now ("dlopen", "mmap"), for crash reports.
    pub doing: &'static str,
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.released {
            self.released = true;
            if let Err(e) = self.put_back() {
                log::warn!(
                    "live load: putting back thread {} of {}: {e}",
                    self.t.tid,
                    self.pid
                );
            }
        }
    }
}

impl Held {
    /// Seizes thread `tid` of `pid` and stops it where it is safe to run code (see the module
    /// docs). On error nothing was changed: the caller's tracer thread exits, which detaches.
    pub fn acquire(
        pid: u32,
        tid: u32,
        syscall_insn: u64,
        opts: &LoadOptions,
    ) -> Result<Held, LiveLoadError> {
        let t = Tracee::seize(tid).map_err(|e| super::failure::seize_error(pid, tid, e))?;
        let unchanged = |what: &str, e: WaitError| {
            wait_error(pid, what, opts.step_timeout, e, "nothing was changed")
        };
        let perr = |op: &'static str| {
            move |source| LiveLoadError::Ptrace {
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
            return Err(LiveLoadError::Stopped { pid });
        }
        let regs = t.regs().map_err(perr("getregs"))?;
        let in_syscall = (regs.orig_rax as i64) >= 0;
        let (at, saved) = if in_syscall && super::boundary::good_in_syscall(&regs) {
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
            watch_syscalls: matches!(at, HeldAt::InSyscall(_))
                && saved.rax as i64 == ERESTART_RESTARTBLOCK,
            restart_block_used: false,
            opts: opts.clone(),
            syscall_insn,
            released: false,
            doing: "getpid",
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
            "live load: holding thread {tid} of {pid} at {at:?}, rip {:#x}",
            held.saved.rip
        );
        Ok(held)
    }

    /// Resumes the tracee to its next syscall stop.
    pub fn resume(&mut self) -> Result<(), LiveLoadError> {
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
    ) -> Result<(), LiveLoadError> {
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
                Stop::Signal(sig) => self.take_signal(sig, what)?,
                // A leftover interrupt, or a group stop: the thread keeps working for us.
                Stop::Event(_) | Stop::Other(_) => {}
            }
            self.t
                .syscall(0)
                .map_err(|e| self.ptrace_err("syscall", e))?;
        }
    }

    /// Resets the x87/SSE control state to the ABI's (once); put back by [`release`].
    pub fn prepare_call(&mut self) -> Result<(), LiveLoadError> {
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
    pub fn release(mut self) -> Result<Duration, LiveLoadError> {
        self.released = true;
        self.put_back()
    }

    /// The work of [`release`]; also run on drop, so that no error path (or panic) leaves the
    /// thread to be detached by the kernel with registers of ours.
    fn put_back(&mut self) -> Result<Duration, LiveLoadError> {
        if self.running {
            if let Err(e) = self.regain("stop again") {
                if self.running {
                    return Err(e);
                }
            }
        }
        let mut saved = self.saved;
        let mut signal_path = matches!(self.at, HeldAt::InSyscall(_));
        if signal_path && self.restart_block_used && saved.rax as i64 == ERESTART_RESTARTBLOCK {
            // The code run overwrote the restart block: re-run the call from the start (a
            // sleep lasts longer than asked, never shorter) instead of resuming it.
            log::warn!(
                "live load: the held thread's interrupted syscall {} restarts from the beginning",
                saved.orig_rax
            );
            saved.rax = saved.orig_rax;
            saved.rip -= 2;
            saved.orig_rax = u64::MAX;
            signal_path = false;
        }
        if let Err(e) = self.t.set_fp_state(&self.fp) {
            // Keep going: the general registers and the detach matter more.
            log::warn!(
                "live load: restoring the XSAVE state of thread {}: {e}",
                self.t.tid
            );
            let _ = self.t.set_fxsave(&self.fp.fx);
        }
        self.t
            .set_regs(&saved)
            .map_err(|e| self.ptrace_err("setregs", e))?;
        let mut detach_sig = 0;
        if signal_path && !self.in_signal_path {
            // Move from the syscall exit into the kernel's signal path without running any user
            // code: interrupt, continue, and the thread stops there at once. (A detach wakes
            // the thread with a signal check pending anyway, which reaches the same code; this
            // does not rely on it.)
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
    fn wait_signal_path(&mut self) -> Result<i32, LiveLoadError> {
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

    /// Checks, without waiting, for stops of a thread running a call with `PTRACE_CONT`:
    /// signals are held back, a fault or an exit is an error.
    pub fn poll_stop(
        &mut self,
        what: &str,
        limit: Duration,
        outcome: &str,
    ) -> Result<(), LiveLoadError> {
        loop {
            let stop = match self.t.wait(Duration::ZERO) {
                Err(WaitError::Timeout) => return Ok(()),
                Err(e) => return Err(wait_error(self.pid, what, limit, e, outcome)),
                Ok(stop) => stop,
            };
            if let Stop::Signal(sig) = stop {
                self.take_signal(sig, what)?;
            }
            self.t.cont(0).map_err(|e| self.ptrace_err("cont", e))?;
        }
    }

    /// Stops a tracee that is running code of ours (a call that returned and parked, or one
    /// that timed out), wherever it is: it ends in an interrupt stop.
    pub fn regain(&mut self, what: &str) -> Result<(), LiveLoadError> {
        self.t
            .interrupt()
            .map_err(|e| self.ptrace_err("interrupt", e))?;
        let step = self.opts.step_timeout;
        let deadline = Instant::now() + step;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = "its thread runs on in the injector's code";
            let stop = self
                .t
                .wait(left)
                .map_err(|e| wait_error(self.pid, what, step, e, outcome))?;
            match stop {
                Stop::Event(_) => break,
                Stop::Signal(sig) => self.take_signal(sig, what)?,
                Stop::Syscall | Stop::Other(_) => {}
            }
            self.t.cont(0).map_err(|e| self.ptrace_err("cont", e))?;
        }
        self.running = false;
        self.in_signal_path = true;
        Ok(())
    }

    /// At a signal-delivery stop: holds the signal back, or fails if it is a fault (the thread
    /// then stays stopped there, in the kernel's signal path).
    fn take_signal(&mut self, sig: i32, what: &str) -> Result<(), LiveLoadError> {
        let info = self
            .t
            .siginfo()
            .map_err(|e| self.ptrace_err("getsiginfo", e))?;
        if is_fault(&info) {
            self.running = false;
            self.in_signal_path = true;
            return Err(LiveLoadError::Crashed {
                pid: self.pid,
                what: self.doing.to_string(),
                signal: sig,
                addr: info.addr(),
            });
        }
        log::debug!("live load: {} held back while {what}", signal_name(sig));
        self.stashed.push(info);
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
                        "live load: could not re-send {} to thread {}: {e}",
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
    pub fn ptrace_err(&self, op: &'static str, source: std::io::Error) -> LiveLoadError {
        LiveLoadError::Ptrace {
            pid: self.pid,
            tid: self.t.tid,
            op,
            source,
        }
    }
}

/// A fault raised by code running in the thread (not a signal someone sent).
fn is_fault(info: &SigInfo) -> bool {
    matches!(
        info.signo(),
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP | libc::SIGSYS
    ) && info.code() > 0
}
