//! Native stacks without frame pointers, as root, on the real kernel: `mp-nofp-app` (built with
//! `-O2 -fomit-frame-pointer`, like glibc and most wheels) burns or blocks at the end of known
//! call chains, and modelprobe's share of whole stacks (reaching `_start`) with the expected
//! callers is held to at least 95% and to at least that of `perf record --call-graph dwarf`
//! (Debian's linux-perf) on the same binary, in the same test.
use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use modelprobe_tests::*;

fn nofp_app() -> PathBuf {
    fixture_lib_dir().join("mp-nofp-app")
}

/// Share (weighted) of the stacks whose innermost user frame is `leaf` that are whole: they
/// reach `_start` and hold `callers` in this order. `(whole, all)`.
fn whole_share(folded: &[(String, u64)], leaf: &str, callers: &[&str]) -> (u64, u64) {
    whole_share_from(folded, "_start", leaf, callers)
}

/// [`whole_share`] for stacks whose outermost frame is `root` (`clone3` for a thread).
fn whole_share_from(
    folded: &[(String, u64)],
    root: &str,
    leaf: &str,
    callers: &[&str],
) -> (u64, u64) {
    let mut whole = 0;
    let mut all = 0;
    for (stack, n) in folded {
        let frames: Vec<&str> = stack
            .split(';')
            .skip(1) // the process name
            // Kernel frames, and functions inlined into the leaf, are not user frames of their own.
            .filter(|f| !f.ends_with("_[k]") && !f.ends_with("_[i]"))
            .collect();
        if frames.last() != Some(&leaf) {
            continue;
        }
        all += n;
        let mut rest = frames.iter();
        let in_order = callers.iter().all(|c| rest.any(|f| f == c));
        if frames.first() == Some(&root) && in_order {
            whole += n;
        }
    }
    (whole, all)
}

/// The same share in `perf record --call-graph dwarf` samples of the same command.
fn perf_whole_share(args: &[&str], leaf: &str, callers: &[&str]) -> (u64, u64) {
    let data = scratch_dir("native-unwind-perf").join("perf.data");
    let out = run_with_timeout(
        Command::new("perf")
            .args([
                "record",
                "-q",
                "-e",
                "cpu-clock",
                "-F",
                "199",
                "--call-graph",
            ])
            .args(["dwarf", "-o"])
            .arg(&data)
            .arg("--")
            .arg(nofp_app())
            .args(args),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "perf record failed (install linux-perf): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Read as it comes (a pipe left full would stall perf): it takes well under a second.
    let script = Command::new("perf")
        .args(["script", "--no-inline", "-F", "ip,sym", "-i"])
        .arg(&data)
        .output()
        .expect("running perf script");
    let text = String::from_utf8_lossy(&script.stdout);
    // One block per sample, innermost first; fold it root first like ours.
    let folded: Vec<(String, u64)> = text
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut frames: Vec<&str> = block
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .collect();
            frames.reverse();
            (format!("mp-nofp-app;{}", frames.join(";")), 1)
        })
        .collect();
    whole_share(&folded, leaf, callers)
}

/// Attaches to `mp-nofp-app ARGS` for `seconds` and returns the recording's folded stacks
/// (`offcpu.folded` when `off_cpu`).
fn record(args: &[&str], seconds: u32, off_cpu: bool) -> (Vec<(String, u64)>, Recorded) {
    let mut cmd = Command::new(nofp_app());
    cmd.args(args);
    record_command(args[0], cmd, Duration::from_millis(200), seconds, off_cpu)
}

/// Starts `cmd`, lets it run for `settle`, attaches to it for `seconds` and returns the
/// recording's folded stacks (`offcpu.folded` when `off_cpu`).
fn record_command(
    name: &str,
    mut cmd: Command,
    settle: Duration,
    seconds: u32,
    off_cpu: bool,
) -> (Vec<(String, u64)>, Recorded) {
    let out = scratch_dir(&format!("native-unwind-{name}"));
    let mut target = KillOnDrop(cmd.spawn().expect("starting the workload"));
    std::thread::sleep(settle);
    let duration = format!("{seconds}s");
    let mut opts = vec!["--duration", &duration, "--freq", "199"];
    if off_cpu {
        opts.push("--off-cpu");
    }
    let r = Session::attach(&out, target.0.id(), &opts).finish();
    let _ = target.0.kill();
    let stderr = r.stderr();
    assert_eq!(r.code(), Some(0), "attach failed: {stderr}");
    let file = if off_cpu {
        "offcpu.folded"
    } else {
        "stacks.folded"
    };
    (r.folded(file), r)
}

