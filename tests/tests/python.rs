//! Python frames in every stack, for real, as root: every CPython 3.9+ on the machine (pyenv's
//! shared builds and Debian's static `python3.11`) against py-spy on the same script, attach
//! to a running thread pool with off-CPU time, numpy's BLAS under the Python line that called
//! it, and a CUDA launch (the stand-in runtime, through ctypes) whose stack names its Python
//! caller.
use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use modelprobe_tests::{
    bpf_lock, fixture_lib_dir, frame_names, missing, read_recording, require_bpf, run_with_timeout,
    scratch_dir, tools_venv, KillOnDrop, Session,
};

/// The ratio workload (`tests/fixtures/python/serve_ratio.py`): `serve()` calls `tokenize()`
/// then `attention()`, three quarters of the Python time in `attention()`.
fn ratio_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/python/serve_ratio.py")
}

/// The interpreters to test: pyenv's CPython 3.9 and later, and Debian's static build.
fn interpreters() -> Vec<PathBuf> {
    let mut found: Vec<((u32, u32), PathBuf)> = std::fs::read_dir("/root/.pyenv/versions")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let mut v = name.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            let version = (v.next()?, v.next()?);
            let python = e.path().join("bin/python3");
            (version >= (3, 9) && python.exists()).then_some((version, python))
        })
        .collect();
    found.sort();
    let mut list: Vec<PathBuf> = found.into_iter().map(|(_, p)| p).collect();
    let debian = PathBuf::from("/usr/bin/python3.11");
    if debian.exists() {
        list.push(debian);
    }
    list
}

/// py-spy from `target/py-numpy` (made by `cargo xtask test`).
fn py_spy() -> Option<PathBuf> {
    let bin = tools_venv()?.join("bin/py-spy");
    bin.exists().then_some(bin)
}

/// Writes `text` as `name` in `dir`.
fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// (weight of `attention`, weight of `tokenize`) in folded stacks: the samples whose
/// innermost Python function each is.
fn shares(folded: &[(String, u64)]) -> (u64, u64) {
    let (mut a, mut t) = (0, 0);
    for (stack, n) in folded {
        if stack.contains("attention (") {
            a += n;
        } else if stack.contains("tokenize (") {
            t += n;
        }
    }
    (a, t)
}

