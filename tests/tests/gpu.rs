//! GPU timings through the CUPTI injection library, as root, without a GPU.
//!
//! `modelprobe run` sets `CUDA_INJECTION64_PATH`; the stand-in `libcuda.so.1` loads the library
//! at `cuInit` as the real driver does; the library finds a libcupti, and the agent asks it for
//! GPU activity. With the stand-in CUPTI (`tests/fixtures/cupti_standin.rs`: real function
//! names, records laid out by the real header structs, GPU timestamps on another clock) the
//! whole path runs: subscribe, API callbacks, activity buffers, clock pairs, the agent's
//! join to eBPF launch stacks, and the outputs. Without it, or with CUPTI "held by another
//! tool", the target must run unchanged and the recording must say why GPU timings are off.
use std::{path::Path, process::Command, time::Duration};

use modelprobe_tests::*;
use serde_json::Value;

/// The stand-in libcupti, built by `cargo test` as an example cdylib.
fn cupti_standin() -> std::path::PathBuf {
    let p = target_dir().join("examples/libcupti_standin.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask test`",
        p.display()
    );
    p
}

/// Runs mp-cuda-app under `modelprobe run` with `env`; returns the recording and stderr.
fn run_cuda_app(
    name: &str,
    env: &[(&str, &std::ffi::OsStr)],
) -> (Value, String, std::path::PathBuf) {
    let fixtures = fixture_lib_dir();
    let out = scratch_dir(name);
    let r = Session::run(&out, &[])
        .command(fixtures.join("mp-cuda-app"), &[])
        .env("MP_CUDA_DIR", fixtures.join("cuda"))
        // On the library path too, so the CUDA pack is attached from the start (finding it
        // by the once-a-second rescan is cuda_pack.rs's test, and slow on a busy machine).
        .env("LD_LIBRARY_PATH", fixtures.join("cuda"))
        // The library appears at cuInit; give the agent time to connect before the calls.
        .env("MP_CUDA_SETTLE_MS", "1500")
        .env_remove("CUDA_INJECTION64_PATH")
        .env_remove("NVTX_INJECTION64_PATH")
        .env_remove("MODELPROBE_CUPTI")
        .envs(env.iter().copied())
        .timeout(Duration::from_secs(90))
        .expect_success();
    let (stdout, stderr) = (r.stdout(), r.stderr());
    // The target's own output is unchanged by the library.
    assert!(
        stdout.contains("done err=1"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    (r.recording(), stderr.to_string(), out)
}

fn ops_of<'a>(rec: &'a Value, kind: &str) -> Vec<&'a Value> {
    rec["gpu"]["ops"]
        .as_array()
        .map(|ops| ops.iter().filter(|o| o["kind"] == kind).collect())
        .unwrap_or_default()
}

