//! Tests of the viewer page: the embedded data's layout and escaping, and (ignored by default)
//! a scale run with a million spans that a browser then opens.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;
use crate::{
    logs::{Level, LogLine, Stream},
    recording::{
        fixtures::sample_recording, Event, EventKind, Frame, FrameKind, Meta, ProbeInfo, Process,
        Sample, SampleKind, Span, Thread,
    },
};

const START: u64 = 5_000_000_000_000;

/// A small deterministic generator, so the synthetic recording is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A recording with `spans` spans nested three deep over `threads` threads in two processes,
/// `samples` CPU samples, off-CPU intervals, events of every kind and log lines.
fn synthetic(spans: usize, threads: u32, samples: usize) -> Recording {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut rec = Recording::new(Meta {
        command: "python3 serve.py --model /m/7b.gguf".into(),
        mode: "run".into(),
        target_pid: 100,
        start_ns: START,
        start_unix_ms: 1_764_000_000_000,
        frequency_hz: 999,
        off_cpu: true,
        hostname: "gpu-box".into(),
        kernel: "6.8.0".into(),
        cpus: 16,
        end_reason: "target-exited".into(),
        modelprobe_version: "0.1.0".into(),
        ..Meta::default()
    });
    rec.processes = vec![
        Process {
            pid: 100,
            name: "python3".into(),
            cmdline: Some("python3 serve.py".into()),
            exe: None,
            cgroup: None,
        },
        Process {
            pid: 200,
            name: "worker".into(),
            cmdline: None,
            exe: None,
            cgroup: None,
        },
    ];
    let tids: Vec<(u32, u32)> = (0..threads)
        .map(|i| {
            let pid = if i < threads.div_ceil(2) { 100 } else { 200 };
            (
                pid,
                if i == 0 || i == threads.div_ceil(2) {
                    pid
                } else {
                    pid + i
                },
            )
        })
        .collect();
    rec.threads = tids
        .iter()
        .map(|&(pid, tid)| Thread {
            pid,
            tid,
            name: format!("worker-{tid}"),
            cpu_ns: None,
        })
        .collect();
    let probe = |function: &str, args: u8, pack: Option<&str>| ProbeInfo {
        spec: format!("libllama.so:{function}"),
        path: "/opt/lib/libllama.so".into(),
        function: function.into(),
        args,
        pack: pack.map(str::to_string),
    };
    rec.probes = vec![
        probe("llama_decode", 2, Some("llama.cpp")),
        probe("cudaLaunchKernel", 0, Some("cuda-runtime")),
        probe("cudaMemcpyAsync", 1, Some("cuda-runtime")),
    ];
    // Frames and a pool of stacks.
    for i in 0..300 {
        rec.frames.push(Frame {
            name: match i % 3 {
                0 => format!("ggml_compute_forward_{i}"),
                1 => format!("std::vector<float>::operator[]<{i}>"),
                _ => format!("do_sys_{i}"),
            },
            module: Some(if i % 3 == 2 { "[kernel]" } else { "libggml.so" }.into()),
            file: (i % 5 == 0).then(|| format!("/src/ggml-{i}.c")),
            line: (i % 5 == 0).then_some(i as u32 * 10),
            kind: if i % 3 == 2 {
                FrameKind::Kernel
            } else {
                FrameKind::User
            },
            inlined: i % 17 == 0,
        });
    }
    for _ in 0..500 {
        let depth = 8 + rng.below(20) as usize;
        let mut stack = vec![0, 3, 6];
        stack.extend((3..depth).map(|d| ((d * 7 + rng.below(4) as usize * 90) % 300) as u32));
        rec.stacks.push(stack);
    }
    // Spans: groups of one outer call with three children, each with one grandchild.
    let per_thread = spans / tids.len();
    // About a minute of recording, whatever the number of spans.
    let gap = 60_000_000_000 / (per_thread as u64 / 7).max(1);
    let mut end = START;
    for (ti, &(pid, tid)) in tids.iter().enumerate() {
        let quota = per_thread + usize::from(ti < spans % tids.len());
        let mut t = START + 1_000 + rng.below(50_000);
        let mut made = 0;
        let mut call = 0u64;
        while made < quota {
            let children = ((quota - made - 1) / 2).min(3);
            let mut inner = Vec::new();
            let mut ct = t + 500;
            for _ in 0..children {
                let d = 2_000 + rng.below(40_000);
                inner.push((ct, ct + d));
                ct += d + 200 + rng.below(3_000);
            }
            let outer_end = ct + 300;
            rec.spans.push(Span {
                probe: 0,
                pid,
                tid,
                start_ns: t,
                end_ns: outer_end,
                depth: 0,
                args: vec![call, u64::MAX],
                ret: Some(0),
                attrs: BTreeMap::from([
                    ("n_tokens".into(), json!(call % 512)),
                    ("phase".into(), json!("decode")),
                ]),
                stack: None,
            });
            made += 1;
            for (a, b) in inner {
                rec.spans.push(Span {
                    probe: 1,
                    pid,
                    tid,
                    start_ns: a,
                    end_ns: b,
                    depth: 1,
                    args: vec![],
                    ret: Some(0),
                    attrs: BTreeMap::from([
                        ("kernel".into(), json!(format!("gemm_f16<{}>", call % 7))),
                        ("grid".into(), json!([64, 1, 1])),
                    ]),
                    stack: None,
                });
                rec.spans.push(Span {
                    probe: 2,
                    pid,
                    tid,
                    start_ns: a + 100,
                    end_ns: b - 100,
                    depth: 2,
                    args: vec![1 << 20],
                    ret: if made + 2 >= quota {
                        None
                    } else {
                        Some(u64::MAX)
                    },
                    attrs: BTreeMap::new(),
                    stack: None,
                });
                made += 2;
            }
            call += 1;
            t = outer_end + 1_000 + rng.below(2 * gap);
            end = end.max(t);
        }
    }
    rec.spans.sort_by_key(|s| s.start_ns);
    rec.meta.end_ns = end + 1_000_000;
    let dur = rec.meta.end_ns - START;
    for _ in 0..samples {
        let (pid, tid) = tids[rng.below(tids.len() as u64) as usize];
        rec.samples.push(Sample {
            kind: SampleKind::Cpu,
            time_ns: START + rng.below(dur),
            pid,
            tid,
            stack: rng.below(500) as u32,
            weight: 1,
            blocks: None,
        });
    }
    for &(pid, tid) in &tids {
        let mut t = START;
        // At least one interval per thread, however short the recording.
        while t == START || t < rec.meta.end_ns.saturating_sub(50_000_000) {
            let w = 1_000_000 + rng.below(30_000_000);
            rec.samples.push(Sample {
                kind: SampleKind::OffCpu,
                time_ns: t,
                pid,
                tid,
                stack: rng.below(500) as u32,
                weight: w,
                blocks: None,
            });
            t += w + 5_000_000 + rng.below(100_000_000);
        }
    }
    rec.samples.sort_by_key(|s| s.time_ns);
    let event = |t: u64, tid: u32, kind, message: &str, value, stack| Event {
        time_ns: START + t,
        pid: 100,
        tid,
        kind,
        message: message.into(),
        value,
        stack,
    };
    rec.events = vec![
        event(0, 100, EventKind::Exec, "exec python3", None, None),
        event(
            1_000_000,
            100,
            EventKind::ModelLoad,
            "opened model file /m/7b.gguf (3890.1 MiB)",
            Some(4_079_026_176),
            None,
        ),
        event(
            2_000_000,
            100,
            EventKind::ProcessStart,
            "started pid 200",
            Some(200),
            None,
        ),
        event(
            3_000_000,
            100,
            EventKind::ThreadStart,
            "started thread 101",
            Some(101),
            None,
        ),
        event(
            dur / 2,
            100,
            EventKind::ApiError,
            "cudaMemcpy returned 1 (cudaErrorInvalidValue), called from main",
            Some(1),
            Some(3),
        ),
        event(
            dur / 2 + 10,
            100,
            EventKind::Signal,
            "SIGUSR1",
            Some(10),
            None,
        ),
        event(
            dur - 10,
            100,
            EventKind::FatalSignal,
            "SIGSEGV",
            Some(11),
            None,
        ),
    ];
    let levels = [
        None,
        Some(Level::Debug),
        Some(Level::Info),
        Some(Level::Warn),
        Some(Level::Error),
        Some(Level::Fatal),
    ];
    for i in 0..600u64 {
        rec.logs.push(LogLine {
            time_ns: START + i * (dur / 600),
            pid: 100,
            tid: 100,
            stream: if i % 2 == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            },
            level: levels[(i % 6) as usize],
            message: format!("step {i}: loss {:.3}", 1.0 / (i + 1) as f64),
        });
    }
    rec.logs.push(LogLine {
        time_ns: START + dur / 3,
        pid: 100,
        tid: 100,
        stream: Stream::Stderr,
        level: Some(Level::Error),
        message: "</script><script>alert(1)</script> <!-- & \u{2028} \"quoted\"".into(),
    });
    rec.logs.sort_by_key(|l| l.time_ns);
    rec
}

