//! `cargo xtask gpu-check`: proves or disproves modelprobe's GPU side on a real GPU in one call.
//!
//! It runs `mp-gpu-fixture` (`gpu-fixture/`, a cudarc workload that prints what it did as an
//! oracle) under `modelprobe run`, and holds the recording against the oracle: GPU timings on,
//! every kernel, copy and memset counted exactly and joined to its launch, CUDA graph work
//! seen, GPU durations within 5% of the fixture's own CUDA-event timings, NVML counters, the
//! clock drift, and the deliberate API error. It prints one table of checks and writes the
//! report, `view.html` and `trace.json` to the output folder.
//!
//! Built where there is no GPU and carried over: `cargo xtask gpu-kit` puts stripped release
//! binaries (this one included) in `target/gpu-kit/`; there, `target/gpu-kit/xtask gpu-check
//! --kit target/gpu-kit` runs without cargo. Without a GPU it says so in one line and exits 0.
//!
//! Where PyTorch with CUDA is installed, a generation loop (`gpu-fixture/torch_loop.py`, a
//! GPT-2-sized decoder with random weights) runs alone, under `run`, under a live `attach`,
//! and with a `torch.profiler` trace of its own under `run`: tokens/s overhead, GPU work
//! recorded and joined, Python frames, and what coexistence with torch.profiler gave.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::say;

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Check {
    pub name: String,
    pub pass: bool,
    pub figure: String,
}

fn check(name: &str, pass: bool, figure: impl Into<String>) -> Check {
    Check {
        name: name.to_string(),
        pass,
        figure: figure.into(),
    }
}

/// The binaries and script the check runs.
struct Kit {
    modelprobe: PathBuf,
    fixture: PathBuf,
    torch_loop: PathBuf,
}

/// Runs the check; `kit` is a folder of prebuilt binaries (else they are built here).
pub(crate) fn run(root: &Path, kit: Option<&Path>, out: &Path) -> Result<()> {
    let kit = match kit {
        Some(dir) => Kit {
            modelprobe: dir.join("modelprobe"),
            fixture: dir.join("mp-gpu-fixture"),
            torch_loop: dir.join("torch_loop.py"),
        },
        None => {
            crate::build_release_with_fixtures(root)?;
            crate::cargo(&["build", "--release", "-p", "modelprobe-gpu-fixture"])?;
            Kit {
                modelprobe: root.join("target/release/modelprobe"),
                fixture: root.join("target/release/mp-gpu-fixture"),
                torch_loop: root.join("gpu-fixture/torch_loop.py"),
            }
        }
    };
    for bin in [&kit.modelprobe, &kit.fixture] {
        if !bin.exists() {
            bail!(
                "{} is missing: build the kit with `cargo xtask gpu-kit`",
                bin.display()
            );
        }
    }
    if let Some(why) = no_gpu() {
        say(&format!(
            "gpu-check: no NVIDIA GPU here ({why}): nothing to check"
        ));
        return Ok(());
    }
    if !crate::is_root() {
        bail!("gpu-check attaches BPF programs and needs root");
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let libs = cuda_library_dirs();
    say(&format!(
        "gpu-check: the fixture under `modelprobe run` (NVRTC and cuBLAS from {})",
        if libs.is_empty() {
            "the default library path".to_string()
        } else {
            libs.join(":")
        }
    ));
    let rec_dir = out.join("fixture");
    let mut cmd = Command::new(&kit.modelprobe);
    cmd.args(["run", "-q", "-o"])
        .arg(&rec_dir)
        .arg("--")
        .arg(&kit.fixture)
        .args(["--iterations", "10"]);
    if !libs.is_empty() {
        let mut path = libs.join(":");
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
            path = format!("{path}:{}", old.to_string_lossy());
        }
        cmd.env("LD_LIBRARY_PATH", path);
    }
    let output = cmd.output().context("running modelprobe")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "modelprobe run of the fixture failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let oracle = oracle_of(&stdout)?;
    let rec: Value = serde_json::from_str(
        &std::fs::read_to_string(rec_dir.join("recording.json"))
            .context("reading the recording")?,
    )?;
    let mut checks = check_fixture(&rec, &oracle);
    std::fs::write(out.join("oracle.json"), oracle.to_string())?;
    let report = Command::new(&kit.modelprobe)
        .arg("report")
        .arg(&rec_dir)
        .output()?;
    std::fs::write(out.join("report.txt"), &report.stdout)?;
    let _ = Command::new(&kit.modelprobe)
        .args(["view", "-q", "-o"])
        .arg(out.join("view.html"))
        .arg(&rec_dir)
        .status();
    let _ = std::fs::copy(rec_dir.join("trace.json"), out.join("trace.json"));
    match python_with_cuda() {
        Some(python) => checks.extend(torch_checks(&kit, &python, out)?),
        None => say("gpu-check: no PyTorch with CUDA for python3 (or $MODELPROBE_GPU_PYTHON): the PyTorch checks are skipped"),
    }
    print_table(&checks);
    say(&format!(
        "gpu-check: report, view.html and trace.json in {}",
        out.display()
    ));
    let failed = checks.iter().filter(|c| !c.pass).count();
    if failed > 0 {
        bail!("{failed} of {} GPU checks failed", checks.len());
    }
    Ok(())
}

