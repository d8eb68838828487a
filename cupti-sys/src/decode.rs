//! Reading activity records: the struct is picked by the record's kind and by the [`Layout`] of
//! the CUPTI release that wrote it, then read with `ptr::read_unaligned` after checking that
//! the bytes are there.
//!
//! Live CUPTI buffers are walked with `cuptiActivityGetNextRecord`, and each record it returns
//! goes through [`decode_raw`]. [`Records`] walks a byte buffer of records laid back to back
//! (each `record_size` bytes, which CUPTI keeps a multiple of 8): the format of tests and of
//! copies of records, not a substitute for `cuptiActivityGetNextRecord`.
use std::{mem::size_of, ptr};

use crate::{
    activity::{
        Activity, Api, ApiDomain, ExternalCorrelation, Kernel, MarkerFlags, Memcpy, MemcpyKind,
        MemcpyPeer, MemoryKind, Memset, SyncType, Synchronization,
    },
    layout::{KernelRecord, Layout, MemcpyRecord, MemsetRecord, SyncRecord, UnsupportedVersion},
    types::{CUpti_Activity, CUpti_ActivityFlag as Flag, CUpti_ActivityKind as Kind},
    v12, v13, Marker, RawCStr,
};

/// A record that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the 4-byte kind every record starts with.
    #[error("{available} bytes at offset {offset} cannot hold an activity record (it starts with a 4-byte kind)")]
    NoKind {
        /// Where the record starts in the buffer.
        offset: usize,
        /// Bytes left from there.
        available: usize,
    },
    /// The record's struct is longer than the bytes left.
    #[error("activity record of kind {kind} at offset {offset} needs {needed} bytes, only {available} are left: the buffer is truncated")]
    Truncated {
        /// The record's `CUpti_ActivityKind`.
        kind: u32,
        /// Where the record starts in the buffer.
        offset: usize,
        /// Size of the record's struct.
        needed: usize,
        /// Bytes left from `offset`.
        available: usize,
    },
    /// A kind whose size this crate does not know, so the records after it cannot be found.
    #[error("cannot step over an activity record of kind {kind} at offset {offset}: its size is unknown to modelprobe")]
    UnknownSize {
        /// The record's `CUpti_ActivityKind`.
        kind: u32,
        /// Where the record starts in the buffer.
        offset: usize,
    },
}

/// A record struct generated from the CUPTI headers, readable from raw bytes.
///
/// # Safety
/// Implementors are `#[repr(C)]` structs whose fields are all integers, newtypes over integers,
/// raw pointers, or arrays and unions of those, so that every byte pattern of
/// `size_of::<Self>()` bytes, and all zeroes in particular, is a valid value.
pub unsafe trait Record: Copy {}

macro_rules! records {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: generated from cupti_activity.h; its fields are integers, enum newtypes
        // (`#[repr(transparent)]` over u32), raw pointers and unions/arrays of integers.
        unsafe impl Record for $t {}
    )*};
}

records!(
    v12::CUpti_ActivityKernel9,
    v12::CUpti_ActivityMemcpy5,
    v12::CUpti_ActivityMemcpy6,
    v12::CUpti_ActivityMemcpyPtoP4,
    v12::CUpti_ActivityMemset4,
    v12::CUpti_ActivitySynchronization,
    v12::CUpti_ActivitySynchronization2,
    v12::CUpti_ActivityAPI,
    v12::CUpti_ActivityMarker2,
    v12::CUpti_ActivityExternalCorrelation,
    v13::CUpti_ActivityKernel10,
    v13::CUpti_ActivityKernel11,
    v13::CUpti_ActivityKernel12,
    v13::CUpti_ActivityKernel13,
    v13::CUpti_ActivityMemcpy6,
    v13::CUpti_ActivityMemcpy7,
    v13::CUpti_ActivityMemcpyPtoP4,
    v13::CUpti_ActivityMemset4,
    v13::CUpti_ActivityMemset5,
    v13::CUpti_ActivitySynchronization2,
    v13::CUpti_ActivityAPI,
    v13::CUpti_ActivityMarker2,
    v13::CUpti_ActivityExternalCorrelation,
);

