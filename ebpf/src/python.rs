//! Python frames at the moment a stack is taken (see `modelprobe_common::python`).
//!
//! For a process in `PY_PROCS`: the current thread's `PyThreadState` (cached in `PY_THREADS`
//! by thread id, checked on every use against the thread's `%fs` base, which is its
//! `pthread_self()` and so its thread state's `thread_id`; on a miss the interpreter's thread
//! list is walked), then its frames from the innermost, each written as the code object's
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

/// Thread id to the address of its `PyThreadState`, as last found.
#[map]
static PY_THREADS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_PY_THREADS, 0);

/// The frames of the walk in progress, per CPU (a `bpf_loop` callback cannot be handed the
/// event); copied into the event at the end.
#[map]
static PY_FRAMES: PerCpuArray<[PyFrame; MAX_PY_DEPTH]> = PerCpuArray::with_max_entries(1, 0);

/// Fills `ev.pystack` for the current thread of process `pid` when that process runs a known
/// interpreter; sets the [`flags`] `PYSTACK*` bits that say how it went.
#[inline(always)]
pub(crate) fn python_stack(ev: &mut StackEvent, pid: u32, tid: u32) {
    ev.py_len = 0;
    ev._pad = 0;
    // SAFETY: the value is copied out at once.
    let Some(p) = (unsafe { PY_PROCS.get(&pid) }).copied() else {
        return;
    };
    let Some(fsbase) = fs_base() else {
        ev.flags |= flags::PYSTACK_NO_THREAD;
        return;
    };
    let o = p.offsets;
    let Some(tstate) = thread_state(&p, tid, fsbase) else {
        ev.flags |= flags::PYSTACK_NO_THREAD;
        return;
    };
    ev.flags |= flags::PYSTACK;
    let Some(mut first) = read(tstate + o.tstate_frame as u64) else {
        ev.flags |= flags::PYSTACK_ERROR;
        return;
    };
    if o.cframe_frame != NONE && first != 0 {
        let Some(f) = read(first + o.cframe_frame as u64) else {
            ev.flags |= flags::PYSTACK_ERROR;
            return;
        };
        first = f;
    }
    let mut walk = FrameWalk {
        frame: first,
        n: 0,
        error: 0,
        offsets: o,
    };
    // SAFETY: bpf_loop calls `python_frame` (a static function of this program) at most
    // MAX_PY_DEPTH times with a pointer to `walk`, which outlives the call.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            MAX_PY_DEPTH as u32,
            python_frame as *const () as *mut core::ffi::c_void,
            (&mut walk as *mut FrameWalk).cast(),
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
    ev.py_len = walk.n.min(MAX_PY_DEPTH as u32);
    if walk.error != 0 {
        ev.flags |= flags::PYSTACK_ERROR;
    } else if walk.frame != 0 {
        ev.flags |= flags::PYSTACK_TRUNCATED;
    }
}

/// The walk over one thread's frames.
#[repr(C)]
struct FrameWalk {
    /// The next frame to read; 0 when the outermost was read.
    frame: u64,
    /// Frames written.
    n: u32,
    /// 1 when a frame could not be read.
    error: u32,
    offsets: PyOffsets,
}

/// One frame (a `bpf_loop` callback): writes it and moves to its caller; 1 stops the loop.
#[inline(never)]
extern "C" fn python_frame(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `FrameWalk` python_stack handed to bpf_loop, alive for the loop.
    let w = unsafe { &mut *(ctx as *mut FrameWalk) };
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
fn read_frame(w: &mut FrameWalk) -> Option<PyFrame> {
    let o = &w.offsets;
    let f = w.frame;
    let code = read(f + o.frame_code as u64)?;
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
            if read_byte(f + o.frame_marker as u64)? == marker::OWNED_BY_CSTACK {
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

/// The current thread's `PyThreadState` in process `p`, if it has one.
#[inline(always)]
fn thread_state(p: &PyProc, tid: u32, fsbase: u64) -> Option<u64> {
    let o = &p.offsets;
    // SAFETY: the value is copied out at once.
    if let Some(&t) = unsafe { PY_THREADS.get(&tid) } {
        // A state freed and reused by another thread no longer says this thread's id.
        if t != 0 && read(t + o.tstate_thread_id as u64) == Some(fsbase) {
            return Some(t);
        }
    }
    let interp = read(p.interp_ptr)?;
    if interp == 0 {
        return None;
    }
    let mut walk = ThreadWalk {
        tstate: read(interp + o.interp_threads_head as u64)?,
        fsbase,
        next: o.tstate_next as u64,
        id: o.tstate_thread_id as u64,
        found: 0,
    };
    // SAFETY: bpf_loop calls `python_thread` at most MAX_PY_THREAD_WALK times with a pointer
    // to `walk`, which outlives the call.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            MAX_PY_THREAD_WALK,
            python_thread as *const () as *mut core::ffi::c_void,
            (&mut walk as *mut ThreadWalk).cast(),
            0,
        );
    }
    if walk.found == 0 {
        return None;
    }
    let _ = PY_THREADS.insert(&tid, &walk.found, 0);
    Some(walk.found)
}

/// The walk over an interpreter's thread states.
#[repr(C)]
struct ThreadWalk {
    /// The state to look at next; 0 at the end of the list.
    tstate: u64,
    /// The `thread_id` looked for.
    fsbase: u64,
    /// Offsets of `next` and `thread_id`.
    next: u64,
    id: u64,
    /// The state found, or 0.
    found: u64,
}

/// One thread state (a `bpf_loop` callback); 1 stops the loop.
#[inline(never)]
extern "C" fn python_thread(_i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `ThreadWalk` thread_state handed to bpf_loop, alive for the loop.
    let w = unsafe { &mut *(ctx as *mut ThreadWalk) };
    let t = w.tstate;
    if t == 0 {
        return 1;
    }
    if read(t + w.id) == Some(w.fsbase) {
        w.found = t;
        return 1;
    }
    match read(t + w.next) {
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
