//! Replays of the reference's recorded conversations (tests/data/reference/, recorded by
//! tests/reference/recorder from github.com/valyala/fastrpc's own client and server): these
//! run on every CI run without the reference.
//!
//! * Our server is fed the reference client's bytes, one step at a time, and must answer with
//!   the reference server's bytes.
//! * Our client makes the same calls against a socket that plays the reference server's
//!   bytes, and must write the reference client's bytes and return the right responses.
//!
//! "The same bytes" means exactly the same for `none` and `snappy` streams. For `flate` the
//! compressed bytes depend on the compressor (ours is zlib-rs, the reference's is Go's
//! compress/flate), so the test decodes both and requires the same decoded bytes, and that our
//! stream ends with a sync flush (`00 00 ff ff`) at the end of each batch, where the reference
//! flushed. Bursts of concurrent calls are compared as sets of frames: which frames share a
//! batch, and in which order concurrent handlers answer, depends on scheduling on both sides.
//!
//! The streams are decoded here with flate2, snap::raw and crc32c directly, never through
//! fastrpc's compress module. The manifest format is described in tests/data/reference/README.md.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flate2::{Decompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use fastrpc::{Call, Client, ClientConfig, Completion, Compression, Error, Server, ServerConfig};

/// How long any one wait on a socket or a call may take.
const WAIT: Duration = Duration::from_secs(20);
const MAX_VALUE: usize = 1 << 20;
const SYNC_FLUSH: [u8; 4] = [0, 0, 0xff, 0xff];

// ---------------------------------------------------------------------------------------------
// The manifest and the recordings.

/// A deterministic byte string of the manifest: `pLEN:SEED` or `rLEN:SEED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Data {
    random: bool,
    len: usize,
    seed: u32,
}

impl Data {
    fn parse(s: &str) -> Data {
        let (kind, rest) = s.split_at(1);
        let (len, seed) = rest.split_once(':').expect("LEN:SEED");
        Data {
            random: match kind {
                "p" => false,
                "r" => true,
                _ => panic!("unknown data kind in {s:?}"),
            },
            len: len.parse().unwrap(),
            seed: seed.parse().unwrap(),
        }
    }

    fn bytes(self) -> Vec<u8> {
        if !self.random {
            return (0..self.len as u32)
                .map(|i| ((i.wrapping_mul(7).wrapping_add(self.seed.wrapping_mul(13))) % 251) as u8)
                .collect();
        }
        let mut x = self.seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..self.len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }
}

/// The reply rule of the recordings: the first 16 bytes of the name, then the value, cut at
/// 1 MiB.
fn reply(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = name[..name.len().min(16)].to_vec();
    out.extend_from_slice(value);
    out.truncate(MAX_VALUE);
    out
}

#[derive(Clone, Debug)]
enum Step {
    Handshake,
    Call(Data, Data),
    Send(Data, Data),
    Burst {
        count: usize,
        name_len: usize,
        value_len: usize,
    },
}

impl Step {
    /// Call `k` of a burst.
    fn burst_call(name_len: usize, value_len: usize, k: usize) -> (Vec<u8>, Vec<u8>) {
        let n = Data {
            random: true,
            len: name_len,
            seed: k as u32,
        };
        let v = Data {
            random: true,
            len: value_len,
            seed: 100_000 + k as u32,
        };
        (n.bytes(), v.bytes())
    }
}

#[derive(Debug)]
struct Scenario {
    name: String,
    file: String,
    client_comp: Compression,
    server_comp: Compression,
    sniff: Vec<u8>,
    version: u8,
    client_delay: Duration,
    server_delay: Duration,
    pipelined: bool,
    client_bytes: usize,
    server_bytes: usize,
    steps: Vec<Step>,
}

