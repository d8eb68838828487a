//! Python frames read by the BPF side at the moment a stack is taken (see
//! `ebpf/src/python.rs`), and the layout of a CPython interpreter the agent describes for it.
//!
//! The agent finds a target's interpreter (its `_PyRuntime`), works out the offsets of the
//! few fields the walk needs for that CPython version ([`PyOffsets`]) and files them in
//! `PY_PROCS` under the process id. When a stack of that process is taken, the BPF side finds
//! the current thread's `PyThreadState` (the thread list walked once, matched on
//! `thread_id == pthread_self()`, which on x86-64 is the thread's `%fs` base; then cached in
//! `PY_THREADS`), then follows its frames from the innermost and writes each as a
//! [`PyFrame`]: the code object's address and the instruction offset. Names, files and lines
//! are read by the agent from the code objects, once per code object.

/// Most Python frames one stack carries (innermost kept; the rest counted as truncated).
pub const MAX_PY_DEPTH: usize = 64;

/// Processes with a known interpreter at once.
pub const MAX_PY_PROCS: u32 = 4096;

/// Threads of one interpreter the BPF side walks to find the current thread's state.
pub const MAX_PY_THREAD_WALK: u32 = 1024;

/// Threads whose `PyThreadState` address is cached.
pub const MAX_PY_THREADS: u32 = 65536;

/// Bits of [`PyFrame::flags`].
pub mod frame {
    /// The outermost frame of one call of the interpreter's eval loop
    /// (`_PyEval_EvalFrameDefault`): the frames from here inwards up to the next such frame
    /// are that native frame's. Every frame before 3.11, `is_entry` on 3.11.
    pub const ENTRY: u32 = 1 << 0;
    /// A frame of the interpreter's own on 3.12 and later (see [`marker::OWNER`]): not a Python
    /// function; the frames inwards of it are one eval call's.
    pub const SHIM: u32 = 1 << 1;
}

/// How a frame's instruction field reads. Values of [`PyOffsets::instr_kind`].
pub mod instr {
    /// A C `int` offset in bytes from the start of the bytecode (3.9's `f_lasti`).
    pub const INT_BYTES: u32 = 0;
    /// A C `int` offset in 2-byte code units (3.10's `f_lasti`).
    pub const INT_UNITS: u32 = 1;
    /// A pointer into the code object's bytecode, which starts at
    /// [`PyOffsets::code_bytecode`](super::PyOffsets::code_bytecode) (3.11 and later).
    pub const POINTER: u32 = 2;
}

/// How a frame says where an eval-loop call begins. Values of [`PyOffsets::marker_kind`].
pub mod marker {
    /// Every frame is its own eval-loop call (before 3.11).
    pub const EVERY_FRAME: u32 = 0;
    /// A non-zero byte at [`PyOffsets::frame_marker`](super::PyOffsets::frame_marker) marks
    /// the call's outermost frame (3.11's `is_entry`).
    pub const IS_ENTRY: u32 = 1;
    /// The byte there is the frame's owner; [`FIRST_NOT_PYTHON`] and above are frames of the
    /// interpreter's own, not of a Python function: the eval loop's shim frame on entry
    /// (`FRAME_OWNED_BY_CSTACK`: 3 on 3.12 and 3.13, 4 from 3.14) and, from 3.14, each
    /// thread's base frame (`FRAME_OWNED_BY_INTERPRETER`, 3).
    pub const OWNER: u32 = 2;
    /// The lowest owner value of a frame that is not a Python function's.
    pub const FIRST_NOT_PYTHON: u8 = 3;
}

/// The offsets of one CPython version the walk needs, in bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyOffsets {
    /// `PyInterpreterState` to its first `PyThreadState` (`tstate_head`, `threads.head`).
    pub interp_threads_head: u32,
    /// `PyThreadState.next`.
    pub tstate_next: u32,
    /// `PyThreadState.thread_id` (`pthread_self()` of the thread).
    pub tstate_thread_id: u32,
    /// `PyThreadState` to the innermost frame (`frame`, `current_frame`), or to the `cframe`
    /// pointer when [`cframe_frame`](Self::cframe_frame) is set.
    pub tstate_frame: u32,
    /// `_PyCFrame.current_frame` (3.11, 3.12); [`NONE`] otherwise.
    pub cframe_frame: u32,
    /// A frame's caller (`f_back`, `previous`).
    pub frame_previous: u32,
    /// A frame's code object (`f_code`, `f_executable`).
    pub frame_code: u32,
    /// A frame's instruction (`f_lasti`, `prev_instr`, `instr_ptr`), read as
    /// [`instr_kind`](Self::instr_kind) says.
    pub frame_instr: u32,
    /// The byte [`marker_kind`](Self::marker_kind) reads (`is_entry`, `owner`).
    pub frame_marker: u32,
    /// An [`instr`] constant.
    pub instr_kind: u32,
    /// A [`marker`] constant.
    pub marker_kind: u32,
    /// Where the bytecode starts in a code object (`co_code_adaptive`), for
    /// [`instr::POINTER`]; 0 otherwise.
    pub code_bytecode: u32,
    /// Tag bits to clear from the frame's code field: 3.14 holds a `_PyStackRef` there
    /// (`Py_TAG_REFCNT`, 1); 0 before.
    pub code_tag_mask: u32,
    /// Explicit padding; always 0.
    pub _pad: u32,
}

/// An offset the version has no field for.
pub const NONE: u32 = u32::MAX;

/// A process's entry in `PY_PROCS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyProc {
    /// Address, in the process, of the pointer to its main interpreter
    /// (`_PyRuntime.interpreters.main`); the pointer is 0 until Python has started.
    pub interp_ptr: u64,
    /// The version's offsets.
    pub offsets: PyOffsets,
}

/// One Python frame of a stack, as the BPF side writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PyFrame {
    /// Address of its code object.
    pub code: u64,
    /// Offset of its current instruction in the bytecode, in bytes.
    pub offset: u32,
    /// [`frame`] bits.
    pub flags: u32,
}

// SAFETY: plain integers with no implicit padding (checked below): any bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PyProc {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PyFrame {}

mod layout {
    use core::mem::size_of;

    use super::*;

    const _: () = assert!(size_of::<PyOffsets>() == 56);
    const _: () = assert!(size_of::<PyProc>() == 64);
    const _: () = assert!(size_of::<PyFrame>() == 16);
}
