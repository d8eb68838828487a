//! Live loading: a shared library into a running process, the way a debugger calls a function in its
//! tracee (`modelprobe attach --gpu` loads its CUPTI library this way).
//!
//! [`load`] holds one thread of the target (the main thread) with ptrace, preferably at a
//! syscall boundary, and through it: maps a scratch page (a trampoline and a stack), creates a
//! memfd the agent fills with the library image (no file on disk), and calls
//! `dlopen("/proc/self/fd/N", RTLD_NOW)` found in the target's libc. Then it puts every register,
//! the FPU/vector state and `errno` back, re-sends signals that arrived meanwhile, and detaches;
//! an interrupted `read` or `nanosleep` goes on as if nothing happened. Other threads never
//! stop. [`retract`] calls the library's `modelprobe_inject_stop` (if it exports one) and
//! `dlclose`s it the same way.
//!
//! ```no_run
//! use modelprobe::live_load::{load, retract, LoadOptions};
//! let image = std::fs::read("libmp_cupti.so")?;
//! let opts = LoadOptions::default();
//! let loaded = load(4242, &image, "modelprobe-cupti", &opts)?;
//! println!("loaded; the main thread was held {:?}", loaded.pause);
//! retract(&loaded, &opts)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Limits: x86-64 only (elsewhere every call returns [`LiveLoadError::Unsupported`]). The held
//! thread runs `dlopen` and the library's constructors from wherever it was stopped: if it was
//! stopped holding a lock they need (inside `malloc`, say), the call cannot return, and after
//! [`LoadOptions::call_timeout`] the thread is put back mid-call. Stops at malloc's own system
//! calls are avoided for that reason.
use std::time::Duration;

mod error;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod libc_syms;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod procfs;

#[cfg(target_arch = "x86_64")]
mod boundary;
#[cfg(target_arch = "x86_64")]
mod failure;
#[cfg(target_arch = "x86_64")]
mod hold;
#[cfg(target_arch = "x86_64")]
mod load;
#[cfg(target_arch = "x86_64")]
pub(crate) mod ptrace;
#[cfg(target_arch = "x86_64")]
mod remote;

pub use error::LiveLoadError;

/// Limits for [`load`] and [`retract`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Longest wait for any single stop of the held thread (after the interrupt, around each
    /// remote system call). On expiry the thread is put back and the call fails. Default 2 s.
    pub step_timeout: Duration,
    /// How long to let the thread run on until it enters a system call before taking it
    /// wherever it is (a busy loop makes none). The thread is not stopped meanwhile. Default
    /// 200 ms.
    pub wait_for_syscall: Duration,
    /// Longest wait for a function called in the target (`dlopen` runs the library's
    /// constructors, which may take a while). Default 30 s.
    pub call_timeout: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            step_timeout: Duration::from_secs(2),
            wait_for_syscall: Duration::from_millis(200),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// A library loaded by [`load`], to give to [`retract`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The process.
    pub pid: u32,
    /// The thread that ran `dlopen`.
    pub tid: u32,
    /// What `dlopen` returned in the target.
    pub handle: u64,
    /// How long the thread was held stopped (from the stop it was taken at to the detach;
    /// waiting for a syscall boundary, while it runs, is not counted).
    pub pause: Duration,
    /// The name the target's dynamic linker knows the library by (`/proc/self/fd/N`).
    pub path_in_target: String,
    /// The memfd descriptor in the target (kept open until [`retract`], so that
    /// `/proc/self/fd/N` cannot name another file while the library is loaded).
    pub fd: i32,
    /// The memfd's inode, to recognise it in `/proc/PID/maps` and `/proc/PID/fd`.
    pub memfd_inode: u64,
}

/// What [`preflight`] found out about a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// The process.
    pub pid: u32,
    /// The thread that would be held (the main thread, unless it has exited).
    pub tid: u32,
    /// Its command name.
    pub name: String,
    /// The library providing `dlopen`, as the process maps it.
    pub libc: String,
    /// Address of `dlopen` in the process.
    pub dlopen: u64,
    /// Address of `dlclose`.
    pub dlclose: u64,
    /// Address of `dlerror`.
    pub dlerror: u64,
    /// Address of `dlsym`.
    pub dlsym: u64,
    /// Address of `__errno_location`, when exported.
    pub errno_location: Option<u64>,
    /// Address of the `syscall` instruction borrowed to run system calls.
    pub syscall_insn: u64,
    /// Seccomp mode (0 none, 2 filter; 1 is refused).
    pub seccomp: u8,
    /// Things that may make injection fail, for the user (a seccomp filter).
    pub warnings: Vec<String>,
}

