//! Static tracepoints (USDT, SystemTap's `.note.stapsdt`) of an ELF file: where each probe site
//! is, its semaphore, and how to read its arguments on x86-64. modelprobe attaches to
//! PyTorch's caching allocator's `pytorch:malloc` and `pytorch:free` (`--memory`): tensor-level
//! GPU memory, not only the segments `cudaMalloc` reserves.
//!
//! Written by hand over the `object` crate's sections: a note is a name, a description (site,
//! the `.stapsdt.base` it was linked against, semaphore) and three strings; nothing a crate
//! of its own would save. Argument specs are GNU as operands: `8@%rdi` (a register), `-4@8(%rbp)`
//! (memory at a register plus an offset), `8@$5` (a constant); the size's sign says signed.
use std::path::Path;

use object::{Object, ObjectSection};

use crate::Result;

/// One probe site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsdtProbe {
    /// `pytorch`.
    pub provider: String,
    /// `malloc`.
    pub name: String,
    /// The site's offset in the file (where the uprobe goes).
    pub file_offset: u64,
    /// The semaphore's offset in the file (0: none): the process's copy of it is what a tracer
    /// increments so that the program reaches the site at all.
    pub semaphore_offset: u64,
    /// How to read each argument.
    pub args: Vec<UsdtArg>,
}

/// Where one argument is, at the probe site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsdtArg {
    /// A constant.
    Const(i64),
    /// A register.
    Reg {
        /// Its offset in the kernel's `pt_regs`.
        regs_off: u16,
        /// Bytes read (1, 2, 4, 8), negative when signed.
        size: i8,
    },
    /// Memory at a register plus a displacement.
    Mem {
        /// The register's offset in `pt_regs`.
        regs_off: u16,
        /// Added to the register.
        disp: i64,
        /// Bytes read, negative when signed.
        size: i8,
    },
}

/// `pt_regs` offsets (x86-64) of every register name an operand may use, any width.
fn regs_offset(name: &str) -> Option<u16> {
    const REGS: [(&[&str], u16); 17] = [
        (&["r15", "r15d", "r15w", "r15b"], 0),
        (&["r14", "r14d", "r14w", "r14b"], 8),
        (&["r13", "r13d", "r13w", "r13b"], 16),
        (&["r12", "r12d", "r12w", "r12b"], 24),
        (&["rbp", "ebp", "bp", "bpl"], 32),
        (&["rbx", "ebx", "bx", "bl", "bh"], 40),
        (&["r11", "r11d", "r11w", "r11b"], 48),
        (&["r10", "r10d", "r10w", "r10b"], 56),
        (&["r9", "r9d", "r9w", "r9b"], 64),
        (&["r8", "r8d", "r8w", "r8b"], 72),
        (&["rax", "eax", "ax", "al", "ah"], 80),
        (&["rcx", "ecx", "cx", "cl", "ch"], 88),
        (&["rdx", "edx", "dx", "dl", "dh"], 96),
        (&["rsi", "esi", "si", "sil"], 104),
        (&["rdi", "edi", "di", "dil"], 112),
        (&["rip", "eip"], 128),
        (&["rsp", "esp", "sp", "spl"], 152),
    ];
    REGS.iter()
        .find(|(names, _)| names.contains(&name))
        .map(|&(_, off)| off)
}

/// Parses one operand (`-4@%edx`, `8@-24(%rbp)`, `8@$5`); `None` for what this cannot read
/// (an index register, a high-byte register, a segment).
pub fn parse_arg(spec: &str) -> Option<UsdtArg> {
    let (size, operand) = spec.split_once('@')?;
    let size: i8 = size.parse().ok()?;
    if ![1, 2, 4, 8].contains(&size.unsigned_abs()) {
        return None;
    }
    if let Some(c) = operand.strip_prefix('$') {
        return c.parse().ok().map(UsdtArg::Const);
    }
    if let Some(reg) = operand.strip_prefix('%') {
        if reg.ends_with('h') && reg.len() == 2 {
            return None; // %ah..%dh: bits 8-15
        }
        return Some(UsdtArg::Reg {
            regs_off: regs_offset(reg)?,
            size,
        });
    }
    let (disp, rest) = operand.split_once('(')?;
    let reg = rest.strip_suffix(')')?.strip_prefix('%')?;
    if reg.contains(',') {
        return None;
    }
    let disp = if disp.is_empty() {
        0
    } else {
        disp.parse().ok()?
    };
    Some(UsdtArg::Mem {
        regs_off: regs_offset(reg)?,
        disp,
        size,
    })
}

