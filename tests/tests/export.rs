//! `modelprobe export --format pprof`, read back by `go tool pprof` as users read it: the
//! fixture workload's known hot spots (`mp_hot_a` three times `mp_hot_b`), the same totals as
//! the folded stacks, and the labels; `--format speedscope`, held against the same; and
//! `--format otlp --endpoint`, sent to a receiver built on the official OpenTelemetry protos;
//! `--format perfetto`, read by `protoc --decode` against Perfetto's message definitions.
use std::{path::Path, process::Command, time::Duration};

use modelprobe_tests::*;

/// The cumulative value of the function whose name ends in `function`, from `pprof -top` rows
/// (`flat flat% sum% cum cum% name [(inline)]`): the hot functions' own work is inlined into
/// them, so their flat value is their callees'.
fn cum(top: &str, function: &str) -> f64 {
    top.lines()
        .find(|l| {
            l.split_whitespace()
                .nth(5)
                .is_some_and(|name| name.ends_with(function))
        })
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or_else(|| panic!("{function} not in:\n{top}"))
}

#[test]
fn pprof_export_opens_in_go_tool_pprof_with_the_known_hot_spots() {
    if !require_bpf("pprof_export_opens_in_go_tool_pprof_with_the_known_hot_spots") {
        return;
    }
    if !have_go() {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("export-pprof");
    let rec_dir = out.join("rec");
    let r = Session::run(&rec_dir, &["--off-cpu", "--freq", "397"])
        .workload(&["--seconds", "3"])
        .expect_success();
    let pp = out.join("pprof");
    let status = Command::new(modelprobe_bin())
        .args(["export", "--format", "pprof", "-o"])
        .arg(&pp)
        .arg(&rec_dir)
        .status()
        .unwrap();
    assert!(status.success());
    let cpu = pp.join("cpu.pb.gz");
    assert!(pp.join("offcpu.pb.gz").exists(), "no off-CPU profile");

    // Sample counts: the same total as the folded stacks, and the 3:1 split.
    let top = go_pprof(
        &[
            "-top",
            "-sample_index=samples",
            "-nodefraction=0",
            "-nodecount=1000",
        ],
        &cpu,
    );
    let (a, b) = (cum(&top, "mp_hot_a"), cum(&top, "mp_hot_b"));
    assert!(a > 40.0 && b > 10.0, "too few samples: {a} {b}\n{top}");
    assert!(
        (2.2..=4.2).contains(&(a / b)),
        "mp_hot_a/mp_hot_b = {}",
        a / b
    );
    let folded: u64 = r.folded("stacks.folded").iter().map(|(_, n)| n).sum();
    let total = top
        .lines()
        .find_map(|l| l.split("Total samples = ").nth(1))
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no total in:\n{top}"));
    assert_eq!(total as u64, folded, "pprof total vs stacks.folded\n{top}");

    // Every sample says its process and thread.
    let tags = go_pprof(&["-tags"], &cpu);
    let pid = r.recording()["meta"]["target_pid"].as_u64().unwrap();
    assert!(
        tags.contains(&format!(": {pid}")),
        "no pid {pid} label:\n{tags}"
    );
    assert!(tags.contains("thread:"), "no thread label:\n{tags}");
    // The profile is named after the workload's executable, its first mapping.
    let head = go_pprof(&["-top", "-nodecount=1"], &cpu);
    assert!(head.contains("File: mp-workload"), "{head}");
}

#[test]
fn speedscope_export_holds_the_same_samples_per_thread() {
    if !require_bpf("speedscope_export_holds_the_same_samples_per_thread") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("export-speedscope");
    let rec_dir = out.join("rec");
    let r = Session::run(&rec_dir, &["--freq", "397"])
        .workload(&["--seconds", "2"])
        .expect_success();
    let status = Command::new(modelprobe_bin())
        .args(["export", "--format", "speedscope"])
        .arg(&rec_dir)
        .status()
        .unwrap();
    assert!(status.success());
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec_dir.join("profile.speedscope.json")).unwrap())
            .unwrap();
    // The shared frames are the recording's, in its order.
    let rec = r.recording();
    let frames = rec["frames"].as_array().unwrap();
    let period = 1_000_000_000 / 397;
    let mut total = 0;
    let mut hot_a = 0;
    for p in doc["profiles"].as_array().unwrap() {
        assert_eq!(p["type"], "sampled");
        let samples = p["samples"].as_array().unwrap();
        let weights = p["weights"].as_array().unwrap();
        assert_eq!(samples.len(), weights.len());
        for (s, w) in samples.iter().zip(weights) {
            let n = w.as_u64().unwrap() / period;
            total += n;
            // Root first: the leaf function is the last frame neither kernel nor inlined.
            let leaf = s
                .as_array()
                .unwrap()
                .iter()
                .rev()
                .map(|f| &frames[f.as_u64().unwrap() as usize])
                .find(|f| f["kind"] != "kernel" && f["inlined"] != true);
            if leaf.is_some_and(|f| f["name"] == "mp_hot_a") {
                hot_a += n;
            }
        }
    }
    let folded = r.folded("stacks.folded");
    assert_eq!(total, folded.iter().map(|(_, n)| n).sum::<u64>());
    assert_eq!(hot_a, self_weight(&folded, "mp_hot_a"));
}

