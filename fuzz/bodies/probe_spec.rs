//! `probe_spec`: `ProbeSpec::parse` on arbitrary UTF-8 (a `--probe TARGET:SYMBOL[@N]` argument).
//!
//! Shared by the fuzz target and `agent/tests/fuzz_regressions.rs` (included with `#[path]`).
use modelprobe::probes::ProbeSpec;

/// Parses the input as a spec; when it parses, checks what the parser promises.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = ProbeSpec::parse(text) else {
        return;
    };
    assert_eq!(spec.text, text);
    assert!(
        !spec.target.is_empty() && !spec.target.contains(':'),
        "{spec:?}"
    );
    assert!(!spec.symbol.is_empty() && spec.args <= 6, "{spec:?}");
    let _ = spec.is_glob();
    // The canonical spelling parses back to the same parts.
    let canonical = format!("{}:{}@{}", spec.target, spec.symbol, spec.args);
    let again = ProbeSpec::parse(&canonical).expect("the canonical spelling of a spec parses");
    assert_eq!(
        (&again.target, &again.symbol, again.args),
        (&spec.target, &spec.symbol, spec.args),
        "{canonical:?}"
    );
}
