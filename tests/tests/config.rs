//! Settings from a YAML file, the environment and the command line, through the real binary:
//! precedence (command line > environment > file > defaults) as `config show` prints it and as
//! a real recording applies it, and every error path as a one-line error with exit code 2.
use std::{path::Path, process::Command};

use modelprobe_tests::*;

fn modelprobe(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(modelprobe_bin());
    c.args(args);
    for var in [
        "ENABLE_TRACING",
        "TRACE_LEVEL",
        "TRACE_OUTPUT_DIR",
        "ENABLE_PROFILING",
        "TRACE_SAMPLE_RATE",
        "MODELPROBE_CONFIG",
        "MODELPROBE_TRACE_LEVEL",
    ] {
        c.env_remove(var);
    }
    c.envs(env.iter().copied());
    c.output().expect("running modelprobe")
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = scratch_dir(name);
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The `(value, source)` of `key` in `config show` output.
fn shown(out: &str, key: &str) -> (String, String) {
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"));
    let rest = line[key.len()..].trim();
    let (value, source) = rest.rsplit_once("  (").expect("value  (source)");
    (
        value.trim().to_string(),
        source.trim_end_matches(')').to_string(),
    )
}

fn one_line_error(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(2), "exit code 2 for a bad setting");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("modelprobe: error: "), "{stderr}");
    stderr
}

#[test]
fn config_show_prints_each_value_and_where_it_came_from() {
    let file = write_config(
        "config-show",
        "tracing:\n  level: WARN\n  output_dir: /var/tmp/mp-out\nprofiling:\n  frequency: 49\nsampling:\n  rate: 0.5\nprobes:\n  - libfoo.so:bar@2\n",
    );
    let f = file.to_str().unwrap();
    let out = modelprobe(
        &["--config", f, "config", "show"],
        &[("TRACE_SAMPLE_RATE", "0.25"), ("TRACE_LEVEL", "error")],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&format!("config file: {f}")), "{text}");
    let from_file = format!("file {f}");
    assert_eq!(
        shown(&text, "tracing.level"),
        ("ERROR".into(), "env TRACE_LEVEL".into())
    );
    assert_eq!(
        shown(&text, "profiling.frequency"),
        ("49 Hz".into(), from_file.clone())
    );
    assert_eq!(
        shown(&text, "sampling.rate"),
        ("0.25".into(), "env TRACE_SAMPLE_RATE".into())
    );
    assert_eq!(
        shown(&text, "tracing.output_dir"),
        ("/var/tmp/mp-out".into(), from_file.clone())
    );
    assert_eq!(
        shown(&text, "probes"),
        ("libfoo.so:bar@2".into(), from_file)
    );
    assert_eq!(
        shown(&text, "profiling.cpu"),
        ("true".into(), "default".into())
    );

    // The prefixed variable wins over the plain one; $MODELPROBE_CONFIG names the file.
    let out = modelprobe(
        &["config", "show"],
        &[
            ("MODELPROBE_CONFIG", f),
            ("TRACE_LEVEL", "error"),
            ("MODELPROBE_TRACE_LEVEL", "info"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        shown(&text, "tracing.level"),
        ("INFO".into(), "env MODELPROBE_TRACE_LEVEL".into())
    );
    assert_eq!(shown(&text, "profiling.frequency").0, "49 Hz");
}

#[test]
fn bad_files_and_variables_are_one_line_errors_naming_key_and_line() {
    let cases = [
        (
            "tracing:\n  enabled: true\n  levle: INFO\n",
            ":3: ",
            "levle",
        ),
        ("profiling:\n  frequency: 0\n", ":2: ", "frequency"),
        ("sampling:\n  rate: 1.5\n", ":2: ", "sample rate"),
        ("tracing:\n  level: loud\n", ":2: ", "not a level"),
        ("profiling:\n  memory: sometimes\n", ":2: ", "memory"),
        ("probes:\n  - no-colon-here\n", ":2: ", "TARGET:SYMBOL"),
        ("gpu: true\n", ":1: ", "unknown field `gpu`"),
        ("tracing: [1, 2\n", "config.yaml:", ""),
    ];
    for (i, (text, at, what)) in cases.iter().enumerate() {
        let file = write_config(&format!("config-bad-{i}"), text);
        let out = modelprobe(&["--config", file.to_str().unwrap(), "config", "show"], &[]);
        let err = one_line_error(&out);
        assert!(
            err.contains(&format!("{}{at}", file.display())) || err.contains(at),
            "{err}"
        );
        assert!(err.contains(what), "{err}");
    }
    let err = one_line_error(&modelprobe(
        &["--config", "/nonexistent/modelprobe.yaml", "config", "show"],
        &[],
    ));
    assert!(err.contains("/nonexistent/modelprobe.yaml"), "{err}");
    for (var, value) in [
        ("ENABLE_TRACING", "maybe"),
        ("TRACE_LEVEL", "loud"),
        ("TRACE_SAMPLE_RATE", "0"),
        ("ENABLE_PROFILING", "2"),
    ] {
        let err = one_line_error(&modelprobe(&["config", "show"], &[(var, value)]));
        assert!(err.contains(var), "{err}");
    }
    // A bad setting stops a recording before anything is attached.
    let err = one_line_error(&modelprobe(
        &["run", "--", "true"],
        &[("TRACE_SAMPLE_RATE", "2")],
    ));
    assert!(err.contains("TRACE_SAMPLE_RATE"), "{err}");
}

#[test]
fn a_recording_applies_file_env_and_command_line_in_that_order() {
    if !require_bpf("a_recording_applies_file_env_and_command_line_in_that_order") {
        return;
    }
    let _bpf = bpf_lock();
    let file = write_config(
        "config-record",
        "tracing:\n  level: WARN\nprofiling:\n  frequency: 49\n  off_cpu: true\n",
    );
    let out = scratch_dir("config-record-out");
    // modelprobe --config FILE run --freq 199 -o OUT -- mp-workload --logs
    let rec = Session::run(&out, &["--freq", "199"])
        .global(&["--config", file.to_str().unwrap()])
        .workload(&["--logs"])
        .env("TRACE_LEVEL", "ERROR")
        .env_remove("MODELPROBE_TRACE_LEVEL")
        .expect_success()
        .recording();
    assert_eq!(rec["meta"]["frequency_hz"], 199, "the command line wins");
    assert_eq!(rec["meta"]["off_cpu"], true, "the file's off_cpu applies");
    let levels: Vec<&str> = rec["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["level"].as_str().unwrap_or("none"))
        .collect();
    // The workload prints INFO, WARN, ERROR, DEBUG, an unleveled line and FATAL: the
    // environment's ERROR beats the file's WARN.
    assert_eq!(levels, ["ERROR", "FATAL"], "{:?}", rec["logs"]);
    assert!(Path::new(&out.join("offcpu-flamegraph.svg")).exists());
}

#[test]
fn tracing_disabled_keeps_only_cpu_profiling() {
    if !require_bpf("tracing_disabled_keeps_only_cpu_profiling") {
        return;
    }
    let _bpf = bpf_lock();
    let twice = format!("{0} --logs && {0} --seconds 1", workload_bin().display());
    let rec = Session::run(&scratch_dir("config-no-tracing"), &[])
        .command("sh", &["-c", &twice])
        .env("ENABLE_TRACING", "false")
        .expect_success()
        .recording();
    assert_eq!(rec["logs"].as_array().map_or(0, Vec::len), 0);
    assert!(rec["samples"].as_array().is_some_and(|s| !s.is_empty()));
}