/// One step's bytes: what the client sent, what the server sent.
struct Segment {
    client: Vec<u8>,
    server: Vec<u8>,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn manifest() -> Vec<Scenario> {
    let text = std::fs::read_to_string(data_dir().join("manifest.txt")).expect("manifest.txt");
    let mut out: Vec<Scenario> = Vec::new();
    let mut open = false;
    let mut format_seen = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[0] {
            "format" => {
                assert_eq!(words[1], "1", "manifest format");
                format_seen = true;
            }
            "scenario" => {
                assert!(!open, "scenario inside a scenario: {line}");
                open = true;
                let kv: BTreeMap<&str, &str> = words[2..]
                    .iter()
                    .map(|w| w.split_once('=').expect("key=value"))
                    .collect();
                let ms = |k: &str| Duration::from_millis(kv[k].parse().unwrap());
                out.push(Scenario {
                    name: words[1].to_string(),
                    file: kv["file"].to_string(),
                    client_comp: kv["client_compress"].parse().unwrap(),
                    server_comp: kv["server_compress"].parse().unwrap(),
                    sniff: if kv["sniff"] == "-" {
                        Vec::new()
                    } else {
                        unhex(kv["sniff"])
                    },
                    version: kv["version"].parse().unwrap(),
                    client_delay: ms("client_batch_delay_ms"),
                    server_delay: ms("server_batch_delay_ms"),
                    pipelined: kv["pipelined"].parse().unwrap(),
                    client_bytes: kv["client_bytes"].parse().unwrap(),
                    server_bytes: kv["server_bytes"].parse().unwrap(),
                    steps: Vec::new(),
                });
            }
            "step" => {
                assert!(open, "step outside a scenario: {line}");
                let s = &mut out.last_mut().unwrap().steps;
                s.push(match words[1] {
                    "handshake" => Step::Handshake,
                    "call" => Step::Call(Data::parse(words[2]), Data::parse(words[3])),
                    "send" => Step::Send(Data::parse(words[2]), Data::parse(words[3])),
                    "burst" => Step::Burst {
                        count: words[2].parse().unwrap(),
                        name_len: words[3].parse().unwrap(),
                        value_len: words[4].parse().unwrap(),
                    },
                    w => panic!("unknown step {w:?}"),
                });
            }
            "end" => open = false,
            w => panic!("unknown manifest line {w:?}"),
        }
    }
    assert!(format_seen && !open, "manifest.txt is cut short");
    out
}

fn scenario(name: &str) -> Scenario {
    manifest()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario {name} in manifest.txt"))
}

fn recording(sc: &Scenario) -> Vec<Segment> {
    let f = std::fs::File::open(data_dir().join(&sc.file)).expect("recording file");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut raw)
        .expect("gzip");
    assert_eq!(&raw[..8], b"FRPCREC1", "{}: magic", sc.file);
    let mut pos = 8;
    let mut take = |raw: &[u8], len: Option<usize>| -> Vec<u8> {
        let n = len.unwrap_or(4);
        let v = raw[pos..pos + n].to_vec();
        pos += n;
        v
    };
    let count = |b: Vec<u8>| u32::from_le_bytes(b.try_into().unwrap()) as usize;
    let n = count(take(&raw, None));
    let mut segs = Vec::new();
    for _ in 0..n {
        let cl = count(take(&raw, None));
        let client = take(&raw, Some(cl));
        let sl = count(take(&raw, None));
        let server = take(&raw, Some(sl));
        segs.push(Segment { client, server });
    }
    assert_eq!(pos, raw.len(), "{}: trailing bytes", sc.file);
    assert_eq!(
        segs.len(),
        sc.steps.len(),
        "{}: one segment per step",
        sc.name
    );
    let tc: usize = segs.iter().map(|s| s.client.len()).sum();
    let ts: usize = segs.iter().map(|s| s.server.len()).sum();
    assert_eq!(
        (tc, ts),
        (sc.client_bytes, sc.server_bytes),
        "{}: byte counts",
        sc.name
    );
    segs
}

// ---------------------------------------------------------------------------------------------
// Independent stream decoders and frame parsers.

/// One direction's decompressor, fed the stream in pieces.
enum Decoder {
    None,
    Flate(Box<Decompress>),
    Snappy { pending: Vec<u8>, seen_id: bool },
}

impl Decoder {
    fn new(c: Compression) -> Decoder {
        match c {
            Compression::None => Decoder::None,
            Compression::Flate => Decoder::Flate(Box::new(Decompress::new(false))),
            Compression::Snappy => Decoder::Snappy {
                pending: Vec::new(),
                seen_id: false,
            },
        }
    }