/// Why there is no GPU to check, or `None` when there is one.
fn no_gpu() -> Option<String> {
    if !Path::new("/dev/nvidiactl").exists() {
        return Some("no /dev/nvidiactl".into());
    }
    // Where the loader would find it: its cache, else the usual folders.
    let cached = Command::new("ldconfig")
        .arg("-p")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libcuda.so.1"));
    let found = cached
        || [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
            "/usr/local/nvidia/lib64",
        ]
        .iter()
        .any(|d| Path::new(d).join("libcuda.so.1").exists());
    (!found).then(|| "no libcuda.so.1 (the NVIDIA driver's user-space library)".into())
}

/// Folders holding libnvrtc and libcublas: the CUDA toolkit's, and the `nvidia-*` wheels of
/// the Python environments (PyTorch brings them), for the fixture's NVRTC and cuBLAS.
fn cuda_library_dirs() -> Vec<String> {
    let mut roots: Vec<PathBuf> = vec!["/usr/local/cuda/lib64".into()];
    if let Ok(out) = Command::new("python3")
        .args([
            "-c",
            "import site; print('\\n'.join(site.getsitepackages()))",
        ])
        .output()
    {
        for dir in String::from_utf8_lossy(&out.stdout).lines() {
            let nvidia = Path::new(dir).join("nvidia");
            if let Ok(entries) = std::fs::read_dir(&nvidia) {
                roots.extend(entries.flatten().map(|e| e.path().join("lib")));
            }
        }
    }
    let has = |dir: &Path, prefix: &str| {
        std::fs::read_dir(dir).is_ok_and(|mut e| {
            e.any(|f| f.is_ok_and(|f| f.file_name().to_string_lossy().starts_with(prefix)))
        })
    };
    roots
        .into_iter()
        .filter(|d| has(d, "libnvrtc.so") || has(d, "libcublas.so"))
        .map(|d| d.to_string_lossy().into_owned())
        .collect()
}

/// A Python whose PyTorch sees a GPU: `$MODELPROBE_GPU_PYTHON`, else `python3`.
fn python_with_cuda() -> Option<String> {
    let python = std::env::var("MODELPROBE_GPU_PYTHON").unwrap_or_else(|_| "python3".into());
    Command::new(&python)
        .args([
            "-c",
            "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)",
        ])
        .status()
        .is_ok_and(|s| s.success())
        .then_some(python)
}