fn report() -> Value {
    json!({
        "headline": [["wall time", "3.2 s"], ["spans", "12"]],
        "sections": [
            {"id": "spans", "title": "Spans", "absent": null,
             "columns": ["name", "count", "total"],
             "rows": [["cudaMalloc", 12, "1.5 ms"], ["</table>", 1, "2 s"]]},
            {"id": "gpu", "title": "GPU", "absent": "no CUDA library was loaded", "columns": [], "rows": []}
        ]
    })
}

/// The embedded data's JSON text, as the browser's `textContent` returns it.
fn embedded(html: &str) -> &str {
    let open = r#"<script type="application/json" id="mp-data">"#;
    let start = html.find(open).expect("data element") + open.len();
    let len = html[start..]
        .find("</script>")
        .expect("data element closes");
    &html[start..start + len]
}

fn undelta(v: &Value) -> Vec<i64> {
    let mut t = 0;
    v.as_array()
        .expect("column")
        .iter()
        .map(|d| {
            t += d.as_i64().expect("integer");
            t
        })
        .collect()
}

#[test]
fn no_string_can_close_the_data_script() {
    let rec = synthetic(40, 2, 50);
    let html = render_html(&rec, &report());
    let data = embedded(&html);
    assert!(!data.contains('<'), "every < in the data is escaped");
    // The whole data element is one valid JSON document that keeps the text intact.
    let v: Value = serde_json::from_str(data).expect("embedded data is JSON");
    let strings: Vec<&str> = v["strings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(strings
        .iter()
        .any(|s| s.starts_with("</script><script>alert(1)")));
    assert_eq!(
        v["report"],
        report(),
        "the report is passed through verbatim"
    );
    // Exactly the page's own script elements: error collector, data, code.
    assert_eq!(html.matches("</script>").count(), 3);
    assert!(!html.contains("{{"), "every placeholder is filled");
}

