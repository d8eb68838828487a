//! Plain log files, streamed line by line into items.
//!
//! A line with a timestamp, a JSON object line, or a line with a level starts a new item. Other
//! lines continue the item before them (its text grows by the line) when the file has had
//! timestamps, when they are indented, or when they belong to a Python traceback (from its
//! `Traceback (most recent call last):` header to its exception line); otherwise (a file
//! without timestamps) each is an item of its own. A new item without a timestamp takes the
//! last one seen. Blank lines are skipped. Bytes that are not UTF-8 are replaced, lines longer
//! than [`MAX_LINE`] are cut, and an item keeps at most [`MAX_ITEM_TEXT`] bytes of text (the
//! number of lines left out is appended), so memory stays bounded whatever the file holds.
use std::io::BufRead;

use super::{lineparse::LineParser, Item, ItemKind};

/// Longest line kept; the rest of a longer line is skipped.
pub(crate) const MAX_LINE: usize = 1 << 20;
/// Most text kept for one item (a line and its continuation lines).
pub(crate) const MAX_ITEM_TEXT: usize = 64 * 1024;

/// Turns the lines of one file into items.
pub(crate) struct Assembler {
    parser: LineParser,
    input: usize,
    pending: Option<Item>,
    lines_left_out: u64,
    in_traceback: bool,
    last_t: Option<u64>,
    /// The first timestamp in the file: where the input starts, for relative time bounds.
    pub first_t: Option<u64>,
}

fn traceback_header(line: &str) -> bool {
    line.starts_with("Traceback (most recent call last)")
        || line.starts_with("During handling of the above exception")
        || line.starts_with("The above exception was the direct cause")
}

impl Assembler {
    /// An assembler for input number `input`.
    pub fn new(parser: LineParser, input: usize) -> Self {
        Assembler {
            parser,
            input,
            pending: None,
            lines_left_out: 0,
            in_traceback: false,
            last_t: None,
            first_t: None,
        }
    }

    fn append(&mut self, line: &str) {
        let Some(item) = self.pending.as_mut() else {
            return;
        };
        if item.message.len() + line.len() < MAX_ITEM_TEXT {
            item.message.push('\n');
            item.message.push_str(line);
        } else {
            self.lines_left_out += 1;
        }
        if line.starts_with("Traceback (most recent call last)") {
            self.in_traceback = true;
        }
    }

    fn take_pending(&mut self) -> Option<Item> {
        let mut item = self.pending.take()?;
        if self.lines_left_out > 0 {
            item.message
                .push_str(&format!("\n[{} more lines]", self.lines_left_out));
            self.lines_left_out = 0;
        }
        Some(item)
    }

    /// Takes one line (without its newline); returns the item it completed, if any.
    pub fn line(&mut self, raw: &str) -> Option<Item> {
        let line = raw.trim_end();
        if line.trim_start().is_empty() {
            return None;
        }
        let indented = |s: &str| s.starts_with([' ', '\t']);
        if self.pending.is_some() && indented(line) {
            self.append(line);
            return None;
        }
        if self.first_t.is_none() {
            // A glog header stays an item of its own; it also dates the lines after it.
            self.parser.note_header(line);
        }
        let p = self.parser.parse(line);
        if let Some(item) = self.pending.as_ref().filter(|_| !p.structured) {
            let traceback_line =
                |msg: &str| self.in_traceback || indented(msg) || traceback_header(msg);
            let continues = match p.t {
                // Part of a traceback, or an unleveled line in a file with timestamps.
                None => traceback_line(line) || (p.level.is_none() && item.t.is_some()),
                // vLLM writes each line of a traceback with the prefix of the error line
                // above (`ERROR 11-24 13:04:31 [engine.py:135]   File ...`): same time, level
                // and source, and a traceback's shape.
                Some(t) => {
                    item.t == Some(t)
                        && item.level == p.level
                        && item.name.as_deref() == p.name.as_deref()
                        && traceback_line(&p.message)
                }
            };
            if continues {
                let text = if p.t.is_some() { &p.message } else { line };
                if self.in_traceback && !indented(text) && !traceback_header(text) {
                    // The exception line that ends a traceback.
                    self.in_traceback = false;
                }
                self.append(text);
                return None;
            }
        }
        if let Some(t) = p.t {
            self.last_t = Some(t);
            self.first_t.get_or_insert(t);
        }
        let item = Item {
            input: self.input,
            t: p.t.or(self.last_t),
            level: p.level,
            kind: ItemKind::Log,
            name: p.name.map(|n| n.into_owned()),
            message: p.message.into_owned(),
            duration_ns: None,
            counts_as_error: true,
        };
        let done = self.take_pending();
        self.in_traceback = false;
        self.pending = Some(item);
        done
    }

