//! The CUDA probe packs, as root, without a GPU: stand-in `libcudart.so.12`, `libcuda.so.1`,
//! `libcublas.so.12` and `libnccl.so.2` export the real symbols with the real signatures; `mp-cuda-app` loads them late with dlopen
//! and calls them in a known pattern. The recording must hold exactly the expected spans,
//! bytes, directions, kernel name, dims and error event.
use std::time::Duration;

use modelprobe_tests::*;
use serde_json::{json, Value};

#[test]
fn cuda_runtime_and_driver_calls_are_spans_with_decoded_attributes() {
    if !require_bpf("cuda_runtime_and_driver_calls_are_spans_with_decoded_attributes") {
        return;
    }
    let _bpf = bpf_lock();
    let fixtures = fixture_lib_dir();
    // Found on the library path before the late dlopen: probed from the first call.
    check_cuda_app("cuda", &[("LD_LIBRARY_PATH", fixtures.join("cuda"))]);
}

#[test]
fn cuda_libraries_loaded_from_outside_the_search_path_are_found_by_rescanning() {
    if !require_bpf("cuda_libraries_loaded_from_outside_the_search_path_are_found_by_rescanning") {
        return;
    }
    let _bpf = bpf_lock();
    let fixtures = fixture_lib_dir();
    // dlopen by absolute path from a directory no search covers (like a wheel's RPATH): the
    // agent notices the new mappings within a second and attaches then.
    check_cuda_app(
        "cuda-rescan",
        &[
            ("MP_CUDA_DIR", fixtures.join("cuda")),
            ("MP_CUDA_SETTLE_MS", "2500".into()),
        ],
    );
}