/// The bytes of a record struct whose fields `fill` sets, all other bytes (padding included)
/// zero: how tests lay out buffers exactly as CUPTI would.
pub fn record_bytes<T: Record>(fill: impl FnOnce(&mut T)) -> Vec<u8> {
    let mut storage = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: all-zero bytes are a valid T (the `Record` contract), and the storage lives for
    // the whole borrow.
    let record = unsafe { &mut *storage.as_mut_ptr() };
    // Field assignments write only the fields, so padding stays zero (initialized).
    fill(record);
    // SAFETY: every byte of `storage` was initialized by `zeroed` and is readable as u8; the
    // slice does not outlive `storage`.
    unsafe { std::slice::from_raw_parts(storage.as_ptr().cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// Reads a `T` from the start of `bytes`.
fn read<T: Record>(bytes: &[u8], kind: u32, offset: usize) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Truncated {
            kind,
            offset,
            needed: size_of::<T>(),
            available: bytes.len(),
        });
    }
    // SAFETY: `bytes` holds at least size_of::<T>() readable bytes; read_unaligned has no
    // alignment requirement; and any byte pattern is a valid T (`Record`).
    Ok(unsafe { ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The record kind at the start of `bytes`.
fn kind_at(bytes: &[u8], offset: usize) -> Result<u32, DecodeError> {
    match bytes.first_chunk::<4>() {
        Some(k) => Ok(u32::from_ne_bytes(*k)),
        None => Err(DecodeError::NoKind {
            offset,
            available: bytes.len(),
        }),
    }
}

/// Decodes the record at the start of `bytes`, written by a CUPTI with this `layout`.
/// Kinds this crate does not decode come back as [`Activity::Other`].
pub fn decode_record(layout: &Layout, bytes: &[u8]) -> Result<Activity, DecodeError> {
    decode_at(layout, bytes, 0)
}

/// Decodes one record that CUPTI handed out (`cuptiActivityGetNextRecord`).
///
/// # Safety
/// `record` must point to a complete activity record written by the CUPTI whose API version
/// `layout` was chosen for, readable for the size of that record's struct, as a record from
/// `cuptiActivityGetNextRecord` is until its buffer is handed back.
pub unsafe fn decode_raw(layout: &Layout, record: *const CUpti_Activity) -> Activity {
    // SAFETY: every record starts with its 4-byte kind, readable per the caller's contract.
    let kind = unsafe { ptr::read_unaligned(record.cast::<u32>()) };
    let size = layout.record_size(Kind(kind)).unwrap_or(size_of::<u32>());
    // SAFETY: the caller guarantees the whole record is readable, and `size` is the size of
    // the struct this CUPTI writes for `kind` (or just the kind for kinds not decoded here).
    let bytes = unsafe { std::slice::from_raw_parts(record.cast::<u8>(), size) };
    decode_at(layout, bytes, 0).unwrap_or(Activity::Other { kind })
}

/// Walks a buffer of records laid back to back. Built by [`decode`] or [`Records::new`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    layout: Layout,
    buf: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Records<'a> {
    /// Walks `buf`, decoding with `layout`.
    pub fn new(layout: Layout, buf: &'a [u8]) -> Records<'a> {
        Records {
            layout,
            buf,
            offset: 0,
            done: false,
        }
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Activity, DecodeError>;

    /// The next record; after an error (a truncated record, or a kind whose size is unknown)
    /// the walk ends, since the next record's start is unknown.
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.offset >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.offset..];
        let offset = self.offset;
        let step = kind_at(rest, offset).and_then(|kind| {
            self.layout
                .record_size(Kind(kind))
                .ok_or(DecodeError::UnknownSize { kind, offset })
        });
        let result = step.and_then(|size| {
            let activity = decode_at(&self.layout, rest, offset)?;
            self.offset += size;
            Ok(activity)
        });
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}

/// Walks a buffer of records written by the CUPTI that reports `api_version`
/// (`cuptiGetVersion`).
pub fn decode(api_version: u32, buf: &[u8]) -> Result<Records<'_>, UnsupportedVersion> {
    Ok(Records::new(Layout::for_api_version(api_version)?, buf))
}

fn decode_at(layout: &Layout, bytes: &[u8], offset: usize) -> Result<Activity, DecodeError> {
    let raw = kind_at(bytes, offset)?;
    let cuda13 = layout.api_version >= 130_000;
    // Reads the struct `$module::$t` and converts it with `$convert` (a macro, since the
    // structs of the two majors are different types with the same fields).
    macro_rules! get {
        ($module:ident :: $t:ident, $convert:ident) => {{
            let r = read::<$module::$t>(bytes, raw, offset)?;
            $convert!(r)
        }};
    }
    // Same, choosing the module by major version for a struct both majors use.
    macro_rules! get_either {
        ($t:ident, $convert:ident) => {
            if cuda13 {
                get!(v13::$t, $convert)
            } else {
                get!(v12::$t, $convert)
            }
        };
    }
    let kind = Kind(raw);
    let activity = match kind {
        Kind::CUPTI_ACTIVITY_KIND_KERNEL | Kind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL => {
            let concurrent = kind == Kind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
            macro_rules! kernel {
                ($r:expr) => {{
                    let r = $r;
                    Activity::Kernel(Kernel {
                        concurrent,
                        name: RawCStr::new(r.name),
                        start: r.start,
                        end: r.end,
                        device_id: r.deviceId,
                        context_id: r.contextId,
                        stream_id: r.streamId,
                        correlation_id: r.correlationId,
                        grid: [r.gridX, r.gridY, r.gridZ],
                        block: [r.blockX, r.blockY, r.blockZ],
                        registers_per_thread: r.registersPerThread,
                        static_shared_memory: r.staticSharedMemory,
                        dynamic_shared_memory: r.dynamicSharedMemory,
                        local_memory_per_thread: r.localMemoryPerThread,
                        graph_id: r.graphId,
                        graph_node_id: r.graphNodeId,
                    })
                }};
            }
            match layout.kernel {
                KernelRecord::V9 => get!(v12::CUpti_ActivityKernel9, kernel),
                KernelRecord::V10 => get!(v13::CUpti_ActivityKernel10, kernel),
                KernelRecord::V11 => get!(v13::CUpti_ActivityKernel11, kernel),
                KernelRecord::V12 => get!(v13::CUpti_ActivityKernel12, kernel),
                KernelRecord::V13 => get!(v13::CUpti_ActivityKernel13, kernel),
            }
        }
        Kind::CUPTI_ACTIVITY_KIND_MEMCPY => {
            macro_rules! memcpy {
                ($r:expr) => {{
                    let r = $r;
                    Activity::Memcpy(Memcpy {
                        copy_kind: MemcpyKind::from_raw(r.copyKind),
                        src_kind: MemoryKind::from_raw(r.srcKind.into()),
                        dst_kind: MemoryKind::from_raw(r.dstKind.into()),
                        bytes: r.bytes,
                        is_async: u32::from(r.flags) & Flag::CUPTI_ACTIVITY_FLAG_MEMCPY_ASYNC.0
                            != 0,
                        start: r.start,
                        end: r.end,
                        device_id: r.deviceId,
                        context_id: r.contextId,
                        stream_id: r.streamId,
                        correlation_id: r.correlationId,
                        runtime_correlation_id: r.runtimeCorrelationId,
                        graph_id: r.graphId,
                        graph_node_id: r.graphNodeId,
                    })
                }};
            }
            match layout.memcpy {
                MemcpyRecord::V5 => get!(v12::CUpti_ActivityMemcpy5, memcpy),
                MemcpyRecord::V6 => get_either!(CUpti_ActivityMemcpy6, memcpy),
                MemcpyRecord::V7 => get!(v13::CUpti_ActivityMemcpy7, memcpy),
            }
        }
        Kind::CUPTI_ACTIVITY_KIND_MEMCPY2 => {
            macro_rules! peer {
                ($r:expr) => {{
                    let r = $r;
                    Activity::MemcpyPeer(MemcpyPeer {
                        copy_kind: MemcpyKind::from_raw(r.copyKind),
                        src_kind: MemoryKind::from_raw(r.srcKind.into()),
                        dst_kind: MemoryKind::from_raw(r.dstKind.into()),
                        bytes: r.bytes,
                        is_async: u32::from(r.flags) & Flag::CUPTI_ACTIVITY_FLAG_MEMCPY_ASYNC.0
                            != 0,
                        start: r.start,
                        end: r.end,
                        device_id: r.deviceId,
                        context_id: r.contextId,
                        stream_id: r.streamId,
                        src_device_id: r.srcDeviceId,
                        src_context_id: r.srcContextId,
                        dst_device_id: r.dstDeviceId,
                        dst_context_id: r.dstContextId,
                        correlation_id: r.correlationId,
                        graph_id: r.graphId,
                        graph_node_id: r.graphNodeId,
                    })
                }};
            }
            get_either!(CUpti_ActivityMemcpyPtoP4, peer)
        }
        Kind::CUPTI_ACTIVITY_KIND_MEMSET => {
            macro_rules! memset {
                ($r:expr) => {{
                    let r = $r;
                    Activity::Memset(Memset {
                        bytes: r.bytes,
                        value: r.value,
                        memory_kind: MemoryKind::from_raw(r.memoryKind),
                        is_async: u32::from(r.flags) & Flag::CUPTI_ACTIVITY_FLAG_MEMSET_ASYNC.0
                            != 0,
                        start: r.start,
                        end: r.end,
                        device_id: r.deviceId,
                        context_id: r.contextId,
                        stream_id: r.streamId,
                        correlation_id: r.correlationId,
                        graph_id: r.graphId,
                        graph_node_id: r.graphNodeId,
                    })
                }};
            }
            match layout.memset {
                MemsetRecord::V4 => get_either!(CUpti_ActivityMemset4, memset),
                MemsetRecord::V5 => get!(v13::CUpti_ActivityMemset5, memset),
            }
        }
        Kind::CUPTI_ACTIVITY_KIND_SYNCHRONIZATION => {
            macro_rules! sync {
                ($r:ident, $return_value:expr) => {
                    Activity::Synchronization(Synchronization {
                        sync_type: SyncType::from_raw($r.type_.0),
                        start: $r.start,
                        end: $r.end,
                        context_id: $r.contextId,
                        stream_id: valid($r.streamId),
                        event_id: valid($r.cudaEventId),
                        correlation_id: $r.correlationId,
                        return_value: $return_value,
                    })
                };
            }
            macro_rules! sync1 {
                ($r:expr) => {{
                    let r = $r;
                    sync!(r, None)
                }};
            }
            macro_rules! sync2 {
                ($r:expr) => {{
                    let r = $r;
                    sync!(r, Some(r.returnValue))
                }};
            }
            match layout.synchronization {
                SyncRecord::V1 => get!(v12::CUpti_ActivitySynchronization, sync1),
                SyncRecord::V2 => get_either!(CUpti_ActivitySynchronization2, sync2),
            }
        }
        Kind::CUPTI_ACTIVITY_KIND_RUNTIME | Kind::CUPTI_ACTIVITY_KIND_DRIVER => {
            let domain = if kind == Kind::CUPTI_ACTIVITY_KIND_RUNTIME {
                ApiDomain::Runtime
            } else {
                ApiDomain::Driver
            };
            macro_rules! api {
                ($r:expr) => {{
                    let r = $r;
                    Activity::Api(Api {
                        domain,
                        cbid: r.cbid,
                        start: r.start,
                        end: r.end,
                        process_id: r.processId,
                        thread_id: r.threadId,
                        correlation_id: r.correlationId,
                        return_value: r.returnValue,
                    })
                }};
            }
            get_either!(CUpti_ActivityAPI, api)
        }
        Kind::CUPTI_ACTIVITY_KIND_MARKER => {
            macro_rules! marker {
                ($r:expr) => {{
                    let r = $r;
                    Activity::Marker(Marker {
                        flags: MarkerFlags(r.flags.0),
                        timestamp: r.timestamp,
                        id: r.id,
                        name: RawCStr::new(r.name),
                        domain: RawCStr::new(r.domain),
                    })
                }};
            }
            get_either!(CUpti_ActivityMarker2, marker)
        }
        Kind::CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION => {
            macro_rules! external {
                ($r:expr) => {{
                    let r = $r;
                    Activity::ExternalCorrelation(ExternalCorrelation {
                        external_kind: r.externalKind.0,
                        external_id: r.externalId,
                        correlation_id: r.correlationId,
                    })
                }};
            }
            get_either!(CUpti_ActivityExternalCorrelation, external)
        }
        _ => Activity::Other { kind: raw },
    };
    Ok(activity)
}

/// `CUPTI_SYNCHRONIZATION_INVALID_VALUE` (`(uint32_t) 0xFFFFFFFF`, a cast bindgen cannot
/// evaluate) marks a stream or event id that does not apply.
fn valid(id: u32) -> Option<u32> {
    (id != u32::MAX).then_some(id)
}
