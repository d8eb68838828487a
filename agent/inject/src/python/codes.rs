//! The table of code objects the callbacks know (probed functions, and the callers seen on
//! their stacks) with what each keeps, the PyTorch module labels, and how values become text.
//! Everything here runs with the GIL held ([`super::monitor`] owns the one table).
use std::{collections::HashMap, ffi::CStr, sync::Arc};

use modelprobe_common::pyprobe::{flags, kind, CodeRecord, LabelRecord, TEXT_MAX};

use super::{
    capi::{Api, Obj},
    ring::Ring,
};

/// What the return value's text holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RetMode {
    None,
    Repr,
    Len,
}

/// A code object the callbacks know: probed, or seen on a caller's stack.
pub(super) struct Code {
    pub(super) id: u32,
    pub(super) flags: u16,
    /// Interned argument names whose values are kept (owned references).
    pub(super) args: Vec<Obj>,
    /// How the arguments are described (`repr`, or length for the packs' token counts).
    pub(super) arg_mode: RetMode,
    pub(super) ret: RetMode,
    /// The module's name, as registered.
    pub(super) module: Vec<u8>,
    /// Its `CODE` record made it into the ring (else it is sent again before its next use: a
    /// span never refers to a code the agent was not told about).
    pub(super) sent: bool,
}

/// Everything the callbacks share, behind the GIL.
pub(super) struct Probes {
    pub(super) api: &'static Api,
    pub(super) ring: Arc<Ring>,
    /// By code object address; each holds a reference, so no address is reused while here.
    pub(super) codes: HashMap<usize, Code>,
    pub(super) next_code: u32,
    /// PyTorch module labels by module address.
    pub(super) labels: HashMap<usize, u32>,
    pub(super) next_label: u32,
    /// The setup code's `_label(module) -> str` (owned), for the PyTorch pack.
    pub(super) label_fn: Obj,
    /// `"self"`, interned (owned).
    pub(super) self_name: Obj,
    pub(super) probed: u32,
}

impl Probes {
    /// An empty table.
    ///
    /// # Safety
    /// GIL held.
    pub(super) unsafe fn new(api: &'static Api, ring: Arc<Ring>) -> Probes {
        // SAFETY: the caller holds the GIL; a literal with one trailing NUL.
        let self_name = unsafe { (api.PyUnicode_FromString)(c"self".as_ptr()) };
        Probes {
            api,
            ring,
            codes: HashMap::new(),
            next_code: 1,
            labels: HashMap::new(),
            next_label: 1,
            label_fn: std::ptr::null_mut(),
            self_name,
            probed: 0,
        }
    }

    /// Gives back every reference the table holds.
    ///
    /// # Safety
    /// GIL held.
    pub(super) unsafe fn release(self) {
        // SAFETY: GIL held; each object is one this table owns a reference to.
        unsafe {
            for (addr, code) in self.codes {
                for a in code.args {
                    (self.api.Py_DecRef)(a);
                }
                (self.api.Py_DecRef)(addr as Obj);
            }
            if !self.label_fn.is_null() {
                (self.api.Py_DecRef)(self.label_fn);
            }
            (self.api.Py_DecRef)(self.self_name);
        }
    }

    /// The entry of `code` when it is a probed function (not one only seen on a stack).
    pub(super) fn probed_code(&self, code: Obj) -> Option<&Code> {
        self.codes
            .get(&(code as usize))
            .filter(|c| c.flags & flags::PROBED != 0)
    }

    /// The id of a code object, registering it (names sent, a reference kept) on first sight.
    pub(super) unsafe fn code_id(&mut self, code: Obj) -> u32 {
        if let Some(c) = self.codes.get(&(code as usize)) {
            let id = c.id;
            if !c.sent {
                // SAFETY: GIL held; `code` is a live code object in the table.
                unsafe { self.send_code(code) };
            }
            return id;
        }
        // SAFETY: GIL held; `code` is a live code object.
        unsafe { self.add_code(code, b"", 0, Vec::new(), RetMode::Repr, RetMode::None) }
    }

    /// Registers `code` (or updates its flags) and sends its names.
    pub(super) unsafe fn add_code(
        &mut self,
        code: Obj,
        module: &[u8],
        fl: u16,
        args: Vec<Obj>,
        arg_mode: RetMode,
        ret: RetMode,
    ) -> u32 {
        let api = self.api;
        let id = match self.codes.get_mut(&(code as usize)) {
            Some(c) => {
                c.flags |= fl;
                c.ret = ret;
                c.arg_mode = arg_mode;
                c.module = module.to_vec();
                for a in std::mem::replace(&mut c.args, args) {
                    // SAFETY: GIL held; a name this entry owned.
                    unsafe { (api.Py_DecRef)(a) };
                }
                c.id
            }
            None => {
                let id = self.next_code;
                self.next_code += 1;
                // SAFETY: GIL held; the table keeps this reference until `uninstall`.
                unsafe { (api.Py_IncRef)(code) };
                self.codes.insert(
                    code as usize,
                    Code {
                        id,
                        flags: fl,
                        args,
                        arg_mode,
                        ret,
                        module: module.to_vec(),
                        sent: false,
                    },
                );
                id
            }
        };
        // SAFETY: GIL held; `code` is in the table now.
        unsafe { self.send_code(code) };
        id
    }