/// py-spy's folded stacks for the ratio script under `python`.
fn py_spy_folded(spy: &Path, python: &Path, script: &Path, out: &Path) -> Vec<(String, u64)> {
    let raw = out.join("py-spy.txt");
    let o = run_with_timeout(
        Command::new(spy)
            .args(["record", "-r", "199", "-f", "raw", "-o"])
            .arg(&raw)
            .arg("--")
            .arg(python)
            .arg(script)
            .args(["--seconds", "3"]),
        Duration::from_secs(60),
    );
    assert!(
        o.status.success(),
        "py-spy failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    modelprobe_tests::read_folded(&raw)
}

#[test]
fn python_functions_in_every_interpreter_match_py_spy() {
    if !require_bpf("python_functions_in_every_interpreter_match_py_spy") {
        return;
    }
    let Some(spy) = py_spy() else {
        return missing("py-spy (target/py-numpy)");
    };
    let pythons = interpreters();
    if pythons.len() < 5 {
        return missing("pyenv's CPython 3.9 to 3.13");
    }
    let _bpf = bpf_lock();
    let mut failures = Vec::new();
    for python in &pythons {
        let tag = python.to_string_lossy().replace('/', "_");
        let out = scratch_dir(&format!("python-{tag}"));
        let script = ratio_script();
        let r = Session::run(&out.join("rec"), &["--freq", "199"])
            .command(python, &[script.to_str().unwrap(), "--seconds", "3"])
            .expect_success();
        let folded = r.folded("stacks.folded");
        let all: u64 = folded.iter().map(|(_, n)| n).sum();
        let with_python: u64 = folded
            .iter()
            .filter(|(s, _)| s.contains(".py:"))
            .map(|(_, n)| n)
            .sum();
        // The whole chain, in order, outermost first.
        let chained = folded.iter().any(|(s, _)| {
            let at = |f: &str| s.find(f);
            matches!((at("<module> ("), at(";serve ("), at(";attention (")),
                (Some(m), Some(s), Some(a)) if m < s && s < a)
        });
        // The recording says which interpreter it read, though the process has exited.
        let rec = r.recording();
        let version = rec["meta"]["python"]["interpreters"][0]["version"]
            .as_str()
            .unwrap_or("none")
            .to_string();
        let (a, t) = shares(&folded);
        let ours = a as f64 / (a + t).max(1) as f64;
        let (sa, st) = shares(&py_spy_folded(&spy, python, &script, &out));
        let theirs = sa as f64 / (sa + st).max(1) as f64;
        let line = format!(
            "{} (CPython {version}): {with_python}/{all} samples with Python frames ({:.1}%); \
             attention share {:.1}% (py-spy {:.1}%, {sa}+{st} samples)",
            python.display(),
            100.0 * with_python as f64 / all.max(1) as f64,
            100.0 * ours,
            100.0 * theirs
        );
        eprintln!("{line}");
        if all < 200
            || !version.starts_with("3.")
            || (with_python as f64) < 0.9 * all as f64
            || !chained
            || sa + st < 200
            || (ours - theirs).abs() > 0.2 * theirs
        {
            failures.push(format!("{line}; chained: {chained}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A thread pool of CPU workers, a sleeper and a thread waiting on a lock the main thread
/// holds, all in Python functions of their own.
const POOL_SCRIPT: &str = r#"import sys, threading, time
from concurrent.futures import ThreadPoolExecutor
lock = threading.Lock()
def worker_cpu(seconds):
    end = time.time() + seconds
    s = 0
    while time.time() < end:
        for i in range(2000):
            s += i * i % 7
    return s
def sleeper(seconds):
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(0.05)
def waiter(seconds):
    end = time.time() + seconds
    while time.time() < end:
        if lock.acquire(timeout=0.2):
            lock.release()
def main(seconds):
    lock.acquire()
    threading.Thread(target=sleeper, args=(seconds,)).start()
    threading.Thread(target=waiter, args=(seconds,)).start()
    with ThreadPoolExecutor(3) as pool:
        for _ in range(3):
            pool.submit(worker_cpu, seconds)
main(float(sys.argv[1]))
"#;

#[test]
fn attach_to_a_thread_pool_names_cpu_and_blocked_python_functions() {
    if !require_bpf("attach_to_a_thread_pool_names_cpu_and_blocked_python_functions") {
        return;
    }
    let python = PathBuf::from("/root/.pyenv/versions")
        .read_dir()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/python3"))
        .find(|p| p.to_string_lossy().contains("/3.12"));
    let Some(python) = python else {
        return missing("pyenv's CPython 3.12");
    };
    let _bpf = bpf_lock();
    let out = scratch_dir("python-pool");
    let script = script(&out, "pool.py", POOL_SCRIPT);
    let mut target = KillOnDrop(
        Command::new(&python)
            .arg(&script)
            .arg("30")
            .spawn()
            .expect("starting python"),
    );
    // Mid-run: the interpreter, its threads and their frames all exist before the agent.
    std::thread::sleep(Duration::from_millis(1500));
    let r = Session::attach(
        &out.join("rec"),
        target.0.id(),
        &["--duration", "3s", "--off-cpu"],
    )
    .expect_success();
    let _ = target.0.kill();
    let rec = read_recording(r.out_dir());

    // CPU: every sample of a Python thread names its function; three workers among them.
    let mut worker_tids = BTreeSet::new();
    let (mut all, mut with_python) = (0u64, 0u64);
    let frames = rec["frames"].as_array().expect("frames");
    let python_frame = |i: &serde_json::Value| {
        frames[i.as_u64().unwrap() as usize]["kind"].as_str() == Some("python")
    };
    for s in rec["samples"].as_array().expect("samples") {
        if s["kind"] != "cpu" {
            continue;
        }
        let stack = s["stack"].as_u64().unwrap();
        let ids = rec["stacks"][stack as usize].as_array().unwrap();
        all += 1;
        if ids.iter().any(python_frame) {
            with_python += 1;
        }
        if frame_names(&rec, stack)
            .iter()
            .any(|f| f.starts_with("worker_cpu ("))
        {
            worker_tids.insert(s["tid"].as_u64().unwrap());
        }
    }
    eprintln!(
        "pool: {with_python}/{all} CPU samples with Python frames, workers on threads {worker_tids:?}"
    );
    assert!(all >= 200, "too few CPU samples: {all}");
    assert!(
        with_python as f64 >= 0.9 * all as f64,
        "{with_python}/{all} CPU samples with Python frames"
    );
    assert_eq!(worker_tids.len(), 3, "worker threads: {worker_tids:?}");

    // Off-CPU: the sleeper in time.sleep, the waiter on the lock, each under its function.
    let off = r.folded("offcpu.folded");
    let under = |func: &str, native: &[&str]| -> u64 {
        off.iter()
            .filter(|(s, _)| s.contains(func) && native.iter().any(|n| s.contains(n)))
            .map(|(_, n)| n)
            .sum()
    };
    let slept = under(";sleeper (", &["sleep"]);
    let waited = under(";waiter (", &["lock", "futex"]);
    eprintln!("pool: sleeper blocked {slept} us in sleep, waiter {waited} us on the lock");
    // Off-CPU weights are microseconds; each thread blocks for most of the 3 s.
    assert!(slept > 1_500_000, "sleeper: {slept} us");
    assert!(waited > 1_500_000, "waiter: {waited} us");
    // Blocked stacks without Python frames would be eval-loop frames left unreplaced.
    let bare: u64 = off
        .iter()
        .filter(|(s, _)| s.contains("_PyEval_EvalFrameDefault"))
        .map(|(_, n)| n)
        .sum();
    let total: u64 = off.iter().map(|(_, n)| n).sum();
    assert!(
        bare * 100 <= total,
        "{bare} of {total} us blocked without Python frames"
    );
}

#[test]
fn numpy_matmul_sits_under_the_python_line_that_called_it() {
    if !require_bpf("numpy_matmul_sits_under_the_python_line_that_called_it") {
        return;
    }
    let Some(venv) = tools_venv() else {
        return missing("target/py-numpy");
    };
    let _bpf = bpf_lock();
    let out = scratch_dir("python-numpy");
    let script = script(
        &out,
        "layer.py",
        "import sys, time, numpy as np\n\
         def matmul_layer(a):\n    return a @ a\n\
         def forward(seconds):\n    a = np.random.rand(300, 300)\n    end = time.time() + seconds\n    \
         while time.time() < end:\n        matmul_layer(a)\n\
         forward(float(sys.argv[1]))\n",
    );
    let r = Session::run(&out.join("rec"), &["--freq", "199"])
        .command(venv.join("bin/python"), &[script.to_str().unwrap(), "3"])
        .env("OPENBLAS_NUM_THREADS", "1")
        .expect_success();
    let folded = r.folded("stacks.folded");
    let (mut under, mut all) = (0, 0);
    for (stack, n) in &folded {
        let Some(blas) = stack.find(";dgemm_") else {
            continue;
        };
        all += n;
        // Outermost first: forward, then matmul_layer, then (below it) the BLAS kernel.
        match (stack.find(";forward ("), stack.find(";matmul_layer (")) {
            (Some(f), Some(m)) if f < m && m < blas => under += n,
            _ => {}
        }
    }
    eprintln!("numpy: {under}/{all} BLAS samples under matmul_layer()");
    assert!(all >= 100, "too few samples in dgemm: {all}");
    assert!(
        under as f64 >= 0.9 * all as f64,
        "{under}/{all} BLAS samples under forward() -> matmul_layer()"
    );
}

#[test]
fn a_cuda_launch_from_python_names_the_python_line() {
    if !require_bpf("a_cuda_launch_from_python_names_the_python_line") {
        return;
    }
    let Some(python) = interpreters()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/3.12") || p.to_string_lossy().contains("/3.11"))
    else {
        return missing("pyenv's CPython 3.11 or 3.12");
    };
    let _bpf = bpf_lock();
    let out = scratch_dir("python-cuda");
    let cudart = fixture_lib_dir().join("cuda/libcudart.so.12");
    let script = script(
        &out,
        "launch.py",
        "import ctypes, sys, time\n\
         class dim3(ctypes.Structure):\n    _fields_ = [('x', ctypes.c_uint), ('y', ctypes.c_uint), ('z', ctypes.c_uint)]\n\
         rt = ctypes.CDLL(sys.argv[1])\n\
         rt.cudaLaunchKernel.argtypes = [ctypes.c_void_p, dim3, dim3, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]\n\
         kernel = ctypes.cast(rt.cudaGetDevice, ctypes.c_void_p)\n\
         def launch_step(i):\n    return rt.cudaLaunchKernel(kernel, dim3(64, 1, 1), dim3(128, 1, 1), None, 0, None)\n\
         def decode(n):\n    for i in range(n):\n        launch_step(i)\n\
         time.sleep(3)\n\
         decode(200)\n",
    );
    let r = Session::run(&out.join("rec"), &[])
        .command(
            &python,
            &[script.to_str().unwrap(), cudart.to_str().unwrap()],
        )
        .env_remove("MODELPROBE_CUPTI")
        .expect_success();
    let rec = read_recording(r.out_dir());
    let probes = rec["probes"].as_array().expect("probes");
    let mut by_top: HashMap<String, u64> = HashMap::new();
    let (mut named, mut all) = (0, 0);
    for span in rec["spans"].as_array().expect("spans") {
        if probes[span["probe"].as_u64().unwrap() as usize]["function"] != "cudaLaunchKernel" {
            continue;
        }
        all += 1;
        let Some(stack) = span["stack"].as_u64() else {
            continue;
        };
        let names = frame_names(&rec, stack);
        let launch = names
            .iter()
            .position(|f| f.starts_with("launch_step (launch.py:"));
        let decode = names
            .iter()
            .position(|f| f.starts_with("decode (launch.py:"));
        if matches!((decode, launch), (Some(d), Some(l)) if d < l) {
            named += 1;
        }
        *by_top
            .entry(names.last().cloned().unwrap_or_default())
            .or_default() += 1;
    }
    eprintln!(
        "cuda: {named}/{all} launch stacks name decode() -> launch_step(); leaves {by_top:?}"
    );
    assert_eq!(all, 200, "cudaLaunchKernel spans");
    assert!(
        named as f64 >= 0.95 * all as f64,
        "{named}/{all} launch stacks name the Python caller"
    );
}

/// A `multiprocessing` child (forked) and a `subprocess` child (exec'd) of a Python parent;
/// the second runs CPython 3.8, whose frames are not read.
const CHILDREN_SCRIPT: &str = r#"import multiprocessing, subprocess, sys, time
def child_work(seconds):
    end = time.time() + seconds
    s = 0
    while time.time() < end:
        for i in range(2000):
            s += i * i % 7
def main(old_python):
    old = subprocess.Popen([old_python, "-c",
        "import time\ndef old_work():\n    end = time.time() + 2\n    while time.time() < end: pass\nold_work()\n"])
    p = multiprocessing.get_context("fork").Process(target=child_work, args=(2,))
    p.start()
    p.join()
    old.wait()
main(sys.argv[1])
"#;

#[test]
fn children_get_python_frames_and_an_old_interpreter_says_why_not() {
    if !require_bpf("children_get_python_frames_and_an_old_interpreter_says_why_not") {
        return;
    }
    let versions = PathBuf::from("/root/.pyenv/versions");
    let find = |v: &str| {
        versions
            .read_dir()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin/python3"))
            .find(|p| p.to_string_lossy().contains(v))
    };
    let (Some(python), Some(old)) = (find("/3.12"), find("/3.8")) else {
        return missing("pyenv's CPython 3.12 and 3.8");
    };
    let _bpf = bpf_lock();
    let out = scratch_dir("python-children");
    let script = script(&out, "children.py", CHILDREN_SCRIPT);
    let r = Session::run(&out.join("rec"), &[])
        .command(&python, &[script.to_str().unwrap(), old.to_str().unwrap()])
        .expect_success();
    let rec = read_recording(r.out_dir());
    let parent = rec["meta"]["target_pid"].as_u64().unwrap();
    // Samples by process: (all, in child_work, with a native eval-loop frame left, as the
    // 3.8 child's are).
    let mut by_pid: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    for s in rec["samples"].as_array().unwrap() {
        if s["kind"] != "cpu" {
            continue;
        }
        let names = frame_names(&rec, s["stack"].as_u64().unwrap());
        let e = by_pid.entry(s["pid"].as_u64().unwrap()).or_default();
        e.0 += 1;
        e.1 += u64::from(names.iter().any(|f| f.starts_with("child_work (")));
        e.2 += u64::from(names.iter().any(|f| f == "_PyEval_EvalFrameDefault"));
    }
    eprintln!("children: samples by pid (all, child_work, eval loop): {by_pid:?}");
    let forked = by_pid
        .iter()
        .filter(|(&pid, _)| pid != parent)
        .find(|(_, c)| c.1 > 0);
    let Some((_, &(all, named, _))) = forked else {
        panic!("no forked child's samples name child_work: {by_pid:?}");
    };
    assert!(
        named * 2 >= all,
        "forked child: {named}/{all} in child_work"
    );
    // The 3.8 child: its native frames, and one line saying why no Python frames.
    let off = rec["meta"]["python"]["off"].to_string();
    assert!(off.contains("CPython 3.8"), "meta.python.off: {off}");
    assert!(
        r.stderr().contains("Python frames are off") && r.stderr().contains("CPython 3.8"),
        "{}",
        r.stderr()
    );
    assert!(
        by_pid.values().any(|c| c.1 == 0 && c.2 > 50),
        "no 3.8 child sampled with its native eval loop: {by_pid:?}"
    );
}

/// Coroutines on an asyncio loop: each task's frames, as Python itself chains them while the
/// task runs, under the loop's own.
const ASYNC_SCRIPT: &str = r#"import asyncio, sys, time
async def fetch(seconds):
    end = time.time() + seconds
    s = 0
    while time.time() < end:
        for i in range(2000):
            s += i * i % 7
        await asyncio.sleep(0)
async def main(seconds):
    await asyncio.gather(fetch(seconds), fetch(seconds))
asyncio.run(main(float(sys.argv[1])))
"#;

#[test]
fn coroutines_show_as_python_chains_them() {
    if !require_bpf("coroutines_show_as_python_chains_them") {
        return;
    }
    let Some(python) = interpreters()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/3.12"))
    else {
        return missing("pyenv's CPython 3.12");
    };
    let _bpf = bpf_lock();
    let out = scratch_dir("python-async");
    let script = script(&out, "tasks.py", ASYNC_SCRIPT);
    let r = Session::run(&out.join("rec"), &["--freq", "199"])
        .command(&python, &[script.to_str().unwrap(), "2"])
        .expect_success();
    let folded = r.folded("stacks.folded");
    let all: u64 = folded.iter().map(|(_, n)| n).sum();
    // The task's coroutine above the loop that runs it: run_forever ... Handle._run, fetch.
    let in_task: u64 = folded
        .iter()
        .filter(
            |(s, _)| match (s.find("._run_once ("), s.find(";fetch (")) {
                (Some(l), Some(f)) => l < f,
                _ => false,
            },
        )
        .map(|(_, n)| n)
        .sum();
    eprintln!("async: {in_task}/{all} samples in fetch() under the event loop");
    assert!(all >= 200, "too few samples: {all}");
    assert!(
        in_task as f64 >= 0.8 * all as f64,
        "{in_task}/{all} samples in fetch() under the loop"
    );
}
