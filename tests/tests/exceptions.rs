//! Uncaught Python exceptions as events: one that ends a thread and one that ends the process
//! (raised while handling another), read from the tracebacks the interpreter prints, with
//! their type, message, thread and Python stack.
use std::{process::Command, time::Duration};

use modelprobe_tests::*;

const SCRIPT: &str = "import threading
def work():
    1 / 0
t = threading.Thread(target=work, name='worker-1')
t.start()
t.join()
def load(path):
    raise FileNotFoundError(f'no {path}')
def main():
    try:
        load('m.bin')
    except FileNotFoundError as e:
        raise RuntimeError('model missing') from e
main()
";

#[test]
fn uncaught_python_exceptions_are_events_with_their_stacks() {
    if !require_bpf("uncaught_python_exceptions_are_events_with_their_stacks") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("python-exceptions");
    let run = run_agent(
        Command::new(modelprobe_bin())
            .args(["run", "-o"])
            .arg(out.join("rec"))
            .arg("--")
            .arg(python312())
            .args(["-c", SCRIPT]),
        Duration::from_secs(60),
    );
    assert_eq!(run.output.status.code(), Some(1), "{}", run.stderr());
    let rec = read_recording(&out.join("rec"));
    let events: Vec<&serde_json::Value> = rec["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "python_exception")
        .collect();
    assert_eq!(events.len(), 2, "{}", rec["events"]);
    let stack = |e: &serde_json::Value| frame_names(&rec, e["stack"].as_u64().expect("a stack"));
    let thread = events[0];
    assert_eq!(
        thread["message"],
        "ZeroDivisionError: division by zero (uncaught, ended thread worker-1), raised in work (<string>:3)"
    );
    assert_eq!(
        stack(thread).last().map(String::as_str),
        Some("work (<string>:3)")
    );
    let main = events[1];
    assert_eq!(
        main["message"],
        "RuntimeError: model missing (uncaught); while handling: FileNotFoundError: no m.bin, raised in main (<string>:13)"
    );
    assert_eq!(
        stack(main),
        ["<module> (<string>:14)", "main (<string>:13)"]
    );
    // The report lists them with the errors.
    let report = Command::new(modelprobe_bin())
        .args(["report"])
        .arg(out.join("rec"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(text.contains("python_exception"), "{text}");
}