    /// Decodes `input`, appending to `out`; a snappy chunk cut short waits for more.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        match self {
            Decoder::None => out.extend_from_slice(input),
            Decoder::Flate(z) => {
                let mut rest = input;
                loop {
                    out.reserve(64 * 1024);
                    let (i0, o0) = (z.total_in(), z.total_out());
                    z.decompress_vec(rest, out, FlushDecompress::Sync)
                        .expect("a valid DEFLATE stream");
                    let used = (z.total_in() - i0) as usize;
                    rest = &rest[used..];
                    if used == 0 && z.total_out() == o0 {
                        break;
                    }
                }
                assert!(rest.is_empty(), "inflate left {} bytes unread", rest.len());
            }
            Decoder::Snappy { pending, seen_id } => {
                pending.extend_from_slice(input);
                let mut pos = 0;
                while pending.len() - pos >= 4 {
                    let h = &pending[pos..pos + 4];
                    let len = h[1] as usize | (h[2] as usize) << 8 | (h[3] as usize) << 16;
                    if pending.len() - pos < 4 + len {
                        break;
                    }
                    let body = &pending[pos + 4..pos + 4 + len];
                    match h[0] {
                        0xff => {
                            assert_eq!(body, b"sNaPpY", "snappy stream identifier");
                            *seen_id = true;
                        }
                        0x00 | 0x01 => {
                            assert!(*seen_id, "snappy chunk before the stream identifier");
                            let crc = u32::from_le_bytes(body[..4].try_into().unwrap());
                            let data = if h[0] == 0x00 {
                                snap::raw::Decoder::new()
                                    .decompress_vec(&body[4..])
                                    .expect("a valid snappy block")
                            } else {
                                body[4..].to_vec()
                            };
                            assert!(data.len() <= 65536, "snappy chunk over 64 KiB");
                            let want = crc32c::crc32c(&data)
                                .rotate_right(15)
                                .wrapping_add(0xa282_ead8);
                            assert_eq!(crc, want, "snappy chunk checksum");
                            out.extend_from_slice(&data);
                        }
                        k => panic!("unexpected snappy chunk type {k:#x}"),
                    }
                    pos += 4 + len;
                }
                pending.drain(..pos);
            }
        }
    }

    /// Whether the bytes fed so far end on a chunk boundary (always true but for snappy).
    fn at_boundary(&self) -> bool {
        match self {
            Decoder::Snappy { pending, .. } => pending.is_empty(),
            _ => true,
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// A request frame: id, name, value.
type Request = (u32, Vec<u8>, Vec<u8>);
/// A response frame: id, value.
type Response = (u32, Vec<u8>);

/// Parses whole request frames from the front of `b`, removing them.
fn take_requests(b: &mut Vec<u8>) -> Vec<Request> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        if b.len() - pos < 8 {
            break;
        }
        let nl = u32_at(b, pos + 4) as usize;
        if b.len() - pos < 12 + nl {
            break;
        }
        let vl = u32_at(b, pos + 8 + nl) as usize;
        let end = pos + 12 + nl + vl;
        if b.len() < end {
            break;
        }
        out.push((
            u32_at(b, pos),
            b[pos + 8..pos + 8 + nl].to_vec(),
            b[pos + 12 + nl..end].to_vec(),
        ));
        pos = end;
    }
    b.drain(..pos);
    out
}

/// Parses whole response frames from the front of `b`, removing them.
fn take_responses(b: &mut Vec<u8>) -> Vec<Response> {
    let mut out = Vec::new();
    let mut pos = 0;
    while b.len() - pos >= 8 {
        let vl = u32_at(b, pos + 4) as usize;
        let end = pos + 8 + vl;
        if b.len() < end {
            break;
        }
        out.push((u32_at(b, pos), b[pos + 8..end].to_vec()));
        pos = end;
    }
    b.drain(..pos);
    out
}

/// The data lengths of the snappy chunks in `seg` (the stream identifier is skipped).
fn snappy_chunk_sizes(seg: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < seg.len() {
        let h = &seg[pos..pos + 4];
        let len = h[1] as usize | (h[2] as usize) << 8 | (h[3] as usize) << 16;
        let body = &seg[pos + 4..pos + 4 + len];
        match h[0] {
            0x00 => out.push(snap::raw::decompress_len(&body[4..]).unwrap()),
            0x01 => out.push(len - 4),
            _ => {}
        }
        pos += 4 + len;
    }
    out
}

