//! Span probes and lifecycle events, as root, on the real kernel: a `--probe` on fixture
//! functions with a known call count, nesting, arguments, results and duration; a fatal signal;
//! probe-spec errors naming close matches.
use std::time::Duration;

use modelprobe_tests::*;

#[test]
fn probe_records_every_call_with_args_result_depth_and_duration() {
    if !require_bpf("probe_records_every_call_with_args_result_depth_and_duration") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("spans");
    let r = Session::run(&out, &["--probe", "mp-workload:mp_span_*@1"])
        .workload(&["--calls", "25"])
        .expect_success();
    let stderr = r.stderr();
    assert!(stderr.contains("probing 2 function(s)"), "{stderr}");

    let rec = r.recording();
    let probes = rec["probes"].as_array().expect("probes");
    let id_of = |f: &str| {
        probes
            .iter()
            .position(|p| p["function"] == f)
            .unwrap_or_else(|| panic!("{f} not probed: {probes:?}")) as u64
    };
    let (outer, target) = (id_of("mp_span_outer"), id_of("mp_span_target"));
    let spans = rec["spans"].as_array().expect("spans");
    let of = |id: u64| -> Vec<&serde_json::Value> {
        spans.iter().filter(|s| s["probe"] == id).collect()
    };
    let (outers, targets) = (of(outer), of(target));
    assert_eq!(
        outers.len(),
        25,
        "every call of mp_span_outer, exactly once"
    );
    assert_eq!(
        targets.len(),
        25,
        "every call of mp_span_target, exactly once"
    );
    for (i, (o, t)) in outers.iter().zip(&targets).enumerate() {
        let i = i as u64;
        assert_eq!(o["args"], serde_json::json!([i]), "outer args");
        assert_eq!(t["args"], serde_json::json!([i]), "target args");
        assert_eq!(t["ret"], 2 * i, "mp_span_target returns 2i");
        assert_eq!(o["ret"], 2 * i + 1, "mp_span_outer returns 2i+1");
        assert_eq!(
            (o["depth"].as_u64(), t["depth"].as_u64()),
            (Some(0), Some(1))
        );
        let dur =
            |s: &serde_json::Value| s["end_ns"].as_u64().unwrap() - s["start_ns"].as_u64().unwrap();
        // mp_span_target sleeps 2 ms; allow generous scheduling noise above.
        assert!(
            (2_000_000..50_000_000).contains(&dur(t)),
            "span {i} lasted {} ns",
            dur(t)
        );
        assert!(
            o["start_ns"].as_u64() <= t["start_ns"].as_u64()
                && t["end_ns"].as_u64() <= o["end_ns"].as_u64()
        );
    }
    assert_eq!(rec["meta"]["lost"]["span_records"], 0);
    assert_eq!(rec["meta"]["lost"]["unmatched_span_returns"], 0);
    assert!(
        stderr.contains("mp_span_target"),
        "summary lists spans: {stderr}"
    );

    // The timeline parses in an independent reader and holds exactly those spans.
    check_trace(
        &out,
        &[
            "--expect-slice",
            "mp_span_outer:25",
            "--expect-slice",
            "mp_span_target:25",
            "--expect-instant",
            "exec",
        ],
    );
}

#[test]
fn probe_errors_name_close_matches() {
    if !require_bpf("probe_errors_name_close_matches") {
        return;
    }
    let out = scratch_dir("probe-errors");
    let run = |spec: &str| {
        Session::run(&out, &["--probe", spec])
            .workload(&["--calls", "1"])
            .timeout(Duration::from_secs(30))
            .finish()
    };
    let typo = run("mp-workload:mp_span_targt");
    let stderr = typo.stderr();
    assert_eq!(typo.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no function mp_span_targt") && stderr.contains("mp_span_target"),
        "{stderr}"
    );
    assert!(
        !out.join("recording.json").exists(),
        "nothing recorded on a bad spec"
    );

    let lib = run("libnothere.so:f");
    let stderr = lib.stderr();
    assert_eq!(lib.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no file named libnothere.so"), "{stderr}");

    let syntax = run("no-colon");
    assert_eq!(syntax.code(), Some(2));
    assert!(syntax.stderr().contains("TARGET:SYMBOL"));
}

#[test]
fn a_crash_is_an_event_and_the_recording_is_finalized() {
    if !require_bpf("a_crash_is_an_event_and_the_recording_is_finalized") {
        return;
    }
    let _bpf = bpf_lock();
    let r = Session::run(&scratch_dir("segv"), &[])
        .workload(&["--segv"])
        .finish();
    let stderr = r.stderr();
    assert_eq!(r.code(), Some(128 + libc::SIGSEGV), "{stderr}");
    let rec = r.recording();
    assert_eq!(rec["meta"]["exit_status"], 128 + libc::SIGSEGV);
    let events = rec["events"].as_array().expect("events");
    let fatal: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "fatal_signal")
        .collect();
    assert_eq!(fatal.len(), 1, "{events:?}");
    assert_eq!(fatal[0]["value"], libc::SIGSEGV);
    assert!(fatal[0]["message"].as_str().unwrap().contains("SIGSEGV"));
    assert!(events.iter().any(|e| e["kind"] == "exec"), "{events:?}");
    assert!(
        events.iter().any(|e| e["kind"] == "process_exit"),
        "{events:?}"
    );
    assert!(
        stderr.contains("fatal signal SIGSEGV"),
        "summary shows the crash: {stderr}"
    );
}

