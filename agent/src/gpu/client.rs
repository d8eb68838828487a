//! The agent's end of the injection library's socket: finds the library in each target
//! process, asks it for GPU activity, and collects what it sends until the recording ends.
//!
//! [`GpuClient::poll`] is called from the recording loop: it tries each live target process
//! not connected yet (a refused connect costs one syscall; the library appears only once the
//! process initializes CUDA, so this is retried). Each connection has a reader thread.
//! [`GpuClient::finish`] asks every library to flush and waits, bounded, for the rest.
use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use modelprobe_common::gpu::{
    as_bytes, msg, pid_ns_inode, read, socket_name, state, ClockPair, Dropped, Header, Hello,
    Status, WireLaunch, WireOp, MAGIC, MAX_MESSAGE, SOCKET_NAME_MAX, VERSION,
};

/// Everything one process's library sent.
#[derive(Debug, Default)]
pub struct Collected {
    /// The process.
    pub pid: u32,
    /// Its answer to HELLO: (state, CUPTI version, text); `None` if it never answered.
    pub status: Option<(u32, u32, String)>,
    /// Names by id.
    pub names: HashMap<u32, String>,
    /// GPU operations, CUPTI clock.
    pub ops: Vec<WireOp>,
    /// Launching calls.
    pub launches: Vec<WireLaunch>,
    /// Clock pairs.
    pub clock: Vec<ClockPair>,
    /// Drop counts, the latest the library sent.
    pub dropped: Dropped,
    /// True when the library said BYE: everything was delivered.
    pub complete: bool,
    /// Thread ids as the process's own PID namespace numbers them (what the library reports)
    /// to the host's (what eBPF spans carry); empty when the process is in the agent's.
    pub host_tids: HashMap<u32, u32>,
}

/// Settings sent in HELLO.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// How often the library flushes CUPTI.
    pub flush: Duration,
    /// CUPTI activity buffer size, in KiB.
    pub buffer_kib: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            flush: Duration::from_millis(500),
            buffer_kib: 2048,
        }
    }
}

struct Conn {
    fd: Arc<OwnedFd>,
    reader: JoinHandle<Collected>,
}

/// Connections to the injection library in the target processes.
pub struct GpuClient {
    opts: ClientOptions,
    conns: HashMap<u32, Conn>,
    /// When each unconnected pid was last tried.
    tried: HashMap<u32, Instant>,
    /// When each unconnected pid's mappings were last looked at for the CUDA driver.
    looked: HashMap<u32, Instant>,
    /// Processes seen with the CUDA driver loaded.
    cuda: std::collections::BTreeSet<u32>,
    /// Per connected process in another PID namespace: its thread ids to the host's, and when
    /// they were last read (threads come and go).
    host_tids: HashMap<u32, (HashMap<u32, u32>, Instant)>,
    lines: mpsc::Receiver<String>,
    lines_tx: mpsc::Sender<String>,
    give_up: Arc<AtomicBool>,
}

/// How often an unconnected process is tried again.
const RETRY: Duration = Duration::from_millis(250);
/// How often an unconnected process's mappings are read to see whether it uses CUDA.
const LOOK_AGAIN: Duration = Duration::from_secs(2);

/// How often the thread ids of a process in another PID namespace are read again.
const THREADS_AGAIN: Duration = Duration::from_millis(500);

/// The [`socket_name`] of the library in host process `pid`: named by the pid its own PID
/// namespace gives it (the last `NSpid` of its status) and that namespace's inode, as the
/// library, which sees only its namespace, names it.
fn library_name(pid: u32) -> ([u8; SOCKET_NAME_MAX], usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let ns_pid = innermost_id(&status).unwrap_or(pid);
    let pid_ns = std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .and_then(|l| pid_ns_inode(&l.to_string_lossy()))
        .unwrap_or(0);
    let mut name = [0u8; SOCKET_NAME_MAX];
    let n = socket_name(ns_pid, pid_ns, &mut name);
    (name, n)
}

/// The innermost PID namespace's id of a task, from its `/proc/.../status` text (`NSpid:`
/// lists the ids from the outermost namespace visible to us inward).
fn innermost_id(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// For a process in a PID namespace below ours: each thread's id there to its id here. Empty
/// for a process in our namespace (the ids are the same).
fn host_thread_ids(pid: u32) -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(host) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        match innermost_id(&status) {
            Some(inner) if inner != host => {
                map.insert(inner, host);
            }
            _ => {}
        }
    }
    map
}

/// True when the GPU library listens in `pid` (its abstract socket is in the process's
/// network namespace's socket table).
pub fn library_listening(pid: u32) -> bool {
    let (name, n) = library_name(pid);
    let want = format!("@{}", String::from_utf8_lossy(&name[..n]));
    std::fs::read_to_string(format!("/proc/{pid}/net/unix")).is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some(want.as_str()))
    })
}

