//! Decoded activity records: plain Rust values, the same whatever CUPTI version wrote them.
//!
//! Timestamps are CUPTI's, in nanoseconds (its clock unless a timestamp callback was
//! registered with `cuptiActivityRegisterTimestampCallback`). A start and end of 0 mean CUPTI
//! could not time the operation.
use std::{
    ffi::{c_char, CStr},
    fmt,
};

use crate::types::{
    CUpti_ActivityFlag as Flag, CUpti_ActivityMemcpyKind as CopyKind,
    CUpti_ActivityMemoryKind as MemKind, CUpti_ActivitySynchronizationType as SyncKind,
};

/// One activity record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    /// A kernel execution (KERNEL or CONCURRENT_KERNEL).
    Kernel(Kernel),
    /// A memory copy (MEMCPY).
    Memcpy(Memcpy),
    /// A peer-to-peer memory copy between two devices (MEMCPY2).
    MemcpyPeer(MemcpyPeer),
    /// A memset (MEMSET).
    Memset(Memset),
    /// A synchronization call: event, stream or context synchronize, stream wait (SYNCHRONIZATION).
    Synchronization(Synchronization),
    /// A CUDA runtime or driver API call (RUNTIME, DRIVER).
    Api(Api),
    /// An NVTX marker or range end point (MARKER).
    Marker(Marker),
    /// Ties a CUPTI correlation id to an id pushed by the application or a tool
    /// (EXTERNAL_CORRELATION).
    ExternalCorrelation(ExternalCorrelation),
    /// A kind this crate does not decode; `kind` is the raw `CUpti_ActivityKind`.
    Other {
        /// The raw `CUpti_ActivityKind`.
        kind: u32,
    },
}

/// A `const char *` inside a record, pointing into memory CUPTI owns (kernel names, NVTX
/// strings). Kept as an address: it is valid only while CUPTI keeps the string, so copy it out
/// with [`RawCStr::to_string_lossy`] while handling the buffer that held the record.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawCStr(*const c_char);

// SAFETY: a RawCStr is only an address. Nothing reads through it without the `unsafe` of
// `as_c_str`/`to_string_lossy`, whose callers vouch that the string is alive.
unsafe impl Send for RawCStr {}
// SAFETY: as for Send; shared access never dereferences the pointer.
unsafe impl Sync for RawCStr {}

impl RawCStr {
    /// Wraps a pointer taken from a record.
    pub const fn new(ptr: *const c_char) -> RawCStr {
        RawCStr(ptr)
    }

    /// The pointer as CUPTI wrote it.
    pub const fn as_ptr(self) -> *const c_char {
        self.0
    }

    /// True when CUPTI left the field empty.
    pub fn is_null(self) -> bool {
        self.0.is_null()
    }

    /// The string, or `None` for a null pointer.
    ///
    /// # Safety
    /// The pointer must still point to a NUL-terminated string that CUPTI keeps alive for `'a`:
    /// in practice, call this while handling the completed buffer the record came from.
    pub unsafe fn as_c_str<'a>(self) -> Option<&'a CStr> {
        if self.0.is_null() {
            return None;
        }
        // SAFETY: non-null, and the caller guarantees a live NUL-terminated string.
        Some(unsafe { CStr::from_ptr(self.0) })
    }

    /// The string copied out (invalid UTF-8 replaced), or `None` for a null pointer.
    ///
    /// # Safety
    /// As for [`RawCStr::as_c_str`].
    pub unsafe fn to_string_lossy(self) -> Option<String> {
        // SAFETY: forwarded to the caller.
        unsafe { self.as_c_str() }.map(|s| s.to_string_lossy().into_owned())
    }
}

impl fmt::Debug for RawCStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawCStr({:p})", self.0)
    }
}

/// A kernel execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// False for a KERNEL record (the serializing kind), true for CONCURRENT_KERNEL.
    pub concurrent: bool,
    /// The (mangled) kernel name.
    pub name: RawCStr,
    /// Start, in ns.
    pub start: u64,
    /// End, in ns.
    pub end: u64,
    /// CUDA device id.
    pub device_id: u32,
    /// CUPTI context id.
    pub context_id: u32,
    /// CUPTI stream id.
    pub stream_id: u32,
    /// Joins the kernel to the API call that launched it.
    pub correlation_id: u32,
    /// Grid dimensions (x, y, z).
    pub grid: [i32; 3],
    /// Block dimensions (x, y, z).
    pub block: [i32; 3],
    /// Registers per thread.
    pub registers_per_thread: u16,
    /// Static shared memory per block, in bytes.
    pub static_shared_memory: i32,
    /// Dynamic shared memory per block, in bytes.
    pub dynamic_shared_memory: i32,
    /// Local memory per thread, in bytes.
    pub local_memory_per_thread: u32,
    /// The CUDA graph that launched the kernel, 0 outside graphs.
    pub graph_id: u32,
    /// The graph node that launched the kernel, 0 outside graphs.
    pub graph_node_id: u64,
}

