//! Running code in a held thread: system calls through a `syscall` instruction borrowed from
//! libc (nothing other threads execute is overwritten), function calls through a trampoline on
//! a scratch mapping of our own (with its own stack), and the target's memory through
//! `/proc/PID/mem`.
use std::{
    fs::File,
    io,
    os::unix::fs::FileExt,
    time::{Duration, Instant},
};

use super::{
    failure::{seccomp_hint, wait_error, RESTORED},
    hold::Held,
    ptrace::{SyscallPhase, WaitError},
    LiveLoadError,
};

/// The trampoline: call the function in `rax` (arguments already in place), store its result
/// and a "done" flag in the data page, then stop at a `getpid` syscall (a stop only when the
/// tracer watches syscalls) and park in `pause()`, where the tracer, polling the flag,
/// interrupts it. Nothing raises a signal, so the target's `SIGTRAP` disposition is never
/// touched; and if the agent dies during the call, the thread parks instead of running off.
const TRAMPOLINE: [u8; 38] = [
    0xff, 0xd0, // 0: call *%rax
    0x48, 0x89, 0xc7, // 2: mov %rax,%rdi
    0x48, 0x89, 0x05, 0xf4, 0x0f, 0x00, 0x00, // 5: mov %rax,RESULT(%rip)  (4096 - 12)
    0xc7, 0x05, 0xf2, 0x0f, 0x00, 0x00, 0x01, 0x00, 0x00,
    0x00, // 12: movl $1,DONE(%rip)  (4104 - 22)
    0xb8, 0x27, 0x00, 0x00, 0x00, // 22: mov $39 (getpid),%eax
    0x0f, 0x05, // 27: syscall
    0xb8, 0x22, 0x00, 0x00, 0x00, // 29: park: mov $34 (pause),%eax
    0x0f, 0x05, // 34: syscall
    0xeb, 0xf7, // 36: jmp park
];
/// Where a syscall stop at the trampoline's `getpid` reports rip.
const TRAP_RIP: u64 = 29;
const PAGE: u64 = 4096;
/// The call's result and done flag, at the start of the data page (see the displacements).
const RESULT: u64 = PAGE;
const DONE: u64 = PAGE + 8;
/// One code page, then data (at its low end) and stack (growing down from its top).
const SCRATCH_LEN: u64 = PAGE + (1 << 20);
/// What a call that timed out leaves.
const MID_CALL: &str =
    "the thread was put back mid-call, so the process may be unstable: restart it if it misbehaves";

/// The target's memory.
pub(super) struct Mem {
    file: File,
    pid: u32,
}

impl Mem {
    /// Opens `/proc/PID/mem`.
    pub fn open(pid: u32) -> Result<Mem, LiveLoadError> {
        let path = format!("/proc/{pid}/mem");
        let file =
            File::options()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|source| match source.kind() {
                    std::io::ErrorKind::PermissionDenied => LiveLoadError::PermissionDenied {
                        pid,
                        why: format!("cannot open {path}"),
                    },
                    _ => LiveLoadError::Proc { pid, path, source },
                })?;
        Ok(Mem { file, pid })
    }

    /// Writes `bytes` at `addr` (read-only pages too, as a debugger does).
    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), LiveLoadError> {
        self.file
            .write_all_at(bytes, addr)
            .map_err(|source| LiveLoadError::Memory {
                pid: self.pid,
                what: format!("writing {} bytes at {addr:#x}", bytes.len()),
                source,
            })
    }

    /// Reads a 64-bit integer.
    pub fn read_u64(&self, addr: u64) -> Result<u64, LiveLoadError> {
        let mut b = [0u8; 8];
        self.file
            .read_exact_at(&mut b, addr)
            .map_err(|source| LiveLoadError::Memory {
                pid: self.pid,
                what: format!("reading at {addr:#x}"),
                source,
            })?;
        Ok(u64::from_ne_bytes(b))
    }

    /// Reads a 32-bit integer.
    pub fn read_u32(&self, addr: u64) -> Result<u32, LiveLoadError> {
        let mut b = [0u8; 4];
        self.file
            .read_exact_at(&mut b, addr)
            .map_err(|source| LiveLoadError::Memory {
                pid: self.pid,
                what: format!("reading at {addr:#x}"),
                source,
            })?;
        Ok(u32::from_ne_bytes(b))
    }

    /// Reads a NUL-terminated string of at most `max` bytes (lossy UTF-8).
    pub fn read_cstr(&self, addr: u64, max: usize) -> String {
        let mut out = Vec::new();
        let mut chunk = [0u8; 256];
        while out.len() < max {
            let Ok(n) = self.file.read_at(&mut chunk, addr + out.len() as u64) else {
                break;
            };
            if n == 0 {
                break;
            }
            if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..end]);
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        out.truncate(max);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The scratch mapping in the target: trampoline code, strings, and a stack for calls.
pub(super) struct Scratch {
    /// First address.
    pub base: u64,
    /// Next free byte of the data area.
    data_next: u64,
}

