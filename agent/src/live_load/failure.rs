//! Building the errors every step of holding a thread shares: a failed wait (timeout, the
//! process died, ptrace refused) and the seccomp hint that explains a death. Kept apart from the
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