/// What a copy goes from and to (`CUpti_ActivityMemcpyKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemcpyKind {
    /// CUPTI could not tell.
    Unknown,
    /// Host to device.
    HtoD,
    /// Device to host.
    DtoH,
    /// Host to array.
    HtoA,
    /// Array to host.
    AtoH,
    /// Array to array.
    AtoA,
    /// Array to device.
    AtoD,
    /// Device to array.
    DtoA,
    /// Device to device.
    DtoD,
    /// Host to host.
    HtoH,
    /// Peer to peer, between two devices.
    PtoP,
    /// A value newer than this crate.
    Other(u8),
}

impl MemcpyKind {
    /// From the byte a record stores.
    pub fn from_raw(raw: u8) -> MemcpyKind {
        let is = |k: CopyKind| u32::from(raw) == k.0;
        match raw {
            _ if is(CopyKind::CUPTI_ACTIVITY_MEMCPY_KIND_UNKNOWN) => MemcpyKind::Unknown,
            _ if is(CopyKind::CUPTI_ACTIVITY_MEMCPY_KIND_HTOD) => MemcpyKind::HtoD,
            _ if is(CopyKind::CUPTI_ACTIVITY_MEMCPY_KIND_DTOH) => MemcpyKind::DtoH,
            _ if is(CopyKind::CUPTI_ACTIVITY_MEMCPY_KIND_HTOA) => MemcpyKind::HtoA,
            _ if is(CopyKind::CUPTI_ACTIVITY_MEMCPY_KIND_ATOH) => MemcpyKind::AtoH,
            _ if is(CopyKind::CUPTI_ACTIVITY_MEMCPY_KIND_ATOA) => MemcpyKind::AtoA,
            _ if is(CopyKind::CUPTI_ACTIVITY_MEMCPY_KIND_ATOD) => MemcpyKind::AtoD,
            _ if is(CopyKind::CUPTI_ACTIVITY_MEMCPY_KIND_DTOA) => MemcpyKind::DtoA,
            _ if is(CopyKind::CUPTI_ACTIVITY_MEMCPY_KIND_DTOD) => MemcpyKind::DtoD,
            _ if is(CopyKind::CUPTI_ACTIVITY_MEMCPY_KIND_HTOH) => MemcpyKind::HtoH,
            _ if is(CopyKind::CUPTI_ACTIVITY_MEMCPY_KIND_PTOP) => MemcpyKind::PtoP,
            other => MemcpyKind::Other(other),
        }
    }
}

/// The kind of memory on one side of a copy or under a memset (`CUpti_ActivityMemoryKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemoryKind {
    /// CUPTI could not tell.
    Unknown,
    /// Pageable host memory.
    Pageable,
    /// Pinned (page-locked) host memory.
    Pinned,
    /// Device memory.
    Device,
    /// A CUDA array.
    Array,
    /// Managed (unified) memory.
    Managed,
    /// Static device memory.
    DeviceStatic,
    /// Static managed memory.
    ManagedStatic,
    /// A value newer than this crate.
    Other(u16),
}

impl MemoryKind {
    /// From the integer a record stores (a byte in copies, 16 bits in memsets).
    pub fn from_raw(raw: u16) -> MemoryKind {
        let is = |k: MemKind| u32::from(raw) == k.0;
        match raw {
            _ if is(MemKind::CUPTI_ACTIVITY_MEMORY_KIND_UNKNOWN) => MemoryKind::Unknown,
            _ if is(MemKind::CUPTI_ACTIVITY_MEMORY_KIND_PAGEABLE) => MemoryKind::Pageable,
            _ if is(MemKind::CUPTI_ACTIVITY_MEMORY_KIND_PINNED) => MemoryKind::Pinned,
            _ if is(MemKind::CUPTI_ACTIVITY_MEMORY_KIND_DEVICE) => MemoryKind::Device,
            _ if is(MemKind::CUPTI_ACTIVITY_MEMORY_KIND_ARRAY) => MemoryKind::Array,
            _ if is(MemKind::CUPTI_ACTIVITY_MEMORY_KIND_MANAGED) => MemoryKind::Managed,
            _ if is(MemKind::CUPTI_ACTIVITY_MEMORY_KIND_DEVICE_STATIC) => MemoryKind::DeviceStatic,
            _ if is(MemKind::CUPTI_ACTIVITY_MEMORY_KIND_MANAGED_STATIC) => {
                MemoryKind::ManagedStatic
            }
            other => MemoryKind::Other(other),
        }
    }
}

