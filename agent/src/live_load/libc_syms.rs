//! Where `dlopen` and its companions live in a target, and a `syscall` instruction to borrow.
//!
//! The libraries are found in `/proc/PID/maps` (glibc 2.34+ and musl export `dlopen` from libc;
//! older glibc from `libdl.so.2`), read through `/proc/PID/map_files` (the very inode mapped,
//! in whatever mount namespace) or `/proc/PID/root`, and their dynamic symbols relocated by the
//! load bias of the mapping at the lowest address.
use std::{fs, os::unix::fs::FileExt};

use object::{
    elf::{PF_X, PT_LOAD},
    read::elf::{ElfFile64, ProgramHeader},
    Endianness, Object, ObjectSymbol,
};

use super::{procfs::MapEntry, LiveLoadError};

/// Run-time addresses of what the injector calls in a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Symbols {
    /// The library `dlopen` came from, as the target maps it.
    pub lib: String,
    /// `void *dlopen(const char *, int)`.
    pub dlopen: u64,
    /// `int dlclose(void *)`.
    pub dlclose: u64,
    /// `char *dlerror(void)`.
    pub dlerror: u64,
    /// `void *dlsym(void *, const char *)`.
    pub dlsym: u64,
    /// `int *__errno_location(void)`, to keep the held thread's errno.
    pub errno_location: Option<u64>,
    /// Address of a `syscall` instruction (`0f 05`) in executable memory.
    pub syscall_insn: u64,
}

/// Which of the names below each library may provide, in order of preference.
const NAMES: [&str; 5] = ["dlopen", "dlclose", "dlerror", "dlsym", "__errno_location"];

/// Preference of a mapped file as a provider of the names (lower first), None for others.
fn provider_rank(path: &str) -> Option<u8> {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let name = path.rsplit('/').next()?;
    let libc = name == "libc.so.6"
        || name == "libc.so"
        || (name.starts_with("libc-") && name.ends_with(".so"))
        || (name.starts_with("ld-musl-") && name.ends_with(".so.1"))
        || (name.starts_with("libc.musl-") && name.ends_with(".so.1"));
    let libdl = name == "libdl.so.2" || (name.starts_with("libdl-") && name.ends_with(".so"));
    if libc {
        Some(0)
    } else if libdl {
        Some(1)
    } else {
        None
    }
}

/// Finds the symbols and the syscall instruction in process `pid` mapping `maps`.
pub(super) fn resolve(pid: u32, maps: &[MapEntry]) -> Result<Symbols, LiveLoadError> {
    // One candidate per mapped file: its mapping at the lowest address (maps is sorted).
    let mut candidates: Vec<(u8, &MapEntry)> = Vec::new();
    for m in maps {
        if let Some(rank) = provider_rank(&m.path) {
            if !candidates
                .iter()
                .any(|(_, c)| c.inode == m.inode && c.path == m.path)
            {
                candidates.push((rank, m));
            }
        }
    }
    candidates.sort_by_key(|(rank, _)| *rank);

    let mut found: [Option<u64>; NAMES.len()] = [None; NAMES.len()];
    let mut lib = String::new();
    let mut syscall_insn = None;
    for (_, first) in &candidates {
        let data = read_mapped_file(pid, first)?;
        let Ok(elf) = ElfFile64::<Endianness>::parse(&*data) else {
            log::debug!(
                "live load: {} is not a 64-bit ELF file, skipped",
                first.path
            );
            continue;
        };
        let Some(bias) = load_bias(&elf, first) else {
            log::debug!(
                "live load: no PT_LOAD of {} matches its mapping",
                first.path
            );
            continue;
        };
        for sym in elf.dynamic_symbols() {
            let Ok(name) = sym.name() else { continue };
            let Some(i) = NAMES.iter().position(|n| *n == name) else {
                continue;
            };
            if found[i].is_none() && sym.is_definition() && sym.address() != 0 {
                found[i] = Some(bias.wrapping_add(sym.address()));
                if i == 0 {
                    lib = first.path.clone();
                }
            }
        }
        if syscall_insn.is_none() {
            syscall_insn = find_syscall_in_file(&elf, &data, bias)
                .filter(|a| executable_at(maps, first.inode, *a));
        }
    }
    let [Some(dlopen), Some(dlclose), Some(dlerror), Some(dlsym), errno_location] = found else {
        return Err(LiveLoadError::NoDlopen { pid });
    };
    let syscall_insn = match syscall_insn {
        Some(a) => a,
        None => {
            find_syscall_in_vdso(pid, maps).ok_or_else(|| LiveLoadError::NoSyscallInstruction {
                pid,
                lib: lib.clone(),
            })?
        }
    };
    Ok(Symbols {
        lib,
        dlopen,
        dlclose,
        dlerror,
        dlsym,
        errno_location,
        syscall_insn,
    })
}

