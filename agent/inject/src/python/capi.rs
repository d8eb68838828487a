//! The few CPython C-API functions the probes call, found at run time in the process
//! (`dlsym(RTLD_DEFAULT)`): the library links no libpython, so one build serves every
//! interpreter, shared (`libpython3.12.so`) or linked into the executable (exported with
//! `-Xlinker -export-dynamic`, as Debian's are).
//!
//! Only functions of the stable C API whose signatures have not changed from 3.12 on are used;
//! objects are reached through them, never through struct offsets.
use std::ffi::{c_char, c_int, c_long, c_void, CStr};

/// `PyObject *`.
pub type Obj = *mut c_void;

/// `PyMethodDef`.
#[repr(C)]
pub struct MethodDef {
    /// `ml_name`.
    pub name: *const c_char,
    /// `ml_meth` (a `_PyCFunctionFast` for `METH_FASTCALL`).
    pub meth: *const c_void,
    /// `ml_flags`.
    pub flags: c_int,
    /// `ml_doc`.
    pub doc: *const c_char,
}

// SAFETY: the definitions are immutable statics of pointers to static strings and functions.
unsafe impl Sync for MethodDef {}

/// `METH_FASTCALL`: `(self, args, nargs)`.
pub const METH_FASTCALL: c_int = 0x80;
/// `Py_file_input`.
pub const FILE_INPUT: c_int = 257;

/// The functions, resolved once.
#[allow(non_snake_case, missing_docs)]
pub struct Api {
    pub Py_IsInitialized: unsafe extern "C" fn() -> c_int,
    pub Py_GetVersion: unsafe extern "C" fn() -> *const c_char,
    pub PyGILState_Ensure: unsafe extern "C" fn() -> c_int,
    pub PyGILState_Release: unsafe extern "C" fn(c_int),
    pub PyRun_String: unsafe extern "C" fn(*const c_char, c_int, Obj, Obj) -> Obj,
    pub PyDict_New: unsafe extern "C" fn() -> Obj,
    pub PyDict_SetItemString: unsafe extern "C" fn(Obj, *const c_char, Obj) -> c_int,
    pub PyDict_GetItemString: unsafe extern "C" fn(Obj, *const c_char) -> Obj,
    pub PyEval_GetBuiltins: unsafe extern "C" fn() -> Obj,
    pub PyCFunction_NewEx: unsafe extern "C" fn(*const MethodDef, Obj, Obj) -> Obj,
    pub PyUnicode_FromString: unsafe extern "C" fn(*const c_char) -> Obj,
    pub PyUnicode_AsUTF8AndSize: unsafe extern "C" fn(Obj, *mut isize) -> *const c_char,
    pub PyLong_AsLong: unsafe extern "C" fn(Obj) -> c_long,
    pub PyLong_FromLong: unsafe extern "C" fn(c_long) -> Obj,
    pub PyObject_Repr: unsafe extern "C" fn(Obj) -> Obj,
    pub PyObject_Str: unsafe extern "C" fn(Obj) -> Obj,
    pub PyObject_Type: unsafe extern "C" fn(Obj) -> Obj,
    pub PyObject_GetAttrString: unsafe extern "C" fn(Obj, *const c_char) -> Obj,
    pub PyObject_CallOneArg: unsafe extern "C" fn(Obj, Obj) -> Obj,
    pub PyObject_Size: unsafe extern "C" fn(Obj) -> isize,
    pub PyTuple_Size: unsafe extern "C" fn(Obj) -> isize,
    pub PyTuple_GetItem: unsafe extern "C" fn(Obj, isize) -> Obj,
    pub PyEval_GetFrame: unsafe extern "C" fn() -> Obj,
    pub PyFrame_GetBack: unsafe extern "C" fn(Obj) -> Obj,
    pub PyFrame_GetCode: unsafe extern "C" fn(Obj) -> Obj,
    pub PyFrame_GetVar: unsafe extern "C" fn(Obj, Obj) -> Obj,
    pub PyErr_Fetch: unsafe extern "C" fn(*mut Obj, *mut Obj, *mut Obj),
    pub PyErr_Restore: unsafe extern "C" fn(Obj, Obj, Obj),
    pub PyErr_Clear: unsafe extern "C" fn(),
    pub Py_IncRef: unsafe extern "C" fn(Obj),
    pub Py_DecRef: unsafe extern "C" fn(Obj),
    pub PySys_AddAuditHook: unsafe extern "C" fn(
        unsafe extern "C" fn(*const c_char, Obj, *mut c_void) -> c_int,
        *mut c_void,
    ) -> c_int,
    /// `Py_None` (`_Py_NoneStruct`).
    pub none: Obj,
    /// `Py_IsFinalizing` (3.13) or `_Py_IsFinalizing` (3.12).
    pub is_finalizing: Option<unsafe extern "C" fn() -> c_int>,
}

