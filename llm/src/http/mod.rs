//! HTTP/1.x message framing of one direction of a connection.
//!
//! A [`Parser`] is fed the bytes of one direction in order, split anywhere, and tells a
//! [`Handler`] about each message: its head, its body bytes (with the transfer coding
//! removed, the content coding kept) and its end. The handler decides how a body is framed
//! ([`Framing`]), since a response's framing depends on its request. Bytes that were not
//! captured ([`Parser::gap`]) are skipped when they lie inside a body of known length;
//! anywhere else the framing is lost, and the parser resynchronises at the next thing that
//! looks like the start of a message. Bytes of a `Content-Length` body that were skipped on
//! purpose ([`Parser::skip`]) advance the framing without the handler hearing of them.

mod start;

use start::{find_start, Found};
pub(crate) use start::{looks_like_start, Verdict};

/// Longest message head kept; a longer one is dropped as unparseable.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4 * 1024;

/// Which messages a parser reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Requests (`METHOD target HTTP/1.x`).
    Request,
    /// Responses (`HTTP/1.x NNN reason`).
    Response,
}

/// A message's start line and headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Head {
    /// The request method, empty for a response.
    pub method: String,
    /// The request target, empty for a response.
    pub target: String,
    /// The response status, 0 for a request.
    pub status: u16,
    /// Headers in order, names lowercased.
    headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of a header (name lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// How the body of this message is framed by its own headers, when it has one.
    pub fn body_framing(&self) -> Framing {
        let chunked = self.header("transfer-encoding").is_some_and(|te| {
            te.rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        });
        if chunked {
            return Framing::Chunked;
        }
        match self.header("content-length") {
            Some(len) => match len.trim().parse() {
                Ok(0) => Framing::Empty,
                Ok(n) => Framing::Length(n),
                Err(_) => Framing::Lost,
            },
            None if self.status == 0 => Framing::Empty,
            None => Framing::UntilClose,
        }
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
    /// The framing cannot be known (a bad `Content-Length`).
    Lost,
}

/// What a parser reports, message by message.
pub(crate) trait Handler {
    /// A message's head was read: `started_ns` is when its first byte was, `now_ns` when its
    /// last. Returns how its body is framed.
    fn head(&mut self, head: Head, started_ns: u64, now_ns: u64) -> Framing;
    /// Body bytes of the current message, transfer coding removed.
    fn body(&mut self, bytes: &[u8], now_ns: u64);
    /// `missing` body bytes of the current message were not captured.
    fn body_gap(&mut self, missing: u64);
    /// The current message ended.
    fn end(&mut self, now_ns: u64);
    /// Framing was lost: in the current message when `head_seen`, else before the head of
    /// the next one (which is lost with it).
    fn lost(&mut self, head_seen: bool, now_ns: u64);
}

/// Where the parser is.
#[derive(Debug)]
enum State {
    /// Reading a head (empty `buf`: between messages).
    Head { buf: Vec<u8>, started_ns: u64 },
    /// `Content-Length` body bytes left.
    Length(u64),
    /// A chunked body.
    Chunked(Chunk),
    /// A body read until the connection closes.
    UntilClose,
    /// Framing lost: looking for the start of a message.
    Resync(Vec<u8>),
}

/// Where a chunked body is.
#[derive(Debug)]
enum Chunk {
    /// Reading a chunk-size line.
    Size(Vec<u8>),
    /// Chunk data bytes left.
    Data(u64),
    /// Reading the CRLF after chunk data (`true` once the CR was seen).
    DataEnd(bool),
    /// Reading trailer lines, up to the empty one.
    Trailer(Vec<u8>),
}

/// The framing state of one direction.
#[derive(Debug)]
pub(crate) struct Parser {
    kind: Kind,
    state: State,
    /// Heads read so far: the number of the current message.
    heads: u64,
}

/// A body delimited by `Content-Length`, being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LengthBody {
    /// Which message of the stream it belongs to (heads read so far).
    pub message: u64,
    /// Its bytes still to come.
    pub left: u64,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new(kind: Kind) -> Parser {
        Parser {
            kind,
            state: State::Head {
                buf: Vec::new(),
                started_ns: 0,
            },
            heads: 0,
        }
    }

    /// The `Content-Length` body being read, if that is where the parser is.
    pub fn length_body(&self) -> Option<LengthBody> {
        match self.state {
            State::Length(left) => Some(LengthBody {
                message: self.heads,
                left,
            }),
            _ => None,
        }
    }

    /// `n` bytes of the current `Content-Length` body went by unseen, on purpose: the framing
    /// advances past them (ending the message at its last byte) and the handler is not told of
    /// them. Returns how many of the `n` lay outside such a body (none when all is well).
    pub fn skip(&mut self, n: u64, now_ns: u64, h: &mut impl Handler) -> u64 {
        let State::Length(left) = &mut self.state else {
            return n;
        };
        let skipped = n.min(*left);
        *left -= skipped;
        if *left == 0 {
            self.end(now_ns, h);
        }
        n - skipped
    }

    /// The next captured bytes.
    pub fn feed(&mut self, mut data: &[u8], now_ns: u64, h: &mut impl Handler) {
        while !data.is_empty() {
            let used = match &mut self.state {
                State::Head { buf, started_ns } => {
                    if buf.is_empty() {
                        // Blank lines between messages are ignored.
                        let blank = data.iter().take_while(|b| matches!(b, b'\r' | b'\n'));
                        let skip = blank.count();
                        if skip > 0 {
                            data = &data[skip..];
                            continue;
                        }
                        *started_ns = now_ns;
                    }
                    let (used, head) = read_head(buf, data);
                    if looks_like_start(buf, self.kind) == Verdict::No {
                        // Not a message: look for one after its first byte.
                        let rest = buf.split_off(1);
                        self.lose(false, now_ns, h);
                        self.feed(&rest, now_ns, h);
                    } else if let HeadRead::Done = head {
                        let head_bytes = std::mem::take(buf);
                        let started = *started_ns;
                        self.after_head(&head_bytes, started, now_ns, h);
                    } else if buf.len() > MAX_HEAD {
                        self.lose(false, now_ns, h);
                    }
                    used
                }
                State::Length(left) => {
                    let take = take(*left, data);
                    h.body(&data[..take], now_ns);
                    *left -= take as u64;
                    if *left == 0 {
                        self.end(now_ns, h);
                    }
                    take
                }
                State::UntilClose => {
                    h.body(data, now_ns);
                    data.len()
                }
                State::Chunked(chunk) => match chunk {
                    Chunk::Size(line) => {
                        let (used, done) = read_line(line, data);
                        if done {
                            match chunk_size(line) {
                                Some(0) => *chunk = Chunk::Trailer(Vec::new()),
                                Some(n) => *chunk = Chunk::Data(n),
                                None => self.lose(true, now_ns, h),
                            }
                        } else if line.len() > MAX_LINE {
                            self.lose(true, now_ns, h);
                        }
                        used
                    }
                    Chunk::Data(left) => {
                        let take = take(*left, data);
                        h.body(&data[..take], now_ns);
                        *left -= take as u64;
                        if *left == 0 {
                            *chunk = Chunk::DataEnd(false);
                        }
                        take
                    }
                    Chunk::DataEnd(cr) => match data[0] {
                        b'\r' if !*cr => {
                            *cr = true;
                            1
                        }
                        b'\n' => {
                            *chunk = Chunk::Size(Vec::new());
                            1
                        }
                        _ => {
                            self.lose(true, now_ns, h);
                            0
                        }
                    },
                    Chunk::Trailer(line) => {
                        let (used, done) = read_line(line, data);
                        if done && trim_cr(line).is_empty() {
                            self.end(now_ns, h);
                        } else if done {
                            line.clear();
                        } else if line.len() > MAX_LINE {
                            self.lose(true, now_ns, h);
                        }
                        used
                    }
                },
                State::Resync(buf) => {
                    buf.extend_from_slice(data);
                    match find_start(buf, self.kind) {
                        Found::At(at) => {
                            let rest = buf.split_off(at);
                            self.state = State::Head {
                                buf: Vec::new(),
                                started_ns: now_ns,
                            };
                            self.feed(&rest, now_ns, h);
                        }
                        Found::Partial(at) => {
                            buf.drain(..at);
                        }
                        Found::Nothing => buf.clear(),
                    }
                    data.len()
                }
            };
            data = &data[used..];
        }
    }

    /// `missing` bytes were not captured at this point.
    pub fn gap(&mut self, missing: u64, now_ns: u64, h: &mut impl Handler) {
        match &mut self.state {
            State::Length(left) | State::Chunked(Chunk::Data(left)) => {
                let skipped = missing.min(*left);
                h.body_gap(skipped);
                *left -= skipped;
                if *left == 0 {
                    match self.state {
                        State::Length(_) => self.end(now_ns, h),
                        _ => self.state = State::Chunked(Chunk::DataEnd(false)),
                    }
                }
                if missing > skipped {
                    // The rest fell on framing bytes.
                    let head_seen = !matches!(self.state, State::Head { .. });
                    self.lose(head_seen, now_ns, h);
                }
            }
            State::UntilClose => h.body_gap(missing),
            State::Head { .. } => self.lose(false, now_ns, h),
            State::Chunked(_) => self.lose(true, now_ns, h),
            State::Resync(buf) => buf.clear(),
        }
    }

    /// The connection closed: a body read until close ends here.
    pub fn close(&mut self, now_ns: u64, h: &mut impl Handler) {
        if matches!(self.state, State::UntilClose) {
            self.end(now_ns, h);
        }
    }

    /// Frames the body that follows a head.
    fn after_head(&mut self, bytes: &[u8], started_ns: u64, now_ns: u64, h: &mut impl Handler) {
        let Some(head) = parse_head(bytes, self.kind) else {
            self.lose(false, now_ns, h);
            return;
        };
        self.heads += 1;
        match h.head(head, started_ns, now_ns) {
            Framing::Empty => self.end(now_ns, h),
            Framing::Length(n) => self.state = State::Length(n),
            Framing::Chunked => self.state = State::Chunked(Chunk::Size(Vec::new())),
            Framing::UntilClose => self.state = State::UntilClose,
            Framing::Lost => self.lose(true, now_ns, h),
        }
    }

    fn end(&mut self, now_ns: u64, h: &mut impl Handler) {
        self.state = State::Head {
            buf: Vec::new(),
            started_ns: 0,
        };
        h.end(now_ns);
    }

    fn lose(&mut self, head_seen: bool, now_ns: u64, h: &mut impl Handler) {
        self.state = State::Resync(Vec::new());
        h.lost(head_seen, now_ns);
    }
}

