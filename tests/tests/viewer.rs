//! The HTML viewer end to end, as root: record the fixture workload with spans, samples, events
//! and logs, turn it into a page with `modelprobe view`, open the page in headless Chromium, and
//! check what the page says it drew (body attributes set once it is ready). A screenshot is kept
//! in `target/artifacts/viewer.png` for CI.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use modelprobe_tests::*;

/// Browsers tried, in order (`MODELPROBE_BROWSER` names another).
const BROWSERS: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// The headless browser to use, if one is installed. Otherwise prints why the test is skipped,
/// or panics when `MODELPROBE_REQUIRE_BROWSER=1` (so CI never passes on a skipped viewer test).
fn require_browser(test: &str) -> Option<PathBuf> {
    let named = std::env::var("MODELPROBE_BROWSER").ok();
    let found = named
        .iter()
        .map(String::as_str)
        .chain(BROWSERS)
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(PathBuf::from);
    if found.is_none() {
        let why = "no headless browser found (apt-get install -y chromium)";
        if std::env::var("MODELPROBE_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("{test}: a browser is required here: {why}");
        }
        eprintln!("SKIPPED {test}: {why}");
    }
    found
}

/// Runs the browser headless on `page` with `args`; returns its stdout. Output goes through
/// files, not pipes: a dumped DOM (the embedded data included) outgrows a pipe's buffer.
fn browse(browser: &Path, scratch: &Path, page: &Path, args: &[String]) -> String {
    let (out_path, err_path) = (scratch.join("browser.out"), scratch.join("browser.err"));
    let file = |p: &Path| std::fs::File::create(p).expect("create browser output file");
    let child = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("profile").display()
        ))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(file(&out_path))
        .stderr(file(&err_path))
        .spawn()
        .expect("start the browser");
    let mut child = KillOnDrop(child);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for the browser") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the browser overran 120 s: {}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "browser failed: {}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    std::fs::read_to_string(&out_path).expect("read the browser's output")
}

/// The value of attribute `name` on the `<body>` of a dumped DOM.
fn body_attr(dom: &str, name: &str) -> Option<String> {
    let start = dom.find("<body")?;
    let tag = &dom[start..start + dom[start..].find('>')?];
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    Some(tag[at..at + tag[at..].find('"')?].to_string())
}

fn body_number(dom: &str, name: &str) -> u64 {
    body_attr(dom, name)
        .unwrap_or_else(|| panic!("<body> has no {name}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not a number: {e}"))
}

#[test]
fn view_page_draws_the_recording_in_a_browser() {
    const TEST: &str = "view_page_draws_the_recording_in_a_browser";
    if !require_bpf(TEST) {
        return;
    }
    let Some(browser) = require_browser(TEST) else {
        return;
    };
    let _bpf = bpf_lock();
    let dir = scratch_dir("viewer");
    let rec = dir.join("rec");
    // CPU samples (the hot loop), off-CPU intervals (the sleeper thread), spans (every call
    // of the hot functions), events (exec, the child process, the sleeper thread) and log lines
    // (its stdout).
    let options = [
        "--off-cpu",
        "--freq",
        "199",
        "--probe",
        "mp-workload:mp_hot_*",
    ];
    let recording = Session::run(&rec, &options)
        .workload(&["--seconds", "1.5", "--child"])
        .timeout(Duration::from_secs(90))
        .expect_success()
        .recording();
    for part in ["spans", "samples", "events", "logs"] {
        let n = recording[part].as_array().map_or(0, Vec::len);
        assert!(n > 0, "the recording has no {part} to show");
    }

    // Default output: DIR/view.html.
    let view = run_with_timeout(
        Command::new(modelprobe_bin()).arg("view").arg(&rec),
        Duration::from_secs(60),
    );
    assert!(
        view.status.success(),
        "modelprobe view: {}",
        String::from_utf8_lossy(&view.stderr)
    );
    assert!(rec.join("view.html").is_file(), "view writes DIR/view.html");

    // Explicit output path.
    let page = dir.join("page.html");
    let view = run_with_timeout(
        Command::new(modelprobe_bin())
            .arg("view")
            .arg(&rec)
            .arg("-o")
            .arg(&page),
        Duration::from_secs(60),
    );
    assert!(
        view.status.success(),
        "modelprobe view -o: {}",
        String::from_utf8_lossy(&view.stderr)
    );
    let html = std::fs::read_to_string(&page).expect("read the page");
    assert!(html.contains(r#"id="mp-data""#), "the data is embedded");
    for remote in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "@import",
    ] {
        assert!(!html.contains(remote), "the page loads nothing ({remote})");
    }

    let dom = browse(&browser, &dir, &page, &["--dump-dom".into()]);
    let errors = dom
        .find(r#"<pre id="mp-errors""#)
        .and_then(|i| dom[i..].find('>').map(|j| i + j + 1))
        .and_then(|i| dom[i..].find("</pre>").map(|j| &dom[i..i + j]))
        .unwrap_or("");
    assert_eq!(
        body_attr(&dom, "data-mp-errors").as_deref(),
        Some("0"),
        "script errors: {errors}"
    );
    assert_eq!(
        body_attr(&dom, "data-mp-ready").as_deref(),
        Some("1"),
        "the page never became ready: {errors}"
    );
    let spans = body_number(&dom, "data-mp-spans-drawn");
    let frames = body_number(&dom, "data-mp-flame-frames");
    let tables = body_number(&dom, "data-mp-tables");
    eprintln!(
        "viewer: {} bytes, ready after {} ms, {spans} span rectangles, {frames} flame frames, {tables} tables",
        html.len(),
        body_attr(&dom, "data-mp-ready-ms").unwrap_or_default()
    );
    assert!(spans > 0, "the timeline drew no spans");
    assert!(frames > 0, "the CPU flame graph drew no frames");
    assert!(tables > 0, "the report rendered no tables");

    // Replay at 0.75 s (#replay=NS): every thread's state then, the hot loop on CPU in one of
    // the hot functions, the sleeper blocked in mp_sleep.
    let replay_page = std::path::PathBuf::from(format!("{}#replay=750000000", page.display()));
    let dom = browse(&browser, &dir, &replay_page, &["--dump-dom".into()]);
    assert_eq!(body_attr(&dom, "data-mp-errors").as_deref(), Some("0"));
    assert_eq!(body_number(&dom, "data-mp-replay-t"), 750_000_000);
    let threads = body_number(&dom, "data-mp-replay-threads");
    assert!(threads >= 2, "{threads} threads in the replay");
    let details = &dom[dom
        .find(r#"id="tl-details-body""#)
        .expect("the details panel")..];
    assert!(details.contains("Replay at"), "{details}");
    assert!(
        details.contains("on CPU, sampled") && details.contains("mp_hot_"),
        "the hot thread's stack: {details}"
    );
    assert!(
        details.contains("blocked, since") && details.contains("mp_sleep"),
        "the sleeper's blocked stack: {details}"
    );
    assert!(
        details.contains("open calls"),
        "the hot functions' open spans: {details}"
    );

    // A picture for CI: target/artifacts/viewer.png.
    let artifacts = target_dir()
        .parent()
        .expect("target/<profile> has a parent")
        .join("artifacts");
    std::fs::create_dir_all(&artifacts).expect("create target/artifacts");
    let shot = artifacts.join("viewer.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        &browser,
        &dir,
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1600,1000".into(),
        ],
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "the screenshot is a real picture"
    );
}
