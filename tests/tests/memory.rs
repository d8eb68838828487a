//! Memory: each process's memory over time as counters (`--memory`), memory by allocating
//! stack from the mmap/munmap/mremap/brk tracepoints and sampled page faults (a C fixture
//! whose named functions map, leak and free known bytes; a Python function that grows), GPU
//! memory by stack from the CUDA packs with a failed `cudaMalloc` explained (stand-in CUDA),
//! and the kernel's OOM killer choosing a target as an event, with the victim's memory and top
//! holder then (a real OOM kill in a memory cgroup the test makes).
use std::{path::PathBuf, process::Command, time::Duration};

use modelprobe_tests::*;

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
            .arg(python312())
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
    // The shell joins the cgroup, then becomes Python, which grows until the kernel kills it
    // (over most of a second: the Python frames of a stack are named while the process lives).
    let script = format!(
        "echo $$ > {} && exec {} -c 'import time\ntime.sleep(2)\na = []\ndef grow():\n    while True:\n        a.append(bytearray(4 << 20))\n        time.sleep(0.05)\ngrow()\n'",
        cgroup.1.display(),
        python312().display()
    );
    let run = run_agent(
        Command::new(modelprobe_bin())
            .args(["run", "--memory", "-o"])
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
    // With --memory, the kill names who held the memory: the Python function that grew.
    assert!(
        message.contains("top: ") && message.contains(" from grow ("),
        "{message}"
    );
}

/// Bytes of the folded file's lines whose stack goes through `function`.
fn folded_bytes(path: &std::path::Path, function: &str) -> u64 {
    read_folded(path)
        .into_iter()
        .filter(|(stack, _)| {
            stack
                .split(';')
                .any(|f| f == function || f.starts_with(&format!("{function} ")))
        })
        .map(|(_, n)| n)
        .sum()
}

