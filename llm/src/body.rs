//! A message body on its way to being read: content decoding, then either a bounded JSON
//! buffer or a server-sent-event stream.
//!
//! A JSON body is kept whole up to [`JSON_CAP`]; beyond, only its head and its last
//! [`TAIL_CAP`] bytes are. When it cannot be parsed (too big, or cut by a gap), the fields that
//! matter are salvaged from the fragments kept ([`JsonBuf::salvage`]).

use std::sync::LazyLock;

use regex::bytes::Regex;
use serde_json::{Map, Value};

use crate::{decode::Decoder, sse};

/// Most bytes of a JSON body kept to parse.
pub(crate) const JSON_CAP: usize = 8 << 20;
/// Bytes kept of the end of a body over [`JSON_CAP`].
pub(crate) const TAIL_CAP: usize = 64 << 10;

/// The bytes of a JSON body, bounded.
#[derive(Debug, Default)]
pub(crate) struct JsonBuf {
    len: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
    overflowed: bool,
    gapped: bool,
}

impl JsonBuf {
    /// Appends decoded bytes.
    pub fn push(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if !self.overflowed {
            let room = (JSON_CAP - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..room]);
            bytes = &bytes[room..];
            self.overflowed = !bytes.is_empty();
        }
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * TAIL_CAP {
            self.tail.drain(..self.tail.len() - TAIL_CAP);
        }
    }

    /// Bytes were lost here.
    pub fn gap(&mut self) {
        self.gapped = true;
        // Keeps fragments apart for the salvage scan (not a byte of the body).
        self.push(b"\0");
        self.len -= 1;
    }

    /// The body's first bytes (all of it when it fit).
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Bytes pushed.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the body is all here.
    pub fn is_whole(&self) -> bool {
        !self.gapped && !self.overflowed
    }

    /// The body parsed, when it is all here and valid JSON.
    pub fn value(&self) -> Option<Value> {
        if !self.is_whole() {
            return None;
        }
        serde_json::from_slice(&self.head).ok()
    }

    /// The body parsed when it can be, else an object of what could be salvaged from its
    /// fragments: top-level-looking `model`, `id`, `stream`, `max_tokens` (and its aliases),
    /// `temperature`, and the last `usage` object.
    pub fn value_or_salvage(&self) -> Value {
        self.value().unwrap_or_else(|| self.salvage())
    }

    fn salvage(&self) -> Value {
        static STRINGS: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r#""(model|id)"\s*:\s*("(?:[^"\\]|\\.)*")"#).unwrap());
        static NUMBERS: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(
                r#""(stream|max_tokens|max_completion_tokens|max_output_tokens|temperature)"\s*:\s*(true|false|-?[0-9][0-9.eE+-]*)"#,
            )
            .unwrap()
        });
        static USAGE: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r#""usage"\s*:\s*\{"#).unwrap());
        let mut out = Map::new();
        for part in [&self.head[..], &self.tail[..]] {
            for c in STRINGS
                .captures_iter(part)
                .chain(NUMBERS.captures_iter(part))
            {
                let key = String::from_utf8_lossy(&c[1]).into_owned();
                if let (false, Ok(value)) = (out.contains_key(&key), serde_json::from_slice(&c[2]))
                {
                    out.insert(key, value);
                }
            }
            let last_usage = USAGE.find_iter(part).last();
            if let Some(m) = last_usage {
                let at = m.end() - 1;
                let mut objects = serde_json::Deserializer::from_slice(&part[at..]).into_iter();
                if let Some(Ok(usage @ Value::Object(_))) = objects.next() {
                    out.insert("usage".to_owned(), usage);
                }
            }
        }
        Value::Object(out)
    }
}

/// What a body is read as.
#[derive(Debug)]
pub(crate) enum Content {
    /// A JSON document, parsed when it ends.
    Json(JsonBuf),
    /// A stream of server-sent events, read as they complete.
    Sse(sse::Parser),
}