/// A `key value` figure the loop printed.
fn printed(stdout: &str, key: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// GPU work in a recording: (kernels, kernels joined to a launch, the GPU sources' states).
fn gpu_work(dir: &Path) -> Result<(usize, usize, Vec<String>, bool)> {
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("recording.json"))?)?;
    let ops = rec["gpu"]["ops"].as_array().cloned().unwrap_or_default();
    let kernels: Vec<&Value> = ops.iter().filter(|o| o["kind"] == "kernel").collect();
    let joined = kernels.iter().filter(|k| k["launch"].is_u64()).count();
    let states = rec["gpu"]["sources"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| {
                    format!(
                        "{} ({})",
                        s["state"].as_str().unwrap_or("?"),
                        s["message"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let python = rec["meta"]["python"]["interpreters"]
        .as_array()
        .is_some_and(|i| !i.is_empty());
    Ok((kernels.len(), joined, states, python))
}

/// The PyTorch loop alone, under `run`, under a live `attach`, and with torch.profiler.
fn torch_checks(kit: &Kit, python: &str, out: &Path) -> Result<Vec<Check>> {
    let script = kit.torch_loop.to_string_lossy().into_owned();
    let secs = "15";
    let mut checks = Vec::new();
    say("gpu-check: PyTorch generation loop alone");
    let alone = Command::new(python)
        .args([&script, "--seconds", secs])
        .output()?;
    let base = printed(&String::from_utf8_lossy(&alone.stdout), "tokens_per_s");
    checks.push(check(
        "PyTorch loop runs",
        alone.status.success() && base.is_some(),
        format!("{:.1} tokens/s alone", base.unwrap_or(0.0)),
    ));
    let Some(base) = base else {
        return Ok(checks);
    };

    say("gpu-check: PyTorch loop under `modelprobe run`");
    let run_dir = out.join("torch-run");
    let under = Command::new(&kit.modelprobe)
        .args(["run", "-q", "-o"])
        .arg(&run_dir)
        .args(["--", python, &script, "--seconds", secs])
        .output()?;
    let tps = printed(&String::from_utf8_lossy(&under.stdout), "tokens_per_s").unwrap_or(0.0);
    let overhead = 1.0 - tps / base;
    checks.push(check(
        "PyTorch tokens/s overhead under run",
        under.status.success() && overhead <= 0.05,
        format!(
            "{tps:.1} vs {base:.1} tokens/s ({:+.1}%)",
            -100.0 * overhead
        ),
    ));
    if under.status.success() {
        let (kernels, joined, states, py) = gpu_work(&run_dir)?;
        checks.push(check(
            "PyTorch under run: kernels joined",
            kernels > 0 && joined * 100 >= kernels * 99,
            format!(
                "{joined} of {kernels} kernels joined; {}",
                states.join("; ")
            ),
        ));
        checks.push(check(
            "PyTorch under run: Python frames",
            py,
            if py {
                "interpreter found"
            } else {
                "no interpreter in meta.python"
            },
        ));
    }

    say("gpu-check: PyTorch loop under a live `modelprobe attach`");
    let ready = out.join("torch-ready");
    let _ = std::fs::remove_file(&ready);
    let mut target = Command::new(python)
        .args([&script, "--seconds", "30", "--ready-file"])
        .arg(&ready)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !ready.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let attach_dir = out.join("torch-attach");
    let attached = Command::new(&kit.modelprobe)
        .args(["attach", "-q", "--duration", "8s", "--pid"])
        .arg(target.id().to_string())
        .arg("-o")
        .arg(&attach_dir)
        .output()?;
    let mut target_out = String::new();
    if let Some(mut o) = target.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut o, &mut target_out);
    }
    let target_ok = target.wait()?.success();
    if attached.status.success() {
        let (kernels, joined, states, _) = gpu_work(&attach_dir)?;
        checks.push(check(
            "PyTorch live attach: kernels joined",
            target_ok && kernels > 0 && joined * 100 >= kernels * 99,
            format!(
                "{joined} of {kernels} kernels joined; target {}; {}",
                if target_ok { "finished" } else { "FAILED" },
                states.join("; ")
            ),
        ));
    } else {
        checks.push(check(
            "PyTorch live attach: kernels joined",
            false,
            String::from_utf8_lossy(&attached.stderr).trim().to_string(),
        ));
    }

    say("gpu-check: PyTorch loop running a torch.profiler trace, under `modelprobe run`");
    let prof_dir = out.join("torch-profiler");
    let prof = Command::new(&kit.modelprobe)
        .args(["run", "-q", "-o"])
        .arg(&prof_dir)
        .args(["--", python, &script, "--seconds", secs, "--profile"])
        .output()?;
    let events = printed(
        &String::from_utf8_lossy(&prof.stdout),
        "profiler_gpu_events",
    );
    let states = if prof.status.success() {
        gpu_work(&prof_dir)?.2
    } else {
        Vec::new()
    };
    // Coexistence is honest when the target ran through and modelprobe says what it got.
    checks.push(check(
        "torch.profiler coexistence",
        prof.status.success() && events.is_some() && !states.is_empty(),
        format!(
            "torch.profiler got {} GPU events; modelprobe: {}",
            events.map_or("no".into(), |e| format!("{e:.0}")),
            if states.is_empty() {
                "nothing".into()
            } else {
                states.join("; ")
            }
        ),
    ));
    Ok(checks)
}

/// The fixture's `oracle {...}` line.
fn oracle_of(stdout: &str) -> Result<Value> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("oracle "))
        .context("the fixture printed no oracle line")?;
    Ok(serde_json::from_str(line)?)
}

