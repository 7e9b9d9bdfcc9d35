//! The per-direction compression streams: the [`Compression`] kinds and their wire codes, and
//! the streaming encoder and decoder that one direction of a connection uses for its life.

mod flate;
mod snappy;

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Compression of one direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Compression {
    /// Raw DEFLATE with a sync flush at every flush (code 0, the reference's default).
    #[default]
    Flate,
    /// No compression (code 1).
    None,
    /// Snappy framing format (code 2).
    Snappy,
}

impl Compression {
    /// The code of this compression in the handshake: flate 0, none 1, snappy 2.
    pub fn code(self) -> u8 {
        match self {
            Compression::Flate => 0,
            Compression::None => 1,
            Compression::Snappy => 2,
        }
    }

    /// The compression with handshake code `code`, if there is one.
    pub fn from_code(code: u8) -> Option<Compression> {
        match code {
            0 => Some(Compression::Flate),
            1 => Some(Compression::None),
            2 => Some(Compression::Snappy),
            _ => None,
        }
    }

    /// The lowercase name: `"flate"`, `"none"` or `"snappy"`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Flate => "flate",
            Compression::None => "none",
            Compression::Snappy => "snappy",
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    /// Parses `"none"`, `"flate"` or `"snappy"`.
    fn from_str(s: &str) -> Result<Compression, String> {
        match s {
            "flate" => Ok(Compression::Flate),
            "none" => Ok(Compression::None),
            "snappy" => Ok(Compression::Snappy),
            _ => Err(format!(
                "unknown compression {s:?}: want \"none\", \"flate\" or \"snappy\""
            )),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The compressing side of one direction of one connection: a single continuous stream for
/// the connection's life.
pub(crate) struct Encoder {
    inner: EncoderInner,
}

enum EncoderInner {
    None,
    Flate(flate::FlateEncoder),
    Snappy(Box<snappy::SnappyEncoder>),
}

impl Encoder {
    /// A new stream of compression `c`; `flate_level` (0-9, higher means 9) is used by flate.
    pub(crate) fn new(c: Compression, flate_level: u32) -> Encoder {
        let inner = match c {
            Compression::None => EncoderInner::None,
            Compression::Flate => EncoderInner::Flate(flate::FlateEncoder::new(flate_level)),
            Compression::Snappy => EncoderInner::Snappy(Box::new(snappy::SnappyEncoder::new())),
        };
        Encoder { inner }
    }

    /// Frees what the stream can do without while its connection idles (the flate
    /// compressor's state, snappy's buffers); it comes back with the next batch, and the
    /// stream goes on unchanged for the peer.
    pub(crate) fn release_idle(&mut self) {
        match &mut self.inner {
            EncoderInner::None => {}
            EncoderInner::Flate(e) => e.release(),
            EncoderInner::Snappy(e) => e.release(),
        }
    }

    /// Compresses all of `input` and APPENDS the encoded bytes to `out`, ending at a point where
    /// the peer can decode everything sent so far (flate: a sync flush, i.e. the empty stored
    /// block `00 00 ff ff` ends the output; snappy: complete chunks, after the stream identifier
    /// chunk `ff 06 00 00 73 4e 61 50 70 59` the first time). For none it appends `input`
    /// unchanged. Empty input appends nothing.
    pub(crate) fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        match &mut self.inner {
            EncoderInner::None => {
                out.extend_from_slice(input);
                Ok(())
            }
            EncoderInner::Flate(e) => e.encode(input, out),
            EncoderInner::Snappy(e) => e.encode(input, out),
        }
    }
}

/// The decompressing side of one direction of one connection.
pub(crate) struct Decoder {
    inner: DecoderInner,
}

enum DecoderInner {
    None,
    Flate(flate::FlateDecoder),
    Snappy(Box<snappy::SnappyDecoder>),
}

/// Progress of one decode call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Input bytes consumed (they need not be passed again).
    pub consumed: usize,
    /// Plain bytes appended to the output.
    pub produced: usize,
}

impl Decoder {
    /// A new stream of compression `c`.
    pub(crate) fn new(c: Compression) -> Decoder {
        let inner = match c {
            Compression::None => DecoderInner::None,
            Compression::Flate => DecoderInner::Flate(flate::FlateDecoder::new()),
            Compression::Snappy => DecoderInner::Snappy(Box::new(snappy::SnappyDecoder::new())),
        };
        Decoder { inner }
    }