impl Scratch {
    /// Maps it (read-write), writes the trampoline, and makes the code page read-execute.
    pub fn map(held: &mut Held, mem: &Mem) -> Result<Scratch, LiveLoadError> {
        let prot_rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let raw = held.syscall(
            libc::SYS_mmap,
            &[0, SCRATCH_LEN, prot_rw, flags, u64::MAX, 0],
        )?;
        let base = check(held, "mmap", raw, "")?;
        let scratch = Scratch {
            base,
            data_next: base + DONE + 8,
        };
        mem.write(base, &TRAMPOLINE)?;
        let prot_rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        let raw = held.syscall(libc::SYS_mprotect, &[base, PAGE, prot_rx])?;
        let hint = "; its W^X policy (SELinux execmem, MemoryDenyWriteExecute) forbids new code";
        if let Err(e) = check(held, "mprotect", raw, hint) {
            scratch.unmap(held)?;
            return Err(e);
        }
        Ok(scratch)
    }

    /// Copies `s` (NUL-terminated) into the data area; returns its address.
    pub fn put_str(&mut self, mem: &Mem, s: &str) -> Result<u64, LiveLoadError> {
        let addr = self.data_next;
        let mut bytes = Vec::with_capacity(s.len() + 1);
        bytes.extend_from_slice(s.as_bytes());
        bytes.push(0);
        mem.write(addr, &bytes)?;
        self.data_next = (addr + bytes.len() as u64 + 15) & !15;
        Ok(addr)
    }

    /// Unmaps it.
    pub fn unmap(&self, held: &mut Held) -> Result<(), LiveLoadError> {
        let raw = held.syscall(libc::SYS_munmap, &[self.base, SCRATCH_LEN])?;
        check(held, "munmap", raw, "").map(drop)
    }

    /// The top of the call stack (16-byte aligned, as the ABI wants before a `call`).
    fn stack_top(&self) -> u64 {
        self.base + SCRATCH_LEN
    }
}

/// A syscall's raw return value as a result: `-errno` becomes [`LiveLoadError::RemoteSyscall`].
pub(super) fn check(
    held: &Held,
    call: &'static str,
    raw: u64,
    hint: &str,
) -> Result<u64, LiveLoadError> {
    let v = raw as i64;
    if (-4095..0).contains(&v) {
        let mut hint = hint.to_string();
        if hint.is_empty() && matches!(-v as i32, libc::EPERM | libc::EACCES | libc::ENOSYS) {
            hint = seccomp_hint(held.pid);
        }
        Err(LiveLoadError::RemoteSyscall {
            pid: held.pid,
            call,
            source: io::Error::from_raw_os_error(-v as i32),
            hint,
        })
    } else {
        Ok(raw)
    }
}

fn syscall_name(nr: i64) -> &'static str {
    match nr {
        libc::SYS_mmap => "mmap",
        libc::SYS_munmap => "munmap",
        libc::SYS_mprotect => "mprotect",
        libc::SYS_close => "close",
        libc::SYS_memfd_create => "memfd_create",
        _ => "a system call",
    }
}

