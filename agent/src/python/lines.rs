//! A code object's line table: the source line of a bytecode offset, for each encoding
//! CPython has used since 3.9 (see [`LineTable`]). These follow CPython's own readers
//! (`Objects/codeobject.c`: `PyCode_Addr2Line` and the location-table iterator).
use super::layout::LineTable;

/// The line of the instruction at byte `offset` of the bytecode, for a code object whose
/// first line is `first` and whose table is `table`; `None` where the table says the
/// instruction has no line (or the offset is past its end).
pub fn line_at(kind: LineTable, table: &[u8], first: i32, offset: u32) -> Option<u32> {
    // A frame that has not run an instruction yet (3.9's `f_lasti` of -1, a pointer just
    // before the bytecode): CPython says its first line.
    if (offset as i32) < 0 {
        return u32::try_from(first).ok().filter(|&l| l > 0);
    }
    let line = match kind {
        LineTable::Lnotab => lnotab(table, first, offset),
        LineTable::Linetable310 => linetable_310(table, first, offset)?,
        LineTable::Locations => locations(table, first, offset)?,
    };
    u32::try_from(line).ok().filter(|&l| l > 0)
}

/// 3.9: (address increment, signed line increment) pairs; the line of the last pair whose
/// address is at or below `offset`.
fn lnotab(table: &[u8], first: i32, offset: u32) -> i32 {
    let mut line = first;
    let mut addr = 0u32;
    for pair in table.chunks_exact(2) {
        addr += pair[0] as u32;
        if addr > offset {
            break;
        }
        line += pair[1] as i8 as i32;
    }
    line
}

/// 3.10: each pair is a range of `pair[0]` bytes whose line is the running line plus
/// `pair[1]`, where -128 means the range has no line.
fn linetable_310(table: &[u8], first: i32, offset: u32) -> Option<i32> {
    let mut line = first;
    let mut start = 0u32;
    for pair in table.chunks_exact(2) {
        let delta = pair[1] as i8;
        if delta != -128 {
            line += delta as i32;
        }
        let end = start + pair[0] as u32;
        if offset < end {
            return (delta != -128).then_some(line);
        }
        start = end;
    }
    None
}

/// 3.11 and later: entries of a header byte (bit 7 set; bits 3-6 the code; bits 0-2 the
/// length in code units minus one) and the code's operands.
fn locations(table: &[u8], first: i32, offset: u32) -> Option<i32> {
    let mut r = Reader { table, at: 0 };
    let mut line = first;
    let mut start = 0u32;
    while let Some(header) = r.byte() {
        if header & 0x80 == 0 {
            return None;
        }
        let code = (header >> 3) & 15;
        let end = start + 2 * ((header & 7) as u32 + 1);
        let this_line = match code {
            // No location.
            15 => None,
            // Long form: line delta, end line delta, column, end column.
            14 => {
                line += r.svarint()?;
                r.varint()?;
                r.varint()?;
                r.varint()?;
                Some(line)
            }
            // No column: line delta only.
            13 => {
                line += r.svarint()?;
                Some(line)
            }
            // One-line forms: the line delta is the code minus 10; two column bytes.
            10..=12 => {
                line += code as i32 - 10;
                r.byte()?;
                r.byte()?;
                Some(line)
            }
            // Short forms: same line, one column byte.
            _ => {
                r.byte()?;
                Some(line)
            }
        };
        if offset < end {
            return this_line;
        }
        start = end;
    }
    None
}

struct Reader<'a> {
    table: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.table.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    /// Six bits a byte, least significant first, bit 6 set while more follow.
    fn varint(&mut self) -> Option<u32> {
        let mut b = self.byte()?;
        let mut value = (b & 63) as u32;
        let mut shift = 0;
        while b & 64 != 0 {
            b = self.byte()?;
            shift += 6;
            if shift > 30 {
                return None;
            }
            value |= ((b & 63) as u32) << shift;
        }
        Some(value)
    }

    /// A varint whose low bit is the sign.
    fn svarint(&mut self) -> Option<i32> {
        let v = self.varint()?;
        Some(if v & 1 != 0 {
            -((v >> 1) as i32)
        } else {
            (v >> 1) as i32
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lnotab_steps_lines_at_addresses() {
        // Line 10 from 0, 11 from byte 6, 13 from byte 10.
        let t = [6, 1, 4, 2];
        assert_eq!(line_at(LineTable::Lnotab, &t, 10, 0), Some(10));
        assert_eq!(line_at(LineTable::Lnotab, &t, 10, 5), Some(10));
        assert_eq!(line_at(LineTable::Lnotab, &t, 10, 6), Some(11));
        assert_eq!(line_at(LineTable::Lnotab, &t, 10, 12), Some(13));
        // Not started yet: the first line.
        assert_eq!(line_at(LineTable::Lnotab, &t, 10, u32::MAX), Some(10));
    }

    #[test]
    fn linetable_310_ranges_and_no_line() {
        // Bytes 0-3 on line 5 (+1 from 4), 4-5 without a line, 6-9 on line 7 (+2).
        let t = [4, 1, 2, 0x80, 4, 2];
        assert_eq!(line_at(LineTable::Linetable310, &t, 4, 0), Some(5));
        assert_eq!(line_at(LineTable::Linetable310, &t, 4, 3), Some(5));
        assert_eq!(line_at(LineTable::Linetable310, &t, 4, 4), None);
        assert_eq!(line_at(LineTable::Linetable310, &t, 4, 8), Some(7));
        assert_eq!(line_at(LineTable::Linetable310, &t, 4, 10), None);
    }

    #[test]
    fn locations_every_form() {
        let t = [
            // code 13 (no column), 1 unit, line +1 (svarint 2).
            0x80 | 13 << 3,
            2,
            // code 0 (short form), 2 units, one column byte.
            0x80 | 1,
            0x05,
            // code 11 (one line, +1), 1 unit, two column bytes.
            0x80 | 11 << 3,
            1,
            9,
            // code 14 (long), 1 unit, line -2 (svarint 5), end line, column, end column.
            0x80 | 14 << 3,
            5,
            0,
            1,
            1,
            // code 15 (none), 1 unit.
            0x80 | 15 << 3,
            // code 14 with a two-byte varint: line +100 (svarint 200 = 8 + 64 | 3 << 6).
            0x80 | 14 << 3,
            64 | 8,
            3,
            0,
            0,
            0,
        ];
        let at = |o| line_at(LineTable::Locations, &t, 20, o);
        assert_eq!(at(0), Some(21));
        assert_eq!(at(2), Some(21));
        assert_eq!(at(4), Some(21));
        assert_eq!(at(6), Some(22));
        assert_eq!(at(8), Some(20));
        assert_eq!(at(10), None);
        assert_eq!(at(12), Some(120));
        assert_eq!(at(14), None);
    }
}
