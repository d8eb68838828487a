//! Function symbols of an ELF file, with the file offsets uprobes attach at.
use std::path::Path;

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::{Error, Result};

/// A defined function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSymbol {
    /// Symbol name as in the file (mangled for C++/Rust).
    pub name: String,
    /// Offset of its first instruction in the file.
    pub file_offset: u64,
}

/// Every defined function of `path` (symbol table and dynamic symbols), deduplicated by name.
pub fn function_symbols(path: &Path) -> Result<Vec<FunctionSymbol>> {
    let data = read(path)?;
    let file = parse(path, &data)?;
    let to_offset = file_offsets(&file);
    let mut out: Vec<FunctionSymbol> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0)
        .filter_map(|s| {
            Some(FunctionSymbol {
                name: s.name().ok()?.to_string(),
                file_offset: to_offset(s.address())?,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    Ok(out)
}

/// The bytes of `path`.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

/// `data` (the bytes of `path`) as an object file.
pub(crate) fn parse<'a>(path: &Path, data: &'a [u8]) -> Result<object::File<'a>> {
    object::File::parse(data)
        .map_err(|e| Error::InvalidArgument(format!("{} is not an ELF file: {e}", path.display())))
}

/// The file offset of each virtual address of `file`'s loaded segments.
pub(crate) fn file_offsets(file: &object::File<'_>) -> impl Fn(u64) -> Option<u64> {
    let segments: Vec<(u64, u64, u64)> = file
        .segments()
        .map(|s| (s.address(), s.size(), s.file_range().0))
        .collect();
    move |addr: u64| {
        segments
            .iter()
            .find(|(a, size, _)| addr >= *a && addr < a + size)
            .map(|(a, _, off)| addr - a + off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_functions_of_own_binary() {
        let exe = std::env::current_exe().unwrap();
        let syms = function_symbols(&exe).unwrap();
        assert!(
            syms.iter().any(|s| s.name == "main"),
            "no main in {}",
            exe.display()
        );
        assert!(syms.iter().all(|s| s.file_offset > 0));
        assert!(function_symbols(Path::new("/proc/self/status")).is_err());
    }
}
