//! Raw DEFLATE (RFC 1951, no zlib header) streams: the encoder ends every `encode` with a sync
//! flush (`00 00 ff ff`), the decoder inflates into a bounded room and may keep output inside.

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

use super::Progress;
use crate::error::{Error, ErrorKind};

/// How much output space the decoder reserves at a time (at most `room`): enough for the
/// inflater to make good progress, small enough that a tiny input never reserves `room`.
const DECODE_STEP: usize = 32 * 1024;

/// One direction's DEFLATE compressor, a single stream for the connection's life. Its
/// state (about 256 KiB at level 6) is made on the first batch and dropped by
/// [`FlateEncoder::release`] while the connection idles: after a sync flush the stream is at
/// a block boundary, and a fresh compressor simply goes on with new blocks (which refer back
/// only to what it wrote itself), so the peer's inflater sees one valid stream.
pub(crate) struct FlateEncoder {
    z: Option<Compress>,
    level: u32,
}

impl FlateEncoder {
    /// A compressor at `level` (0 = store, 1 = fastest ... 9 = smallest; above 9 means 9).
    pub(crate) fn new(level: u32) -> FlateEncoder {
        FlateEncoder {
            z: None,
            level: level.min(9),
        }
    }

    /// Drops the compressor state until the next batch (see the type's comment).
    pub(crate) fn release(&mut self) {
        self.z = None;
    }

    /// Compresses `input`, appending to `out`, and ends with a sync flush.
    pub(crate) fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        if input.is_empty() {
            return Ok(());
        }
        // Worst case of DEFLATE is stored blocks: 5 bytes per 64 KiB plus the flush marker.
        // Reserving that up front means the flush almost never needs a second round.
        out.reserve(input.len() + input.len() / 8 + 64);
        let level = self.level;
        let z = self
            .z
            .get_or_insert_with(|| Compress::new(flate2::Compression::new(level), false));
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(4096);
            }
            let before = z.total_in();
            z.compress_vec(&input[pos..], out, FlushCompress::Sync)
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Io,
                        format!(
                            "flate compression failed: {}",
                            e.message().unwrap_or("unknown error")
                        ),
                    )
                })?;
            pos += (z.total_in() - before) as usize;
            // The flush is complete once all input is in and the compressor stopped with
            // output space left over.
            if pos == input.len() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

/// One direction's DEFLATE decompressor.
pub(crate) struct FlateDecoder {
    z: Decompress,
}

impl FlateDecoder {
    /// A decompressor for a raw DEFLATE stream.
    pub(crate) fn new() -> FlateDecoder {
        FlateDecoder {
            z: Decompress::new(false),
        }
    }

