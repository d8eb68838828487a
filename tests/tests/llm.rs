//! LLM API calls out of the process, for real, as root: the real `openai` and `anthropic`
//! Python clients (from PyPI, in `target/py-numpy`) call a local HTTPS server in the
//! providers' shapes (`tests/fixtures/llm/server.py`); modelprobe reads their TLS plaintext
//! from OpenSSL and must account every call with its exact tokens and cost, and never write
//! the API key anywhere.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use modelprobe_tests::{
    bpf_lock, missing, modelprobe_bin, require_bpf, run_with_timeout, scratch_dir, tools_venv,
    KillOnDrop, Recorded, Session,
};
use serde_json::Value;

/// The key both clients send (`Authorization: Bearer` and `x-api-key`).
const SECRET: &str = "SECRET-abc123";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/llm")
        .join(name)
}

/// The stand-in API server, on a loopback port, with a fresh self-signed certificate.
struct Server {
    _child: KillOnDrop,
    base: String,
    cert: PathBuf,
}

fn start_server(dir: &Path, python: &Path, plain: bool) -> Server {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = run_with_timeout(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "openssl req failed: {out:?}");
    let port_file = dir.join("port");
    let child = Command::new(python)
        .arg(fixture("server.py"))
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("--port-file")
        .arg(&port_file)
        .args(plain.then_some("--plain"))
        .stdout(Stdio::null())
        .spawn()
        .expect("start the stand-in API server");
    let child = KillOnDrop(child);
    let start = Instant::now();
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            break p.trim().to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    Server {
        _child: child,
        base: format!(
            "{}://127.0.0.1:{port}",
            if plain { "http" } else { "https" }
        ),
        cert,
    }
}

/// Records the client script against a fresh server (plain HTTP with `--plain-http` among
/// `options`); `None` when the venv is missing.
fn record_client(name: &str, options: &[&str]) -> Option<(Recorded, PathBuf)> {
    let Some(venv) = tools_venv() else {
        missing("target/py-numpy (openai, anthropic)");
        return None;
    };
    let python = venv.join("bin/python");
    let dir = scratch_dir(name);
    let server = start_server(&dir, &python, options.contains(&"--plain-http"));
    let prices = dir.join("prices.yaml");
    std::fs::write(
        &prices,
        "prices:\n  acme-llm-1: {input: 2.0, output: 8.0}\n",
    )
    .unwrap();
    let mut opts = vec!["--prices", prices.to_str().unwrap()];
    opts.extend_from_slice(options);
    let out = dir.join("rec");
    let r = Session::run(&out, &opts)
        .command(
            &python,
            &[
                fixture("client.py").to_str().unwrap(),
                "--base",
                &server.base,
                "--ca",
                server.cert.to_str().unwrap(),
            ],
        )
        .timeout(Duration::from_secs(120))
        .expect_success();
    assert!(
        r.stdout().contains("async 4"),
        "client failed: {}",
        r.stdout()
    );
    Some((r, out))
}

fn calls(r: &Recorded) -> Vec<Value> {
    r.recording()["llm"]["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The calls asking for `model` with `input` tokens (the stand-in echoes what it is asked).
fn find<'a>(calls: &'a [Value], model: &str, input: u64) -> &'a Value {
    calls
        .iter()
        .find(|c| c["model"] == model && c["usage"]["input_tokens"] == input)
        .or_else(|| {
            calls
                .iter()
                .find(|c| c["model"] == model && c["usage"].is_null() && input == 0)
        })
        .unwrap_or_else(|| panic!("no {model} call with {input} input tokens in {calls:#?}"))
}

fn usage(c: &Value) -> [u64; 4] {
    let u = &c["usage"];
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    [
        n("input_tokens"),
        n("output_tokens"),
        n("cache_read_tokens"),
        n("cache_creation_tokens"),
    ]
}

fn cost(c: &Value) -> f64 {
    c["cost_usd"]
        .as_f64()
        .unwrap_or_else(|| panic!("no cost in {c:#}"))
}

/// Every file under `dir`, read as bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn assert_no_secret(dir: &Path) {
    let files = files_under(dir);
    assert!(files.len() >= 3, "too few files in {}", dir.display());
    for (path, bytes) in files {
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the API key reached {}",
            path.display()
        );
    }
}

