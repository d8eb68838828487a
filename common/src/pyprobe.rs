//! The shared ring between the agent and the Python-probe part of modelprobe's in-process
//! library (`--probe py:MODULE:QUALNAME`).
//!
//! The library (inside the target) creates a memfd named [`MEMFD_NAME`] of
//! [`HEADER_BYTES`]` + data_bytes`, writes a [`RingHeader`] at its start and records after it;
//! the agent (root) opens it through `/proc/PID/fd/N`, maps it shared, and reads. One writer
//! (the Python callbacks, serialized by the GIL), one reader; `head` and `tail` are byte
//! counters that only grow (position = counter % `data_bytes`, a power of two). A record never
//! wraps: one that does not fit before the end is preceded by a [`kind::PAD`] header that
//! says "skip to the start". A full ring drops the new record and counts it in `dropped`.
//!
//! The agent hands its settings over as text ([`config`]): in the library image, after
//! [`CONFIG_MARKER`] (an image loaded live is patched before `dlopen`), or in the
//! [`CONFIG_ENV`] variable of a launched command.
//!
//! Records are 8-byte aligned, little-endian, each starting with a [`RecordHeader`]; strings
//! are a `u16` length and that many UTF-8 bytes.

use core::sync::atomic::{AtomicU32, AtomicU64};

/// The memfd's name (`/proc/PID/fd/N` links to `/memfd:modelprobe-py (deleted)`).
pub const MEMFD_NAME: &str = "modelprobe-py";
/// First word of the header.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MPPYRNG1");
/// Layout version.
pub const VERSION: u32 = 1;
/// Bytes before the data.
pub const HEADER_BYTES: usize = 4096;
/// Data bytes of a ring (a power of two).
pub const DATA_BYTES: usize = 16 << 20;
/// Longest status message.
pub const MESSAGE_MAX: usize = 1024;
/// Longest text value (an argument's or return value's `repr`, an exception's message), in
/// bytes; longer ones are cut and counted in `truncated`.
pub const TEXT_MAX: usize = 256;
/// Deepest caller stack an [`kind::ENTER`] carries.
pub const STACK_MAX: usize = 64;

/// The 16 bytes before the config area in the library image.
pub const CONFIG_MARKER: [u8; 16] = *b"MODELPROBE-PYCFG";
/// Size of the config area after the marker (NUL-terminated text).
pub const CONFIG_BYTES: usize = 16 << 10;
/// The environment variable that carries the config to a launched command.
pub const CONFIG_ENV: &str = "MODELPROBE_PY_CONFIG";

/// The config area as built into the library: the marker, then zeroes.
pub const fn config_area() -> [u8; 16 + CONFIG_BYTES] {
    let mut a = [0u8; 16 + CONFIG_BYTES];
    let mut i = 0;
    while i < 16 {
        a[i] = CONFIG_MARKER[i];
        i += 1;
    }
    a
}

/// Values of [`RingHeader::state`].
pub mod state {
    /// The library is waiting for a moment to set up (the GIL, the interpreter's start).
    pub const PENDING: u32 = 0;
    /// Probes are set; records flow.
    pub const ACTIVE: u32 = 1;
    /// Setup failed or was not possible; `message` says why.
    pub const FAILED: u32 = 2;
    /// Probes were removed (detach, or the interpreter ended); nothing more is written.
    pub const STOPPED: u32 = 3;
}

/// The ring's first [`HEADER_BYTES`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RingHeader {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`VERSION`].
    pub version: u32,
    /// One of [`state`] (written by the library).
    pub state: u32,
    /// Set to 1 by the agent to ask the library to remove its probes.
    pub stop: u32,
    /// The process (as it sees itself).
    pub pid: u32,
    /// The agent's session token from the config (tells sessions apart).
    pub token: u64,
    /// Size of the data area.
    pub data_bytes: u64,
    /// Bytes ever written (the library).
    pub head: u64,
    /// Bytes ever consumed (the agent).
    pub tail: u64,
    /// Records not written because the ring was full.
    pub dropped: u64,
    /// Text values cut to [`TEXT_MAX`].
    pub truncated: u64,
    /// Events not recorded because they came while a callback ran on the same thread (a
    /// `repr` calling a probed function).
    pub reentered: u64,
    /// `PY_VERSION_HEX` of the interpreter (0 until known).
    pub python_hex: u32,
    /// The `sys.monitoring` tool id held (-1: none).
    pub tool_id: i32,
    /// Code objects with probes set.
    pub probed_codes: u32,
    /// Bytes of `message` used.
    pub message_len: u32,
    /// Set to 1 by the agent once it has mapped the ring (the library's exit hook waits for
    /// it, so a short process's records are not lost).
    pub agent_mapped: u32,
    /// Always 0.
    pub _pad: u32,
    /// Why setup failed, or what was set (UTF-8).
    pub message: [u8; MESSAGE_MAX],
}

