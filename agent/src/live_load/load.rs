//! The two sequences run in a held thread: load (`memfd_create`, the image written through
//! `/proc/PID/fd`, `dlopen("/proc/self/fd/N")`) and unload (`modelprobe_inject_stop`,
//! `dlclose`, `close`). Each runs on a tracer thread of its own, so that a failure which cannot
//! detach cleanly still detaches: the kernel detaches a tracer's tracees when it exits.
use std::{fs, io::Write, os::unix::fs::MetadataExt, time::Instant};

use super::{
    hold::Held,
    procfs,
    remote::{check, ms, Mem, Scratch},
    LiveLoadError, LoadOptions, Loaded, TargetInfo,
};

const RTLD_NOW: u64 = 2;
const MFD_CLOEXEC: u64 = 1;
/// `MFD_EXEC` (Linux 6.3): the memfd stays executable whatever `vm.memfd_noexec` says.
const MFD_EXEC: u64 = 0x10;
/// What a library may export to stop its own threads before it is unloaded.
pub(super) const STOP_SYMBOL: &str = "modelprobe_inject_stop";

/// What was created in the target, to remove again if a later step fails.
#[derive(Default)]
struct Undo {
    scratch: Option<Scratch>,
    fd: Option<u64>,
    /// `errno`'s address in the held thread and its value before our calls.
    errno: Option<(u64, u32)>,
}

impl Undo {
    /// Removes what is recorded (best effort: the error being reported matters more).
    fn run(self, held: &mut Held, mem: &Mem) {
        if held.running {
            return;
        }
        if let Some(fd) = self.fd {
            let _ = held.syscall(libc::SYS_close, &[fd]);
        }
        if let Some((addr, value)) = self.errno {
            let _ = mem.write(addr, &value.to_ne_bytes());
        }
        if let Some(s) = self.scratch {
            let _ = s.unmap(held);
        }
    }
}

/// Runs `f` on a thread of its own, which becomes the tracer and exits when done.
fn on_tracer_thread<T: Send>(
    f: impl FnOnce() -> Result<T, LiveLoadError> + Send,
) -> Result<T, LiveLoadError> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("mp-inject".into())
            .spawn_scoped(s, f)
            .expect("spawning the injector thread")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Loads `image` into the process of `info`.
pub(super) fn load_image(
    info: &TargetInfo,
    image: &[u8],
    name: &str,
    opts: &LoadOptions,
) -> Result<Loaded, LiveLoadError> {
    on_tracer_thread(|| {
        let started = Instant::now();
        let mem = Mem::open(info.pid)?;
        let mut held = Held::acquire(info.pid, info.tid, info.syscall_insn, opts)?;
        let mut undo = Undo::default();
        match load(&mut held, &mem, &mut undo, info, image, name) {
            Ok((fd, handle, inode)) => {
                let tid = held.t.tid;
                let pause = held.release()?;
                log::debug!(
                    "live load: loaded {name} into {} (handle {handle:#x}); held {:.2} ms of {:.2} ms",
                    info.pid,
                    ms(pause),
                    ms(started.elapsed())
                );
                Ok(Loaded {
                    pid: info.pid,
                    tid,
                    handle,
                    pause,
                    path_in_target: format!("/proc/self/fd/{fd}"),
                    fd: fd as i32,
                    memfd_inode: inode,
                })
            }
            Err(e) => {
                undo.run(&mut held, &mem);
                if let Err(release) = held.release() {
                    log::warn!(
                        "live load: releasing process {} after an error: {release}",
                        info.pid
                    );
                }
                Err(e)
            }
        }
    })
}

fn load(
    held: &mut Held,
    mem: &Mem,
    undo: &mut Undo,
    info: &TargetInfo,
    image: &[u8],
    name: &str,
) -> Result<(u64, u64, u64), LiveLoadError> {
    let pid = info.pid;
    let scratch = undo.scratch.insert(Scratch::map(held, mem)?);
    undo.errno = save_errno(held, mem, info, scratch)?;
    let scratch = undo.scratch.as_mut().expect("just set");
    let name_addr = scratch.put_str(mem, name)?;
    let mut raw = held.syscall(libc::SYS_memfd_create, &[name_addr, MFD_CLOEXEC | MFD_EXEC])?;
    if raw as i64 == -(libc::EINVAL as i64) {
        // Before Linux 6.3 there is no MFD_EXEC (memfds are executable anyway).
        raw = held.syscall(libc::SYS_memfd_create, &[name_addr, MFD_CLOEXEC])?;
    }
    let fd = check(held, "memfd_create", raw, "")?;
    undo.fd = Some(fd);
    let fd_path = format!("/proc/{pid}/fd/{fd}");
    let written = fs::OpenOptions::new()
        .write(true)
        .open(&fd_path)
        .and_then(|mut f| {
            f.write_all(image)?;
            f.metadata()
        });
    let inode = match written {
        Ok(meta) => meta.ino(),
        Err(source) => {
            return Err(LiveLoadError::Memory {
                pid,
                what: format!("writing the library into {fd_path}"),
                source,
            })
        }
    };
    // The descriptor stays open while the library is loaded: its /proc/self/fd/N name, which
    // the dynamic linker remembers, then cannot name another file.
    let path = format!("/proc/self/fd/{fd}");
    let path_addr = scratch.put_str(mem, &path)?;
    let scratch = undo.scratch.as_ref().expect("set above");
    let handle = held.call("dlopen", info.dlopen, &[path_addr, RTLD_NOW], scratch, mem)?;
    if handle == 0 {
        let message = dl_error(held, mem, info, scratch)?;
        return Err(LiveLoadError::Dlopen {
            pid,
            name: name.to_string(),
            message,
        });
    }
    if let Some((addr, value)) = undo.errno.take() {
        mem.write(addr, &value.to_ne_bytes())?;
    }
    undo.fd = None;
    if let Some(s) = undo.scratch.take() {
        s.unmap(held)?;
    }
    Ok((fd, handle, inode))
}

