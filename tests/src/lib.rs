//! Helpers for modelprobe's end-to-end tests: finding the built binaries, running them, reading
//! their outputs, and deciding whether a test that needs root and BPF may run here.
//!
//! Most tests record with a [`Session`] and read what it wrote through [`Recorded`]; tests that
//! signal or watch a running agent use [`Agent`]; the injector tests use [`inject_target`].
pub mod inject_target;
mod session;

pub use session::{Recorded, Session};

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// `target/<profile>` of the build these tests belong to.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Path of the `modelprobe` binary (built by `cargo xtask test` before the tests run).
pub fn modelprobe_bin() -> PathBuf {
    let p = target_dir().join("modelprobe");
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo xtask test`, which builds it",
        p.display()
    );
    p
}

/// Path of the fixture workload.
pub fn workload_bin() -> PathBuf {
    let p = target_dir().join("mp-workload");
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask test`",
        p.display()
    );
    p
}

/// Directory of the C fixture libraries (built by the tests crate's build script).
pub fn fixture_lib_dir() -> PathBuf {
    let d = target_dir().join("fixtures");
    assert!(
        d.join("libmpfixture.so").exists(),
        "{} lacks the fixture libraries",
        d.display()
    );
    d
}

/// Why root BPF tests cannot run here, if they cannot.
pub fn bpf_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("kernel has no BTF".into());
    }
    if !Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists() {
        return Some("kernel has no BPF syscall".into());
    }
    None
}

/// Returns true if a root BPF test may run. Otherwise prints why it is skipped, or panics when
/// `MODELPROBE_REQUIRE_BPF=1` (set by `cargo xtask test`, so CI never passes on skipped tests).
pub fn require_bpf(test: &str) -> bool {
    match bpf_unavailable() {
        None => true,
        Some(why) => {
            if std::env::var("MODELPROBE_REQUIRE_BPF").as_deref() == Ok("1") {
                panic!("{test}: BPF tests are required here but cannot run: {why}");
            }
            eprintln!("SKIPPED {test}: {why} (needs root and a kernel with BPF and BTF)");
            false
        }
    }
}

/// The venv `cargo xtask test` makes under `target/`: numpy, py-spy and the `openai` and
/// `anthropic` clients.
pub fn tools_venv() -> Option<PathBuf> {
    target_dir()
        .ancestors()
        .nth(1)
        .map(|t| t.join("py-numpy"))
        .filter(|v| v.exists())
}

/// Fails under `MODELPROBE_REQUIRE_BPF` (CI), else says why the test is skipped.
pub fn missing(what: &str) {
    assert!(
        std::env::var_os("MODELPROBE_REQUIRE_BPF").is_none(),
        "{what} is missing: `cargo xtask test` sets it up"
    );
    eprintln!("skipped: {what} is missing");
}

/// A fresh, empty directory under the system temp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mp-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A child process that is killed when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the workload with `args`, waits for its `ready` line, returns it.
pub fn start_workload(args: &[&str]) -> KillOnDrop {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(workload_bin())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start workload");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    reader.read_line(&mut line).expect("read ready line");
    assert!(line.starts_with("ready "), "unexpected first line {line:?}");
    // Keep draining, so the workload's last lines never hit a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    KillOnDrop(child)
}

/// Runs a command to completion with a time limit; panics if it overruns. Its output is read
/// as it comes (a command that writes more than a pipe holds must not stall).
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "command overran {limit:?}: stderr: {}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// The frame names of stack `stack` of a recording (outermost first).
pub fn frame_names(rec: &serde_json::Value, stack: u64) -> Vec<String> {
    rec["stacks"][stack as usize]
        .as_array()
        .expect("stack")
        .iter()
        .map(|f| {
            rec["frames"][f.as_u64().unwrap() as usize]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Parses a folded-stacks file into `(stack, count)` pairs.
pub fn read_folded(path: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').expect("folded line has a count");
            (stack.to_string(), n.parse().expect("count is an integer"))
        })
        .collect()
}

/// Sum of counts of stacks whose innermost real user frame is `func`: kernel frames (`_[k]`,
/// a page fault or interrupt taken there) and functions inlined into it (`_[i]`) may follow.
pub fn self_weight(folded: &[(String, u64)], func: &str) -> u64 {
    folded
        .iter()
        .filter(|(stack, _)| {
            stack
                .split(';')
                .rev()
                .find(|f| !f.ends_with("_[k]") && !f.ends_with("_[i]"))
                .is_some_and(|leaf| leaf == func)
        })
        .map(|(_, n)| n)
        .sum()
}

/// Sum of counts of stacks that contain `func` anywhere.
pub fn total_weight(folded: &[(String, u64)], func: &str) -> u64 {
    folded
        .iter()
        .filter(|(stack, _)| stack.split(';').any(|f| f == func))
        .map(|(_, n)| n)
        .sum()
}

/// Serializes tests that load BPF programs, so that "nothing left behind" checks see only
/// their own agent.
pub fn bpf_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The recording's JSON, parsed.
pub fn read_recording(dir: &Path) -> serde_json::Value {
    let path = dir.join("recording.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("recording.json is JSON")
}

/// The rows of section `id` of `modelprobe report --json DIR` (empty when the section is
/// absent), so tests check figures, not text layout.
pub fn report_rows(dir: &Path, id: &str) -> Vec<Vec<serde_json::Value>> {
    let out = Command::new(modelprobe_bin())
        .args(["report", "--json"])
        .arg(dir)
        .output()
        .expect("running modelprobe report");
    assert!(
        out.status.success(),
        "report --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report is JSON");
    let section = report["sections"]
        .as_array()
        .expect("sections")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no section {id}"))
        .clone();
    serde_json::from_value(section["rows"].clone()).expect("rows")
}

/// The row of `rows` whose first cell is `key`.
pub fn row<'a>(rows: &'a [Vec<serde_json::Value>], key: &str) -> &'a [serde_json::Value] {
    rows.iter()
        .find(|r| r[0] == key)
        .unwrap_or_else(|| panic!("no row {key} in {rows:?}"))
}