fn assert_whole(what: &str, (whole, all): (u64, u64), perf: Option<(u64, u64)>) {
    assert!(all > 0, "{what}: no stack ends in the expected leaf");
    let ours = whole as f64 / all as f64;
    assert!(
        ours >= 0.95,
        "{what}: {whole} of {all} stacks whole ({:.1}%), want >= 95%",
        100.0 * ours
    );
    if let Some((pw, pa)) = perf {
        assert!(pa > 0, "{what}: perf recorded no stack in the leaf");
        let theirs = pw as f64 / pa as f64;
        assert!(
            ours >= theirs,
            "{what}: {:.1}% whole stacks, perf --call-graph dwarf {:.1}% ({pw}/{pa})",
            100.0 * ours,
            100.0 * theirs
        );
        eprintln!(
            "{what}: modelprobe {:.1}% ({whole}/{all}), perf --call-graph dwarf {:.1}% ({pw}/{pa})",
            100.0 * ours,
            100.0 * theirs
        );
    }
}

#[test]
fn call_chains_through_glibc_are_whole_without_frame_pointers() {
    if !require_bpf("call_chains_through_glibc_are_whole_without_frame_pointers") {
        return;
    }
    let _bpf = bpf_lock();
    let chain = ["main", "nofp_outer", "nofp_middle"];
    let (folded, r) = record(&["chain", "30"], 2, false);
    let perf = perf_whole_share(&["chain", "2"], "nofp_leaf", &chain);
    assert_whole(
        "chain",
        whole_share(&folded, "nofp_leaf", &chain),
        Some(perf),
    );
    // The tables were used, and the recording says what they held.
    let rec = read_recording(r.out_dir());
    let unwind = &rec["meta"]["unwind"];
    assert!(unwind["objects"].as_u64().unwrap() >= 3, "{unwind}");
    assert!(unwind["rows"].as_u64().unwrap() > 1000, "{unwind}");

    // A comparator called back from glibc's qsort: its callers go through libc's frames.
    let sort = ["main", "nofp_sort", "__GI___qsort_r"];
    let (folded, _) = record(&["qsort", "30"], 2, false);
    let perf = perf_whole_share(&["qsort", "2"], "nofp_compare", &["main", "nofp_sort"]);
    assert_whole(
        "qsort",
        whole_share(&folded, "nofp_compare", &sort),
        Some(perf),
    );
}

#[test]
fn rust_without_frame_pointers_is_whole_through_std() {
    if !require_bpf("rust_without_frame_pointers_is_whole_through_std") {
        return;
    }
    let _bpf = bpf_lock();
    let mut cmd = Command::new(fixture_lib_dir().join("mp-nofp-rust"));
    cmd.arg("30");
    let (folded, _) = record_command("rust", cmd, Duration::from_millis(200), 2, false);
    // The comparator is called back from std's sort (whose frames are inlined or not, as the
    // compiler chose); Rust's runtime, main and the two callers must be there.
    let (whole, all) = whole_share(
        &folded,
        "nofp_rust::rust_compare",
        &[
            "std::rt::lang_start_internal",
            "nofp_rust::rust_outer",
            "nofp_rust::rust_sort",
        ],
    );
    assert!(all >= 100, "too few samples in rust_compare: {all}");
    // The stack is whole when it reaches the process entry, through Rust's runtime.
    assert_whole("Rust sort_by callback", (whole, all), None);
}