/// Unloads what [`load_image`] loaded.
pub(super) fn retract(
    info: &TargetInfo,
    inj: &Loaded,
    opts: &LoadOptions,
) -> Result<std::time::Duration, LiveLoadError> {
    on_tracer_thread(|| {
        let mem = Mem::open(info.pid)?;
        let mut held = Held::acquire(info.pid, info.tid, info.syscall_insn, opts)?;
        let mut undo = Undo::default();
        match unload(&mut held, &mem, &mut undo, info, inj) {
            Ok(()) => held.release(),
            Err(e) => {
                undo.run(&mut held, &mem);
                if let Err(release) = held.release() {
                    log::warn!(
                        "live load: releasing process {} after an error: {release}",
                        info.pid
                    );
                }
                Err(e)
            }
        }
    })
}

fn unload(
    held: &mut Held,
    mem: &Mem,
    undo: &mut Undo,
    info: &TargetInfo,
    inj: &Loaded,
) -> Result<(), LiveLoadError> {
    let pid = info.pid;
    let scratch = undo.scratch.insert(Scratch::map(held, mem)?);
    undo.errno = save_errno(held, mem, info, scratch)?;
    let scratch = undo.scratch.as_mut().expect("just set");
    let sym = scratch.put_str(mem, STOP_SYMBOL)?;
    let scratch = undo.scratch.as_ref().expect("set above");
    let stop = held.call("dlsym", info.dlsym, &[inj.handle, sym], scratch, mem)?;
    if stop == 0 {
        // Clear the "undefined symbol" message, which the target's next dlerror() would get.
        dl_error(held, mem, info, scratch)?;
    } else {
        let rc = held.call(STOP_SYMBOL, stop, &[], scratch, mem)? as u32 as i32;
        if rc != 0 {
            return Err(LiveLoadError::StopFailed { pid, code: rc });
        }
    }
    let rc = held.call("dlclose", info.dlclose, &[inj.handle], scratch, mem)? as u32 as i32;
    if rc != 0 {
        let message = dl_error(held, mem, info, scratch)?;
        return Err(LiveLoadError::Dlclose { pid, message });
    }
    // Close the memfd only if the descriptor is still ours.
    match procfs::fd_target(pid, inj.fd) {
        Some((ino, _)) if ino == inj.memfd_inode => {
            let raw = held.syscall(libc::SYS_close, &[inj.fd as u64])?;
            check(held, "close", raw, "")?;
        }
        other => log::debug!(
            "live load: fd {} of {pid} is not our memfd any more: {other:?}",
            inj.fd
        ),
    }
    if let Some((addr, value)) = undo.errno.take() {
        mem.write(addr, &value.to_ne_bytes())?;
    }
    if let Some(s) = undo.scratch.take() {
        s.unmap(held)?;
    }
    Ok(())
}

/// Reads the held thread's `errno` (through `__errno_location`), to put it back at the end.
fn save_errno(
    held: &mut Held,
    mem: &Mem,
    info: &TargetInfo,
    scratch: &Scratch,
) -> Result<Option<(u64, u32)>, LiveLoadError> {
    let Some(loc) = info.errno_location else {
        return Ok(None);
    };
    let addr = held.call("__errno_location", loc, &[], scratch, mem)?;
    if addr == 0 {
        return Ok(None);
    }
    Ok(Some((addr, mem.read_u32(addr)?)))
}

/// `dlerror()` in the target, as text.
fn dl_error(
    held: &mut Held,
    mem: &Mem,
    info: &TargetInfo,
    scratch: &Scratch,
) -> Result<String, LiveLoadError> {
    let msg = held.call("dlerror", info.dlerror, &[], scratch, mem)?;
    Ok(if msg == 0 {
        "no error message".into()
    } else {
        mem.read_cstr(msg, 4096)
    })
}
