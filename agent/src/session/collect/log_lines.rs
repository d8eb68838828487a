//! The target's stdout and stderr, captured in the kernel write by write, reassembled into
//! lines per (process, stream), each with its detected level
//! ([`modelprobe_recording::logs::detect_level`]).
use std::collections::HashMap;

use modelprobe_recording::logs::{detect_level, LogLine, Stream};

/// Longest line kept; longer ones are cut (the cut is counted).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Default)]
struct Partial {
    bytes: Vec<u8>,
    time_ns: u64,
    tid: u32,
}

/// Reassembles writes into lines.
#[derive(Debug, Default)]
pub struct LogAssembler {
    partial: HashMap<(u32, u32), Partial>,
    lines: Vec<LogLine>,
    /// Bytes not captured: writes longer than the kernel side copies, or lines over MAX_LINE.
    pub cut_bytes: u64,
}

impl LogAssembler {
    /// Adds the bytes of one write; `requested` is what the write asked to write.
    pub fn write(
        &mut self,
        time_ns: u64,
        pid: u32,
        tid: u32,
        fd: u32,
        bytes: &[u8],
        requested: u64,
    ) {
        self.cut_bytes += requested.saturating_sub(bytes.len() as u64);
        let stream = if fd == 2 {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        let p = self.partial.entry((pid, fd)).or_default();
        let mut rest = bytes;
        while !rest.is_empty() {
            if p.bytes.is_empty() {
                p.time_ns = time_ns;
                p.tid = tid;
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    push_capped(&mut p.bytes, &rest[..i], &mut self.cut_bytes);
                    let bytes = std::mem::take(&mut p.bytes);
                    self.lines
                        .push(make_line(p.time_ns, pid, p.tid, stream, &bytes));
                    rest = &rest[i + 1..];
                }
                None => {
                    push_capped(&mut p.bytes, rest, &mut self.cut_bytes);
                    rest = &[];
                }
            }
        }
    }

    /// Drops the lines before `t` (a flight recorder's history).
    pub fn evict_before(&mut self, t: u64) {
        self.lines.retain(|l| l.time_ns >= t);
    }

    /// The lines completed after the first `n`.
    pub fn lines_since(&self, n: usize) -> &[LogLine] {
        self.lines.get(n..).unwrap_or_default()
    }

    /// Lines completed so far.
    pub fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// Every line, unterminated last lines included, in time order.
    pub fn finish(mut self) -> (Vec<LogLine>, u64) {
        for ((pid, fd), p) in std::mem::take(&mut self.partial) {
            if !p.bytes.is_empty() {
                let stream = if fd == 2 {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                };
                self.lines
                    .push(make_line(p.time_ns, pid, p.tid, stream, &p.bytes));
            }
        }
        self.lines.sort_by_key(|l| l.time_ns);
        (self.lines, self.cut_bytes)
    }
}

fn push_capped(buf: &mut Vec<u8>, bytes: &[u8], cut: &mut u64) {
    let room = MAX_LINE.saturating_sub(buf.len());
    buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    *cut += bytes.len().saturating_sub(room) as u64;
}

fn make_line(time_ns: u64, pid: u32, tid: u32, stream: Stream, bytes: &[u8]) -> LogLine {
    let text = String::from_utf8_lossy(bytes);
    let message = text.strip_suffix('\r').unwrap_or(&text).to_string();
    LogLine {
        time_ns,
        pid,
        tid,
        stream,
        level: detect_level(&message),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelprobe_recording::logs::Level;

    #[test]
    fn reassembles_lines_across_writes_and_streams() {
        let mut a = LogAssembler::default();
        a.write(10, 1, 1, 1, b"hello ", 6);
        a.write(11, 1, 1, 2, b"ERROR: bad\nsecond", 17);
        a.write(12, 1, 2, 1, b"world\nnext\n", 11);
        a.write(13, 1, 1, 1, b"cut", 100);
        let (lines, cut) = a.finish();
        let text: Vec<(&str, Stream, u64)> = lines
            .iter()
            .map(|l| (l.message.as_str(), l.stream, l.time_ns))
            .collect();
        assert_eq!(
            text,
            vec![
                ("hello world", Stream::Stdout, 10),
                ("ERROR: bad", Stream::Stderr, 11),
                ("second", Stream::Stderr, 11),
                ("next", Stream::Stdout, 12),
                ("cut", Stream::Stdout, 13),
            ]
        );
        assert_eq!(lines[1].level, Some(Level::Error));
        assert_eq!(cut, 97);
    }
}
