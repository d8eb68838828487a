//! The wire protocol between the agent and the CUPTI injection library inside a CUDA process.
//!
//! The library listens on the abstract Unix socket [`socket_name`] of its process (named by its
//! pid and PID namespace, so containers never collide)
//! (`SOCK_SEQPACKET`, so every message arrives whole). The agent connects and sends
//! [`msg::HELLO`]; the library answers [`msg::STATUS`] and, when CUPTI is on, streams
//! [`msg::NAMES`], [`msg::LAUNCHES`], [`msg::OPS`] and [`msg::CLOCK`] until the agent sends
//! [`msg::DETACH`] or goes away. It then flushes CUPTI, sends what is left and [`msg::BYE`], and
//! turns CUPTI off again.
//!
//! Every message is a [`Header`] followed by `count` fixed-size items (or, for STATUS and
//! NAMES, bytes). Times in [`WireOp`] are CUPTI's clock; [`ClockPair`]s map it to
//! CLOCK_MONOTONIC, which is what [`WireLaunch::time_ns`] already uses.

/// Protocol version the agent sends in [`Hello`] and the library checks.
pub const VERSION: u32 = 1;

/// First word of every message.
pub const MAGIC: u32 = 0x4d50_4750; // "MPGP"

/// Largest message either side sends, in bytes (header included).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Longest [`socket_name`].
pub const SOCKET_NAME_MAX: usize = 48;

/// Abstract socket name of the library in a process (without the leading NUL), written into
/// `buf`; returns the used length: `modelprobe-gpu.<ns_pid>.<pid_ns>`.
///
/// `ns_pid` is the process's pid as its own PID namespace sees it (what `getpid` returns inside
/// a container; the last `NSpid` of `/proc/PID/status` from the host) and `pid_ns` the inode of
/// that namespace (`/proc/PID/ns/pid`; 0 when unknown). Abstract names belong to a network
/// namespace, which containers with PIDs of their own may share: the namespace keeps two pid 1
/// apart.
pub fn socket_name(ns_pid: u32, pid_ns: u64, buf: &mut [u8; SOCKET_NAME_MAX]) -> usize {
    const PREFIX: &[u8] = b"modelprobe-gpu.";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut at = PREFIX.len();
    at += write_decimal(u64::from(ns_pid), &mut buf[at..]);
    buf[at] = b'.';
    at += 1;
    at + write_decimal(pid_ns, &mut buf[at..])
}

/// Writes `n` in decimal at the start of `out` (which has room for 20 digits); returns the
/// length.
fn write_decimal(mut n: u64, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = digits[len - 1 - i];
    }
    len
}

/// The inode of a PID namespace from its `/proc/.../ns/pid` link text (`pid:[4026531836]`).
pub fn pid_ns_inode(link: &str) -> Option<u64> {
    link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// Message kinds ([`Header::kind`]).
pub mod msg {
    /// Agent → library: [`Hello`](super::Hello); start tracing.
    pub const HELLO: u32 = 1;
    /// Library → agent: [`Status`](super::Status) then the message text (UTF-8).
    pub const STATUS: u32 = 2;
    /// Library → agent: `count` strings, each a little-endian u32 id, a u32 length and the
    /// bytes (padded to 4).
    pub const NAMES: u32 = 3;
    /// Library → agent: `count` × [`WireOp`](super::WireOp).
    pub const OPS: u32 = 4;
    /// Library → agent: `count` × [`WireLaunch`](super::WireLaunch).
    pub const LAUNCHES: u32 = 5;
    /// Library → agent: `count` × [`ClockPair`](super::ClockPair).
    pub const CLOCK: u32 = 6;
    /// Agent → library: flush, stop tracing and say BYE.
    pub const DETACH: u32 = 7;
    /// Library → agent: [`Dropped`](super::Dropped): everything was sent; tracing is off.
    pub const BYE: u32 = 8;
    /// Library → agent: [`Dropped`](super::Dropped) so far (sent with each flush).
    pub const DROPPED: u32 = 9;
}

/// [`Status::state`] values.
pub mod state {
    /// CUPTI is on; records follow.
    pub const ON: u32 = 0;
    /// The process has not loaded the CUDA driver.
    pub const NO_CUDA: u32 = 1;
    /// No usable libcupti was found or it failed to load.
    pub const NO_CUPTI: u32 = 2;
    /// Another tool (Kineto, Nsight) holds CUPTI.
    pub const BUSY: u32 = 3;
    /// CUPTI refused a call; the text says which.
    pub const ERROR: u32 = 4;
    /// The agent speaks another protocol version.
    pub const VERSION: u32 = 5;
    /// After ON: another tool took CUPTI's process-wide activity buffer callbacks over during
    /// the session (launches kept coming, buffers stopped); no more GPU records follow.
    pub const TAKEN_OVER: u32 = 6;
}

/// [`WireOp::kind`] values.
pub mod op {
    /// A kernel.
    pub const KERNEL: u32 = 1;
    /// A memory copy; `aux` is the source device and `aux2` the destination for peer copies
    /// (`u32::MAX` otherwise).
    pub const MEMCPY: u32 = 2;
    /// A memset; `aux` is the value.
    pub const MEMSET: u32 = 3;
    /// A synchronization.
    pub const SYNC: u32 = 4;
    /// An NVTX range.
    pub const RANGE: u32 = 5;
}

/// Starts every message.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: u32,
    /// One of [`msg`].
    pub kind: u32,
    /// Items (or bytes, for STATUS's text) after the fixed part.
    pub count: u32,
    /// Always 0.
    pub _pad: u32,
}