#[test]
fn every_call_of_the_openai_and_anthropic_clients_is_accounted_exactly() {
    if !require_bpf("every_call_of_the_openai_and_anthropic_clients_is_accounted_exactly") {
        return;
    }
    let _bpf = bpf_lock();
    let Some((r, out)) = record_client("llm-clients", &[]) else {
        return;
    };
    let calls = calls(&r);
    assert_eq!(calls.len(), 13, "{calls:#?}\n{}", r.stderr());
    assert_eq!(r.recording()["llm"]["stats"]["records_lost"], 0);

    // Sync chat completion: gzipped JSON, a dated model in the answer.
    let c = find(&calls, "gpt-4o-mini", 12);
    assert_eq!(usage(c), [12, 7, 0, 0]);
    assert_eq!(c["provider"], "openai-compatible");
    assert_eq!(c["endpoint"], "chat.completions");
    assert_eq!(c["response_model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(
        (&c["status"], &c["stream"]),
        (&Value::from(200), &Value::from(false))
    );
    assert_eq!(
        (&c["max_tokens"], &c["temperature"]),
        (&Value::from(50), &Value::from(0.5))
    );
    assert_eq!(c["finish_reason"], "stop");
    assert_eq!(c["response_id"], "chatcmpl-1");
    assert_eq!(c["cost_source"], "builtin");
    assert!(cost(c) > 0.0);

    // Streamed with usage: 15 content events, their first one the time to first token.
    let c = find(&calls, "gpt-4o", 20);
    assert_eq!(usage(c), [20, 15, 4, 0]);
    assert_eq!(c["stream"], true);
    let t = |k: &str| c[k].as_u64().unwrap_or(0);
    assert!(
        t("start_ns") < t("first_byte_ns")
            && t("first_byte_ns") <= t("first_token_ns")
            && t("first_token_ns") < t("end_ns"),
        "times out of order: {c:#}"
    );
    assert!(c["stream_events"].as_u64().unwrap() >= 17, "{c:#}");

    // Streamed without usage: marked, not guessed.
    let c = calls
        .iter()
        .find(|c| c["model"] == "gpt-4o-mini" && c["usage_missing"] == true)
        .unwrap_or_else(|| panic!("no usage-less stream in {calls:#?}"));
    assert!(c["usage"].is_null() && c["cost_usd"].is_null(), "{c:#}");

    // A 52 KB answer: many SSL_reads, the usage at its very end.
    assert_eq!(usage(find(&calls, "gpt-4o-mini", 1000)), [1000, 9000, 0, 0]);

    // The responses API, and Anthropic's messages, plain and streamed.
    let c = find(&calls, "gpt-4.1-mini", 30);
    assert_eq!(
        (&c["endpoint"], usage(c)),
        (&Value::from("responses"), [30, 10, 5, 0])
    );
    let c = find(&calls, "claude-sonnet-4-5", 25);
    assert_eq!(c["provider"], "anthropic");
    assert_eq!(c["endpoint"], "messages");
    assert_eq!(usage(c), [25, 11, 3, 4]);
    assert_eq!(c["finish_reason"], "end_turn");
    // Anthropic's input excludes the cache: 25 × $3 + 3 × $0.30 + 4 × $3.75 + 11 × $15 per MTok.
    let want = (25.0 * 3.0 + 3.0 * 0.30 + 4.0 * 3.75 + 11.0 * 15.0) / 1e6;
    assert!((cost(c) - want).abs() < 1e-12, "{} != {want}", cost(c));
    let c = find(&calls, "claude-haiku-4-5", 40);
    assert_eq!(
        (usage(c), &c["stream"]),
        ([40, 6, 0, 0], &Value::from(true))
    );
    assert!(c["first_token_ns"].as_u64().unwrap() > 0);

    // A 429 with retry-after.
    let c = calls
        .iter()
        .find(|c| c["model"] == "rate-limited-model")
        .expect("the rate-limited call");
    assert_eq!(c["status"], 429);
    assert_eq!(c["error"]["retry_after_s"], 7.0);
    assert_eq!(c["error"]["kind"], "rate_limit_exceeded");

    // Priced by the user's table: 1M × $2 + 0.5M × $8.
    let c = find(&calls, "acme-llm-1", 1_000_000);
    assert_eq!((cost(c), &c["cost_source"]), (6.0, &Value::from("config")));

    // Four concurrent calls on one asyncio event loop, two of them streamed.
    for i in 0..4u64 {
        let c = find(&calls, "gpt-4o-mini", 100 + i);
        assert_eq!(usage(c)[1], 10 + i, "{c:#}");
        assert_eq!(c["stream"], i % 2 == 1);
    }
    // No payload text without --capture-io, and the key nowhere (the OTLP export included).
    assert!(calls.iter().all(|c| c["io"].is_null()));
    otlp_spans_carry_the_calls(&out, &calls);
    assert_no_secret(&out);
}

/// `export --format otlp`, decoded by the official OpenTelemetry protos (PyPI's
/// opentelemetry-proto): one CLIENT span per call with its GenAI attributes, the 429 an error.
fn otlp_spans_carry_the_calls(out: &Path, calls: &[Value]) {
    let status = Command::new(modelprobe_bin())
        .args(["-q", "export", "--format", "otlp"])
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
    let python = tools_venv().unwrap().join("bin/python");
    let decode = r#"
import sys, glob, json
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as t
for f in sorted(glob.glob(sys.argv[1] + '/otlp/traces-*.pb')):
    r = t.ExportTraceServiceRequest()
    r.ParseFromString(open(f, 'rb').read())
    for rs in r.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                print(json.dumps(json_format.MessageToDict(s)))
"#;
    let o = Command::new(&python)
        .args(["-c", decode])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let spans: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let attr = |s: &Value, key: &str| -> Value {
        s["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == key)
            .and_then(|a| a["value"].as_object()?.values().next().cloned())
            .unwrap_or(Value::Null)
    };
    let clients: Vec<&Value> = spans
        .iter()
        .filter(|s| s["kind"] == "SPAN_KIND_CLIENT")
        .collect();
    assert_eq!(clients.len(), calls.len());
    let claude = clients
        .iter()
        .find(|s| attr(s, "gen_ai.request.model") == "claude-sonnet-4-5")
        .expect("the claude call");
    assert_eq!(claude["name"], "chat claude-sonnet-4-5");
    // OTLP's JSON mapping writes 64-bit integers as strings.
    assert_eq!(attr(claude, "gen_ai.usage.input_tokens"), "25");
    assert_eq!(attr(claude, "gen_ai.usage.output_tokens"), "11");
    assert_eq!(attr(claude, "gen_ai.provider.name"), "anthropic");
    let limited = clients
        .iter()
        .find(|s| attr(s, "gen_ai.request.model") == "rate-limited-model")
        .expect("the rate-limited call");
    assert_eq!(limited["status"]["code"], "STATUS_CODE_ERROR");
    assert_eq!(attr(limited, "error.type"), "rate_limit_exceeded");
}

#[test]
fn capture_io_keeps_prompts_and_completions_but_never_the_key() {
    if !require_bpf("capture_io_keeps_prompts_and_completions_but_never_the_key") {
        return;
    }
    let _bpf = bpf_lock();
    let Some((r, out)) = record_client("llm-capture-io", &["--capture-io"]) else {
        return;
    };
    let calls = calls(&r);
    let c = find(&calls, "gpt-4o-mini", 12);
    let io = &c["io"];
    assert!(
        io["request"].as_str().unwrap().contains("tokens 12 7"),
        "{io:#}"
    );
    assert!(
        io["completion"]
            .as_str()
            .unwrap()
            .starts_with("the quick brown"),
        "{io:#}"
    );
    // Streams are reassembled.
    let c = find(&calls, "claude-haiku-4-5", 40);
    assert_eq!(
        c["io"]["completion"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        6,
        "{c:#}"
    );
    assert_no_secret(&out);
}

#[test]
fn plain_http_to_a_local_server_is_read_from_the_sockets() {
    if !require_bpf("plain_http_to_a_local_server_is_read_from_the_sockets") {
        return;
    }
    let _bpf = bpf_lock();
    let Some((r, out)) = record_client("llm-plain-http", &["--plain-http"]) else {
        return;
    };
    let calls = calls(&r);
    assert_eq!(calls.len(), 13, "{calls:#?}\n{}", r.stderr());
    assert_eq!(usage(find(&calls, "gpt-4o-mini", 12)), [12, 7, 0, 0]);
    assert_eq!(usage(find(&calls, "gpt-4o-mini", 1000)), [1000, 9000, 0, 0]);
    assert_eq!(usage(find(&calls, "claude-haiku-4-5", 40)), [40, 6, 0, 0]);
    for i in 0..4u64 {
        assert_eq!(usage(find(&calls, "gpt-4o-mini", 100 + i))[1], 10 + i);
    }
    assert_no_secret(&out);
}

#[test]
fn the_node_client_is_read_from_nodes_own_openssl() {
    if !require_bpf("the_node_client_is_read_from_nodes_own_openssl") {
        return;
    }
    let client_dir = modelprobe_tests::target_dir()
        .ancestors()
        .nth(1)
        .map(|t| t.join("node-llm"))
        .filter(|d| d.join("node_modules/openai").exists());
    let (Some(client_dir), Some(venv)) = (client_dir, tools_venv()) else {
        return missing("target/node-llm (npm openai) or target/py-numpy");
    };
    let _bpf = bpf_lock();
    let dir = scratch_dir("llm-node");
    let server = start_server(&dir, &venv.join("bin/python"), false);
    let out = dir.join("rec");
    // Node links OpenSSL into its executable: the probes are found there, not in a libssl.
    let r = Session::run(&out, &[])
        .command(
            "node",
            &[fixture("client.mjs").to_str().unwrap(), &server.base],
        )
        .env("NODE_EXTRA_CA_CERTS", &server.cert)
        .env("MP_NODE_CLIENT_DIR", &client_dir)
        .timeout(Duration::from_secs(120))
        .expect_success();
    assert!(r.stdout().contains("stream events"), "{}", r.stdout());
    let calls = calls(&r);
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(usage(find(&calls, "gpt-4o-mini", 12)), [12, 7, 0, 0]);
    let c = find(&calls, "gpt-4o", 20);
    assert_eq!(
        (usage(c), &c["stream"]),
        ([20, 15, 0, 0], &Value::from(true))
    );
    assert_no_secret(&out);
}

#[test]
fn attach_reads_the_calls_of_a_client_already_talking() {
    if !require_bpf("attach_reads_the_calls_of_a_client_already_talking") {
        return;
    }
    let Some(venv) = tools_venv() else {
        return missing("target/py-numpy (openai, anthropic)");
    };
    let _bpf = bpf_lock();
    let dir = scratch_dir("llm-attach");
    let server = start_server(&dir, &venv.join("bin/python"), false);
    // A client whose connection is open (and libssl mapped) before modelprobe comes.
    let mut client = Command::new(venv.join("bin/python"))
        .arg(fixture("client.py"))
        .args(["--base", &server.base, "--ca"])
        .arg(&server.cert)
        .args(["--repeat", "400", "--pause", "0.02"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(client.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let client = KillOnDrop(client);
    let out = dir.join("rec");
    let r = Session::attach(&out, client.0.id(), &["--duration", "3s"])
        .timeout(Duration::from_secs(60))
        .expect_success();
    let calls = calls(&r);
    // About 3 s of 20 ms pauses: well over 20 calls, each with its exact tokens.
    assert!(calls.len() >= 20, "{} calls\n{}", calls.len(), r.stderr());
    let whole: Vec<&Value> = calls
        .iter()
        .filter(|c| !c["incomplete"].as_bool().unwrap_or(false))
        .collect();
    assert!(whole.len() + 2 >= calls.len(), "{calls:#?}");
    for c in whole {
        assert_eq!(
            (usage(c), &c["status"]),
            ([5, 3, 0, 0], &Value::from(200)),
            "{c:#}"
        );
    }
    assert_no_secret(&out);
}

#[test]
fn a_large_download_is_counted_by_the_kernel_not_sent() {
    if !require_bpf("a_large_download_is_counted_by_the_kernel_not_sent") {
        return;
    }
    let Some(venv) = tools_venv() else {
        return missing("target/py-numpy (openai, anthropic)");
    };
    let _bpf = bpf_lock();
    let dir = scratch_dir("llm-download");
    let server = start_server(&dir, &venv.join("bin/python"), false);
    let out = dir.join("rec");
    const BYTES: u64 = 256 << 20;
    let r = Session::run(&out, &[])
        .command(
            venv.join("bin/python"),
            &[
                fixture("client.py").to_str().unwrap(),
                "--base",
                &server.base,
                "--ca",
                server.cert.to_str().unwrap(),
                "--download",
                &BYTES.to_string(),
            ],
        )
        .timeout(Duration::from_secs(120))
        .expect_success();
    assert!(
        r.stdout().contains(&format!("downloaded {BYTES} then 5 3")),
        "{}",
        r.stdout()
    );
    let llm = &r.recording()["llm"];
    let stats = &llm["stats"];
    // Most of the file never left the kernel; nothing was lost or left unaccounted.
    let skipped = stats["bytes_skipped"].as_u64().unwrap_or(0);
    assert!(
        skipped >= BYTES / 2,
        "{skipped} of {BYTES} bytes skipped: {stats:#}"
    );
    assert_eq!(stats["records_lost"], 0, "{stats:#}");
    assert_eq!(stats["bytes_not_captured"], 0, "{stats:#}");
    assert_eq!(stats["other_requests"], 1, "{stats:#}");
    let calls = llm["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(usage(&calls[0]), [5, 3, 0, 0]);
}
