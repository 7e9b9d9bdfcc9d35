//! The Snappy framing format (stream identifier, then compressed / uncompressed chunks of at
//! most 64 KiB with a masked CRC-32C), as written and read by Go's github.com/golang/snappy.

use super::Progress;
use crate::error::{Error, ErrorKind};

/// Most uncompressed bytes in one chunk.
pub(crate) const MAX_BLOCK: usize = 65536;
/// The stream identifier chunk that starts every stream.
pub(crate) const STREAM_IDENTIFIER: [u8; 10] =
    [0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y'];

const CHUNK_COMPRESSED: u8 = 0x00;
const CHUNK_UNCOMPRESSED: u8 = 0x01;
const CHUNK_STREAM_IDENTIFIER: u8 = 0xff;
const MAGIC: &[u8; 6] = b"sNaPpY";
const CHECKSUM_LEN: usize = 4;

/// Largest compressed payload of a chunk (the raw encoding of `MAX_BLOCK` bytes at worst).
fn max_compressed_len() -> usize {
    snap::raw::max_compress_len(MAX_BLOCK)
}

/// The CRC-32C of `data`, masked as the framing format says:
/// `((crc >> 15) | (crc << 17)) + 0xa282ead8`, i.e. a rotation right by 15.
pub(crate) fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn push_chunk_header(out: &mut Vec<u8>, kind: u8, body_len: usize, crc: u32) {
    let l = body_len as u32;
    out.extend_from_slice(&[kind, l as u8, (l >> 8) as u8, (l >> 16) as u8]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// One direction's Snappy framing writer.
pub(crate) struct SnappyEncoder {
    raw: snap::raw::Encoder,
    /// Raw Snappy output of one chunk; `max_compress_len(MAX_BLOCK)` long once used.
    scratch: Vec<u8>,
    wrote_identifier: bool,
}

impl SnappyEncoder {
    /// A writer that has written nothing yet.
    pub(crate) fn new() -> SnappyEncoder {
        SnappyEncoder {
            raw: snap::raw::Encoder::new(),
            scratch: Vec::new(),
            wrote_identifier: false,
        }
    }

    /// Drops the scratch buffer and the hash table until the next batch (chunks are
    /// independent: nothing carries over).
    pub(crate) fn release(&mut self) {
        self.scratch = Vec::new();
        self.raw = snap::raw::Encoder::new();
    }

    /// Appends `input` to `out` as complete chunks (after the stream identifier, the first time).
    pub(crate) fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        if input.is_empty() {
            return Ok(());
        }
        if self.scratch.is_empty() {
            self.scratch = vec![0; max_compressed_len()];
        }
        let chunks = input.len().div_ceil(MAX_BLOCK);
        out.reserve(STREAM_IDENTIFIER.len() + input.len() + chunks * 8);
        if !self.wrote_identifier {
            out.extend_from_slice(&STREAM_IDENTIFIER);
            self.wrote_identifier = true;
        }
        for chunk in input.chunks(MAX_BLOCK) {
            let crc = masked_crc(chunk);
            let n = self.raw.compress(chunk, &mut self.scratch).map_err(|e| {
                Error::new(ErrorKind::Io, format!("snappy compression failed: {e}"))
            })?;
            // Like golang/snappy: keep the compressed form only if it saves at least 1/8.
            if n >= chunk.len() - chunk.len() / 8 {
                push_chunk_header(out, CHUNK_UNCOMPRESSED, CHECKSUM_LEN + chunk.len(), crc);
                out.extend_from_slice(chunk);
            } else {
                push_chunk_header(out, CHUNK_COMPRESSED, CHECKSUM_LEN + n, crc);
                out.extend_from_slice(&self.scratch[..n]);
            }
        }
        Ok(())
    }
}

/// Where the reader is in the chunk sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the 4-byte chunk header (`hdr_len` bytes of it so far).
    Header,
    /// Reading the body of a chunk that is checked and used: `len` bytes in all.
    Body { kind: u8, len: usize },
    /// Passing over the rest of a skippable chunk.
    Skip { left: usize },
}

/// One direction's Snappy framing reader.
pub(crate) struct SnappyDecoder {
    raw: snap::raw::Decoder,
    seen_identifier: bool,
    state: State,
    hdr: [u8; 4],
    hdr_len: usize,
    /// The body of the current chunk when it arrived in pieces (at most one chunk).
    body: Vec<u8>,
    /// Decoded bytes of one chunk; `MAX_BLOCK` long once used. `plain[plain_pos..plain_end]`
    /// were decoded but not yet handed out (the caller's room ran out).
    plain: Vec<u8>,
    plain_pos: usize,
    plain_end: usize,
}

impl SnappyDecoder {
    /// A reader expecting the stream identifier.
    pub(crate) fn new() -> SnappyDecoder {
        SnappyDecoder {
            raw: snap::raw::Decoder::new(),
            seen_identifier: false,
            state: State::Header,
            hdr: [0; 4],
            hdr_len: 0,
            body: Vec::new(),
            plain: Vec::new(),
            plain_pos: 0,
            plain_end: 0,
        }
    }

    /// Drops the chunk buffers when no chunk is under way (between chunks nothing carries
    /// over): they come back with the next chunk that needs them.
    pub(crate) fn release(&mut self) {
        if self.state == State::Header && self.hdr_len == 0 && self.plain_pos == self.plain_end {
            self.plain = Vec::new();
            self.plain_pos = 0;
            self.plain_end = 0;
            self.body = Vec::new();
        }
    }

    /// Reads chunks from `input`, appending at most `room` decoded bytes to `out`.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        room: usize,
    ) -> Result<Progress, Error> {
        let start = out.len();
        let mut pos = 0;
        loop {
            if self.plain_pos < self.plain_end {
                let left = room - (out.len() - start);
                let n = left.min(self.plain_end - self.plain_pos);
                out.extend_from_slice(&self.plain[self.plain_pos..self.plain_pos + n]);
                self.plain_pos += n;
                if self.plain_pos < self.plain_end {
                    break; // room ran out
                }
            }
            let rest = &input[pos..];
            if rest.is_empty() {
                break;
            }
            match self.state {
                State::Header => {
                    let n = (4 - self.hdr_len).min(rest.len());
                    self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&rest[..n]);
                    self.hdr_len += n;
                    pos += n;
                    if self.hdr_len == 4 {
                        self.hdr_len = 0;
                        self.state = self.parse_header()?;
                    }
                }
                State::Skip { left } => {
                    let n = left.min(rest.len());
                    pos += n;
                    self.state = if n == left {
                        State::Header
                    } else {
                        State::Skip { left: left - n }
                    };
                }
                State::Body { kind, len } => {
                    let room_left = room - (out.len() - start);
                    if self.body.is_empty() && rest.len() >= len {
                        // The whole chunk is here: use it in place.
                        pos += len;
                        self.chunk(kind, &rest[..len], out, room_left)?;
                    } else {
                        let n = (len - self.body.len()).min(rest.len());
                        self.body.extend_from_slice(&rest[..n]);
                        pos += n;
                        if self.body.len() == len {
                            let body = std::mem::take(&mut self.body);
                            let r = self.chunk(kind, &body, out, room_left);
                            self.body = body;
                            self.body.clear();
                            r?;
                        }
                    }
                }
            }
        }
        Ok(Progress {
            consumed: pos,
            produced: out.len() - start,
        })
    }

    /// Checks the chunk header in `self.hdr` and says what comes next.
    fn parse_header(&mut self) -> Result<State, Error> {
        let kind = self.hdr[0];
        let len = usize::from(self.hdr[1])
            | usize::from(self.hdr[2]) << 8
            | usize::from(self.hdr[3]) << 16;
        if !self.seen_identifier && kind != CHUNK_STREAM_IDENTIFIER {
            return Err(Error::protocol(format!(
                "snappy stream does not start with the stream identifier chunk: the first chunk \
                 has type 0x{kind:02x}, want 0xff"
            )));
        }
        match kind {
            CHUNK_STREAM_IDENTIFIER => {
                if len != MAGIC.len() {
                    return Err(Error::protocol(format!(
                        "snappy stream identifier chunk has length {len}, want 6"
                    )));
                }
            }
            CHUNK_COMPRESSED | CHUNK_UNCOMPRESSED => {
                let (what, max) = if kind == CHUNK_COMPRESSED {
                    ("compressed", CHECKSUM_LEN + max_compressed_len())
                } else {
                    ("uncompressed", CHECKSUM_LEN + MAX_BLOCK)
                };
                if len < CHECKSUM_LEN {
                    return Err(Error::protocol(format!(
                        "snappy {what} chunk of {len} bytes is shorter than its 4-byte checksum"
                    )));
                }
                if len > max {
                    return Err(Error::protocol(format!(
                        "snappy {what} chunk of {len} bytes is larger than the {max} allowed"
                    )));
                }
            }
            0x02..=0x7f => {
                return Err(Error::protocol(format!(
                    "unknown snappy chunk type 0x{kind:02x} (reserved, unskippable)"
                )))
            }
            // 0x80..=0xfe: skippable (0xfe is padding).
            _ => {
                return Ok(if len == 0 {
                    State::Header
                } else {
                    State::Skip { left: len }
                })
            }
        }
        Ok(State::Body { kind, len })
    }

    /// Checks and uses one complete chunk body; its decoded bytes go to `out` (up to
    /// `room_left`) and the rest, if any, to `plain`.
    fn chunk(
        &mut self,
        kind: u8,
        body: &[u8],
        out: &mut Vec<u8>,
        room_left: usize,
    ) -> Result<(), Error> {
        self.state = State::Header;
        if kind == CHUNK_STREAM_IDENTIFIER {
            if body != MAGIC {
                return Err(Error::protocol(format!(
                    "snappy stream identifier is {:?}, want \"sNaPpY\"",
                    String::from_utf8_lossy(body)
                )));
            }
            self.seen_identifier = true;
            return Ok(());
        }
        let want = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
        let payload = &body[CHECKSUM_LEN..];
        let what = if kind == CHUNK_COMPRESSED {
            "compressed"
        } else {
            "uncompressed"
        };
        let data: &[u8] = if kind == CHUNK_UNCOMPRESSED {
            payload
        } else {
            let n = snap::raw::decompress_len(payload)
                .map_err(|e| Error::protocol(format!("snappy compressed chunk corrupt: {e}")))?;
            if n > MAX_BLOCK {
                return Err(Error::protocol(format!(
                    "snappy compressed chunk decodes to {n} bytes, more than the {MAX_BLOCK} allowed"
                )));
            }
            if self.plain.len() < MAX_BLOCK {
                self.plain.resize(MAX_BLOCK, 0);
            }
            let n = self
                .raw
                .decompress(payload, &mut self.plain[..n])
                .map_err(|e| Error::protocol(format!("snappy compressed chunk corrupt: {e}")))?;
            &self.plain[..n]
        };
        let got = masked_crc(data);
        if got != want {
            return Err(Error::protocol(format!(
                "snappy {what} chunk checksum mismatch: got 0x{got:08x} from the data, want \
                 0x{want:08x} from the chunk"
            )));
        }
        let n = data.len().min(room_left);
        out.extend_from_slice(&data[..n]);
        if n < data.len() {
            // Keep the rest for the next calls.
            let rest = data.len() - n;
            if kind == CHUNK_UNCOMPRESSED {
                if self.plain.len() < MAX_BLOCK {
                    self.plain.resize(MAX_BLOCK, 0);
                }
                self.plain[..rest].copy_from_slice(&payload[n..]);
                self.plain_pos = 0;
                self.plain_end = rest;
            } else {
                self.plain_pos = n;
                self.plain_end = data.len();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(data: &[u8]) -> Result<Vec<u8>, Error> {
        let mut d = SnappyDecoder::new();
        let mut out = Vec::new();
        let p = d.decode(data, &mut out, 1 << 24)?;
        assert_eq!(p.consumed, data.len());
        Ok(out)
    }

    fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
        let l = body.len();
        let mut v = vec![kind, l as u8, (l >> 8) as u8, (l >> 16) as u8];
        v.extend_from_slice(body);
        v
    }

    fn data_chunk(kind: u8, crc: u32, payload: &[u8]) -> Vec<u8> {
        let mut body = crc.to_le_bytes().to_vec();
        body.extend_from_slice(payload);
        chunk(kind, &body)
    }

    fn assert_protocol(r: Result<Vec<u8>, Error>, needle: &str) {
        let e = r.expect_err("corrupt input must fail");
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        assert!(e.message().contains(needle), "{e}");
    }

    #[test]
    fn masked_crc_matches_the_spec_formula() {
        let c = crc32c::crc32c(b"foobar");
        assert_eq!(c, 0x0d5f_5c7f);
        let masked = c.rotate_right(15).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc(b"foobar"), masked);
        assert_eq!(masked, 0x5b81_0596);
    }

    #[test]
    fn foobar_exact_bytes() {
        let mut e = SnappyEncoder::new();
        let mut out = Vec::new();
        e.encode(b"foobar", &mut out).unwrap();
        let crc = crc32c::crc32c(b"foobar");
        let masked = crc.rotate_right(15).wrapping_add(0xa282ead8);
        let mut want = vec![0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50, 0x70, 0x59];
        want.extend_from_slice(&[0x01, 0x0a, 0x00, 0x00]);
        want.extend_from_slice(&masked.to_le_bytes());
        want.extend_from_slice(b"foobar");
        assert_eq!(out, want);
        // The same, hard-coded.
        assert_eq!(
            out,
            [
                0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50, 0x70, 0x59, 0x01, 0x0a, 0x00, 0x00,
                0x96, 0x05, 0x81, 0x5b, b'f', b'o', b'o', b'b', b'a', b'r'
            ]
        );
        // The identifier is written once per stream.
        e.encode(b"foobar", &mut out).unwrap();
        assert_eq!(&out[24..], &want[10..]);
        assert_eq!(decode_all(&out).unwrap(), b"foobarfoobar");
    }

    #[test]
    fn compressible_data_uses_compressed_chunks_of_64k() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 100) as u8).collect();
        let mut e = SnappyEncoder::new();
        let mut out = Vec::new();
        e.encode(&data, &mut out).unwrap();
        // Walk the chunks: 4 compressed chunks (65536 * 3 + 3392).
        let mut p = STREAM_IDENTIFIER.len();
        let mut kinds = Vec::new();
        while p < out.len() {
            let len = usize::from(out[p + 1]) | usize::from(out[p + 2]) << 8;
            kinds.push(out[p]);
            p += 4 + len;
        }
        assert_eq!(kinds, [0, 0, 0, 0]);
        assert!(out.len() < 40_000);
        assert_eq!(decode_all(&out).unwrap(), data);
    }

    #[test]
    fn bad_checksum() {
        let mut s = STREAM_IDENTIFIER.to_vec();
        let good = masked_crc(b"foobar");
        s.extend(data_chunk(CHUNK_UNCOMPRESSED, good ^ 1, b"foobar"));
        assert_protocol(
            decode_all(&s),
            &format!(
                "snappy uncompressed chunk checksum mismatch: got 0x{good:08x} from the data, \
                 want 0x{:08x} from the chunk",
                good ^ 1
            ),
        );
        // And in a compressed chunk.
        let data = vec![7u8; 1000];
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut s = STREAM_IDENTIFIER.to_vec();
        s.extend(data_chunk(
            CHUNK_COMPRESSED,
            masked_crc(&data) ^ 0x100,
            &raw,
        ));
        assert_protocol(decode_all(&s), "snappy compressed chunk checksum mismatch");
    }

    #[test]
    fn unknown_unskippable_chunk() {
        let mut s = STREAM_IDENTIFIER.to_vec();
        s.extend(chunk(0x05, b"abc"));
        assert_protocol(
            decode_all(&s),
            "unknown snappy chunk type 0x05 (reserved, unskippable)",
        );
        let mut s = STREAM_IDENTIFIER.to_vec();
        s.extend(chunk(0x7f, b""));
        assert_protocol(decode_all(&s), "unknown snappy chunk type 0x7f");
    }

    #[test]
    fn missing_stream_identifier() {
        let s = data_chunk(CHUNK_UNCOMPRESSED, masked_crc(b"foobar"), b"foobar");
        assert_protocol(
            decode_all(&s),
            "snappy stream does not start with the stream identifier chunk: the first chunk has \
             type 0x01",
        );
        // Not even a skippable chunk may come first.
        assert_protocol(decode_all(&chunk(0xfe, b"")), "first chunk has type 0xfe");
    }

    #[test]
    fn bad_stream_identifier() {
        assert_protocol(
            decode_all(&chunk(0xff, b"sNaPpX")),
            "snappy stream identifier is \"sNaPpX\", want \"sNaPpY\"",
        );
        assert_protocol(
            decode_all(&chunk(0xff, b"sNaPpYY")),
            "snappy stream identifier chunk has length 7, want 6",
        );
    }

    #[test]
    fn repeated_stream_identifier_is_skipped() {
        let mut s = STREAM_IDENTIFIER.to_vec();
        s.extend(data_chunk(CHUNK_UNCOMPRESSED, masked_crc(b"foo"), b"foo"));
        s.extend_from_slice(&STREAM_IDENTIFIER);
        s.extend(data_chunk(CHUNK_UNCOMPRESSED, masked_crc(b"bar"), b"bar"));
        assert_eq!(decode_all(&s).unwrap(), b"foobar");
    }

    #[test]
    fn chunk_size_limits() {
        // Uncompressed chunk one byte too large.
        let big = vec![0u8; MAX_BLOCK + 1];
        let mut s = STREAM_IDENTIFIER.to_vec();
        s.extend(data_chunk(CHUNK_UNCOMPRESSED, masked_crc(&big), &big));
        assert_protocol(
            decode_all(&s),
            "snappy uncompressed chunk of 65541 bytes is larger than the 65540 allowed",
        );
        // Exactly MAX_BLOCK is fine.
        let mut s = STREAM_IDENTIFIER.to_vec();
        s.extend(data_chunk(
            CHUNK_UNCOMPRESSED,
            masked_crc(&big[1..]),
            &big[1..],
        ));
        assert_eq!(decode_all(&s).unwrap().len(), MAX_BLOCK);
        // Compressed chunk larger than the raw bound.
        let max = 4 + snap::raw::max_compress_len(MAX_BLOCK);
        let mut s = STREAM_IDENTIFIER.to_vec();
        s.extend(chunk(CHUNK_COMPRESSED, &vec![0u8; max + 1]));
        assert_protocol(
            decode_all(&s),
            &format!(
                "snappy compressed chunk of {} bytes is larger than the {max} allowed",
                max + 1
            ),
        );
        // Compressed chunk that decodes to more than MAX_BLOCK.
        let data = vec![1u8; MAX_BLOCK + 1];
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut s = STREAM_IDENTIFIER.to_vec();
        s.extend(data_chunk(CHUNK_COMPRESSED, masked_crc(&data), &raw));
        assert_protocol(
            decode_all(&s),
            "snappy compressed chunk decodes to 65537 bytes, more than the 65536 allowed",
        );
        // Too short for the checksum.
        let mut s = STREAM_IDENTIFIER.to_vec();
        s.extend(chunk(CHUNK_COMPRESSED, b"abc"));
        assert_protocol(
            decode_all(&s),
            "snappy compressed chunk of 3 bytes is shorter than its 4-byte checksum",
        );
    }

    #[test]
    fn corrupt_compressed_payload() {
        let mut s = STREAM_IDENTIFIER.to_vec();
        // Varint length 10, then a copy with offset 0 beyond the start.
        s.extend(data_chunk(CHUNK_COMPRESSED, 0, &[10, 0x01, 0x00]));
        assert_protocol(decode_all(&s), "snappy compressed chunk corrupt: ");
        let mut s = STREAM_IDENTIFIER.to_vec();
        s.extend(data_chunk(CHUNK_COMPRESSED, 0, &[]));
        assert_protocol(decode_all(&s), "snappy compressed chunk corrupt: ");
    }

    #[test]
    fn skippable_chunks_are_skipped_in_a_streaming_way() {
        let mut s = STREAM_IDENTIFIER.to_vec();
        s.extend(data_chunk(CHUNK_UNCOMPRESSED, masked_crc(b"foo"), b"foo"));
        // 1 MiB padding and a 2 MiB 0x80 chunk, then an empty skippable one.
        s.extend(chunk(0xfe, &vec![0u8; 1 << 20]));
        s.extend(chunk(0x80, &vec![0xaau8; 2 << 20]));
        s.extend(chunk(0x99, b""));
        s.extend(data_chunk(CHUNK_UNCOMPRESSED, masked_crc(b"bar"), b"bar"));
        assert_eq!(decode_all(&s).unwrap(), b"foobar");
        // Fed in pieces, the skipped bytes are never buffered.
        let mut d = SnappyDecoder::new();
        let mut out = Vec::new();
        for piece in s.chunks(4093) {
            let p = d.decode(piece, &mut out, 65536).unwrap();
            assert_eq!(p.consumed, piece.len());
            assert!(d.body.capacity() <= 4 + max_compressed_len());
        }
        assert_eq!(out, b"foobar");
        assert!(d.body.capacity() < 4096, "{}", d.body.capacity());
    }

    #[test]
    fn decoded_bytes_wait_inside_when_room_runs_out() {
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 200) as u8).collect();
        let random: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut e = SnappyEncoder::new();
        let mut enc = Vec::new();
        e.encode(&data, &mut enc).unwrap();
        e.encode(&random, &mut enc).unwrap();
        let mut want = data.clone();
        want.extend_from_slice(&random);
        for room in [1, 7, 1000, 65535, 65536, 100_000] {
            let mut d = SnappyDecoder::new();
            let mut out = Vec::new();
            let mut input = &enc[..];
            loop {
                let p = d.decode(input, &mut out, room).unwrap();
                assert!(p.produced <= room);
                if p.consumed < input.len() {
                    assert_eq!(p.produced, room);
                }
                input = &input[p.consumed..];
                if input.is_empty() && p.produced == 0 {
                    break;
                }
                assert!(d.plain.capacity() <= MAX_BLOCK);
                assert!(d.body.capacity() <= 4 + max_compressed_len());
            }
            assert_eq!(out, want, "room {room}");
        }
    }

    #[test]
    fn buffers_are_reused() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i % 97) as u8 ^ (i >> 12) as u8)
            .collect();
        let mut e = SnappyEncoder::new();
        let mut d = SnappyDecoder::new();
        let mut enc = Vec::new();
        let mut out = Vec::new();
        let mut prev = None;
        for round in 0..5 {
            enc.clear();
            out.clear();
            e.encode(&data, &mut enc).unwrap();
            for piece in enc.chunks(10_000) {
                let mut piece = piece;
                while !piece.is_empty() {
                    let p = d.decode(piece, &mut out, 65536).unwrap();
                    piece = &piece[p.consumed..];
                }
            }
            while d.decode(&[], &mut out, 65536).unwrap().produced > 0 {}
            assert_eq!(out, data);
            let caps = (
                e.scratch.as_ptr(),
                e.scratch.capacity(),
                d.body.as_ptr(),
                d.body.capacity(),
                d.plain.as_ptr(),
                d.plain.capacity(),
            );
            if round == 0 {
                assert_eq!(e.scratch.len(), max_compressed_len());
                assert_eq!(d.plain.len(), MAX_BLOCK);
            }
            if round > 0 {
                // Same buffers as after the previous round.
                assert_eq!(Some(caps), prev, "round {round}");
            }
            prev = Some(caps);
        }
    }
}