/// How many of `data` a body with `left` bytes to go takes.
fn take(left: u64, data: &[u8]) -> usize {
    usize::try_from(left).map_or(data.len(), |left| left.min(data.len()))
}

enum HeadRead {
    Done,
    More,
}

/// Appends `data` to a head up to its blank line; returns the bytes used.
fn read_head(buf: &mut Vec<u8>, data: &[u8]) -> (usize, HeadRead) {
    let from = buf.len();
    let room = (MAX_HEAD + 1).saturating_sub(from).min(data.len());
    buf.extend_from_slice(&data[..room]);
    let search = from.saturating_sub(3);
    let mut i = search;
    while let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + nl + 1;
        let end = match buf.get(at) {
            Some(b'\n') => Some(at + 1),
            Some(b'\r') if buf.get(at + 1) == Some(&b'\n') => Some(at + 2),
            _ => None,
        };
        if let Some(end) = end.filter(|&end| end > from) {
            buf.truncate(end);
            return (end - from, HeadRead::Done);
        }
        i = at;
    }
    (room, HeadRead::More)
}

/// Appends `data` to `line` up to and including a LF; returns bytes used and whether the
/// line is complete.
fn read_line(line: &mut Vec<u8>, data: &[u8]) -> (usize, bool) {
    match data.iter().position(|&b| b == b'\n') {
        Some(nl) => {
            line.extend_from_slice(&data[..nl]);
            (nl + 1, true)
        }
        None => {
            let room = (MAX_LINE + 1).saturating_sub(line.len()).min(data.len());
            line.extend_from_slice(&data[..room]);
            (data.len(), false)
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The size of a chunk-size line (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = std::str::from_utf8(trim_cr(line)).ok()?;
    let size = line.split(';').next()?.trim();
    u64::from_str_radix(size, 16).ok()
}

/// Parses a head, blank line included.
fn parse_head(bytes: &[u8], kind: Kind) -> Option<Head> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines();
    let start = lines.next()?.trim_end_matches('\r');
    let mut head = Head {
        method: String::new(),
        target: String::new(),
        status: 0,
        headers: Vec::new(),
    };
    let mut parts = start.splitn(3, ' ');
    match kind {
        Kind::Request => {
            head.method = parts.next()?.to_owned();
            head.target = parts.next()?.to_owned();
            parts.next()?.starts_with("HTTP/1.").then_some(())?;
        }
        Kind::Response => {
            parts.next()?.starts_with("HTTP/1.").then_some(())?;
            head.status = parts.next()?.parse().ok()?;
        }
    }
    for line in lines {
        let line = line.trim_end_matches('\r');
        if let Some((name, value)) = line.split_once(':') {
            head.headers
                .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    Some(head)
}

#[cfg(test)]
mod tests;
