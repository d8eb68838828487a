//! Python frames at the moment a stack is taken (see `modelprobe_common::python`).
//!
//! For a process in `PY_PROCS`: the current thread's `PyThreadState` (cached in `PY_THREADS`
//! by thread id with the list head of that walk, and checked on every use against the
//! thread's `%fs` base, which is its `pthread_self()` and so its thread state's `thread_id`;
//! the interpreter's thread list is walked again when its head has changed), then its frames from the innermost, each written as the code object's
//! address and the instruction's offset. From 3.11 the frames live in the interpreter's own
//! "data stack" in the heap: no copy of the native stack could recover them, so they are read
//! here, while the thread is stopped on this CPU.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_user, generated::bpf_get_current_task_btf},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use modelprobe_common::{
    flags,
    python::{
        frame, instr, marker, PyFrame, PyOffsets, PyProc, MAX_PY_DEPTH, MAX_PY_PROCS,
        MAX_PY_THREADS, MAX_PY_THREAD_WALK, NONE,
    },
    StackEvent,
};

use crate::maps::config;

/// Process id to its interpreter's layout (written by the agent).
#[map]
pub(crate) static PY_PROCS: HashMap<u32, PyProc> = HashMap::with_max_entries(MAX_PY_PROCS, 0);

/// Thread id to its `PyThreadState` as the last walk of the thread list found it (0: none).
#[map]
static PY_THREADS: LruHashMap<u32, PyThread> = LruHashMap::with_max_entries(MAX_PY_THREADS, 0);

/// What a walk of the thread list found for one thread.
#[repr(C)]
#[derive(Clone, Copy)]
struct PyThread {
    /// Its state, or 0 when it has none.
    tstate: u64,
    /// The head of the list at that walk.
    head: u64,
}

/// The frames of the walk in progress, per CPU (a `bpf_loop` callback cannot be handed the
/// event); copied into the event at the end.
#[map]
static PY_FRAMES: PerCpuArray<[PyFrame; MAX_PY_DEPTH]> = PerCpuArray::with_max_entries(1, 0);

/// The walks' state, per CPU: in a map rather than on the stack, whose 512 bytes the programs
/// that call [`python_stack`] mostly use already.
#[map]
static PY_WALK: PerCpuArray<PyWalk> = PerCpuArray::with_max_entries(1, 0);

/// The state of both walks: over the interpreter's thread states, then over one thread's
/// frames.
#[repr(C)]
struct PyWalk {
    /// The interpreter's offsets.
    offsets: PyOffsets,
    /// Thread walk: the state to look at next (0 at the end of the list), the `thread_id`
    /// looked for, and the state found (0 if none).
    tstate: u64,
    fsbase: u64,
    found: u64,
    /// Frame walk: the next frame to read (0 when the outermost was read), frames written,
    /// and 1 when a frame could not be read.
    frame: u64,
    n: u32,
    error: u32,
}