impl Held {
    /// Runs syscall `nr` with `args` in the held thread; returns the raw `rax` (`-errno` on
    /// failure). The thread is left at the syscall's exit stop.
    pub fn syscall(&mut self, nr: i64, args: &[u64]) -> Result<u64, LiveLoadError> {
        let name = syscall_name(nr);
        self.doing = name;
        let mut r = self.saved;
        r.rip = self.syscall_insn;
        r.rax = nr as u64;
        // Not in a syscall: the kernel must not "restart" anything when the thread resumes.
        r.orig_rax = u64::MAX;
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9] = a;
        self.t
            .set_regs(&r)
            .map_err(|e| self.ptrace_err("setregs", e))?;
        let step = self.opts.step_timeout;
        let what = format!("run {name}");
        for _phase in ["entry", "exit"] {
            self.resume()?;
            self.next_syscall_stop(Instant::now() + step, &what, step, RESTORED)?;
        }
        let regs = self.t.regs().map_err(|e| self.ptrace_err("getregs", e))?;
        self.at_syscall_exit();
        if regs.orig_rax != nr as u64 || regs.rip != self.syscall_insn + 2 {
            return Err(LiveLoadError::RemoteSyscall {
                pid: self.pid,
                call: name,
                source: io::Error::other(format!("the thread stopped at {:#x}", regs.rip)),
                hint: String::new(),
            });
        }
        Ok(regs.rax)
    }

    /// Calls `func(args...)` in the held thread on the scratch stack and returns its result
    /// (`rax`). The thread is left stopped (at a syscall exit or an interrupt stop).
    ///
    /// Normally the thread runs the call untraced-fast (`PTRACE_CONT`: its own syscalls do not
    /// stop) and the tracer polls the trampoline's done flag. When the held thread's
    /// interrupted syscall resumes from its restart block ([`Held::watch_syscalls`]), every
    /// syscall of the call is watched instead, to notice one that overwrites that block.
    pub fn call(
        &mut self,
        what: &'static str,
        func: u64,
        args: &[u64],
        scratch: &Scratch,
        mem: &Mem,
    ) -> Result<u64, LiveLoadError> {
        self.doing = what;
        self.prepare_call()?;
        mem.write(scratch.base + DONE, &0u32.to_ne_bytes())?;
        let mut r = self.saved;
        r.rip = scratch.base;
        r.rax = func;
        r.rsp = scratch.stack_top();
        r.orig_rax = u64::MAX;
        // Trap flag and direction flag clear, as the ABI has them at a call.
        r.eflags &= !(0x100 | 0x400);
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        [r.rdi, r.rsi, r.rdx, r.rcx, r.r8, r.r9] = a;
        self.t
            .set_regs(&r)
            .map_err(|e| self.ptrace_err("setregs", e))?;
        let deadline = Instant::now() + self.opts.call_timeout;
        let waiting = format!("return from {what}");
        if self.watch_syscalls {
            self.call_watching(scratch, deadline, &waiting)?;
        } else {
            self.call_polling(scratch, mem, deadline, &waiting)?;
        }
        mem.read_u64(scratch.base + RESULT)
    }

    /// Runs the call with `PTRACE_CONT` until the done flag is set, then interrupts the
    /// thread, parked in `pause()`.
    fn call_polling(
        &mut self,
        scratch: &Scratch,
        mem: &Mem,
        deadline: Instant,
        waiting: &str,
    ) -> Result<(), LiveLoadError> {
        let limit = self.opts.call_timeout;
        self.t.cont(0).map_err(|e| self.ptrace_err("cont", e))?;
        self.running = true;
        let start = Instant::now();
        let mut naps = 0u32;
        while mem.read_u32(scratch.base + DONE)? == 0 {
            // Signals, faults and exits still stop the thread: handle them as they come.
            self.poll_stop(waiting, limit, MID_CALL)?;
            let now = Instant::now();
            if now >= deadline {
                return Err(wait_error(
                    self.pid,
                    waiting,
                    limit,
                    WaitError::Timeout,
                    MID_CALL,
                ));
            }
            if now - start < Duration::from_micros(300) {
                std::thread::yield_now();
            } else {
                naps += 1;
                std::thread::sleep(Duration::from_micros(20u64 << naps.min(6)).min(deadline - now));
            }
        }
        self.regain(waiting)
    }

    /// Runs the call with `PTRACE_SYSCALL` up to the trampoline's `getpid`, noting syscalls
    /// that overwrite the restart block; leaves the thread at that `getpid`'s exit.
    fn call_watching(
        &mut self,
        scratch: &Scratch,
        deadline: Instant,
        waiting: &str,
    ) -> Result<(), LiveLoadError> {
        let limit = self.opts.call_timeout;
        let trap = scratch.base + TRAP_RIP;
        loop {
            self.resume()?;
            self.next_syscall_stop(deadline, waiting, limit, MID_CALL)?;
            let regs = self.t.regs().map_err(|e| self.ptrace_err("getregs", e))?;
            let entry = match self.t.syscall_phase() {
                SyscallPhase::Entry { .. } => true,
                SyscallPhase::Exit => false,
                SyscallPhase::Unknown => regs.rax as i64 == -(libc::ENOSYS as i64),
            };
            if entry && regs.rip == trap && regs.orig_rax == libc::SYS_getpid as u64 {
                break;
            }
            let nr = regs.orig_rax as i64;
            if (entry && (nr == libc::SYS_nanosleep || nr == libc::SYS_clock_nanosleep))
                || (!entry && regs.rax as i64 == -516)
            {
                log::debug!("live load: {waiting}: syscall {nr} overwrites the restart block");
                self.restart_block_used = true;
            }
        }
        // Let the trap's getpid run, to stop at its exit like after any other step.
        self.resume()?;
        let step = self.opts.step_timeout;
        self.next_syscall_stop(Instant::now() + step, waiting, step, RESTORED)?;
        self.at_syscall_exit();
        Ok(())
    }
}

/// Milliseconds, for logs.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-assembled displacements land where the tracer reads and polls.
    #[test]
    fn trampoline_addresses_its_data_page() {
        let disp = |at: usize| i32::from_le_bytes(TRAMPOLINE[at..at + 4].try_into().unwrap());
        assert_eq!(12 + i64::from(disp(8)), RESULT as i64);
        assert_eq!(22 + i64::from(disp(14)), DONE as i64);
        assert_eq!(
            TRAMPOLINE[TRAP_RIP as usize - 2..TRAP_RIP as usize],
            [0x0f, 0x05]
        );
        let jmp = TRAMPOLINE.len() as i64 + i64::from(TRAMPOLINE[37] as i8);
        assert_eq!(jmp, TRAP_RIP as i64, "jmp park");
        assert_eq!(SCRATCH_LEN % 16, 0, "stack top aligned");
    }
}
