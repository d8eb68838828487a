//! `modelprobe stacks --pid N`: every thread's stack now, native and Python, holding the
//! process only a few milliseconds, which goes on unharmed.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use modelprobe_tests::*;

fn stacks(pid: u32) -> serde_json::Value {
    let out = run_with_timeout(
        Command::new(modelprobe_bin())
            .args(["stacks", "--json", "--pid"])
            .arg(pid.to_string()),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "stacks: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn names(thread: &serde_json::Value) -> Vec<String> {
    thread["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn native_threads_are_whole_and_named() {
    if !require_bpf("native_threads_are_whole_and_named") {
        return;
    }
    let workload = start_workload(&["--seconds", "30"]);
    std::thread::sleep(Duration::from_millis(300));
    let snap = stacks(workload.0.id());
    let threads = snap["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 2, "{snap}");
    let sleeper = threads
        .iter()
        .find(|t| t["name"] == "mp-sleeper")
        .unwrap_or_else(|| panic!("{snap}"));
    let frames = names(sleeper);
    assert_eq!(frames[0], "mp_sleep", "{frames:?}");
    assert!(
        frames.iter().any(|f| f == "start_thread" || f == "clone3"),
        "{frames:?}"
    );
    assert_eq!(sleeper["state"], "S");
    assert_eq!(sleeper["whole"], true);
    let main = threads.iter().find(|t| t["name"] == "mp-workload").unwrap();
    let frames = names(main);
    assert!(
        frames.iter().any(|f| f == "mp_hot_a" || f == "mp_hot_b"),
        "{frames:?}"
    );
    assert!(frames
        .iter()
        .any(|f| f == "__libc_start_main_impl" || f == "__libc_start_main"));
    let pause = snap["pause"].as_u64().unwrap();
    eprintln!("stacks: process held {pause} us");
    assert!(pause < 50_000, "held {pause} us");
}

/// pyenv's CPython 3.9 and later.
fn interpreters() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/root/.pyenv/versions")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let mut v = name.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            (v.next(), v.next()).0 == Some(3)
                && name
                    .split('.')
                    .nth(1)
                    .and_then(|m| m.parse::<u32>().ok())
                    .is_some_and(|m| m >= 9)
        })
        .map(|e| e.path().join("bin/python3"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found
}

#[test]
fn eight_python_threads_each_name_their_function_in_every_interpreter() {
    if !require_bpf("eight_python_threads_each_name_their_function_in_every_interpreter") {
        return;
    }
    let pythons = interpreters();
    if pythons.is_empty() {
        return missing("pyenv's CPython 3.9 to 3.13");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/python/eight_threads.py");
    let mut pauses = Vec::new();
    for python in &pythons {
        let mut child = KillOnDrop(
            Command::new(python)
                .arg(&script)
                .arg("3")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut out = BufReader::new(child.0.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "{python:?}");
        let snap = stacks(child.0.id());
        assert_eq!(snap["python"], true, "{python:?}");
        let threads = snap["threads"].as_array().unwrap();
        assert_eq!(threads.len(), 9, "{python:?}: {snap}");
        // Each thread's Python functions (names without their "(file:line)").
        let functions: Vec<Vec<String>> = threads
            .iter()
            .map(|t| {
                t["frames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|f| f["kind"] == "python")
                    .filter_map(|f| f["name"].as_str()?.split(" (").next().map(str::to_string))
                    .collect()
            })
            .collect();
        for i in 0..8 {
            let want = format!("worker_{i}");
            let holders = functions.iter().filter(|f| f.contains(&want)).count();
            assert_eq!(holders, 1, "{python:?}: {want} in {functions:?}");
        }
        assert!(
            functions.iter().any(|f| f.contains(&"main".to_string())),
            "{python:?}: {functions:?}"
        );
        // Every thread's Python frames end at the module level or the thread's bootstrap.
        for f in &functions {
            let outer = f.last().map(String::as_str);
            assert!(
                matches!(outer, Some("<module>" | "_bootstrap" | "Thread._bootstrap")),
                "{python:?}: {f:?}"
            );
        }
        pauses.push(snap["pause"].as_u64().unwrap());
        // The process goes on and finishes its work.
        let mut rest = String::new();
        out.read_line(&mut rest).unwrap();
        assert_eq!(
            rest.trim(),
            "done True True True True True True True True",
            "{python:?}"
        );
        assert!(child.0.wait().unwrap().success());
    }
    eprintln!("stacks: held {pauses:?} us (9 threads), one per interpreter");
    assert!(pauses.iter().all(|&p| p < 50_000), "{pauses:?}");
}