/// Asserts that `path` is a well-formed SVG flame graph that names each of `funcs`.
pub fn assert_svg_names(path: &Path, funcs: &[&str]) {
    let svg =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(svg.starts_with("<?xml"), "{} is not XML", path.display());
    assert!(
        svg.trim_end().ends_with("</svg>"),
        "{} is truncated",
        path.display()
    );
    for f in funcs {
        assert!(svg.contains(f), "{} does not mention {f}", path.display());
    }
}

/// Checks `dir/trace.json` with the independent reader (`tests/tools/check_trace.py`: Python's
/// json and the trace-event rules), with its `--expect-slice NAME:N` / `--expect-instant NAME`
/// options; panics with the reader's complaint.
pub fn check_trace(dir: &Path, expectations: &[&str]) {
    let out = run_with_timeout(
        Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/check_trace.py"))
            .arg(dir.join("trace.json"))
            .args(expectations),
        Duration::from_secs(60),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("check_trace: ok"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Ids of the BPF programs process `pid` holds open: the `prog_id` of each of its BPF program
/// and link file descriptors (`/proc/PID/fdinfo`). Empty once the process is gone.
pub fn bpf_programs_held_by(pid: u32) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for fd in fds.flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u32>().ok()),
        );
    }
    ids
}

/// Which of `ids` the kernel still has loaded.
fn still_loaded(ids: &BTreeSet<u32>) -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .filter(|id| ids.contains(id))
        .collect()
}