    /// Inflates from `input`, appending at most `room` bytes to `out`.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        room: usize,
    ) -> Result<Progress, Error> {
        let start = out.len();
        let mut consumed = 0;
        loop {
            let want = room - (out.len() - start);
            if want == 0 {
                break;
            }
            let step = want.min(DECODE_STEP);
            if out.capacity() - out.len() < step {
                out.reserve(step);
            }
            let avail = (out.capacity() - out.len()).min(want);
            let (in_before, out_before) = (self.z.total_in(), self.z.total_out());
            let status = self.z.decompress_uninit(
                &input[consumed..],
                &mut out.spare_capacity_mut()[..avail],
                FlushDecompress::None,
            );
            let wrote = (self.z.total_out() - out_before) as usize;
            consumed += (self.z.total_in() - in_before) as usize;
            // SAFETY: the inflater initialized exactly the first `wrote` bytes of the spare
            // capacity it was given (`wrote <= avail <= spare capacity`).
            unsafe { out.set_len(out.len() + wrote) };
            match status {
                Ok(Status::Ok) | Ok(Status::BufError) => {}
                Ok(Status::StreamEnd) => {
                    return Err(Error::protocol(
                        "flate stream corrupt: the peer ended its stream with a final block, \
                         which never happens on a live connection",
                    ))
                }
                Err(e) => {
                    return Err(Error::protocol(format!(
                        "flate stream corrupt: {}",
                        e.message().unwrap_or("invalid deflate data")
                    )))
                }
            }
            // The inflater stops short of filling its output only when it ran out of input.
            if wrote < avail {
                break;
            }
        }
        Ok(Progress {
            consumed,
            produced: out.len() - start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(data: &[u8]) -> Result<Vec<u8>, Error> {
        let mut d = FlateDecoder::new();
        let mut out = Vec::new();
        let p = d.decode(data, &mut out, 1 << 20)?;
        assert_eq!(p.consumed, data.len());
        Ok(out)
    }

    #[test]
    fn foobar_ends_with_sync_flush() {
        let mut e = FlateEncoder::new(6);
        let mut out = Vec::new();
        e.encode(b"foobar", &mut out).unwrap();
        assert!(out.ends_with(&[0x00, 0x00, 0xff, 0xff]), "{out:02x?}");
        assert_eq!(decode_all(&out).unwrap(), b"foobar");
        // A second message in the same stream also ends with the marker, and both decode.
        let first = out.len();
        e.encode(b"foobar", &mut out).unwrap();
        assert!(out.len() > first);
        assert!(out.ends_with(&[0x00, 0x00, 0xff, 0xff]));
        assert_eq!(decode_all(&out).unwrap(), b"foobarfoobar");
    }

    #[test]
    fn empty_input_appends_nothing() {
        let mut e = FlateEncoder::new(6);
        let mut out = vec![1, 2, 3];
        e.encode(b"", &mut out).unwrap();
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn every_level_roundtrips() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 997) as u8)
            .collect();
        for level in 0..=10 {
            let mut e = FlateEncoder::new(level);
            let mut out = Vec::new();
            e.encode(&data, &mut out).unwrap();
            e.encode(&data[..1000], &mut out).unwrap();
            let mut want = data.clone();
            want.extend_from_slice(&data[..1000]);
            assert_eq!(decode_all(&out).unwrap(), want, "level {level}");
        }
    }

    #[test]
    fn room_bounds_output_and_held_output_comes_later() {
        // Highly compressible: a few hundred input bytes expand to 1 MiB.
        let data = vec![b'a'; 1 << 20];
        let mut e = FlateEncoder::new(9);
        let mut enc = Vec::new();
        e.encode(&data, &mut enc).unwrap();
        assert!(enc.len() < 4096);
        let mut d = FlateDecoder::new();
        let mut out = Vec::new();
        let p = d.decode(&enc, &mut out, 65536).unwrap();
        assert_eq!(p.produced, 65536);
        assert_eq!(out.len(), 65536);
        let mut input = &enc[p.consumed..];
        loop {
            let p = d.decode(input, &mut out, 65536).unwrap();
            assert!(p.produced <= 65536);
            input = &input[p.consumed..];
            if p.produced == 0 {
                break;
            }
        }
        assert!(input.is_empty());
        assert_eq!(out, data);
    }

    fn assert_protocol(r: Result<Vec<u8>, Error>, needle: &str) {
        let e = r.expect_err("corrupt input must fail");
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        assert!(e.message().starts_with("flate stream corrupt: "), "{e}");
        assert!(e.message().contains(needle), "{e}");
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        // 0xff: BFINAL=1, BTYPE=11 (reserved).
        assert_protocol(decode_all(&[0xff; 16]), "invalid block type");
    }

    #[test]
    fn stored_block_length_mismatch_is_a_protocol_error() {
        // BTYPE=00 stored, LEN=5, NLEN not its complement.
        assert_protocol(
            decode_all(&[0x00, 0x05, 0x00, 0x00, 0x00, 1, 2, 3, 4, 5]),
            "invalid stored block lengths",
        );
    }

    #[test]
    fn spliced_stream_is_a_protocol_error() {
        // A stream cut in the middle of a block and continued with garbage: the first message
        // decodes, the broken rest fails.
        let mut e = FlateEncoder::new(6);
        let mut enc = Vec::new();
        e.encode(b"hello hello hello hello", &mut enc).unwrap();
        let good = enc.len();
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 13) as u8).collect();
        e.encode(&data, &mut enc).unwrap();
        enc.truncate(good + 3);
        enc.extend_from_slice(&[0xff; 64]);
        let e = decode_all(&enc).expect_err("corrupt");
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.message().starts_with("flate stream corrupt: "), "{e}");
    }

    #[test]
    fn final_block_is_a_protocol_error() {
        // A complete stream with BFINAL=1: an empty fixed-Huffman final block is 03 00.
        assert_protocol(decode_all(&[0x03, 0x00]), "final block");
    }

    #[test]
    fn truncated_stream_only_waits_for_more() {
        // Truncation cannot be told apart from "more bytes are on their way": the decoder
        // consumes everything, produces what it can, and keeps the rest of the block state.
        let mut e = FlateEncoder::new(6);
        let mut enc = Vec::new();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 253) as u8).collect();
        e.encode(&data, &mut enc).unwrap();
        let mut d = FlateDecoder::new();
        let mut out = Vec::new();
        let cut = enc.len() / 2;
        let p = d.decode(&enc[..cut], &mut out, 1 << 20).unwrap();
        assert_eq!(p.consumed, cut);
        let p = d.decode(&enc[cut..], &mut out, 1 << 20).unwrap();
        assert_eq!(p.consumed, enc.len() - cut);
        assert_eq!(out, data);
    }
}