/// The report's rows of section `id`.
fn report_rows(dir: &std::path::Path, id: &str) -> Vec<serde_json::Value> {
    let out = Command::new(modelprobe_bin())
        .args(["report", "--json", "--top", "50"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no {id} section: {report}"))["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn memory_by_stack_names_what_each_function_maps_leaks_and_frees() {
    if !require_bpf("memory_by_stack_names_what_each_function_maps_leaks_and_frees") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("memory-stacks");
    let rec_dir = out.join("rec");
    let run = run_agent(
        Command::new(modelprobe_bin())
            .args(["run", "--memory", "-o"])
            .arg(&rec_dir)
            .arg("--")
            .arg(fixture_lib_dir().join("mp-mem-app"))
            .arg("cpu"),
        Duration::from_secs(60),
    );
    run.assert_success();
    const MIB: u64 = 1 << 20;
    let inuse = rec_dir.join("memory-inuse.folded");
    // Exactly what the fixture keeps: 40 maps of 1 MiB; 8 MiB less the 2 MiB unmapped from its
    // middle; 20 malloc(2 MiB) blocks, each a map of 2 MiB and a page of glibc's header.
    assert_eq!(folded_bytes(&inuse, "mp_map_leak"), 40 * MIB);
    assert_eq!(folded_bytes(&inuse, "mp_map_partial"), 6 * MIB);
    let malloc_maps = folded_bytes(&inuse, "mp_malloc_leak");
    assert!(
        (20 * (2 * MIB + 4096)..=20 * (2 * MIB + 4096) + 33 * 4096).contains(&malloc_maps),
        "20 x (2 MiB + a page), and glibc's first heap page: {malloc_maps}"
    );
    // 200 maps of 256 KiB, each unmapped: allocated, none in use.
    assert_eq!(folded_bytes(&inuse, "mp_map_churn"), 0);
    let alloc = rec_dir.join("memory-alloc.folded");
    assert_eq!(folded_bytes(&alloc, "mp_map_churn"), 200 * 256 * 1024);
    // 200000 x malloc(64): the brk heap grows by at least 12.8 MB from that function.
    let heap = folded_bytes(&inuse, "mp_small_allocs");
    assert!(
        (12_800_000..=24 * MIB).contains(&heap),
        "brk heap from mp_small_allocs: {heap}"
    );
    // Page faults, sampled: mp_touch writes the 40 MiB it leaked.
    let touched = folded_bytes(&rec_dir.join("memory-faults.folded"), "mp_touch");
    assert!(
        (30 * MIB..=48 * MIB).contains(&touched),
        "pages first touched in mp_touch: {touched}"
    );
    // The report names the top holders with their live allocations.
    let rows = report_rows(&rec_dir, "memory_top");
    let row = |holder: &str| {
        rows.iter()
            .find(|r| r[0] == holder)
            .unwrap_or_else(|| panic!("no {holder} row: {rows:?}"))
            .clone()
    };
    assert_eq!(row("mp_map_leak")[3], 40);
    assert_eq!(
        row("mp_map_partial")[3],
        2,
        "head and tail of the partial unmap"
    );
    assert_eq!(row("mp_map_leak")[2], 40.0);
    // The same as a pprof heap profile.
    let status = Command::new(modelprobe_bin())
        .args(["export", "--format", "pprof"])
        .arg(&rec_dir)
        .status()
        .unwrap();
    assert!(status.success());
    if have_go() {
        let top = go_pprof(
            &["-top", "-sample_index=inuse_space", "-show=mp_"],
            &rec_dir.join("memory.pb.gz"),
        );
        assert!(
            top.contains("mp_map_leak") && top.contains("mp_malloc_leak"),
            "{top}"
        );
    }
    // In use at an instant: before mp_map_leak ran (the fixture waits 1 s first), none of it.
    let early = out.join("early");
    let status = Command::new(modelprobe_bin())
        .args(["export", "--format", "memory", "--at", "300ms", "-o"])
        .arg(&early)
        .arg(&rec_dir)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        folded_bytes(&early.join("memory-alloc.folded"), "mp_map_leak"),
        40 * MIB
    );
    assert!(
        !early.join("memory-inuse.folded").exists()
            || folded_bytes(&early.join("memory-inuse.folded"), "mp_map_leak") == 0
    );
}

#[test]
fn sampled_malloc_estimates_the_heap_by_stack_and_matches_its_frees() {
    if !require_bpf("sampled_malloc_estimates_the_heap_by_stack_and_matches_its_frees") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("memory-malloc");
    let rec_dir = out.join("rec");
    let run = run_agent(
        Command::new(modelprobe_bin())
            .args(["run", "--memory=malloc", "-o"])
            .arg(&rec_dir)
            .arg("--")
            .arg(fixture_lib_dir().join("mp-mem-app"))
            .arg("cpu"),
        Duration::from_secs(60),
    );
    run.assert_success();
    const MIB: u64 = 1 << 20;
    let heap = rec_dir.join("memory-heap-inuse.folded");
    // 20 x 2 MiB: each sampled with probability 1 - exp(-4), each standing for 2 MiB / that.
    let blocks = folded_bytes(&heap, "mp_malloc_leak");
    assert!(
        (36 * MIB..=44 * MIB).contains(&blocks),
        "mp_malloc_leak's 40 MiB, estimated: {blocks}"
    );
    // 200000 x 64 bytes (12.8 MB) sampled one per 512 KiB on average: ~24 samples.
    let small = folded_bytes(&heap, "mp_small_allocs");
    assert!(
        (6_400_000..=25_600_000).contains(&small),
        "mp_small_allocs' 12.8 MB, estimated: {small}"
    );
    // Every sampled block mp_heap_churn allocated was freed, and its free matched.
    assert_eq!(folded_bytes(&heap, "mp_heap_churn"), 0);
    let churned = folded_bytes(&rec_dir.join("memory-heap-alloc.folded"), "mp_heap_churn");
    assert!(
        (40 * MIB..=90 * MIB).contains(&churned),
        "1000 x 64 KiB allocated, estimated: {churned}"
    );
    // The maps made inside malloc, whose return probe replaced its return address with the
    // uprobe trampoline: the walk reads the real one and still names the caller.
    let maps = folded_bytes(&rec_dir.join("memory-inuse.folded"), "mp_malloc_leak");
    assert!(
        (20 * (2 * MIB + 4096)..=20 * (2 * MIB + 4096) + 33 * 4096).contains(&maps),
        "{maps}"
    );
}

#[test]
fn attach_raises_pytorchs_tracepoint_semaphores_and_detach_gives_them_back() {
    if !require_bpf("attach_raises_pytorchs_tracepoint_semaphores_and_detach_gives_them_back") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("memory-torch-attach");
    let log = out.join("app.out");
    let mut app = Command::new(fixture_lib_dir().join("mp-mem-app"))
        .args(["torch-loop", "20"])
        .env("LD_LIBRARY_PATH", fixture_lib_dir().join("cuda"))
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait_for = |want: &str, after: usize| {
        let start = std::time::Instant::now();
        while !lines().lines().skip(after).any(|l| l == want) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no {want:?}: {}",
                lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("sema 0 0", 0);
    let rec_dir = out.join("rec");
    let run = run_agent(
        Command::new(modelprobe_bin())
            .args([
                "attach",
                "--pid",
                &app.id().to_string(),
                "--memory",
                "--duration",
                "2s",
                "-o",
            ])
            .arg(&rec_dir),
        Duration::from_secs(60),
    );
    run.assert_success();
    // Raised while attached (the sites are reached only then), back to 0 after.
    wait_for("sema 1 1", 0);
    let seen = lines().lines().count();
    wait_for("sema 0 0", 1);
    let _ = app.kill();
    let _ = app.wait();
    assert!(seen >= 2, "{}", lines());
    // Tensors made and freed every 20 ms: allocations and frees paired, none left.
    let rec = read_recording(&rec_dir);
    let torch: Vec<&serde_json::Value> = rec["memory"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "torch")
        .collect();
    let allocs = torch.iter().filter(|e| e["kind"] == "alloc").count();
    let frees = torch.iter().filter(|e| e["kind"] == "free").count();
    assert!(
        allocs >= 20 && allocs.abs_diff(frees) <= 1,
        "{allocs} allocs, {frees} frees"
    );
    assert!(torch
        .iter()
        .filter(|e| e["kind"] == "alloc")
        .all(|e| e["bytes"] == 1 << 20));
}

#[test]
fn a_python_function_that_grows_is_a_leak_candidate_by_its_python_frame() {
    if !require_bpf("a_python_function_that_grows_is_a_leak_candidate_by_its_python_frame") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("memory-python-leak");
    // 4 MiB blocks, each a map of its own (glibc's threshold rises to the largest map freed,
    // the churn's 580 KiB dict table, and its heap top keeps at most twice that: smaller
    // blocks would come from a heap whose growth is charged to whoever grew it), 10 a second
    // for 3 s; beside it, dicts built and dropped (pymalloc's arenas come and go).
    let script = "import time\ntime.sleep(2)\nheld = []\ndef leak_cache():\n    held.append(bytearray(4 << 20))\ndef churn():\n    d = {i: str(i) for i in range(20000)}\n    del d\nfor i in range(30):\n    leak_cache()\n    churn()\n    time.sleep(0.1)\n";
    let run = run_agent(
        Command::new(modelprobe_bin())
            .args(["run", "--memory", "-o"])
            .arg(out.join("rec"))
            .arg("--")
            .arg(python312())
            .args(["-c", script]),
        Duration::from_secs(60),
    );
    run.assert_success();
    let leaks = report_rows(&out.join("rec"), "memory_leaks");
    assert!(!leaks.is_empty(), "no leak candidate");
    let first = leaks[0][0].as_str().unwrap();
    assert!(first.starts_with("leak_cache ("), "{leaks:?}");
    assert!(
        (115.0..=125.0).contains(&leaks[0][2].as_f64().unwrap()),
        "120 MiB held: {leaks:?}"
    );
    assert!(
        leaks
            .iter()
            .all(|l| !l[0].as_str().unwrap().starts_with("churn")),
        "{leaks:?}"
    );
}

#[test]
fn gpu_memory_by_stack_tensors_and_a_failed_cuda_malloc_explained() {
    if !require_bpf("gpu_memory_by_stack_tensors_and_a_failed_cuda_malloc_explained") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("memory-gpu");
    let rec_dir = out.join("rec");
    let run = run_agent(
        Command::new(modelprobe_bin())
            .args(["run", "--memory", "-o"])
            .arg(&rec_dir)
            .arg("--")
            .arg(fixture_lib_dir().join("mp-mem-app"))
            .arg("gpu")
            .env("LD_LIBRARY_PATH", fixture_lib_dir().join("cuda"))
            .env("MP_GPU_MEMORY", (1u64 << 30).to_string()),
        Duration::from_secs(60),
    );
    run.assert_success();
    const MIB: u64 = 1 << 20;
    let gpu = rec_dir.join("gpu-memory-inuse.folded");
    assert_eq!(folded_bytes(&gpu, "mp_load_weights"), 512 * MIB);
    // 8 x 32 MiB, the first freed.
    assert_eq!(folded_bytes(&gpu, "mp_grow_kv_cache"), 224 * MIB);
    // PyTorch's allocator tracepoints (stand-in libc10_cuda.so, reached only while their
    // semaphores are held): three 10 MiB tensors, one freed.
    let tensors = rec_dir.join("gpu-tensors-inuse.folded");
    assert_eq!(folded_bytes(&tensors, "mp_torch_tensors"), 20 * MIB);
    let rec = read_recording(&rec_dir);
    // Reserved and allocated over time, as counters beside the resident set.
    let last = |name: &str| {
        rec["counters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["points"].as_array()?.last()?[1].as_f64())
            .unwrap_or_else(|| panic!("no {name} counter: {}", rec["counters"]))
    };
    assert_eq!(last("GPU memory reserved"), 736.0);
    assert_eq!(last("GPU tensors allocated"), 20.0);
    let ooms: Vec<_> = rec["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "oom")
        .collect();
    assert_eq!(ooms.len(), 1, "{}", rec["events"]);
    assert_eq!(ooms[0]["value"], 512 * MIB);
    let message = ooms[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("cudaMalloc of 512.0 MiB failed (cudaErrorMemoryAllocation)")
            && message.contains("736.0 MiB of GPU memory live in 11 allocations")
            && message.contains(
                "top: 512.0 MiB in 4 from mp_load_weights, 224.0 MiB in 7 from mp_grow_kv_cache"
            ),
        "{message}"
    );
    // Where it was asked for: the failed call's stack.
    let names = frame_names(&rec, ooms[0]["stack"].as_u64().expect("the oom's stack"));
    assert!(names.iter().any(|n| n == "mp_oversized"), "{names:?}");
    // PyTorch's memory snapshot format, read back by Python's pickle.
    let status = Command::new(modelprobe_bin())
        .args(["export", "--format", "torch-memory"])
        .arg(&rec_dir)
        .status()
        .unwrap();
    assert!(status.success());
    let check = "import pickle, sys\nd = pickle.load(open(sys.argv[1], 'rb'))\nt = d['device_traces'][0]\nacts = [e['action'] for e in t]\nprint(len(d['segments']), acts.count('segment_alloc'), acts.count('segment_free'), acts.count('alloc'), acts.count('free_completed'), sum(s['total_size'] for s in d['segments']), any(f['name'] == 'mp_load_weights' for e in t if e['action'] == 'segment_alloc' for f in e['frames']), all(any(f['name'] == 'mp_torch_tensors' for f in e['frames']) for e in t if e['action'] == 'alloc'))\n";
    let py = Command::new(python312())
        .args(["-c", check])
        .arg(rec_dir.join("gpu-memory-snapshot.pickle"))
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        format!("11 12 1 3 1 {} True True", 736 * MIB)
    );
}
