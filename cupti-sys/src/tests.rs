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

#[test]
fn kernel_records_of_every_struct_version() {
    let k12 = v12::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
    let k13 = v13::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
    let cases = [
        (
            CUDA_12_2,
            kernel_record!(v12::CUpti_ActivityKernel9, k12),
            208,
        ),
        (
            CUDA_12_9,
            kernel_record!(v12::CUpti_ActivityKernel9, k12),
            208,
        ),
        (
            CUDA_13_0,
            kernel_record!(v13::CUpti_ActivityKernel10, k13),
            216,
        ),
        (
            CUDA_13_1,
            kernel_record!(v13::CUpti_ActivityKernel11, k13),
            224,
        ),
        (
            CUDA_13_3,
            kernel_record!(v13::CUpti_ActivityKernel12, k13),
            232,
        ),
        (
            CUDA_13_5,
            kernel_record!(v13::CUpti_ActivityKernel13, k13),
            248,
        ),
    ];
    for (version, bytes, size) in cases {
        assert_eq!(bytes.len(), size, "version {version}");
        assert_eq!(
            only(version, &bytes),
            expected_kernel(true),
            "version {version}"
        );
    }
    let serial = kernel_record!(
        v12::CUpti_ActivityKernel9,
        v12::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_KERNEL
    );
    assert_eq!(only(CUDA_12_9, &serial), expected_kernel(false));
}

#[test]
fn kernel_names_read_back_through_the_record_pointer() {
    let bytes = kernel_record!(
        v13::CUpti_ActivityKernel13,
        v13::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_KERNEL
    );
    let Activity::Kernel(k) = only(CUDA_13_5, &bytes) else {
        panic!("not a kernel");
    };
    // SAFETY: the name points at a static string.
    let name = unsafe { k.name.to_string_lossy() };
    assert_eq!(name.as_deref(), Some("_Z10vector_addPKfS0_Pfi"));
}

macro_rules! memcpy_record {
    ($t:ty, $kind:expr) => {
        record_bytes::<$t>(|r| {
            r.kind = $kind;
            r.copyKind = 1; // HtoD
            r.srcKind = 2; // pinned
            r.dstKind = 3; // device
            r.flags = 1; // async
            r.bytes = 64 << 20;
            r.start = 5_000;
            r.end = 9_000;
            r.deviceId = 0;
            r.contextId = 1;
            r.streamId = 13;
            r.correlationId = 77;
            r.runtimeCorrelationId = 76;
            r.graphNodeId = 12;
            r.graphId = 4;
        })
    };
}

#[test]
fn memcpy_records_of_every_struct_version() {
    let k12 = v12::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMCPY;
    let k13 = v13::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMCPY;
    let expected = Activity::Memcpy(Memcpy {
        copy_kind: MemcpyKind::HtoD,
        src_kind: MemoryKind::Pinned,
        dst_kind: MemoryKind::Device,
        bytes: 64 << 20,
        is_async: true,
        start: 5_000,
        end: 9_000,
        device_id: 0,
        context_id: 1,
        stream_id: 13,
        correlation_id: 77,
        runtime_correlation_id: 76,
        graph_id: 4,
        graph_node_id: 12,
    });
    let cases = [
        (
            CUDA_12_2,
            memcpy_record!(v12::CUpti_ActivityMemcpy5, k12),
            88,
        ),
        (
            CUDA_12_9,
            memcpy_record!(v12::CUpti_ActivityMemcpy6, k12),
            96,
        ),
        (
            CUDA_13_0,
            memcpy_record!(v13::CUpti_ActivityMemcpy6, k13),
            96,
        ),
        (
            CUDA_13_3,
            memcpy_record!(v13::CUpti_ActivityMemcpy6, k13),
            96,
        ),
        (
            CUDA_13_5,
            memcpy_record!(v13::CUpti_ActivityMemcpy7, k13),
            112,
        ),
    ];
    for (version, bytes, size) in cases {
        assert_eq!(bytes.len(), size, "version {version}");
        assert_eq!(only(version, &bytes), expected, "version {version}");
    }
}

