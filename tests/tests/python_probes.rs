//! Python function spans (`--probe py:MODULE:QUALNAME`, the PyTorch pack), for real, as root,
//! against pyenv's interpreters: exact span counts and nesting for known calls (methods,
//! nested functions, generators, coroutines, recursion, a module imported later), argument and
//! return values, an exception leaving a probed function; CPython before 3.12 gets its one-line
//! reason; attach to a running interpreter and detach, after which the function runs at its old
//! speed with nothing of modelprobe left running; the PyTorch pack on a stand-in `nn.Module`.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use modelprobe_tests::*;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/python/probes")
}

/// `modelprobe run [FLAGS] -o OUT/rec -- PYTHON fixtures/SCRIPT`, succeeded: its stderr and
/// recording.
fn run_script(out: &Path, flags: &[&str], python: &Path, script: &str) -> (String, Value) {
    let run = run_agent(
        Command::new(modelprobe_bin())
            .arg("run")
            .args(flags)
            .arg("-o")
            .arg(out.join("rec"))
            .arg("--")
            .arg(python)
            .arg(fixtures().join(script)),
        Duration::from_secs(60),
    );
    run.assert_success();
    (run.stderr(), read_recording(&out.join("rec")))
}

/// (function, span) pairs of the recording's Python spans, in start order.
fn python_spans(rec: &Value) -> Vec<(String, Value)> {
    let probes = rec["probes"].as_array().unwrap();
    rec["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let p = &probes[s["probe"].as_u64().unwrap() as usize];
            p["spec"]
                .as_str()
                .unwrap()
                .starts_with("py:")
                .then(|| (p["function"].as_str().unwrap().to_string(), s.clone()))
        })
        .collect()
}

fn counts(spans: &[(String, Value)]) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for (f, _) in spans {
        *c.entry(f.clone()).or_default() += 1;
    }
    c
}

fn of<'a>(spans: &'a [(String, Value)], f: &str) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|(n, _)| n == f)
        .map(|(_, s)| s)
        .collect()
}