    /// The last item, at the end of the file.
    pub fn finish(&mut self) -> Option<Item> {
        self.take_pending()
    }
}

/// The first newline in `b`, eight bytes at a time (the zero-byte trick on `b ^ '\n'...`).
fn find_newline(b: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    let mut chunks = b.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(chunk.try_into().expect("chunks of 8")) ^ NL;
        // The lowest flagged byte is the first newline (false flags only come above one).
        let zero = w.wrapping_sub(LO) & !w & HI;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == b'\n')
        .map(|p| at + p)
}

/// Calls `f` with one line's bytes as text (a trailing carriage return removed, invalid UTF-8
/// replaced).
fn emit<E>(bytes: &[u8], f: &mut impl FnMut(&str) -> Result<(), E>) -> Result<(), E> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => f(s),
        Err(_) => f(&String::from_utf8_lossy(bytes)),
    }
}

/// Appends to a partial line, up to [`MAX_LINE`] bytes; false once it is full.
fn push_capped(line: &mut Vec<u8>, bytes: &[u8]) -> bool {
    let room = MAX_LINE.saturating_sub(line.len());
    line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    bytes.len() < room
}

/// Calls `f` with each line of `reader` (newline and carriage return removed, invalid UTF-8
/// replaced, cut at [`MAX_LINE`]); returns how many lines there were. A read error becomes
/// `read_error(e)`. Lines are handed out of the reader's buffer where they lie whole in it,
/// and copied only when they straddle two reads.
pub(crate) fn for_each_line<E>(
    reader: &mut impl BufRead,
    read_error: impl Fn(std::io::Error) -> E,
    mut f: impl FnMut(&str) -> Result<(), E>,
) -> Result<u64, E> {
    let mut partial: Vec<u8> = Vec::new();
    let mut full = false;
    let mut lines = 0;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        if buf.is_empty() {
            break;
        }
        let len = buf.len();
        let mut start = 0;
        while let Some(end) = find_newline(&buf[start..]).map(|p| start + p) {
            let piece = &buf[start..end];
            lines += 1;
            if partial.is_empty() && !full {
                emit(&piece[..piece.len().min(MAX_LINE)], &mut f)?;
            } else {
                if !full {
                    push_capped(&mut partial, piece);
                }
                emit(&partial, &mut f)?;
                partial.clear();
                full = false;
            }
            start = end + 1;
        }
        if !full {
            full = !push_capped(&mut partial, &buf[start..]);
        }
        reader.consume(len);
    }
    if !partial.is_empty() {
        lines += 1;
        emit(&partial, &mut f)?;
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::Level;

    fn items(text: &str) -> Vec<Item> {
        let mut a = Assembler::new(LineParser::new(None), 0);
        let mut out = Vec::new();
        for_each_line(
            &mut text.as_bytes(),
            |e| e,
            |l| {
                out.extend(a.line(l));
                Ok(())
            },
        )
        .unwrap();
        out.extend(a.finish());
        out
    }

    #[test]
    fn a_traceback_is_part_of_its_error_line() {
        let got = items(
            "2024-01-01 12:00:00,000 - app - INFO - start\n\
             2024-01-01 12:00:01,000 - app - ERROR - request failed\n\
             Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\n    f()\n\
             ValueError: bad 42\n\
             \n\
             2024-01-01 12:00:02,000 - app - INFO - next\n",
        );
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].level, Some(Level::Error));
        assert_eq!(
            got[1].message,
            "request failed\nTraceback (most recent call last):\n  File \"a.py\", line 1, in <module>\n    f()\nValueError: bad 42"
        );
        assert_eq!(got[2].message, "next");
    }

    #[test]
    fn untimed_lines_inherit_the_time_and_plain_files_give_one_item_per_line() {
        let got = items("2024-01-01T00:00:00Z start\nWARNING: later\ncontinued\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].t, got[0].t);
        assert_eq!(got[1].message, "later\ncontinued");

        let got = items("one\r\ntwo\nERROR: three\n  indented\nfour");
        let msgs: Vec<&str> = got.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(msgs, ["one", "two", "three\n  indented", "four"]);
        assert!(got.iter().all(|i| i.t.is_none()));

        // Without timestamps, a traceback still ends at its exception line.
        let got = items(
            "ERROR:root:x\nTraceback (most recent call last):\n  File \"a\"\nKeyError: 1\nafter\n",
        );
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].message, "after");
    }

    #[test]
    fn a_vllm_traceback_repeats_its_prefix_and_stays_one_item() {
        let got = items(
            "ERROR 11-24 13:04:31 [engine.py:135] Engine failed\n\
             ERROR 11-24 13:04:31 [engine.py:135] Traceback (most recent call last):\n\
             ERROR 11-24 13:04:31 [engine.py:135]   File \"a.py\", line 48, in f\n\
             ERROR 11-24 13:04:31 [engine.py:135]     g()\n\
             ERROR 11-24 13:04:31 [engine.py:135] RuntimeError: CUDA error\n\
             ERROR 11-24 13:04:31 [engine.py:135] Engine failed again\n\
             ERROR 11-24 13:04:32 [engine.py:135]   indented, but later\n",
        );
        let msgs: Vec<&str> = got.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "Engine failed\nTraceback (most recent call last):\n  File \"a.py\", line 48, in f\n    g()\nRuntimeError: CUDA error",
                "Engine failed again",
                "  indented, but later",
            ]
        );
    }

    #[test]
    fn lines_across_reads_and_over_long_lines() {
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&format!("line {i} {}\r\n", "x".repeat(i % 37)));
        }
        text.push_str(&"y".repeat(MAX_LINE + 10));
        text.push('\n');
        text.push_str("last, unterminated");
        let mut reader = std::io::BufReader::with_capacity(16, text.as_bytes());
        let mut got = Vec::new();
        let n = for_each_line(
            &mut reader,
            |e| e,
            |l| {
                got.push(l.to_string());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(n, 1002);
        assert_eq!(got.len(), 1002);
        assert_eq!(got[999], format!("line 999 {}", "x".repeat(999 % 37)));
        assert_eq!(got[1000].len(), MAX_LINE);
        assert_eq!(got[1001], "last, unterminated");
        for (i, hay) in ["", "\n", "abcdefgh\n", "abcdefghijklmno\npq", "\n\n"]
            .iter()
            .enumerate()
        {
            assert_eq!(find_newline(hay.as_bytes()), hay.find('\n'), "case {i}");
        }
    }

    #[test]
    fn junk_bytes_and_huge_items_are_bounded() {
        let mut bytes = b"2024-01-01T00:00:00Z ERROR bad \xff\xfe bytes\n".to_vec();
        for _ in 0..20_000 {
            bytes.extend_from_slice(b"    continuation line of a very long dump\n");
        }
        let mut a = Assembler::new(LineParser::new(None), 0);
        let mut got = Vec::new();
        let n = for_each_line(
            &mut bytes.as_slice(),
            |e| e,
            |l| {
                got.extend(a.line(l));
                Ok(())
            },
        )
        .unwrap();
        got.extend(a.finish());
        assert_eq!(n, 20_001);
        assert_eq!(got.len(), 1);
        assert!(got[0].message.starts_with("bad \u{fffd}\u{fffd} bytes\n"));
        assert!(got[0].message.len() < MAX_ITEM_TEXT + 100);
        assert!(
            got[0].message.ends_with(" more lines]"),
            "{}",
            &got[0].message[got[0].message.len() - 40..]
        );
    }
}
