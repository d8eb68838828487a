//! Which running processes the continuous agent records: by name or command line (regular
//! expressions), by cgroup (a regular expression over `/proc/PID/cgroup`: a container's or a
//! systemd service's, a Kubernetes pod's), and by what they have loaded ("every process that
//! maps libcuda", "every Python": a substring of a mapped file's name). One scan of `/proc`
//! per call; a process that matches any rule is chosen. Kernel threads (no command line) and modelprobe itself never
//! are.
use std::fs;

use regex::Regex;

/// The rules.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Matched against the process's name (`comm`) and its command line.
    pub names: Vec<Regex>,
    /// Matched against the file names the process maps (`libcuda`, `libpython`).
    pub loads: Vec<String>,
    /// Matched against the process's cgroup paths (each line of `/proc/PID/cgroup`).
    pub cgroups: Vec<Regex>,
}

impl Selector {
    /// True when no rule is given (the agent refuses to select everything).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.loads.is_empty() && self.cgroups.is_empty()
    }

    /// The rules in one line, for the log.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        parts.extend(self.names.iter().map(|r| format!("match {r}")));
        parts.extend(self.cgroups.iter().map(|r| format!("cgroup {r}")));
        parts.extend(self.loads.iter().map(|l| format!("loads {l}")));
        parts.join(", ")
    }

    /// Whether a process with this name, command line, cgroup file text and maps text is
    /// chosen (the files are read only when a rule needs them).
    pub fn matches(
        &self,
        comm: &str,
        cmdline: &str,
        cgroup: impl FnOnce() -> String,
        maps: impl FnOnce() -> String,
    ) -> bool {
        if self
            .names
            .iter()
            .any(|r| r.is_match(comm) || r.is_match(cmdline))
        {
            return true;
        }
        if !self.cgroups.is_empty() {
            let text = cgroup();
            let paths = text.lines().filter_map(|l| l.splitn(3, ':').nth(2));
            if paths
                .into_iter()
                .any(|p| self.cgroups.iter().any(|r| r.is_match(p)))
            {
                return true;
            }
        }
        if self.loads.is_empty() {
            return false;
        }
        let maps = maps();
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter_map(|path| path.rsplit('/').next())
            .any(|file| self.loads.iter().any(|want| file.contains(want.as_str())))
    }

    /// The processes chosen now, in pid order; `except` (the agent's own children, say) never.
    pub fn select(&self, except: &[u32]) -> Vec<u32> {
        let me = std::process::id();
        let mut out = Vec::new();
        for pid in crate::target::all_pids() {
            if pid == me || except.contains(&pid) {
                continue;
            }
            let Some(cmdline) = crate::target::cmdline(pid) else {
                continue; // a kernel thread, or gone
            };
            let comm = crate::target::comm(pid).unwrap_or_default();
            let cgroup = || fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            let maps = || fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            if self.matches(&comm, &cmdline, cgroup, maps) {
                out.push(pid);
            }
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_command_lines_and_loaded_libraries_choose_processes() {
        let s = Selector {
            names: vec![
                Regex::new("^vllm$").unwrap(),
                Regex::new("serve\\.py").unwrap(),
            ],
            loads: vec!["libcuda".into()],
            cgroups: vec![Regex::new("kubepods.*pod1234").unwrap()],
        };
        let none = String::new;
        assert!(s.matches("vllm", "/usr/bin/vllm serve", none, none));
        assert!(s.matches("python3", "python3 serve.py --port 8000", none, none));
        assert!(!s.matches("python3", "python3 train.py", none, none));
        let maps = || {
            "7f00-7f10 r-xp 00000000 08:01 42 /usr/lib/x86_64-linux-gnu/libcuda.so.550.54\n"
                .to_string()
        };
        assert!(s.matches("python3", "python3 train.py", none, maps));
        let pod =
            || "0::/kubepods.slice/kubepods-pod1234.slice/cri-containerd-ab.scope\n".to_string();
        assert!(s.matches("python3", "python3 train.py", pod, none));
        let other = || "0::/system.slice/ssh.service\n".to_string();
        assert!(!s.matches("python3", "python3 train.py", other, none));
        assert!(!Selector::default().matches("x", "x", none, none));
        assert!(Selector::default().is_empty());
    }

    #[test]
    fn a_live_process_is_found_by_its_command_line_and_the_agent_never() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let s = Selector {
            names: vec![Regex::new("^sleep 30$").unwrap()],
            ..Selector::default()
        };
        // Until the child has exec'd `sleep` (its command line is the test's before that).
        let started = std::time::Instant::now();
        let mut chosen = s.select(&[]);
        while !chosen.contains(&child.id()) && started.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            chosen = s.select(&[]);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(chosen.contains(&child.id()), "{chosen:?}");
        let me = Selector {
            names: vec![Regex::new(".").unwrap()],
            ..Selector::default()
        };
        assert!(!me.select(&[]).contains(&std::process::id()));
    }
}
