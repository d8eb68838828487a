//! Raw ptrace for one x86-64 thread: requests through `syscall(SYS_ptrace)` (so glibc's and
//! musl's wrappers do not differ), the register and FPU/XSAVE layouts, and a `waitpid` that
//! never blocks longer than asked.
use std::{
    io, mem,
    time::{Duration, Instant},
};

// Requests and options from linux/ptrace.h (kernel ABI, the same for every libc).
const PTRACE_CONT: i64 = 7;
const PTRACE_GETREGS: i64 = 12;
const PTRACE_SETREGS: i64 = 13;
const PTRACE_GETFPREGS: i64 = 14;
const PTRACE_SETFPREGS: i64 = 15;
const PTRACE_DETACH: i64 = 17;
const PTRACE_SYSCALL: i64 = 24;
const PTRACE_GETSIGINFO: i64 = 0x4202;
const PTRACE_GETREGSET: i64 = 0x4204;
const PTRACE_SETREGSET: i64 = 0x4205;
const PTRACE_SEIZE: i64 = 0x4206;
const PTRACE_INTERRUPT: i64 = 0x4207;
const PTRACE_GET_SYSCALL_INFO: i64 = 0x420e;
const PTRACE_O_TRACESYSGOOD: u64 = 1;
const PTRACE_EVENT_STOP: i32 = 128;
/// `NT_X86_XSTATE`: the whole XSAVE area (AVX, AVX-512, ... beyond the legacy 512 bytes).
const NT_X86_XSTATE: u64 = 0x202;
/// Room for any XSAVE layout (AMX tile data included).
const XSTATE_MAX: usize = 32 * 1024;

/// `struct user_regs_struct` of x86-64.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // Register names.
pub(crate) struct Regs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

/// The FPU/vector state: the legacy FXSAVE image, and the XSAVE area when the CPU has one.
#[derive(Clone)]
pub(crate) struct FpState {
    /// The legacy FXSAVE image (x87, SSE).
    pub fx: [u8; 512],
    xstate: Option<Vec<u8>>,
}

impl FpState {
    /// The same state with x87 and SSE control reset to what the ABI expects at a call: empty
    /// x87 stack, default control words, default MXCSR (vector registers are the callee's).
    pub fn for_call(&self) -> [u8; 512] {
        let mut fx = [0u8; 512];
        fx[0..2].copy_from_slice(&0x037fu16.to_le_bytes()); // fcw
        fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes()); // mxcsr
        fx[28..32].copy_from_slice(&self.fx[28..32]); // mxcsr_mask, as the CPU has it
        fx
    }
}

/// Where a stopped thread is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// `PTRACE_EVENT_STOP`: our interrupt (`SIGTRAP`) or a group stop (a stop signal); the
    /// thread is inside the kernel's signal handling, where syscall restarts are decided.
    Event(i32),
    /// A syscall-entry or syscall-exit stop.
    Syscall,
    /// A signal-delivery stop for this signal.
    Signal(i32),
    /// Some other ptrace event (none is enabled; kept to report it).
    Other(i32),
}

/// Why a wait returned without a stop.
#[derive(Debug)]
pub(crate) enum WaitError {
    /// No stop within the limit.
    Timeout,
    /// The thread exited or was killed (the text says how).
    Gone(String),
    /// waitpid failed.
    Os(io::Error),
}

/// Syscall entry or exit, from `PTRACE_GET_SYSCALL_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyscallPhase {
    /// Entry, with the ABI's audit arch (`AUDIT_ARCH_X86_64` for 64-bit syscalls).
    Entry {
        /// `AUDIT_ARCH_*`.
        arch: u32,
    },
    /// Exit.
    Exit,
    /// Neither (not in a syscall stop), or the kernel does not say.
    Unknown,
}

/// `AUDIT_ARCH_X86_64`.
pub(crate) const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

