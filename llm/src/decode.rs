//! Content decoding of a body (`Content-Encoding: gzip`, `deflate` or `br`), incrementally,
//! as its bytes arrive. Other codings (`zstd`) are not decoded: the body is marked so.

use std::io::Write;

use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};

/// Decodes one body's content coding.
pub(crate) enum Decoder {
    /// No content coding.
    Identity,
    /// gzip.
    Gzip(GzDecoder<Vec<u8>>),
    /// `deflate`, before its first byte tells zlib from raw deflate.
    Deflate,
    /// zlib-wrapped deflate (what `deflate` means).
    Zlib(ZlibDecoder<Vec<u8>>),
    /// Raw deflate (what some servers send for `deflate`).
    Raw(DeflateDecoder<Vec<u8>>),
    /// Brotli (httpx asks for it when the `brotli` package is installed).
    Brotli(Box<brotli_decompressor::DecompressorWriter<Vec<u8>>>),
    /// An unknown coding, or the stream broke (a gap, corrupt data): nothing more comes out.
    Broken,
}

impl Decoder {
    /// The decoder for a `Content-Encoding` header value.
    pub fn new(content_encoding: Option<&str>) -> Decoder {
        match content_encoding
            .map(|e| e.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("" | "identity") => Decoder::Identity,
            Some("gzip" | "x-gzip") => Decoder::Gzip(GzDecoder::new(Vec::new())),
            Some("deflate") => Decoder::Deflate,
            Some("br") => Decoder::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(
                Vec::new(),
                4096,
            ))),
            Some(_) => Decoder::Broken,
        }
    }

    /// Decodes the next bytes, appending what comes out to `out`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        if let Decoder::Deflate = self {
            // zlib's first byte: compression method 8, window at most 32 KiB.
            let zlib = input[0] & 0x0f == 8 && input[0] >> 4 <= 7;
            *self = if zlib {
                Decoder::Zlib(ZlibDecoder::new(Vec::new()))
            } else {
                Decoder::Raw(DeflateDecoder::new(Vec::new()))
            };
        }
        let ok = match self {
            Decoder::Identity => {
                out.extend_from_slice(input);
                true
            }
            Decoder::Gzip(d) => drain(
                d.write_all(input).and_then(|()| d.flush()),
                d.get_mut(),
                out,
            ),
            Decoder::Zlib(d) => drain(
                d.write_all(input).and_then(|()| d.flush()),
                d.get_mut(),
                out,
            ),
            Decoder::Raw(d) => drain(
                d.write_all(input).and_then(|()| d.flush()),
                d.get_mut(),
                out,
            ),
            Decoder::Brotli(d) => drain(
                d.write_all(input).and_then(|()| d.flush()),
                d.get_mut(),
                out,
            ),
            Decoder::Deflate | Decoder::Broken => false,
        };
        if !ok {
            *self = Decoder::Broken;
        }
    }

    /// True when nothing more can be decoded (an unknown coding, corrupt data, or a gap).
    pub fn broken(&self) -> bool {
        matches!(self, Decoder::Broken)
    }

    /// Bytes were lost: a compressed stream cannot go on.
    pub fn gap(&mut self) {
        if !matches!(self, Decoder::Identity) {
            *self = Decoder::Broken;
        }
    }
}

/// Moves a decoder's output to `out`; false when the write failed.
fn drain(written: std::io::Result<()>, decoded: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    out.append(decoded);
    written.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{
        write::{DeflateEncoder, GzEncoder, ZlibEncoder},
        Compression,
    };

    fn decode_split(mut d: Decoder, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in data.chunks(3) {
            d.decode(b, &mut out);
        }
        out
    }

    const TEXT: &[u8] = b"{\"id\":\"chatcmpl-1\",\"choices\":[]} and some more text to compress";

    #[test]
    fn gzip_zlib_and_raw_deflate_decode_in_pieces() {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(TEXT).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decode_split(Decoder::new(Some("gzip")), &gz), TEXT);

        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(TEXT).unwrap();
        let z = z.finish().unwrap();
        assert_eq!(decode_split(Decoder::new(Some("Deflate")), &z), TEXT);

        let mut raw = DeflateEncoder::new(Vec::new(), Compression::default());
        raw.write_all(TEXT).unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(decode_split(Decoder::new(Some("deflate")), &raw), TEXT);
    }

    #[test]
    fn identity_passes_through_and_unknown_codings_yield_nothing() {
        assert_eq!(decode_split(Decoder::new(None), TEXT), TEXT);
        assert_eq!(decode_split(Decoder::new(Some("zstd")), TEXT), b"");

        let mut br = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
        br.write_all(TEXT).unwrap();
        let br = br.into_inner();
        assert_eq!(decode_split(Decoder::new(Some("br")), &br), TEXT);
    }

    #[test]
    fn a_gap_breaks_a_compressed_stream() {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(TEXT).unwrap();
        let gz = gz.finish().unwrap();
        let mut d = Decoder::new(Some("gzip"));
        let mut out = Vec::new();
        d.decode(&gz[..5], &mut out);
        d.gap();
        d.decode(&gz[10..], &mut out);
        assert!(matches!(d, Decoder::Broken));
    }
}
