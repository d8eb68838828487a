//! What can go wrong while loading a library into another process, each as one line that says
//! what failed and what to do about it.
use std::{io, time::Duration};

/// Why [`load`](super::load), [`retract`](super::retract) or
/// [`preflight`](super::preflight) failed.
///
/// Variants whose message ends in "nothing was changed" left the target exactly as it was;
/// "the process was restored" means the held thread got its registers back but resources the
/// injector had created may have stayed behind (it tries to remove them).
#[derive(Debug, thiserror::Error)]
pub enum LiveLoadError {
    /// This build targets an architecture the injector does not support.
    #[error("library injection needs x86-64 Linux; this modelprobe was built for {arch}")]
    Unsupported {
        /// `std::env::consts::ARCH` of this build.
        arch: &'static str,
    },

    /// The memfd name given is unusable.
    #[error("invalid library name {name:?}: use 1 to 200 bytes without '/' or NUL")]
    BadName {
        /// The name as given.
        name: String,
    },

    /// No process with this pid exists.
    #[error("process {pid} not found: check the pid (`ps -p {pid}`)")]
    NoSuchProcess {
        /// The pid asked for.
        pid: u32,
    },

    /// The process has exited and waits for its parent to reap it.
    #[error("process {pid} has already exited (a zombie); nothing to inject into")]
    Zombie {
        /// The pid.
        pid: u32,
    },

    /// The pid is a kernel thread.
    #[error("process {pid} is a kernel thread; only user processes can load libraries")]
    KernelThread {
        /// The pid.
        pid: u32,
    },