#[test]
fn recursion_threads_signal_handlers_and_dlopened_code_are_whole() {
    if !require_bpf("recursion_threads_signal_handlers_and_dlopened_code_are_whole") {
        return;
    }
    let _bpf = bpf_lock();
    // 60 nested calls: every one of them is in the stack.
    let (folded, _) = record(&["recurse", "30", "60"], 2, false);
    let recursion = ["nofp_recurse"; 60];
    assert_whole(
        "recursion",
        whole_share(&folded, "nofp_leaf", &recursion),
        None,
    );
    let max_depth = folded
        .iter()
        .map(|(s, _)| s.split(';').filter(|f| *f == "nofp_recurse").count())
        .max()
        .unwrap_or(0);
    assert_eq!(max_depth, 60, "recursion depth seen");

    // Deeper than the 127-frame limit: cut, and counted as cut.
    let (folded, r) = record(&["recurse", "30", "300"], 2, false);
    let deepest = folded
        .iter()
        .map(|(s, _)| s.split(';').filter(|f| !f.ends_with("_[k]")).count() - 1)
        .max()
        .unwrap_or(0);
    assert_eq!(deepest, 127, "user frames in the deepest stack");
    let rec = read_recording(r.out_dir());
    let truncated = rec["meta"]["lost"]["user_stacks_truncated"]
        .as_u64()
        .unwrap();
    assert!(truncated > 0, "{}", rec["meta"]["lost"]);

    // A thread's stack ends where glibc's clone3 says the return address is undefined.
    let (folded, _) = record(&["thread", "30"], 2, false);
    assert_whole(
        "thread",
        whole_share_from(
            &folded,
            "clone3",
            "nofp_leaf",
            &[
                "start_thread",
                "nofp_thread_main",
                "nofp_outer",
                "nofp_middle",
            ],
        ),
        None,
    );

    // A handler's stack continues through the signal frame into the interrupted code
    // (mostly nofp_spin_for_signals, sometimes the clock_gettime between its calls).
    let (folded, _) = record(&["signal", "30"], 3, false);
    let (whole, all) = whole_share(&folded, "nofp_on_signal", &["main"]);
    let (spin, _) = whole_share(
        &folded,
        "nofp_on_signal",
        &["main", "nofp_spin_for_signals"],
    );
    assert!(
        spin * 2 > all,
        "{spin} of {all} handler stacks name the interrupted function"
    );
    assert!(all >= 50, "too few samples in the handler: {all}");
    assert_whole("signal handler", (whole, all), None);

    // A library loaded after the agent attached gets its table; the first moments after the
    // dlopen, before the agent has read the new mapping, may still be walked by frame
    // pointers (counted against the share).
    let started = Instant::now();
    let (folded, _) = record(&["dlopen", "30", "2500"], 5, false);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_whole(
        "dlopen'ed library",
        whole_share(
            &folded,
            "nofp_plugin_inner",
            &["main", "nofp_plugin_caller", "nofp_plugin_work"],
        ),
        None,
    );
}

#[test]
fn forked_workers_unwind_with_their_parents_tables() {
    if !require_bpf("forked_workers_unwind_with_their_parents_tables") {
        return;
    }
    let _bpf = bpf_lock();
    // Children forked while recording, without an exec: the agent reads nothing of theirs and
    // they share their parent's tables.
    let out = scratch_dir("native-unwind-forkchain");
    let r = Session::run(&out, &["--freq", "199"])
        .command(nofp_app(), &["forkchain", "2", "3"])
        .expect_success();
    let rec = r.recording();
    let parent = rec["meta"]["target_pid"].as_u64().unwrap();
    let mut whole = 0;
    let mut all = 0;
    let mut children = std::collections::BTreeSet::new();
    for s in rec["samples"].as_array().unwrap() {
        if s["kind"] != "cpu" || s["pid"].as_u64() == Some(parent) {
            continue;
        }
        // User frames, outermost first (kernel frames and inlined functions left out).
        let user: Vec<&str> = rec["stacks"][s["stack"].as_u64().unwrap() as usize]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| &rec["frames"][f.as_u64().unwrap() as usize])
            .filter(|f| f["kind"] != "kernel" && f["inlined"] != true)
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        if user.last() != Some(&"nofp_leaf") {
            continue;
        }
        children.insert(s["pid"].as_u64().unwrap());
        all += 1;
        let mut rest = user.iter();
        let chain = ["nofp_fork_workers", "nofp_outer", "nofp_middle"];
        if user.first() == Some(&"_start") && chain.iter().all(|c| rest.any(|f| f == c)) {
            whole += 1;
        }
    }
    assert_eq!(children.len(), 3, "samples from each worker: {children:?}");
    assert_whole("forked workers", (whole, all), None);
    // Three processes more, none with a table of its own.
    let unwind = &rec["meta"]["unwind"];
    assert!(unwind["processes"].as_u64().unwrap() >= 4, "{unwind}");
}

#[test]
fn blocked_time_is_charged_to_the_whole_stack() {
    if !require_bpf("blocked_time_is_charged_to_the_whole_stack") {
        return;
    }
    let _bpf = bpf_lock();
    let (folded, _) = record(&["nap", "30"], 2, true);
    // The innermost user frame of a nap is glibc's clock_nanosleep; it must lead back to
    // nofp_nap and main, not to __libc_start_call_main alone.
    let (whole, all) = whole_share(
        &folded,
        "__GI___clock_nanosleep",
        &["main", "nofp_nap", "usleep"],
    );
    assert_whole("off-CPU nap", (whole, all), None);
}

