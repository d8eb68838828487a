//! One ELF object's CFI (`.eh_frame`, else `.debug_frame`) compiled into the sorted
//! [`UnwindRow`]s the BPF walk binary-searches.
//!
//! Each FDE's rows become one row per address where the CFA rule or the place of the saved
//! `%rbp` changes, and a [`cfa::NONE`] row where the FDE ends (so a gap between functions is
//! not unwound with its neighbour's rule). Rows that repeat their predecessor's rules are
//! dropped. The linker's PLT expression becomes [`cfa::PLT`], a signal trampoline's FDE
//! [`cfa::SIGNAL`], an undefined return address [`cfa::END`]; any other expression
//! [`cfa::UNSUPPORTED`].
use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, LittleEndian, Register, RegisterRule,
    UnwindContext, UnwindSection,
};
use modelprobe_common::unwind::{cfa, rbp, UnwindRow};
use object::{Object, ObjectSection, ObjectSegment};

/// x86-64 DWARF register numbers.
const RBP: Register = Register(6);
const RSP: Register = Register(7);
const RA: Register = Register(16);

/// `DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_lit<N>; DW_OP_ge; DW_OP_lit3;
/// DW_OP_shl; DW_OP_plus`: the CFA of a lazy-binding PLT entry, with N at index 6.
const PLT_EXPR: [u8; 11] = [
    0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
];
const DW_OP_LIT0: u8 = 0x30;

/// Why an object has no table.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Not an ELF object the parser reads.
    #[error("not a readable ELF object: {0}")]
    Elf(#[from] object::Error),
    /// Neither `.eh_frame` nor `.debug_frame`.
    #[error("no .eh_frame or .debug_frame")]
    NoCfi,
    /// The CFI does not parse.
    #[error("malformed CFI: {0}")]
    Cfi(#[from] gimli::Error),
    /// Code above 4 GiB of virtual address (rows hold 32-bit addresses).
    #[error("code above 4 GiB of virtual address")]
    AddressTooHigh,
}

/// An object's compiled table and what places it in a process.
#[derive(Debug, Clone, Default)]
pub struct ObjectTable {
    /// Rows sorted by `pc`, no two with the same `pc`.
    pub rows: Vec<UnwindRow>,
    /// `(p_offset, p_vaddr, p_filesz)` of each executable loadable segment, to turn an
    /// executable mapping's file offset into a load bias.
    pub segments: Vec<(u64, u64, u64)>,
}

impl ObjectTable {
    /// Runtime address minus virtual address for an executable mapping of file offset
    /// `offset` at `start`; `None` when no executable segment holds that offset. The mapping
    /// starts at the segment's offset rounded down to a page (lld lays segments out at
    /// offsets that are not page-aligned).
    pub fn bias(&self, start: u64, offset: u64) -> Option<u64> {
        bias(&self.segments, start, offset)
    }
}

/// [`ObjectTable::bias`] over an object's executable `segments`.
pub fn bias(segments: &[(u64, u64, u64)], start: u64, offset: u64) -> Option<u64> {
    let &(p_offset, p_vaddr, _) = segments
        .iter()
        .find(|&&(o, _, size)| offset >= o & !0xfff && offset < o + size.max(1))?;
    Some(
        start
            .wrapping_sub(offset)
            .wrapping_add(p_offset)
            .wrapping_sub(p_vaddr),
    )
}

/// Compiles the CFI of the ELF object in `data`.
pub fn compile(data: &[u8]) -> Result<ObjectTable, CompileError> {
    let file = object::File::parse(data)?;
    let segments = file
        .segments()
        .filter(|s| {
            matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0)
        })
        .map(|s| {
            let (offset, size) = s.file_range();
            (offset, s.address(), size)
        })
        .collect();
    let mut rows = Vec::new();
    if let Some(section) = file.section_by_name(".eh_frame") {
        let bytes = section.uncompressed_data()?;
        let mut bases = BaseAddresses::default().set_eh_frame(section.address());
        if let Some(text) = file.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        if let Some(got) = file.section_by_name(".got") {
            bases = bases.set_got(got.address());
        }
        let eh = EhFrame::new(&bytes, LittleEndian);
        collect(&eh, &bases, &mut rows)?;
    } else if let Some(section) = file.section_by_name(".debug_frame") {
        let bytes = section.uncompressed_data()?;
        let debug = DebugFrame::new(&bytes, LittleEndian);
        collect(&debug, &BaseAddresses::default(), &mut rows)?;
    } else {
        return Err(CompileError::NoCfi);
    }
    Ok(ObjectTable {
        rows: finish(rows)?,
        segments,
    })
}

/// A row before sorting: its address, whether it only marks an FDE's end, and its rules.
type Pending = (u64, bool, UnwindRow);

/// Every FDE's rows, unsorted.
fn collect<'a, S>(
    section: &S,
    bases: &BaseAddresses,
    out: &mut Vec<Pending>,
) -> Result<(), CompileError>
where
    S: UnwindSection<gimli::EndianSlice<'a, LittleEndian>>,
{
    let mut ctx = Box::new(UnwindContext::new());
    let mut entries = section.entries(bases);
    while let Some(entry) = entries.next()? {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        // A bad FDE costs its function, not the object.
        let Ok(fde) = partial.parse(S::cie_from_offset) else {
            continue;
        };
        if fde.len() == 0 {
            continue;
        }
        out.push((fde.end_address(), true, end_marker()));
        if fde.is_signal_trampoline() {
            let row = UnwindRow {
                cfa: cfa::SIGNAL,
                ..UnwindRow::default()
            };
            out.push((fde.initial_address(), false, row));
            continue;
        }
        let Ok(mut table) = fde.rows(section, bases, &mut ctx) else {
            continue;
        };
        while let Ok(Some(r)) = table.next_row() {
            out.push((r.start_address(), false, convert(section, r)));
        }
    }
    Ok(())
}

