//! The `sys.monitoring` callbacks (C functions the interpreter calls directly), over the table
//! of code objects they know ([`super::codes`]).
//!
//! Only code objects the setup code registered (`_mp_register`, in [`FUNCTIONS`]) get local
//! events, so the
//! interpreter calls [`on_start`] and friends for probed functions alone; everything else runs
//! its ordinary, specialized bytecode. `PY_UNWIND` and `PY_THROW` can only be set for the
//! whole interpreter: they fire when an exception leaves a frame (or is thrown into a
//! generator), and return at once for a code object not in the table.
//!
//! Every callback runs with the GIL held, which serializes the table and the ring's writer.
//! A callback never raises: errors from `repr` and friends are cleared and the value left out.
use std::{
    cell::{Cell, UnsafeCell},
    ffi::{c_long, CStr},
    sync::Arc,
};

use modelprobe_common::pyprobe::{flags, kind, EnterRecord, ExitRecord, STACK_MAX};

use super::{
    capi::{Api, MethodDef, Obj, METH_FASTCALL},
    codes::{Probes, RetMode},
    ring::Ring,
};

/// The GIL-guarded cell the callbacks use.
struct GilCell(UnsafeCell<Option<Probes>>);
// SAFETY: only touched with the GIL held (callbacks, setup and teardown), which serializes it.
unsafe impl Sync for GilCell {}

static PROBES: GilCell = GilCell(UnsafeCell::new(None));

