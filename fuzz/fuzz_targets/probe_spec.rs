#![no_main]
//! Fuzz target `probe_spec`: the body lives in `bodies/probe_spec.rs`, shared with `agent/tests/fuzz_regressions.rs`.

#[path = "../bodies/probe_spec.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
