//! One agent connection: HELLO → STATUS, then records until the agent detaches, goes away, or
//! the library is stopped; then a bounded flush, the rest of the records, and BYE.
use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicU32, Ordering},
        Once,
    },
    time::{Duration, Instant},
};

use modelprobe_common::gpu::{
    msg, read, state, Dropped, Header, Hello, Status, MAGIC, MAX_MESSAGE, VERSION,
};

use crate::{api, cupti, outbox, takeover, threads};

/// How long the agent has to say HELLO after connecting.
const HELLO_WAIT: Duration = Duration::from_secs(2);
/// Longest the final flush may take before CUPTI is turned off regardless.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);
/// How often records are sent and clock pairs taken.
const SEND_EVERY: Duration = Duration::from_millis(50);
const CLOCK_EVERY: Duration = Duration::from_secs(1);
/// A send blocked this long means the agent is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// The pid a session with CUPTI on runs in (0: none). A forked child inherits the value, not
/// the session: its exit must not wait for one.
static SESSION_PID: AtomicU32 = AtomicU32::new(0);
static EXIT_HOOK: Once = Once::new();
/// Longest the exit hook holds up the process's exit for the last records.
const EXIT_WAIT: Duration = Duration::from_secs(3);

/// Runs at `exit()`: a process that ends while an agent listens would otherwise take the
/// records still in CUPTI's buffers with it. Ends the session (flush, send, BYE), bounded.
extern "C" fn at_exit() {
    if !in_session_here() {
        return;
    }
    threads::request_stop();
    let deadline = Instant::now() + EXIT_WAIT;
    while in_session_here() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// True while this process (not a parent it was forked from) runs a session.
fn in_session_here() -> bool {
    let pid = SESSION_PID.load(Ordering::SeqCst);
    pid != 0 && pid == std::process::id()
}

/// Serves one agent until it leaves. Never panics into the host: errors end the session.
pub fn run(conn: OwnedFd, pid: u32) {
    set_send_timeout(&conn, SEND_TIMEOUT);
    let Some(hello) = read_hello(&conn) else {
        threads::debug("the agent sent no HELLO");
        return;
    };
    if hello.version != VERSION {
        let text = format!(
            "the GPU library in process {pid} speaks protocol {VERSION}, the agent {}: use \
             the same modelprobe version for both",
            hello.version
        );
        let _ = send_status(&conn, state::VERSION, 0, pid, &text);
        return;
    }
    outbox::lock().reset();
    let (cupti_version, text) = match cupti::start(&hello, pid) {
        Ok(started) => started,
        Err((st, text)) => {
            if send_status(&conn, st, 0, pid, &text).is_ok() {
                wait_for_goodbye(&conn);
            }
            return;
        }
    };
    if send_status(&conn, state::ON, cupti_version, pid, &text).is_err() {
        cupti::stop();
        return;
    }
    SESSION_PID.store(std::process::id(), Ordering::SeqCst);
    // SAFETY: registers a function with no preconditions; the library is pinned (CUPTI holds
    // its callbacks), so the function outlives every exit path.
    EXIT_HOOK.call_once(|| unsafe {
        libc::atexit(at_exit);
    });
    serve_records(&conn, &hello, pid);
    SESSION_PID.store(0, Ordering::SeqCst);
}

/// The ON part of a session: records out until the end (watching for another tool taking the
/// activity buffers over), then flush, rest, BYE.
fn serve_records(conn: &OwnedFd, hello: &Hello, pid: u32) {
    let flush_every = Duration::from_millis(u64::from(hello.flush_ms.clamp(50, 10_000)));
    let (mut last_flush, mut last_clock) = (Instant::now(), Instant::now());
    push_clock();
    let mut agent_gone = false;
    let mut watch = takeover::Watch::default();
    while !threads::stopping() {
        match threads::wait_readable(conn, SEND_EVERY) {
            Ok(true) => match recv_kind(conn) {
                Some(msg::DETACH) | None => break,
                Some(_) => {}
            },
            Ok(false) => {}
            Err(_) => break,
        }
        if last_flush.elapsed() >= flush_every {
            cupti::flush(false);
            last_flush = Instant::now();
        }
        let now = Instant::now();
        match watch.check(cupti::buffer_calls(), api::record_calls(), now) {
            takeover::Verdict::Fine => {}
            takeover::Verdict::ForceFlush => cupti::flush(true),
            takeover::Verdict::TakenOver => {
                let text = format!(
                    "GPU records for process {} stopped: another tool took CUPTI's \
                     process-wide activity buffers over (a torch.profiler trace or Nsight \
                     started?); CUDA calls are still traced by uprobes",
                    pid
                );
                if send_status(conn, state::TAKEN_OVER, 0, pid, &text).is_err() {
                    agent_gone = true;
                    break;
                }
            }
        }
        if last_clock.elapsed() >= CLOCK_EVERY {
            push_clock();
            last_clock = Instant::now();
        }
        cupti::read_completed();
        if send_pending(conn).is_err() {
            agent_gone = true;
            break;
        }
    }
    push_clock();
    if !cupti::stop_within(FLUSH_LIMIT) {
        threads::debug("the final CUPTI flush did not finish in time");
    }
    if agent_gone || send_pending(conn).is_err() {
        return;
    }
    let dropped = dropped();
    let _ = send(conn, &outbox::message(msg::BYE, 1, &dropped, &[]));
}

fn dropped() -> Dropped {
    Dropped {
        cupti: cupti::cupti_dropped(),
        queue: outbox::lock().dropped,
    }
}

fn push_clock() {
    if let Some(pair) = cupti::clock_pair() {
        outbox::lock().push_clock(pair);
    }
}

/// Sends what the outbox holds, then the drop counts when they changed.
fn send_pending(conn: &OwnedFd) -> io::Result<()> {
    let batch = outbox::lock().take();
    if batch.is_empty() {
        return Ok(());
    }
    for m in batch.messages() {
        send(conn, &m)?;
    }
    let d = dropped();
    if d.cupti > 0 || d.queue > 0 {
        send(conn, &outbox::message(msg::DROPPED, 1, &d, &[]))?;
    }
    Ok(())
}

fn send_status(
    conn: &OwnedFd,
    st: u32,
    cupti_version: u32,
    pid: u32,
    text: &str,
) -> io::Result<()> {
    let text = &text.as_bytes()[..text.len().min(MAX_MESSAGE - 64)];
    let status = Status {
        state: st,
        cupti_version,
        pid,
        text_len: text.len() as u32,
    };
    send(conn, &outbox::message(msg::STATUS, 1, &status, text))
}

fn send(conn: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: a valid buffer; MSG_NOSIGNAL keeps a vanished agent from raising SIGPIPE in the
    // host process.
    let n = unsafe {
        libc::send(
            conn.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads one message and returns its kind; `None` at end of stream or on error.
fn recv_kind(conn: &OwnedFd) -> Option<u32> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    // SAFETY: a valid buffer of that length.
    let n = unsafe { libc::recv(conn.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n <= 0 {
        return None;
    }
    let header: Header = read(&buf[..n as usize], 0)?;
    (header.magic == MAGIC).then_some(header.kind)
}

fn read_hello(conn: &OwnedFd) -> Option<Hello> {
    if !threads::wait_readable(conn, HELLO_WAIT).ok()? {
        return None;
    }
    let mut buf = vec![0u8; MAX_MESSAGE];
    // SAFETY: a valid buffer of that length.
    let n = unsafe { libc::recv(conn.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n <= 0 {
        return None;
    }
    let bytes = &buf[..n as usize];
    let header: Header = read(bytes, 0)?;
    if header.magic != MAGIC || header.kind != msg::HELLO {
        return None;
    }
    read(bytes, size_of::<Header>())
}

/// After a refusal: keeps the connection until the agent closes it (or the library stops), so
/// the agent reads the status at its own pace.
fn wait_for_goodbye(conn: &OwnedFd) {
    while !threads::stopping() {
        match threads::wait_readable(conn, threads::POLL) {
            Ok(true) => match recv_kind(conn) {
                Some(msg::DETACH) | None => return,
                Some(_) => {}
            },
            Ok(false) => {}
            Err(_) => return,
        }
    }
}

fn set_send_timeout(conn: &OwnedFd, limit: Duration) {
    let tv = libc::timeval {
        tv_sec: limit.as_secs() as libc::time_t,
        tv_usec: limit.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: SO_SNDTIMEO takes one timeval of that size.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
}