/// What the agent asks for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hello {
    /// [`VERSION`].
    pub version: u32,
    /// How often the library flushes CUPTI's buffers, in ms.
    pub flush_ms: u32,
    /// Size of each CUPTI activity buffer, in KiB.
    pub buffer_kib: u32,
    /// Always 0.
    pub _pad: u32,
}

/// The library's answer to [`Hello`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// One of [`state`].
    pub state: u32,
    /// `cuptiGetVersion`, 0 when CUPTI was not loaded.
    pub cupti_version: u32,
    /// The library's process.
    pub pid: u32,
    /// Bytes of message text after this struct.
    pub text_len: u32,
}

/// One GPU operation, on CUPTI's clock.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireOp {
    /// One of [`op`].
    pub kind: u32,
    /// CUDA device.
    pub device: u32,
    /// CUPTI context id.
    pub context: u32,
    /// CUPTI stream id.
    pub stream: u32,
    /// Correlation id of the launching API call.
    pub correlation: u32,
    /// Name id (a [`msg::NAMES`] entry): kernel name, NVTX text, copy direction or sync kind.
    pub name: u32,
    /// Start, CUPTI ns.
    pub start: u64,
    /// End, CUPTI ns.
    pub end: u64,
    /// Kernel grid.
    pub grid: [i32; 3],
    /// Kernel block.
    pub block: [i32; 3],
    /// Kernel registers per thread.
    pub registers: u32,
    /// Kernel static shared memory.
    pub shared_static: i32,
    /// Kernel dynamic shared memory.
    pub shared_dynamic: i32,
    /// CUDA graph id (0 outside graphs).
    pub graph_id: u32,
    /// CUDA graph node id (0 outside graphs).
    pub graph_node: u64,
    /// Bytes copied or set.
    pub bytes: u64,
    /// By kind, see [`op`].
    pub aux: u32,
    /// By kind, see [`op`].
    pub aux2: u32,
    /// [`op_flag`] bits.
    pub flags: u32,
    /// Always 0.
    pub _pad: u32,
}

/// [`WireOp::flags`] bits.
pub mod op_flag {
    /// The op's correlation id cannot be trusted, so it is not joined to a launch: a CUDA graph
    /// launch's work in a process's session after the first, on a CUPTI before 13.1 Update 1
    /// (whose release notes fix "incorrect correlation IDs for cudaGraphLaunch ... in
    /// profiling sessions after the first session").
    pub const CORRELATION_UNRELIABLE: u32 = 1;
}

/// A CUDA call that queued GPU work, seen from inside the call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireLaunch {
    /// Kernel thread id.
    pub tid: u32,
    /// CUPTI correlation id.
    pub correlation: u32,
    /// CLOCK_MONOTONIC ns.
    pub time_ns: u64,
    /// Name id of the API function.
    pub api: u32,
    /// Always 0.
    pub _pad: u32,
}

/// The same instant on both clocks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockPair {
    /// `cuptiGetTimestamp`.
    pub cupti_ns: u64,
    /// CLOCK_MONOTONIC ns, the midpoint of two reads around the CUPTI one.
    pub mono_ns: u64,
    /// Half the distance between those two reads.
    pub uncertainty_ns: u64,
}

/// Records lost so far.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Reported by `cuptiActivityGetNumDroppedRecords`.
    pub cupti: u64,
    /// Not sent because the agent fell behind.
    pub queue: u64,
}

/// Marker for the plain-integer types above: any bit pattern is a valid value and there is no
/// padding, so they may be read from and written to bytes.
///
/// # Safety
/// Implement only for `repr(C)` types made of integers with no implicit padding.
pub unsafe trait Wire: Copy + Default {}

