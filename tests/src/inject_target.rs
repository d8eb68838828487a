//! The `mp-inject-target` fixture and what the injector tests check in it: a running target
//! ([`Target`]) fed through stdin and read through stdout, the notes the test library
//! (`libmp_inject_test.so`) writes, and the process's file descriptors, threads and mappings.
//! The calls into `modelprobe::live_load` stay in `tests/inject.rs`.
use std::{
    io::{BufRead, BufReader, Read, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use crate::target_dir;

/// True if ptrace tests may run; otherwise prints why (or panics under
/// `MODELPROBE_REQUIRE_BPF=1`, so CI never passes on a skip).
pub fn require_ptrace(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root")
    } else if std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .is_ok_and(|s| s.trim() == "3")
    {
        Some("ptrace is disabled (kernel.yama.ptrace_scope=3)")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            if std::env::var("MODELPROBE_REQUIRE_BPF").as_deref() == Ok("1") {
                panic!("{test}: ptrace tests are required here but cannot run: {why}");
            }
            eprintln!("SKIPPED {test}: {why} (needs root and ptrace)");
            false
        }
    }
}

/// One injection test at a time: they time things on a machine with few cores.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Path of fixture `name` in `target/<profile>/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    let p = target_dir().join("fixtures").join(name);
    assert!(
        p.exists(),
        "{} is missing (built by tests/build.rs)",
        p.display()
    );
    p
}

/// The bytes of the test library (`libmp_inject_test.so`), as the injector takes them.
pub fn image() -> Vec<u8> {
    std::fs::read(fixture("libmp_inject_test.so")).expect("reading the test library")
}

/// A running `mp-inject-target`, killed on drop.
pub struct Target {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: mpsc::Receiver<u8>,
}

impl Target {
    /// Starts the fixture in `mode` and waits for its "ready" line.
    pub fn start(args: &[&str]) -> Target {
        let mut child = Command::new(fixture("mp-inject-target"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting mp-inject-target");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        out.read_line(&mut first).expect("reading the ready line");
        assert_eq!(first, "ready\n", "fixture {args:?} did not start");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, stderr) = mpsc::channel();
        let mut err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            while err.read_exact(&mut b).is_ok() {
                if tx.send(b[0]).is_err() {
                    break;
                }
            }
        });
        Target {
            stdin: child.stdin.take(),
            child,
            lines,
            reader: Some(reader),
            stderr,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `text` to its stdin.
    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(text.as_bytes())
            .expect("writing to the fixture");
        stdin.flush().expect("flushing");
    }

    /// The next byte it writes to stderr, waiting at most `limit` (its signal handler writes
    /// one per signal it handles).
    pub fn stderr_byte(&self, limit: Duration) -> Result<u8, mpsc::RecvTimeoutError> {
        self.stderr.recv_timeout(limit)
    }

    /// Lines printed after "ready" so far.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Closes stdin and waits (at most `limit`) for the exit; returns the status and all lines.
    pub fn finish(mut self, limit: Duration) -> (ExitStatus, Vec<String>) {
        drop(self.stdin.take());
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                start.elapsed() < limit,
                "fixture {} did not exit within {limit:?}; printed {:?}",
                self.pid(),
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        self.reader
            .take()
            .expect("reader")
            .join()
            .expect("reader thread");
        (status, self.output())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(note_file(self.child.id()));
    }
}

/// Runs the fixture without injection and returns its output.
pub fn reference_run(args: &[&str]) -> Vec<String> {
    let (status, lines) = Target::start(args).finish(Duration::from_secs(120));
    assert!(status.success(), "reference run {args:?}: {status}");
    lines
}

/// The file the test library writes its notes to.
pub fn note_file(pid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/mp-inject-{pid}.txt"))
}

/// How many notes starting with `word` the library wrote in process `pid`.
pub fn notes(pid: u32, word: &str) -> usize {
    std::fs::read_to_string(note_file(pid))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').next() == Some(word))
        .count()
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Threads of `pid`.
pub fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Lines of `/proc/PID/maps`.
pub fn maps(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("reading maps")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits up to 2 s for the thread count to come back to `want` (a joined thread leaves
/// /proc/PID/task a moment after pthread_join returns).
pub fn assert_threads(pid: u32, want: usize, context: &str) {
    let start = Instant::now();
    while thread_count(pid) != want {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{context}: {} threads, want {want}",
            thread_count(pid)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checks the library is gone: its stop function and destructor ran, nothing is mapped.
pub fn assert_unloaded(pid: u32, unloads: usize) {
    assert_eq!(
        notes(pid, "stopped"),
        unloads,
        "modelprobe_inject_stop notes in {pid}"
    );
    assert_eq!(notes(pid, "unloaded"), unloads, "destructor notes in {pid}");
    let left: Vec<_> = maps(pid)
        .into_iter()
        .filter(|l| l.contains("/memfd:"))
        .collect();
    assert!(left.is_empty(), "still mapped in {pid}: {left:?}");
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `min / median / max` of pauses, for the test output.
pub fn stats(pauses: &mut [Duration]) -> String {
    pauses.sort();
    format!(
        "min {:.2} ms, median {:.2} ms, max {:.2} ms over {}",
        ms(pauses[0]),
        ms(pauses[pauses.len() / 2]),
        ms(pauses[pauses.len() - 1]),
        pauses.len()
    )
}