/// A memory copy on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memcpy {
    /// Direction.
    pub copy_kind: MemcpyKind,
    /// Source memory.
    pub src_kind: MemoryKind,
    /// Destination memory.
    pub dst_kind: MemoryKind,
    /// Bytes copied.
    pub bytes: u64,
    /// True for an asynchronous copy (`CUPTI_ACTIVITY_FLAG_MEMCPY_ASYNC`).
    pub is_async: bool,
    /// Start, in ns.
    pub start: u64,
    /// End, in ns.
    pub end: u64,
    /// CUDA device id.
    pub device_id: u32,
    /// CUPTI context id.
    pub context_id: u32,
    /// CUPTI stream id.
    pub stream_id: u32,
    /// Joins the copy to the driver API call that issued it.
    pub correlation_id: u32,
    /// Joins the copy to the runtime API call that issued it.
    pub runtime_correlation_id: u32,
    /// The CUDA graph that ran the copy, 0 outside graphs.
    pub graph_id: u32,
    /// The graph node that ran the copy, 0 outside graphs.
    pub graph_node_id: u64,
}

/// A peer-to-peer copy between two devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcpyPeer {
    /// Direction (usually [`MemcpyKind::PtoP`]).
    pub copy_kind: MemcpyKind,
    /// Source memory.
    pub src_kind: MemoryKind,
    /// Destination memory.
    pub dst_kind: MemoryKind,
    /// Bytes copied.
    pub bytes: u64,
    /// True for an asynchronous copy.
    pub is_async: bool,
    /// Start, in ns.
    pub start: u64,
    /// End, in ns.
    pub end: u64,
    /// The device that ran the copy.
    pub device_id: u32,
    /// The context that ran the copy.
    pub context_id: u32,
    /// The stream that ran the copy.
    pub stream_id: u32,
    /// Source device.
    pub src_device_id: u32,
    /// Source context.
    pub src_context_id: u32,
    /// Destination device.
    pub dst_device_id: u32,
    /// Destination context.
    pub dst_context_id: u32,
    /// Joins the copy to the API call that issued it.
    pub correlation_id: u32,
    /// The CUDA graph that ran the copy, 0 outside graphs.
    pub graph_id: u32,
    /// The graph node that ran the copy, 0 outside graphs.
    pub graph_node_id: u64,
}

/// A memset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memset {
    /// Bytes set.
    pub bytes: u64,
    /// The value written.
    pub value: u32,
    /// The memory set.
    pub memory_kind: MemoryKind,
    /// True for an asynchronous memset (`CUPTI_ACTIVITY_FLAG_MEMSET_ASYNC`).
    pub is_async: bool,
    /// Start, in ns.
    pub start: u64,
    /// End, in ns.
    pub end: u64,
    /// CUDA device id.
    pub device_id: u32,
    /// CUPTI context id.
    pub context_id: u32,
    /// CUPTI stream id.
    pub stream_id: u32,
    /// Joins the memset to the API call that issued it.
    pub correlation_id: u32,
    /// The CUDA graph that ran the memset, 0 outside graphs.
    pub graph_id: u32,
    /// The graph node that ran the memset, 0 outside graphs.
    pub graph_node_id: u64,
}

/// What a synchronization record waited for (`CUpti_ActivitySynchronizationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncType {
    /// CUPTI could not tell.
    Unknown,
    /// `cudaEventSynchronize` / `cuEventSynchronize`.
    EventSynchronize,
    /// `cudaStreamWaitEvent` / `cuStreamWaitEvent`.
    StreamWaitEvent,
    /// `cudaStreamSynchronize` / `cuStreamSynchronize`.
    StreamSynchronize,
    /// `cudaDeviceSynchronize` / `cuCtxSynchronize`.
    ContextSynchronize,
    /// A value newer than this crate.
    Other(u32),
}

impl SyncType {
    /// From the raw enum value.
    pub fn from_raw(raw: u32) -> SyncType {
        match SyncKind(raw) {
            SyncKind::CUPTI_ACTIVITY_SYNCHRONIZATION_TYPE_UNKNOWN => SyncType::Unknown,
            SyncKind::CUPTI_ACTIVITY_SYNCHRONIZATION_TYPE_EVENT_SYNCHRONIZE => {
                SyncType::EventSynchronize
            }
            SyncKind::CUPTI_ACTIVITY_SYNCHRONIZATION_TYPE_STREAM_WAIT_EVENT => {
                SyncType::StreamWaitEvent
            }
            SyncKind::CUPTI_ACTIVITY_SYNCHRONIZATION_TYPE_STREAM_SYNCHRONIZE => {
                SyncType::StreamSynchronize
            }
            SyncKind::CUPTI_ACTIVITY_SYNCHRONIZATION_TYPE_CONTEXT_SYNCHRONIZE => {
                SyncType::ContextSynchronize
            }
            _ => SyncType::Other(raw),
        }
    }
}