macro_rules! peer_record {
    ($t:ty, $kind:expr) => {
        record_bytes::<$t>(|r| {
            r.kind = $kind;
            r.copyKind = 10; // PtoP
            r.srcKind = 3;
            r.dstKind = 3;
            r.flags = 0;
            r.bytes = 1 << 30;
            r.start = 100;
            r.end = 400;
            r.deviceId = 0;
            r.contextId = 1;
            r.streamId = 14;
            r.srcDeviceId = 0;
            r.srcContextId = 1;
            r.dstDeviceId = 1;
            r.dstContextId = 2;
            r.correlationId = 501;
            r.graphNodeId = 0;
            r.graphId = 0;
        })
    };
}

#[test]
fn peer_copies_name_both_devices() {
    let expected = Activity::MemcpyPeer(MemcpyPeer {
        copy_kind: MemcpyKind::PtoP,
        src_kind: MemoryKind::Device,
        dst_kind: MemoryKind::Device,
        bytes: 1 << 30,
        is_async: false,
        start: 100,
        end: 400,
        device_id: 0,
        context_id: 1,
        stream_id: 14,
        src_device_id: 0,
        src_context_id: 1,
        dst_device_id: 1,
        dst_context_id: 2,
        correlation_id: 501,
        graph_id: 0,
        graph_node_id: 0,
    });
    let b12 = peer_record!(
        v12::CUpti_ActivityMemcpyPtoP4,
        v12::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMCPY2
    );
    let b13 = peer_record!(
        v13::CUpti_ActivityMemcpyPtoP4,
        v13::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMCPY2
    );
    assert_eq!(only(CUDA_12_2, &b12), expected);
    assert_eq!(only(CUDA_13_5, &b13), expected);
}

macro_rules! memset_record {
    ($t:ty, $kind:expr) => {
        record_bytes::<$t>(|r| {
            r.kind = $kind;
            r.value = 0xAB;
            r.bytes = 4096;
            r.start = 10;
            r.end = 20;
            r.deviceId = 2;
            r.contextId = 3;
            r.streamId = 15;
            r.correlationId = 600;
            r.flags = 1; // async
            r.memoryKind = 3; // device
            r.graphNodeId = 8;
            r.graphId = 9;
        })
    };
}

#[test]
fn memset_records_of_every_struct_version() {
    let expected = Activity::Memset(Memset {
        bytes: 4096,
        value: 0xAB,
        memory_kind: MemoryKind::Device,
        is_async: true,
        start: 10,
        end: 20,
        device_id: 2,
        context_id: 3,
        stream_id: 15,
        correlation_id: 600,
        graph_id: 9,
        graph_node_id: 8,
    });
    let k12 = v12::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMSET;
    let k13 = v13::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMSET;
    let cases = [
        (
            CUDA_12_2,
            memset_record!(v12::CUpti_ActivityMemset4, k12),
            88,
        ),
        (
            CUDA_13_3,
            memset_record!(v13::CUpti_ActivityMemset4, k13),
            88,
        ),
        (
            CUDA_13_5,
            memset_record!(v13::CUpti_ActivityMemset5, k13),
            104,
        ),
    ];
    for (version, bytes, size) in cases {
        assert_eq!(bytes.len(), size, "version {version}");
        assert_eq!(only(version, &bytes), expected, "version {version}");
    }
}

