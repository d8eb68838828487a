#![no_main]
//! Fuzz target `llm_stream`: the body lives in `bodies/llm_stream.rs`, shared with `agent/tests/fuzz_regressions.rs`.

#[path = "../bodies/llm_stream.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