/// The header's fields that both sides change, read and written atomically.
impl RingHeader {
    /// The `u32` field at `field` (a pointer into a mapped header), atomically.
    ///
    /// # Safety
    /// `field` points into a live mapping of a header, 4-aligned.
    pub unsafe fn atomic_u32<'a>(field: *mut u32) -> &'a AtomicU32 {
        // SAFETY: the caller's promise; AtomicU32 has the layout of u32.
        unsafe { AtomicU32::from_ptr(field) }
    }

    /// The `u64` field at `field`, atomically.
    ///
    /// # Safety
    /// `field` points into a live mapping of a header, 8-aligned.
    pub unsafe fn atomic_u64<'a>(field: *mut u64) -> &'a AtomicU64 {
        // SAFETY: the caller's promise; AtomicU64 has the layout of u64.
        unsafe { AtomicU64::from_ptr(field) }
    }
}

/// Record kinds ([`RecordHeader::kind`]).
pub mod kind {
    /// Skip to the start of the data area (the record after did not fit before the end).
    pub const PAD: u16 = 0;
    /// A code object's names: [`CodeRecord`], then qualname, file name, module.
    pub const CODE: u16 = 1;
    /// A probed function started or resumed: [`EnterRecord`], then `stack_len` caller code ids
    /// (innermost first), then the arguments' text when `flags` has [`HAS_TEXT`](super::flags::HAS_TEXT).
    pub const ENTER: u16 = 2;
    /// A probed function returned, yielded, or an exception left it: [`ExitRecord`], then the
    /// return value's text or the exception's `Type: message` when flagged.
    pub const EXIT: u16 = 3;
    /// A label (a PyTorch module's path and class): [`LabelRecord`], then the text.
    pub const LABEL: u16 = 4;
}

/// Bits of `flags` in enter and exit records and of [`CodeRecord::flags`].
pub mod flags {
    /// Text follows the fixed part.
    pub const HAS_TEXT: u16 = 1;
    /// Enter: a generator or coroutine resumed (not its first start).
    pub const RESUMED: u16 = 2;
    /// Exit: the function yielded (a generator or coroutine suspended).
    pub const YIELDED: u16 = 4;
    /// Exit: an exception left the function.
    pub const RAISED: u16 = 8;
    /// Code: a probed function (not one only seen on a caller stack).
    pub const PROBED: u16 = 16;
    /// Code: from the PyTorch pack (`nn.Module` calls, labelled by module).
    pub const PACK_TORCH: u16 = 32;
    /// Code: from another built-in pack (transformers, vLLM).
    pub const PACK_OTHER: u16 = 64;
}

/// Every record's first 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// One of [`kind`].
    pub kind: u16,
    /// Bytes of the whole record, header included, a multiple of 8.
    pub len: u16,
    /// The thread (kernel tid) for enter and exit; 0 otherwise.
    pub tid: u32,
}

/// After a [`kind::CODE`] header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeRecord {
    /// The library's id for the code object (ids are never reused in a ring).
    pub id: u32,
    /// `co_firstlineno`.
    pub first_line: u32,
    /// [`flags`] bits (`PROBED`, `PACK_*`).
    pub flags: u16,
    /// Always 0.
    pub _pad: [u16; 3],
}

/// After a [`kind::ENTER`] header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnterRecord {
    /// CLOCK_MONOTONIC ns.
    pub time_ns: u64,
    /// The code object's id.
    pub code: u32,
    /// A [`kind::LABEL`] id (0: none).
    pub label: u32,
    /// [`flags`] bits.
    pub flags: u16,
    /// Caller code ids that follow.
    pub stack_len: u16,
    /// Always 0.
    pub _pad: u32,
}

/// After a [`kind::EXIT`] header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitRecord {
    /// CLOCK_MONOTONIC ns.
    pub time_ns: u64,
    /// The code object's id.
    pub code: u32,
    /// [`flags`] bits.
    pub flags: u16,
    /// Always 0.
    pub _pad: u16,
    /// With `RAISED`: the exception object's address, the same for every frame it leaves.
    pub exception: u64,
}