/// The value of attribute `key` in an OTLP JSON attribute list (`{"key", "value": {"stringValue"}}`).
fn otlp_attr<'a>(attrs: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    attrs
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .and_then(|a| a["value"].as_object()?.values().next())
}

#[test]
fn otlp_export_is_read_by_a_receiver_on_the_official_protos() {
    if !require_bpf("otlp_export_is_read_by_a_receiver_on_the_official_protos") {
        return;
    }
    let out = scratch_dir("export-otlp");
    let rec_dir = out.join("rec");
    let r = {
        let _bpf = bpf_lock();
        Session::run(&rec_dir, &["--probe", "mp-workload:mp_span_*@1"])
            .workload(&["--calls", "25"])
            .expect_success()
    };
    let pid = r.recording()["meta"]["target_pid"].as_u64().unwrap();

    // The receiver throttles the first request: the push must retry it.
    let Some((_receiver, url, received)) = otlp_receiver(&out, &["--throttle", "1"]) else {
        return;
    };
    let secret = "SECRET-otlp-123";
    let sent = run_with_timeout(
        Command::new(modelprobe_bin())
            .args(["export", "--format", "otlp", "--endpoint"])
            .arg(&url)
            .arg("--header")
            .arg(format!("x-api-key={secret}"))
            .arg(&rec_dir),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&sent.stderr);
    assert!(sent.status.success(), "{stderr}");
    assert!(stderr.contains("sent 50 spans"), "{stderr}");
    assert!(!stderr.contains(secret));

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&received)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |signal: &'static str| lines.iter().filter(move |l| l["signal"] == signal);
    assert!(lines.iter().all(|l| l["headers"]["x-api-key"] == secret));

    // Traces: every call, the inner one the child of the outer in its trace.
    let mut spans = Vec::new();
    for l in of("traces") {
        for rs in l["request"]["resourceSpans"].as_array().unwrap() {
            let res = &rs["resource"]["attributes"];
            assert_eq!(otlp_attr(res, "service.name").unwrap(), "mp-workload");
            assert_eq!(
                otlp_attr(res, "process.pid").unwrap(),
                &serde_json::json!(pid.to_string())
            );
            assert!(otlp_attr(res, "host.name").is_some());
            for ss in rs["scopeSpans"].as_array().unwrap() {
                assert_eq!(ss["scope"]["name"], "modelprobe");
                spans.extend(ss["spans"].as_array().unwrap().iter().cloned());
            }
        }
    }
    let named = |n: &'static str| spans.iter().filter(move |s| s["name"] == n);
    assert_eq!(named("mp_span_outer").count(), 25);
    assert_eq!(named("mp_span_target").count(), 25);
    for t in named("mp_span_target") {
        let parent = named("mp_span_outer")
            .find(|o| o["spanId"] == t["parentSpanId"])
            .unwrap_or_else(|| panic!("no parent for {t}"));
        assert_eq!(parent["traceId"], t["traceId"]);
        let ns = |s: &serde_json::Value, k: &str| s[k].as_str().unwrap().parse::<u64>().unwrap();
        assert!(ns(parent, "startTimeUnixNano") <= ns(t, "startTimeUnixNano"));
        assert!(ns(t, "endTimeUnixNano") <= ns(parent, "endTimeUnixNano"));
        // mp_span_target sleeps 2 ms.
        assert!(ns(t, "endTimeUnixNano") - ns(t, "startTimeUnixNano") >= 2_000_000);
    }

    // Metrics: the latency histogram counts every call; CPU time is there.
    let metrics: Vec<&serde_json::Value> = of("metrics")
        .flat_map(|l| l["request"]["resourceMetrics"].as_array().unwrap())
        .flat_map(|rm| rm["scopeMetrics"].as_array().unwrap())
        .flat_map(|sm| sm["metrics"].as_array().unwrap())
        .collect();
    let metric = |n: &str| {
        metrics
            .iter()
            .find(|m| m["name"] == n)
            .unwrap_or_else(|| panic!("no {n}"))
    };
    for p in metric("modelprobe.span.duration")["histogram"]["dataPoints"]
        .as_array()
        .unwrap()
    {
        assert_eq!(p["count"], "25", "{p}");
    }
    assert!(metric("process.cpu.time")["sum"]["dataPoints"][0]["asDouble"].as_f64() > Some(0.0));
    assert!(
        metric("modelprobe.lost")["sum"]["dataPoints"]
            .as_array()
            .unwrap()
            .len()
            > 5
    );

    // Logs: the process's exit, as an event record.
    let events: Vec<&serde_json::Value> = of("logs")
        .flat_map(|l| l["request"]["resourceLogs"].as_array().unwrap())
        .flat_map(|rl| rl["scopeLogs"].as_array().unwrap())
        .flat_map(|sl| sl["logRecords"].as_array().unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["eventName"] == "modelprobe.process_exit"),
        "{events:?}"
    );

    // Files without --endpoint; clear one-line errors for what cannot be sent.
    let files = out.join("files");
    let status = Command::new(modelprobe_bin())
        .args(["export", "--format", "otlp", "-o"])
        .arg(&files)
        .arg(&rec_dir)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(files.join("otlp/traces-0000.pb").exists());
    for (args, says) in [
        (
            vec!["--format", "otlp", "--endpoint", "http://127.0.0.1:1"],
            "sending traces",
        ),
        (
            vec!["--format", "otlp", "--endpoint", "localhost:4318"],
            "bad OTLP endpoint",
        ),
        (
            vec!["--format", "pprof", "--endpoint", "http://127.0.0.1:1"],
            "--endpoint is for --format otlp",
        ),
    ] {
        let o = Command::new(modelprobe_bin())
            .arg("export")
            .args(&args)
            .arg(&rec_dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert!(
            err.contains(says) && err.trim().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}

#[test]
fn perfetto_export_decodes_with_protoc_and_holds_the_recording() {
    if !require_bpf("perfetto_export_decodes_with_protoc_and_holds_the_recording") {
        return;
    }
    if !Command::new("protoc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return missing("protoc (protobuf-compiler), for `protoc --decode`");
    }
    let out = scratch_dir("export-perfetto");
    let rec_dir = out.join("rec");
    let r = {
        let _bpf = bpf_lock();
        Session::run(
            &rec_dir,
            &[
                "--off-cpu",
                "--freq",
                "397",
                "--probe",
                "mp-workload:mp_sleep@1",
            ],
        )
        .workload(&["--seconds", "2"])
        .expect_success()
    };
    let status = Command::new(modelprobe_bin())
        .args(["export", "--format", "perfetto"])
        .arg(&rec_dir)
        .status()
        .unwrap();
    assert!(status.success());
    let trace = rec_dir.join("trace.pftrace");
    // Perfetto's own merged proto when given (checked by hand against it), else the subset.
    let proto = std::env::var_os("MODELPROBE_PERFETTO_PROTO")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/perfetto/trace_subset.proto")
        });
    let decoded = run_with_timeout(
        Command::new("protoc")
            .arg(format!(
                "--proto_path={}",
                proto.parent().unwrap().display()
            ))
            .arg("--decode=perfetto.protos.Trace")
            .arg(proto.file_name().unwrap())
            .stdin(std::fs::File::open(&trace).unwrap()),
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&decoded.stdout);
    assert!(
        decoded.status.success(),
        "protoc --decode failed: {}",
        String::from_utf8_lossy(&decoded.stderr)
    );
    // Every field written is one the definition knows (protoc prints unknown ones by number).
    let unknown: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert!(
        unknown.is_empty(),
        "fields the proto does not know: {unknown:?}"
    );

    let rec = r.recording();
    let count = |needle: &str| text.matches(needle).count();
    // Every CPU sample, every span (a begin and an end each), the workload's threads.
    let cpu = rec["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "cpu")
        .count();
    assert!(cpu > 100, "{cpu} CPU samples");
    assert_eq!(count("perf_sample {"), cpu);
    let spans = rec["spans"].as_array().unwrap().len();
    assert!(spans > 20, "{spans} spans");
    assert_eq!(count("name: \"mp_sleep\""), spans);
    assert_eq!(count("TYPE_SLICE_BEGIN"), count("TYPE_SLICE_END"));
    assert!(
        text.contains("thread_name: \"mp-sleeper\""),
        "no sleeper thread track"
    );
    assert!(text.contains("name: \"off-CPU\""), "no off-CPU track");
    // The hot functions are interned once and named in the samples' stacks.
    assert_eq!(count("str: \"mp_hot_a\""), 1);
    assert!(text.contains("sequence_flags: 1"));
}