fn print_table(checks: &[Check]) {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    println!("{:width$}  result  figures", "check");
    for c in checks {
        println!(
            "{:width$}  {}    {}",
            c.name,
            if c.pass { "pass" } else { "FAIL" },
            c.figure
        );
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Holds a recording of the fixture against the fixture's oracle.
pub(crate) fn check_fixture(rec: &Value, oracle: &Value) -> Vec<Check> {
    let gpu = &rec["gpu"];
    let names: Vec<&str> = gpu["names"]
        .as_array()
        .map(|n| n.iter().map(|s| s.as_str().unwrap_or("")).collect())
        .unwrap_or_default();
    let ops: Vec<&Value> = gpu["ops"]
        .as_array()
        .map_or(Vec::new(), |o| o.iter().collect());
    let name_of = |o: &Value| {
        o["name"]
            .as_u64()
            .and_then(|i| names.get(i as usize).copied())
            .unwrap_or("")
    };
    let of_kind = |k: &str| {
        ops.iter()
            .filter(|o| o["kind"] == k)
            .copied()
            .collect::<Vec<_>>()
    };
    let mut checks = Vec::new();

    let states: Vec<String> = gpu["sources"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| s["state"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();
    checks.push(check(
        "GPU timings on (CUPTI)",
        states.iter().any(|s| s == "on"),
        format!(
            "sources: {}",
            if states.is_empty() {
                "none".into()
            } else {
                states.join(", ")
            }
        ),
    ));

    let kernels = of_kind("kernel");
    if let Some(want) = oracle["kernels"].as_object() {
        for (name, n) in want {
            let got = kernels.iter().filter(|k| name_of(k) == name).count() as u64;
            let n = n.as_u64().unwrap_or(0);
            checks.push(check(
                &format!("kernels {name}"),
                got == n,
                format!("{got} recorded, {n} launched"),
            ));
        }
    }
    let graph = kernels
        .iter()
        .filter(|k| k["graph_id"].as_u64().unwrap_or(0) != 0)
        .count() as u64;
    let want_graph = oracle["graph_kernels"].as_u64().unwrap_or(0);
    checks.push(check(
        "CUDA graph kernels",
        graph == want_graph,
        format!("{graph} recorded with a graph id, {want_graph} run"),
    ));

    let copies = of_kind("memcpy");
    if let Some(want) = oracle["copies"].as_object() {
        let bytes = oracle["copy_bytes"].as_u64().unwrap_or(0);
        for (dir, n) in want {
            // The fixture's copies are all `copy_bytes` long; cuBLAS may copy on its own.
            let got = copies
                .iter()
                .filter(|c| c["direction"] == dir.as_str() && c["bytes"].as_u64() == Some(bytes))
                .count() as u64;
            let n = n.as_u64().unwrap_or(0);
            checks.push(check(
                &format!("copies {dir}"),
                got == n,
                format!("{got} recorded of {bytes} bytes, {n} made"),
            ));
        }
    }
    let memsets = of_kind("memset").len() as u64;
    let want_memsets = oracle["memsets"].as_u64().unwrap_or(0);
    checks.push(check(
        "memsets",
        memsets >= want_memsets,
        format!("{memsets} recorded, {want_memsets} made by the fixture"),
    ));

    let work: Vec<&&Value> = ops
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("kernel" | "memcpy" | "memset")))
        .collect();
    let joined = work.iter().filter(|o| o["launch"].is_u64()).count();
    let with_span = work.iter().filter(|o| o["launch_span"].is_u64()).count();
    checks.push(check(
        "joined to their launch",
        !work.is_empty() && joined == work.len(),
        format!(
            "{joined} of {} kernels, copies and memsets by correlation id; {with_span} to a uprobe span",
            work.len()
        ),
    ));

    // GPU durations against the fixture's own CUDA events (medians: the events also hold the
    // launch's queueing on the GPU, a microsecond or two).
    let cupti_ms = median(
        kernels
            .iter()
            .filter(|k| name_of(k) == "mp_vector_add")
            .filter_map(|k| Some((k["end_ns"].as_u64()? - k["start_ns"].as_u64()?) as f64 / 1e6))
            .collect(),
    );
    let event_ms = median(
        oracle["event_ms"]["mp_vector_add"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default(),
    );
    checks.push(match (cupti_ms, event_ms) {
        (Some(c), Some(e)) if e > 0.0 => check(
            "mp_vector_add duration vs CUDA events",
            (c - e).abs() <= 0.05 * e,
            format!(
                "CUPTI {c:.4} ms, events {e:.4} ms ({:+.1}%)",
                100.0 * (c - e) / e
            ),
        ),
        _ => check(
            "mp_vector_add duration vs CUDA events",
            false,
            "no timings to compare",
        ),
    });

    let counters = rec["counters"].as_array().map_or(0, Vec::len);
    checks.push(check(
        "NVML counters",
        counters > 0,
        format!("{counters} series"),
    ));

    let drift: Vec<String> = gpu["sources"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|s| s["drift_ns_per_min"].as_f64())
                .map(|d| format!("{d:.0} ns/min"))
                .collect()
        })
        .unwrap_or_default();
    checks.push(check(
        "clock drift measured",
        !drift.is_empty(),
        if drift.is_empty() {
            "none".into()
        } else {
            drift.join(", ")
        },
    ));

    let errors: Vec<&str> = rec["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["kind"] == "api_error")
                .filter_map(|e| e["message"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let memcpy_error = errors.iter().any(|m| m.contains("cuMemcpyDtoH"));
    checks.push(check(
        "the deliberate API error",
        oracle["error"].is_string() && memcpy_error,
        format!(
            "fixture: {}; recorded: {}",
            oracle["error"].as_str().unwrap_or("none"),
            errors.first().copied().unwrap_or("none")
        ),
    ));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn oracle() -> Value {
        json!({
            "kernels": {"mp_vector_add": 2, "mp_scale": 4},
            "graph_kernels": 2,
            "copies": {"HtoD": 1, "DtoH": 1},
            "copy_bytes": 400,
            "memsets": 1,
            "error": "CUDA_ERROR_INVALID_VALUE",
            "event_ms": {"mp_vector_add": [0.200, 0.202]},
        })
    }

    fn op(kind: &str, name: u64, launch: Option<u64>, extra: Value) -> Value {
        let mut o = json!({"kind": kind, "name": name, "start_ns": 1_000_000, "end_ns": 1_201_000});
        if let Some(l) = launch {
            o["launch"] = json!(l);
            o["launch_span"] = json!(l);
        }
        for (k, v) in extra.as_object().unwrap() {
            o[k] = v.clone();
        }
        o
    }

    /// What a recording of a correct run looks like.
    fn good() -> Value {
        let g = json!({"graph_id": 3});
        json!({
            "gpu": {
                "names": ["mp_vector_add", "mp_scale", "HtoD", "DtoH", "memset"],
                "ops": [
                    op("kernel", 0, Some(0), json!({})),
                    op("kernel", 0, Some(1), json!({})),
                    op("kernel", 1, Some(2), json!({})),
                    op("kernel", 1, Some(3), json!({})),
                    op("kernel", 1, Some(4), g.clone()),
                    op("kernel", 1, Some(4), g),
                    op("memcpy", 2, Some(5), json!({"direction": "HtoD", "bytes": 400})),
                    op("memcpy", 3, Some(6), json!({"direction": "DtoH", "bytes": 400})),
                    op("memset", 4, Some(7), json!({})),
                ],
                "sources": [{"state": "on", "drift_ns_per_min": 120.0}],
            },
            "counters": [{"name": "GPU 0 utilization"}],
            "events": [{"kind": "api_error", "message": "cuMemcpyDtoH_v2 returned 1 (CUDA_ERROR_INVALID_VALUE), called from run"}],
        })
    }

    #[test]
    fn a_correct_recording_passes_every_check() {
        let checks = check_fixture(&good(), &oracle());
        let failed: Vec<&Check> = checks.iter().filter(|c| !c.pass).collect();
        assert!(failed.is_empty(), "{failed:#?}");
        assert_eq!(checks.len(), 12, "{checks:#?}");
    }

    #[test]
    fn each_kind_of_miss_fails_its_own_check() {
        let failing = |rec: &Value| -> Vec<String> {
            check_fixture(rec, &oracle())
                .into_iter()
                .filter(|c| !c.pass)
                .map(|c| c.name)
                .collect()
        };
        // A kernel lost.
        let mut rec = good();
        rec["gpu"]["ops"].as_array_mut().unwrap().remove(0);
        assert_eq!(failing(&rec), ["kernels mp_vector_add"]);
        // A copy not joined to its launch.
        let mut rec = good();
        rec["gpu"]["ops"][6]
            .as_object_mut()
            .unwrap()
            .remove("launch");
        assert_eq!(failing(&rec), ["joined to their launch"]);
        // GPU time 10% off the events.
        let mut rec = good();
        for i in 0..2 {
            rec["gpu"]["ops"][i]["end_ns"] = json!(1_222_000);
        }
        assert_eq!(failing(&rec), ["mp_vector_add duration vs CUDA events"]);
        // No graph ids, no NVML, another state, no error event.
        let mut rec = good();
        for i in 4..6 {
            rec["gpu"]["ops"][i]
                .as_object_mut()
                .unwrap()
                .remove("graph_id");
        }
        rec["counters"] = json!([]);
        rec["gpu"]["sources"][0]["state"] = json!("busy");
        rec["events"] = json!([]);
        assert_eq!(
            failing(&rec),
            [
                "GPU timings on (CUPTI)",
                "CUDA graph kernels",
                "NVML counters",
                "the deliberate API error"
            ]
        );
    }

    #[test]
    fn the_oracle_line_is_found_among_the_output() {
        let o = oracle_of("hello\noracle {\"iterations\": 3}\n").unwrap();
        assert_eq!(o["iterations"], 3);
        assert!(oracle_of("no oracle here").is_err());
    }
}
