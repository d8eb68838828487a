//! GPU activity in a recording: what CUPTI reported from inside each CUDA process (kernels,
//! copies, memsets, synchronizations, NVTX ranges), already moved onto the recording's
//! CLOCK_MONOTONIC, and joined to the CPU call that launched it.
//!
//! The join is exact: CUPTI gives every GPU operation the correlation id of the CUDA API call
//! that queued it, and the injection library reports, from inside that call, the thread and
//! time of each correlation id ([`GpuTrace::launches`]). The call's eBPF span on that thread
//! contains that time, and its `stack` is the launch stack ([`GpuOp::launch_span`]).
use serde::{Deserialize, Serialize};

/// Everything GPU-side in one recording.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuTrace {
    /// Interned strings: kernel names (mangled, as CUPTI gives them) and NVTX texts.
    pub names: Vec<String>,
    /// GPU operations in start order.
    pub ops: Vec<GpuOp>,
    /// Where each correlation id was issued: one per CUDA call that queued GPU work.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub launches: Vec<GpuLaunch>,
    /// One per process the agent reached (or tried to): what CUPTI said.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<GpuSource>,
}

impl GpuTrace {
    /// True when nothing GPU-side was recorded or attempted.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.sources.is_empty()
    }

    /// The name an op refers to (`""` for an out-of-range index, which
    /// [`Recording::read`](super::Recording::read) rejects anyway).
    pub fn name(&self, index: u32) -> &str {
        self.names.get(index as usize).map_or("", String::as_str)
    }
}

/// One GPU operation, on the recording's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuOp {
    /// The process that issued it.
    pub pid: u32,
    /// CUDA device ordinal.
    pub device: u32,
    /// CUPTI context id.
    pub context: u32,
    /// CUPTI stream id (0 where CUPTI gives none, as for synchronizations of a context).
    pub stream: u32,
    /// CLOCK_MONOTONIC ns when the GPU started it.
    pub start_ns: u64,
    /// CLOCK_MONOTONIC ns when it finished.
    pub end_ns: u64,
    /// CUPTI correlation id of the API call that queued it (0 for NVTX ranges).
    pub correlation: u32,
    /// Index into [`GpuTrace::names`]: the kernel name, the NVTX text, or the kind of copy,
    /// memset or sync (`HtoD`, `memset`, `stream synchronize`).
    pub name: u32,
    /// Index into [`Recording::spans`](super::Recording::spans) of the CUDA call that launched
    /// it, when an eBPF span of that call was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_span: Option<u32>,
    /// Index into [`GpuTrace::launches`] of the call that launched it, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<u32>,
    /// What kind of operation, and its kind's details.
    #[serde(flatten)]
    pub detail: GpuDetail,
}

impl GpuOp {
    /// How long the GPU spent on it, in ns.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// The kind of a [`GpuOp`], with what only that kind has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GpuDetail {
    /// A kernel execution.
    Kernel {
        /// Grid dimensions.
        grid: [i32; 3],
        /// Block dimensions.
        block: [i32; 3],
        /// Registers per thread.
        registers: u16,
        /// Static shared memory per block, bytes.
        shared_static: i32,
        /// Dynamic shared memory per block, bytes.
        shared_dynamic: i32,
        /// The CUDA graph that launched it (0 outside graphs).
        #[serde(default, skip_serializing_if = "is_zero_u32")]
        graph_id: u32,
        /// The graph node that launched it (0 outside graphs).
        #[serde(default, skip_serializing_if = "is_zero_u64")]
        graph_node: u64,
    },
    /// A memory copy (including peer copies between devices).
    Memcpy {
        /// Bytes copied.
        bytes: u64,
        /// Direction: `HtoD`, `DtoH`, `DtoD`, `HtoH`, `PtoP`, ...
        direction: String,
        /// For peer copies: the source and destination devices.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<(u32, u32)>,
        /// The CUDA graph that launched it (0 outside graphs).
        #[serde(default, skip_serializing_if = "is_zero_u32")]
        graph_id: u32,
    },
    /// A memset.
    Memset {
        /// Bytes set.
        bytes: u64,
        /// The value written to each byte/element.
        value: u32,
    },
    /// A host-side wait on the GPU (event, stream or context synchronize, stream wait).
    Sync,
    /// An NVTX range (push/pop or start/end).
    Range,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

impl GpuDetail {
    /// The kind's name, as the outputs show it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            GpuDetail::Kernel { .. } => "kernel",
            GpuDetail::Memcpy { .. } => "memcpy",
            GpuDetail::Memset { .. } => "memset",
            GpuDetail::Sync => "sync",
            GpuDetail::Range => "range",
        }
    }
}

/// A CUDA call that queued GPU work, as the injection library saw it from inside the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuLaunch {
    /// Process id.
    pub pid: u32,
    /// Kernel thread id of the calling thread.
    pub tid: u32,
    /// CLOCK_MONOTONIC ns, inside the call.
    pub time_ns: u64,
    /// CUPTI correlation id.
    pub correlation: u32,
    /// The API function (`cudaLaunchKernel`, `cuMemcpyHtoDAsync_v2`, ...).
    pub api: String,
    /// Index into [`Recording::spans`](super::Recording::spans) of the eBPF span of this call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<u32>,
}

/// What became of GPU tracing in one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSource {
    /// Process id.
    pub pid: u32,
    /// `on`, or why not: `no-cuda`, `no-cupti`, `busy` (another tool holds CUPTI), `error`,
    /// `not-injected` (the library is not in the process).
    pub state: String,
    /// One line for the user: the CUPTI library used, or what went wrong and what to do.
    pub message: String,
    /// `cuptiGetVersion`, when CUPTI was loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cupti_version: Option<u32>,
    /// Records CUPTI dropped (buffers full) plus records the library could not hand over.
    #[serde(default)]
    pub dropped: u64,
    /// Clock alignment: the CUPTI-to-monotonic offset's change over the recording, in ns per
    /// minute, from the calibration pairs (None with fewer than two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_ns_per_min: Option<f64>,
    /// Worst distance of a calibration pair from the fitted line, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_residual_ns: Option<f64>,
}