/// Fills `ev.pystack` for the current thread of process `pid` when that process runs a known
/// interpreter; sets the [`flags`] `PYSTACK*` bits that say how it went.
///
/// A function of its own in the object (a BPF-to-BPF call), not inlined: the verifier then
/// checks it once per program instead of once per path through the stack walk before it.
#[inline(never)]
pub(crate) fn python_stack(ev: &mut StackEvent, pid: u32, tid: u32) {
    ev.py_len = 0;
    // A raw pointer, never a reference, across the loops: the callbacks write the same slot,
    // and a `&mut` would let the compiler assume nothing else does.
    let Some(w) = PY_WALK.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the map value is read at once.
    let Some(p) = (unsafe { PY_PROCS.get(&pid) }) else {
        return;
    };
    let interp_ptr = p.interp_ptr;
    // SAFETY (every access through `w` below): this CPU's slot of PY_WALK; programs on one
    // CPU do not interleave their walks.
    unsafe { (*w).offsets = p.offsets };
    let Some(fsbase) = fs_base() else {
        ev.flags |= flags::PYSTACK_NO_THREAD;
        return;
    };
    let Some(tstate) = thread_state(w, interp_ptr, tid, fsbase) else {
        ev.flags |= flags::PYSTACK_NO_THREAD;
        return;
    };
    ev.flags |= flags::PYSTACK;
    let (tstate_frame, cframe_frame) =
        // SAFETY: this CPU's slot of PY_WALK (see python_stack).
        unsafe { ((*w).offsets.tstate_frame, (*w).offsets.cframe_frame) };
    let Some(mut first) = read(tstate + tstate_frame as u64) else {
        ev.flags |= flags::PYSTACK_ERROR;
        return;
    };
    if cframe_frame != NONE && first != 0 {
        let Some(f) = read(first + cframe_frame as u64) else {
            ev.flags |= flags::PYSTACK_ERROR;
            return;
        };
        first = f;
    }
    // SAFETY: this CPU's slot of PY_WALK (see python_stack).
    unsafe {
        (*w).frame = first;
        (*w).n = 0;
        (*w).error = 0;
    }
    // SAFETY: bpf_loop calls `python_frame` (a static function of this program) at most
    // MAX_PY_DEPTH times; it finds its state in PY_WALK.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            MAX_PY_DEPTH as u32,
            python_frame as *const () as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    let Some(frames) = PY_FRAMES.get_ptr(0) else {
        return;
    };
    // SAFETY: both are MAX_PY_DEPTH frames: this CPU's walk and the event's Python stack.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            ev.pystack.as_mut_ptr().cast(),
            core::mem::size_of::<[PyFrame; MAX_PY_DEPTH]>() as u32,
            frames.cast(),
        );
    }
    // SAFETY: this CPU's slot of PY_WALK. Volatile: the callback wrote it, behind the
    // compiler's back.
    let (n, error, next) = unsafe {
        (
            core::ptr::read_volatile(&(*w).n),
            core::ptr::read_volatile(&(*w).error),
            core::ptr::read_volatile(&(*w).frame),
        )
    };
    ev.py_len = n.min(MAX_PY_DEPTH as u32);
    if error != 0 {
        ev.flags |= flags::PYSTACK_ERROR;
    } else if next != 0 {
        ev.flags |= flags::PYSTACK_TRUNCATED;
    }
}

/// One frame (a `bpf_loop` callback): writes it and moves to its caller; 1 stops the loop.
#[inline(never)]
extern "C" fn python_frame(i: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(w) = PY_WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's walk state, set up by python_stack just before the loop.
    let w = unsafe { &mut *w };
    if w.frame == 0 {
        return 1;
    }
    match read_frame(w) {
        Some(f) => {
            let Some(frames) = PY_FRAMES.get_ptr_mut(0) else {
                return 1;
            };
            let at = (i & 63) as usize;
            if at < MAX_PY_DEPTH {
                // SAFETY: this CPU's array of MAX_PY_DEPTH frames; the index is in range.
                unsafe { (*frames)[at] = f };
            }
            w.n = (i + 1) as u32;
            0
        }
        None => {
            w.error = 1;
            1
        }
    }
}

/// Reads frame `w.frame` and steps `w` to its caller.
#[inline(always)]
fn read_frame(w: &mut PyWalk) -> Option<PyFrame> {
    let o = &w.offsets;
    let f = w.frame;
    let code = read(f + o.frame_code as u64)? & !(o.code_tag_mask as u64);
    let raw = read(f + o.frame_instr as u64)?;
    let offset = match o.instr_kind {
        instr::INT_BYTES => raw as u32,
        instr::INT_UNITS => (raw as u32).wrapping_mul(2),
        _ => raw.wrapping_sub(code + o.code_bytecode as u64) as u32,
    };
    let mut flags = 0;
    match o.marker_kind {
        marker::EVERY_FRAME => flags |= frame::ENTRY,
        marker::IS_ENTRY => {
            if read_byte(f + o.frame_marker as u64)? != 0 {
                flags |= frame::ENTRY;
            }
        }
        _ => {
            if read_byte(f + o.frame_marker as u64)? >= marker::FIRST_NOT_PYTHON {
                flags |= frame::SHIM;
            }
        }
    }
    w.frame = read(f + o.frame_previous as u64)?;
    Some(PyFrame {
        code,
        offset,
        flags,
    })
}