// SAFETY: each is repr(C), integers only, no implicit padding (the `layout` checks below).
unsafe impl Wire for Header {}
// SAFETY: as above.
unsafe impl Wire for Hello {}
// SAFETY: as above.
unsafe impl Wire for Status {}
// SAFETY: as above.
unsafe impl Wire for WireOp {}
// SAFETY: as above.
unsafe impl Wire for WireLaunch {}
// SAFETY: as above.
unsafe impl Wire for ClockPair {}
// SAFETY: as above.
unsafe impl Wire for Dropped {}

/// The bytes of `v`.
pub fn as_bytes<T: Wire>(v: &T) -> &[u8] {
    // SAFETY: `T: Wire` has no padding, so every byte of it is initialized.
    unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), core::mem::size_of::<T>()) }
}

/// The bytes of a slice of `T`.
pub fn slice_as_bytes<T: Wire>(v: &[T]) -> &[u8] {
    // SAFETY: as for `as_bytes`; the slice is contiguous.
    unsafe { core::slice::from_raw_parts(v.as_ptr().cast::<u8>(), core::mem::size_of_val(v)) }
}

/// Reads a `T` at `offset` of `bytes`, or `None` when it does not fit.
pub fn read<T: Wire>(bytes: &[u8], offset: usize) -> Option<T> {
    let end = offset.checked_add(core::mem::size_of::<T>())?;
    let src = bytes.get(offset..end)?;
    let mut v = T::default();
    // SAFETY: `src` holds size_of::<T>() bytes, and any bit pattern is a valid `T: Wire`;
    // `v` is a distinct local.
    unsafe {
        core::ptr::copy_nonoverlapping(src.as_ptr(), (&mut v as *mut T).cast::<u8>(), src.len())
    };
    Some(v)
}

/// Compile-time layout checks: the library and the agent may be built apart.
mod layout {
    use core::mem::{offset_of, size_of};

    use super::*;

    const _: () = assert!(size_of::<Header>() == 16);
    const _: () = assert!(size_of::<Hello>() == 16);
    const _: () = assert!(size_of::<Status>() == 16);
    const _: () = assert!(offset_of!(WireOp, start) == 24);
    const _: () = assert!(offset_of!(WireOp, grid) == 40);
    const _: () = assert!(offset_of!(WireOp, registers) == 64);
    const _: () = assert!(offset_of!(WireOp, graph_node) == 80);
    const _: () = assert!(offset_of!(WireOp, bytes) == 88);
    const _: () = assert!(offset_of!(WireOp, aux) == 96);
    const _: () = assert!(size_of::<WireOp>() == 112);
    const _: () = assert!(offset_of!(WireLaunch, time_ns) == 8);
    const _: () = assert!(size_of::<WireLaunch>() == 24);
    const _: () = assert!(size_of::<ClockPair>() == 24);
    const _: () = assert!(size_of::<Dropped>() == 16);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names() {
        let mut buf = [0u8; SOCKET_NAME_MAX];
        let n = socket_name(0, 0, &mut buf);
        assert_eq!(&buf[..n], b"modelprobe-gpu.0.0");
        let n = socket_name(1, 4_026_532_174, &mut buf);
        assert_eq!(&buf[..n], b"modelprobe-gpu.1.4026532174");
        let n = socket_name(u32::MAX, u64::MAX, &mut buf);
        assert_eq!(&buf[..n], b"modelprobe-gpu.4294967295.18446744073709551615");
        assert_eq!(n, 46);
        assert!(n <= SOCKET_NAME_MAX);
    }

    #[test]
    fn pid_namespace_links() {
        assert_eq!(pid_ns_inode("pid:[4026531836]"), Some(4_026_531_836));
        assert_eq!(pid_ns_inode("net:[4026531836]"), None);
        assert_eq!(pid_ns_inode("pid:[x]"), None);
    }

    #[test]
    fn round_trip() {
        let op = WireOp {
            kind: op::KERNEL,
            start: 7,
            end: 9,
            grid: [1, 2, 3],
            bytes: u64::MAX,
            ..Default::default()
        };
        let bytes = as_bytes(&op);
        assert_eq!(bytes.len(), 112);
        assert_eq!(read::<WireOp>(bytes, 0), Some(op));
        assert_eq!(read::<WireOp>(&bytes[1..], 0), None);
        assert_eq!(read::<Header>(bytes, 100), None);
        let ops = [op, WireOp::default()];
        assert_eq!(slice_as_bytes(&ops).len(), 224);
        assert_eq!(
            read::<WireOp>(slice_as_bytes(&ops), 112),
            Some(WireOp::default())
        );
    }
}
