//! The library's listening thread: waits on the abstract socket `modelprobe-gpu.<pid>` for an agent,
//! serves one agent at a time, and exits when [`stop`] is called.
//!
//! The socket is abstract (no file to clean up) and `SOCK_SEQPACKET` (whole messages). Only
//! root or the process's own user may connect: the peer's credentials are checked.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    },
};

use modelprobe_common::gpu::{pid_ns_inode, socket_name, SOCKET_NAME_MAX};

use crate::threads;

/// The pid the listener runs for (0: none). A forked child has another pid, so a call to
/// [`start`] there starts its own listener.
static STARTED_FOR: AtomicU32 = AtomicU32::new(0);
/// The listener thread (a raw pthread: see [`threads::spawn_raw`]).
static THREAD: Mutex<Option<libc::pthread_t>> = Mutex::new(None);

/// Starts the listener thread for this process, once per pid. Never fails loudly: a profiler
/// library must not disturb its host, so problems go to stderr only when
/// `MODELPROBE_INJECT_DEBUG` is set.
pub fn start() {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    if STARTED_FOR.swap(pid, Ordering::SeqCst) == pid {
        return;
    }
    threads::clear_stop();
    let spawned = threads::spawn_raw(c"modelprobe-gpu", move || {
        if let Err(e) = serve(pid) {
            threads::debug(&format!("listener for pid {pid} stopped: {e}"));
        }
    });
    match spawned {
        Ok(handle) => *THREAD.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle),
        Err(e) => threads::debug(&format!("cannot start the listener thread: {e}")),
    }
}

/// Stops the listener and waits for it (a session in progress is flushed and closed first).
pub fn stop() {
    threads::request_stop();
    let handle = THREAD.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(handle) = handle {
        // SAFETY: a joinable thread this library created and nobody else joins.
        unsafe { libc::pthread_join(handle, std::ptr::null_mut()) };
    }
    STARTED_FOR.store(0, Ordering::SeqCst);
}

fn serve(pid: u32) -> io::Result<()> {
    let listener = bind(pid)?;
    while !threads::stopping() {
        if !threads::wait_readable(&listener, threads::POLL)? {
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
            threads::debug("refused a connection from another user");
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

/// The `sockaddr_un` of this process's [`socket_name`] (`pid` as `getpid` sees it, in this
/// process's PID namespace) in the abstract namespace, and its length.
pub fn abstract_addr(pid: u32) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let mut name = [0u8; SOCKET_NAME_MAX];
    let pid_ns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| pid_ns_inode(&l.to_string_lossy()))
        .unwrap_or(0);
    let n = socket_name(pid, pid_ns, &mut name);
    // sun_path[0] stays 0: the abstract namespace.
    for (dst, &src) in addr.sun_path[1..].iter_mut().zip(&name[..n]) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + n;
    (addr, len as libc::socklen_t)
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