/// The current thread's `PyThreadState` in the interpreter whose main-interpreter pointer is
/// at `interp_ptr` (offsets in `*w`), if it has one.
#[inline(always)]
fn thread_state(w: *mut PyWalk, interp_ptr: u64, tid: u32, fsbase: u64) -> Option<u64> {
    // SAFETY (every access through `w`): this CPU's slot of PY_WALK, see python_stack.
    let (id_off, head_off) = unsafe {
        (
            (*w).offsets.tstate_thread_id as u64,
            (*w).offsets.interp_threads_head as u64,
        )
    };
    let interp = read(interp_ptr)?;
    if interp == 0 {
        return None;
    }
    let head = read(interp + head_off)?;
    // A new thread state goes in at the head of the list: while the head is the one seen at
    // the last walk, that walk's answer holds, "none" included (a native thread: no walk per
    // sample), unless the state found no longer says this thread's id.
    // SAFETY: the value is copied out at once.
    if let Some(c) = unsafe { PY_THREADS.get(&tid) }.copied() {
        if c.head == head {
            if c.tstate == 0 {
                return None;
            }
            if read(c.tstate + id_off) == Some(fsbase) {
                return Some(c.tstate);
            }
        }
    }
    // SAFETY: this CPU's slot of PY_WALK (see python_stack).
    unsafe {
        (*w).tstate = head;
        (*w).fsbase = fsbase;
        (*w).found = 0;
    }
    // SAFETY: bpf_loop calls `python_thread` at most MAX_PY_THREAD_WALK times; it finds its
    // state in PY_WALK.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            MAX_PY_THREAD_WALK,
            python_thread as *const () as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: this CPU's slot of PY_WALK. Volatile: the callback wrote it, behind the
    // compiler's back.
    let found = unsafe { core::ptr::read_volatile(&(*w).found) };
    let _ = PY_THREADS.insert(
        &tid,
        &PyThread {
            tstate: found,
            head,
        },
        0,
    );
    (found != 0).then_some(found)
}

/// One thread state (a `bpf_loop` callback); 1 stops the loop.
#[inline(never)]
extern "C" fn python_thread(_i: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(w) = PY_WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's walk state, set up by thread_state just before the loop.
    let w = unsafe { &mut *w };
    let t = w.tstate;
    if t == 0 {
        return 1;
    }
    if read(t + w.offsets.tstate_thread_id as u64) == Some(w.fsbase) {
        w.found = t;
        return 1;
    }
    match read(t + w.offsets.tstate_next as u64) {
        Some(next) => {
            w.tstate = next;
            0
        }
        None => 1,
    }
}

/// The current task's `%fs` base (its thread pointer, which glibc's and musl's
/// `pthread_self()` return), from `task_struct.thread.fsbase` at the offset the agent read
/// from the kernel's BTF.
#[inline(always)]
fn fs_base() -> Option<u64> {
    let off = config().task_fsbase_off;
    if off == u32::MAX {
        return None;
    }
    // SAFETY: the helper returns the current task; the read faults safely.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        bpf_probe_read_kernel(task.add(off as usize) as *const u64).ok()
    }
}

/// One user word; `None` where it cannot be read.
#[inline(always)]
fn read(addr: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user fails cleanly on a bad address.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// One user byte.
#[inline(always)]
fn read_byte(addr: u64) -> Option<u8> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_user(addr as *const u8) }.ok()
}