/// The probes of `path` (none when it has no `.note.stapsdt`).
pub fn probes(path: &Path) -> Result<Vec<UsdtProbe>> {
    let data = super::elf::read(path)?;
    let file = super::elf::parse(path, &data)?;
    let Some(notes) = file.section_by_name(".note.stapsdt") else {
        return Ok(Vec::new());
    };
    let notes = notes.data().unwrap_or(&[]);
    let base = file.section_by_name(".stapsdt.base").map(|s| s.address());
    let to_offset = super::elf::file_offsets(&file);
    let mut out = Vec::new();
    let mut at = 0usize;
    let word = |b: &[u8], i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
    };
    let align4 = |n: usize| (n + 3) & !3;
    while let (Some(namesz), Some(descsz), Some(kind)) =
        (word(notes, at), word(notes, at + 4), word(notes, at + 8))
    {
        let name_at = at + 12;
        let desc_at = name_at + align4(namesz as usize);
        let next = desc_at + align4(descsz as usize);
        let name = notes.get(name_at..name_at + namesz as usize).unwrap_or(&[]);
        let desc = notes.get(desc_at..desc_at + descsz as usize).unwrap_or(&[]);
        at = next;
        if kind != 3 || name != b"stapsdt\0" || desc.len() < 24 {
            continue;
        }
        let u64_at = |i: usize| u64::from_le_bytes(desc[i..i + 8].try_into().unwrap_or([0; 8]));
        let (mut pc, linked_base, mut semaphore) = (u64_at(0), u64_at(8), u64_at(16));
        // Prelinked or moved: the note's addresses shift with `.stapsdt.base`.
        if let Some(base) = base.filter(|&b| linked_base != 0 && b != linked_base) {
            pc = pc.wrapping_add(base.wrapping_sub(linked_base));
            if semaphore != 0 {
                semaphore = semaphore.wrapping_add(base.wrapping_sub(linked_base));
            }
        }
        let mut strings = desc[24..].split(|&b| b == 0).map(String::from_utf8_lossy);
        let (Some(provider), Some(probe), args) = (strings.next(), strings.next(), strings.next())
        else {
            continue;
        };
        let args = args.unwrap_or_default();
        let parsed: Option<Vec<UsdtArg>> = args.split_whitespace().map(parse_arg).collect();
        let (Some(args), Some(file_offset)) = (parsed, to_offset(pc)) else {
            log::debug!(
                "{}: {provider}:{probe}: arguments {args:?} not readable here",
                path.display()
            );
            continue;
        };
        out.push(UsdtProbe {
            provider: provider.into_owned(),
            name: probe.into_owned(),
            file_offset,
            semaphore_offset: if semaphore == 0 {
                0
            } else {
                to_offset(semaphore).unwrap_or(0)
            },
            args,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands_of_every_form_are_read() {
        assert_eq!(
            parse_arg("8@%rax"),
            Some(UsdtArg::Reg {
                regs_off: 80,
                size: 8
            })
        );
        assert_eq!(
            parse_arg("-1@%dl"),
            Some(UsdtArg::Reg {
                regs_off: 96,
                size: -1
            })
        );
        assert_eq!(
            parse_arg("-4@-24(%rbp)"),
            Some(UsdtArg::Mem {
                regs_off: 32,
                disp: -24,
                size: -4
            })
        );
        assert_eq!(
            parse_arg("8@(%r12)"),
            Some(UsdtArg::Mem {
                regs_off: 24,
                disp: 0,
                size: 8
            })
        );
        assert_eq!(parse_arg("8@$5"), Some(UsdtArg::Const(5)));
        assert_eq!(parse_arg("1@%ah"), None);
        assert_eq!(parse_arg("8@8(%rax,%rbx,4)"), None);
        assert_eq!(parse_arg("3@%rax"), None);
    }
}