#[test]
fn synchronization_records_before_and_after_cuda_12_8() {
    let old = record_bytes::<v12::CUpti_ActivitySynchronization>(|r| {
        r.kind = v12::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_SYNCHRONIZATION;
        r.type_ = v12::CUpti_ActivitySynchronizationType::CUPTI_ACTIVITY_SYNCHRONIZATION_TYPE_STREAM_SYNCHRONIZE;
        r.start = 30;
        r.end = 90;
        r.correlationId = 700;
        r.contextId = 1;
        r.streamId = 7;
        r.cudaEventId = u32::MAX; // not applicable
    });
    assert_eq!(
        only(CUDA_12_2, &old),
        Activity::Synchronization(Synchronization {
            sync_type: SyncType::StreamSynchronize,
            start: 30,
            end: 90,
            context_id: 1,
            stream_id: Some(7),
            event_id: None,
            correlation_id: 700,
            return_value: None,
        })
    );
    macro_rules! sync2 {
        ($m:ident) => {
            record_bytes::<$m::CUpti_ActivitySynchronization2>(|r| {
                r.kind = $m::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_SYNCHRONIZATION;
                r.type_ = $m::CUpti_ActivitySynchronizationType::CUPTI_ACTIVITY_SYNCHRONIZATION_TYPE_EVENT_SYNCHRONIZE;
                r.start = 40;
                r.end = 45;
                r.correlationId = 701;
                r.contextId = 1;
                r.streamId = u32::MAX;
                r.cudaEventId = 12;
                r.cudaEventSyncId = 3;
                r.returnValue = 0;
            })
        };
    }
    let expected = Activity::Synchronization(Synchronization {
        sync_type: SyncType::EventSynchronize,
        start: 40,
        end: 45,
        context_id: 1,
        stream_id: None,
        event_id: Some(12),
        correlation_id: 701,
        return_value: Some(0),
    });
    assert_eq!(only(CUDA_12_9, &sync2!(v12)), expected);
    assert_eq!(only(CUDA_13_5, &sync2!(v13)), expected);
}

macro_rules! api_record {
    ($m:ident, $kind:ident) => {
        record_bytes::<$m::CUpti_ActivityAPI>(|r| {
            r.kind = $m::CUpti_ActivityKind::$kind;
            r.cbid = 211; // cudaLaunchKernel_v7000 in cupti_runtime_cbid.h
            r.start = 900;
            r.end = 950;
            r.processId = 4242;
            r.threadId = 4243;
            r.correlationId = 4242;
            r.returnValue = 0;
        })
    };
}

#[test]
fn runtime_and_driver_calls() {
    let call = |domain| {
        Activity::Api(Api {
            domain,
            cbid: 211,
            start: 900,
            end: 950,
            process_id: 4242,
            thread_id: 4243,
            correlation_id: 4242,
            return_value: 0,
        })
    };
    assert_eq!(
        only(CUDA_12_2, &api_record!(v12, CUPTI_ACTIVITY_KIND_RUNTIME)),
        call(ApiDomain::Runtime)
    );
    assert_eq!(
        only(CUDA_13_5, &api_record!(v13, CUPTI_ACTIVITY_KIND_RUNTIME)),
        call(ApiDomain::Runtime)
    );
    assert_eq!(
        only(CUDA_13_0, &api_record!(v13, CUPTI_ACTIVITY_KIND_DRIVER)),
        call(ApiDomain::Driver)
    );
}

macro_rules! marker_record {
    ($m:ident, $flags:expr, $id:expr, $name:expr, $domain:expr) => {
        record_bytes::<$m::CUpti_ActivityMarker2>(|r| {
            r.kind = $m::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MARKER;
            r.flags = $flags;
            r.timestamp = 123_456;
            r.id = $id;
            r.name = $name;
            r.domain = $domain;
        })
    };
}

#[test]
fn nvtx_ranges_and_marks() {
    let start = marker_record!(
        v13,
        v13::CUpti_ActivityFlag::CUPTI_ACTIVITY_FLAG_MARKER_START,
        5,
        NVTX_MESSAGE.as_ptr(),
        NVTX_DOMAIN.as_ptr()
    );
    let Activity::Marker(m) = only(CUDA_13_5, &start) else {
        panic!("not a marker");
    };
    assert!(m.flags.is_start() && !m.flags.is_end());
    assert_eq!((m.id, m.timestamp), (5, 123_456));
    // SAFETY: both point at static strings.
    let (name, domain) = unsafe { (m.name.to_string_lossy(), m.domain.to_string_lossy()) };
    assert_eq!(name.as_deref(), Some("decode step 7"));
    assert_eq!(domain.as_deref(), Some("modelprobe"));

    let end = marker_record!(
        v12,
        v12::CUpti_ActivityFlag::CUPTI_ACTIVITY_FLAG_MARKER_END,
        5,
        std::ptr::null(),
        std::ptr::null()
    );
    assert_eq!(
        only(CUDA_12_9, &end),
        Activity::Marker(Marker {
            flags: MarkerFlags(4),
            timestamp: 123_456,
            id: 5,
            name: RawCStr::new(std::ptr::null()),
            domain: RawCStr::new(std::ptr::null()),
        })
    );
}