/// The snappy chunk sizes the reference writes for one frame sent alone: its tlv code makes
/// the `writes` into a 64 KiB `bufio.Writer` (request: id, name length, name, value length,
/// value; response: id, value length, value), then flushes. A bufio.Writer passes a write
/// larger than its free space straight through once it is empty, and the snappy writer cuts
/// each write it gets into 64 KiB chunks, so a chunk ends wherever such a write ends.
fn reference_chunks(writes: &[usize]) -> Vec<usize> {
    const BUF: usize = 64 * 1024;
    fn emit(mut n: usize, out: &mut Vec<usize>) {
        while n > 0 {
            let c = n.min(BUF);
            out.push(c);
            n -= c;
        }
    }
    let mut out = Vec::new();
    let mut buffered = 0;
    for &w in writes {
        let mut p = w;
        while p > BUF - buffered {
            if buffered == 0 {
                emit(p, &mut out);
                p = 0;
            } else {
                p -= BUF - buffered;
                emit(BUF, &mut out);
                buffered = 0;
            }
        }
        buffered += p;
    }
    emit(buffered, &mut out);
    out
}

/// Our snappy chunks for one flush of `total` bytes: 64 KiB chunks from the flush's start.
fn our_chunks(total: usize) -> Vec<usize> {
    let mut out = vec![64 * 1024; total / (64 * 1024)];
    if total % (64 * 1024) != 0 {
        out.push(total % (64 * 1024));
    }
    out
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a.iter().zip(b).position(|(x, y)| x != y);
    match at {
        Some(i) => format!(
            "first difference at byte {i} of {} (ours) / {} (reference): ours {:02x?}, reference {:02x?}",
            a.len(),
            b.len(),
            &a[i..(i + 16).min(a.len())],
            &b[i..(i + 16).min(b.len())]
        ),
        None => format!("lengths differ: {} (ours) / {} (reference)", a.len(), b.len()),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading what our side writes and checking it against the reference's segment.

/// One direction of our side's stream, as read from a socket.
struct OurStream {
    comp: Compression,
    dec: Decoder,
    /// Decoded bytes not yet claimed by a step.
    plain: Vec<u8>,
}

/// The reference's stream of the same direction, decoded segment by segment.
struct RefStream {
    dec: Decoder,
}

impl RefStream {
    fn new(c: Compression) -> RefStream {
        RefStream {
            dec: Decoder::new(c),
        }
    }

    fn decode(&mut self, seg: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.dec.feed(seg, &mut out);
        assert!(
            self.dec.at_boundary(),
            "a recorded segment ends inside a chunk"
        );
        out
    }
}

/// Reads some bytes within `WAIT`; panics on timeout, returns an empty read at end of stream.
async fn read_some(sock: &mut TcpStream, what: &str, so_far: usize) -> Vec<u8> {
    let mut buf = vec![0u8; 256 * 1024];
    let n = tokio::time::timeout(WAIT, sock.read(&mut buf))
        .await
        .unwrap_or_else(|_| {
            panic!("{what}: nothing more came within {WAIT:?} after {so_far} bytes")
        })
        .expect("read");
    buf.truncate(n);
    buf
}

impl OurStream {
    fn new(c: Compression) -> OurStream {
        OurStream {
            comp: c,
            dec: Decoder::new(c),
            plain: Vec::new(),
        }
    }

    /// Reads exactly `n` raw bytes (the plaintext handshake, or a none/snappy segment).
    async fn read_exact_raw(&mut self, sock: &mut TcpStream, n: usize, what: &str) -> Vec<u8> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let mut buf = vec![0u8; (n - got.len()).min(256 * 1024)];
            let r = tokio::time::timeout(WAIT, sock.read(&mut buf))
                .await
                .unwrap_or_else(|_| {
                    panic!("{what}: got {} of {n} bytes within {WAIT:?}", got.len())
                })
                .expect("read");
            assert!(
                r > 0,
                "{what}: the stream ended after {} of {n} bytes",
                got.len()
            );
            got.extend_from_slice(&buf[..r]);
        }
        got
    }

    /// Checks that our side writes `seg` next, where the reference wrote `seg` (its decoding
    /// `want_plain`): the same bytes for none and snappy; for flate the same decoded bytes,
    /// ending with a sync flush.
    ///
    /// `writes` are the reference's writes of this one frame (see `reference_chunks`): where
    /// its chunking differs from ours (a name or value over 64 KiB that is not the frame's
    /// last write), the snappy bytes cannot be the same; then the test checks that the
    /// reference's chunks are the ones its writes explain, that ours are 64 KiB chunks of the
    /// whole flush, and that both decode to the same bytes.
    async fn expect_segment(
        &mut self,
        sock: &mut TcpStream,
        seg: &[u8],
        want_plain: &[u8],
        writes: &[usize],
        what: &str,
    ) {
        let total: usize = writes.iter().sum();
        let chunking_differs = self.comp == Compression::Snappy
            && want_plain.len() == total
            && reference_chunks(writes) != our_chunks(total);
        if chunking_differs {
            assert_eq!(
                snappy_chunk_sizes(seg),
                reference_chunks(writes),
                "{what}: the reference's chunks are not those its writes explain"
            );
            let mut raw: Vec<u8> = Vec::new();
            let mut plain = Vec::new();
            while plain.len() < want_plain.len() || !self.dec.at_boundary() {
                let b = read_some(sock, what, raw.len()).await;
                assert!(!b.is_empty(), "{what}: the stream ended");
                raw.extend_from_slice(&b);
                self.dec.feed(&b, &mut plain);
                assert!(plain.len() <= want_plain.len(), "{what}: ours sent more");
            }
            assert!(
                plain == want_plain,
                "{what}: decoded bytes differ: {}",
                first_difference(&plain, want_plain)
            );
            assert_eq!(
                snappy_chunk_sizes(&raw),
                our_chunks(total),
                "{what}: our chunks"
            );
            return;
        }
        match self.comp {
            Compression::None | Compression::Snappy => {
                let got = self.read_exact_raw(sock, seg.len(), what).await;
                assert!(got == seg, "{what}: {}", first_difference(&got, seg));
                let mut plain = Vec::new();
                self.dec.feed(&got, &mut plain);
                assert!(self.dec.at_boundary());
            }
            Compression::Flate => {
                assert!(
                    seg.is_empty() || seg.ends_with(&SYNC_FLUSH),
                    "{what}: the reference's segment does not end with a sync flush"
                );
                let mut raw: Vec<u8> = Vec::new();
                let mut plain = std::mem::take(&mut self.plain);
                while plain.len() < want_plain.len() || !raw.ends_with(&SYNC_FLUSH) {
                    let b = read_some(sock, what, raw.len()).await;
                    assert!(
                        !b.is_empty(),
                        "{what}: the stream ended after {} decoded bytes of {}",
                        plain.len(),
                        want_plain.len()
                    );
                    raw.extend_from_slice(&b);
                    self.dec.feed(&b, &mut plain);
                    assert!(
                        plain.len() <= want_plain.len(),
                        "{what}: ours decoded to {} bytes, more than the reference's {}",
                        plain.len(),
                        want_plain.len()
                    );
                }
                assert!(
                    plain == want_plain,
                    "{what}: decoded bytes differ: {}",
                    first_difference(&plain, want_plain)
                );
            }
        }
    }

    /// Reads until `count` whole frames (requests if `requests`) have arrived, and the stream
    /// ends on a flush boundary (a whole snappy chunk; a sync flush for flate).
    async fn read_frames(
        &mut self,
        sock: &mut TcpStream,
        count: usize,
        requests: bool,
        what: &str,
    ) -> (Vec<Request>, Vec<Response>) {
        let (mut reqs, mut resps) = (Vec::new(), Vec::new());
        let mut raw_tail: Vec<u8> = Vec::new();
        loop {
            if requests {
                reqs.extend(take_requests(&mut self.plain));
            } else {
                resps.extend(take_responses(&mut self.plain));
            }
            let n = reqs.len() + resps.len();
            assert!(n <= count, "{what}: more than {count} frames");
            let flushed = match self.comp {
                Compression::Flate => raw_tail.ends_with(&SYNC_FLUSH),
                _ => self.dec.at_boundary(),
            };
            if n == count && self.plain.is_empty() && flushed {
                return (reqs, resps);
            }
            let b = read_some(sock, what, n).await;
            assert!(
                !b.is_empty(),
                "{what}: the stream ended after {n} of {count} frames"
            );
            raw_tail.extend_from_slice(&b);
            let keep = raw_tail.len().saturating_sub(4);
            raw_tail.drain(..keep);
            let mut plain = std::mem::take(&mut self.plain);
            self.dec.feed(&b, &mut plain);
            self.plain = plain;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Our server against the reference client's bytes.

async fn replay_to_our_server(sc: &Scenario) {
    let segs = recording(sc);
    let mut cfg = ServerConfig::default();
    cfg.sniff_header = sc.sniff.clone();
    cfg.protocol_version = sc.version;
    cfg.compress_type = sc.server_comp;
    cfg.max_batch_delay = sc.server_delay;
    cfg.pipeline_requests = sc.pipelined;
    let server = Server::bind("127.0.0.1:0", cfg, |call: Call| {
        let r = reply(call.name(), call.value());
        let _ = call.reply(&r);
    })
    .await
    .expect("bind");
    let mut sock = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut ref_client = RefStream::new(sc.client_comp);
    let mut ref_server = RefStream::new(sc.server_comp);
    let mut ours = OurStream::new(sc.server_comp);
    for (i, (step, seg)) in sc.steps.iter().zip(&segs).enumerate() {
        let what = format!("{} step {i} ({step:?}): our server", sc.name);
        sock.write_all(&seg.client).await.unwrap();
        match step {
            Step::Handshake => {
                let got = ours
                    .read_exact_raw(&mut sock, seg.server.len(), &what)
                    .await;
                assert_eq!(got, seg.server, "{what}: handshake");
            }
            Step::Call(..) | Step::Send(..) => {
                let _ = ref_client.decode(&seg.client);
                let want = ref_server.decode(&seg.server);
                if matches!(step, Step::Send(..)) {
                    // Nothing may come back; any stray byte would show in the next step.
                    assert!(
                        seg.server.is_empty(),
                        "{what}: the reference answered a send"
                    );
                    continue;
                }
                let (n, v) = match step {
                    Step::Call(n, v) => (n, v),
                    _ => unreachable!(),
                };
                let writes = [4, 4, reply(&n.bytes(), &v.bytes()).len()];
                ours.expect_segment(&mut sock, &seg.server, &want, &writes, &what)
                    .await;
            }
            Step::Burst { count, .. } => {
                let mut req_plain = ref_client.decode(&seg.client);
                let reqs = take_requests(&mut req_plain);
                let mut resp_plain = ref_server.decode(&seg.server);
                let mut want = take_responses(&mut resp_plain);
                assert!(req_plain.is_empty() && resp_plain.is_empty());
                assert_eq!(
                    (reqs.len(), want.len()),
                    (*count, *count),
                    "{what}: recording"
                );
                // Concurrent handlers answer in any order and the writer batches whatever is
                // ready, on both sides: compare the set of responses. A pipelined server
                // answers in request order, so there the order must match too.
                let (_, mut got) = ours.read_frames(&mut sock, *count, false, &what).await;
                if sc.pipelined {
                    let order: Vec<u32> = reqs.iter().map(|r| r.0).collect();
                    let got_order: Vec<u32> = got.iter().map(|r| r.0).collect();
                    assert_eq!(got_order, order, "{what}: pipelined responses out of order");
                }
                got.sort();
                want.sort();
                assert!(got == want, "{what}: the set of responses differs");
            }
        }
    }
    // The reference client is done: our server must have nothing more to say, and close.
    sock.shutdown().await.unwrap();
    let rest = read_some(&mut sock, &format!("{}: end", sc.name), 0).await;
    assert!(
        rest.is_empty(),
        "{}: {} bytes after the last step",
        sc.name,
        rest.len()
    );
    server.stop(Duration::from_secs(5)).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Our client against the reference server's bytes.

struct Sink(mpsc::UnboundedSender<(u128, Result<Vec<u8>, String>)>);

impl Completion for Sink {
    fn complete(&self, tag: u128, result: Result<&[u8], &Error>) {
        let _ = self
            .0
            .send((tag, result.map(|v| v.to_vec()).map_err(|e| e.to_string())));
    }
}

async fn replay_to_our_client(sc: &Scenario) {
    let segs = recording(sc);
    let ln = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = ClientConfig::new(ln.local_addr().unwrap().to_string());
    cfg.sniff_header = sc.sniff.clone();
    cfg.protocol_version = sc.version;
    cfg.compress_type = sc.client_comp;
    cfg.max_batch_delay = sc.client_delay;
    cfg.request_timeout = Duration::from_secs(60);
    let client = Client::new(cfg).unwrap();

    let mut ref_client = RefStream::new(sc.client_comp);
    let mut ref_server = RefStream::new(sc.server_comp);
    let mut ours = OurStream::new(sc.client_comp);
    let mut sock: Option<TcpStream> = None;
    assert!(
        matches!(sc.steps[0], Step::Handshake),
        "{}: starts with the handshake",
        sc.name
    );

    // The client connects on its first request: accept then, and play the handshake.
    async fn connect(
        sock: &mut Option<TcpStream>,
        ln: &TcpListener,
        ours: &mut OurStream,
        hs: &Segment,
        what: &str,
    ) {
        if sock.is_some() {
            return;
        }
        let (mut s, _) = tokio::time::timeout(WAIT, ln.accept())
            .await
            .unwrap_or_else(|_| panic!("{what}: our client never connected"))
            .unwrap();
        let got = ours.read_exact_raw(&mut s, hs.client.len(), what).await;
        assert_eq!(got, hs.client, "{what}: handshake");
        s.write_all(&hs.server).await.unwrap();
        *sock = Some(s);
    }

    for (i, (step, seg)) in sc.steps.iter().zip(&segs).enumerate().skip(1) {
        let what = format!("{} step {i} ({step:?}): our client", sc.name);
        match step {
            Step::Handshake => panic!("{what}: a second handshake"),
            Step::Call(n, v) | Step::Send(n, v) => {
                let (name, value) = (n.bytes(), v.bytes());
                let want_plain = ref_client.decode(&seg.client);
                let _ = ref_server.decode(&seg.server);
                let call = if matches!(step, Step::Call(..)) {
                    let c = client.clone();
                    let (n2, v2) = (name.clone(), value.clone());
                    Some(tokio::spawn(async move { c.call(&n2, &v2).await }))
                } else {
                    client.send(&name, &value).expect("send");
                    None
                };
                connect(&mut sock, &ln, &mut ours, &segs[0], &what).await;
                let s = sock.as_mut().unwrap();
                let writes = [4, 4, name.len(), 4, value.len()];
                ours.expect_segment(s, &seg.client, &want_plain, &writes, &what)
                    .await;
                s.write_all(&seg.server).await.unwrap();
                if let Some(call) = call {
                    let got = tokio::time::timeout(WAIT, call)
                        .await
                        .unwrap_or_else(|_| panic!("{what}: no response within {WAIT:?}"))
                        .unwrap()
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(got == reply(&name, &value), "{what}: wrong response value");
                }
            }
            Step::Burst {
                count,
                name_len,
                value_len,
            } => {
                let mut req_plain = ref_client.decode(&seg.client);
                let mut want = take_requests(&mut req_plain);
                let _ = ref_server.decode(&seg.server);
                assert_eq!(want.len(), *count, "{what}: recording");
                want.sort();
                // Submit the calls in the order of the reference's request ids, so that ours
                // numbers each call as the reference did and the reference server's recorded
                // responses answer the right calls. Which frames share a batch depends on
                // timing on both sides, so the requests are compared as a set of frames.
                let (tx, mut rx) = mpsc::unbounded_channel();
                let sink = Arc::new(Sink(tx));
                let mut expect: BTreeMap<u128, Vec<u8>> = BTreeMap::new();
                for (tag, (_, name, value)) in want.iter().enumerate() {
                    let k = (0..*count)
                        .find(|&k| Step::burst_call(*name_len, *value_len, k).0 == *name)
                        .expect("a burst call of the manifest");
                    assert_eq!(
                        Step::burst_call(*name_len, *value_len, k).1,
                        *value,
                        "{what}: recorded value"
                    );
                    expect.insert(tag as u128, reply(name, value));
                    client
                        .submit(
                            name,
                            value,
                            Duration::from_secs(60),
                            sink.clone(),
                            tag as u128,
                        )
                        .expect("submit");
                }
                let s = sock.as_mut().expect("connected before the burst");
                let (mut got, _) = ours.read_frames(s, *count, true, &what).await;
                got.sort();
                assert!(got == want, "{what}: the set of request frames differs");
                s.write_all(&seg.server).await.unwrap();
                for _ in 0..*count {
                    let (tag, r) = tokio::time::timeout(WAIT, rx.recv())
                        .await
                        .unwrap_or_else(|_| panic!("{what}: a call did not complete"))
                        .unwrap();
                    let v = r.unwrap_or_else(|e| panic!("{what}: call {tag}: {e}"));
                    assert!(
                        v == expect[&tag],
                        "{what}: call {tag}: wrong response value"
                    );
                }
            }
        }
    }
    let stats = client.stats();
    assert_eq!(stats.connects, 1, "{}: our client reconnected", sc.name);
    assert_eq!(stats.unexpected_responses, 0, "{}", sc.name);
    client.close(fastrpc::CloseMode::Cancel).await;
    // After the client closes, nothing more may have been written.
    let s = sock.as_mut().unwrap();
    let rest = read_some(s, &format!("{}: end", sc.name), 0).await;
    assert!(
        rest.is_empty(),
        "{}: {} bytes after the last step",
        sc.name,
        rest.len()
    );
}

// ---------------------------------------------------------------------------------------------
// The tests: one per scenario and direction, named after the manifest's scenarios.

macro_rules! replay_tests {
    ($($server:ident, $client:ident: $name:literal;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $server() {
            let sc = scenario($name);
            tokio::time::timeout(Duration::from_secs(120), replay_to_our_server(&sc))
                .await
                .expect("the replay finishes within 120 s");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $client() {
            let sc = scenario($name);
            tokio::time::timeout(Duration::from_secs(120), replay_to_our_client(&sc))
                .await
                .expect("the replay finishes within 120 s");
        }
    )*};
}

replay_tests! {
    reference_server_sizes_none, reference_client_sizes_none: "sizes-none";
    reference_server_sizes_flate, reference_client_sizes_flate: "sizes-flate";
    reference_server_sizes_snappy, reference_client_sizes_snappy: "sizes-snappy";
    reference_server_mixed_none_flate, reference_client_mixed_none_flate: "mixed-none-flate";
    reference_server_mixed_flate_snappy, reference_client_mixed_flate_snappy: "mixed-flate-snappy";
    reference_server_mixed_snappy_none, reference_client_mixed_snappy_none: "mixed-snappy-none";
    reference_server_sniff_version_none, reference_client_sniff_version_none: "sniff-version-none";
    reference_server_sniff_version_flate, reference_client_sniff_version_flate: "sniff-version-flate";
    reference_server_sniff_version_snappy, reference_client_sniff_version_snappy: "sniff-version-snappy";
    reference_server_batch_delay_none, reference_client_batch_delay_none: "batch-delay-none";
    reference_server_batch_delay_flate, reference_client_batch_delay_flate: "batch-delay-flate";
    reference_server_batch_delay_snappy, reference_client_batch_delay_snappy: "batch-delay-snappy";
    reference_server_pipelined_none, reference_client_pipelined_none: "pipelined-none";
    reference_server_pipelined_flate, reference_client_pipelined_flate: "pipelined-flate";
    reference_server_pipelined_snappy, reference_client_pipelined_snappy: "pipelined-snappy";
    reference_server_send_none, reference_client_send_none: "send-none";
    reference_server_send_flate, reference_client_send_flate: "send-flate";
    reference_server_send_snappy, reference_client_send_snappy: "send-snappy";
    reference_server_burst_none, reference_client_burst_none: "burst-none";
    reference_server_burst_flate, reference_client_burst_flate: "burst-flate";
    reference_server_burst_snappy, reference_client_burst_snappy: "burst-snappy";
}

/// Every scenario of the manifest has its two tests above, and every recording file is in
/// the manifest (a re-recording that adds a scenario must add its tests).
#[test]
fn reference_recordings_all_replayed() {
    let tested: &[&str] = &[
        "sizes-none",
        "sizes-flate",
        "sizes-snappy",
        "mixed-none-flate",
        "mixed-flate-snappy",
        "mixed-snappy-none",
        "sniff-version-none",
        "sniff-version-flate",
        "sniff-version-snappy",
        "batch-delay-none",
        "batch-delay-flate",
        "batch-delay-snappy",
        "pipelined-none",
        "pipelined-flate",
        "pipelined-snappy",
        "send-none",
        "send-flate",
        "send-snappy",
        "burst-none",
        "burst-flate",
        "burst-snappy",
    ];
    let m = manifest();
    let mut names: Vec<&str> = m.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    let mut want = tested.to_vec();
    want.sort();
    assert_eq!(names, want);
    let mut files: Vec<String> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".rec.gz"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = m.iter().map(|s| s.file.clone()).collect();
    listed.sort();
    assert_eq!(files, listed);
    for sc in &m {
        let segs = recording(sc);
        // The handshake segments are the plaintext headers the manifest describes.
        let hs = |c: Compression| {
            let mut v = sc.sniff.clone();
            v.extend_from_slice(&[sc.version, c.code(), 0]);
            v
        };
        assert_eq!(segs[0].client, hs(sc.client_comp), "{}", sc.name);
        assert_eq!(segs[0].server, hs(sc.server_comp), "{}", sc.name);
    }
}