// SAFETY: function pointers and the address of the immortal `None`, valid in every thread.
unsafe impl Send for Api {}
// SAFETY: as above; nothing in it changes after `resolve`.
unsafe impl Sync for Api {}

/// Looks a symbol up in the whole process.
fn sym(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no other preconditions.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// A symbol's address as the function pointer type `F`.
///
/// # Safety
/// `F` is a function pointer type matching the symbol's C signature.
unsafe fn cast<F: Copy>(p: *mut c_void) -> F {
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: the caller's promise; both are one pointer wide.
    unsafe { std::mem::transmute_copy(&p) }
}

macro_rules! resolve {
    ($($name:ident),* ; none = $none:expr) => {{
        Some(Api {
            $(
                // SAFETY: the symbol is CPython's function of that name, whose C signature is
                // the field's type (stable API, unchanged since 3.12).
                $name: unsafe {
                    cast(sym(CStr::from_bytes_with_nul_unchecked(
                        concat!(stringify!($name), "\0").as_bytes(),
                    ))?)
                },
            )*
            none: $none?,
            is_finalizing: sym(c"Py_IsFinalizing")
                .or_else(|| sym(c"_Py_IsFinalizing"))
                // SAFETY: both are `int (void)`.
                .map(|p| unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> c_int>(p) }),
        })
    }};
}

/// The process's CPython API, or `None` when it has no interpreter (or an older one missing
/// a function).
pub fn resolve() -> Option<Api> {
    resolve!(
        Py_IsInitialized, Py_GetVersion, PyGILState_Ensure, PyGILState_Release, PyRun_String,
        PyDict_New, PyDict_SetItemString, PyDict_GetItemString, PyEval_GetBuiltins,
        PyCFunction_NewEx, PyUnicode_FromString, PyUnicode_AsUTF8AndSize, PyLong_AsLong,
        PyLong_FromLong, PyObject_Repr, PyObject_Str, PyObject_Type, PyObject_GetAttrString,
        PyObject_CallOneArg, PyObject_Size, PyTuple_Size, PyTuple_GetItem, PyEval_GetFrame, PyFrame_GetBack,
        PyFrame_GetCode, PyFrame_GetVar, PyErr_Fetch, PyErr_Restore, PyErr_Clear, Py_IncRef,
        Py_DecRef, PySys_AddAuditHook;
        none = sym(c"_Py_NoneStruct")
    )
}

/// `Py_GetVersion()`'s first word (`3.12.3`), when the process has an interpreter.
pub fn version_string() -> Option<String> {
    let f = sym(c"Py_GetVersion")?;
    // SAFETY: `const char *Py_GetVersion(void)`, a static string, callable any time.
    let s = unsafe {
        let f: unsafe extern "C" fn() -> *const c_char = std::mem::transmute(f);
        CStr::from_ptr(f())
    };
    Some(s.to_string_lossy().split_whitespace().next()?.to_string())
}

/// `(major, minor)` of a version string.
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut it = version.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// `PY_VERSION_HEX`-like value of a version string (release level left out).
pub fn version_hex(version: &str) -> u32 {
    let mut it = version
        .split('.')
        .map(|p| p.trim_end_matches(|c: char| !c.is_ascii_digit()));
    let mut part = || it.next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    (part() << 24) | (part() << 16) | (part() << 8)
}

impl Api {
    /// The UTF-8 of a `str` object (borrowed from it), or empty.
    ///
    /// # Safety
    /// GIL held; `s` a live object or null.
    pub unsafe fn utf8<'a>(&self, s: Obj) -> &'a [u8] {
        if s.is_null() {
            return &[];
        }
        let mut len: isize = 0;
        // SAFETY: the caller's promise; the buffer lives as long as `s`.
        let p = unsafe { (self.PyUnicode_AsUTF8AndSize)(s, &mut len) };
        if p.is_null() {
            // SAFETY: GIL held.
            unsafe { (self.PyErr_Clear)() };
            return &[];
        }
        // SAFETY: CPython returned `len` bytes at `p`.
        unsafe { std::slice::from_raw_parts(p.cast(), len as usize) }
    }

    /// A new reference to `None`.
    ///
    /// # Safety
    /// GIL held.
    pub unsafe fn new_none(&self) -> Obj {
        // SAFETY: the caller's promise.
        unsafe { (self.Py_IncRef)(self.none) };
        self.none
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(major_minor("3.12.3"), Some((3, 12)));
        assert_eq!(major_minor("3.13.0rc1"), Some((3, 13)));
        assert_eq!(version_hex("3.12.3"), 0x030c_0300);
        assert_eq!(version_hex("3.13.0rc1"), 0x030d_0000);
    }
}
