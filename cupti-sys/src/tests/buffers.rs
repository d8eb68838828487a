//! Whole activity buffers: records in order, truncation, unknown kinds, records by pointer,
//! refused versions, and the layouts both majors share.
use super::*;

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
