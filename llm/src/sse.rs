//! Server-sent events (`text/event-stream`), parsed incrementally: `event:` and `data:`
//! lines, multi-line data joined with `\n`, a blank line ending an event, `:` comments.
//! Only the current line and event are held, so a long stream takes no memory.

/// Longest line kept; the event it belongs to is dropped.
const MAX_LINE: usize = 4 << 20;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// The `event:` field (`message` when absent).
    pub name: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    line: Vec<u8>,
    name: String,
    data: String,
    has_data: bool,
    /// A CR ended the last line: a LF right after it belongs to it.
    after_cr: bool,
    /// Skip to the end of the current line (it was cut by a gap, or is too long).
    skip_line: bool,
    /// Drop the current event (a line of it was lost).
    drop_event: bool,
}

impl Parser {
    /// Feeds the next bytes; each event completed is passed to `emit`.
    pub fn feed(&mut self, bytes: &[u8], emit: &mut impl FnMut(Event)) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.push(&rest[..end]);
                    self.after_cr = rest[end] == b'\r';
                    rest = &rest[end + 1..];
                    self.end_line(emit);
                }
                None => {
                    self.push(rest);
                    rest = &[];
                }
            }
        }
    }

    /// Bytes were lost: the line and event in progress are dropped.
    pub fn gap(&mut self) {
        self.line.clear();
        self.skip_line = true;
        self.drop_event = true;
    }

    /// The stream ended: an event left without its blank line is still delivered.
    pub fn finish(&mut self, emit: &mut impl FnMut(Event)) {
        if !self.line.is_empty() || self.skip_line {
            self.end_line(emit);
        }
        self.end_line(emit);
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.skip_line {
            return;
        }
        if self.line.len() + bytes.len() > MAX_LINE {
            self.line.clear();
            self.skip_line = true;
            self.drop_event = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self, emit: &mut impl FnMut(Event)) {
        if std::mem::take(&mut self.skip_line) {
            return;
        }
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            let name = std::mem::take(&mut self.name);
            let data = std::mem::take(&mut self.data);
            if std::mem::take(&mut self.has_data) && !std::mem::take(&mut self.drop_event) {
                let name = if name.is_empty() {
                    "message".to_owned()
                } else {
                    name
                };
                emit(Event { name, data });
            }
            self.drop_event = false;
            return;
        }
        let line = String::from_utf8_lossy(&line);
        let (field, value) = match line.split_once(':') {
            Some(("", _)) => return, // a comment
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.name = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut |e| out.push(e));
        }
        p.finish(&mut |e| out.push(e));
        out
    }

    fn ev(name: &str, data: &str) -> Event {
        Event {
            name: name.to_owned(),
            data: data.to_owned(),
        }
    }

    const STREAM: &[u8] = b": keep-alive\r\n\r\nevent: message_start\r\ndata: {\"a\":1}\r\n\r\n\
        data: line one\ndata: line two\n\nid: 7\nretry: 10\ndata:no-space\n\n\
        event: ping\n\ndata: \xc3\xa9t\xc3\xa9\r\rdata: [DONE]\n\n";

    #[test]
    fn fields_comments_multiline_data_and_line_endings() {
        let want = vec![
            ev("message_start", "{\"a\":1}"),
            ev("message", "line one\nline two"),
            ev("message", "no-space"),
            ev("message", "été"),
            ev("message", "[DONE]"),
        ];
        assert_eq!(events(&[STREAM]), want);
        for at in 0..=STREAM.len() {
            assert_eq!(
                events(&[&STREAM[..at], &STREAM[at..]]),
                want,
                "split at {at}"
            );
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(events(&bytes), want);
    }

    #[test]
    fn an_event_without_its_blank_line_is_delivered_at_the_end() {
        assert_eq!(events(&[b"data: [DONE]"]), vec![ev("message", "[DONE]")]);
        assert_eq!(events(&[b"data: x\n"]), vec![ev("message", "x")]);
    }

    #[test]
    fn a_gap_drops_the_event_it_cut_and_the_stream_goes_on() {
        let mut p = Parser::default();
        let mut out = Vec::new();
        p.feed(b"data: {\"n\":1}\n\ndata: {\"n\"", &mut |e| out.push(e));
        p.gap();
        p.feed(b":2}\n\ndata: {\"n\":3}\n\n", &mut |e| out.push(e));
        assert_eq!(
            out,
            vec![ev("message", "{\"n\":1}"), ev("message", "{\"n\":3}")]
        );
    }
}
