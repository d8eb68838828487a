//! Where the fields the walk and the code-object reader need are, per CPython version.
//!
//! 3.9 to 3.13 come from tables derived from each version's headers (the numbers the
//! `tables_match_every_installed_cpython` test recomputes with `offsetof` against every
//! CPython installed on the machine); 3.13 and 3.14 publish theirs in `_Py_DebugOffsets` at
//! the start of `_PyRuntime`, which [`from_debug_offsets`] reads (the 3.13 table stays as the
//! fallback for a runtime not readable yet; 3.14 is read only that way). x86-64 (LP64) only.
use modelprobe_common::python::{instr, marker, PyOffsets, NONE};

/// A CPython minor version: (3, 11).
pub type Version = (u32, u32);

/// Oldest version whose frames are read.
pub const OLDEST: Version = (3, 9);
/// Newest version whose frames are read (3.14 through its debug offsets only).
pub const NEWEST: Version = (3, 14);
/// Newest version with a table of its own.
pub const NEWEST_TABLE: Version = (3, 13);

/// How a code object's line table is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineTable {
    /// 3.9's `co_lnotab`: (bytecode delta, line delta) byte pairs.
    Lnotab,
    /// 3.10's `co_linetable`: (bytecode delta, line delta) pairs, -128 for "no line".
    Linetable310,
    /// 3.11 and later: the location table (`Objects/locations.md`).
    Locations,
}