#[test]
fn python_spans_are_exact_on_3_12_and_3_13() {
    if !require_bpf("python_spans_are_exact_on_3_12_and_3_13") {
        return;
    }
    let _bpf = bpf_lock();
    for minor in [12, 13] {
        let Some(python) = pyenv_python(minor) else {
            missing(&format!("pyenv's CPython 3.{minor}"));
            continue;
        };
        let out = scratch_dir(&format!("python-probes-3{minor}"));
        let (stderr, rec) = run_script(
            &out,
            &[
                "--probe",
                "py:__main__:*@args@ret",
                "--probe",
                "py:late_mod:*@args@ret",
            ],
            &python,
            "probed_app.py",
        );
        let spans = python_spans(&rec);
        let want: BTreeMap<String, usize> = [
            ("__main__.f", 4),
            ("__main__.C.m", 1),
            ("__main__.C.s", 1),
            // 3 yields and the return; then one run to the first yield, and, on 3.12, its
            // close (3.13 closes a generator suspended outside any `try` without running it).
            ("__main__.gen", if minor == 12 { 6 } else { 5 }),
            ("__main__.outer", 1),
            ("__main__.outer.<locals>.inner", 2),
            ("__main__.rec", 4),
            // Started, suspended at the await, resumed, returned.
            ("__main__.co", 2),
            ("__main__.boom", 1),
            ("late_mod.later", 1),
        ]
        .into_iter()
        .map(|(f, n)| (f.to_string(), n))
        .collect();
        assert_eq!(counts(&spans), want, "3.{minor}: {stderr}");

        // Values and nesting.
        let f = of(&spans, "__main__.f");
        assert_eq!(f[0]["attrs"]["args"], "x=0");
        assert_eq!(f[0]["attrs"]["return"], "1");
        assert_eq!(f[0]["depth"], 0);
        let in_m = f.iter().find(|s| s["attrs"]["args"] == "x=5").unwrap();
        assert_eq!(in_m["depth"], 1, "f called from C.m nests under it");
        let m = of(&spans, "__main__.C.m")[0];
        assert!(m["start_ns"].as_u64() <= in_m["start_ns"].as_u64());
        assert!(m["end_ns"].as_u64() >= in_m["end_ns"].as_u64());
        assert_eq!(m["attrs"]["return"], "12");
        let callers = frame_names(&rec, in_m["stack"].as_u64().expect("a caller stack"));
        assert_eq!(callers, ["<module> (probed_app.py)", "C.m (probed_app.py)"]);
        let depths: Vec<u64> = of(&spans, "__main__.rec")
            .iter()
            .map(|s| s["depth"].as_u64().unwrap())
            .collect();
        assert_eq!(depths, [0, 1, 2, 3]);
        let gen = of(&spans, "__main__.gen");
        assert_eq!(gen[0]["attrs"]["args"], "n=3");
        assert!(gen[..3].iter().all(|s| s["attrs"]["yielded"] == true));
        assert!(gen[1..4].iter().all(|s| s["attrs"]["resumed"] == true));
        assert_eq!(gen[3]["attrs"]["return"], "None");
        assert_eq!(gen[4]["attrs"]["yielded"], true);
        if minor == 12 {
            assert_eq!(gen[5]["attrs"]["resumed"], true);
            assert!(
                gen[5]["attrs"].get("error").is_none(),
                "a closed generator is no error: {}",
                gen[5]
            );
        }
        let co = of(&spans, "__main__.co");
        assert_eq!(co[0]["attrs"]["yielded"], true);
        assert_eq!(co[1]["attrs"]["return"], "1");
        let later = of(&spans, "late_mod.later")[0];
        assert_eq!(
            (&later["attrs"]["args"], &later["attrs"]["return"]),
            (&"n=2".into(), &"20".into())
        );

        // The exception that left boom: its span's error, and one event with its stack.
        let boom = of(&spans, "__main__.boom")[0];
        assert_eq!(boom["attrs"]["error"], "ValueError: bad thing");
        let events: Vec<&Value> = rec["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "python_exception")
            .collect();
        assert_eq!(events.len(), 1, "{}", rec["events"]);
        assert_eq!(
            events[0]["message"],
            "ValueError: bad thing (escaped __main__.boom)"
        );
        assert_eq!(
            frame_names(&rec, events[0]["stack"].as_u64().unwrap()),
            ["<module> (probed_app.py)", "boom (probed_app.py)"]
        );
        assert_eq!(rec["meta"]["lost"]["python_span_records"], 0);
        let trace = std::fs::read_to_string(out.join("rec/trace.json")).unwrap();
        assert!(
            trace.contains("__main__.C.m"),
            "Python spans on the timeline"
        );
        let report = report_rows(&out.join("rec"), "spans");
        assert_eq!(
            row(&report, "__main__.boom")[9],
            1,
            "errors column: {report:?}"
        );
    }
}

#[test]
fn python_before_3_12_gets_one_line_and_the_rest_records() {
    if !require_bpf("python_before_3_12_gets_one_line_and_the_rest_records") {
        return;
    }
    let _bpf = bpf_lock();
    for minor in [9, 10, 11] {
        let Some(python) = pyenv_python(minor) else {
            missing(&format!("pyenv's CPython 3.{minor}"));
            continue;
        };
        let out = scratch_dir(&format!("python-probes-old-3{minor}"));
        let (err, rec) = run_script(
            &out,
            &["--probe", "py:__main__:f"],
            &python,
            "probed_app.py",
        );
        let line = err
            .lines()
            .find(|l| l.contains("Python probes off"))
            .unwrap_or_else(|| panic!("no reason given on 3.{minor}: {err}"));
        assert!(
            line.contains("need CPython 3.12+ (sys.monitoring, PEP 669)")
                && line.contains(&format!("runs 3.{minor}.")),
            "{line}"
        );
        assert!(python_spans(&rec).is_empty());
        assert!(
            rec["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "process_exit"),
            "the rest is recorded"
        );
    }
}

/// The attach target: batches of 1000 calls of `work`, each batch's time appended to
/// `DIR/times` (`monotonic_ns seconds`); once `DIR/import` exists it imports `late_mod` and
/// calls `later` each batch; at `DIR/stop` it prints the sys.monitoring tool 4's holder.
const ATTACH_APP: &str = r#"
import os, sys, time
d = sys.argv[1]
sys.path.insert(0, sys.argv[2])
def work(i):
    return i * 2
def batch():
    t = time.perf_counter()
    for i in range(1000):
        work(i)
    return time.perf_counter() - t
print("ready", flush=True)
times = open(os.path.join(d, "times"), "a")
while not os.path.exists(os.path.join(d, "stop")):
    took = batch()
    times.write(f"{time.monotonic_ns()} {took}\n")
    times.flush()
    if os.path.exists(os.path.join(d, "import")):
        import late_mod
        late_mod.later(1)
    time.sleep(0.02)
print("tools", [sys.monitoring.get_tool(i) for i in range(6)], flush=True)
"#;

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "no batches in that phase");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fds_named(pid: u32, needle: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains(needle))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn attach_sets_probes_live_and_detach_leaves_the_process_as_it_was() {
    if !require_bpf("attach_sets_probes_live_and_detach_leaves_the_process_as_it_was") {
        return;
    }
    let _bpf = bpf_lock();
    let dir = scratch_dir("python-probes-attach");
    let mut app = KillOnDrop(
        Command::new(python312())
            .args(["-c", ATTACH_APP])
            .arg(&dir)
            .arg(fixtures())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = app.0.id();
    let times = dir.join("times");
    let start = Instant::now();
    while std::fs::read_to_string(&times).map_or(0, |t| t.lines().count()) < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the app never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let threads_before = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    let mut agent = Agent::spawn(
        Command::new(modelprobe_bin())
            .args([
                "attach",
                "--pid",
                &pid.to_string(),
                "--duration",
                "3s",
                "-o",
            ])
            .arg(dir.join("rec"))
            .args([
                "--probe",
                "py:__main__:work",
                "--probe",
                "py:late_mod:later",
            ]),
    );
    agent.wait_for_stderr("Python probes in pid", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(dir.join("import"), "").unwrap();
    let run = agent.finish(Duration::from_secs(60));
    run.assert_success();
    let err = run.stderr();
    assert!(err.contains("probes removed, tool id freed"), "{err}");
    // Let it run on unobserved, then stop it.
    std::thread::sleep(Duration::from_millis(1500));
    let threads_after = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert_eq!(
        threads_after, threads_before,
        "a thread of the library still runs"
    );
    assert_eq!(
        fds_named(pid, "memfd:modelprobe-py "),
        0,
        "the ring is closed"
    );
    std::fs::write(dir.join("stop"), "").unwrap();
    let out = std::mem::replace(&mut app.0, Command::new("true").spawn().unwrap())
        .wait_with_output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("tools [None, None, None, None, None, None]"),
        "the tool id is free again: {stdout}"
    );

    let rec = read_recording(&dir.join("rec"));
    let spans = python_spans(&rec);
    let c = counts(&spans);
    assert!(c["__main__.work"] >= 1000, "{c:?}");
    assert!(
        c.keys().all(|f| !f.starts_with("[code")),
        "every code was named, even with records dropped: {c:?}"
    );
    assert!(
        c.get("late_mod.later").copied().unwrap_or(0) >= 1,
        "imported while attached: {c:?}"
    );
    // Batch times before, during and after: after detach, the old speed.
    let (t0, t1) = (
        rec["meta"]["start_ns"].as_u64().unwrap(),
        rec["meta"]["end_ns"].as_u64().unwrap(),
    );
    let mut phases = [Vec::new(), Vec::new(), Vec::new()];
    for line in std::fs::read_to_string(&times).unwrap().lines() {
        let (t, s) = line.split_once(' ').unwrap();
        let (t, s): (u64, f64) = (t.parse().unwrap(), s.parse().unwrap());
        let phase = if t < t0 {
            0
        } else if t <= t1 {
            1
        } else {
            2
        };
        phases[phase].push(s);
    }
    let [before, during, after] = phases.map(median);
    // While probed each call costs several times its own time; after detach, none of that.
    assert!(
        during > before * 2.0,
        "the probe's cost shows while attached: {before} {during}"
    );
    assert!(
        after < before * 1.5,
        "after detach work runs at its old speed: before {before}s, after {after}s (during {during}s)"
    );
}

#[test]
fn pytorch_pack_names_modules_by_path_and_no_packs_turns_it_off() {
    if !require_bpf("pytorch_pack_names_modules_by_path_and_no_packs_turns_it_off") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("python-probes-torch");
    let (stderr, rec) = run_script(&out, &[], &python312(), "torch_model.py");
    let spans = python_spans(&rec);
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for name in [
        "LM",
        "model (Model)",
        "model.layers.0 (Layer)",
        "model.layers.0.self_attn (Attention)",
        "model.layers.0.mlp (MLP)",
        "model.layers.1 (Layer)",
        "model.layers.1.self_attn (Attention)",
        "model.layers.1.mlp (MLP)",
    ] {
        want.insert(name.to_string(), 3);
    }
    assert_eq!(counts(&spans), want, "{stderr}");
    let attn = of(&spans, "model.layers.1.self_attn (Attention)")[0];
    let layer = of(&spans, "model.layers.1 (Layer)")[0];
    assert_eq!(
        attn["depth"].as_u64(),
        Some(layer["depth"].as_u64().unwrap() + 1)
    );
    let probes = rec["probes"].as_array().unwrap();
    assert!(probes
        .iter()
        .filter(|p| p["spec"].as_str().unwrap().starts_with("py:"))
        .all(|p| p["pack"] == "pytorch"));
    let layers = report_rows(&out.join("rec"), "pytorch_layers");
    assert_eq!(layers.len(), 8, "{layers:?}");
    assert_eq!(row(&layers, "model.layers.0.mlp (MLP)")[1], 3);

    let off = scratch_dir("python-probes-torch-off");
    let (stderr, rec) = run_script(&off, &["--no-packs"], &python312(), "torch_model.py");
    assert!(!stderr.contains("Python probes"), "{stderr}");
    assert!(python_spans(&rec).is_empty());
}

#[test]
fn transformers_pack_times_generate_and_counts_tokens() {
    if !require_bpf("transformers_pack_times_generate_and_counts_tokens") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("python-probes-transformers");
    let (stderr, rec) = run_script(&out, &[], &python312(), "transformers_app.py");
    let spans = python_spans(&rec);
    let names: Vec<&str> = spans.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        names,
        [
            "transformers.tokenization_utils_base.PreTrainedTokenizerBase.encode",
            "transformers.generation.utils.GenerationMixin.generate",
            "Tiny",
            "Tiny",
            "Tiny",
            "transformers.tokenization_utils_base.PreTrainedTokenizerBase.decode",
        ],
        "{stderr}"
    );
    assert_eq!(spans[0].1["attrs"]["return"], "len=5", "tokens encoded");
    assert_eq!(
        spans[5].1["attrs"]["args"], "len(token_ids)=8",
        "tokens decoded"
    );
    let generate = &spans[1].1;
    for (_, step) in &spans[2..5] {
        assert_eq!(step["depth"], 1, "each step's forward under generate");
        assert!(step["start_ns"].as_u64() >= generate["start_ns"].as_u64());
    }
    let probes = rec["probes"].as_array().unwrap();
    let pack = |f: &str| {
        probes
            .iter()
            .find(|p| p["function"] == f)
            .map(|p| p["pack"].clone())
            .unwrap()
    };
    assert_eq!(pack("Tiny"), "pytorch");
    assert_eq!(
        pack("transformers.generation.utils.GenerationMixin.generate"),
        "transformers"
    );

    // vLLM's engine steps, with the batch each returned.
    let vllm = scratch_dir("python-probes-vllm");
    let (_, rec) = run_script(&vllm, &[], &python312(), "vllm_app.py");
    let steps: Vec<(String, Value)> = python_spans(&rec);
    let batches: Vec<&Value> = steps.iter().map(|(_, s)| &s["attrs"]["return"]).collect();
    assert_eq!(batches, ["len=3", "len=2", "len=1"], "{steps:?}");
    assert!(steps
        .iter()
        .all(|(f, _)| f == "vllm.engine.llm_engine.LLMEngine.step"));
}

#[test]
fn an_interpreter_that_never_gives_the_gil_gets_a_reason_and_the_rest_records() {
    if !require_bpf("an_interpreter_that_never_gives_the_gil_gets_a_reason_and_the_rest_records") {
        return;
    }
    let _bpf = bpf_lock();
    let out = scratch_dir("python-probes-no-gil");
    // `sum` over a range runs in C with the GIL held, never reaching a switch point.
    let mut app = KillOnDrop(
        Command::new(python312())
            .args(["-c", "print('go', flush=True)\nsum(range(10**11))"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = app.0.id();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(app.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "go\n");
    }
    let run = run_agent(
        Command::new(modelprobe_bin())
            .args([
                "attach",
                "--pid",
                &pid.to_string(),
                "--duration",
                "7s",
                "-o",
            ])
            .arg(out.join("rec"))
            .args(["--probe", "py:__main__:*"]),
        Duration::from_secs(60),
    );
    run.assert_success();
    let err = run.stderr();
    assert!(
        err.contains(&format!(
            "Python probes off for pid {pid}: no GIL-safe moment within 5s"
        )),
        "{err}"
    );
    let rec = read_recording(&out.join("rec"));
    assert!(python_spans(&rec).is_empty());
    assert!(
        rec["samples"].as_array().unwrap().len() > 100,
        "CPU samples still recorded"
    );
}

#[test]
fn every_python_process_of_a_launched_tree_is_probed() {
    if !require_bpf("every_python_process_of_a_launched_tree_is_probed") {
        return;
    }
    let (Some(py12), Some(py13)) = (pyenv_python(12), pyenv_python(13)) else {
        return missing("pyenv's CPython 3.12 and 3.13");
    };
    let _bpf = bpf_lock();
    let out = scratch_dir("python-probes-tree");
    let app = fixtures().join("probed_app.py");
    let script = format!(
        "{} {app} && {} {app}",
        py12.display(),
        py13.display(),
        app = app.display()
    );
    let run = run_agent(
        Command::new(modelprobe_bin())
            .args(["run", "-o"])
            .arg(out.join("rec"))
            .args(["--probe", "py:__main__:f", "--", "sh", "-c", &script]),
        Duration::from_secs(60),
    );
    run.assert_success();
    let rec = read_recording(&out.join("rec"));
    let mut by_pid: BTreeMap<u64, usize> = BTreeMap::new();
    for (f, s) in python_spans(&rec) {
        assert_eq!(f, "__main__.f");
        *by_pid.entry(s["pid"].as_u64().unwrap()).or_default() += 1;
    }
    assert_eq!(
        by_pid.values().copied().collect::<Vec<_>>(),
        [4, 4],
        "both interpreters the shell started: {}",
        run.stderr()
    );
}
