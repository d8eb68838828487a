//! Finding a process's CPython: the object that defines `_PyRuntime` (a `libpython3.X.so` or
//! the executable itself, as in Debian's statically linked `python3.11`), its version and the
//! addresses the walk starts from.
//!
//! The version comes from `Py_Version` (exported since 3.11) where the object has it, else
//! from the object's file name (`libpython3.9.so.1.0`, `python3.10`); 3.13 and later are
//! checked against the `_Py_DebugOffsets` their runtime starts with.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use modelprobe_common::python::PyProc;
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use super::{
    layout::{self, Layout, Version, DEBUG_OFFSETS_LEN},
    objects::Memory,
};
use crate::procmaps;

/// A process's interpreter, found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// Its version's layout.
    pub layout: Layout,
    /// The object that holds it, as the process maps it.
    pub object: String,
    /// Address of `_PyRuntime` in the process.
    pub runtime: u64,
    /// Address of `PyCode_Type` in the process.
    pub code_type: u64,
}

impl Interpreter {
    /// The BPF side's entry for this interpreter.
    pub fn bpf_entry(&self) -> PyProc {
        PyProc {
            interp_ptr: self.runtime + self.layout.runtime_interp_main,
            offsets: self.layout.walk,
        }
    }
}

/// What a look at one process found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No CPython mapped (yet).
    NotPython,
    /// A CPython whose frames are read.
    Interpreter(Arc<Interpreter>),
    /// A CPython whose frames are not read, and why (one line).
    Unsupported(String),
}

/// What one object file says about the interpreter in it (cached by path).
#[derive(Debug, Clone)]
pub(super) struct ObjectInfo {
    runtime: u64,
    code_type: u64,
    version: Option<Version>,
    /// `(p_offset, p_vaddr, p_filesz)` of each loadable segment.
    segments: Vec<(u64, u64, u64)>,
}

/// Objects looked at so far: `None` for those without `_PyRuntime`.
pub(super) type ObjectCache = HashMap<PathBuf, Option<Arc<ObjectInfo>>>;

/// Looks for a CPython in process `pid`.
pub(super) fn find(pid: u32, cache: &mut ObjectCache) -> Found {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Found::NotPython;
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    // Each file-backed mapping's (start, file offset), by path.
    let mut mappings: Vec<(&str, Vec<(u64, u64)>)> = Vec::new();
    for line in text.lines().filter_map(procmaps::parse_line) {
        if line.inode == 0 || !line.path.starts_with('/') {
            continue;
        }
        match mappings.iter_mut().find(|(p, _)| *p == line.path) {
            Some((_, list)) => list.push((line.start, line.offset)),
            None => mappings.push((line.path, vec![(line.start, line.offset)])),
        }
    }
    // libpython first: an executable linked against it defines no runtime of its own.
    let candidates = mappings
        .iter()
        .filter(|(p, _)| is_libpython(p))
        .chain(mappings.iter().filter(|(p, _)| Some(*p) == exe.as_deref()));
    for (path, maps) in candidates {
        let host = PathBuf::from(format!("/proc/{pid}/root{path}"));
        let info = cache
            .entry(host.clone())
            .or_insert_with(|| read_object(&host).map(Arc::new))
            .clone();
        let Some(info) = info else { continue };
        let Some(bias) = maps.iter().find_map(|&(start, offset)| {
            crate::unwind::compile::bias(&info.segments, start, offset)
        }) else {
            continue;
        };
        let version = info.version.or_else(|| version_from_name(path));
        let Some(version) = version else {
            return Found::Unsupported(format!(
                "{path} defines _PyRuntime but its CPython version is unknown"
            ));
        };
        let runtime = info.runtime.wrapping_add(bias);
        let layout = match layout_of(pid, version, runtime) {
            Ok(l) => l,
            Err(why) => return Found::Unsupported(why),
        };
        return Found::Interpreter(Arc::new(Interpreter {
            layout,
            object: path.to_string(),
            runtime,
            code_type: info.code_type.wrapping_add(bias),
        }));
    }
    Found::NotPython
}