/// One body being read: decoded, then buffered or streamed.
pub(crate) struct Body {
    decoder: Decoder,
    /// Bytes of it were lost.
    gapped: bool,
    /// What the body is read as.
    pub content: Content,
    scratch: Vec<u8>,
}

impl Body {
    /// A body with this `Content-Encoding` and `Content-Type`.
    pub fn new(content_encoding: Option<&str>, content_type: Option<&str>) -> Body {
        let sse =
            content_type.is_some_and(|t| t.to_ascii_lowercase().contains("text/event-stream"));
        Body {
            decoder: Decoder::new(content_encoding),
            gapped: false,
            content: if sse {
                Content::Sse(sse::Parser::default())
            } else {
                Content::Json(JsonBuf::default())
            },
            scratch: Vec::new(),
        }
    }

    /// Feeds body bytes; each event of a stream completed is passed to `emit`.
    pub fn feed(&mut self, bytes: &[u8], emit: &mut impl FnMut(sse::Event)) {
        self.scratch.clear();
        self.decoder.decode(bytes, &mut self.scratch);
        match &mut self.content {
            Content::Json(buf) => buf.push(&self.scratch),
            Content::Sse(parser) => parser.feed(&self.scratch, emit),
        }
    }

    /// Body bytes were lost.
    pub fn gap(&mut self) {
        self.gapped = true;
        self.decoder.gap();
        match &mut self.content {
            Content::Json(buf) => buf.gap(),
            Content::Sse(parser) => parser.gap(),
        }
    }

    /// The body ended: the last event of a stream is delivered.
    pub fn finish(&mut self, emit: &mut impl FnMut(sse::Event)) {
        if let Content::Sse(parser) = &mut self.content {
            parser.finish(emit);
        }
    }

    /// True when the body's coding could not be decoded (not for a gap: that is counted as
    /// bytes not captured).
    pub fn undecodable(&self) -> bool {
        self.decoder.broken() && !self.gapped
    }

    /// The JSON body, when it is one.
    pub fn json(&self) -> Option<&JsonBuf> {
        match &self.content {
            Content::Json(buf) => Some(buf),
            Content::Sse(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_whole_body_parses() {
        let mut b = JsonBuf::default();
        b.push(br#"{"model":"gpt-4o","#);
        b.push(br#""stream":true}"#);
        assert_eq!(b.value(), Some(json!({"model": "gpt-4o", "stream": true})));
    }

    #[test]
    fn a_gapped_body_is_salvaged_from_its_fragments() {
        let mut b = JsonBuf::default();
        b.push(br#"{"model": "gpt-4o-mini", "messages": [{"role":"user","content":"he said \"model\": \"x\""#);
        b.gap();
        b.push(br#"]}], "max_completion_tokens": 300, "stream": true, "temperature": 0.2}"#);
        assert_eq!(b.value(), None);
        assert_eq!(
            b.value_or_salvage(),
            json!({"model": "gpt-4o-mini", "max_completion_tokens": 300, "stream": true, "temperature": 0.2})
        );
    }

    #[test]
    fn an_oversized_body_keeps_head_and_tail() {
        let mut b = JsonBuf::default();
        b.push(br#"{"id":"chatcmpl-9","model":"gpt-4o","choices":[{"message":{"content":""#);
        let filler = vec![b'a'; 1 << 20];
        for _ in 0..9 {
            b.push(&filler);
        }
        b.push(br#""}}],"usage":{"prompt_tokens":5,"completion_tokens":9000000}}"#);
        assert!(!b.is_whole());
        assert!(b.head().len() == JSON_CAP);
        assert_eq!(
            b.value_or_salvage(),
            json!({"id": "chatcmpl-9", "model": "gpt-4o", "usage": {"prompt_tokens": 5, "completion_tokens": 9000000}})
        );
    }
}