    /// Frees buffers the stream can do without between chunks (snappy). The flate inflater
    /// keeps its 32 KiB window: the peer's next block may refer back into it.
    pub(crate) fn release_idle(&mut self) {
        if let DecoderInner::Snappy(d) = &mut self.inner {
            d.release();
        }
    }

    /// Decodes from `input`, APPENDING plain bytes to `out`, never appending more than `room`
    /// bytes in this call (capacity in `out` is reserved as needed, up to that). Consumes as
    /// much input as it can; a partial snappy chunk at the end of `input` is consumed and kept
    /// inside (at most one chunk), so the caller never has to hold raw bytes back.
    ///
    /// Returns `consumed < input.len()` only when `room` ran out. The decoder may hold decoded
    /// output inside when room ran out: the caller calls again, even with empty input, after
    /// making room, until a call produces 0 bytes. Progress is guaranteed for `room >= 65536`
    /// (in practice for any `room > 0`).
    ///
    /// Corrupt input is an [`ErrorKind::Protocol`](crate::ErrorKind::Protocol) error; the
    /// stream is unusable after it.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        room: usize,
    ) -> Result<Progress, Error> {
        match &mut self.inner {
            DecoderInner::None => {
                let n = input.len().min(room);
                out.extend_from_slice(&input[..n]);
                Ok(Progress {
                    consumed: n,
                    produced: n,
                })
            }
            DecoderInner::Flate(d) => d.decode(input, out, room),
            DecoderInner::Snappy(d) => d.decode(input, out, room),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const ALL: [Compression; 3] = [Compression::Flate, Compression::None, Compression::Snappy];

    /// xorshift64*: deterministic pseudo-random numbers without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| (self.next() >> 56) as u8).collect()
        }
    }

    fn repetitive(n: usize) -> Vec<u8> {
        let words: [&[u8]; 5] = [b"alpha ", b"beta ", b"gamma ", b"request ", b"value\n"];
        let mut v = Vec::with_capacity(n + 8);
        let mut i = 0usize;
        while v.len() < n {
            v.extend_from_slice(words[(i * 7 + i / 13) % 5]);
            i += 1;
        }
        v.truncate(n);
        v
    }

    /// The messages of the test vectors; the Go generator in tests/data/compress/README.md
    /// builds the same ones.
    fn go_messages() -> Vec<Vec<u8>> {
        let m1 = b"hello, fastrpc! ".repeat(200);
        let mut x: u32 = 1;
        let m2: Vec<u8> = (0..2048)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        let m3: Vec<u8> = (0..70_000usize).map(|i| (i % 251) as u8).collect();
        vec![
            b"foobar".to_vec(),
            m1,
            m2,
            m3,
            b"foobar".to_vec(),
            b"x".to_vec(),
        ]
    }

    fn test_messages(rng: &mut Rng) -> Vec<Vec<u8>> {
        let mut msgs = Vec::new();
        for n in [0, 1, 17, 65535, 65536, 65537] {
            msgs.push(rng.bytes(n));
            msgs.push(repetitive(n));
        }
        msgs.push(rng.bytes(300_000));
        msgs.push(repetitive(300_000));
        for _ in 0..50 {
            let n = rng.below(3000);
            msgs.push(if rng.below(2) == 0 {
                rng.bytes(n)
            } else {
                repetitive(n)
            });
        }
        msgs
    }