/// The layout of `version`: the running interpreter's debug offsets from 3.13 on.
fn layout_of(pid: u32, version: Version, runtime: u64) -> Result<Layout, String> {
    if version < layout::OLDEST {
        return Err(format!(
            "CPython {}.{} ({})",
            version.0,
            version.1,
            supported()
        ));
    }
    if version >= (3, 13) {
        let mut bytes = vec![0u8; DEBUG_OFFSETS_LEN];
        if (Memory { pid }).read(runtime, &mut bytes).is_ok() {
            match layout::from_debug_offsets(&bytes) {
                Ok(l) => return Ok(l),
                Err(layout::DebugOffsetsError::NoCookie | layout::DebugOffsetsError::Short) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    layout::for_version(version).ok_or_else(|| {
        format!(
            "CPython {}.{}: its layout is not known to this modelprobe ({})",
            version.0,
            version.1,
            supported()
        )
    })
}

/// Which versions are read, for the line that says a process's are not.
fn supported() -> String {
    let (o, n) = (layout::OLDEST, layout::NEWEST);
    format!(
        "Python frames are read for {}.{} to {}.{}",
        o.0, o.1, n.0, n.1
    )
}

/// True for a shared CPython (`libpython3.12.so.1.0`): mapping one is what makes a process
/// worth looking at again.
pub fn is_libpython(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("libpython3") && name.contains(".so")
}

/// `(3, 9)` from `libpython3.9.so.1.0`, `python3.10`, `libpython3.12d.so`.
pub fn version_from_name(path: &str) -> Option<Version> {
    let name = path.rsplit('/').next()?;
    let at = name.find("python3.")? + "python3.".len();
    let digits: String = name[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((3, digits.parse().ok()?))
}

/// The runtime's and code type's addresses and the version an object declares; `None` when
/// it has no `_PyRuntime`.
fn read_object(path: &Path) -> Option<ObjectInfo> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: the map is read-only and private; a file truncated under it could fault, as
    // with every reader of mapped objects (blazesym, the unwind-table builder).
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let obj = object::File::parse(&*map).ok()?;
    let mut runtime = None;
    let mut code_type = None;
    let mut version = None;
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        match sym.name() {
            Ok("_PyRuntime") => runtime = runtime.or(Some(sym.address())),
            Ok("PyCode_Type") => code_type = code_type.or(Some(sym.address())),
            Ok("Py_Version") if version.is_none() => {
                version = symbol_u32(&obj, &sym).map(|hex| (hex >> 24, (hex >> 16) & 0xff));
            }
            _ => {}
        }
    }
    let segments = obj
        .segments()
        .map(|s| {
            let (offset, size) = s.file_range();
            (offset, s.address(), size)
        })
        .collect();
    Some(ObjectInfo {
        runtime: runtime?,
        code_type: code_type?,
        version,
        segments,
    })
}

/// The 4 bytes a data symbol holds in the file.
fn symbol_u32(obj: &object::File<'_>, sym: &object::Symbol<'_, '_>) -> Option<u32> {
    let section = obj.section_by_index(sym.section_index()?).ok()?;
    let data = section.data().ok()?;
    let at = usize::try_from(sym.address().checked_sub(section.address())?).ok()?;
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_file_names() {
        assert_eq!(
            version_from_name("/usr/lib/libpython3.9.so.1.0"),
            Some((3, 9))
        );
        assert_eq!(version_from_name("/usr/bin/python3.10"), Some((3, 10)));
        assert_eq!(version_from_name("/x/libpython3.12d.so"), Some((3, 12)));
        assert_eq!(version_from_name("/usr/bin/python3"), None);
        assert_eq!(version_from_name("/usr/bin/python"), None);
    }
}
