//! The GPU side of a recording.
//!
//! - [`nvml`]: device metrics from NVML, sampled on a thread into
//!   [`Counter`](crate::recording::Counter)s; NVML is loaded at run time, so a machine without an
//!   NVIDIA driver records everything else and says, in one line, that GPU metrics are off.
//! - GPU timings from CUPTI, which reports them only inside the CUDA process: [`library`]
//!   embeds the injection library (`agent/inject/`) and writes it out for
//!   `CUDA_INJECTION64_PATH`; [`client`] talks to it in each target process while recording;
//!   [`clock`] moves CUPTI's timestamps onto CLOCK_MONOTONIC; [`merge`] adds the result to the
//!   recording and joins each GPU operation to the CPU call that launched it.
pub mod client;
pub mod clock;
pub mod library;
pub mod merge;
pub mod nvml;
