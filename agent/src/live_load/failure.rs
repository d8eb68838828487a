//! Building the errors every step of holding a thread shares: a refused seize, a failed wait
//! (timeout, the process died, ptrace refused), and the hints that explain them. Kept apart from the
//! steps so that none of them imports another for its errors.
use std::time::Duration;

use super::{procfs, ptrace::WaitError, LiveLoadError};

/// What a timeout left behind, when the held thread could be put back.
pub(super) const RESTORED: &str = "the process was restored";

/// The error for a failed wait.
pub(super) fn wait_error(
    pid: u32,
    what: &str,
    after: Duration,
    e: WaitError,
    outcome: &str,
) -> LiveLoadError {
    match e {
        WaitError::Timeout => LiveLoadError::Timeout {
            pid,
            what: what.to_string(),
            after,
            outcome: outcome.to_string(),
        },
        WaitError::Gone(how) => LiveLoadError::TargetDied {
            pid,
            how,
            hint: seccomp_hint(pid),
        },
        WaitError::Os(source) => LiveLoadError::Ptrace {
            pid,
            tid: pid,
            op: "waitpid",
            source,
        },
    }
}

/// "; it has a seccomp filter ..." when the process has one, else empty.
pub(super) fn seccomp_hint(pid: u32) -> String {
    match procfs::status(pid).map(|s| s.seccomp) {
        Ok(2) => {
            "; it runs under a seccomp filter, which may forbid the injector's system calls".into()
        }
        _ => String::new(),
    }
}

/// The error for a refused `PTRACE_SEIZE`.
pub(super) fn seize_error(pid: u32, tid: u32, e: std::io::Error) -> LiveLoadError {
    match e.raw_os_error() {
        Some(libc::ESRCH) => LiveLoadError::NoSuchProcess { pid },
        Some(libc::EPERM) => {
            let st = procfs::status(pid).unwrap_or_default();
            if st.tracer_pid != 0 {
                return already_traced(pid, st.tracer_pid);
            }
            let why = match procfs::yama_scope() {
                Some(3) => return LiveLoadError::YamaDisabled,
                Some(s @ (1 | 2)) => format!("Yama kernel.yama.ptrace_scope={s}"),
                _ => "the kernel refused: another user's process, or no CAP_SYS_PTRACE".into(),
            };
            LiveLoadError::PermissionDenied { pid, why }
        }
        _ => LiveLoadError::Ptrace {
            pid,
            tid,
            op: "seize",
            source: e,
        },
    }
}

/// [`LiveLoadError::AlreadyTraced`], naming the process of tracer thread `tracer_tid`.
pub(super) fn already_traced(pid: u32, tracer_tid: u32) -> LiveLoadError {
    let st = procfs::status(tracer_tid).ok();
    LiveLoadError::AlreadyTraced {
        pid,
        tracer: st.as_ref().map_or(tracer_tid, |s| s.tgid),
        tracer_name: st.map_or_else(|| "?".into(), |s| s.name),
    }
}