/// True when `pid` has the CUDA driver mapped.
pub fn uses_cuda(pid: u32) -> bool {
    crate::target::maps_library(pid, "libcuda.so")
}

impl GpuClient {
    /// A client with no connections yet.
    pub fn new(opts: ClientOptions) -> GpuClient {
        let (lines_tx, lines) = mpsc::channel();
        GpuClient {
            opts,
            conns: HashMap::new(),
            tried: HashMap::new(),
            looked: HashMap::new(),
            cuda: Default::default(),
            host_tids: HashMap::new(),
            lines,
            lines_tx,
            give_up: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Tries to reach the library in each of `pids` not connected yet; returns the status
    /// lines that arrived since the last call, one per process, for the user.
    pub fn poll(&mut self, pids: &[u32]) -> Vec<String> {
        for (&pid, (map, read_at)) in &mut self.host_tids {
            if read_at.elapsed() >= THREADS_AGAIN {
                map.extend(host_thread_ids(pid));
                *read_at = Instant::now();
            }
        }
        for &pid in pids {
            if self.conns.contains_key(&pid)
                || self.tried.get(&pid).is_some_and(|t| t.elapsed() < RETRY)
            {
                continue;
            }
            self.tried.insert(pid, Instant::now());
            if !self.cuda.contains(&pid)
                && self
                    .looked
                    .get(&pid)
                    .is_none_or(|t| t.elapsed() >= LOOK_AGAIN)
            {
                self.looked.insert(pid, Instant::now());
                if uses_cuda(pid) {
                    self.cuda.insert(pid);
                }
            }
            if let Ok(fd) = connect(pid) {
                let hello = Hello {
                    version: VERSION,
                    flush_ms: self.opts.flush.as_millis().clamp(50, 10_000) as u32,
                    buffer_kib: self.opts.buffer_kib,
                    _pad: 0,
                };
                if send(&fd, msg::HELLO, as_bytes(&hello)).is_err() {
                    continue;
                }
                let fd = Arc::new(fd);
                let (reader_fd, tx, give_up) =
                    (fd.clone(), self.lines_tx.clone(), self.give_up.clone());
                let reader = std::thread::Builder::new()
                    .name(format!("gpu-{pid}"))
                    .spawn(move || read_all(pid, &reader_fd, &tx, &give_up));
                match reader {
                    Ok(reader) => {
                        self.conns.insert(pid, Conn { fd, reader });
                        let tids = host_thread_ids(pid);
                        if !tids.is_empty() {
                            self.host_tids.insert(pid, (tids, Instant::now()));
                        }
                    }
                    Err(e) => log::warn!("GPU timings off for pid {pid}: no reader thread: {e}"),
                }
            }
        }
        self.lines.try_iter().collect()
    }

    /// Pids a connection was made to.
    pub fn connected(&self) -> Vec<u32> {
        self.conns.keys().copied().collect()
    }

    /// Asks every library to flush and stop, and collects what each sent, waiting at most
    /// `limit` for the last records. Also returns the processes that use CUDA but whose
    /// library never answered, and the remaining status lines.
    pub fn finish(mut self, limit: Duration) -> (Vec<Collected>, Vec<u32>, Vec<String>) {
        for (&pid, (map, _)) in &mut self.host_tids {
            map.extend(host_thread_ids(pid));
        }
        for c in self.conns.values() {
            let _ = send(&c.fd, msg::DETACH, &[]);
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && self.conns.values().any(|c| !c.reader.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.give_up.store(true, Ordering::SeqCst);
        let not_injected: Vec<u32> = self
            .cuda
            .iter()
            .copied()
            .filter(|p| !self.conns.contains_key(p))
            .collect();
        let mut host_tids = std::mem::take(&mut self.host_tids);
        let mut out: Vec<Collected> = self
            .conns
            .into_values()
            .filter_map(|c| c.reader.join().ok())
            .map(|mut c| {
                if let Some((map, _)) = host_tids.remove(&c.pid) {
                    c.host_tids = map;
                }
                c
            })
            .collect();
        out.sort_by_key(|c| c.pid);
        (out, not_injected, self.lines.try_iter().collect())
    }
}

/// Connects to the library of `pid` (see [`library_name`]), from inside the process's network namespace when it is
/// not ours (abstract sockets belong to a network namespace: containers).
fn connect(pid: u32) -> io::Result<OwnedFd> {
    let ours = std::fs::read_link("/proc/self/ns/net").ok();
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    if ours.is_some() && theirs.is_some() && ours != theirs {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        // setns moves only the calling thread: do it on a short-lived one.
        return std::thread::spawn(move || {
            // SAFETY: a namespace fd we opened; CLONE_NEWNET matches its type.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            connect_here(pid)
        })
        .join()
        .map_err(|_| io::Error::other("connect thread panicked"))?;
    }
    connect_here(pid)
}

fn connect_here(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain data; zeroes are valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (name, n) = library_name(pid);
    // The leading NUL of sun_path selects the abstract namespace.
    for (i, &b) in name[..n].iter().enumerate() {
        addr.sun_path[1 + i] = b as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + n) as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    let rc = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: SO_RCVTIMEO takes one timeval; the reader wakes to check for giving up.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    Ok(sock)
}

fn send(fd: &OwnedFd, kind: u32, body: &[u8]) -> io::Result<()> {
    let header = Header {
        magic: MAGIC,
        kind,
        count: 1,
        _pad: 0,
    };
    let mut m = as_bytes(&header).to_vec();
    m.extend_from_slice(body);
    // SAFETY: a valid buffer; MSG_NOSIGNAL: a closed peer is an error, not SIGPIPE.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            m.as_ptr().cast(),
            m.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The reader thread: collects messages until BYE, end of stream, or giving up.
fn read_all(
    pid: u32,
    fd: &OwnedFd,
    lines: &mpsc::Sender<String>,
    give_up: &AtomicBool,
) -> Collected {
    let mut c = Collected {
        pid,
        ..Collected::default()
    };
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        // SAFETY: a valid buffer of that length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            let retry = matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            );
            if retry && !give_up.load(Ordering::SeqCst) {
                continue;
            }
            break;
        }
        if n == 0 {
            break;
        }
        if let Some(line) = ingest(&mut c, &buf[..n as usize]) {
            let _ = lines.send(line);
        }
        if c.complete {
            break;
        }
    }
    c
}

/// Adds one message to `c`; returns a status line for the user when it was STATUS.
pub fn ingest(c: &mut Collected, m: &[u8]) -> Option<String> {
    let header: Header = read(m, 0)?;
    if header.magic != MAGIC {
        return None;
    }
    let body = &m[size_of::<Header>()..];
    let count = header.count as usize;
    match header.kind {
        msg::STATUS => {
            let s: Status = read(body, 0)?;
            let text = body.get(size_of::<Status>()..size_of::<Status>() + s.text_len as usize)?;
            let text = String::from_utf8_lossy(text).into_owned();
            let line = if s.state == state::ON {
                format!("GPU timings on for pid {}: {text}", c.pid)
            } else {
                text.clone()
            };
            // A takeover ends a session that was on: keep what it said of the CUPTI in use.
            let text = match (&c.status, s.state) {
                (Some((state::ON, _, on)), state::TAKEN_OVER) => format!("{on}; {text}"),
                _ => text,
            };
            let version = match (&c.status, s.cupti_version) {
                (Some((_, v, _)), 0) => *v,
                _ => s.cupti_version,
            };
            c.status = Some((s.state, version, text));
            Some(line)
        }
        msg::NAMES => {
            let mut at = 0usize;
            for _ in 0..count {
                let id = u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?);
                let len = u32::from_le_bytes(body.get(at + 4..at + 8)?.try_into().ok()?) as usize;
                let bytes = body.get(at + 8..at + 8 + len)?;
                c.names
                    .insert(id, String::from_utf8_lossy(bytes).into_owned());
                at += 8 + len.div_ceil(4) * 4;
            }
            None
        }
        msg::OPS => {
            items(body, count, &mut c.ops);
            None
        }
        msg::LAUNCHES => {
            items(body, count, &mut c.launches);
            None
        }
        msg::CLOCK => {
            items(body, count, &mut c.clock);
            None
        }
        msg::DROPPED => {
            c.dropped = read(body, 0)?;
            None
        }
        msg::BYE => {
            if let Some(d) = read(body, 0) {
                c.dropped = d;
            }
            c.complete = true;
            None
        }
        _ => None,
    }
}

fn items<T: modelprobe_common::gpu::Wire>(body: &[u8], count: usize, out: &mut Vec<T>) {
    out.extend((0..count).map_while(|i| read::<T>(body, i * size_of::<T>())));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_namespace_id_is_the_last_of_nspid() {
        assert_eq!(innermost_id("Name:\tapp\nNSpid:\t19326\t2\n"), Some(2));
        assert_eq!(innermost_id("NSpid:\t4242\n"), Some(4242));
        assert_eq!(innermost_id("Name:\tapp\n"), None);
        // Our own threads are in our namespace: nothing to map.
        assert!(host_thread_ids(std::process::id()).is_empty());
    }
}