fn check_cuda_app(name: &str, env: &[(&str, std::path::PathBuf)]) {
    let fixtures = fixture_lib_dir();
    let out = scratch_dir(name);
    let r = Session::run(&out, &[])
        .command(fixtures.join("mp-cuda-app"), &[])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .expect_success();
    let stderr = r.stderr();

    let rec = r.recording();
    let probes = rec["probes"].as_array().expect("probes");
    // Device pointers differ run to run: each is named by the order it was first returned,
    // so a free must name its allocation's.
    let mut pointers: Vec<String> = Vec::new();
    let spans: Vec<(String, Value, u64)> = rec["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| {
            let p = &probes[s["probe"].as_u64().unwrap() as usize];
            assert!(p["pack"].is_string(), "a pack probe: {p}");
            let mut attrs = s["attrs"].clone();
            if let Some(ptr) = attrs
                .get("ptr")
                .and_then(|v| v.as_str())
                .map(str::to_string)
            {
                let n = pointers.iter().position(|q| *q == ptr).unwrap_or_else(|| {
                    pointers.push(ptr);
                    pointers.len() - 1
                });
                attrs["ptr"] = json!(format!("P{n}"));
            }
            (
                p["function"].as_str().unwrap().to_string(),
                attrs,
                s["ret"].as_u64().unwrap(),
            )
        })
        .collect();
    let big = 64u64 << 20;
    let launch = json!({"kernel": "vectorAdd(float const*, float const*, float*, int)",
        "grid": [256, 2, 1], "block": [128, 1, 1]});
    let mut want: Vec<(&str, Value, u64)> = vec![
        (
            "cudaMalloc",
            json!({"bytes": big, "memory": "alloc", "space": "device", "ptr": "P0"}),
            0,
        ),
        (
            "cudaMalloc",
            json!({"bytes": big, "memory": "alloc", "space": "device", "ptr": "P1"}),
            0,
        ),
        ("cudaMemcpy", json!({"bytes": big, "direction": "HtoD"}), 0),
    ];
    want.extend(std::iter::repeat_n(("cudaLaunchKernel", launch, 0), 5));
    want.extend([
        ("cudaDeviceSynchronize", Value::Null, 0),
        ("cudaMemcpy", json!({"bytes": big, "direction": "DtoH"}), 0),
        (
            "cudaMemcpy",
            json!({"bytes": 16, "direction": "HtoD", "error": "cudaErrorInvalidValue"}),
            1,
        ),
        (
            "cudaFree",
            json!({"memory": "free", "space": "device", "ptr": "P0"}),
            0,
        ),
        (
            "cudaFree",
            json!({"memory": "free", "space": "device", "ptr": "P1"}),
            0,
        ),
        (
            "cuModuleGetFunction",
            json!({"name": "_Z9vectorAddPKfS0_Pfi", "handle": "0x1234"}),
            0,
        ),
        (
            "cuLaunchKernel",
            json!({"function_handle": "0x1234", "grid": [64, 2, 1], "block_xy": [32, 4],
                "kernel": "vectorAdd(float const*, float const*, float*, int)"}),
            0,
        ),
        (
            "cublasSgemm_v2",
            json!({"m": 512, "n": 256, "k": 128, "flops": 2 * 512 * 256 * 128}),
            0,
        ),
        (
            "ncclAllReduce",
            json!({"count": 1 << 20, "dtype": "bfloat16", "bytes": 2 << 20}),
            0,
        ),
        (
            "ncclSend",
            json!({"count": 4096, "dtype": "float32", "bytes": 16384, "error": "ncclInvalidArgument"}),
            4,
        ),
    ]);
    let want: Vec<(String, Value, u64)> = want
        .into_iter()
        .map(|(f, a, r)| (f.to_string(), a, r))
        .collect();
    assert_eq!(spans, want, "exactly the calls the fixture makes, in order");

    let errors: Vec<&Value> = rec["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "api_error")
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0]["message"],
        "cudaMemcpy returned 1 (cudaErrorInvalidValue), called from main"
    );
    assert_eq!(
        errors[1]["message"],
        "ncclSend returned 4 (ncclInvalidArgument), called from main"
    );
    // Each error carries the launching stack, symbolized like any sample's.
    for e in &errors {
        let stack = e["stack"].as_u64().expect("an error has its stack") as usize;
        let frames: Vec<&str> = rec["stacks"][stack]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                rec["frames"][f.as_u64().unwrap() as usize]["name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert!(
            frames.contains(&"main"),
            "launching stack names main: {frames:?}"
        );
    }
    assert!(
        stderr.contains("cudaMemcpy returned 1"),
        "the summary shows the error: {stderr}"
    );

    check_trace(
        &out,
        &[
            "--expect-slice",
            "cudaLaunchKernel:5",
            "--expect-slice",
            "cudaMemcpy:3",
        ],
    );
    let trace = std::fs::read_to_string(out.join("trace.json")).unwrap();
    assert!(
        trace.contains("vectorAdd(float const*, float const*, float*, int)"),
        "kernel names in the timeline"
    );

    // The report's figures, exactly: columns span, pack, count, total, mean, p50, p95, p99,
    // max, errors, error %.
    let spans = r.report_rows("spans");
    assert_eq!(
        row(&spans, "cudaLaunchKernel")[1..3],
        [json!("cuda-runtime"), json!(5)]
    );
    let memcpy = row(&spans, "cudaMemcpy");
    assert_eq!(
        (&memcpy[2], &memcpy[9], &memcpy[10]),
        (&json!(3), &json!(1), &json!(33.33))
    );
    assert_eq!(row(&spans, "ncclSend")[9..11], [json!(1), json!(100.0)]);
    assert_eq!(row(&spans, "cudaMalloc")[9], 0);
    let launches = r.report_rows("kernel_launches");
    assert_eq!(launches.len(), 1, "{launches:?}");
    assert_eq!(
        (&launches[0][0], &launches[0][3]),
        (
            &json!(6),
            &json!("vectorAdd(float const*, float const*, float*, int)")
        ),
        "5 runtime launches and 1 driver launch of one kernel"
    );
    let copies = r.report_rows("memcpy");
    assert_eq!(row(&copies, "HtoD")[1..3], [json!(2), json!(big + 16)]);
    assert_eq!(row(&copies, "DtoH")[1..3], [json!(1), json!(big)]);
}

#[test]
fn no_packs_turns_the_cuda_pack_off() {
    if !require_bpf("no_packs_turns_the_cuda_pack_off") {
        return;
    }
    let _bpf = bpf_lock();
    let fixtures = fixture_lib_dir();
    let rec = Session::run(&scratch_dir("cuda-off"), &["--no-packs"])
        .command(fixtures.join("mp-cuda-app"), &[])
        .env("LD_LIBRARY_PATH", fixtures.join("cuda"))
        .expect_success()
        .recording();
    assert_eq!(rec["probes"].as_array().map_or(0, Vec::len), 0);
    assert_eq!(rec["spans"].as_array().map_or(0, Vec::len), 0);
}

