//! Memory: each process's memory over time as counters (`--memory`), and the kernel's OOM
//! killer choosing a target as an event, with the victim's memory then (a real OOM kill in a
//! memory cgroup the test makes).
use std::{path::PathBuf, process::Command, time::Duration};

use modelprobe_tests::*;

/// pyenv's CPython 3.12 (a shared libpython), else Debian's python3.
fn python() -> PathBuf {
    std::fs::read_dir("/root/.pyenv/versions")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/python3"))
        .find(|b| b.to_string_lossy().contains("/3.12") && b.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"))
}

#[test]
fn memory_counters_follow_a_growing_python_list() {
    if !require_bpf("memory_counters_follow_a_growing_python_list") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("memory-counters");
    // 30 x 8 MiB, one every 100 ms, touched so that it is resident.
    let script = "import time\na = []\nfor i in range(30):\n    a.append(bytearray(8 << 20))\n    time.sleep(0.1)\ntime.sleep(1.2)\n";
    let run = run_agent(
        Command::new(modelprobe_bin())
            .args(["run", "--memory", "-o"])
            .arg(out.join("rec"))
            .arg("--")
            .arg(python())
            .args(["-c", script]),
        Duration::from_secs(60),
    );
    run.assert_success();
    let rec = read_recording(&out.join("rec"));
    let pid = rec["meta"]["target_pid"].as_u64().unwrap();
    let series = |name: &str| -> Vec<f64> {
        rec["counters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name && c["pid"] == pid)
            .unwrap_or_else(|| panic!("no {name} counter for {pid}: {}", rec["counters"]))["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_f64().unwrap())
            .collect()
    };
    let rss = series("memory rss");
    let anon = series("memory anon");
    assert!(rss.len() >= 3, "one point a second: {rss:?}");
    let grew = rss.iter().cloned().fold(0.0, f64::max) - rss[0];
    assert!(
        (180.0..=300.0).contains(&grew),
        "RSS grew {grew:.0} MiB (240 allocated): {rss:?}"
    );
    let anon_grew = anon.iter().cloned().fold(0.0, f64::max) - anon[0];
    assert!(
        anon_grew > 180.0,
        "anonymous memory grew {anon_grew:.0} MiB: {anon:?}"
    );
}

/// A memory cgroup limited to `limit` bytes, removed when dropped: (its procs file).
struct MemoryCgroup(PathBuf, PathBuf);

impl MemoryCgroup {
    fn new(name: &str, limit: u64) -> Option<MemoryCgroup> {
        let v1 = PathBuf::from("/sys/fs/cgroup/memory");
        if v1.join("memory.limit_in_bytes").exists() {
            let dir = v1.join(name);
            let _ = std::fs::create_dir(&dir);
            std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).ok()?;
            return Some(MemoryCgroup(dir.clone(), dir.join("cgroup.procs")));
        }
        for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
            let root = PathBuf::from(root);
            let controllers =
                std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "memory") {
                let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
                let dir = root.join(name);
                let _ = std::fs::create_dir(&dir);
                std::fs::write(dir.join("memory.max"), limit.to_string()).ok()?;
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                return Some(MemoryCgroup(dir.clone(), dir.join("cgroup.procs")));
            }
        }
        None
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn the_kernel_oom_killer_choosing_a_target_is_an_event() {
    if !require_bpf("the_kernel_oom_killer_choosing_a_target_is_an_event") {
        return;
    }
    let Some(cgroup) = MemoryCgroup::new(&format!("mp-test-oom-{}", std::process::id()), 64 << 20)
    else {
        return missing("a memory cgroup (v1 or v2) to make");
    };
    let _bpf = bpf_lock();
    let out = scratch_dir("memory-oom");
    // The shell joins the cgroup, then becomes Python, which grows until the kernel kills it.
    let script = format!(
        "echo $$ > {} && exec {} -c 'a = []\nwhile True:\n    a.append(bytearray(4 << 20))\n'",
        cgroup.1.display(),
        python().display()
    );
    let run = run_agent(
        Command::new(modelprobe_bin())
            .args(["run", "-o"])
            .arg(out.join("rec"))
            .args(["--", "sh", "-c", &script]),
        Duration::from_secs(60),
    );
    assert_eq!(
        run.output.status.code(),
        Some(128 + 9),
        "killed: {}",
        run.stderr()
    );
    let rec = read_recording(&out.join("rec"));
    let pid = rec["meta"]["target_pid"].as_u64().unwrap();
    let ooms: Vec<_> = rec["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "oom_kill")
        .collect();
    assert_eq!(ooms.len(), 1, "{}", rec["events"]);
    assert_eq!(ooms[0]["pid"], pid);
    let anon_kib = ooms[0]["value"].as_u64().unwrap();
    assert!(
        (32 << 10..=64 << 10).contains(&anon_kib),
        "the victim's anonymous memory at the kill, near the 64 MiB limit: {anon_kib} KiB"
    );
    let message = ooms[0]["message"].as_str().unwrap();
    assert!(
        message.contains("OOM killer") && message.contains("python3"),
        "{message}"
    );
}
