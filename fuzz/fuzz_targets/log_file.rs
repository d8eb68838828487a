#![no_main]
//! Fuzz target `log_file`: the body lives in `bodies/log_file.rs`, shared with `agent/tests/fuzz_regressions.rs`.

#[path = "../bodies/log_file.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