/// Checks a target before anything is done to it: it exists, is not a zombie, stopped or
/// traced, is x86-64, ptrace is allowed, and `dlopen` and a `syscall` instruction are found.
pub fn preflight(pid: u32) -> Result<TargetInfo, LiveLoadError> {
    #[cfg(target_arch = "x86_64")]
    {
        preflight_x86_64(pid)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = pid;
        Err(LiveLoadError::Unsupported {
            arch: std::env::consts::ARCH,
        })
    }
}

#[cfg(target_arch = "x86_64")]
fn preflight_x86_64(pid: u32) -> Result<TargetInfo, LiveLoadError> {
    if pid == 0 || pid > i32::MAX as u32 {
        return Err(LiveLoadError::NoSuchProcess { pid });
    }
    let status = procfs::status(pid)?;
    match status.state {
        'Z' | 'X' => return Err(LiveLoadError::Zombie { pid }),
        'T' => return Err(LiveLoadError::Stopped { pid }),
        _ => {}
    }
    if status.tracer_pid != 0 {
        return Err(failure::already_traced(pid, status.tracer_pid));
    }
    if pid == std::process::id() {
        return Err(LiveLoadError::PermissionDenied {
            pid,
            why: "a process cannot trace itself".into(),
        });
    }
    procfs::check_exe_arch(pid)?;
    if procfs::yama_scope() == Some(3) {
        return Err(LiveLoadError::YamaDisabled);
    }
    let mut warnings = Vec::new();
    match status.seccomp {
        1 => return Err(LiveLoadError::StrictSeccomp { pid }),
        2 => warnings.push(format!(
            "process {pid} runs under a seccomp filter: if it forbids mmap, mprotect or \
             memfd_create, injection fails (or the filter kills the process)"
        )),
        _ => {}
    }
    let maps = procfs::maps(pid)?;
    let syms = libc_syms::resolve(pid, &maps)?;
    Ok(TargetInfo {
        pid,
        tid: procfs::pick_thread(pid),
        name: status.name,
        libc: syms.lib,
        dlopen: syms.dlopen,
        dlclose: syms.dlclose,
        dlerror: syms.dlerror,
        dlsym: syms.dlsym,
        errno_location: syms.errno_location,
        syscall_insn: syms.syscall_insn,
        seccomp: status.seccomp,
        warnings,
    })
}

/// Loads the shared library `image` into process `pid`, as a memfd named `name` (shown in
/// `/proc/PID/maps` as `/memfd:NAME (deleted)`). Its constructors run in the held thread
/// before this returns.
pub fn load(
    pid: u32,
    image: &[u8],
    name: &str,
    opts: &LoadOptions,
) -> Result<Loaded, LiveLoadError> {
    if name.is_empty() || name.len() > 200 || name.contains(['/', '\0']) {
        return Err(LiveLoadError::BadName {
            name: name.to_string(),
        });
    }
    #[cfg(target_arch = "x86_64")]
    {
        let info = preflight(pid)?;
        for w in &info.warnings {
            log::warn!("{w}");
        }
        load::load_image(&info, image, name, opts)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (pid, image, opts);
        Err(LiveLoadError::Unsupported {
            arch: std::env::consts::ARCH,
        })
    }
}

/// Unloads a library [`load`] loaded: calls its `modelprobe_inject_stop()` if it exports one
/// (it must stop the library's threads and return 0), then `dlclose`s it and closes its
/// memfd. Fails with [`LiveLoadError::StillMapped`] if it stays mapped. Returns how long the held
/// thread was stopped.
pub fn retract(inj: &Loaded, opts: &LoadOptions) -> Result<Duration, LiveLoadError> {
    #[cfg(target_arch = "x86_64")]
    {
        let info = preflight(inj.pid)?;
        let mapped = |maps: &[procfs::MapEntry]| {
            maps.iter()
                .find(|m| m.inode == inj.memfd_inode && m.path.starts_with("/memfd:"))
                .map(|m| m.path.clone())
        };
        if mapped(&procfs::maps(inj.pid)?).is_none() {
            return Err(LiveLoadError::NotLoaded {
                pid: inj.pid,
                fd: inj.fd,
            });
        }
        let pause = load::retract(&info, inj, opts)?;
        if let Some(path) = mapped(&procfs::maps(inj.pid)?) {
            return Err(LiveLoadError::StillMapped { pid: inj.pid, path });
        }
        Ok(pause)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (inj, opts);
        Err(LiveLoadError::Unsupported {
            arch: std::env::consts::ARCH,
        })
    }
}