#[test]
fn gpu_activity_is_recorded_and_joined_to_launch_stacks() {
    if !require_bpf("gpu_activity_is_recorded_and_joined_to_launch_stacks") {
        return;
    }
    let _bpf = bpf_lock();
    let cupti = cupti_standin();
    let (rec, stderr, out) =
        run_cuda_app("gpu-standin", &[("MODELPROBE_CUPTI", cupti.as_os_str())]);
    assert!(stderr.contains("GPU timings on for pid"), "{stderr}");
    let sources = rec["gpu"]["sources"].as_array().expect("GPU sources");
    assert_eq!(sources.len(), 1, "{sources:?}");
    assert_eq!(sources[0]["state"], "on");
    assert_eq!(sources[0]["cupti_version"], 130001);
    assert_eq!(sources[0]["dropped"], 0);
    // The library gave CUPTI its own clock (CLOCK_MONOTONIC, the recording's) before any
    // record: nothing drifts, nothing is left to align.
    let message = sources[0]["message"].as_str().unwrap();
    assert!(
        message.contains("timestamps on CLOCK_MONOTONIC"),
        "{message}"
    );
    let drift = sources[0]["drift_ns_per_min"]
        .as_f64()
        .expect("drift measured");
    assert!(drift.abs() < 1_000.0, "drift {drift} ns/min");
    // The 5 cudaStreamQuery calls' sync records are left out, and counted.
    assert!(
        message.contains("; 5 synchronization records of queries"),
        "{message}"
    );
    // Callbacks reached the library only for calls that queue GPU work (not the 5
    // cudaGetDevice, nor the queries), and each launch once: the runtime call, not also the
    // driver call it made.
    assert!(
        stderr.contains("cupti-standin: 0 callbacks delivered for calls that queue no GPU work"),
        "{stderr}"
    );
    // Teardown disabled the activity kinds before its forced flush: nothing recorded after
    // the flush can leak into a next session.
    assert!(
        stderr.contains(
            "cupti-standin: at unsubscribe, the last forced flush came with 0 activity kinds \
             enabled"
        ),
        "{stderr}"
    );
    // Subscribed by name (cuptiSubscribe_v2), so another tool's refusal can name modelprobe.
    assert!(
        stderr.contains("cupti-standin: subscriber named modelprobe"),
        "{stderr}"
    );
    // Buffer completion is O(1) and calls nothing back: CUPTI holds its lock meanwhile.
    assert!(
        stderr.contains("cupti-standin: 0 CUPTI calls from inside the buffer completion callback"),
        "{stderr}"
    );
    let launch_apis: Vec<&str> = rec["gpu"]["launches"]
        .as_array()
        .expect("launch records")
        .iter()
        .map(|l| l["api"].as_str().unwrap())
        .collect();
    assert_eq!(
        launch_apis
            .iter()
            .filter(|a| **a == "cudaLaunchKernel")
            .count(),
        5,
        "{launch_apis:?}"
    );
    assert!(
        !launch_apis.contains(&"cuLaunchKernel"),
        "a runtime launch's own driver call recorded again: {launch_apis:?}"
    );

    // Exactly what mp-cuda-app queued: 5 launches, 2 copies of 64 MiB, 1 device sync; the
    // failing cudaMemcpy queued nothing.
    let names = rec["gpu"]["names"].as_array().expect("names");
    let kernels = ops_of(&rec, "kernel");
    assert_eq!(kernels.len(), 5, "{:?}", rec["gpu"]);
    for k in &kernels {
        assert_eq!(
            names[k["name"].as_u64().unwrap() as usize],
            "_Z9vectorAddPKfS0_Pfi"
        );
        assert_eq!(k["grid"], serde_json::json!([256, 2, 1]));
        assert_eq!(k["block"], serde_json::json!([128, 1, 1]));
        assert_eq!(
            k["end_ns"].as_u64().unwrap() - k["start_ns"].as_u64().unwrap(),
            50_000
        );
    }
    let copies = ops_of(&rec, "memcpy");
    let dirs: Vec<(&str, u64)> = copies
        .iter()
        .map(|c| {
            (
                c["direction"].as_str().unwrap(),
                c["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(dirs, [("HtoD", 64 << 20), ("DtoH", 64 << 20)]);
    assert_eq!(ops_of(&rec, "sync").len(), 1);

    // Every op is joined, by correlation id, to the eBPF span of the call that queued it,
    // and moved onto the recording's clock: after its launch, inside the recording.
    let spans = rec["spans"].as_array().expect("spans");
    let probes = rec["probes"].as_array().expect("probes");
    let (start, end) = (
        rec["meta"]["start_ns"].as_u64().unwrap(),
        rec["meta"]["end_ns"].as_u64().unwrap(),
    );
    for op in rec["gpu"]["ops"].as_array().unwrap() {
        let span = &spans[op["launch_span"].as_u64().expect("joined to a span") as usize];
        let func = probes[span["probe"].as_u64().unwrap() as usize]["function"]
            .as_str()
            .unwrap();
        let expected = match op["kind"].as_str().unwrap() {
            "kernel" => "cudaLaunchKernel",
            "memcpy" => "cudaMemcpy",
            _ => "cudaDeviceSynchronize",
        };
        assert_eq!(func, expected, "{op}");
        let op_start = op["start_ns"].as_u64().unwrap();
        assert!(
            op_start >= span["start_ns"].as_u64().unwrap(),
            "GPU start before its launch: {op}"
        );
        assert!(
            op_start >= start && op["end_ns"].as_u64().unwrap() <= end + 1_000_000_000,
            "{op}"
        );
    }
    // Launches and copies kept their calling stack: main called them.
    for k in kernels.iter().chain(&copies) {
        let span = &spans[k["launch_span"].as_u64().unwrap() as usize];
        let stack = frame_names(&rec, span["stack"].as_u64().expect("launch stack kept"));
        assert_eq!(
            stack.last().map(String::as_str),
            Some(if k["kind"] == "kernel" {
                "cudaLaunchKernel"
            } else {
                "cudaMemcpy"
            }),
            "{stack:?}"
        );
        assert!(stack.iter().any(|f| f == "main"), "{stack:?}");
    }
    // The GPU flame graph charges GPU time to those stacks.
    let svg = std::fs::read_to_string(out.join("gpu-flamegraph.svg")).expect("gpu-flamegraph.svg");
    assert!(
        svg.contains("vectorAdd") && svg.contains("main"),
        "flame graph lacks the kernel or its caller"
    );
}

#[test]
fn run_hands_nvtx_to_cupti_through_the_library() {
    if !require_bpf("run_hands_nvtx_to_cupti_through_the_library") {
        return;
    }
    let _bpf = bpf_lock();
    let cupti = cupti_standin();
    let (rec, stderr, _) = run_cuda_app(
        "gpu-nvtx",
        &[
            ("MODELPROBE_CUPTI", cupti.as_os_str()),
            ("MP_NVTX", "1".as_ref()),
        ],
    );
    // The app (doing what NVTX does at its first call) found modelprobe's library through
    // NVTX_INJECTION64_PATH, which handed NVTX's own export table on to CUPTI's injection.
    let lines: Vec<&str> = rec["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    let table = lines
        .iter()
        .find_map(|l| l.strip_prefix("nvtx export table "))
        .unwrap_or_else(|| panic!("no NVTX init in the app's output: {lines:?}\n{stderr}"));
    assert!(lines.contains(&"nvtx injection 1"), "{lines:?}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "cupti-standin: NVTX injection through export table {table}, callbacks table found"
        )),
        "{stderr}"
    );
    // And GPU timings still came, through the same libcupti.
    assert_eq!(ops_of(&rec, "kernel").len(), 5, "{}", rec["gpu"]);
}

#[test]
fn another_tool_taking_the_activity_buffers_over_is_noticed_and_said() {
    if !require_bpf("another_tool_taking_the_activity_buffers_over_is_noticed_and_said") {
        return;
    }
    let _bpf = bpf_lock();
    let cupti = cupti_standin();
    let fixtures = fixture_lib_dir();
    let out = scratch_dir("gpu-takeover");
    // 150 launches 40 ms apart (6 s); before the 25th, the app registers its own activity
    // buffer callbacks, as Kineto does when a torch.profiler trace starts.
    let r = Session::run(&out, &[])
        .command(fixtures.join("mp-cuda-app"), &["--launches", "150"])
        .env("MP_CUDA_DIR", fixtures.join("cuda"))
        .env("LD_LIBRARY_PATH", fixtures.join("cuda"))
        .env("MP_CUDA_SETTLE_MS", "1500")
        .env("MP_LAUNCH_GAP_US", "40000")
        .env("MP_TAKEOVER_AT", "25")
        .env("MODELPROBE_CUPTI", &cupti)
        .env_remove("CUDA_INJECTION64_PATH")
        .env_remove("NVTX_INJECTION64_PATH")
        .timeout(Duration::from_secs(90))
        .expect_success();
    let (stdout, stderr) = (r.stdout(), r.stderr());
    assert!(stdout.contains("took CUPTI over: 0"), "{stdout}\n{stderr}");
    let rec = r.recording();
    let src = &rec["gpu"]["sources"][0];
    assert_eq!(src["state"], "taken-over", "{src}\n{stderr}");
    let message = src["message"].as_str().unwrap();
    assert!(
        message.contains("another tool took CUPTI's process-wide activity buffers over"),
        "{message}"
    );
    // What the session said when it started is kept.
    assert!(message.contains("CUPTI API"), "{message}");
    assert!(
        stderr.contains("another tool took CUPTI's process-wide activity buffers over"),
        "{stderr}"
    );
    // The kernels before the takeover were recorded, the later ones went to the other tool.
    let kernels = ops_of(&rec, "kernel").len();
    assert!((10..=25).contains(&kernels), "{kernels} kernels");
}

#[test]
fn a_child_forked_during_a_session_exits_without_waiting_for_it() {
    if !require_bpf("a_child_forked_during_a_session_exits_without_waiting_for_it") {
        return;
    }
    let _bpf = bpf_lock();
    let cupti = cupti_standin();
    let (rec, stderr, _) = run_cuda_app(
        "gpu-fork-exit",
        &[
            ("MODELPROBE_CUPTI", cupti.as_os_str()),
            ("MP_FORK_EXIT", "1".as_ref()),
        ],
    );
    let line = rec["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(|l| l["message"].as_str())
        .find_map(|l| l.strip_prefix("forked child exited in "))
        .unwrap_or_else(|| panic!("the app forked no child\n{stderr}"))
        .to_string();
    let ms: f64 = line.trim_end_matches(" ms").parse().unwrap();
    // The exit hook waits up to 3 s, but only in the process whose session it is.
    assert!(ms < 1000.0, "the forked child took {ms} ms to exit");
    // The parent's session went on.
    assert_eq!(ops_of(&rec, "kernel").len(), 5, "{}", rec["gpu"]);
}

#[test]
fn cupti_held_by_another_tool_leaves_uprobe_tracing_and_says_so() {
    if !require_bpf("cupti_held_by_another_tool_leaves_uprobe_tracing_and_says_so") {
        return;
    }
    let _bpf = bpf_lock();
    let cupti = cupti_standin();
    let (rec, stderr, _) = run_cuda_app(
        "gpu-busy",
        &[
            ("MODELPROBE_CUPTI", cupti.as_os_str()),
            ("MP_CUPTI_BUSY", "pytorch-kineto".as_ref()),
        ],
    );
    let src = &rec["gpu"]["sources"][0];
    assert_eq!(src["state"], "busy", "{src}");
    // cuptiSubscribe_v2 named the holder, and the message says who it is.
    assert!(
        src["message"]
            .as_str()
            .unwrap()
            .contains("another tool already holds CUPTI (CUPTI for pytorch-kineto)"),
        "{src}"
    );
    assert!(
        stderr.contains("another tool already holds CUPTI"),
        "{stderr}"
    );
    // The other tool's activity buffer callbacks (process-wide) were left alone.
    assert!(
        !stderr.contains("activity buffer callbacks replaced"),
        "{stderr}"
    );
    assert!(ops_of(&rec, "kernel").is_empty());
    // The CUDA calls are still spans (the probe pack does not need CUPTI).
    let launches = rec["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            rec["probes"][s["probe"].as_u64().unwrap() as usize]["function"] == "cudaLaunchKernel"
        })
        .count();
    assert_eq!(launches, 5);
}

#[test]
fn without_a_libcupti_the_target_runs_unchanged_and_the_reason_is_recorded() {
    if !require_bpf("without_a_libcupti_the_target_runs_unchanged_and_the_reason_is_recorded") {
        return;
    }
    let _bpf = bpf_lock();
    if Path::new("/usr/local/cuda").exists() {
        eprintln!("note: a CUDA toolkit is installed here; a real libcupti may be found");
    }
    let (rec, _, _) = run_cuda_app("gpu-no-cupti", &[]);
    let src = &rec["gpu"]["sources"][0];
    if src["state"] == "on" {
        return; // a real CUPTI was found (a machine with CUDA): nothing to check here
    }
    assert_eq!(src["state"], "no-cupti", "{src}");
    assert!(
        src["message"]
            .as_str()
            .unwrap()
            .contains("no usable libcupti"),
        "{src}"
    );
    assert!(rec["gpu"]["ops"].as_array().is_none_or(|o| o.is_empty()));
}

#[test]
fn the_library_in_a_process_without_cuda_says_so_and_stays_harmless() {
    if !require_bpf("the_library_in_a_process_without_cuda_says_so_and_stays_harmless") {
        return;
    }
    let _bpf = bpf_lock();
    let dir = scratch_dir("gpu-lib");
    let written = Command::new(modelprobe_bin())
        .args(["gpu-library", "--dir"])
        .arg(&dir)
        .output()
        .expect("run gpu-library");
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let lib = String::from_utf8(written.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(Path::new(&lib).exists(), "{lib}");
    // Preloaded into the CPU-only workload, the library's initializer starts its listener;
    // the agent reaches it, and it answers that there is no CUDA here.
    let r = Session::run(&scratch_dir("gpu-no-cuda"), &[])
        .workload(&["--seconds", "2"])
        .env("LD_PRELOAD", &lib)
        .expect_success();
    assert!(r.stdout().contains("checksum"), "workload output changed");
    let rec = r.recording();
    let src = &rec["gpu"]["sources"][0];
    assert_eq!(src["state"], "no-cuda", "{src}");
    assert!(
        src["message"]
            .as_str()
            .unwrap()
            .contains("no CUDA in process"),
        "{src}"
    );
    // A bad folder is one clear line and a non-zero exit.
    let bad = Command::new(modelprobe_bin())
        .args(["gpu-library", "--dir", "/proc/nope"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(msg.trim().lines().count(), 1, "{msg}");
}

#[test]
fn an_execd_child_gets_gpu_timings_too() {
    if !require_bpf("an_execd_child_gets_gpu_timings_too") {
        return;
    }
    let _bpf = bpf_lock();
    let fixtures = fixture_lib_dir();
    // The CUDA work happens in a child the shell forks and execs (as vLLM's EngineCore).
    let app = fixtures.join("mp-cuda-app");
    let script = format!("{} && echo child-ok", app.display());
    let r = Session::run(&scratch_dir("gpu-child"), &[])
        .command("sh", &["-c", &script])
        .env("MP_CUDA_DIR", fixtures.join("cuda"))
        .env("LD_LIBRARY_PATH", fixtures.join("cuda"))
        .env("MP_CUDA_SETTLE_MS", "1500")
        .env("MODELPROBE_CUPTI", cupti_standin())
        .env_remove("CUDA_INJECTION64_PATH")
        .timeout(Duration::from_secs(90))
        .expect_success();
    assert!(r.stdout().contains("child-ok"));
    let rec = r.recording();
    let target = rec["meta"]["target_pid"].as_u64().unwrap();
    let src = &rec["gpu"]["sources"][0];
    assert_eq!(src["state"], "on", "{src}");
    assert_ne!(
        src["pid"].as_u64().unwrap(),
        target,
        "the GPU work is the child's"
    );
    assert_eq!(ops_of(&rec, "kernel").len(), 5);
    assert!(ops_of(&rec, "kernel")
        .iter()
        .all(|k| k["pid"] == src["pid"]));
}

#[test]
fn attach_loads_the_library_live_into_a_cuda_process_started_without_it() {
    if !require_bpf("attach_loads_the_library_live_into_a_cuda_process_started_without_it") {
        return;
    }
    let _bpf = bpf_lock();
    attach_live("gpu-live", false);
}

/// A container's shape: the CUDA process has a PID namespace of its own (pid 1 there, its
/// threads numbered from 1), attached from the host by its host pid. The library's socket and
/// its launches' thread ids must still be found and joined.
#[test]
fn attach_reaches_a_cuda_process_in_its_own_pid_namespace() {
    if !require_bpf("attach_reaches_a_cuda_process_in_its_own_pid_namespace") {
        return;
    }
    let _bpf = bpf_lock();
    attach_live("gpu-live-pidns", true);
}

/// Starts `mp-cuda-app` without preparation (in a new PID namespace when `own_pid_ns`), lets
/// `attach` load the GPU library into it live, and checks every kernel came back joined.
fn attach_live(name: &str, own_pid_ns: bool) {
    let fixtures = fixture_lib_dir();
    // Started with no preparation: no CUDA_INJECTION64_PATH. It loads CUDA at once, then
    // waits 3 s before its calls.
    let mut app = if own_pid_ns {
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--kill-child"])
            .arg(fixtures.join("mp-cuda-app"));
        c
    } else {
        Command::new(fixtures.join("mp-cuda-app"))
    };
    app.env("MP_CUDA_DIR", fixtures.join("cuda"))
        .env("MP_CUDA_SETTLE_MS", "3000")
        .env("MODELPROBE_CUPTI", cupti_standin())
        .env_remove("CUDA_INJECTION64_PATH")
        .stdout(std::process::Stdio::piped());
    let mut child = KillOnDrop(app.spawn().expect("start mp-cuda-app"));
    // Wait until the app (under `unshare`: its child) has mapped the driver.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let pid = loop {
        let candidates = if own_pid_ns {
            children_of(child.0.id())
        } else {
            vec![child.0.id()]
        };
        let mapped = candidates.into_iter().find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/maps"))
                .unwrap_or_default()
                .contains("libcuda.so.1")
        });
        if let Some(pid) = mapped {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mp-cuda-app never loaded libcuda"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    if own_pid_ns {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
        assert!(
            nspid.ends_with("\t1"),
            "pid 1 in its own namespace: {nspid}"
        );
    }
    let r = Session::attach(&scratch_dir(name), pid, &[])
        .timeout(Duration::from_secs(90))
        .expect_success();
    let stderr = r.stderr();
    assert!(
        stderr.contains(&format!("loaded the GPU library into pid {pid}")),
        "{stderr}"
    );
    let mut output = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut output).unwrap();
    assert!(
        output.contains("done err=1"),
        "the target's behaviour changed: {output}"
    );
    let rec = r.recording();
    let src = &rec["gpu"]["sources"][0];
    assert_eq!(src["state"], "on", "{src}");
    assert!(
        src["message"]
            .as_str()
            .unwrap()
            .contains("library loaded live"),
        "{src}"
    );
    let kernels = ops_of(&rec, "kernel");
    assert_eq!(kernels.len(), 5, "{:?}", rec["gpu"]);
    assert!(
        kernels.iter().all(|k| k["launch_span"].is_u64()),
        "every kernel joined: {kernels:?}"
    );
}

/// CUPTI 13.0 (what the stand-in says it is) gives CUDA graph launches wrong correlation ids
/// in a process's sessions after the first: a second `attach` draws that graph work without
/// joining it to a launch, and says how many, where the first joined it.
#[test]
fn graph_launches_after_a_first_session_are_not_joined_on_an_old_cupti() {
    if !require_bpf("graph_launches_after_a_first_session_are_not_joined_on_an_old_cupti") {
        return;
    }
    let _bpf = bpf_lock();
    let fixtures = fixture_lib_dir();
    // 1500 graph launches 20 ms apart: about 30 s, more than two sessions' worth (a session's
    // end waits out the kernel's uprobe detach, seconds in this VM on a slow day); killed when
    // the test ends.
    let mut app = Command::new(fixtures.join("mp-cuda-app"));
    app.args(["--launches", "1500"])
        .env("MP_CUDA_DIR", fixtures.join("cuda"))
        .env("MP_CUDA_SETTLE_MS", "300")
        .env("MP_GRAPH", "1")
        .env("MP_LAUNCH_GAP_US", "20000")
        .env("MODELPROBE_CUPTI", cupti_standin())
        .env_remove("CUDA_INJECTION64_PATH")
        .stdout(std::process::Stdio::null());
    let child = KillOnDrop(app.spawn().expect("start mp-cuda-app"));
    let pid = child.0.id();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .contains("libcuda.so.1")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no libcuda in the app"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let session = |name: &str| {
        let r = Session::attach(&scratch_dir(name), pid, &["--duration", "2s"])
            .timeout(Duration::from_secs(60))
            .expect_success();
        let stderr = r.stderr().to_string();
        (r.recording(), stderr)
    };
    let (first, stderr) = session("gpu-graph-first");
    let kernels = ops_of(&first, "kernel");
    assert!(kernels.len() >= 20, "{} kernels\n{stderr}", kernels.len());
    // All joined, but for a launch at the session's edge (called before the library was on).
    let unjoined = kernels.iter().filter(|k| !k["launch"].is_u64()).count();
    assert!(
        unjoined <= 1,
        "the first session joins graph work: {unjoined} of {} not\n{}",
        kernels.len(),
        first["gpu"]["sources"]
    );
    let (second, stderr) = session("gpu-graph-second");
    let kernels = ops_of(&second, "kernel");
    assert!(kernels.len() >= 20, "{} kernels\n{stderr}", kernels.len());
    assert!(
        kernels.iter().all(|k| k["launch"].is_null()),
        "a later session leaves graph work unjoined: {kernels:?}"
    );
    let message = second["gpu"]["sources"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "; {} CUDA graph records not joined to their launch",
            kernels.len()
        )),
        "{message}"
    );
}

/// The pids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn attach_gpu_retract_leaves_a_process_without_cuda_as_it_was() {
    if !require_bpf("attach_gpu_retract_leaves_a_process_without_cuda_as_it_was") {
        return;
    }
    let _bpf = bpf_lock();
    let workload = start_workload(&["--seconds", "30"]);
    let pid = workload.0.id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();
    let options = ["--gpu", "--retract", "--duration", "2s"];
    let r = Session::attach(&scratch_dir("gpu-retract"), pid, &options).expect_success();
    let stderr = r.stderr();
    assert!(stderr.contains("unloaded the GPU library"), "{stderr}");
    let rec = r.recording();
    assert_eq!(rec["gpu"]["sources"][0]["state"], "no-cuda");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        !maps.contains("modelprobe-gpu"),
        "the library is still mapped"
    );
    assert_eq!(fds(), before, "descriptors left in the target");
    assert!(
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .count()
            >= 1
    );
    // --gpu and --no-inject contradict each other: a usage error.
    let bad = Command::new(modelprobe_bin())
        .args(["attach", "--pid", &pid.to_string(), "--gpu", "--no-inject"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