#[test]
fn children_and_threads_are_events() {
    if !require_bpf("children_and_threads_are_events") {
        return;
    }
    let _bpf = bpf_lock();
    let rec = Session::run(&scratch_dir("lifecycle"), &[])
        .workload(&["--seconds", "1", "--child"])
        .expect_success()
        .recording();
    let events = rec["events"].as_array().expect("events");
    let count = |k: &str| events.iter().filter(|e| e["kind"] == k).count();
    assert_eq!(count("process_start"), 1, "one child process: {events:?}");
    assert!(count("thread_start") >= 1, "the sleeper thread: {events:?}");
    assert_eq!(
        count("process_exit"),
        2,
        "parent and child exit: {events:?}"
    );
    assert!(
        events.iter().any(|e| e["kind"] == "thread_rename"
            && e["message"].as_str().unwrap().contains("mp-sleeper")),
        "thread names are events: {events:?}"
    );
}

#[test]
fn stdout_and_stderr_become_leveled_lines_and_model_loads_are_events() {
    if !require_bpf("stdout_and_stderr_become_leveled_lines_and_model_loads_are_events") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("logs");
    let model = out.join("tiny.safetensors");
    std::fs::write(&model, vec![7u8; 3 * 1024 * 1024]).unwrap();
    let r = Session::run(&out, &[])
        .workload(&["--model", model.to_str().unwrap(), "--logs"])
        .expect_success();
    let stderr = r.stderr();
    let rec = r.recording();
    let lines: Vec<(String, String, Option<String>)> = rec["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|l| {
            !l["message"].as_str().unwrap().starts_with("ready ")
                && !l["message"].as_str().unwrap().starts_with("read ")
        })
        .map(|l| {
            (
                l["stream"].as_str().unwrap().to_string(),
                l["message"].as_str().unwrap().to_string(),
                l["level"].as_str().map(str::to_string),
            )
        })
        .collect();
    let want = [
        ("stdout", "INFO: starting up", Some("INFO")),
        ("stderr", "WARNING:model:slow layer 3", Some("WARN")),
        (
            "stdout",
            "E1124 13:01:02.123456  42 server.cc:10] CUDA error out of memory",
            Some("ERROR"),
        ),
        ("stderr", "[DEBUG] vectored write", Some("DEBUG")),
        ("stdout", "plain line without level", None),
        ("stderr", "CRITICAL: giving up", Some("FATAL")),
    ];
    let want: Vec<(String, String, Option<String>)> = want
        .iter()
        .map(|(s, m, l)| (s.to_string(), m.to_string(), l.map(str::to_string)))
        .collect();
    assert_eq!(lines, want);

    let events = rec["events"].as_array().expect("events");
    let loads: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "model_load")
        .collect();
    assert_eq!(loads.len(), 1, "{events:?}");
    assert_eq!(loads[0]["value"], 3 * 1024 * 1024);
    assert!(loads[0]["message"]
        .as_str()
        .unwrap()
        .contains("tiny.safetensors"));
    assert!(stderr.contains("Logs by level"), "{stderr}");
    let logs = r.report_rows("logs");
    assert_eq!(row(&logs, "ERROR")[1], 1, "{logs:?}");
}