/// After a [`kind::LABEL`] header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LabelRecord {
    /// The label's id (from 1).
    pub id: u32,
    /// Always 0.
    pub _pad: u32,
}

/// Size of `T` in bytes.
const fn size<T>() -> usize {
    core::mem::size_of::<T>()
}

/// Bytes a record takes: header, fixed part, `extra` bytes, rounded up to 8.
pub const fn record_len(fixed: usize, extra: usize) -> usize {
    (size::<RecordHeader>() + fixed + extra + 7) & !7
}

/// Bytes a string takes in a record (its length prefix included).
pub const fn text_len(s: &[u8]) -> usize {
    2 + s.len()
}

/// Writes a record into `out` (exactly [`record_len`] bytes): header, `fixed` (a plain struct),
/// `ids` (u32s), then each of `texts` as length and bytes. Unused tail bytes are zeroed.
pub fn encode<T: Copy>(
    out: &mut [u8],
    kind: u16,
    tid: u32,
    fixed: &T,
    ids: &[u32],
    texts: &[&[u8]],
) {
    let header = RecordHeader {
        kind,
        len: out.len() as u16,
        tid,
    };
    let mut at = 0;
    put(out, &mut at, as_bytes(&header));
    put(out, &mut at, as_bytes(fixed));
    for id in ids {
        put(out, &mut at, &id.to_le_bytes());
    }
    for t in texts {
        put(out, &mut at, &(t.len() as u16).to_le_bytes());
        put(out, &mut at, t);
    }
    for b in &mut out[at..] {
        *b = 0;
    }
}

fn put(out: &mut [u8], at: &mut usize, bytes: &[u8]) {
    out[*at..*at + bytes.len()].copy_from_slice(bytes);
    *at += bytes.len();
}

/// The bytes of a plain `#[repr(C)]` value.
pub fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: every T here is a padding-free repr(C) struct of integers.
    unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size::<T>()) }
}

/// A decoded record, borrowing from the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// [`kind::CODE`].
    Code {
        /// Fixed part.
        code: CodeRecord,
        /// `co_qualname`.
        qualname: &'a [u8],
        /// `co_filename`.
        file: &'a [u8],
        /// The module's name, when known.
        module: &'a [u8],
    },
    /// [`kind::ENTER`].
    Enter {
        /// The thread.
        tid: u32,
        /// Fixed part.
        enter: EnterRecord,
        /// Caller code ids as little-endian bytes (4 each), innermost first.
        stack: &'a [u8],
        /// Arguments' text (empty when not kept).
        text: &'a [u8],
    },
    /// [`kind::EXIT`].
    Exit {
        /// The thread.
        tid: u32,
        /// Fixed part.
        exit: ExitRecord,
        /// Return value's or exception's text (empty when not kept).
        text: &'a [u8],
    },
    /// [`kind::LABEL`].
    Label {
        /// Its id.
        id: u32,
        /// The text.
        text: &'a [u8],
    },
    /// A kind this reader does not know (skipped).
    Unknown(u16),
}

fn read<T: Copy + Default>(b: &[u8]) -> Option<T> {
    if b.len() < size::<T>() {
        return None;
    }
    let mut v = T::default();
    // SAFETY: T is a plain repr(C) struct of integers; any bytes are a valid value, and the
    // source has at least size_of::<T>() bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(b.as_ptr(), (&mut v as *mut T).cast::<u8>(), size::<T>())
    };
    Some(v)
}

fn text<'a>(b: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let len = u16::from_le_bytes(b.get(*at..*at + 2)?.try_into().ok()?) as usize;
    let s = b.get(*at + 2..*at + 2 + len)?;
    *at += 2 + len;
    Some(s)
}

