//! [`Session`]: one `modelprobe run` or `modelprobe attach` to its end, and what it left in its
//! output directory ([`Recorded`]): the "run modelprobe, wait, read the recording" of most
//! end-to-end tests, in a line or two.
//!
//! ```no_run
//! # use modelprobe_tests::*;
//! let out = scratch_dir("example");
//! // modelprobe run --off-cpu -o OUT -- mp-workload --seconds 3
//! let r = Session::run(&out, &["--off-cpu"])
//!     .workload(&["--seconds", "3"])
//!     .expect_success();
//! assert_eq!(r.recording()["meta"]["mode"], "run");
//! assert!(self_weight(&r.folded("stacks.folded"), "mp_hot_a") > 0);
//! ```
use std::{
    collections::BTreeSet,
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::Duration,
};

use crate::{modelprobe_bin, read_folded, read_recording, report_rows, run_agent, workload_bin};

/// A `modelprobe` command line being put together: `modelprobe [GLOBAL] run|attach OPTIONS
/// -o OUT [-- COMMAND ARGS]`, with its environment and time limit (60 s unless set).
#[must_use = "a Session runs only when finished"]
pub struct Session {
    global: Vec<OsString>,
    subcommand: Vec<OsString>,
    out: PathBuf,
    target: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    limit: Duration,
}

impl Session {
    fn new(out: &Path, subcommand: Vec<OsString>) -> Session {
        Session {
            global: Vec::new(),
            subcommand,
            out: out.to_path_buf(),
            target: Vec::new(),
            env: Vec::new(),
            limit: Duration::from_secs(60),
        }
    }

    /// `modelprobe run OPTIONS -o OUT`; name what it runs with [`Session::workload`] or
    /// [`Session::command`].
    pub fn run(out: &Path, options: &[&str]) -> Session {
        let args = std::iter::once("run").chain(options.iter().copied());
        Session::new(out, args.map(OsString::from).collect())
    }

    /// `modelprobe attach --pid PID OPTIONS -o OUT`.
    pub fn attach(out: &Path, pid: u32, options: &[&str]) -> Session {
        let pid = pid.to_string();
        let args = ["attach", "--pid", &pid]
            .into_iter()
            .chain(options.iter().copied());
        Session::new(out, args.map(OsString::from).collect())
    }

    /// Options before the subcommand: `modelprobe GLOBAL run ...`.
    pub fn global(mut self, options: &[&str]) -> Session {
        self.global.extend(options.iter().map(OsString::from));
        self
    }

    /// The command `run` starts: `-- mp-workload ARGS` (the fixture workload).
    pub fn workload(self, args: &[&str]) -> Session {
        self.command(workload_bin(), args)
    }

    /// The command `run` starts: `-- PROGRAM ARGS`.
    pub fn command(mut self, program: impl AsRef<OsStr>, args: &[&str]) -> Session {
        self.target = std::iter::once(program.as_ref().to_os_string())
            .chain(args.iter().map(OsString::from))
            .collect();
        self
    }

    /// Sets `key=value` in modelprobe's environment (which `run` passes on to its command).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Session {
        let value = value.as_ref().to_os_string();
        self.env.push((key.as_ref().to_os_string(), Some(value)));
        self
    }

    /// Sets each `(key, value)` of `vars` in modelprobe's environment.
    pub fn envs<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Session
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (key, value) in vars {
            self = self.env(key, value);
        }
        self
    }

    /// Removes `key` from modelprobe's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Session {
        self.env.push((key.as_ref().to_os_string(), None));
        self
    }

    /// How long modelprobe may run before the test fails (default 60 s).
    pub fn timeout(mut self, limit: Duration) -> Session {
        self.limit = limit;
        self
    }

    /// modelprobe's arguments: `[GLOBAL] run|attach OPTIONS -o OUT [-- COMMAND ARGS]`.
    fn args(&self) -> Vec<OsString> {
        let mut args = self.global.clone();
        args.extend(self.subcommand.iter().cloned());
        args.extend(["-o".into(), self.out.clone().into_os_string()]);
        if !self.target.is_empty() {
            args.push("--".into());
            args.extend(self.target.iter().cloned());
        }
        args
    }

    /// The command line it stands for.
    fn command_line(&self) -> Command {
        let mut cmd = Command::new(modelprobe_bin());
        cmd.args(self.args());
        for (key, value) in &self.env {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        cmd
    }

    /// Runs it to its end, whatever its exit status, watching the BPF programs it holds.
    pub fn finish(self) -> Recorded {
        let run = run_agent(&mut self.command_line(), self.limit);
        Recorded {
            status: run.output.status,
            stdout: String::from_utf8_lossy(&run.output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&run.output.stderr).into_owned(),
            programs: run.programs,
            out: self.out,
        }
    }

    /// Runs it to its end; panics with its stderr unless it exited 0.
    pub fn expect_success(self) -> Recorded {
        let r = self.finish();
        assert!(
            r.status.success(),
            "modelprobe failed ({}): {}",
            r.status,
            r.stderr
        );
        r
    }
}

/// A finished [`Session`]: its exit status and output, and readers of what it wrote.
pub struct Recorded {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    programs: BTreeSet<u32>,
    out: PathBuf,
}

impl Recorded {
    /// Its exit status.
    pub fn status(&self) -> ExitStatus {
        self.status
    }

    /// Its exit code (`None` if a signal ended it).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Its stdout (in `run`, the command's own stdout passes through it).
    pub fn stdout(&self) -> &str {
        &self.stdout
    }

    /// Its stderr: the summary and the agent's log lines.
    pub fn stderr(&self) -> &str {
        &self.stderr
    }

    /// Ids of the BPF programs it was seen holding.
    pub fn programs(&self) -> &BTreeSet<u32> {
        &self.programs
    }

    /// Its output directory (`-o`).
    pub fn out_dir(&self) -> &Path {
        &self.out
    }

    /// `recording.json`, parsed.
    pub fn recording(&self) -> serde_json::Value {
        read_recording(&self.out)
    }

    /// The folded-stacks file `name` (`stacks.folded`, `offcpu.folded`, `gpu.folded`) as
    /// `(stack, count)` pairs.
    pub fn folded(&self, name: &str) -> Vec<(String, u64)> {
        read_folded(&self.out.join(name))
    }

    /// The rows of section `id` of `modelprobe report --json` of its output.
    pub fn report_rows(&self, id: &str) -> Vec<Vec<serde_json::Value>> {
        report_rows(&self.out, id)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::Session;

    /// Its arguments, space-separated.
    fn line(s: &Session) -> String {
        let args: Vec<_> = s
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        args.join(" ")
    }

    #[test]
    fn run_puts_global_options_first_and_the_command_after_the_output() {
        let s = Session::run(Path::new("/tmp/out"), &["--off-cpu"])
            .global(&["--config", "c.yaml"])
            .command("sh", &["-c", "true"]);
        assert_eq!(
            line(&s),
            "--config c.yaml run --off-cpu -o /tmp/out -- sh -c true"
        );
    }

    #[test]
    fn attach_names_the_pid_and_has_no_command() {
        let s = Session::attach(Path::new("/tmp/out"), 42, &["--duration", "2s"]);
        assert_eq!(line(&s), "attach --pid 42 --duration 2s -o /tmp/out");
    }
}