#[test]
fn a_write_flood_overflows_the_ring_buffer_and_every_write_is_accounted_for() {
    if !require_bpf("a_write_flood_overflows_the_ring_buffer_and_every_write_is_accounted_for") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("flood");
    const WRITES: u64 = 400_000;
    let start = std::time::Instant::now();
    let flood = format!(
        "exec {} --flood {WRITES} 2>/dev/null",
        workload_bin().display()
    );
    // A small ring, so the flood overflows it whatever the machine's speed.
    let r = Session::run(&out, &["--ring-buffer-kib", "64"])
        .command("sh", &["-c", &flood])
        .timeout(Duration::from_secs(120))
        .finish();
    let stderr = r.stderr();
    assert!(r.status().success(), "the agent survives a flood: {stderr}");
    let rec = r.recording();
    let captured = rec["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|l| l["stream"] == "stderr" && l["message"].as_str().unwrap().len() == 999)
        .count() as u64;
    // The workload's two other writes: its `ready` and `elapsed_ms` lines on stdout (lost too
    // when the ring is full at that moment).
    let stdout_lines = rec["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|l| l["stream"] == "stdout")
        .count() as u64;
    let lost = rec["meta"]["lost"]["log_writes"].as_u64().unwrap();
    assert!(
        lost > 0,
        "a {WRITES}-write flood should overflow the ring buffer (captured {captured})"
    );
    assert_eq!(
        captured + stdout_lines + lost,
        WRITES + 2,
        "every write is either recorded or counted as lost"
    );
    assert!(stderr.contains("Lost data"), "{stderr}");
    assert_eq!(
        row(&r.report_rows("lost"), "log writes")[1],
        lost,
        "the report shows the loss"
    );
    eprintln!(
        "flood: {captured} captured, {lost} lost in {:?}",
        start.elapsed()
    );
}

#[test]
fn a_library_dlopened_after_start_is_probed_from_its_first_call() {
    if !require_bpf("a_library_dlopened_after_start_is_probed_from_its_first_call") {
        return;
    }
    let _bpf = bpf_lock();
    let rec = Session::run(
        &scratch_dir("dlopen"),
        &["--probe", "libmpfixture.so:mp_lib_work@1"],
    )
    .workload(&["--dlopen", "libmpfixture.so", "--calls", "12"])
    .env("LD_LIBRARY_PATH", fixture_lib_dir())
    .expect_success()
    .recording();
    assert!(
        rec["probes"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("fixtures/libmpfixture.so"),
        "resolved through LD_LIBRARY_PATH before it was loaded: {}",
        rec["probes"]
    );
    let spans = rec["spans"].as_array().expect("spans");
    assert_eq!(
        spans.len(),
        12,
        "every call after the late dlopen: {spans:?}"
    );
    for (i, s) in spans.iter().enumerate() {
        assert_eq!(s["args"], serde_json::json!([i]));
        assert_eq!(s["ret"], 3 * i as u64);
    }
}

#[test]
fn attach_reports_model_files_loaded_before_it() {
    if !require_bpf("attach_reports_model_files_loaded_before_it") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("attach-models");
    let model = out.join("weights.gguf");
    std::fs::write(&model, vec![1u8; 2 * 1024 * 1024]).unwrap();
    let workload = start_workload(&[
        "--model",
        model.to_str().unwrap(),
        "--hold",
        "--seconds",
        "20",
    ]);
    let rec = Session::attach(&out, workload.0.id(), &["--duration", "1s"])
        .expect_success()
        .recording();
    let loads: Vec<&serde_json::Value> = rec["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "model_load")
        .collect();
    assert_eq!(loads.len(), 1, "one model file, open and mapped: {loads:?}");
    assert_eq!(loads[0]["value"], 2 * 1024 * 1024);
    assert!(loads[0]["message"]
        .as_str()
        .unwrap()
        .contains("already loaded at attach"));
}

/// Python reads every `site-packages/*.pth` (text: paths and imports) at start-up; `.pth` is
/// also PyTorch's checkpoint ending. Only real checkpoints (zip or pickle) are model loads,
/// and a loader opening the same file again right away is one load.
#[test]
fn python_path_files_are_not_model_loads_and_a_reopen_is_one_load() {
    if !require_bpf("python_path_files_are_not_model_loads_and_a_reopen_is_one_load") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("pth");
    let site = out.join("site-packages");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join("distutils-precedence.pth"),
        "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'local') == 'local'; enabled and __import__('_distutils_hack').add_shim(); \n",
    )
    .unwrap();
    let script = "import pickle, site, sys, zipfile\n\
                  d = sys.argv[1]\n\
                  with zipfile.ZipFile(d + '/model.pth', 'w') as z:\n\
                  \x20   z.writestr('archive/data.pkl', b'x' * 4096)\n\
                  with open(d + '/legacy.pt', 'wb') as f:\n\
                  \x20   pickle.dump({'w': list(range(1000))}, f, protocol=2)\n\
                  site.addsitedir(d + '/site-packages')\n\
                  for _ in range(2):\n\
                  \x20   open(d + '/model.pth', 'rb').read(64)\n\
                  open(d + '/legacy.pt', 'rb').read()\n\
                  print('done')\n";
    let r = Session::run(&out, &[])
        .command("python3", &["-c", script, out.to_str().unwrap()])
        .expect_success();
    assert!(r.stdout().contains("done"));
    let rec = r.recording();
    let loads: Vec<String> = rec["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "model_load")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(loads.len(), 2, "{loads:?}");
    assert!(loads[0].contains("model.pth"), "{loads:?}");
    assert!(loads[1].contains("legacy.pt"), "{loads:?}");
    assert!(
        !loads.iter().any(|l| l.contains("distutils-precedence")),
        "{loads:?}"
    );
}
