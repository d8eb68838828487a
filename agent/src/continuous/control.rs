//! The agent's local control socket, and its client (`modelprobe ctl`).
//!
//! A Unix stream socket (default [`DEFAULT_SOCKET`], mode 0600 in a 0700 folder: root's, as
//! the agent is); one request per connection, a JSON line each way. The agent answers a
//! [`Request::Capture`] when the capture is written, so the client waits the capture's length.
//! A second agent on the same socket is refused; a socket left by an agent that died is
//! replaced.
use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::{
        fs::PermissionsExt,
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::capture::{CaptureDone, CaptureRequest, Captures};
use crate::{Error, Result};

/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/modelprobe/agent.sock";

/// Longest request line read.
const MAX_REQUEST: u64 = 64 * 1024;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// A deep capture of one process.
    Capture(CaptureRequest),
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Why it could not be done (`None`: done).
    #[serde(default)]
    pub error: Option<String>,
    /// What a capture recorded.
    #[serde(default)]
    pub capture: Option<CaptureDone>,
}

/// The listening socket; stops listening, waits for captures in progress and removes the
/// socket when dropped.
pub struct ControlServer {
    path: PathBuf,
    shutdown: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Listens at `path`.
    pub fn start(path: &Path, captures: Captures) -> Result<ControlServer> {
        let bad = |what: &str, e: std::io::Error| {
            Error::InvalidArgument(format!(
                "agent: control socket {}: {what} ({e}); --control PATH chooses another",
                path.display()
            ))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| bad("cannot create its folder", e))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| bad("cannot restrict its folder", e))?;
            }
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(Error::InvalidArgument(format!(
                    "agent: another agent is listening on {}; --control PATH chooses another",
                    path.display()
                )));
            }
            // Left by an agent that is gone.
            std::fs::remove_file(path).map_err(|e| bad("cannot replace a stale one", e))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| bad("cannot listen", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| bad("cannot restrict it", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| bad("cannot set it up", e))?;
        log::info!("agent: control socket at {}", path.display());
        let shutdown = Arc::new(AtomicBool::new(false));
        let stop = shutdown.clone();
        let captures = Arc::new(captures);
        let handle = std::thread::Builder::new()
            .name("mp-agent-ctl".into())
            .spawn(move || serve(&listener, &captures, &stop))
            .map_err(|e| bad("cannot start its thread", e))?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            shutdown,
            handle: Some(handle),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Accepts until shut down, a thread per connection; waits for them before returning.
fn serve(listener: &UnixListener, captures: &Arc<Captures>, shutdown: &AtomicBool) {
    let mut clients: Vec<JoinHandle<()>> = Vec::new();
    while !shutdown.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let captures = captures.clone();
                match std::thread::Builder::new()
                    .name("mp-agent-client".into())
                    .spawn(move || answer(stream, &captures))
                {
                    Ok(h) => clients.push(h),
                    Err(e) => log::warn!("agent: control request dropped: {e}"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                log::warn!("agent: control socket: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        clients.retain(|h| !h.is_finished());
    }
    for h in clients {
        let _ = h.join();
    }
}

/// Reads one request, does it, writes the reply.
fn answer(stream: UnixStream, captures: &Captures) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    let read = BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line);
    let reply = match read {
        Err(e) => Reply::failed(format!("reading the request: {e}")),
        Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
            Err(e) => Reply::failed(format!("not a request: {e}")),
            Ok(Request::Capture(req)) => match captures.capture(&req) {
                Ok(done) => Reply {
                    error: None,
                    capture: Some(done),
                },
                Err(e) => Reply::failed(e.to_string()),
            },
        },
    };
    let mut stream = stream;
    let mut text = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    if let Err(e) = stream.write_all(text.as_bytes()) {
        log::warn!("agent: the control client left before its reply: {e}");
    }
}

impl Reply {
    fn failed(error: String) -> Reply {
        Reply {
            error: Some(error),
            capture: None,
        }
    }
}

/// Sends `req` to the agent at `socket` and waits for its reply (up to `timeout`).
pub fn request(socket: &Path, req: &Request, timeout: Duration) -> Result<Reply> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        Error::InvalidArgument(format!(
            "no agent answers at {} ({e}): is `modelprobe agent` running, and are you root?",
            socket.display()
        ))
    })?;
    let io =
        |e: std::io::Error| Error::io(format!("talking to the agent at {}", socket.display()), e);
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut text = serde_json::to_string(req).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    text.push('\n');
    stream.write_all(text.as_bytes()).map_err(io)?;
    let mut line = String::new();
    BufReader::new(stream.take(MAX_REQUEST))
        .read_line(&mut line)
        .map_err(io)?;
    if line.trim().is_empty() {
        return Err(Error::InvalidArgument(format!(
            "the agent at {} closed the connection without a reply (did it stop?)",
            socket.display()
        )));
    }
    serde_json::from_str(line.trim())
        .map_err(|e| Error::InvalidArgument(format!("the agent's reply is not understood: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_one_json_line_each() {
        let req = Request::Capture(CaptureRequest {
            pid: 42,
            duration_ms: 10_000,
            out: None,
            frequency_hz: None,
        });
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"op":"capture","pid":42,"duration_ms":10000,"out":null,"frequency_hz":null}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
        let short: Request =
            serde_json::from_str(r#"{"op":"capture","pid":7,"duration_ms":500}"#).unwrap();
        assert!(matches!(
            short,
            Request::Capture(CaptureRequest { pid: 7, .. })
        ));
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
    }

    #[test]
    fn a_bad_request_gets_an_error_reply_and_a_second_server_is_refused() {
        let dir = std::env::temp_dir().join(format!("mp-ctl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("agent.sock");
        let stop = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let server =
            ControlServer::start(&path, Captures::new(dir.join("captures"), stop.clone())).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = ControlServer::start(&path, Captures::new(dir.join("c"), stop.clone()));
        assert!(again.err().unwrap().to_string().contains("another agent"));

        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"hello\n").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        let reply: Reply = serde_json::from_str(&line).unwrap();
        assert!(reply.error.unwrap().starts_with("not a request"));

        // Checked before anything is attached.
        let bad = Request::Capture(CaptureRequest {
            pid: std::process::id(),
            duration_ms: 5,
            out: None,
            frequency_hz: None,
        });
        let reply = request(&path, &bad, Duration::from_secs(5)).unwrap();
        assert!(reply.error.unwrap().contains("out of range"));

        drop(server);
        assert!(!path.exists(), "the socket goes with the server");
        let err = request(&path, &bad, Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("no agent answers"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