/// The bytes of a mapped file, read as the target sees it.
fn read_mapped_file(pid: u32, m: &MapEntry) -> Result<Vec<u8>, LiveLoadError> {
    let by_map = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    let by_root = format!("/proc/{pid}/root{}", m.path);
    fs::read(&by_map).or_else(|e| {
        log::debug!("live load: {by_map}: {e}; trying {by_root}");
        fs::read(&by_root).map_err(|source| LiveLoadError::Proc {
            pid,
            path: by_root.clone(),
            source,
        })
    })
}

/// Run-time address minus link-time address, from the mapping at the lowest address: it maps
/// the PT_LOAD segment whose page-aligned file offset is the mapping's offset.
fn load_bias(elf: &ElfFile64<Endianness>, first: &MapEntry) -> Option<u64> {
    const PAGE_MASK: u64 = !0xfff;
    let endian = elf.endian();
    let ph = elf.elf_program_headers().iter().find(|ph| {
        ph.p_type(endian) == PT_LOAD && ph.p_offset(endian) & PAGE_MASK == first.offset
    })?;
    Some(first.start.wrapping_sub(ph.p_vaddr(endian) & PAGE_MASK))
}

/// The first `syscall` instruction bytes in an executable segment of the file.
fn find_syscall_in_file(elf: &ElfFile64<Endianness>, data: &[u8], bias: u64) -> Option<u64> {
    let endian = elf.endian();
    elf.elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(endian) == PT_LOAD && ph.p_flags(endian) & PF_X != 0)
        .find_map(|ph| {
            let start = usize::try_from(ph.p_offset(endian)).ok()?;
            let len = usize::try_from(ph.p_filesz(endian)).ok()?;
            let bytes = data.get(start..start.checked_add(len)?)?;
            let at = find_syscall(bytes)?;
            Some(bias.wrapping_add(ph.p_vaddr(endian)) + at as u64)
        })
}

/// Offset of the first `0f 05` in `bytes`.
fn find_syscall(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == [0x0f, 0x05])
}

/// True when `addr..addr+2` lies in an executable mapping of the file with this inode.
fn executable_at(maps: &[MapEntry], inode: u64, addr: u64) -> bool {
    maps.iter()
        .any(|m| m.inode == inode && m.is_exec() && m.start <= addr && addr + 2 <= m.end)
}

/// A `syscall` instruction in the vdso, read from the target's memory.
fn find_syscall_in_vdso(pid: u32, maps: &[MapEntry]) -> Option<u64> {
    let vdso = maps.iter().find(|m| m.path == "[vdso]")?;
    let mem = fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut bytes = vec![0u8; usize::try_from(vdso.end - vdso.start).ok()?];
    mem.read_exact_at(&mut bytes, vdso.start).ok()?;
    find_syscall(&bytes).map(|at| vdso.start + at as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers() {
        assert_eq!(
            provider_rank("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            Some(0)
        );
        assert_eq!(provider_rank("/lib/x86_64-linux-gnu/libc-2.31.so"), Some(0));
        assert_eq!(provider_rank("/lib/ld-musl-x86_64.so.1"), Some(0));
        assert_eq!(provider_rank("/lib/x86_64-linux-gnu/libdl.so.2"), Some(1));
        assert_eq!(
            provider_rank("/lib/x86_64-linux-gnu/libdl-2.31.so"),
            Some(1)
        );
        assert_eq!(provider_rank("/usr/lib/libcuda.so.1"), None);
        assert_eq!(provider_rank("/usr/lib/libcrypt.so.1"), None);
        assert_eq!(provider_rank("[vdso]"), None);
    }

    #[test]
    fn syscall_bytes() {
        assert_eq!(find_syscall(&[0x90, 0x0f, 0x05, 0xc3]), Some(1));
        assert_eq!(find_syscall(&[0x0f, 0x0f, 0x06]), None);
    }

    /// This test process's own libc resolves to the addresses its dynamic linker chose.
    #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
    #[test]
    fn own_libc_symbols_match_the_dynamic_linker() {
        let pid = std::process::id();
        let maps = super::super::procfs::maps(pid).unwrap();
        let syms = resolve(pid, &maps).unwrap();
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no preconditions.
        let real = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"dlopen".as_ptr()) } as u64;
        assert_eq!(syms.dlopen, real, "{syms:?}");
        assert!(syms.lib.contains("libc"), "{syms:?}");
        let mem = fs::File::open("/proc/self/mem").unwrap();
        let mut insn = [0u8; 2];
        mem.read_exact_at(&mut insn, syms.syscall_insn).unwrap();
        assert_eq!(insn, [0x0f, 0x05]);
    }
}
