//! A stopped thread's Python frames, read out of the process as the BPF side reads them
//! (`ebpf/src/python.rs`: the interpreter's thread list matched on `thread_id`, which on
//! x86-64 is the thread's `%fs` base, then the frames from the innermost), through
//! `process_vm_readv`. Done while the thread is held, so the frames are the ones its native
//! stack was running.
use modelprobe_common::{
    flags,
    python::{frame, instr, marker, PyFrame, PyProc, MAX_PY_DEPTH, MAX_PY_THREAD_WALK, NONE},
};

use crate::python::objects::Memory;

/// The frames of the thread whose `%fs` base is `fsbase`, innermost first, and the
/// [`flags`] `PYSTACK*` bits that say how the read went (0: the thread has no Python state).
pub fn frames(mem: &Memory, py: &PyProc, fsbase: u64) -> (Vec<PyFrame>, u32) {
    let o = &py.offsets;
    let read = |a: u64| mem.u64(a).ok();
    let byte = |a: u64| {
        let mut b = [0u8; 1];
        mem.read(a, &mut b).ok().map(|()| b[0])
    };
    let Some(interp) = read(py.interp_ptr).filter(|&i| i != 0) else {
        return (Vec::new(), flags::PYSTACK_NO_THREAD);
    };
    let mut tstate = read(interp + u64::from(o.interp_threads_head)).unwrap_or(0);
    let mut walked = 0;
    while tstate != 0 && read(tstate + u64::from(o.tstate_thread_id)) != Some(fsbase) {
        walked += 1;
        if walked >= MAX_PY_THREAD_WALK {
            tstate = 0;
            break;
        }
        tstate = read(tstate + u64::from(o.tstate_next)).unwrap_or(0);
    }
    if tstate == 0 {
        return (Vec::new(), flags::PYSTACK_NO_THREAD);
    }
    let mut bits = flags::PYSTACK;
    let mut f = match read(tstate + u64::from(o.tstate_frame)) {
        Some(f) if o.cframe_frame != NONE && f != 0 => read(f + u64::from(o.cframe_frame)),
        other => other,
    }
    .unwrap_or_else(|| {
        bits |= flags::PYSTACK_ERROR;
        0
    });
    let mut out = Vec::new();
    while f != 0 {
        if out.len() == MAX_PY_DEPTH {
            bits |= flags::PYSTACK_TRUNCATED;
            break;
        }
        let one = (|| {
            let code = read(f + u64::from(o.frame_code))? & !u64::from(o.code_tag_mask);
            let raw = read(f + u64::from(o.frame_instr))?;
            let offset = match o.instr_kind {
                instr::INT_BYTES => raw as u32,
                instr::INT_UNITS => (raw as u32).wrapping_mul(2),
                _ => raw.wrapping_sub(code + u64::from(o.code_bytecode)) as u32,
            };
            let flags = match o.marker_kind {
                marker::EVERY_FRAME => frame::ENTRY,
                marker::IS_ENTRY if byte(f + u64::from(o.frame_marker))? != 0 => frame::ENTRY,
                marker::IS_ENTRY => 0,
                _ if byte(f + u64::from(o.frame_marker))? >= marker::FIRST_NOT_PYTHON => {
                    frame::SHIM
                }
                _ => 0,
            };
            let previous = read(f + u64::from(o.frame_previous))?;
            Some((
                PyFrame {
                    code,
                    offset,
                    flags,
                },
                previous,
            ))
        })();
        match one {
            Some((frame, previous)) => {
                out.push(frame);
                f = previous;
            }
            None => {
                bits |= flags::PYSTACK_ERROR;
                break;
            }
        }
    }
    (out, bits)
}
