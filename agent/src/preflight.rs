//! Checks made before anything is attached, so that a missing privilege or kernel feature is
//! one clear line and not a half-attached profiler.
use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::{Error, Result};

/// Capability numbers from `linux/capability.h`.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Where tracefs is (or gets) mounted.
pub const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Fails with [`Error::Permission`] unless this process may load BPF and open system-wide perf
/// events: effective uid 0, or CAP_BPF with CAP_PERFMON, or CAP_SYS_ADMIN.
pub fn check_privileges() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io("reading /proc/self/status", e))?;
    let caps = parse_cap_eff(&status).unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(Error::Permission)
    }
}

/// The `CapEff:` mask of a `/proc/PID/status` text.
fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// The oldest kernel the BPF programs load on: `bpf_loop` (5.17) runs the stack walk, after
/// `bpf_task_pt_regs` (5.15).
const MIN_KERNEL: (u32, u32) = (5, 17);

/// True when a release string (`6.18.0-foo`) names a kernel older than `min`; an unparsable one
/// is given the benefit of the doubt (the load itself then says what is missing).
fn release_older_than(release: &str, min: (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) < min,
        _ => false,
    }
}

/// Fails with [`Error::UnsupportedKernel`] when the kernel has no BPF syscall or no BTF, or is
/// older than [`MIN_KERNEL`].
///
/// `MODELPROBE_KERNEL_BTF` overrides the BTF path (`/sys/kernel/btf/vmlinux`), for kernels that
/// ship BTF elsewhere and for testing this check.
pub fn check_kernel() -> Result<()> {
    if !Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists() {
        return Err(Error::UnsupportedKernel(
            "no BPF syscall (needs CONFIG_BPF_SYSCALL=y, Linux 5.17 or newer)".into(),
        ));
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if release_older_than(release.trim(), MIN_KERNEL) {
        return Err(Error::UnsupportedKernel(format!(
            "Linux {}.{} or newer is needed (the stack walk runs in bpf_loop), this is {}",
            MIN_KERNEL.0,
            MIN_KERNEL.1,
            release.trim()
        )));
    }
    let btf = std::env::var_os("MODELPROBE_KERNEL_BTF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/kernel/btf/vmlinux"));
    if !btf.exists() {
        return Err(Error::UnsupportedKernel(format!(
            "kernel BTF not found at {} (needs CONFIG_DEBUG_INFO_BTF=y)",
            btf.display()
        )));
    }
    Ok(())
}

/// Returns the tracefs root, mounting tracefs at [`TRACEFS`] if no mount is found.
pub fn ensure_tracefs() -> Result<PathBuf> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(root).join("events").is_dir() {
            return Ok(PathBuf::from(root));
        }
    }
    log::info!("mounting tracefs at {TRACEFS}");
    let target = std::ffi::CString::new(TRACEFS).expect("no NUL in constant");
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; a null data
    // pointer is allowed for tracefs.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 || !Path::new(TRACEFS).join("events").is_dir() {
        let err = std::io::Error::last_os_error();
        return Err(Error::UnsupportedKernel(format!(
            "tracefs is not mounted and mounting it at {TRACEFS} failed ({err}); mount it with `mount -t tracefs tracefs {TRACEFS}`"
        )));
    }
    Ok(PathBuf::from(TRACEFS))
}

/// Makes files this process creates private to their owner and group (0640, directories
/// 0750): a profile shows a process's code, arguments and output.
pub fn restrict_new_files() {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o027) };
}

/// The user who ran `sudo modelprobe`, from `SUDO_UID` / `SUDO_GID`, when running as root.
pub fn invoking_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |var| std::env::var(var).ok()?.parse::<u32>().ok();
    Some((id("SUDO_UID")?, id("SUDO_GID")?))
}

/// Under sudo, gives the files written (and the output directory, when this run created it)
/// to the invoking user, so they can read their profile without root. An existing directory
/// is left alone (`-o /tmp` must not give away `/tmp`). Failures are logged, not fatal: the
/// recording is complete either way.
pub fn hand_over(dir: Option<&Path>, files: &[PathBuf]) {
    let Some((uid, gid)) = invoking_user() else {
        return;
    };
    for path in dir.into_iter().chain(files.iter().map(PathBuf::as_path)) {
        if let Err(e) = std::os::unix::fs::chown(path, Some(uid), Some(gid)) {
            log::warn!("could not give {} to uid {uid}: {e}", path.display());
        }
    }
}

/// Creates `dir` (and parents) and proves it writable by creating and removing a file in it.
/// Returns true if this call created it.
pub fn prepare_output_dir(dir: &Path) -> Result<bool> {
    let fail = |source| Error::Output {
        path: dir.to_path_buf(),
        source,
    };
    let created = !dir.exists();
    fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(".modelprobe-write-test");
    fs::write(&probe, b"").map_err(fail)?;
    let _ = fs::remove_file(&probe);
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_older_than_the_stack_walk_are_refused() {
        assert!(release_older_than("5.15.0-91-generic", (5, 17)));
        assert!(release_older_than("4.19.0", (5, 17)));
        assert!(!release_older_than("5.17.0", (5, 17)));
        assert!(!release_older_than("6.18.0-rc1", (5, 17)));
        assert!(!release_older_than("weird", (5, 17)));
    }

    #[test]
    fn parses_effective_caps() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000000c000000000\n";
        let caps = parse_cap_eff(status).unwrap();
        assert!(caps & (1 << CAP_BPF) != 0);
        assert!(caps & (1 << CAP_PERFMON) != 0);
        assert!(caps & (1 << CAP_SYS_ADMIN) == 0);
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn unwritable_output_dir_is_an_output_error() {
        let err = prepare_output_dir(Path::new("/proc/self/modelprobe-cannot-exist")).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit_code::OUTPUT);
        assert!(err
            .to_string()
            .contains("/proc/self/modelprobe-cannot-exist"));
    }
}