fn ptrace(req: i64, tid: u32, addr: u64, data: u64) -> io::Result<i64> {
    // SAFETY: every request passed here takes (pid, addr, data) as plain integers or as
    // pointers to buffers that the caller owns and sized for that request; the kernel validates
    // everything else.
    let r = unsafe { libc::syscall(libc::SYS_ptrace, req, tid as libc::pid_t, addr, data) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A thread this thread of the agent traces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tracee {
    /// The thread id.
    pub tid: u32,
}

impl Tracee {
    /// `PTRACE_SEIZE` with `PTRACE_O_TRACESYSGOOD` (and not `PTRACE_O_EXITKILL`: the target
    /// must outlive the agent). The thread keeps running.
    pub fn seize(tid: u32) -> io::Result<Tracee> {
        ptrace(PTRACE_SEIZE, tid, 0, PTRACE_O_TRACESYSGOOD)?;
        Ok(Tracee { tid })
    }

    /// `PTRACE_INTERRUPT`: stop at the next chance, reported as [`Stop::Event`].
    pub fn interrupt(&self) -> io::Result<()> {
        ptrace(PTRACE_INTERRUPT, self.tid, 0, 0).map(drop)
    }

    /// Resumes to the next syscall entry or exit, delivering `sig` (0 for none).
    pub fn syscall(&self, sig: i32) -> io::Result<()> {
        ptrace(PTRACE_SYSCALL, self.tid, 0, sig as u64).map(drop)
    }

    /// Resumes, delivering `sig` (0 for none).
    pub fn cont(&self, sig: i32) -> io::Result<()> {
        ptrace(PTRACE_CONT, self.tid, 0, sig as u64).map(drop)
    }

    /// Detaches; the thread resumes.
    pub fn detach(&self, sig: i32) -> io::Result<()> {
        ptrace(PTRACE_DETACH, self.tid, 0, sig as u64).map(drop)
    }

    /// The general registers.
    pub fn regs(&self) -> io::Result<Regs> {
        let mut regs = Regs::default();
        ptrace(PTRACE_GETREGS, self.tid, 0, &mut regs as *mut Regs as u64)?;
        Ok(regs)
    }

    /// Sets the general registers.
    pub fn set_regs(&self, regs: &Regs) -> io::Result<()> {
        ptrace(PTRACE_SETREGS, self.tid, 0, regs as *const Regs as u64).map(drop)
    }

    /// The FPU/vector state.
    pub fn fp_state(&self) -> io::Result<FpState> {
        let mut fx = [0u8; 512];
        ptrace(PTRACE_GETFPREGS, self.tid, 0, fx.as_mut_ptr() as u64)?;
        let mut buf = vec![0u8; XSTATE_MAX];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let xstate = match ptrace(
            PTRACE_GETREGSET,
            self.tid,
            NT_X86_XSTATE,
            &mut iov as *mut libc::iovec as u64,
        ) {
            Ok(_) => {
                buf.truncate(iov.iov_len);
                Some(buf)
            }
            Err(e) => {
                log::debug!("live load: no XSAVE state for thread {}: {e}", self.tid);
                None
            }
        };
        Ok(FpState { fx, xstate })
    }

    /// Puts back a state read by [`fp_state`](Self::fp_state).
    pub fn set_fp_state(&self, fp: &FpState) -> io::Result<()> {
        if let Some(x) = &fp.xstate {
            let mut iov = libc::iovec {
                iov_base: x.as_ptr() as *mut libc::c_void,
                iov_len: x.len(),
            };
            ptrace(
                PTRACE_SETREGSET,
                self.tid,
                NT_X86_XSTATE,
                &mut iov as *mut libc::iovec as u64,
            )
            .map(drop)
        } else {
            self.set_fxsave(&fp.fx)
        }
    }

    /// Sets the legacy FXSAVE part only.
    pub fn set_fxsave(&self, fx: &[u8; 512]) -> io::Result<()> {
        ptrace(PTRACE_SETFPREGS, self.tid, 0, fx.as_ptr() as u64).map(drop)
    }

    /// The `siginfo_t` of the current signal-delivery stop, as raw bytes.
    pub fn siginfo(&self) -> io::Result<SigInfo> {
        let mut info = SigInfo([0; 16]);
        ptrace(PTRACE_GETSIGINFO, self.tid, 0, info.0.as_mut_ptr() as u64)?;
        Ok(info)
    }

    /// Whether the current syscall stop is an entry or an exit.
    pub fn syscall_phase(&self) -> SyscallPhase {
        // struct ptrace_syscall_info: u8 op, pad, u32 arch, then a union; 88 bytes in all.
        let mut info = [0u64; 11];
        let size = mem::size_of_val(&info) as u64;
        match ptrace(
            PTRACE_GET_SYSCALL_INFO,
            self.tid,
            size,
            info.as_mut_ptr() as u64,
        ) {
            Ok(_) => match info[0] & 0xff {
                1 => SyscallPhase::Entry {
                    arch: (info[0] >> 32) as u32,
                },
                2 => SyscallPhase::Exit,
                _ => SyscallPhase::Unknown,
            },
            Err(_) => SyscallPhase::Unknown,
        }
    }

    /// Waits up to `limit` for the thread's next stop.
    pub fn wait(&self, limit: Duration) -> Result<Stop, WaitError> {
        let start = Instant::now();
        let mut naps = 0u32;
        loop {
            let mut status = 0;
            // SAFETY: status is a valid out-pointer; WNOHANG makes the call return at once.
            let r = unsafe {
                libc::waitpid(
                    self.tid as libc::pid_t,
                    &mut status,
                    libc::__WALL | libc::WNOHANG,
                )
            };
            if r == self.tid as libc::pid_t {
                return decode(status);
            }
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(if e.raw_os_error() == Some(libc::ECHILD) {
                    WaitError::Gone("is gone".into())
                } else {
                    WaitError::Os(e)
                });
            }
            let waited = start.elapsed();
            if waited >= limit {
                return Err(WaitError::Timeout);
            }
            // Stops come within microseconds; spin briefly (yielding the CPU to the tracee),
            // then back off to sleeps of up to a millisecond.
            if waited < Duration::from_micros(300) {
                std::thread::yield_now();
            } else {
                naps += 1;
                let nap = Duration::from_micros(20u64 << naps.min(6)).min(Duration::from_millis(1));
                std::thread::sleep(nap.min(limit - waited));
            }
        }
    }
}

fn decode(status: i32) -> Result<Stop, WaitError> {
    if libc::WIFEXITED(status) {
        return Err(WaitError::Gone(format!(
            "exited with status {}",
            libc::WEXITSTATUS(status)
        )));
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        return Err(WaitError::Gone(format!(
            "was killed by signal {sig} ({})",
            signal_name(sig)
        )));
    }
    let sig = libc::WSTOPSIG(status);
    let event = status >> 16;
    Ok(if event == PTRACE_EVENT_STOP {
        Stop::Event(sig)
    } else if event != 0 {
        Stop::Other(event)
    } else if sig == libc::SIGTRAP | 0x80 {
        Stop::Syscall
    } else {
        Stop::Signal(sig)
    })
}

/// A raw `siginfo_t` (128 bytes).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct SigInfo(pub [u64; 16]);

impl SigInfo {
    /// `si_signo`.
    pub fn signo(&self) -> i32 {
        self.0[0] as u32 as i32
    }

    /// `si_code`.
    pub fn code(&self) -> i32 {
        (self.0[1] & 0xffff_ffff) as u32 as i32
    }

    /// `si_addr` (meaningful for faults).
    pub fn addr(&self) -> u64 {
        self.0[2]
    }
}

impl std::fmt::Debug for SigInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "siginfo(sig {}, code {})", self.signo(), self.code())
    }
}

/// `SIGSEGV` and the like, for messages (a `SIGSYS` here is a seccomp filter's).
pub(crate) fn signal_name(sig: i32) -> String {
    if sig == libc::SIGSYS {
        return "SIGSYS, a seccomp filter".into();
    }
    crate::signals::name(sig)
}
