//! The GPU side of a recording. Today: device metrics from NVML ([`nvml`]), sampled on a
//! thread while recording into [`Counter`](crate::trace::Counter)s. NVML is loaded at run
//! time, so a machine without an NVIDIA driver records everything else and says, in one line,
//! that GPU metrics are off.
pub mod nvml;
