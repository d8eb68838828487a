//! Recognising the start of an HTTP/1.x message (a request line or a status line) from
//! its first bytes, and finding one in bytes that follow a gap.

use super::Kind;

/// Longest start line resynchronisation waits for.
const MAX_START_LINE: usize = 8 * 1024;

/// Whether bytes could be the start of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A whole start line.
    Yes,
    /// A prefix of one.
    Maybe,
    /// Not a start line.
    No,
}

/// Whether `buf` begins with a request line (`METHOD target HTTP/1.x` CRLF) or a status line
/// (`HTTP/1.x NNN`).
pub(crate) fn looks_like_start(buf: &[u8], kind: Kind) -> Verdict {
    let mut m = Matcher { buf, at: 0 };
    let matched = match kind {
        Kind::Request => {
            m.run(1, 16, |b| b.is_ascii_uppercase())
                && m.lit(b" ")
                && m.run(1, MAX_START_LINE, |b| b.is_ascii_graphic())
                && m.lit(b" HTTP/1.")
                && m.run(1, 1, |b| b.is_ascii_digit())
                && (m.lit(b"\r\n") || m.lit(b"\n"))
        }
        Kind::Response => {
            m.lit(b"HTTP/1.")
                && m.run(1, 1, |b| b.is_ascii_digit())
                && m.lit(b" ")
                && m.run(3, 3, |b| b.is_ascii_digit())
                && m.run(1, 1, |b| matches!(b, b' ' | b'\r' | b'\n'))
        }
    };
    if matched {
        Verdict::Yes
    } else if m.at >= buf.len() {
        Verdict::Maybe
    } else {
        Verdict::No
    }
}

/// A tiny matcher over a prefix of a buffer: fails at `at == buf.len()` when it ran out.
struct Matcher<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Matcher<'_> {
    fn lit(&mut self, want: &[u8]) -> bool {
        let have = &self.buf[self.at..];
        let n = have.len().min(want.len());
        if have[..n] != want[..n] {
            return false;
        }
        self.at += n;
        n == want.len()
    }

    /// Between `min` and `max` bytes satisfying `ok`, greedily (stops at the first other).
    fn run(&mut self, min: usize, max: usize, ok: impl Fn(u8) -> bool) -> bool {
        let n = self.buf[self.at..]
            .iter()
            .take(max + 1)
            .take_while(|&&b| ok(b))
            .count();
        if n > max {
            // Too long: stop on the extra byte, short of the end.
            self.at += max;
            return false;
        }
        self.at += n;
        self.at < self.buf.len() && n >= min
    }
}

/// Where a message starts in a buffer.
pub(super) enum Found {
    /// Here.
    At(usize),
    /// Maybe here: a start line so far, cut by the end of the buffer.
    Partial(usize),
    /// Nowhere.
    Nothing,
}

/// The first place in `buf` (its start or just after a LF) where a message starts.
pub(super) fn find_start(buf: &[u8], kind: Kind) -> Found {
    let mut at = 0;
    loop {
        match looks_like_start(&buf[at..], kind) {
            Verdict::Yes => return Found::At(at),
            Verdict::Maybe if buf.len() - at <= MAX_START_LINE => return Found::Partial(at),
            Verdict::Maybe | Verdict::No => {}
        }
        match buf[at..].iter().position(|&b| b == b'\n') {
            Some(nl) => at += nl + 1,
            None => return Found::Nothing,
        }
    }
}