    fn encode_stream(c: Compression, msgs: &[Vec<u8>]) -> Vec<u8> {
        let mut e = Encoder::new(c, 6);
        let mut out = Vec::new();
        for m in msgs {
            let before = out.len();
            e.encode(m, &mut out).unwrap();
            if m.is_empty() {
                assert_eq!(out.len(), before, "{c}: empty input must append nothing");
            } else if c == Compression::Flate {
                assert!(out.ends_with(&[0, 0, 0xff, 0xff]), "{c}: no sync flush");
            }
        }
        out
    }

    /// Decodes `stream` fed in slices of `slice()` bytes with `room()` bytes of room per call,
    /// checking the decode contract on every call.
    fn decode_stream(
        c: Compression,
        stream: &[u8],
        mut slice: impl FnMut() -> usize,
        mut room: impl FnMut() -> usize,
    ) -> Result<Vec<u8>, Error> {
        let mut d = Decoder::new(c);
        let mut out = Vec::new();
        let mut check = |d: &mut Decoder, input: &[u8], out: &mut Vec<u8>| {
            let r = room();
            let before = out.len();
            let p = d.decode(input, out, r)?;
            assert_eq!(out.len() - before, p.produced);
            assert!(p.produced <= r, "{c}: produced {} > room {r}", p.produced);
            assert!(p.consumed <= input.len());
            if p.consumed < input.len() {
                assert_eq!(
                    p.produced, r,
                    "{c}: input left over but room did not run out"
                );
            }
            Ok::<_, Error>(p)
        };
        let mut pos = 0;
        while pos < stream.len() {
            let n = slice().clamp(1, stream.len() - pos);
            let mut input = &stream[pos..pos + n];
            pos += n;
            while !input.is_empty() {
                let p = check(&mut d, input, &mut out)?;
                input = &input[p.consumed..];
            }
        }
        while check(&mut d, &[], &mut out)?.produced > 0 {}
        Ok(out)
    }

    #[test]
    fn codes_names_parse_display() {
        for c in ALL {
            assert_eq!(Compression::from_code(c.code()), Some(c));
            assert_eq!(c.name().parse::<Compression>(), Ok(c));
            assert_eq!(c.to_string(), c.name());
        }
        assert_eq!(Compression::Flate.code(), 0);
        assert_eq!(Compression::None.code(), 1);
        assert_eq!(Compression::Snappy.code(), 2);
        assert_eq!(Compression::from_code(3), None);
        assert_eq!(Compression::from_code(255), None);
        assert_eq!(Compression::default(), Compression::Flate);
        let e = "zstd".parse::<Compression>().unwrap_err();
        assert!(e.contains("\"zstd\""), "{e}");
        assert!("Flate".parse::<Compression>().is_err());
    }

