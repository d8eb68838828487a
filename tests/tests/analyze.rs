//! `modelprobe analyze`, run for real: the checked-in logs of `tests/data/logs/` (one per shape:
//! Python logging with tracebacks, glog, JSON lines, syslog, vLLM, plain, binary junk) with
//! exact counts per level, error groups and filters; bad inputs; and, as root, recordings made
//! by the agent of the fixture workload, whose log lines and spans are known.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use modelprobe_tests::*;
use serde_json::{json, Value};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/logs")
        .join(name)
}

fn analyze(args: &[&str], inputs: &[PathBuf]) -> Output {
    run_with_timeout(
        Command::new(modelprobe_bin())
            .arg("analyze")
            .args(args)
            .args(inputs),
        Duration::from_secs(60),
    )
}

/// `analyze --json ARGS INPUTS`: the item lines and the summary.
fn analyze_json(args: &[&str], inputs: &[PathBuf]) -> (Vec<Value>, Value) {
    let out = analyze(&[&["--json"], args].concat(), inputs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "analyze {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let last = lines.pop().expect("a summary line");
    let summary = last["summary"].clone();
    assert!(summary.is_object(), "last line is the summary: {last}");
    for item in &lines {
        for key in [
            "input",
            "t",
            "level",
            "kind",
            "name",
            "message",
            "duration_ns",
        ] {
            assert!(item.get(key).is_some(), "item without {key}: {item}");
        }
    }
    assert_eq!(summary["items"], lines.len(), "one line per matching item");
    (lines, summary)
}

/// `{"FATAL":..,"ERROR":..,"WARN":..,"INFO":..,"DEBUG":..,"none":..}`.
fn levels(fatal: u64, error: u64, warn: u64, info: u64, debug: u64, none: u64) -> Value {
    json!({"FATAL": fatal, "ERROR": error, "WARN": warn, "INFO": info, "DEBUG": debug, "none": none})
}

/// `(normalized message, count, sample)` of each error group, in order.
fn groups(summary: &Value) -> Vec<(String, u64, String)> {
    summary["errors"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["message"].as_str().unwrap().to_string(),
                g["count"].as_u64().unwrap(),
                g["sample"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn group(message: &str, count: u64, sample: &str) -> (String, u64, String) {
    (message.to_string(), count, sample.to_string())
}

fn count(args: &[&str], input: &str) -> u64 {
    analyze_json(args, &[data(input)]).1["items"]
        .as_u64()
        .unwrap()
}

#[test]
fn python_logging_with_tracebacks() {
    let log = data("python-logging.log");
    let (items, s) = analyze_json(&[], std::slice::from_ref(&log));
    assert_eq!(s["items"], 18);
    assert_eq!(s["levels"], levels(1, 3, 3, 9, 2, 0));
    let input = &s["inputs"][0];
    assert_eq!(input["input"], log.display().to_string());
    assert_eq!(
        (
            &input["kind"],
            &input["lines"],
            &input["errors"],
            &input["warnings"]
        ),
        (&json!("log"), &json!(28), &json!(4), &json!(3))
    );
    assert_eq!(input["first"], "2024-11-24T13:00:00.001000000Z");
    assert_eq!(input["last"], "2024-11-24T13:00:32.000000000Z");
    assert_eq!(s["errors"]["total"], 4);
    assert_eq!(
        groups(&s),
        [
            group(
                "request <N> failed: timeout after <N>ms",
                2,
                "request 17 failed: timeout after 31ms"
            ),
            group(
                "CUDA out of memory. Tried to allocate <N>.<N> GiB (GPU <N>; <N>.<N> GiB total capacity)",
                1,
                "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total capacity)"
            ),
            group("engine dead, shutting down", 1, "engine dead, shutting down"),
        ]
    );
    let first_error = &items[8];
    assert_eq!(first_error["level"], "ERROR");
    assert_eq!(first_error["kind"], "log");
    assert_eq!(first_error["name"], "server.engine");
    assert_eq!(first_error["t"], "2024-11-24T13:00:12.003000000Z");
    let text = first_error["message"].as_str().unwrap();
    assert_eq!(
        text.lines().count(),
        7,
        "the traceback is part of it: {text}"
    );
    assert!(
        text.ends_with("\nTimeoutError: timeout after 31ms"),
        "{text}"
    );

    // The pattern sees the traceback; level is a minimum, FATAL counting as ERROR.
    let (items, _) = analyze_json(&["--pattern", "TimeoutError"], &[log]);
    assert_eq!(items.len(), 2);
    assert_eq!(count(&["--level", "warn"], "python-logging.log"), 7);
    assert_eq!(count(&["--level", "error"], "python-logging.log"), 4);
    assert_eq!(count(&["--level", "debug"], "python-logging.log"), 18);
    // 20 s after the first line (13:00:00.001) excludes the line at 13:00:20.000.
    assert_eq!(count(&["--since", "20s"], "python-logging.log"), 5);
    assert_eq!(
        count(&["--until", "2024-11-24 13:00:05"], "python-logging.log"),
        4
    );
    assert_eq!(
        count(
            &[
                "--since",
                "2024-11-24T13:00:12Z",
                "--until",
                "2024-11-24T13:00:16Z"
            ],
            "python-logging.log"
        ),
        4
    );
    assert_eq!(
        count(
            &["--pattern", "completions 500", "--level", "info"],
            "python-logging.log"
        ),
        2
    );
    assert_eq!(
        count(&["--min-duration", "1ms"], "python-logging.log"),
        0,
        "log lines have no duration"
    );
}

#[test]
fn glog_with_its_header_and_a_check_failure() {
    let (items, s) = analyze_json(&[], &[data("glog.log")]);
    assert_eq!(s["items"], 19, "15 glog lines and the 4 header lines");
    assert_eq!(s["levels"], levels(1, 4, 3, 7, 0, 4));
    assert_eq!(s["inputs"][0]["lines"], 22);
    assert_eq!(
        groups(&s),
        [
            group(
                "CUDA error: an illegal memory access was encountered (<N>) at <hex>",
                3,
                "CUDA error: an illegal memory access was encountered (700) at 0x7f3a00c0"
            ),
            group(
                "batch <N> failed after <N> attempts",
                1,
                "batch 2 failed after 2 attempts"
            ),
            group(
                "Check failed: status == cudaSuccess (<N> vs. <N>)",
                1,
                "Check failed: status == cudaSuccess (700 vs. 0)"
            ),
        ]
    );
    // The header's year dates the lines; glog's microseconds are kept.
    assert_eq!(s["inputs"][0]["first"], "2024-11-24T13:01:00.000100000Z");
    let fatal = items.last().unwrap();
    assert_eq!(fatal["level"], "FATAL");
    assert_eq!(fatal["name"], "engine.cc:400");
    assert_eq!(
        fatal["message"].as_str().unwrap().lines().count(),
        4,
        "the stack trace is part of it"
    );
    assert!(items[..4].iter().all(|i| i["t"].is_null()));
}

#[test]
fn json_lines_with_common_keys() {
    let (items, s) = analyze_json(&[], &[data("jsonl.log")]);
    assert_eq!(s["items"], 10);
    assert_eq!(s["levels"], levels(1, 2, 2, 4, 1, 0));
    assert_eq!(s["inputs"][0]["lines"], 12);
    assert_eq!(
        groups(&s),
        [
            group(
                "upstream replica-<N> returned <N> after <N>ms",
                2,
                "upstream replica-1 returned 503 after 2004ms"
            ),
            group("no healthy replicas", 1, "no healthy replicas"),
        ]
    );
    let epoch = &items[6];
    assert_eq!(epoch["t"], "2024-11-24T13:02:10.250000000Z");
    assert_eq!(epoch["level"], "INFO");
    assert_eq!(epoch["name"], Value::Null);
    assert_eq!(epoch["message"], "autoscaler: scaling to 3 replicas");
    assert_eq!(items[7]["name"], "autoscaler");
    assert_eq!(items[7]["t"], "2024-11-24T13:02:12.000000000Z");
    assert_eq!(
        items[8]["message"],
        "no healthy replicas\nnot json: a line from print() between records"
    );
}

#[test]
fn syslog_tags_and_levels() {
    let (items, s) = analyze_json(&[], &[data("syslog.log")]);
    assert_eq!(s["items"], 12);
    assert_eq!(s["levels"], levels(0, 2, 1, 3, 0, 6));
    assert_eq!(
        groups(&s),
        [
            group(
                "CUDA error: unspecified launch failure",
                1,
                "CUDA error: unspecified launch failure"
            ),
            group("engine loop died", 1, "engine loop died"),
        ]
    );
    let error = &items[6];
    assert_eq!(error["name"], "vllm");
    // syslog has no year: only the rest is certain.
    let t = error["t"].as_str().unwrap();
    assert!(t.ends_with("-11-24T13:03:21.000000000Z"), "{t}");
    assert_eq!(items[0]["name"], "systemd");
    assert_eq!(items[4]["name"], "kernel");
    assert_eq!(count(&["--pattern", "^vllm$"], "syslog.log"), 6);
}

#[test]
fn vllm_tracebacks_stay_one_item() {
    let (items, s) = analyze_json(&[], &[data("vllm-like.log")]);
    assert_eq!(s["items"], 16);
    assert_eq!(s["levels"], levels(0, 2, 2, 11, 1, 0));
    assert_eq!(s["inputs"][0]["lines"], 20);
    assert_eq!(
        groups(&s),
        [
            group(
                "Engine background task failed",
                1,
                "Engine background task failed"
            ),
            group(
                "EngineCore hit an exception",
                1,
                "EngineCore hit an exception"
            ),
        ]
    );
    let failed = &items[13];
    assert_eq!(failed["name"], "engine.py:135");
    let text = failed["message"].as_str().unwrap();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.contains("\n  File \"/vllm/engine/async_llm_engine.py\", line 48"));
    assert_eq!(items[14]["name"], "core.py:291");
    assert_eq!(count(&["--pattern", "illegal memory"], "vllm-like.log"), 1);
    assert_eq!(count(&["--level", "warn"], "vllm-like.log"), 4);
}

#[test]
fn plain_and_binary_logs() {
    let (items, s) = analyze_json(&[], &[data("plain.log")]);
    assert_eq!(s["items"], 10);
    assert_eq!(s["levels"], levels(0, 2, 1, 0, 0, 7));
    assert_eq!(s["inputs"][0]["lines"], 13);
    assert!(items.iter().all(|i| i["t"].is_null()));
    assert_eq!(
        items[7]["message"],
        "Error: sampling produced NaN at step 57\n  at sampler.py:88\n  at generate.py:140"
    );
    assert_eq!(
        groups(&s),
        [
            group(
                "failed to open ./lora/adapter.safetensors: No such file or directory",
                1,
                "failed to open ./lora/adapter.safetensors: No such file or directory"
            ),
            group("generation aborted", 1, "generation aborted"),
        ]
    );
    assert_eq!(
        count(&["--since", "1s"], "plain.log"),
        0,
        "no times, so nothing is within a time bound"
    );

    let (items, s) = analyze_json(&[], &[data("binary-junk.log")]);
    assert_eq!(s["inputs"][0]["lines"], 5);
    assert_eq!(s["levels"], levels(0, 1, 1, 1, 0, 0));
    assert_eq!(
        items[1]["message"],
        "bad \u{fffd}\u{fffd}\u{fffd} byte\n\u{0}\u{1}\u{2}\u{1b}[31m red"
    );
}

#[test]
fn several_inputs_add_up_and_the_text_is_a_table() {
    let names = [
        "python-logging.log",
        "glog.log",
        "jsonl.log",
        "syslog.log",
        "vllm-like.log",
        "plain.log",
        "binary-junk.log",
    ];
    let inputs: Vec<PathBuf> = names.iter().map(|n| data(n)).collect();
    let (_, s) = analyze_json(&["--level", "warn"], &inputs);
    let per_input: Vec<(u64, u64)> = s["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["items"].as_u64().unwrap(), i["errors"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        per_input,
        [(7, 4), (8, 5), (5, 3), (3, 2), (4, 2), (3, 2), (2, 1)]
    );
    assert_eq!(s["items"], 32);
    assert_eq!(s["read"], 18 + 19 + 10 + 12 + 16 + 10 + 3);
    assert_eq!(s["errors"]["total"], 19);
    assert_eq!(s["filters"], json!(["level >= WARN"]));

    let out = analyze(&["--level", "warn"], &[data("python-logging.log")]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let input = data("python-logging.log").display().to_string();
    assert!(
        text.starts_with("1 input: 7 of 18 items match level >= WARN\n"),
        "{text}"
    );
    assert!(text.contains(
        "\
  level  spans  events  logs  total
  FATAL      0       0     1      1
  ERROR      0       0     3      3
  WARN       0       0     3      3
  INFO       0       0     0      0
  DEBUG      0       0     0      0
  none       0       0     0      0
  total      0       0     7      7
"
    ));
    assert!(text.contains("errors: 4 in 3 groups\n"), "{text}");
    assert!(
        text.contains(&format!(
            "      2  2024-11-24T13:00:12.003Z  {input}  request 17 failed: timeout after 31ms\n"
        )),
        "{text}"
    );
}

#[test]
fn bad_inputs_are_one_line_errors_with_exit_status_2() {
    let dir = scratch_dir("analyze-bad");
    let check = |args: &[&str], inputs: &[PathBuf], want: &str| {
        let out = analyze(args, inputs);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("error: "), "{stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "nothing written before the error");
    };
    check(
        &[],
        &[data("plain.log"), dir.join("missing.log")],
        "missing.log: no such file or directory",
    );
    check(
        &[],
        std::slice::from_ref(&dir),
        "is a directory without recording.json",
    );
    check(&["--pattern", "a("], &[data("plain.log")], "a(");
    check(&["--since", "yesterday"], &[data("plain.log")], "yesterday");
    check(
        &["--until", "2024-13-45"],
        &[data("plain.log")],
        "2024-13-45",
    );
}

#[test]
fn recordings_of_the_workload() {
    if !require_bpf("recordings_of_the_workload") {
        return;
    }
    let _bpf = bpf_lock();
    let logs = scratch_dir("analyze-logs");
    Session::run(&logs, &[])
        .workload(&["--logs"])
        .expect_success();
    let spans = scratch_dir("analyze-spans");
    Session::run(&spans, &["--probe", "mp-workload:mp_span_*@1"])
        .workload(&["--calls", "25"])
        .expect_success();

    // `--logs` prints `ready <pid>` and six known lines, one of each level and one without.
    let (items, s) = analyze_json(&[], std::slice::from_ref(&logs));
    assert_eq!(
        s["kinds"]["log"],
        json!({"total": 7, "FATAL": 1, "ERROR": 1, "WARN": 1, "INFO": 1, "DEBUG": 1, "none": 2})
    );
    assert_eq!(s["inputs"][0]["kind"], "recording");
    assert_eq!(s["inputs"][0]["lines"], Value::Null);
    let logged: Vec<(&str, &str)> = items
        .iter()
        .filter(|i| i["kind"] == "log" && i["level"].is_string())
        .map(|i| (i["level"].as_str().unwrap(), i["message"].as_str().unwrap()))
        .collect();
    let mut logged = logged;
    logged.sort();
    assert_eq!(
        logged,
        [
            ("DEBUG", "[DEBUG] vectored write"),
            (
                "ERROR",
                "E1124 13:01:02.123456  42 server.cc:10] CUDA error out of memory"
            ),
            ("FATAL", "CRITICAL: giving up"),
            ("INFO", "INFO: starting up"),
            ("WARN", "WARNING:model:slow layer 3"),
        ]
    );
    assert_eq!(
        s["errors"]["total"], 2,
        "a clean run: errors are the two lines"
    );
    assert!(items.iter().all(|i| i["t"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z') && !t.starts_with("1970"))));
    let (items, _) = analyze_json(&["--level", "error"], std::slice::from_ref(&logs));
    assert_eq!(items.len(), 2);

    // `--calls 25`: 25 nested pairs, the inner call sleeping 2 ms.
    let (items, s) = analyze_json(&["--min-duration", "2ms"], std::slice::from_ref(&spans));
    assert_eq!(s["kinds"]["span"]["total"], 50);
    assert_eq!(s["kinds"]["span"]["INFO"], 50);
    assert!(items.iter().all(|i| i["kind"] == "span"));
    let stats = s["spans"].as_array().unwrap();
    assert_eq!(stats.len(), 2);
    for st in stats {
        assert_eq!(st["count"], 25, "{st}");
        assert!(st["p50_ns"].as_u64().unwrap() >= 2_000_000, "{st}");
        assert!(st["max_ns"].as_u64() >= st["p95_ns"].as_u64(), "{st}");
    }
    assert_eq!(
        stats[0]["name"], "mp_span_outer",
        "the outer call includes the inner one"
    );
    assert_eq!(s["slowest"].as_array().unwrap().len(), 10);
    let target = items
        .iter()
        .find(|i| i["name"] == "mp_span_target")
        .unwrap();
    assert_eq!(target["message"], "mp_span_target(0) = 0");
    let (_, s) = analyze_json(
        &["--pattern", "^mp_span_target$", "--top", "3"],
        std::slice::from_ref(&spans),
    );
    assert_eq!(s["items"], 25);
    assert_eq!(s["slowest"].as_array().unwrap().len(), 3);
    let (_, s) = analyze_json(
        &["--pattern", "^calls 25 sum 625$"],
        std::slice::from_ref(&spans),
    );
    assert_eq!(s["kinds"]["log"]["total"], 1, "the workload's last line");

    // Both recordings and a log, in one summary.
    let (_, s) = analyze_json(&["--level", "error"], &[logs, spans, data("plain.log")]);
    let per_input: Vec<u64> = s["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["errors"].as_u64().unwrap())
        .collect();
    assert_eq!(per_input, [2, 0, 2]);
    assert_eq!(s["errors"]["total"], 4);
}