/// A synchronization call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synchronization {
    /// What was waited for.
    pub sync_type: SyncType,
    /// Start, in ns.
    pub start: u64,
    /// End, in ns.
    pub end: u64,
    /// The context synchronized, or the one the stream or event belongs to.
    pub context_id: u32,
    /// The stream, when the call has one.
    pub stream_id: Option<u32>,
    /// The CUDA event id, when the call has one.
    pub event_id: Option<u32>,
    /// Joins the record to the API call.
    pub correlation_id: u32,
    /// The call's return code (`Synchronization2`, CUDA 12.8 and later).
    pub return_value: Option<u32>,
}

/// Which API a call record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiDomain {
    /// The CUDA runtime (`cuda*`), cbid from `cupti_runtime_cbid.h`.
    Runtime,
    /// The CUDA driver (`cu*`), cbid from `cupti_driver_cbid.h`.
    Driver,
}

/// A runtime or driver API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// Runtime or driver.
    pub domain: ApiDomain,
    /// Callback id of the function (`cuptiGetCallbackName` names it).
    pub cbid: u32,
    /// Start, in ns.
    pub start: u64,
    /// End, in ns.
    pub end: u64,
    /// Process id of the caller.
    pub process_id: u32,
    /// Thread id of the caller (CUPTI's thread-id type decides which id).
    pub thread_id: u32,
    /// Joins the call to the GPU work it issued.
    pub correlation_id: u32,
    /// The call's return code (`cudaError_t` or `CUresult`).
    pub return_value: u32,
}

/// Flags of an NVTX marker record (`CUPTI_ACTIVITY_FLAG_MARKER_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MarkerFlags(pub u32);

impl MarkerFlags {
    /// An instantaneous marker (`nvtxMark`).
    pub fn is_instantaneous(self) -> bool {
        self.0 & Flag::CUPTI_ACTIVITY_FLAG_MARKER_INSTANTANEOUS.0 != 0
    }
    /// The start of a range (`nvtxRangePush`, `nvtxRangeStart`).
    pub fn is_start(self) -> bool {
        self.0 & Flag::CUPTI_ACTIVITY_FLAG_MARKER_START.0 != 0
    }
    /// The end of a range; it has the same `id` as its start.
    pub fn is_end(self) -> bool {
        self.0 & Flag::CUPTI_ACTIVITY_FLAG_MARKER_END.0 != 0
    }
}

/// An NVTX marker, or one end of an NVTX range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// Instantaneous, range start or range end.
    pub flags: MarkerFlags,
    /// When, in ns.
    pub timestamp: u64,
    /// Marker id; a range's start and end share it.
    pub id: u32,
    /// The message (null for a range end).
    pub name: RawCStr,
    /// The NVTX domain name (null for the default domain).
    pub domain: RawCStr,
}

/// Ties a CUPTI correlation id to an external id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalCorrelation {
    /// Who pushed the id (`CUpti_ExternalCorrelationKind`: unknown, OpenACC, custom 0-2).
    pub external_kind: u32,
    /// The pushed id.
    pub external_id: u64,
    /// The CUPTI correlation id of the API call made under it.
    pub correlation_id: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_follow_the_headers() {
        assert_eq!(MemcpyKind::from_raw(1), MemcpyKind::HtoD);
        assert_eq!(MemcpyKind::from_raw(2), MemcpyKind::DtoH);
        assert_eq!(MemcpyKind::from_raw(8), MemcpyKind::DtoD);
        assert_eq!(MemcpyKind::from_raw(10), MemcpyKind::PtoP);
        assert_eq!(MemcpyKind::from_raw(200), MemcpyKind::Other(200));
        assert_eq!(MemoryKind::from_raw(2), MemoryKind::Pinned);
        assert_eq!(MemoryKind::from_raw(3), MemoryKind::Device);
        assert_eq!(MemoryKind::from_raw(99), MemoryKind::Other(99));
        assert_eq!(SyncType::from_raw(3), SyncType::StreamSynchronize);
        assert_eq!(SyncType::from_raw(77), SyncType::Other(77));
        assert!(MarkerFlags(2).is_start() && !MarkerFlags(2).is_end());
        assert!(MarkerFlags(4).is_end());
        assert!(MarkerFlags(1).is_instantaneous());
    }

    #[test]
    fn raw_strings_read_back_and_null_is_none() {
        let s = c"volta_sgemm_128x64_nn";
        let raw = RawCStr::new(s.as_ptr());
        // SAFETY: `s` is a live NUL-terminated literal.
        let back = unsafe { raw.to_string_lossy() };
        assert_eq!(back.as_deref(), Some("volta_sgemm_128x64_nn"));
        // SAFETY: a null pointer is never dereferenced.
        assert_eq!(unsafe { RawCStr::new(std::ptr::null()).as_c_str() }, None);
    }
}
