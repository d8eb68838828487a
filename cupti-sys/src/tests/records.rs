//! Each kind of record, in every struct version a supported CUPTI writes.
use super::*;

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
