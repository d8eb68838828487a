//! What the library's threads share: the stop flag every waiting thread checks, thread
//! creation with every signal blocked (the host's signals are the host's), waiting on a socket,
//! and debug output (stderr, only when `MODELPROBE_INJECT_DEBUG` is set).
use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
    thread::JoinHandle,
    time::Duration,
};

/// Set by [`request_stop`]; the listener and any session notice within [`POLL`].
static STOP: AtomicBool = AtomicBool::new(false);
/// How often a waiting thread looks at [`STOP`].
pub const POLL: Duration = Duration::from_millis(200);

/// True once [`request_stop`] was called (the listener's `stop` calls it too).
pub fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Asks the thread and any session to end, without waiting (for the exit hook, which must
/// not join threads while the process is going down).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Clears the stop flag (a listener starts again, in a forked child).
pub fn clear_stop() {
    STOP.store(false, Ordering::SeqCst);
}

/// Starts `f` on a raw pthread with every signal blocked. Not `std::thread::spawn`: that sets
/// up Rust thread-locals (with destructors tied to this library) in the *calling* thread, which
/// is the host's own (the thread that ran `dlopen`), and glibc then refuses to unload the
/// library for as long as that thread lives, which makes `attach --retract` impossible.
pub fn spawn_raw(
    name: &'static std::ffi::CStr,
    f: impl FnOnce() + Send + 'static,
) -> io::Result<libc::pthread_t> {
    type Job = Box<dyn FnOnce() + Send>;
    extern "C" fn run(arg: *mut std::ffi::c_void) -> *mut std::ffi::c_void {
        // SAFETY: `arg` is the Box<Job> leaked by spawn_raw for this thread alone.
        let job: Box<Job> = unsafe { Box::from_raw(arg.cast()) };
        // A panic must not unwind into libc's thread start.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        std::ptr::null_mut()
    }
    let job: Box<Job> = Box::new(Box::new(f));
    let arg = Box::into_raw(job);
    // SAFETY: plain-data sigsets and attributes initialized by their libc functions; the mask
    // change is this thread's only and restored right after; `run` takes ownership of `arg`
    // exactly when pthread_create succeeds, and it is freed here otherwise.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setstacksize(&mut attr, 256 * 1024);
        let mut thread: libc::pthread_t = 0;
        let rc = libc::pthread_create(&mut thread, &attr, run, arg.cast());
        libc::pthread_attr_destroy(&mut attr);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if rc != 0 {
            drop(Box::from_raw(arg));
            return Err(io::Error::from_raw_os_error(rc));
        }
        libc::pthread_setname_np(thread, name.as_ptr());
        Ok(thread)
    }
}

/// Spawns a thread with every signal blocked: the host's signals must keep reaching the
/// host's own threads (a handler that counts them, Python's main-thread handlers), never ours.
pub fn spawn_quiet<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    // SAFETY: sigset_t is plain data, filled by sigfillset; pthread_sigmask changes only this
    // thread's mask, which is restored right after the spawn (the new thread inherits it).
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .stack_size(256 * 1024)
            .spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        spawned
    }
}

/// Writes `message` to stderr when `MODELPROBE_INJECT_DEBUG` is set.
pub fn debug(message: &str) {
    if std::env::var_os("MODELPROBE_INJECT_DEBUG").is_some() {
        eprintln!("modelprobe-inject[{}]: {message}", std::process::id());
    }
}

/// Waits up to `timeout` for `fd` to be readable (or hung up).
pub fn wait_readable(fd: &OwnedFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(err)
        };
    }
    Ok(rc > 0)
}
