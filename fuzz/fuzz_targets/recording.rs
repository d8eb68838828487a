#![no_main]
//! Fuzz target `recording`: the body lives in `bodies/recording.rs`, shared with `agent/tests/fuzz_regressions.rs`.

#[path = "../bodies/recording.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