/// Waits (up to 5 s: program teardown is deferred in the kernel) until none of the BPF
/// programs an agent held (`ids`, from [`bpf_programs_held_by`] while it ran) is loaded;
/// panics naming those left. Programs of other agents on the machine (tests running in
/// parallel) are none of its business. `ids` must not be empty: a check of nothing proves
/// nothing.
pub fn assert_programs_released(ids: &BTreeSet<u32>, context: &str) {
    assert!(
        !ids.is_empty(),
        "{context}: the agent was never seen holding a BPF program"
    );
    let start = Instant::now();
    loop {
        let left = still_loaded(ids);
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{context}: BPF programs left behind: ids {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An agent (`modelprobe attach`/`run`) running in the background, with the BPF programs it
/// was seen holding; killed if dropped before it ends.
pub struct Agent {
    child: KillOnDrop,
    programs: BTreeSet<u32>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    /// Its stderr so far, as the drain reads it.
    stderr_now: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

/// What a finished [`Agent`] left: its output, and every BPF program id it held.
pub struct AgentRun {
    /// Exit status, stdout and stderr.
    pub output: Output,
    /// Ids of the BPF programs it was seen holding.
    pub programs: BTreeSet<u32>,
}

impl AgentRun {
    /// Its stderr, as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Panics with its stderr unless it exited 0.
    pub fn assert_success(&self) {
        assert!(
            self.output.status.success(),
            "modelprobe failed ({}): {}",
            self.output.status,
            self.stderr()
        );
    }
}

fn drain<R: std::io::Read + Send + 'static>(
    pipe: Option<R>,
    so_far: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) -> Option<std::thread::JoinHandle<Vec<u8>>> {
    pipe.map(|mut p| {
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = p.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                so_far.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
            let all = so_far.lock().unwrap().clone();
            all
        })
    })
}

impl Agent {
    /// Starts `cmd` with stdout and stderr captured (drained as it runs, so it never blocks
    /// on a full pipe).
    pub fn spawn(cmd: &mut Command) -> Agent {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start modelprobe");
        let stdout = drain(child.stdout.take(), Default::default());
        let stderr_now = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = drain(child.stderr.take(), stderr_now.clone());
        Agent {
            child: KillOnDrop(child),
            programs: BTreeSet::new(),
            stdout,
            stderr,
            stderr_now,
        }
    }

    /// What it has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr_now.lock().unwrap()).into_owned()
    }

    /// Waits until its stderr holds `needle`; panics with it after `limit`.
    pub fn wait_for_stderr(&mut self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while !self.stderr_so_far().contains(needle) {
            self.look();
            assert!(
                start.elapsed() < limit,
                "no {needle:?} on the agent's stderr after {limit:?}: {}",
                self.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn look(&mut self) {
        let pid = self.pid();
        self.programs.extend(bpf_programs_held_by(pid));
    }

    /// Waits until it holds at least `n` BPF programs (it has attached); panics after
    /// `limit`.
    pub fn wait_for_programs(&mut self, n: usize, limit: Duration) {
        let start = Instant::now();
        loop {
            let held = bpf_programs_held_by(self.pid());
            let attached = held.len() >= n;
            self.programs.extend(held);
            if attached {
                return;
            }
            assert!(
                self.child.0.try_wait().expect("try_wait").is_none(),
                "the agent exited before attaching"
            );
            assert!(
                start.elapsed() < limit,
                "the agent never attached ({} of {n} BPF programs after {limit:?})",
                self.programs.len()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends it a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// Waits for it to end, watching the BPF programs it holds meanwhile; panics with its
    /// stderr after `limit`.
    pub fn finish(mut self, limit: Duration) -> AgentRun {
        let start = Instant::now();
        let status = loop {
            // Before reaping: the fdinfo of a finished process is gone.
            self.look();
            if let Some(status) = self.child.0.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > limit {
                let _ = self.child.0.kill();
                let _ = self.child.0.wait();
                let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
                panic!(
                    "modelprobe overran {limit:?}: stderr: {}",
                    String::from_utf8_lossy(&stderr.unwrap_or_default())
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
            h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
        };
        AgentRun {
            output: Output {
                status,
                stdout: join(self.stdout.take()),
                stderr: join(self.stderr.take()),
            },
            programs: std::mem::take(&mut self.programs),
        }
    }
}

/// Runs modelprobe to its end with a time limit, watching the BPF programs it holds: the
/// "run modelprobe, wait" of every end-to-end test.
pub fn run_agent(cmd: &mut Command, limit: Duration) -> AgentRun {
    Agent::spawn(cmd).finish(limit)
}

/// The OTLP receiver (`fixtures/otlp/receiver.py`, on PyPI's official `opentelemetry-proto`)
/// listening on a free port, writing what it receives to `dir/received.jsonl`: (its process,
/// its base URL, that file). `extra`: its options (`--throttle N`). `None`, with the reason said,
/// when the Python package is missing.
pub fn otlp_receiver(dir: &Path, extra: &[&str]) -> Option<(KillOnDrop, String, PathBuf)> {
    let python = tools_venv().map(|v| v.join("bin/python")).filter(|p| {
        Command::new(p)
            .args([
                "-c",
                "import opentelemetry.proto.collector.trace.v1.trace_service_pb2",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(python) = python else {
        missing("the opentelemetry-proto Python package");
        return None;
    };
    let (port_file, received) = (dir.join("port"), dir.join("received.jsonl"));
    let receiver = KillOnDrop(
        Command::new(&python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/otlp/receiver.py"))
            .arg("--port-file")
            .arg(&port_file)
            .arg("--out")
            .arg(&received)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("start the OTLP receiver"),
    );
    let started = Instant::now();
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            break p.trim().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no receiver");
        std::thread::sleep(Duration::from_millis(50));
    };
    Some((receiver, format!("http://127.0.0.1:{port}"), received))
}

/// pyenv's CPython 3.12 (a shared libpython, on every machine of this kind), else Debian's
/// python3.
pub fn python312() -> PathBuf {
    pyenv_python(12).unwrap_or_else(|| PathBuf::from("/usr/bin/python3"))
}

/// pyenv's CPython 3.`minor` (`/root/.pyenv/versions/3.MINOR.*/bin/python3`), if installed.
pub fn pyenv_python(minor: u32) -> Option<PathBuf> {
    let prefix = format!("3.{minor}.");
    std::fs::read_dir("/root/.pyenv/versions")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().join("bin/python3"))
        .find(|b| b.exists())
}

/// Whether `go` (Debian's golang-go, for `go tool pprof`) is here; says so when not (a failure
/// under `MODELPROBE_REQUIRE_BPF`).
pub fn have_go() -> bool {
    let ok = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        missing("go (golang-go), for `go tool pprof`");
    }
    ok
}

/// `go tool pprof ARGS FILE`'s stdout; panics with its stderr when it fails.
pub fn go_pprof(args: &[&str], file: &Path) -> String {
    let out = run_with_timeout(
        Command::new("go")
            .args(["tool", "pprof"])
            .args(args)
            .arg(file)
            .env("HOME", std::env::temp_dir()),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