    #[test]
    fn roundtrip_whole_stream_at_once() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let msgs = test_messages(&mut rng);
        let want = msgs.concat();
        for c in ALL {
            let stream = encode_stream(c, &msgs);
            let got = decode_stream(c, &stream, || usize::MAX, || 1 << 20).unwrap();
            assert!(got == want, "{c}: decoded stream differs");
        }
    }

    #[test]
    fn roundtrip_one_byte_at_a_time() {
        let mut rng = Rng(7);
        let msgs = test_messages(&mut rng);
        let want = msgs.concat();
        for c in ALL {
            let stream = encode_stream(c, &msgs);
            let got = decode_stream(c, &stream, || 1, || 65536).unwrap();
            assert!(got == want, "{c}: decoded stream differs");
        }
    }

    #[test]
    fn roundtrip_random_slices_and_rooms() {
        let mut rng = Rng(42);
        let msgs = test_messages(&mut rng);
        let want = msgs.concat();
        for c in ALL {
            let stream = encode_stream(c, &msgs);
            for round in 0..4 {
                let mut r1 = Rng(1000 + round);
                let mut r2 = Rng(2000 + round);
                let max_slice = [10, 1000, 70_000, 500_000][round as usize];
                let got = decode_stream(
                    c,
                    &stream,
                    || 1 + r1.below(max_slice),
                    || 65536 + r2.below(200_000),
                )
                .unwrap();
                assert!(got == want, "{c} round {round}: decoded stream differs");
            }
        }
    }

    #[test]
    fn roundtrip_small_rooms() {
        let mut rng = Rng(99);
        let msgs = test_messages(&mut rng);
        let want = msgs.concat();
        for c in ALL {
            let stream = encode_stream(c, &msgs);
            for room in [1, 3, 100, 4096, 65535] {
                let mut r = Rng(room as u64);
                let got = decode_stream(c, &stream, || 1 + r.below(100_000), || room).unwrap();
                assert!(got == want, "{c} room {room}: decoded stream differs");
            }
            // Varying tiny rooms, fed byte by byte.
            let mut r = Rng(5);
            let got = decode_stream(
                c,
                &stream[..20_000.min(stream.len())],
                || 1,
                || 1 + r.below(10),
            );
            // A prefix of a stream decodes to a prefix of the plain bytes.
            let got = got.unwrap();
            assert!(
                want.starts_with(&got),
                "{c}: prefix decodes to something else"
            );
        }
    }

    #[test]
    fn none_is_identity() {
        let mut e = Encoder::new(Compression::None, 6);
        let mut out = b"x".to_vec();
        e.encode(b"foobar", &mut out).unwrap();
        assert_eq!(out, b"xfoobar");
        let mut d = Decoder::new(Compression::None);
        let mut out = Vec::new();
        let p = d.decode(b"foobar", &mut out, 4).unwrap();
        assert_eq!(
            p,
            Progress {
                consumed: 4,
                produced: 4
            }
        );
        assert_eq!(out, b"foob");
    }

    fn data_file(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/compress/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Releasing the idle state between batches leaves one valid stream: our decoder,
    /// released between its reads too, and an independent one (flate2's raw inflater over
    /// the whole stream; snap's frame reader) decode exactly what was sent.
    #[test]
    fn release_idle_between_batches_keeps_one_stream() {
        let text: Vec<u8> = (0..40_000u32)
            .map(|i| b"idle release "[i as usize % 13])
            .collect();
        let batches: Vec<&[u8]> = vec![&text[..5000], &text[100..30_000], b"x", &text];
        let want: Vec<u8> = batches.concat();
        for c in [Compression::Flate, Compression::Snappy] {
            let mut e = Encoder::new(c, 6);
            let mut d = Decoder::new(c);
            let mut stream = Vec::new();
            let mut got = Vec::new();
            for b in &batches {
                let start = stream.len();
                e.encode(b, &mut stream).unwrap();
                e.release_idle();
                let mut input = &stream[start..];
                loop {
                    let p = d.decode(input, &mut got, 1 << 20).unwrap();
                    input = &input[p.consumed..];
                    if input.is_empty() && p.produced == 0 {
                        break;
                    }
                }
                d.release_idle();
            }
            assert_eq!(got, want, "{c}: our decoder");
            let independent = match c {
                Compression::Flate => {
                    let mut z = flate2::Decompress::new(false);
                    let mut out = Vec::with_capacity(want.len() + 1024);
                    z.decompress_vec(&stream, &mut out, flate2::FlushDecompress::Sync)
                        .unwrap();
                    out
                }
                _ => {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(
                        &mut snap::read::FrameDecoder::new(&stream[..]),
                        &mut out,
                    )
                    .unwrap();
                    out
                }
            };
            assert_eq!(independent, want, "{c}: an independent decoder");
        }
    }

    #[test]
    fn decodes_go_compress_flate_stream() {
        let stream = data_file("go_flate.bin");
        let want = go_messages().concat();
        assert!(stream.ends_with(&[0, 0, 0xff, 0xff]));
        for slice in [usize::MAX, 1, 333] {
            let got = decode_stream(Compression::Flate, &stream, || slice, || 65536).unwrap();
            assert!(
                got == want,
                "slice {slice}: decoded Go flate stream differs"
            );
        }
    }

    #[test]
    fn decodes_go_golang_snappy_stream() {
        let stream = data_file("go_snappy.bin");
        let want = go_messages().concat();
        assert!(stream.starts_with(&[0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50, 0x70, 0x59]));
        for slice in [usize::MAX, 1, 333] {
            let got = decode_stream(Compression::Snappy, &stream, || slice, || 65536).unwrap();
            assert!(
                got == want,
                "slice {slice}: decoded Go snappy stream differs"
            );
        }
        // snap's raw encoder is a port of the same algorithm as golang/snappy's, and the
        // framing (64 KiB chunks, the 1/8 rule) is the same: the bytes are identical.
        let ours = encode_stream(Compression::Snappy, &go_messages());
        assert!(
            ours == stream,
            "our snappy stream differs from golang/snappy's"
        );
    }

    /// Writes this crate's encodings of the Go test messages for the Go-side check described
    /// in tests/data/compress/README.md. Run by hand:
    /// `FASTRPC_COMPRESS_DUMP=/tmp/dir cargo test --lib compress -- --ignored`.
    #[test]
    #[ignore]
    fn dump_for_go_check() {
        let dir = std::env::var("FASTRPC_COMPRESS_DUMP").unwrap_or_else(|_| "/tmp".into());
        let msgs = go_messages();
        for (c, name) in [
            (Compression::Flate, "rust_flate.bin"),
            (Compression::Snappy, "rust_snappy.bin"),
        ] {
            let stream = encode_stream(c, &msgs);
            std::fs::write(format!("{dir}/{name}"), stream).unwrap();
        }
        // The larger stream of the roundtrip tests, with its plain bytes.
        let msgs = test_messages(&mut Rng(42));
        std::fs::write(format!("{dir}/big_plain.bin"), msgs.concat()).unwrap();
        for (c, name) in [
            (Compression::Flate, "big_flate.bin"),
            (Compression::Snappy, "big_snappy.bin"),
        ] {
            let stream = encode_stream(c, &msgs);
            std::fs::write(format!("{dir}/{name}"), stream).unwrap();
        }
    }

    #[test]
    fn corrupt_streams_are_protocol_errors() {
        let cases: [(Compression, &[u8], &str); 4] = [
            (Compression::Flate, &[0xff; 8], "flate stream corrupt: "),
            (
                Compression::Snappy,
                b"\x01\x0a\x00\x00\x96\x05\x81\x5bfoobar",
                "snappy stream does not start with the stream identifier chunk",
            ),
            (
                Compression::Snappy,
                b"\xff\x06\x00\x00sNaPpY\x01\x0a\x00\x00\x97\x05\x81\x5bfoobar",
                "snappy uncompressed chunk checksum mismatch: got 0x5b810596",
            ),
            (
                Compression::Snappy,
                b"\xff\x06\x00\x00sNaPpY\x05\x00\x00\x00",
                "unknown snappy chunk type 0x05",
            ),
        ];
        for (c, input, needle) in cases {
            for slice in [usize::MAX, 1] {
                let e = decode_stream(c, input, || slice, || 65536).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
                assert!(e.message().contains(needle), "{c}: {e}");
            }
        }
    }

    #[test]
    fn skippable_megabyte_is_skipped() {
        let mut s = snappy::STREAM_IDENTIFIER.to_vec();
        s.extend_from_slice(&[0xfe, 0x00, 0x00, 0x10]); // 1 MiB of padding
        s.extend(std::iter::repeat_n(0u8, 1 << 20));
        let mut e = Encoder::new(Compression::Snappy, 0);
        let mut tail = Vec::new();
        e.encode(b"after", &mut tail).unwrap();
        s.extend_from_slice(&tail[snappy::STREAM_IDENTIFIER.len()..]);
        let mut r = Rng(3);
        let got = decode_stream(Compression::Snappy, &s, || 1 + r.below(50_000), || 65536);
        assert_eq!(got.unwrap(), b"after");
    }
}