    /// The process is stopped by a signal (Ctrl-Z, SIGSTOP): running code in it would resume it.
    #[error(
        "process {pid} is stopped (SIGSTOP or Ctrl-Z); continue it first (`kill -CONT {pid}`)"
    )]
    Stopped {
        /// The pid.
        pid: u32,
    },

    /// The executable is not an x86-64 ELF file.
    #[error("process {pid} runs a {what} executable; only x86-64 processes are supported")]
    WrongArch {
        /// The pid.
        pid: u32,
        /// What it is instead ("32-bit", "aarch64 (machine 183)").
        what: String,
    },

    /// Another tracer (a debugger, strace, another agent) holds the process.
    #[error("process {pid} is already being traced by pid {tracer} ({tracer_name}); detach it first (quit the debugger or strace)")]
    AlreadyTraced {
        /// The pid.
        pid: u32,
        /// The tracer's pid (`TracerPid:` in `/proc/PID/status`).
        tracer: u32,
        /// The tracer's command name, or "?".
        tracer_name: String,
    },

    /// Yama forbids every ptrace attach on this machine.
    #[error("ptrace is disabled by Yama (kernel.yama.ptrace_scope=3, fixed until reboot); injection is impossible on this machine")]
    YamaDisabled,

    /// The kernel refused the attach.
    #[error(
        "not allowed to ptrace process {pid} ({why}); run as root (sudo) or with CAP_SYS_PTRACE"
    )]
    PermissionDenied {
        /// The pid.
        pid: u32,
        /// What likely refused it (Yama scope, credentials).
        why: String,
    },

    /// Strict seccomp allows only read, write, exit and sigreturn: any other call kills it.
    #[error("process {pid} runs under strict seccomp (mode 1), where any other system call kills it; injection is impossible")]
    StrictSeccomp {
        /// The pid.
        pid: u32,
    },

    /// No library mapped in the process exports `dlopen` (and its companions).
    #[error("process {pid} has no dlopen: glibc older than 2.34 without libdl mapped, or a static binary; start it with LD_PRELOAD instead")]
    NoDlopen {
        /// The pid.
        pid: u32,
    },

    /// A `syscall` instruction to borrow was not found.
    #[error("process {pid} maps no executable `syscall` instruction in {lib} or the vdso; cannot run system calls in it")]
    NoSyscallInstruction {
        /// The pid.
        pid: u32,
        /// The library searched.
        lib: String,
    },

    /// A file under `/proc` (or a library it names) could not be read.
    #[error("process {pid}: cannot read {path}: {source}")]
    Proc {
        /// The pid.
        pid: u32,
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// A ptrace request failed after the attach (the process is most likely exiting).
    #[error("ptrace {op} on thread {tid} of process {pid} failed: {source}")]
    Ptrace {
        /// The pid.
        pid: u32,
        /// The thread.
        tid: u32,
        /// The request.
        op: &'static str,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },

    /// The thread did not reach the expected stop in time; see the message for what was undone.
    #[error("timed out after {} waiting for process {pid} to {what}; {outcome}", secs(*after))]
    Timeout {
        /// The pid.
        pid: u32,
        /// What it was waiting for ("stop", "return from memfd_create").
        what: String,
        /// The limit (`LoadOptions::step_timeout` or `call_timeout`).
        after: Duration,
        /// "nothing was changed", or what state the process was left in.
        outcome: String,
    },

    /// The process exited or was killed while a thread was held.
    #[error("process {pid} {how} during injection{hint}")]
    TargetDied {
        /// The pid.
        pid: u32,
        /// "exited with status 1", "was killed by signal 31 (SIGSYS)".
        how: String,
        /// A likely reason (a seccomp filter), with a leading "; ", or empty.
        hint: String,
    },

    /// A system call run in the target failed.
    #[error("{call} in process {pid} failed: {source}{hint}; the process was restored")]
    RemoteSyscall {
        /// The pid.
        pid: u32,
        /// The call ("memfd_create").
        call: &'static str,
        /// The errno it returned.
        #[source]
        source: io::Error,
        /// A likely reason (seccomp, W^X policy), with a leading "; ", or empty.
        hint: String,
    },

    /// Reading or writing the target's memory or its memfd failed.
    #[error("{what} in process {pid} failed: {source}; the process was restored")]
    Memory {
        /// The pid.
        pid: u32,
        /// What was being done.
        what: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// `dlopen` returned NULL.
    #[error("dlopen of {name} in process {pid} failed: {message}; the process was restored")]
    Dlopen {
        /// The pid.
        pid: u32,
        /// The library name.
        name: String,
        /// `dlerror()` in the target.
        message: String,
    },

    /// `dlclose` returned an error.
    #[error("dlclose in process {pid} failed: {message}")]
    Dlclose {
        /// The pid.
        pid: u32,
        /// `dlerror()` in the target.
        message: String,
    },

    /// Code run in the target faulted (a crash in the library's constructor, most likely).
    #[error("{what} in process {pid} crashed with signal {signal} at {addr:#x}; the thread was restored but the process may be unstable: restart it")]
    Crashed {
        /// The pid.
        pid: u32,
        /// The call that crashed.
        what: String,
        /// The fault signal.
        signal: i32,
        /// The faulting address (`si_addr`).
        addr: u64,
    },

    /// The library's `modelprobe_inject_stop` failed, so unloading it could pull code from
    /// under its threads.
    #[error("modelprobe_inject_stop in process {pid} returned {code}: the library's threads may still run, so it was left loaded")]
    StopFailed {
        /// The pid.
        pid: u32,
        /// What it returned.
        code: i32,
    },

    /// The library stayed mapped after `dlclose` returned.
    #[error("library {path} is still mapped in process {pid} after dlclose: it is marked NODELETE or another library depends on it")]
    StillMapped {
        /// The pid.
        pid: u32,
        /// The mapping's name in `/proc/PID/maps`.
        path: String,
    },

    /// `retract` was asked for a library that is not loaded (any more).
    #[error("the injected library (fd {fd} in process {pid}) is not loaded any more; nothing to retract")]
    NotLoaded {
        /// The pid.
        pid: u32,
        /// The memfd descriptor recorded at injection.
        fd: i32,
    },
}

/// `2 s`, `1.5 s`, `200 ms`.
fn secs(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_naturally() {
        let e = LiveLoadError::Timeout {
            pid: 123,
            what: "stop".into(),
            after: Duration::from_secs(2),
            outcome: "nothing was changed".into(),
        };
        assert_eq!(
            e.to_string(),
            "timed out after 2 s waiting for process 123 to stop; nothing was changed"
        );
        assert_eq!(secs(Duration::from_millis(200)), "200 ms");
        assert_eq!(secs(Duration::from_millis(1500)), "1.5 s");
    }
}
