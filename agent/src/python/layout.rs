//! Where the fields the walk and the code-object reader need are, per CPython version.
//!
//! 3.9 to 3.12 come from tables derived from each version's headers (the numbers the
//! `python_layout_matches_headers` test recomputes with `offsetof` against every CPython
//! installed on the machine); 3.13 and later publish theirs in `_Py_DebugOffsets` at the start
//! of `_PyRuntime`, which [`from_debug_offsets`] reads (the 3.13 table stays as the fallback
//! for a runtime not readable yet). x86-64 (LP64) only.
use modelprobe_common::python::{instr, marker, PyOffsets, NONE};

/// A CPython minor version: (3, 11).
pub type Version = (u32, u32);

/// Oldest version whose frames are read.
pub const OLDEST: Version = (3, 9);
/// Newest version whose frames are read.
pub const NEWEST: Version = (3, 13);

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

/// Bytes of `_Py_DebugOffsets` (3.13's layout) [`from_debug_offsets`] reads.
pub const DEBUG_OFFSETS_LEN: usize = 8 * 73;

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
}

/// The layout a 3.13 interpreter publishes at the start of its `_PyRuntime` (`bytes`, at
/// least [`DEBUG_OFFSETS_LEN`] of them): the cookie, the version and the free-threaded flag
/// are checked, then each offset is taken from it rather than from the table.
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
    // Only 3.13's struct is known field by field; a later one adds fields in the middle.
    if version != (3, 13) {
        return Err(DebugOffsetsError::Unsupported(version.0, version.1));
    }
    // Word indices in 3.13's `_Py_DebugOffsets`: cookie, version, free_threaded, then each
    // section's size followed by its fields.
    const RUNTIME: usize = 3; // size, finalizing, interpreters_head
    const INTERP: usize = RUNTIME + 3; // size, id, next, threads_head, ...
    const TSTATE: usize = INTERP + 13; // size, prev, next, interp, current_frame, thread_id
    const FRAME: usize = TSTATE + 9; // size, previous, executable, instr_ptr, localsplus, owner
    const CODE: usize = FRAME + 6; // size, filename, name, qualname, linetable, firstlineno,
                                   // argcount, localsplusnames, localspluskinds, co_code_adaptive
    const OBJECT: usize = CODE + 10;
    const TYPE: usize = OBJECT + 2;
    const TUPLE: usize = TYPE + 4;
    const LIST: usize = TUPLE + 3;
    const DICT: usize = LIST + 3;
    const FLOAT: usize = DICT + 3;
    const LONG: usize = FLOAT + 2;
    const BYTES: usize = LONG + 3;
    const UNICODE: usize = BYTES + 3; // size, state, length, asciiobject_size
    let small = |i: usize| u32::try_from(word(i)).ok();
    let walk = PyOffsets {
        interp_threads_head: small(INTERP + 3).ok_or(DebugOffsetsError::Short)?,
        tstate_next: small(TSTATE + 2).ok_or(DebugOffsetsError::Short)?,
        tstate_thread_id: small(TSTATE + 5).ok_or(DebugOffsetsError::Short)?,
        tstate_frame: small(TSTATE + 4).ok_or(DebugOffsetsError::Short)?,
        cframe_frame: NONE,
        frame_previous: small(FRAME + 1).ok_or(DebugOffsetsError::Short)?,
        frame_code: small(FRAME + 2).ok_or(DebugOffsetsError::Short)?,
        frame_instr: small(FRAME + 3).ok_or(DebugOffsetsError::Short)?,
        frame_marker: small(FRAME + 5).ok_or(DebugOffsetsError::Short)?,
        instr_kind: instr::POINTER,
        marker_kind: marker::OWNER,
        code_bytecode: small(CODE + 9).ok_or(DebugOffsetsError::Short)?,
    };
    let ascii = word(UNICODE + 3);
    Ok(Layout {
        version,
        // `struct pyinterpreters { mutex; head; main; ... }`: main follows head.
        runtime_interp_main: word(RUNTIME + 2) + 8,
        walk,
        code_filename: word(CODE + 1),
        code_name: word(CODE + 2),
        code_qualname: Some(word(CODE + 3)),
        code_firstlineno: word(CODE + 5),
        code_linetable: word(CODE + 4),
        line_table: LineTable::Locations,
        unicode_ascii_size: ascii,
        // PyCompactUnicodeObject: the ASCII header, utf8_length, utf8 (and 3.12+ nothing
        // else).
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
        for minor in OLDEST.1..=NEWEST.1 {
            let l = for_version((3, minor)).expect("a table");
            assert_eq!(l.version, (3, minor));
            assert_ne!(l.walk.tstate_thread_id, 0);
        }
        assert!(for_version((3, 8)).is_none());
        assert!(for_version((3, 14)).is_none());
    }

    /// 3.13's debug offsets as its headers lay them out, built from the table: parsing them
    /// must give the table back.
    fn debug_offsets_313(version_hex: u64, free_threaded: u64) -> Vec<u8> {
        let t = for_version((3, 13)).unwrap();
        let mut w = vec![0u64; DEBUG_OFFSETS_LEN / 8];
        w[1] = version_hex;
        w[2] = free_threaded;
        w[3 + 2] = t.runtime_interp_main - 8;
        w[6 + 3] = t.walk.interp_threads_head as u64;
        w[19 + 2] = t.walk.tstate_next as u64;
        w[19 + 4] = t.walk.tstate_frame as u64;
        w[19 + 5] = t.walk.tstate_thread_id as u64;
        w[28 + 1] = t.walk.frame_previous as u64;
        w[28 + 2] = t.walk.frame_code as u64;
        w[28 + 3] = t.walk.frame_instr as u64;
        w[28 + 5] = t.walk.frame_marker as u64;
        w[34 + 1] = t.code_filename;
        w[34 + 2] = t.code_name;
        w[34 + 3] = t.code_qualname.unwrap();
        w[34 + 4] = t.code_linetable;
        w[34 + 5] = t.code_firstlineno;
        w[34 + 9] = t.walk.code_bytecode as u64;
        w[67 + 3] = t.unicode_ascii_size;
        let mut b: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
        b[..8].copy_from_slice(DEBUG_COOKIE);
        b
    }

    #[test]
    fn debug_offsets_give_the_313_table() {
        let parsed = from_debug_offsets(&debug_offsets_313(0x030d00f0, 0)).unwrap();
        assert_eq!(parsed, for_version((3, 13)).unwrap());
    }

    #[test]
    fn debug_offsets_refuse_what_they_cannot_describe() {
        let b = debug_offsets_313(0x030d00f0, 1);
        assert_eq!(
            from_debug_offsets(&b),
            Err(DebugOffsetsError::FreeThreaded(13))
        );
        let b = debug_offsets_313(0x030e00f0, 0);
        assert_eq!(
            from_debug_offsets(&b),
            Err(DebugOffsetsError::Unsupported(3, 14))
        );
        let mut b = debug_offsets_313(0x030d00f0, 0);
        b[0] = b'y';
        assert_eq!(from_debug_offsets(&b), Err(DebugOffsetsError::NoCookie));
        assert_eq!(from_debug_offsets(&b[..16]), Err(DebugOffsetsError::Short));
    }
}
