//! Every bad input ends in one clear line on stderr and its documented exit code, through the
//! real binary, before anything is attached.
use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use modelprobe_tests::*;

fn modelprobe(args: &[&str]) -> Output {
    run_with_timeout(
        Command::new(modelprobe_bin()).args(args),
        Duration::from_secs(30),
    )
}

/// Asserts the exit code and that stderr is exactly one `modelprobe: error:` line containing
/// `needle`.
fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one line, got: {stderr}");
    assert!(lines[0].starts_with("modelprobe: error: "), "{stderr}");
    assert!(
        lines[0].contains(needle),
        "{:?} does not mention {needle:?}",
        lines[0]
    );
}

#[test]
fn help_teaches_commands_and_exit_codes() {
    let out = modelprobe(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["attach", "run", "report", "Exit codes", "CAP_BPF"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
    let attach = String::from_utf8_lossy(&modelprobe(&["attach", "--help"]).stdout).into_owned();
    for word in [
        "--pid",
        "--duration",
        "--freq",
        "--off-cpu",
        "--output",
        "Examples",
    ] {
        assert!(
            attach.contains(word),
            "attach --help lacks {word}: {attach}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(
        modelprobe(&["attach"]).status.code(),
        Some(2),
        "missing --pid"
    );
    assert_eq!(modelprobe(&["attach", "--pid", "x"]).status.code(), Some(2));
    assert_eq!(
        modelprobe(&["attach", "--pid", "1", "--duration", "soon"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        modelprobe(&["run"]).status.code(),
        Some(2),
        "missing command"
    );
}

#[test]
fn report_of_something_that_is_not_a_recording() {
    let dir = scratch_dir("not-a-recording");
    assert_one_line_error(
        &modelprobe(&["report", dir.to_str().unwrap()]),
        1,
        "recording.json",
    );
    std::fs::write(dir.join("recording.json"), "{\"format\":\"other\"}").unwrap();
    assert_one_line_error(
        &modelprobe(&["report", dir.to_str().unwrap()]),
        1,
        "not a modelprobe recording",
    );
}

#[test]
fn without_privileges() {
    if !require_bpf("without_privileges") {
        return;
    }
    if !Path::new("/usr/bin/setpriv").exists() {
        panic!("setpriv (util-linux) is needed to drop privileges in this test");
    }
    // nobody, with no capabilities: must refuse before touching anything.
    let out = run_with_timeout(
        Command::new("/usr/bin/setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(modelprobe_bin())
            .args([
                "attach",
                "--pid",
                "1",
                "--duration",
                "1s",
                "-o",
                "/tmp/mp-never-written",
            ]),
        Duration::from_secs(30),
    );
    assert_one_line_error(&out, 3, "CAP_BPF+CAP_PERFMON");
    assert!(!Path::new("/tmp/mp-never-written").exists());
}

#[test]
fn target_pid_problems() {
    if !require_bpf("target_pid_problems") {
        return;
    }
    let out = scratch_dir("pid-errors");
    let o = out.to_str().unwrap();
    assert_one_line_error(
        &modelprobe(&["attach", "--pid", "4194304", "-o", o]),
        4,
        "pid 4194304 not found",
    );

    // A zombie: exited, not yet reaped by its parent (this test).
    let mut child = Command::new("true").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = child.id().to_string();
    assert_one_line_error(
        &modelprobe(&["attach", "--pid", &pid, "-o", o]),
        4,
        "already exited",
    );
    child.wait().unwrap();

    let me = std::process::id();
    let out_of_range = modelprobe(&["attach", "--pid", &me.to_string(), "--freq", "0", "-o", o]);
    assert_one_line_error(&out_of_range, 2, "--freq 0 is out of range");
    let ring = modelprobe(&["run", "--ring-buffer-kib", "100", "-o", o, "--", "true"]);
    assert_one_line_error(&ring, 2, "--ring-buffer-kib 100 is not a power of two");
}

#[test]
fn kernel_without_btf() {
    if !require_bpf("kernel_without_btf") {
        return;
    }
    let me = std::process::id().to_string();
    let out = run_with_timeout(
        Command::new(modelprobe_bin())
            .args(["attach", "--pid", &me, "--duration", "1s"])
            .env("MODELPROBE_KERNEL_BTF", "/nonexistent/vmlinux"),
        Duration::from_secs(30),
    );
    assert_one_line_error(&out, 5, "kernel BTF not found");
}

#[test]
fn unwritable_output_directory() {
    if !require_bpf("unwritable_output_directory") {
        return;
    }
    let me = std::process::id().to_string();
    let under_a_file = scratch_dir("out-file").join("a-file");
    std::fs::write(&under_a_file, "").unwrap();
    let bad = under_a_file.join("sub");
    let out = modelprobe(&["attach", "--pid", &me, "-o", bad.to_str().unwrap()]);
    assert_one_line_error(&out, 6, "cannot write output directory");
}

#[test]
fn run_of_a_missing_command() {
    if !require_bpf("run_of_a_missing_command") {
        return;
    }
    let out = scratch_dir("missing-cmd");
    let o = out.to_str().unwrap();
    assert_one_line_error(
        &modelprobe(&["run", "-o", o, "--", "no-such-command-mp"]),
        127,
        "no-such-command-mp",
    );
    use std::os::unix::fs::PermissionsExt;
    let plain = out.join("plain-file");
    std::fs::write(&plain, "not a program").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = plain.to_str().unwrap();
    assert_one_line_error(
        &modelprobe(&["run", "-o", o, "--", p]),
        127,
        "not an executable",
    );
    // Executable bit but no valid format: the exec itself fails, in the child.
    let garbage = out.join("garbage");
    std::fs::write(&garbage, [0u8, 1, 2, 3]).unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
    let g = garbage.to_str().unwrap();
    assert_one_line_error(
        &modelprobe(&["run", "-o", o, "--", g]),
        127,
        "garbage: Exec format error",
    );
}

#[test]
fn probes_lists_where_specs_attach_without_attaching() {
    let workload = start_workload(&["--seconds", "20"]);
    let pid = workload.0.id().to_string();
    let out = modelprobe(&[
        "probes",
        "--pid",
        &pid,
        "--probe",
        "mp-workload:mp_span_*@2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("2 function(s)"), "{text}");
    assert!(
        text.contains("mp_span_outer") && text.contains("mp_span_target"),
        "{text}"
    );
    let typo = modelprobe(&["probes", "--pid", &pid, "--probe", "mp-workload:mp_hot_c"]);
    assert_one_line_error(&typo, 2, "close matches: mp_hot_a");
}
