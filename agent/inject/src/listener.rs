//! The library's one thread: waits on the abstract socket `modelprobe-gpu.<pid>` for an agent,
//! serves one agent at a time, and exits when [`stop`] is called.
//!
//! The socket is abstract (no file to clean up) and `SOCK_SEQPACKET` (whole messages). Only
//! root or the process's own user may connect: the peer's credentials are checked.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use modelprobe_common::gpu::socket_name;

/// The pid the listener runs for (0: none). A forked child has another pid, so a call to
/// [`start`] there starts its own listener.
static STARTED_FOR: AtomicU32 = AtomicU32::new(0);
/// Set by [`stop`]; the thread and any session notice within [`POLL`].
static STOP: AtomicBool = AtomicBool::new(false);
/// The listener thread (a raw pthread: see [`spawn_raw`]).
static THREAD: Mutex<Option<libc::pthread_t>> = Mutex::new(None);

/// How often a waiting thread looks at [`STOP`].
pub const POLL: Duration = Duration::from_millis(200);

/// True once [`stop`] (or [`request_stop`]) was called.
pub fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Asks the thread and any session to end, without waiting (for the exit hook, which must
/// not join threads while the process is going down).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Starts the listener thread for this process, once per pid. Never fails loudly: a profiler
/// library must not disturb its host, so problems go to stderr only when
/// `MODELPROBE_INJECT_DEBUG` is set.
pub fn start() {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    if STARTED_FOR.swap(pid, Ordering::SeqCst) == pid {
        return;
    }
    STOP.store(false, Ordering::SeqCst);
    let spawned = spawn_raw(c"modelprobe-gpu", move || {
        if let Err(e) = serve(pid) {
            debug(&format!("listener for pid {pid} stopped: {e}"));
        }
    });
    match spawned {
        Ok(handle) => *THREAD.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle),
        Err(e) => debug(&format!("cannot start the listener thread: {e}")),
    }
}

/// Starts `f` on a raw pthread with every signal blocked. Not `std::thread::spawn`: that sets
/// up Rust thread-locals (with destructors tied to this library) in the *calling* thread, which
/// is the host's own (the thread that ran `dlopen`), and glibc then refuses to unload the
/// library for as long as that thread lives, which makes `attach --retract` impossible.
fn spawn_raw(
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

/// Stops the listener and waits for it (a session in progress is flushed and closed first).
pub fn stop() {
    STOP.store(true, Ordering::SeqCst);
    let handle = THREAD.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(handle) = handle {
        // SAFETY: a joinable thread this library created and nobody else joins.
        unsafe { libc::pthread_join(handle, std::ptr::null_mut()) };
    }
    STARTED_FOR.store(0, Ordering::SeqCst);
}

/// Writes `message` to stderr when `MODELPROBE_INJECT_DEBUG` is set.
pub fn debug(message: &str) {
    if std::env::var_os("MODELPROBE_INJECT_DEBUG").is_some() {
        eprintln!("modelprobe-inject[{}]: {message}", std::process::id());
    }
}

fn serve(pid: u32) -> io::Result<()> {
    let listener = bind(pid)?;
    while !stopping() {
        if !wait_readable(&listener, POLL)? {
            continue;
        }
        // SAFETY: accept4 on a listening socket we own; null address pointers are allowed.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted || err.raw_os_error() == Some(libc::EAGAIN)
            {
                continue;
            }
            return Err(err);
        }
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) };
        if !peer_allowed(&conn) {
            debug("refused a connection from another user");
            continue;
        }
        crate::connection::run(conn, pid);
    }
    Ok(())
}

fn bind(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let (addr, len) = abstract_addr(pid);
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen on a bound socket we own.
    if unsafe { libc::listen(sock.as_raw_fd(), 4) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// The `sockaddr_un` of `modelprobe-gpu.<pid>` in the abstract namespace, and its length.
pub fn abstract_addr(pid: u32) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let mut name = [0u8; 40];
    let n = socket_name(pid, &mut name);
    // sun_path[0] stays 0: the abstract namespace.
    for (dst, &src) in addr.sun_path[1..].iter_mut().zip(&name[..n]) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + n;
    (addr, len as libc::socklen_t)
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

fn peer_allowed(conn: &OwnedFd) -> bool {
    // SAFETY: ucred is plain data.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes one ucred into a buffer of that size.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: getuid has no preconditions.
    rc == 0 && (cred.uid == 0 || cred.uid == unsafe { libc::getuid() })
}