fn end_marker() -> UnwindRow {
    UnwindRow {
        cfa: cfa::NONE,
        ..UnwindRow::default()
    }
}

/// One gimli row as an [`UnwindRow`].
fn convert<'a, S>(section: &S, r: &gimli::UnwindTableRow<usize, gimli::StoreOnHeap>) -> UnwindRow
where
    S: UnwindSection<gimli::EndianSlice<'a, LittleEndian>>,
{
    let mut row = UnwindRow::default();
    if matches!(r.register(RA), Some(RegisterRule::Undefined)) {
        row.cfa = cfa::END;
        return row;
    }
    match r.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            match (*register, i16::try_from(*offset)) {
                (RSP, Ok(off)) => (row.cfa, row.cfa_offset) = (cfa::RSP, off),
                (RBP, Ok(off)) => (row.cfa, row.cfa_offset) = (cfa::RBP, off),
                _ => row.cfa = cfa::UNSUPPORTED,
            }
        }
        CfaRule::Expression(expr) => {
            row.cfa = cfa::UNSUPPORTED;
            if let Ok(e) = expr.get(section) {
                let bytes = e.0.slice();
                if bytes.len() == PLT_EXPR.len()
                    && bytes[..6] == PLT_EXPR[..6]
                    && bytes[7..] == PLT_EXPR[7..]
                    && (DW_OP_LIT0..=DW_OP_LIT0 + 15).contains(&bytes[6])
                {
                    row.cfa = cfa::PLT;
                    row.plt_threshold = bytes[6] - DW_OP_LIT0;
                }
            }
        }
    }
    if let Some(RegisterRule::Offset(off)) = r.register(RBP) {
        if let Ok(off) = i16::try_from(off) {
            row.rbp = rbp::AT_CFA;
            row.rbp_offset = off;
        }
    }
    row
}

/// Sorts, lets a function's first row win over its neighbour's end marker at the same
/// address, and drops rows that change nothing.
fn finish(mut rows: Vec<Pending>) -> Result<Vec<UnwindRow>, CompileError> {
    // End markers first at one address, so the real row after them wins.
    rows.sort_by_key(|&(pc, is_end, _)| (pc, !is_end));
    let mut out: Vec<UnwindRow> = Vec::with_capacity(rows.len());
    for (pc, _, mut row) in rows {
        row.pc = u32::try_from(pc).map_err(|_| CompileError::AddressTooHigh)?;
        match out.last_mut() {
            Some(last) if last.pc == row.pc => *last = row,
            Some(last) if same_rules(last, &row) => {}
            _ => out.push(row),
        }
    }
    Ok(out)
}

fn same_rules(a: &UnwindRow, b: &UnwindRow) -> bool {
    (a.cfa, a.cfa_offset, a.rbp, a.rbp_offset, a.plt_threshold)
        == (b.cfa, b.cfa_offset, b.rbp, b.rbp_offset, b.plt_threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(path: &str) -> ObjectTable {
        let data = std::fs::read(path).unwrap();
        compile(&data).unwrap()
    }

    #[test]
    fn own_executable_has_sorted_rows_covering_its_code() {
        let t = rows_of("/proc/self/exe");
        assert!(t.rows.len() > 1000, "{} rows", t.rows.len());
        assert!(t.rows.windows(2).all(|w| w[0].pc < w[1].pc));
        // This very function is covered by a CFA rule on %rsp or %rbp.
        let here = own_executable_has_sorted_rows_covering_its_code as *const () as u64;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let (start, offset) = maps
            .lines()
            .filter(|l| l.ends_with(exe.to_str().unwrap()))
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let (range, perms, off) = (f.next()?, f.next()?, f.next()?);
                let (s, e) = range.split_once('-')?;
                let (s, e) = (
                    u64::from_str_radix(s, 16).ok()?,
                    u64::from_str_radix(e, 16).ok()?,
                );
                (perms.contains('x') && (s..e).contains(&here))
                    .then(|| (s, u64::from_str_radix(off, 16).unwrap()))
            })
            .unwrap();
        let vaddr = here - t.bias(start, offset).unwrap();
        let at = t.rows.partition_point(|r| r.pc as u64 <= vaddr) - 1;
        assert!(
            matches!(t.rows[at].cfa, cfa::RSP | cfa::RBP),
            "{:?}",
            t.rows[at]
        );
    }

    #[test]
    fn glibc_has_plt_signal_and_outermost_rows() {
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("glibc");
        let t = rows_of(libc);
        let has = |k| t.rows.iter().any(|r| r.cfa == k);
        assert!(has(cfa::SIGNAL), "__restore_rt's FDE is a signal frame");
        assert!(
            has(cfa::END),
            "clone3's child start has an undefined return address"
        );
        assert!(has(cfa::PLT), "the PLT expression is recognized");
        assert!(t.rows.iter().any(|r| r.rbp == rbp::AT_CFA));
    }

    #[test]
    fn rejects_what_is_not_elf() {
        assert!(matches!(compile(b"not an elf"), Err(CompileError::Elf(_))));
    }
}