#[test]
fn external_correlation() {
    macro_rules! ext {
        ($m:ident) => {
            record_bytes::<$m::CUpti_ActivityExternalCorrelation>(|r| {
                r.kind = $m::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION;
                r.externalKind =
                    $m::CUpti_ExternalCorrelationKind::CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0;
                r.externalId = 0xdead_beef_0001;
                r.correlationId = 4242;
            })
        };
    }
    let expected = Activity::ExternalCorrelation(ExternalCorrelation {
        external_kind: v13::CUpti_ExternalCorrelationKind::CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0
            .0,
        external_id: 0xdead_beef_0001,
        correlation_id: 4242,
    });
    assert_eq!(only(CUDA_12_2, &ext!(v12)), expected);
    assert_eq!(only(CUDA_13_1, &ext!(v13)), expected);
}

/// A CUDA 13.5 buffer: API call, kernel, copy, memset, back to back.
fn mixed_buffer() -> Vec<u8> {
    let mut buf = api_record!(v13, CUPTI_ACTIVITY_KIND_RUNTIME);
    buf.extend(kernel_record!(
        v13::CUpti_ActivityKernel13,
        v13::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL
    ));
    buf.extend(memcpy_record!(
        v13::CUpti_ActivityMemcpy7,
        v13::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMCPY
    ));
    buf.extend(memset_record!(
        v13::CUpti_ActivityMemset5,
        v13::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMSET
    ));
    buf
}