/// One version's layout: the walk's offsets and the code-object reader's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The version it describes.
    pub version: Version,
    /// `_PyRuntime` to `interpreters.main`.
    pub runtime_interp_main: u64,
    /// What the BPF walk needs.
    pub walk: PyOffsets,
    /// `PyCodeObject.co_filename`.
    pub code_filename: u64,
    /// `PyCodeObject.co_name`.
    pub code_name: u64,
    /// `co_qualname` (3.11 and later); `None` before, where only the bare name exists.
    pub code_qualname: Option<u64>,
    /// `PyCodeObject.co_firstlineno` (a C `int`).
    pub code_firstlineno: u64,
    /// The line table's `bytes` (`co_lnotab` on 3.9, `co_linetable` since).
    pub code_linetable: u64,
    /// How that table is encoded.
    pub line_table: LineTable,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    pub unicode_ascii_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`: where other compact strings' characters start.
    pub unicode_compact_size: u64,
}

/// `PyObject.ob_type`.
pub const OB_TYPE: u64 = 8;
/// `PyVarObject.ob_size`.
pub const OB_SIZE: u64 = 16;
/// `PyBytesObject.ob_sval`.
pub const BYTES_SVAL: u64 = 32;
/// `PyASCIIObject.length`.
pub const UNICODE_LENGTH: u64 = 16;
/// `PyASCIIObject.state` (interned, kind, compact and ascii bits).
pub const UNICODE_STATE: u64 = 32;

/// The table for `version`, if it is one modelprobe reads.
pub fn for_version(version: Version) -> Option<Layout> {
    let pointer_frames =
        |tstate_frame, cframe_frame, previous, code, instr_, marker_at, kind| PyOffsets {
            interp_threads_head: 0,
            tstate_next: 8,
            tstate_thread_id: 0,
            tstate_frame,
            cframe_frame,
            frame_previous: previous,
            frame_code: code,
            frame_instr: instr_,
            frame_marker: marker_at,
            instr_kind: instr::POINTER,
            marker_kind: kind,
            code_bytecode: 0,
            code_tag_mask: 0,
            _pad: 0,
        };
    Some(match version {
        (3, 9) | (3, 10) => Layout {
            version,
            runtime_interp_main: 40,
            walk: PyOffsets {
                interp_threads_head: 8,
                tstate_next: 8,
                tstate_thread_id: 176,
                tstate_frame: 24,
                cframe_frame: NONE,
                frame_previous: 24,
                frame_code: 32,
                frame_instr: if version == (3, 9) { 104 } else { 96 },
                frame_marker: 0,
                instr_kind: if version == (3, 9) {
                    instr::INT_BYTES
                } else {
                    instr::INT_UNITS
                },
                marker_kind: marker::EVERY_FRAME,
                code_bytecode: 0,
                code_tag_mask: 0,
                _pad: 0,
            },
            code_filename: 104,
            code_name: 112,
            code_qualname: None,
            code_firstlineno: 40,
            code_linetable: 120,
            line_table: if version == (3, 9) {
                LineTable::Lnotab
            } else {
                LineTable::Linetable310
            },
            unicode_ascii_size: 48,
            unicode_compact_size: 72,
        },
        (3, 11) => Layout {
            version,
            runtime_interp_main: 48,
            walk: PyOffsets {
                interp_threads_head: 16,
                tstate_thread_id: 152,
                code_bytecode: 184,
                ..pointer_frames(56, 8, 48, 32, 56, 68, marker::IS_ENTRY)
            },
            code_filename: 112,
            code_name: 120,
            code_qualname: Some(128),
            code_firstlineno: 72,
            code_linetable: 136,
            line_table: LineTable::Locations,
            unicode_ascii_size: 48,
            unicode_compact_size: 72,
        },
        (3, 12) => Layout {
            version,
            runtime_interp_main: 48,
            walk: PyOffsets {
                interp_threads_head: 72,
                tstate_thread_id: 136,
                code_bytecode: 192,
                ..pointer_frames(56, 0, 8, 0, 56, 70, marker::OWNER)
            },
            code_filename: 112,
            code_name: 120,
            code_qualname: Some(128),
            code_firstlineno: 68,
            code_linetable: 136,
            line_table: LineTable::Locations,
            unicode_ascii_size: 40,
            unicode_compact_size: 56,
        },
        (3, 13) => Layout {
            version,
            runtime_interp_main: 640,
            walk: PyOffsets {
                interp_threads_head: 7344,
                tstate_thread_id: 152,
                code_bytecode: 200,
                ..pointer_frames(72, NONE, 8, 0, 56, 70, marker::OWNER)
            },
            code_filename: 112,
            code_name: 120,
            code_qualname: Some(128),
            code_firstlineno: 68,
            code_linetable: 136,
            line_table: LineTable::Locations,
            unicode_ascii_size: 40,
            unicode_compact_size: 56,
        },
        _ => return None,
    })
}

/// `_Py_DebugOffsets.cookie`.
pub const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";

/// Bytes of `_Py_DebugOffsets` [`from_debug_offsets`] reads: enough for 3.14's, the longer.
pub const DEBUG_OFFSETS_LEN: usize = 8 * 96;

/// Why the debug offsets cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DebugOffsetsError {
    /// Not (yet) the debug offsets.
    #[error("_PyRuntime does not start with the debug cookie")]
    NoCookie,
    /// A build without the GIL, whose frames and objects are laid out differently.
    #[error("a free-threaded build (3.{0}t): its frames are not read yet")]
    FreeThreaded(u32),
    /// A version whose debug offsets are not known field by field.
    #[error("CPython {0}.{1}: its layout is not known to this modelprobe")]
    Unsupported(u32, u32),
    /// Fewer bytes than the struct, or an offset that does not fit.
    #[error("the debug offsets are cut short")]
    Short,
    /// Offsets that contradict what every CPython of that version has: the struct is not
    /// laid out as this reader expects, and nothing read with it could be trusted.
    #[error("CPython {0}.{1}: its debug offsets are not laid out as expected ({2})")]
    Unexpected(u32, u32, &'static str),
}

/// Word indices of the fields read, in one version's `_Py_DebugOffsets` (cookie, version and
/// free-threaded flag first, then each section's `size` followed by its fields).
struct DebugWords {
    interpreters_head: usize,
    threads_head: usize,
    tstate_next: usize,
    tstate_current_frame: usize,
    tstate_thread_id: usize,
    frame_size: usize,
    frame_previous: usize,
    frame_executable: usize,
    frame_instr_ptr: usize,
    frame_owner: usize,
    code_size: usize,
    unicode_ascii_size: usize,
}

/// Extra words 3.14 adds in each section of `_Py_DebugOffsets`, as its releases laid them out:
/// the interpreter section (`threads_main`, then `code_object_generation` and
/// `tlbc_generation`), the frame section (`stackpointer`, then `tlbc_index`), the code section
/// (`co_tlbc`), and a set-object section before the dict's.
#[derive(Clone, Copy)]
struct Extra {
    interp: usize,
    frame: usize,
    code: usize,
    set: usize,
}

/// 3.13's layout, and the 3.14 ones tried in turn: the one whose fixed values check out is
/// taken (see [`from_debug_offsets`]).
const V13: Extra = Extra {
    interp: 0,
    frame: 0,
    code: 0,
    set: 0,
};
const V14: [Extra; 2] = [
    Extra {
        interp: 3,
        frame: 2,
        code: 1,
        set: 4,
    },
    Extra {
        interp: 1,
        frame: 1,
        code: 0,
        set: 4,
    },
];

impl DebugWords {
    /// The word indices of a layout with `extra` words over 3.13's
    /// (`Include/internal/pycore_runtime.h` in 3.13, `pycore_debug_offsets.h` since).
    fn of(extra: Extra) -> DebugWords {
        let runtime = 3; // size, finalizing, interpreters_head
        let interp = runtime + 3; // size, id, next, threads_head, ...
        let tstate = interp + 13 + extra.interp; // size, prev, next, interp, current_frame,
                                                 // thread_id, ...
        let frame = tstate + 9; // size, previous, executable, instr_ptr, localsplus, owner, ...
        let code = frame + 6 + extra.frame; // size, filename, name, qualname, linetable,
                                            // firstlineno, argcount, localsplusnames,
                                            // localspluskinds, co_code_adaptive, ...
        let object = code + 10 + extra.code; // size, ob_type
        let type_ = object + 2; // size, tp_name, tp_repr, tp_flags
        let tuple = type_ + 4; // size, ob_item, ob_size
        let list = tuple + 3; // size, ob_item, ob_size
        let dict = list + 3 + extra.set; // (3.14: set: size, used, table, mask), then dict
        let float = dict + 3; // size, ob_fval
        let long = float + 2; // size, lv_tag, ob_digit
        let bytes = long + 3; // size, ob_size, ob_sval
        let unicode = bytes + 3; // size, state, length, asciiobject_size
        DebugWords {
            interpreters_head: runtime + 2,
            threads_head: interp + 3,
            tstate_next: tstate + 2,
            tstate_current_frame: tstate + 4,
            tstate_thread_id: tstate + 5,
            frame_size: frame,
            frame_previous: frame + 1,
            frame_executable: frame + 2,
            frame_instr_ptr: frame + 3,
            frame_owner: frame + 5,
            code_size: code,
            unicode_ascii_size: unicode + 3,
        }
    }
}

/// The layout a 3.13 or 3.14 interpreter publishes at the start of its `_PyRuntime` (`bytes`,
/// at least [`DEBUG_OFFSETS_LEN`] of them): the cookie, the version and the free-threaded flag
/// are checked, each offset is taken from it, and the offsets are checked against what is
/// fixed in every build of those versions (a string header of 40 bytes, frames and code
/// objects that hold the fields read), so that a layout read wrong turns Python frames off
/// rather than reading garbage.
pub fn from_debug_offsets(bytes: &[u8]) -> Result<Layout, DebugOffsetsError> {
    if bytes.len() < DEBUG_OFFSETS_LEN {
        return Err(DebugOffsetsError::Short);
    }
    if &bytes[..8] != DEBUG_COOKIE {
        return Err(DebugOffsetsError::NoCookie);
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8"));
    let hex = word(1);
    let version = ((hex >> 24) as u32 & 0xff, (hex >> 16) as u32 & 0xff);
    if word(2) != 0 {
        return Err(DebugOffsetsError::FreeThreaded(version.1));
    }
    if version != (3, 13) && version != (3, 14) {
        return Err(DebugOffsetsError::Unsupported(version.0, version.1));
    }
    let candidates: &[Extra] = if version.1 == 13 { &[V13] } else { &V14 };
    let mut last = DebugOffsetsError::Short;
    for &extra in candidates {
        match read_layout(version, DebugWords::of(extra), &word) {
            Ok(layout) => return Ok(layout),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The layout `w` says, if its values check out.
fn read_layout(
    version: Version,
    w: DebugWords,
    word: &dyn Fn(usize) -> u64,
) -> Result<Layout, DebugOffsetsError> {
    let unexpected = |why| DebugOffsetsError::Unexpected(version.0, version.1, why);
    let small = |i: usize| u32::try_from(word(i)).map_err(|_| DebugOffsetsError::Short);
    let code = w.code_size;
    let walk = PyOffsets {
        interp_threads_head: small(w.threads_head)?,
        tstate_next: small(w.tstate_next)?,
        tstate_thread_id: small(w.tstate_thread_id)?,
        tstate_frame: small(w.tstate_current_frame)?,
        cframe_frame: NONE,
        frame_previous: small(w.frame_previous)?,
        frame_code: small(w.frame_executable)?,
        frame_instr: small(w.frame_instr_ptr)?,
        frame_marker: small(w.frame_owner)?,
        instr_kind: instr::POINTER,
        marker_kind: marker::OWNER,
        code_bytecode: small(code + 9)?,
        // 3.14 holds a `_PyStackRef` in `f_executable`: its low two bits are tags
        // (`Py_TAG_BITS`).
        code_tag_mask: if version.1 >= 14 { 3 } else { 0 },
        _pad: 0,
    };
    let ascii = word(w.unicode_ascii_size);
    if ascii != 40 {
        return Err(unexpected("PyASCIIObject is not 40 bytes"));
    }
    let frame_size = word(w.frame_size);
    if [
        walk.frame_previous,
        walk.frame_code,
        walk.frame_instr,
        walk.frame_marker,
    ]
    .iter()
    .any(|&f| u64::from(f) >= frame_size)
    {
        return Err(unexpected("a frame field past the frame"));
    }
    let code_size = word(code);
    let code_fields = [code + 1, code + 2, code + 3, code + 4, code + 5, code + 9];
    if code_fields
        .iter()
        .any(|&i| word(i) >= code_size || word(i) < 16)
    {
        return Err(unexpected("a code-object field past the code object"));
    }
    Ok(Layout {
        version,
        // `struct pyinterpreters { mutex; head; main; ... }`: main follows head.
        runtime_interp_main: word(w.interpreters_head) + 8,
        walk,
        code_filename: word(code + 1),
        code_name: word(code + 2),
        code_qualname: Some(word(code + 3)),
        code_firstlineno: word(code + 5),
        code_linetable: word(code + 4),
        line_table: LineTable::Locations,
        unicode_ascii_size: ascii,
        // PyCompactUnicodeObject: the ASCII header, utf8_length, utf8.
        unicode_compact_size: ascii + 16,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name value` lines of `layout_check.c` built against `python`'s headers.
    fn header_offsets(python: &std::path::Path) -> Option<std::collections::HashMap<String, u64>> {
        let root = python.parent()?.parent()?;
        let include = std::fs::read_dir(root.join("include"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("Python.h").exists())?;
        let dir = std::env::temp_dir().join(format!("mp-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let exe = dir.join(root.file_name()?);
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src/python/layout_check.c");
        let built = std::process::Command::new("gcc")
            .arg("-I")
            .arg(&include)
            .arg("-I")
            .arg(include.join("internal"))
            .arg(src)
            .arg("-o")
            .arg(&exe)
            .status()
            .ok()?;
        assert!(
            built.success(),
            "building layout_check.c for {}",
            root.display()
        );
        let out = std::process::Command::new(&exe).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        Some(
            text.lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect(),
        )
    }

    #[test]
    fn tables_match_every_installed_cpython() {
        let mut checked = 0;
        for entry in std::fs::read_dir("/root/.pyenv/versions")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut v = name.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            let version = (v.next().unwrap_or(0), v.next().unwrap_or(0));
            let Some(table) = for_version(version) else {
                continue;
            };
            let Some(h) = header_offsets(&entry.path().join("bin/python3")) else {
                continue;
            };
            let w = &table.walk;
            let mut want = vec![
                ("runtime_interpreters_main", table.runtime_interp_main),
                ("interp_threads_head", w.interp_threads_head as u64),
                ("tstate_next", w.tstate_next as u64),
                ("tstate_thread_id", w.tstate_thread_id as u64),
                ("frame_previous", w.frame_previous as u64),
                ("frame_code", w.frame_code as u64),
                ("frame_instr", w.frame_instr as u64),
                ("code_filename", table.code_filename),
                ("code_name", table.code_name),
                ("code_firstlineno", table.code_firstlineno),
                ("code_linetable", table.code_linetable),
                ("ascii_size", table.unicode_ascii_size),
                ("compact_size", table.unicode_compact_size),
                ("bytes_sval", BYTES_SVAL),
                ("varobject_size", OB_SIZE),
            ];
            match version {
                (3, 9) | (3, 10) => want.push(("tstate_frame", w.tstate_frame as u64)),
                (3, 11) | (3, 12) => want.extend([
                    ("tstate_cframe", w.tstate_frame as u64),
                    ("cframe_current_frame", w.cframe_frame as u64),
                ]),
                _ => want.push(("tstate_current_frame", w.tstate_frame as u64)),
            }
            if version >= (3, 11) {
                want.extend([
                    ("code_adaptive", w.code_bytecode as u64),
                    ("code_qualname", table.code_qualname.unwrap()),
                ]);
            }
            match version {
                (3, 11) => want.push(("frame_is_entry", w.frame_marker as u64)),
                (3, 12..) => want.push(("frame_owner", w.frame_marker as u64)),
                _ => {}
            }
            for (field, value) in want {
                assert_eq!(h.get(field), Some(&value), "CPython {name}: {field}");
            }
            checked += 1;
        }
        if std::env::var_os("MODELPROBE_REQUIRE_BPF").is_some() {
            assert!(checked >= 5, "only {checked} CPython versions checked");
        }
        eprintln!("{checked} CPython versions' headers match the tables");
    }

    #[test]
    fn every_supported_version_has_a_table() {
        for minor in OLDEST.1..=NEWEST_TABLE.1 {
            let l = for_version((3, minor)).expect("a table");
            assert_eq!(l.version, (3, minor));
            assert_ne!(l.walk.tstate_thread_id, 0);
        }
        assert!(for_version((3, 8)).is_none());
        // 3.14 is read only through its debug offsets.
        assert!(for_version((3, 14)).is_none());
    }

    /// Debug offsets as 3.13's or 3.14's headers lay them out, built from the 3.13 table
    /// (3.14's fields where they sit in 3.14); parsing them must give the table back.
    fn debug_offsets(version_hex: u64, free_threaded: u64) -> Vec<u8> {
        let minor = ((version_hex >> 16) & 0xff) as u32;
        debug_offsets_laid_out(
            version_hex,
            free_threaded,
            if minor >= 14 { V14[0] } else { V13 },
        )
    }

    fn debug_offsets_laid_out(version_hex: u64, free_threaded: u64, extra: Extra) -> Vec<u8> {
        let t = for_version((3, 13)).unwrap();
        let d = DebugWords::of(extra);
        let mut w = vec![0u64; DEBUG_OFFSETS_LEN / 8];
        w[1] = version_hex;
        w[2] = free_threaded;
        w[d.interpreters_head] = t.runtime_interp_main - 8;
        w[d.threads_head] = t.walk.interp_threads_head as u64;
        w[d.tstate_next] = t.walk.tstate_next as u64;
        w[d.tstate_current_frame] = t.walk.tstate_frame as u64;
        w[d.tstate_thread_id] = t.walk.tstate_thread_id as u64;
        w[d.frame_size] = 72;
        w[d.frame_previous] = t.walk.frame_previous as u64;
        w[d.frame_executable] = t.walk.frame_code as u64;
        w[d.frame_instr_ptr] = t.walk.frame_instr as u64;
        w[d.frame_owner] = t.walk.frame_marker as u64;
        let c = d.code_size;
        w[c] = 208;
        w[c + 1] = t.code_filename;
        w[c + 2] = t.code_name;
        w[c + 3] = t.code_qualname.unwrap();
        w[c + 4] = t.code_linetable;
        w[c + 5] = t.code_firstlineno;
        w[c + 9] = t.walk.code_bytecode as u64;
        w[d.unicode_ascii_size] = t.unicode_ascii_size;
        let mut b: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
        b[..8].copy_from_slice(DEBUG_COOKIE);
        b
    }

    #[test]
    fn debug_offsets_give_the_313_table() {
        let parsed = from_debug_offsets(&debug_offsets(0x030d00f0, 0)).unwrap();
        assert_eq!(parsed, for_version((3, 13)).unwrap());
    }

    #[test]
    fn debug_offsets_of_314_read_its_own_layout() {
        let parsed = from_debug_offsets(&debug_offsets(0x030e00f0, 0)).unwrap();
        let t = for_version((3, 13)).unwrap();
        assert_eq!(parsed.version, (3, 14));
        assert_eq!(parsed.walk.code_tag_mask, 3);
        // Where 3.14.0's fields are: the ASCII header's size is word 80, the code section's
        // size word 39.
        let d = DebugWords::of(V14[0]);
        assert_eq!((d.unicode_ascii_size, d.code_size), (80, 39));
        // A 3.14 laid out as its pre-releases were (fewer extra words) is read too.
        let other = from_debug_offsets(&debug_offsets_laid_out(0x030e00b1, 0, V14[1])).unwrap();
        assert_eq!(other.walk, parsed.walk);
        assert_eq!(
            PyOffsets {
                code_tag_mask: 0,
                ..parsed.walk
            },
            t.walk
        );
        assert_eq!(parsed.code_qualname, t.code_qualname);
        assert_eq!(parsed.unicode_ascii_size, 40);
        // 3.13's layout read as 3.14's puts every field a word off: refused, not guessed.
        let mut b = debug_offsets(0x030d00f0, 0);
        b[8..16].copy_from_slice(&0x030e00f0u64.to_le_bytes());
        assert!(matches!(
            from_debug_offsets(&b),
            Err(DebugOffsetsError::Unexpected(3, 14, _))
        ));
    }

    #[test]
    fn debug_offsets_refuse_what_they_cannot_describe() {
        let b = debug_offsets(0x030d00f0, 1);
        assert_eq!(
            from_debug_offsets(&b),
            Err(DebugOffsetsError::FreeThreaded(13))
        );
        let b = debug_offsets(0x030f00a0, 0);
        assert_eq!(
            from_debug_offsets(&b),
            Err(DebugOffsetsError::Unsupported(3, 15))
        );
        let mut b = debug_offsets(0x030d00f0, 0);
        b[0] = b'y';
        assert_eq!(from_debug_offsets(&b), Err(DebugOffsetsError::NoCookie));
        assert_eq!(from_debug_offsets(&b[..16]), Err(DebugOffsetsError::Short));
    }
}
