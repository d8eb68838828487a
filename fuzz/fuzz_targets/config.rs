#![no_main]
//! Fuzz target `config`: the body lives in `bodies/config.rs`, shared with `agent/tests/fuzz_regressions.rs`.

#[path = "../bodies/config.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