#[test]
fn a_buffer_of_records_decodes_in_order() {
    let buf = mixed_buffer();
    assert_eq!(buf.len(), 40 + 248 + 112 + 104);
    let kinds: Vec<&str> = decode(CUDA_13_5, &buf)
        .unwrap()
        .map(|a| match a.unwrap() {
            Activity::Api(_) => "api",
            Activity::Kernel(_) => "kernel",
            Activity::Memcpy(_) => "memcpy",
            Activity::Memset(_) => "memset",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["api", "kernel", "memcpy", "memset"]);
}

#[test]
fn a_truncated_record_is_an_error_and_ends_the_walk() {
    let buf = mixed_buffer();
    let cut = &buf[..buf.len() - 1];
    let all: Vec<_> = decode(CUDA_13_5, cut).unwrap().collect();
    assert_eq!(all.len(), 4);
    assert!(all[..3].iter().all(Result::is_ok));
    assert_eq!(
        all[3],
        Err(DecodeError::Truncated {
            kind: Kind::CUPTI_ACTIVITY_KIND_MEMSET.0,
            offset: 40 + 248 + 112,
            needed: 104,
            available: 103,
        })
    );
    let msg = all[3].as_ref().unwrap_err().to_string();
    assert!(msg.contains("needs 104 bytes, only 103 are left"), "{msg}");

    // Cut inside the kind of the second record.
    let all: Vec<_> = decode(CUDA_13_5, &buf[..42]).unwrap().collect();
    assert_eq!(
        all,
        [
            Ok(only(CUDA_13_5, &buf[..40])),
            Err(DecodeError::NoKind {
                offset: 40,
                available: 2
            })
        ]
    );

    // Every shorter prefix of a kernel record is refused, never read past.
    let kernel = &buf[40..40 + 248];
    let layout = Layout::for_api_version(CUDA_13_5).unwrap();
    for len in 0..kernel.len() {
        assert!(decode_record(&layout, &kernel[..len]).is_err(), "{len}");
    }
    assert!(decode_record(&layout, kernel).is_ok());
}

#[test]
fn a_kind_of_unknown_size_stops_the_walk_but_decodes_alone() {
    let name_kind = Kind::CUPTI_ACTIVITY_KIND_NAME.0;
    let mut buf = name_kind.to_ne_bytes().to_vec();
    buf.extend([0u8; 60]);
    let layout = Layout::for_api_version(CUDA_12_9).unwrap();
    assert_eq!(
        decode_record(&layout, &buf),
        Ok(Activity::Other { kind: name_kind })
    );
    let all: Vec<_> = decode(CUDA_12_9, &buf).unwrap().collect();
    assert_eq!(
        all,
        [Err(DecodeError::UnknownSize {
            kind: name_kind,
            offset: 0
        })]
    );
}

#[test]
fn records_handed_out_by_pointer_decode_the_same() {
    let buf = mixed_buffer();
    let layout = Layout::for_api_version(CUDA_13_5).unwrap();
    let kernel = buf[40..].as_ptr().cast();
    // SAFETY: `kernel` points at a complete Kernel13 record inside `buf`.
    let activity = unsafe { decode_raw(&layout, kernel) };
    assert_eq!(activity, expected_kernel(true));

    let other = Kind::CUPTI_ACTIVITY_KIND_NAME.0.to_ne_bytes();
    // SAFETY: for a kind not decoded here only the 4-byte kind is read.
    let activity = unsafe { decode_raw(&layout, other.as_ptr().cast()) };
    assert_eq!(
        activity,
        Activity::Other {
            kind: Kind::CUPTI_ACTIVITY_KIND_NAME.0
        }
    );
}

#[test]
fn unsupported_versions_are_refused_before_reading() {
    let err = decode(17, &[]).unwrap_err();
    assert_eq!(err.version, 17);
    assert!(decode(140_000, &[]).is_err());
}

#[test]
fn structs_both_majors_define_have_one_layout() {
    // Decoding CUDA 12 records with CUDA 13 enums and callback types relies on this.
    assert_eq!(
        size_of::<v12::CUpti_CallbackData>(),
        size_of::<v13::CUpti_CallbackData>()
    );
    assert_eq!(
        offset_of!(v12::CUpti_CallbackData, correlationId),
        offset_of!(v13::CUpti_CallbackData, correlationId)
    );
    assert_eq!(
        size_of::<v12::CUpti_ResourceData>(),
        size_of::<v13::CUpti_ResourceData>()
    );
    assert_eq!(
        size_of::<v12::CUpti_ActivityAPI>(),
        size_of::<v13::CUpti_ActivityAPI>()
    );
    assert_eq!(
        size_of::<v12::CUpti_ActivityMemcpy6>(),
        size_of::<v13::CUpti_ActivityMemcpy6>()
    );
    assert_eq!(
        offset_of!(v12::CUpti_ActivityMemcpy6, copyCount),
        offset_of!(v13::CUpti_ActivityMemcpy6, copyCount)
    );
    // Kernel structs only ever append: the fields read here sit at one offset in all of them.
    assert_eq!(
        offset_of!(v12::CUpti_ActivityKernel9, graphId),
        offset_of!(v13::CUpti_ActivityKernel13, graphId)
    );
    assert_eq!(
        offset_of!(v12::CUpti_ActivityKernel9, name),
        offset_of!(v13::CUpti_ActivityKernel13, name)
    );
    for (a, b) in [
        (
            v12::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL.0,
            v13::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL.0,
        ),
        (
            v12::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMCPY2.0,
            v13::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMCPY2.0,
        ),
        (
            v12::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_SYNCHRONIZATION.0,
            v13::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_SYNCHRONIZATION.0,
        ),
        (
            v12::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION.0,
            v13::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION.0,
        ),
    ] {
        assert_eq!(a, b);
    }
}