/// Decodes one record (`b` is exactly the record's `len` bytes). `None`: malformed.
pub fn decode(b: &[u8]) -> Option<Record<'_>> {
    let h: RecordHeader = read(b)?;
    let body = &b[size::<RecordHeader>()..];
    match h.kind {
        kind::CODE => {
            let code: CodeRecord = read(body)?;
            let mut at = size::<CodeRecord>();
            let qualname = text(body, &mut at)?;
            let file = text(body, &mut at)?;
            let module = text(body, &mut at)?;
            Some(Record::Code {
                code,
                qualname,
                file,
                module,
            })
        }
        kind::ENTER => {
            let enter: EnterRecord = read(body)?;
            let mut at = size::<EnterRecord>();
            let stack = body.get(at..at + 4 * enter.stack_len as usize)?;
            at += stack.len();
            let text = if enter.flags & flags::HAS_TEXT != 0 {
                text(body, &mut at)?
            } else {
                &[]
            };
            Some(Record::Enter {
                tid: h.tid,
                enter,
                stack,
                text,
            })
        }
        kind::EXIT => {
            let exit: ExitRecord = read(body)?;
            let mut at = size::<ExitRecord>();
            let text = if exit.flags & flags::HAS_TEXT != 0 {
                text(body, &mut at)?
            } else {
                &[]
            };
            Some(Record::Exit {
                tid: h.tid,
                exit,
                text,
            })
        }
        kind::LABEL => {
            let label: LabelRecord = read(body)?;
            let mut at = size::<LabelRecord>();
            Some(Record::Label {
                id: label.id,
                text: text(body, &mut at)?,
            })
        }
        other => Some(Record::Unknown(other)),
    }
}

/// `key=value` lines of the config text, in order (`probe` and `pack` repeat).
///
/// Keys: `token` (decimal u64), `probe` (`MODULE\tQUALNAME\tARGS\tRET`: globs, arguments
/// kept, 1 to keep the return value), `pack` (`pytorch`, `transformers`, `vllm`),
/// `gil_wait_ms`.
pub mod config {
    /// The value of the first line `key=...`.
    pub fn value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k == key).then_some(v)
        })
    }
}

#[allow(dead_code)]
mod layout {
    use super::*;
    use core::mem::{offset_of, size_of};
    const _: () = assert!(size_of::<RingHeader>() <= HEADER_BYTES);
    const _: () = assert!(offset_of!(RingHeader, head) % 8 == 0);
    const _: () = assert!(offset_of!(RingHeader, tail) % 8 == 0);
    const _: () = assert!(size_of::<RecordHeader>() == 8);
    const _: () = assert!(size_of::<CodeRecord>() == 16);
    const _: () = assert!(size_of::<EnterRecord>() == 24);
    const _: () = assert!(size_of::<ExitRecord>() == 24);
    const _: () = assert!(size_of::<LabelRecord>() == 8);
    const _: () = assert!(DATA_BYTES.is_power_of_two());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let enter = EnterRecord {
            time_ns: 42,
            code: 7,
            label: 0,
            flags: flags::HAS_TEXT | flags::RESUMED,
            stack_len: 2,
            _pad: 0,
        };
        let args = b"x=1, y='a'";
        let n = record_len(size::<EnterRecord>(), 8 + text_len(args));
        let mut buf = [0xffu8; 128];
        encode(&mut buf[..n], kind::ENTER, 99, &enter, &[3, 4], &[args]);
        assert_eq!(n % 8, 0);
        match decode(&buf[..n]).unwrap() {
            Record::Enter {
                tid,
                enter: e,
                stack,
                text,
            } => {
                assert_eq!((tid, e), (99, enter));
                assert_eq!(stack, &[3, 0, 0, 0, 4, 0, 0, 0]);
                assert_eq!(text, args);
            }
            other => panic!("{other:?}"),
        }
        let code = CodeRecord {
            id: 3,
            first_line: 10,
            flags: flags::PROBED,
            _pad: [0; 3],
        };
        let n = record_len(size::<CodeRecord>(), 6 + 1 + 5 + 3);
        encode(
            &mut buf[..n],
            kind::CODE,
            0,
            &code,
            &[],
            &[b"f", b"a.py", b"app"],
        );
        assert_eq!(
            decode(&buf[..n]),
            Some(Record::Code {
                code,
                qualname: b"f",
                file: b"a.py",
                module: b"app"
            })
        );
        // Cut short: malformed, not a panic.
        assert_eq!(decode(&buf[..12]), None);
    }

    #[test]
    fn config_values() {
        let c = "token=5\nprobe=a:f\nprobe=b:g\n";
        assert_eq!(config::value(c, "token"), Some("5"));
        assert_eq!(config::value(c, "probe"), Some("a:f"));
        assert_eq!(config::value(c, "pack"), None);
        assert_eq!(&config_area()[..16], b"MODELPROBE-PYCFG");
    }
}