    /// Sends the `CODE` record of `code` (in the table), noting whether it made it.
    pub(super) unsafe fn send_code(&mut self, code: Obj) {
        let api = self.api;
        let Some(c) = self.codes.get(&(code as usize)) else {
            return;
        };
        let (id, fl, module) = (c.id, c.flags, c.module.clone());
        // SAFETY: GIL held; attributes of a live code object, released after use.
        let sent = unsafe {
            let attr = |name: &CStr| (api.PyObject_GetAttrString)(code, name.as_ptr());
            let qual = attr(c"co_qualname");
            let file = attr(c"co_filename");
            let line = attr(c"co_firstlineno");
            let first_line = if line.is_null() {
                0
            } else {
                (api.PyLong_AsLong)(line) as u32
            };
            let rec = CodeRecord {
                id,
                first_line,
                flags: fl,
                _pad: [0; 3],
            };
            let sent = self.ring.push(
                kind::CODE,
                0,
                &rec,
                &[],
                &[cut(api.utf8(qual)).0, cut(api.utf8(file)).0, cut(&module).0],
            );
            for o in [qual, file, line] {
                if !o.is_null() {
                    (api.Py_DecRef)(o);
                }
            }
            sent
        };
        if let Some(c) = self.codes.get_mut(&(code as usize)) {
            c.sent = sent;
        }
    }

    /// The label of the PyTorch module `frame`'s `self`.
    pub(super) unsafe fn label(&mut self, frame: Obj) -> u32 {
        if self.label_fn.is_null() {
            return 0;
        }
        let api = self.api;
        // SAFETY: GIL held; a live frame; references released below.
        unsafe {
            let module = (api.PyFrame_GetVar)(frame, self.self_name);
            if module.is_null() {
                return 0;
            }
            let id = match self.labels.get(&(module as usize)) {
                Some(&id) => id,
                None => {
                    let text = (api.PyObject_CallOneArg)(self.label_fn, module);
                    let id = self.next_label;
                    self.next_label += 1;
                    let (t, cut_short) = cut(api.utf8(text));
                    if cut_short {
                        self.ring.count_truncated();
                    }
                    let sent =
                        self.ring
                            .push(kind::LABEL, 0, &LabelRecord { id, _pad: 0 }, &[], &[t]);
                    if !text.is_null() {
                        (api.Py_DecRef)(text);
                    }
                    if sent {
                        self.labels.insert(module as usize, id);
                        id
                    } else {
                        0
                    }
                }
            };
            (api.Py_DecRef)(module);
            id
        }
    }

    /// `text` of an object (`repr`, or `len=N`), appended to `out`, cut to [`TEXT_MAX`].
    pub(super) unsafe fn describe(&self, obj: Obj, mode: RetMode, out: &mut Vec<u8>) {
        let api = &self.api;
        // SAFETY: GIL held; `obj` live; the new reference is released.
        unsafe {
            match mode {
                RetMode::None => {}
                RetMode::Len => {
                    let n = (api.PyObject_Size)(obj);
                    out.extend_from_slice(format!("len={n}").as_bytes());
                }
                RetMode::Repr => {
                    let r = (api.PyObject_Repr)(obj);
                    out.extend_from_slice(api.utf8(r));
                    if !r.is_null() {
                        (api.Py_DecRef)(r);
                    }
                }
            }
        }
        self.cut_text(out);
    }

    /// `text` cut to [`TEXT_MAX`] bytes (counted).
    pub(super) fn cut_text(&self, text: &mut Vec<u8>) {
        if text.len() > TEXT_MAX {
            let n = cut(text).0.len();
            text.truncate(n);
            self.ring.count_truncated();
        }
    }
}

/// `b` cut to [`TEXT_MAX`] bytes on a character boundary, and whether it was cut.
fn cut(b: &[u8]) -> (&[u8], bool) {
    if b.len() <= TEXT_MAX {
        return (b, false);
    }
    let mut n = TEXT_MAX;
    while n > 0 && (b[n] & 0xc0) == 0x80 {
        n -= 1;
    }
    (&b[..n], true)
}
