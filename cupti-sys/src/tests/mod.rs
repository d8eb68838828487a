//! Record decoding against byte buffers laid out by the generated structs, for every struct
//! version a supported CUPTI writes. No CUDA needed.
use std::{
    ffi::CStr,
    mem::{offset_of, size_of},
};

use crate::{
    decode, decode_raw, decode_record, record_bytes, types::CUpti_ActivityKind as Kind, v12, v13,
    Activity, Api, ApiDomain, DecodeError, ExternalCorrelation, Kernel, Layout, Marker,
    MarkerFlags, Memcpy, MemcpyKind, MemcpyPeer, MemoryKind, Memset, RawCStr, SyncType,
    Synchronization,
};

/// One API version per row of the table in `layout.rs`.
const CUDA_12_2: u32 = 20;
const CUDA_12_9: u32 = 28;
const CUDA_13_0: u32 = 130_001;
const CUDA_13_1: u32 = 130_101;
const CUDA_13_3: u32 = 130_301;
const CUDA_13_5: u32 = 130_500;

static KERNEL_NAME: &CStr = c"_Z10vector_addPKfS0_Pfi";
static NVTX_MESSAGE: &CStr = c"decode step 7";
static NVTX_DOMAIN: &CStr = c"modelprobe";

fn only(version: u32, bytes: &[u8]) -> Activity {
    let all: Vec<_> = decode(version, bytes).unwrap().collect();
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap().unwrap()
}

/// Fills a kernel record of any struct version with the same known values.
macro_rules! kernel_record {
    ($t:ty, $kind:expr) => {
        record_bytes::<$t>(|r| {
            r.kind = $kind;
            r.registersPerThread = 40;
            r.start = 1_000_000;
            r.end = 1_250_000;
            r.completed = 1_250_001;
            r.deviceId = 1;
            r.contextId = 2;
            r.streamId = 7;
            r.gridX = 1024;
            r.gridY = 2;
            r.gridZ = 1;
            r.blockX = 256;
            r.blockY = 1;
            r.blockZ = 1;
            r.staticSharedMemory = 4096;
            r.dynamicSharedMemory = 8192;
            r.localMemoryPerThread = 16;
            r.correlationId = 4242;
            r.gridId = 99;
            r.name = KERNEL_NAME.as_ptr();
            r.graphNodeId = 0x1_0000_0005;
            r.graphId = 3;
        })
    };
}

fn expected_kernel(concurrent: bool) -> Activity {
    Activity::Kernel(Kernel {
        concurrent,
        name: RawCStr::new(KERNEL_NAME.as_ptr()),
        start: 1_000_000,
        end: 1_250_000,
        device_id: 1,
        context_id: 2,
        stream_id: 7,
        correlation_id: 4242,
        grid: [1024, 2, 1],
        block: [256, 1, 1],
        registers_per_thread: 40,
        static_shared_memory: 4096,
        dynamic_shared_memory: 8192,
        local_memory_per_thread: 16,
        graph_id: 3,
        graph_node_id: 0x1_0000_0005,
    })
}

// Declared after the macros above (textual scope); the record-building macros of `records`
// serve `buffers` too.
#[macro_use]
mod records;
mod buffers;