#[test]
fn llama_cpp_pack_in_a_static_binary_gives_prefill_and_decode_tokens() {
    if !require_bpf("llama_cpp_pack_in_a_static_binary_gives_prefill_and_decode_tokens") {
        return;
    }
    let _bpf = bpf_lock();
    let r = Session::run(&scratch_dir("llama"), &[])
        .command(fixture_lib_dir().join("mp-llama-app"), &[])
        .expect_success();
    let stderr = r.stderr();
    assert!(
        stderr.contains("llama.cpp pack:"),
        "found in the executable itself: {stderr}"
    );
    let rec = r.recording();
    let probes = rec["probes"].as_array().expect("probes");
    let function = |s: &Value| {
        probes[s["probe"].as_u64().unwrap() as usize]["function"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let spans = rec["spans"].as_array().expect("spans");
    let decodes: Vec<&Value> = spans
        .iter()
        .filter(|s| function(s) == "llama_decode")
        .collect();
    assert_eq!(decodes.len(), 21);
    assert_eq!(
        decodes[0]["attrs"],
        json!({"n_tokens": 12, "phase": "prefill"})
    );
    for d in &decodes[1..] {
        assert_eq!(d["attrs"], json!({"n_tokens": 1, "phase": "decode"}));
    }
    let tokenize: Vec<&Value> = spans
        .iter()
        .filter(|s| function(s) == "llama_tokenize")
        .collect();
    assert_eq!(tokenize.len(), 1);
    assert_eq!(tokenize[0]["ret"], 12);
    let samples: Vec<u64> = spans
        .iter()
        .filter(|s| function(s) == "llama_sampler_sample")
        .map(|s| s["ret"].as_u64().unwrap())
        .collect();
    assert_eq!(samples, (1000..1020).collect::<Vec<u64>>());
    assert!(
        stderr.contains("Token throughput (llama.cpp)"),
        "tokens per second in the summary: {stderr}"
    );
    let tokens = r.report_rows("tokens");
    assert_eq!(row(&tokens, "prefill")[1..3], [json!(1), json!(12)]);
    assert_eq!(row(&tokens, "decode")[1..3], [json!(20), json!(20)]);
}

/// llama-cpp-python's shape: Python starts, then loads `site-packages/llama_cpp/lib/libllama.so`
/// through ctypes from a folder no search path names, and stays busy inside it. The CPU
/// samples landing in the new library must not hide it from the probe set (they capture the
/// process's mappings before the periodic rescan does).
#[test]
fn run_probes_a_pack_library_loaded_at_run_time_from_outside_the_search_path() {
    if !require_bpf("run_probes_a_pack_library_loaded_at_run_time_from_outside_the_search_path") {
        return;
    }
    let _bpf = bpf_lock();
    let lib = fixture_lib_dir().join("wheel/llama_cpp/lib/libllama.so");
    assert!(lib.is_file(), "fixture missing: {}", lib.display());
    let out = scratch_dir("llama-ctypes");
    // 300 tokens of 12 ms of CPU each: ~3.6 s busy in the library, so that the second or so
    // the pack's stack programs take to load (verify) before they attach leaves most calls.
    let script = "import ctypes, sys, time\n\
                  time.sleep(0.3)\n\
                  lib = ctypes.CDLL(sys.argv[1])\n\
                  lib.mp_llama_generate.argtypes = [ctypes.c_int32, ctypes.c_long]\n\
                  n = lib.mp_llama_generate(300, 12000)\n\
                  print('prompt', n)\n";
    let r = Session::run(&out, &[])
        .command("python3", &["-c", script, lib.to_str().unwrap()])
        .env_remove("LD_LIBRARY_PATH")
        .timeout(Duration::from_secs(90))
        .expect_success();
    let stderr = r.stderr();
    assert!(r.stdout().contains("prompt 12"), "the script ran: {stderr}");
    assert!(
        stderr.contains("loaded a pack library"),
        "the library was found while the process ran: {stderr}"
    );
    let rec = r.recording();
    let probes = rec["probes"].as_array().expect("probes");
    let decodes = rec["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .filter(|s| probes[s["probe"].as_u64().unwrap() as usize]["function"] == "llama_decode")
        .count();
    // Attached within a moment of the load: most of the 301 calls are spans.
    assert!(
        decodes >= 150,
        "{decodes} llama_decode spans of 301 calls; {stderr}"
    );
    let tokens = r.report_rows("tokens");
    assert!(
        row(&tokens, "decode")[1].as_u64().unwrap() >= 149,
        "{tokens:?}"
    );
}