#[test]
fn assembly_without_cfi_is_stepped_by_a_validated_scan() {
    if !require_bpf("assembly_without_cfi_is_stepped_by_a_validated_scan") {
        return;
    }
    let _bpf = bpf_lock();
    // nofp_asm_leaf has no FDE and uses %rbp as a counter (like OpenBLAS's kernels): its
    // caller is found by the validated scan, and the rest of the stack by the tables.
    let (folded, r) = record(&["asm", "30"], 2, false);
    assert_whole(
        "assembly leaf",
        whole_share(&folded, "nofp_asm_leaf", &["main", "nofp_asm_caller"]),
        None,
    );
    let rec = read_recording(r.out_dir());
    let scanned = rec["meta"]["lost"]["user_stacks_scanned"].as_u64().unwrap();
    assert!(
        scanned > 0,
        "no stack counted as scanned: {}",
        rec["meta"]["lost"]
    );
}

/// Python from `target/py-numpy` (made by `cargo xtask test`), if there.
fn numpy_python() -> Option<PathBuf> {
    let python = target_dir()
        .ancestors()
        .nth(1)
        .map(|t| t.join("py-numpy/bin/python"))?;
    python.exists().then_some(python)
}

#[test]
fn numpy_openblas_stacks_reach_the_process_entry() {
    if !require_bpf("numpy_openblas_stacks_reach_the_process_entry") {
        return;
    }
    let Some(python) = numpy_python() else {
        assert!(
            std::env::var_os("MODELPROBE_REQUIRE_BPF").is_none(),
            "target/py-numpy is missing: `cargo xtask test` makes it (pip install numpy)"
        );
        eprintln!("skipped: no target/py-numpy");
        return;
    };
    let _bpf = bpf_lock();
    // One BLAS thread: the kernel runs on the interpreter's thread, under Python's own frames.
    let script = "import sys, time, numpy as np\n\
                  a = np.random.rand(300, 300)\n\
                  end = time.time() + float(sys.argv[1])\n\
                  while time.time() < end:\n    b = a @ a\n";
    let mut cmd = Command::new(&python);
    cmd.args(["-c", script, "30"])
        .env("OPENBLAS_NUM_THREADS", "1");
    // numpy imported and the loop running before the agent attaches.
    let (folded, _) = record_command("numpy", cmd, Duration::from_millis(1500), 3, false);
    let (mut whole, mut all) = (0, 0);
    for (stack, n) in &folded {
        // Samples in OpenBLAS's GEMM code (its kernels are hand-written assembly).
        if !stack.split(';').any(|f| f.starts_with("dgemm_")) {
            continue;
        }
        all += n;
        let frames: Vec<&str> = stack.split(';').collect();
        if frames.get(1) == Some(&"_start") && frames.contains(&"PyEval_EvalCode") {
            whole += n;
        }
    }
    assert!(all >= 100, "too few samples in dgemm: {all}");
    assert_whole("numpy matmul (OpenBLAS)", (whole, all), None);
}

#[test]
fn cuda_launch_stacks_name_callers_without_frame_pointers() {
    if !require_bpf("cuda_launch_stacks_name_callers_without_frame_pointers") {
        return;
    }
    let _bpf = bpf_lock();
    let fixtures = fixture_lib_dir();
    let out = scratch_dir("native-unwind-cuda");
    // main -> app_forward -> app_layer -> app_launch -> cudaLaunchKernel (the stand-in
    // runtime), all built without frame pointers; the runtime is dlopen'ed 200 ms in.
    let r = Session::run(&out, &[])
        .command(fixtures.join("mp-cuda-app-nofp"), &["--launches", "300"])
        .env("LD_LIBRARY_PATH", fixtures.join("cuda"))
        .env("MP_CUDA_SETTLE_MS", "1500")
        .env_remove("MODELPROBE_CUPTI")
        .expect_success();
    let rec = read_recording(r.out_dir());
    let probes = rec["probes"].as_array().expect("probes");
    let chain = [
        "main",
        "app_forward",
        "app_layer",
        "app_launch",
        "cudaLaunchKernel",
    ];
    let (mut whole, mut all) = (0, 0);
    for span in rec["spans"].as_array().expect("spans") {
        if probes[span["probe"].as_u64().unwrap() as usize]["function"] != "cudaLaunchKernel" {
            continue;
        }
        all += 1;
        let Some(stack) = span["stack"].as_u64() else {
            continue;
        };
        let names = frame_names(&rec, stack);
        let at = names.iter().position(|f| f == "main");
        if names.first().map(String::as_str) == Some("_start")
            && at.is_some_and(|i| names[i..] == chain)
        {
            whole += 1;
        }
    }
    assert_eq!(all, 300, "cudaLaunchKernel spans");
    assert_whole("CUDA launch stacks", (whole, all), None);
}