#[test]
fn page_pieces_are_inert_inside_their_elements() {
    for piece in SCRIPTS.iter().chain([&CSS]) {
        assert!(!piece.to_ascii_lowercase().contains("</script"));
        assert!(!piece.to_ascii_lowercase().contains("</style"));
        assert!(!piece.contains("{{"));
    }
    let script_safe = |s: &str| {
        let mut out = Vec::new();
        let mut safe = ScriptSafe::new(&mut out);
        for piece in s.as_bytes().chunks(3) {
            safe.write_all(piece).unwrap();
        }
        safe.finish().unwrap();
        String::from_utf8(out).unwrap()
    };
    assert_eq!(script_safe(r#""a</b<!--""#), r#""a\u003c/b\u003c!--""#);
    assert_eq!(
        escape_html(r#"<a href="x">&'"#),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
}

#[test]
fn tracks_are_columnar_delta_encoded_and_grouped_by_process() {
    let rec = synthetic(70, 4, 200);
    let v: Value = serde_json::from_str(embedded(&render_html(&rec, &report()))).unwrap();
    let strings = v["strings"].as_array().unwrap();
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups[0]["pid"], 100, "the target comes first");
    assert_eq!(groups[1]["pid"], 200);
    let tracks = v["tracks"].as_array().unwrap();
    let threads: Vec<&Value> = tracks.iter().filter(|t| t["kind"] == "thread").collect();
    assert_eq!(threads.len(), 4);
    assert_eq!(threads[0]["tid"], 100, "the main thread leads its process");
    assert!(tracks
        .iter()
        .any(|t| t["kind"] == "counter" && t["c"]["unit"] == "%"));
    let mut total = 0;
    for t in &threads {
        let (pid, tid) = (
            t["pid"].as_u64().unwrap() as u32,
            t["tid"].as_u64().unwrap() as u32,
        );
        let spans: Vec<&Span> = rec
            .spans
            .iter()
            .filter(|s| s.pid == pid && s.tid == tid)
            .collect();
        let cols = &t["spans"];
        let starts = undelta(&cols["s"]);
        assert_eq!(starts.len(), spans.len());
        total += starts.len();
        for (i, s) in spans.iter().enumerate() {
            assert_eq!(
                starts[i],
                (s.start_ns - START) as i64,
                "starts are relative to meta.start_ns"
            );
            assert_eq!(cols["d"][i], s.end_ns - s.start_ns);
            assert_eq!(cols["l"][i], s.depth);
            let name = &strings[cols["n"][i].as_u64().unwrap() as usize];
            assert_eq!(name, &rec.probes[s.probe as usize].function);
        }
        // u64::MAX is -1; the attributes are JSON in the string table.
        assert!(cols["r"].as_array().unwrap().contains(&json!(-1)));
        assert!(cols["a"].as_array().unwrap().contains(&json!(-1)));
        let attrs = cols["t"][0].as_u64().unwrap();
        let attrs: Value =
            serde_json::from_str(strings[attrs as usize - 1].as_str().unwrap()).unwrap();
        assert_eq!(attrs["phase"], "decode");
    }
    assert_eq!(total, rec.spans.len());
    let main = threads[0];
    assert_eq!(undelta(&main["ev"]["t"]).len(), rec.events.len());
    assert_eq!(undelta(&main["lg"]["t"]).len(), rec.logs.len());
    assert!(
        main["sm"]["off_cpu"]["w"].is_array(),
        "off-CPU samples keep their weights"
    );
    assert!(
        main["sm"]["cpu"]["w"].is_null(),
        "CPU samples weigh 1: no column"
    );
    assert_eq!(v["meta"]["start_ns"], START.to_string());
    assert_eq!(
        v["stacks"]["o"].as_array().unwrap().len(),
        rec.stacks.len() + 1
    );
}

#[test]
fn big_integers_become_hex_strings() {
    let mut out = Vec::new();
    for v in [5u64, u64::MAX, 1 << 53, 0x7f12_3456_7890, (1 << 53) - 1] {
        encode::write_int(&mut out, v).unwrap();
        out.push(b' ');
    }
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "5 -1 \"0x20000000000000\" 139716164221072 9007199254740991 "
    );
}

#[test]
fn write_html_streams_the_same_page_and_counts_it() {
    let rec = sample_recording();
    let dir = std::env::temp_dir().join(format!("mp-view-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("view.html");
    let stats = write_html(&rec, &report(), &path).unwrap();
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written, render_html(&rec, &report()));
    assert_eq!(stats.bytes, written.len() as u64);
    assert_eq!((stats.samples, stats.spans), (4, 0));
    let err = write_html(&rec, &report(), &dir.join("missing/view.html")).unwrap_err();
    assert!(err.to_string().starts_with("writing "), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes pages to look at: `MP_VIEW_OUT=/tmp/v cargo test -p modelprobe view::tests::write_demo_pages -- --ignored`.
#[test]
#[ignore = "writes files for a person (or a headless browser) to open"]
fn write_demo_pages() {
    let dir = std::path::PathBuf::from(
        std::env::var("MP_VIEW_OUT").unwrap_or_else(|_| "/tmp/mp-view".into()),
    );
    std::fs::create_dir_all(&dir).unwrap();
    let small = synthetic(5_000, 6, 20_000);
    let real_report = crate::report::build(&small, 30).to_json();
    write_html(&small, &real_report, &dir.join("small.html")).unwrap();
    write_html(&sample_recording(), &json!(null), &dir.join("tiny.html")).unwrap();
    write_html(
        &Recording::new(Meta::default()),
        &json!({}),
        &dir.join("empty.html"),
    )
    .unwrap();
}

/// The scale target: a million spans over 8 threads and 200k samples. Prints the time to
/// write the page and its size; with `chromium` installed, also the time until the page is
/// ready. `cargo test --release -p modelprobe view::tests::million_spans -- --ignored --nocapture`.
#[test]
#[ignore = "a scale measurement: slow in debug builds"]
fn million_spans() {
    let t = std::time::Instant::now();
    let rec = synthetic(1_000_000, 8, 200_000);
    eprintln!("generated {} spans in {:?}", rec.spans.len(), t.elapsed());
    let dir = std::path::PathBuf::from(
        std::env::var("MP_VIEW_OUT").unwrap_or_else(|_| "/tmp/mp-view".into()),
    );
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("million.html");
    let t = std::time::Instant::now();
    let stats = write_html(&rec, &report(), &path).unwrap();
    eprintln!(
        "write_html: {:?}, {:.1} MiB, {} spans, {} samples",
        t.elapsed(),
        stats.bytes as f64 / 1048576.0,
        stats.spans,
        stats.samples
    );
    assert_eq!(stats.spans, 1_000_000);
    let Ok(out) = std::process::Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=60000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", path.display()))
        .output()
    else {
        eprintln!("chromium not found: page load not measured");
        return;
    };
    let dom = String::from_utf8_lossy(&out.stdout);
    let attr = |name: &str| {
        let key = format!("{name}=\"");
        dom.find(&key).map(|i| {
            let rest = &dom[i + key.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
    };
    eprintln!(
        "chromium: ready={:?} ready_ms={:?} ({}) spans_drawn={:?} flame_frames={:?} errors={:?}",
        attr("data-mp-ready"),
        attr("data-mp-ready-ms"),
        attr("data-mp-timing").unwrap_or_default(),
        attr("data-mp-spans-drawn"),
        attr("data-mp-flame-frames"),
        attr("data-mp-errors")
    );
    assert_eq!(attr("data-mp-ready").as_deref(), Some("1"));
    assert_eq!(attr("data-mp-errors").as_deref(), Some("0"));
}

#[test]
fn nvml_counters_become_a_gpu_group_with_counter_tracks() {
    let mut rec = synthetic(10, 1, 20);
    let t0 = rec.meta.start_ns;
    rec.counters.push(crate::recording::Counter {
        name: "GPU 1 utilization".into(),
        unit: "%".into(),
        device: Some(1),
        pid: None,
        points: vec![(t0 + 1_000, 40.0), (t0 + 3_000, 90.0)],
    });
    let v: Value = serde_json::from_str(embedded(&render_html(&rec, &report()))).unwrap();
    let groups = v["groups"].as_array().unwrap();
    let gi = groups
        .iter()
        .position(|g| g["kind"] == "gpu" && g["title"] == "GPU 1")
        .expect("a GPU group");
    let track = v["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["title"] == "GPU 1 utilization")
        .expect("the counter's track");
    assert_eq!(track["group"], gi);
    assert_eq!(track["kind"], "counter");
    assert_eq!(undelta(&track["c"]["t"]), [1_000, 3_000]);
    assert_eq!(track["c"]["v"], json!([40.0, 90.0]));
}

#[test]
fn llm_calls_get_a_spans_track_in_their_process_group() {
    use crate::recording::llm::LlmCall;
    let mut rec = synthetic(10, 1, 20);
    let t0 = rec.meta.start_ns;
    let call = |start: u64, end: u64| LlmCall {
        pid: 100,
        tid: 100,
        start_ns: t0 + start,
        end_ns: t0 + end,
        provider: "anthropic".into(),
        endpoint: "messages".into(),
        model: "claude-sonnet-4-5".into(),
        status: 200,
        ..LlmCall::default()
    };
    // Two at once on one event loop, then a third.
    rec.llm.calls = vec![call(1_000, 5_000), call(2_000, 4_000), call(6_000, 7_000)];
    let v: Value = serde_json::from_str(embedded(&render_html(&rec, &report()))).unwrap();
    let track = v["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["title"] == "LLM calls")
        .expect("the LLM track");
    let group = &v["groups"][track["group"].as_u64().unwrap() as usize];
    assert_eq!(group["pid"], 100);
    let spans = &track["spans"];
    assert_eq!(undelta(&spans["s"]), [1_000, 2_000, 6_000]);
    assert_eq!(spans["d"], json!([4_000, 2_000, 1_000]));
    assert_eq!(spans["l"], json!([0, 1, 0]));
    let strings = v["strings"].as_array().unwrap();
    let name = &strings[spans["n"][0].as_u64().unwrap() as usize];
    assert_eq!(name, "chat claude-sonnet-4-5");
    let attrs = &strings[spans["t"][0].as_u64().unwrap() as usize - 1];
    let attrs: Value = serde_json::from_str(attrs.as_str().unwrap()).unwrap();
    assert_eq!(attrs["gen_ai.provider.name"], "anthropic");
}

#[test]
fn allocations_are_a_memory_set_weighted_in_bytes_on_their_threads() {
    use crate::recording::memory::{MemEvent, MemEventKind, MemSource};
    let mut rec = synthetic(10, 1, 20);
    let t0 = rec.meta.start_ns;
    let stack = rec.samples[0].stack;
    let ev = |t: u64, kind: MemEventKind, bytes: u64| MemEvent {
        time_ns: t0 + t,
        pid: 100,
        tid: 100,
        kind,
        source: MemSource::Mmap,
        addr: 0x1000,
        bytes,
        stack: (kind == MemEventKind::Alloc).then_some(stack),
    };
    rec.memory.events = vec![
        ev(1_000, MemEventKind::Alloc, 4096),
        ev(2_000, MemEventKind::Free, 4096),
        ev(3_000, MemEventKind::Alloc, 8192),
    ];
    let v: Value = serde_json::from_str(embedded(&render_html(&rec, &report()))).unwrap();
    let set = v["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "memory")
        .expect("a memory set");
    assert_eq!(set["unit"], "bytes");
    let track = v["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["pid"] == 100 && t["tid"] == 100 && t["sm"]["memory"].is_object())
        .expect("the allocating thread's track");
    let m = &track["sm"]["memory"];
    assert_eq!(undelta(&m["t"]), [1_000, 3_000]);
    assert_eq!(m["w"], json!([4096, 8192]));
    assert_eq!(m["s"], json!([stack, stack]));
    // Without memory data, no such set.
    let plain: Value =
        serde_json::from_str(embedded(&render_html(&synthetic(10, 1, 20), &report()))).unwrap();
    assert!(!plain["sets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == "memory"));
}
