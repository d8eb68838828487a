#![no_main]
//! Fuzz target `log_line`: the body lives in `bodies/log_line.rs`, shared with `agent/tests/fuzz_regressions.rs`.

#[path = "../bodies/log_line.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