thread_local! {
    /// This thread's kernel tid (0: not read yet). No destructor, so it never pins the library.
    static TID: Cell<u32> = const { Cell::new(0) };
    /// A callback is running on this thread (a `repr` that calls a probed function).
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

fn tid() -> u32 {
    TID.with(|t| {
        if t.get() == 0 {
            // SAFETY: gettid has no preconditions.
            t.set(unsafe { libc::gettid() } as u32);
        }
        t.get()
    })
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Installs the table (GIL held, before any callback is registered).
///
/// # Safety
/// GIL held.
pub unsafe fn install(api: &'static Api, ring: Arc<Ring>) {
    // SAFETY: GIL held (the caller's promise), so no callback reads the cell meanwhile.
    unsafe { *PROBES.0.get() = Some(Probes::new(api, ring)) };
}

/// Drops the table (its ring reference too) and every reference it holds (GIL held, after
/// the callbacks are gone).
///
/// # Safety
/// GIL held.
pub unsafe fn uninstall() {
    // SAFETY: GIL held (the caller's promise).
    if let Some(p) = unsafe { (*PROBES.0.get()).take() } {
        // SAFETY: GIL held.
        unsafe { p.release() };
    }
}

/// How many code objects are probed now.
///
/// # Safety
/// GIL held.
pub unsafe fn probed() -> u32 {
    // SAFETY: GIL held.
    unsafe { (*PROBES.0.get()).as_ref().map_or(0, |p| p.probed) }
}

/// Runs `f` on the table unless a callback already runs on this thread. Returns `None`.
///
/// # Safety
/// GIL held (every caller is a callback the interpreter calls with it).
unsafe fn with_probes(f: impl FnOnce(&mut Probes)) -> Obj {
    let Some(api) = super::api() else {
        return std::ptr::null_mut();
    };
    if super::FORKED.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: GIL held.
        return unsafe { api.new_none() };
    }
    if BUSY.with(|b| b.replace(true)) {
        if let Some(ring) = super::ring() {
            ring.count_reentered();
        }
        // SAFETY: GIL held.
        return unsafe { api.new_none() };
    }
    // SAFETY: GIL held, and BUSY keeps a nested callback on this thread from taking a second
    // reference while `f` runs; errors a callback causes must not leak into the host's code.
    unsafe {
        if let Some(p) = (*PROBES.0.get()).as_mut() {
            let (mut t, mut v, mut tb) = (
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
            (api.PyErr_Fetch)(&mut t, &mut v, &mut tb);
            f(p);
            (api.PyErr_Clear)();
            (api.PyErr_Restore)(t, v, tb);
        }
    }
    BUSY.with(|b| b.set(false));
    // SAFETY: GIL held.
    unsafe { api.new_none() }
}

/// The `i`th argument a callback got.
///
/// # Safety
/// `args` holds `nargs` objects.
unsafe fn arg(args: *const Obj, nargs: isize, i: isize) -> Obj {
    if i < nargs {
        // SAFETY: the caller's promise.
        unsafe { *args.offset(i) }
    } else {
        std::ptr::null_mut()
    }
}

unsafe fn enter(args: *const Obj, nargs: isize, fl: u16) -> Obj {
    // SAFETY: the interpreter passes (code, offset); GIL held.
    let code = unsafe { arg(args, nargs, 0) };
    // SAFETY: GIL held.
    unsafe {
        with_probes(|p| {
            let Some(c) = p.probed_code(code) else {
                return;
            };
            let (id, cflags, want_args, arg_mode) = (c.id, c.flags, !c.args.is_empty(), c.arg_mode);
            if !c.sent {
                p.send_code(code);
            }
            let time_ns = now_ns();
            let api = p.api;
            let frame = (api.PyEval_GetFrame)();
            let mut stack = [0u32; STACK_MAX];
            let mut depth = 0;
            if !frame.is_null() {
                let mut f = (api.PyFrame_GetBack)(frame);
                while !f.is_null() && depth < STACK_MAX {
                    let fc = (api.PyFrame_GetCode)(f);
                    stack[depth] = p.code_id(fc);
                    depth += 1;
                    (api.Py_DecRef)(fc);
                    let back = (api.PyFrame_GetBack)(f);
                    (api.Py_DecRef)(f);
                    f = back;
                }
                if !f.is_null() {
                    (api.Py_DecRef)(f);
                }
            }
            let label = if cflags & flags::PACK_TORCH != 0 && !frame.is_null() {
                p.label(frame)
            } else {
                0
            };
            let mut text = Vec::new();
            if want_args && !frame.is_null() && fl & flags::RESUMED == 0 {
                let names = p.codes[&(code as usize)].args.clone();
                for (i, name) in names.into_iter().enumerate() {
                    if i > 0 {
                        text.extend_from_slice(b", ");
                    }
                    // `name=repr`, or `len(name)=N`.
                    let by_len = arg_mode == RetMode::Len;
                    if by_len {
                        text.extend_from_slice(b"len(");
                    }
                    text.extend_from_slice(api.utf8(name));
                    text.extend_from_slice(if by_len { b")=" } else { b"=" });
                    let v = (api.PyFrame_GetVar)(frame, name);
                    if v.is_null() {
                        (api.PyErr_Clear)();
                        text.push(b'?');
                    } else if by_len {
                        let n = (api.PyObject_Size)(v);
                        (api.PyErr_Clear)();
                        text.extend_from_slice(n.to_string().as_bytes());
                        (api.Py_DecRef)(v);
                    } else {
                        p.describe(v, arg_mode, &mut text);
                        (api.Py_DecRef)(v);
                    }
                }
                p.cut_text(&mut text);
            }
            let has_text = if want_args && fl & flags::RESUMED == 0 {
                flags::HAS_TEXT
            } else {
                0
            };
            let rec = EnterRecord {
                time_ns,
                code: id,
                label,
                flags: fl | has_text,
                stack_len: depth as u16,
                _pad: 0,
            };
            let texts: &[&[u8]] = if has_text != 0 { &[&text] } else { &[] };
            p.ring
                .push(kind::ENTER, tid(), &rec, &stack[..depth], texts);
        })
    }
}

unsafe fn exit(args: *const Obj, nargs: isize, fl: u16) -> Obj {
    // SAFETY: the interpreter passes (code, offset, value); GIL held.
    let (code, value) = unsafe { (arg(args, nargs, 0), arg(args, nargs, 2)) };
    // SAFETY: GIL held.
    unsafe {
        with_probes(|p| {
            let Some(c) = p.probed_code(code) else {
                return;
            };
            let (id, ret) = (c.id, c.ret);
            let time_ns = now_ns();
            let api = p.api;
            let mut text = Vec::new();
            let mut exception = 0u64;
            let mut fl = fl;
            if fl & flags::RAISED != 0 && !value.is_null() {
                exception = value as u64;
                let ty = (api.PyObject_Type)(value);
                let name = (api.PyObject_GetAttrString)(ty, c"__qualname__".as_ptr());
                if api.utf8(name) == b"GeneratorExit" {
                    // A suspended generator closed (`close()`, collected after a `break`): how
                    // generators end, not an error.
                    fl &= !flags::RAISED;
                    exception = 0;
                    for o in [ty, name] {
                        if !o.is_null() {
                            (api.Py_DecRef)(o);
                        }
                    }
                    let rec = ExitRecord {
                        time_ns,
                        code: id,
                        flags: fl,
                        _pad: 0,
                        exception,
                    };
                    p.ring.push(kind::EXIT, tid(), &rec, &[], &[]);
                    return;
                }
                text.extend_from_slice(api.utf8(name));
                let msg = (api.PyObject_Str)(value);
                let m = api.utf8(msg);
                if !m.is_empty() {
                    text.extend_from_slice(b": ");
                    text.extend_from_slice(m);
                }
                for o in [ty, name, msg] {
                    if !o.is_null() {
                        (api.Py_DecRef)(o);
                    }
                }
                p.cut_text(&mut text);
            } else if fl & flags::YIELDED == 0 && ret != RetMode::None && !value.is_null() {
                p.describe(value, ret, &mut text);
            }
            let has_text = if text.is_empty() { 0 } else { flags::HAS_TEXT };
            let rec = ExitRecord {
                time_ns,
                code: id,
                flags: fl | has_text,
                _pad: 0,
                exception,
            };
            let texts: &[&[u8]] = if has_text != 0 { &[&text] } else { &[] };
            p.ring.push(kind::EXIT, tid(), &rec, &[], texts);
        })
    }
}

/// `PY_START(code, offset)`.
unsafe extern "C" fn on_start(_m: Obj, args: *const Obj, nargs: isize) -> Obj {
    // SAFETY: called by the interpreter with the GIL and its arguments.
    unsafe { enter(args, nargs, 0) }
}

/// `PY_RESUME(code, offset)` and `PY_THROW(code, offset, exception)`.
unsafe extern "C" fn on_resume(_m: Obj, args: *const Obj, nargs: isize) -> Obj {
    // SAFETY: called by the interpreter with the GIL and its arguments.
    unsafe { enter(args, nargs, flags::RESUMED) }
}

/// `PY_RETURN(code, offset, value)`.
unsafe extern "C" fn on_return(_m: Obj, args: *const Obj, nargs: isize) -> Obj {
    // SAFETY: called by the interpreter with the GIL and its arguments.
    unsafe { exit(args, nargs, 0) }
}

/// `PY_YIELD(code, offset, value)`.
unsafe extern "C" fn on_yield(_m: Obj, args: *const Obj, nargs: isize) -> Obj {
    // SAFETY: called by the interpreter with the GIL and its arguments.
    unsafe { exit(args, nargs, flags::YIELDED) }
}

/// `PY_UNWIND(code, offset, exception)`.
unsafe extern "C" fn on_unwind(_m: Obj, args: *const Obj, nargs: isize) -> Obj {
    // SAFETY: called by the interpreter with the GIL and its arguments.
    unsafe { exit(args, nargs, flags::RAISED) }
}

/// `_mp_register(code, module, argnames, ret, flags, by_len)`: called by the setup code for
/// each code object it sets local events on. `ret`: 0 none, 1 `repr`, 2 `len`; `by_len`: 1
/// describes the arguments by their length.
unsafe extern "C" fn register(_m: Obj, args: *const Obj, nargs: isize) -> Obj {
    // SAFETY: the setup code's call, GIL held.
    unsafe {
        let (code, module, names, ret, fl, by_len) = (
            arg(args, nargs, 0),
            arg(args, nargs, 1),
            arg(args, nargs, 2),
            arg(args, nargs, 3),
            arg(args, nargs, 4),
            arg(args, nargs, 5),
        );
        let Some(p) = (*PROBES.0.get()).as_mut() else {
            return std::ptr::null_mut();
        };
        let api = p.api;
        if code.is_null() || names.is_null() || ret.is_null() || fl.is_null() || by_len.is_null() {
            return api.new_none();
        }
        let mut keep = Vec::new();
        for i in 0..(api.PyTuple_Size)(names).max(0) {
            let n = (api.PyTuple_GetItem)(names, i);
            (api.Py_IncRef)(n);
            keep.push(n);
        }
        let ret = match (api.PyLong_AsLong)(ret) {
            1 => RetMode::Repr,
            2 => RetMode::Len,
            _ => RetMode::None,
        };
        let fl = (api.PyLong_AsLong)(fl) as u16 | flags::PROBED;
        let arg_mode = if (api.PyLong_AsLong)(by_len) == 1 {
            RetMode::Len
        } else {
            RetMode::Repr
        };
        let module = api.utf8(module);
        let was_probed = p
            .codes
            .get(&(code as usize))
            .is_some_and(|c| c.flags & flags::PROBED != 0);
        let id = p.add_code(code, module, fl, keep, arg_mode, ret);
        if !was_probed {
            p.probed += 1;
            p.ring.set_probed(p.probed);
        }
        (api.PyErr_Clear)();
        (api.PyLong_FromLong)(id as c_long)
    }
}

/// `_mp_set_label(fn)`: the PyTorch pack's `module -> label` function.
unsafe extern "C" fn set_label(_m: Obj, args: *const Obj, nargs: isize) -> Obj {
    // SAFETY: the setup code's call, GIL held.
    unsafe {
        let f = arg(args, nargs, 0);
        let Some(p) = (*PROBES.0.get()).as_mut() else {
            return std::ptr::null_mut();
        };
        if !f.is_null() {
            (p.api.Py_IncRef)(f);
            if !p.label_fn.is_null() {
                (p.api.Py_DecRef)(p.label_fn);
            }
            p.label_fn = f;
        }
        p.api.new_none()
    }
}

macro_rules! def {
    ($name:literal, $f:ident) => {
        MethodDef {
            name: concat!($name, "\0").as_ptr().cast(),
            meth: $f as *const std::ffi::c_void,
            flags: METH_FASTCALL,
            doc: std::ptr::null(),
        }
    };
}

/// The callbacks and helpers, by the global name the setup code knows them under.
pub static FUNCTIONS: [(&CStr, MethodDef); 7] = [
    (c"_mp_start", def!("_mp_start", on_start)),
    (c"_mp_resume", def!("_mp_resume", on_resume)),
    (c"_mp_return", def!("_mp_return", on_return)),
    (c"_mp_yield", def!("_mp_yield", on_yield)),
    (c"_mp_unwind", def!("_mp_unwind", on_unwind)),
    (c"_mp_register", def!("_mp_register", register)),
    (c"_mp_set_label", def!("_mp_set_label", set_label)),
];
