//! The process being profiled: found by pid, or launched and held at a gate until the sampler
//! is watching it, so `run` sees the command from its first instruction.
use std::{
    ffi::{CString, OsStr, OsString},
    fs,
    io::{self, Read},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use crate::{Error, Result};

/// The state letter of `/proc/PID/stat`, or `None` when the process is gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(state, _)| state)
}

/// Parses `(state, ppid)` out of a `/proc/PID/stat` line (the command name may hold spaces or
/// parentheses, so fields are counted after the last `)`).
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True while `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    matches!(process_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Checks that `pid` names a live process.
pub fn check_pid(pid: u32) -> Result<()> {
    match process_state(pid) {
        None => Err(Error::NoSuchProcess(pid)),
        Some('Z') | Some('X') => Err(Error::ProcessExited(pid)),
        Some(_) => Ok(()),
    }
}

/// The process a thread id belongs to (`Tgid:` of `/proc/TID/status`); a process id maps to
/// itself.
pub fn thread_group(tid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The process's `comm` (its main thread's name), if it is still there.
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// A thread's name (`comm`), if it is still there.
pub fn thread_comm(pid: u32, tid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// The process's thread ids, in order (empty when it is gone).
pub fn thread_ids(pid: u32) -> Vec<u32> {
    let mut tids: Vec<u32> = fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// The fields of a `stat` file (`/proc/PID/stat`, `/proc/PID/task/TID/stat`) after the name,
/// which may hold spaces and parentheses: `[0]` is the state (field 3), `[11]` utime (14),
/// `[12]` stime (15).
fn stat_fields(path: &str) -> Option<Vec<String>> {
    let stat = fs::read_to_string(path).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// A thread's scheduler state letter (`R`, `S`, `D`, `T` stopped, `t` traced, `Z`...), if it
/// is still there.
pub fn thread_state(pid: u32, tid: u32) -> Option<char> {
    stat_fields(&format!("/proc/{pid}/task/{tid}/stat"))?
        .first()?
        .chars()
        .next()
}

/// CPU time the process's threads have used, user and system, in seconds (the kernel's
/// accounting in `/proc/PID/stat`), if it is still there.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let fields = stat_fields(&format!("/proc/{pid}/stat"))?;
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

/// True when `pid` maps a file whose name starts with `prefix` (`libcuda.so`,
/// `libtorch_python.so`).
pub fn maps_library(pid: u32, prefix: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| {
        maps.lines().any(|l| {
            l.rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with(prefix))
        })
    })
}

/// The process's command line, arguments joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let parts: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// The path of the process's executable (`/proc/PID/exe`), if it can be read.
pub fn exe(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The process's cgroup path: the cgroup v2 line (`0::/PATH`) of `/proc/PID/cgroup`, else
/// the first v1 line's path.
pub fn cgroup(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path_of = |l: &str| l.splitn(3, ':').nth(2).map(str::to_string);
    text.lines()
        .find(|l| l.starts_with("0::"))
        .or_else(|| text.lines().next())
        .and_then(path_of)
        .filter(|p| !p.is_empty())
}

/// Every process now: the numeric entries of `/proc` (none when it cannot be read).
pub fn all_pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
}

/// All live descendants of `root` (children, grandchildren, ...), from one scan of `/proc`.
pub fn descendants(root: u32) -> Vec<u32> {
    let parent_of: Vec<(u32, u32)> = all_pids()
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            parse_stat(&stat).map(|(_, ppid)| (pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// A child process forked and waiting, before `execve`, for [`GatedChild::release`].
#[derive(Debug)]
pub struct GatedChild {
    /// The child's pid (unchanged by the exec).
    pub pid: u32,
    /// The program that will be executed, resolved like a shell does.
    pub program_path: PathBuf,
    program: String,
    gate: Option<OwnedFd>,
    exec_error: OwnedFd,
}

/// Looks `program` up like a shell does: as a path if it has a `/`, else along `$PATH`.
pub fn resolve_program(program: &OsStr) -> Result<PathBuf> {
    let not_found = |reason: &str| Error::CommandNotFound {
        command: program.to_string_lossy().into_owned(),
        reason: reason.to_string(),
    };
    let is_exec = |p: &Path| {
        let c = CString::new(p.as_os_str().as_bytes()).ok();
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        c.is_some_and(|c| unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0) && p.is_file()
    };
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        if !path.exists() {
            return Err(not_found("no such file"));
        }
        if !is_exec(&path) {
            return Err(not_found("not an executable file"));
        }
        return Ok(path);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(program))
        .find(|p| is_exec(p))
        .ok_or_else(|| not_found("command not found in $PATH"))
}

fn cstring(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| Error::CommandNotFound {
        command: s.to_string_lossy().into_owned(),
        reason: "argument contains a NUL byte".into(),
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-int array for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("creating a pipe", io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl GatedChild {
    /// Forks a child that will exec `argv` (with this process's environment plus `extra_env`,
    /// which wins over a variable of the same name) once released.
    ///
    /// The child inherits stdin, stdout and stderr, and stays in this process group so that a
    /// terminal's Ctrl-C reaches it as it would without modelprobe.
    pub fn spawn(argv: &[OsString], extra_env: &[(OsString, OsString)]) -> Result<Self> {
        let program = argv.first().ok_or_else(|| Error::CommandNotFound {
            command: String::new(),
            reason: "no command given".into(),
        })?;
        let program_path = resolve_program(program)?;
        let path = cstring(program_path.as_os_str())?;
        let args: Vec<CString> = argv.iter().map(|a| cstring(a)).collect::<Result<_>>()?;
        let env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| !extra_env.iter().any(|(e, _)| e == k))
            .chain(extra_env.iter().cloned())
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                cstring(&kv)
            })
            .collect::<Result<_>>()?;
        let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());
        let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        env_ptrs.push(std::ptr::null());

        let (gate_r, gate_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        // SAFETY: the child only calls async-signal-safe functions (read, execve, write,
        // _exit) on memory prepared before the fork, so forking a threaded process is sound.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Error::io("fork", io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: see above; every pointer refers to memory allocated before the fork.
            unsafe {
                // Only the agent may hold the gate's write end, or its exit could not open it.
                libc::close(gate_w.as_raw_fd());
                libc::close(err_r.as_raw_fd());
                let mut byte = 0u8;
                loop {
                    let n = libc::read(gate_r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
                    if n == 1 {
                        break;
                    }
                    if n == 0 || *libc::__errno_location() != libc::EINTR {
                        // The agent went away before releasing us: do not run unobserved.
                        libc::_exit(exit_code_gate_closed());
                    }
                }
                libc::execve(path.as_ptr(), arg_ptrs.as_ptr(), env_ptrs.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(
                    err_w.as_raw_fd(),
                    (&errno as *const i32).cast(),
                    size_of::<i32>(),
                );
                libc::_exit(crate::error::exit_code::COMMAND_NOT_FOUND);
            }
        }
        drop(gate_r);
        drop(err_w);
        Ok(GatedChild {
            pid: pid as u32,
            program_path,
            program: program.to_string_lossy().into_owned(),
            gate: Some(gate_w),
            exec_error: err_r,
        })
    }

    /// Lets the child exec; returns once the exec has happened or failed.
    pub fn release(&mut self) -> Result<()> {
        let Some(gate) = self.gate.take() else {
            return Ok(());
        };
        let mut file = fs::File::from(gate);
        std::io::Write::write_all(&mut file, b"g").map_err(|e| Error::io("releasing child", e))?;
        drop(file);
        let mut errno = [0u8; 4];
        let mut err = fs::File::from(
            self.exec_error
                .try_clone()
                .map_err(|e| Error::io("dup", e))?,
        );
        match err.read(&mut errno) {
            Ok(4) => {
                // The child _exits right after reporting; reap it so no zombie is left.
                let mut status = 0;
                // SAFETY: `status` is a valid out-pointer.
                unsafe { libc::waitpid(self.pid as i32, &mut status, 0) };
                Err(Error::CommandNotFound {
                    command: self.program.clone(),
                    reason: io::Error::from_raw_os_error(i32::from_ne_bytes(errno)).to_string(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Exit status of a gated child whose agent died before releasing it.
const fn exit_code_gate_closed() -> i32 {
    125
}

/// Non-blocking reap of a child: `Some(status)` once it has exited, as a shell reports it
/// (the exit code, or 128 + the signal number).
pub fn try_wait(pid: u32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; WNOHANG makes the call non-blocking.
    let rc = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
    if rc != pid as i32 {
        return None;
    }
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let line = "42 (a) b (c)) S 7 42 42 0 -1 4194304";
        assert_eq!(parse_stat(line), Some(('S', 7)));
    }

    #[test]
    fn own_process_is_alive_and_bogus_pid_is_not() {
        assert!(is_alive(std::process::id()));
        assert_eq!(thread_group(std::process::id()), Some(std::process::id()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, std::process::id());
        assert_eq!(thread_group(tid), Some(std::process::id()));
        done_tx.send(()).unwrap();
        worker.join().unwrap();
        assert!(matches!(
            check_pid(u32::MAX - 1),
            Err(Error::NoSuchProcess(_))
        ));
    }

    #[test]
    fn resolves_programs_like_a_shell() {
        assert!(resolve_program(OsStr::new("sh")).is_ok());
        let err = resolve_program(OsStr::new("no-such-command-xyz")).unwrap_err();
        assert_eq!(err.exit_code(), 127);
        assert!(err.to_string().contains("no-such-command-xyz"));
    }

    #[test]
    fn gated_child_exits_when_the_agent_abandons_it() {
        let child = GatedChild::spawn(&["true".into()], &[]).unwrap();
        let pid = child.pid;
        drop(child);
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(s) = try_wait(pid) {
                break s;
            }
            assert!(
                start.elapsed().as_secs() < 5,
                "abandoned child still waiting at the gate"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(status, exit_code_gate_closed());
    }

    #[test]
    fn gated_child_runs_only_when_released() {
        let mut child = GatedChild::spawn(&["true".into()], &[]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(try_wait(child.pid), None, "child must wait at the gate");
        child.release().unwrap();
        let status = loop {
            if let Some(s) = try_wait(child.pid) {
                break s;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(status, 0);
    }
}
