//! Byte-level tests that do not rest on our client agreeing with our server: a raw socket
//! plays the peer, and the test encodes and decodes every stream itself (flate2 raw DEFLATE
//! with sync flushes; snap::raw plus its own Snappy framing-format chunks with masked
//! CRC-32C), never through fastrpc's own compress module.
//!
//! The contract is docs/PROTOCOL.md: handshake `sniff, [version, compress, want_tls]` each
//! way; request frames `id, name len, name, value len, value`; response frames `id, value len,
//! value`; all u32 little-endian; compression codes flate 0, none 1, snappy 2.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use fastrpc::{Call, Client, ClientConfig, Compression, Server, ServerConfig};

const SNIFF: &[u8] = b"xyz";
const VERSION: u8 = 7;
const TEST_LIMIT: Duration = Duration::from_secs(30);
const ALL: [Compression; 3] = [Compression::None, Compression::Flate, Compression::Snappy];

/// The handshake code of a compression, as PROTOCOL.md numbers them (not `Compression::code`).
fn code(c: Compression) -> u8 {
    match c {
        Compression::Flate => 0,
        Compression::None => 1,
        Compression::Snappy => 2,
    }
}

fn handshake(sniff: &[u8], version: u8, c: Compression) -> Vec<u8> {
    let mut v = sniff.to_vec();
    v.extend_from_slice(&[version, code(c), 0]);
    v
}

fn req(id: u32, name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&(name.len() as u32).to_le_bytes());
    v.extend_from_slice(name);
    v.extend_from_slice(&(value.len() as u32).to_le_bytes());
    v.extend_from_slice(value);
    v
}

fn resp(id: u32, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&(value.len() as u32).to_le_bytes());
    v.extend_from_slice(value);
    v
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Splits a whole response stream into the exact bytes of each frame; panics on a partial
/// frame at the end.
fn response_frames(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        assert!(b.len() >= 8, "partial response header at the end: {b:?}");
        let len = u32_at(b, 4) as usize;
        assert!(
            b.len() >= 8 + len,
            "partial response frame at the end: id {} wants {len} bytes, {} left",
            u32_at(b, 0),
            b.len() - 8
        );
        out.push(b[..8 + len].to_vec());
        b = &b[8 + len..];
    }
    out
}

/// Deterministic bytes that do not compress (xorshift).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The test's own stream codecs.

const SNAPPY_STREAM_ID: [u8; 10] = [0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50, 0x70, 0x59];

fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn snappy_chunk(kind: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 1 << 24);
    let mut v = vec![kind];
    v.extend_from_slice(&(body.len() as u32).to_le_bytes()[..3]);
    v.extend_from_slice(body);
    v
}

/// One direction's compressing writer: `flush` returns the wire bytes of one flush.
struct StreamEncoder {
    kind: Compression,
    deflate: Compress,
    snappy_started: bool,
}

impl StreamEncoder {
    fn new(kind: Compression) -> StreamEncoder {
        StreamEncoder {
            kind,
            deflate: Compress::new(flate2::Compression::new(6), false),
            snappy_started: false,
        }
    }

    fn flush(&mut self, plain: &[u8]) -> Vec<u8> {
        self.flush_with(plain, false)
    }

    /// `stored`: for snappy, write uncompressed (0x01) chunks even when compression helps.
    fn flush_with(&mut self, plain: &[u8], stored: bool) -> Vec<u8> {
        match self.kind {
            Compression::None => plain.to_vec(),
            Compression::Flate => {
                let z = &mut self.deflate;
                let mut out = Vec::with_capacity(plain.len() + 256);
                let start = z.total_in();
                loop {
                    if out.capacity() - out.len() < 256 {
                        out.reserve(out.capacity().max(4096));
                    }
                    let used = (z.total_in() - start) as usize;
                    z.compress_vec(&plain[used..], &mut out, FlushCompress::Sync)
                        .expect("deflate");
                    let used = (z.total_in() - start) as usize;
                    // A sync flush is complete when zlib left output room unused.
                    if used == plain.len() && out.len() < out.capacity() {
                        break;
                    }
                }
                assert!(
                    out.ends_with(&[0, 0, 0xff, 0xff]),
                    "a sync flush ends with an empty stored block"
                );
                out
            }
            Compression::Snappy => {
                let mut out = Vec::new();
                if !self.snappy_started {
                    self.snappy_started = true;
                    out.extend_from_slice(&SNAPPY_STREAM_ID);
                }
                for block in plain.chunks(65536) {
                    let crc = masked_crc(block).to_le_bytes();
                    let packed = snap::raw::Encoder::new()
                        .compress_vec(block)
                        .expect("snappy");
                    let mut body = crc.to_vec();
                    if !stored && packed.len() < block.len() {
                        body.extend_from_slice(&packed);
                        out.extend(snappy_chunk(0x00, &body));
                    } else {
                        body.extend_from_slice(block);
                        out.extend(snappy_chunk(0x01, &body));
                    }
                }
                out
            }
        }
    }
}

/// One direction's decompressing reader: `push` wire bytes, take `plain`.
struct StreamDecoder {
    kind: Compression,
    inflate: Decompress,
    raw: Vec<u8>,
    chunks: usize,
    plain: Vec<u8>,
}

impl StreamDecoder {
    fn new(kind: Compression) -> StreamDecoder {
        StreamDecoder {
            kind,
            inflate: Decompress::new(false),
            raw: Vec::new(),
            chunks: 0,
            plain: Vec::new(),
        }
    }

    fn push(&mut self, wire: &[u8]) {
        match self.kind {
            Compression::None => self.plain.extend_from_slice(wire),
            Compression::Flate => {
                self.raw.extend_from_slice(wire);
                loop {
                    if self.plain.capacity() - self.plain.len() < 32 * 1024 {
                        self.plain.reserve(64 * 1024);
                    }
                    let (i0, o0) = (self.inflate.total_in(), self.inflate.total_out());
                    let st = self
                        .inflate
                        .decompress_vec(&self.raw, &mut self.plain, FlushDecompress::None)
                        .expect("the peer's DEFLATE stream is corrupt");
                    let used = (self.inflate.total_in() - i0) as usize;
                    self.raw.drain(..used);
                    assert_ne!(st, Status::StreamEnd, "the peer ended its DEFLATE stream");
                    if used == 0 && self.inflate.total_out() == o0 {
                        break;
                    }
                }
            }
            Compression::Snappy => {
                self.raw.extend_from_slice(wire);
                let mut off = 0;
                while self.raw.len() - off >= 4 {
                    let h = &self.raw[off..];
                    let kind = h[0];
                    let len = u32::from_le_bytes([h[1], h[2], h[3], 0]) as usize;
                    if h.len() < 4 + len {
                        break;
                    }
                    let body = &h[4..4 + len];
                    if self.chunks == 0 {
                        assert_eq!(
                            &h[..4 + len],
                            &SNAPPY_STREAM_ID[..],
                            "a snappy stream starts with the stream identifier"
                        );
                    }
                    match kind {
                        0xff => assert_eq!(body, b"sNaPpY"),
                        0x00 | 0x01 => {
                            assert!(len >= 4, "snappy data chunk shorter than its CRC");
                            let crc = u32_at(body, 0);
                            let data = if kind == 0x00 {
                                snap::raw::Decoder::new()
                                    .decompress_vec(&body[4..])
                                    .expect("corrupt snappy block")
                            } else {
                                body[4..].to_vec()
                            };
                            assert!(data.len() <= 65536, "snappy chunk over 64 KiB");
                            assert_eq!(masked_crc(&data), crc, "snappy chunk CRC");
                            self.plain.extend_from_slice(&data);
                        }
                        0x80..=0xfe => {}
                        k => panic!("unskippable reserved snappy chunk type 0x{k:02x}"),
                    }
                    self.chunks += 1;
                    off += 4 + len;
                }
                self.raw.drain(..off);
            }
        }
    }

    /// Nothing is left half-decoded.
    fn assert_clean(&self) {
        assert!(
            self.raw.is_empty(),
            "{} wire bytes left undecoded at the end of the stream",
            self.raw.len()
        );
    }
}

/// Reads from `s` until the decoder holds at least `n` plain bytes.
async fn read_plain(s: &mut TcpStream, dec: &mut StreamDecoder, n: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    while dec.plain.len() < n {
        let k = s.read(&mut buf).await.expect("read");
        assert!(
            k > 0,
            "EOF after {} of {n} expected plain bytes",
            dec.plain.len()
        );
        dec.push(&buf[..k]);
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s: {what}");
}

// ---------------------------------------------------------------------------------------
// 1. A raw socket as the client of our server.

type Seen = Arc<Mutex<Vec<(u32, Vec<u8>, Vec<u8>)>>>;

async fn echo_server(sc: Compression) -> (Server, Seen) {
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let mut cfg = ServerConfig::default();
    cfg.sniff_header = SNIFF.to_vec();
    cfg.protocol_version = VERSION;
    cfg.compress_type = sc;
    let server = Server::bind("127.0.0.1:0", cfg, move |call: Call| {
        s2.lock().unwrap().push((
            call.request_id(),
            call.name().to_vec(),
            call.value().to_vec(),
        ));
        let mut v = call.name().to_vec();
        v.push(b':');
        v.extend_from_slice(call.value());
        let _ = call.reply(&v);
    })
    .await
    .unwrap();
    (server, seen)
}

async fn raw_client_against_our_server(cc: Compression, sc: Compression) {
    let ctx = format!("client {cc} -> server {sc}");
    let (server, seen) = echo_server(sc).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    s.set_nodelay(true).unwrap();

    s.write_all(&handshake(SNIFF, VERSION, cc)).await.unwrap();
    let mut hdr = [0u8; 6];
    s.read_exact(&mut hdr).await.unwrap();
    assert_eq!(hdr, [b'x', b'y', b'z', 7, code(sc), 0], "{ctx}");

    let big = noise(150_000, 42);
    let compressible = b"abcdefgh".repeat(20_000);
    // (id, name, value); id 0 is fire-and-forget.
    let batch: Vec<(u32, &[u8], &[u8])> = vec![
        (5, b"five", b"v5"),
        (3, b"", b"three"),
        (1_000_000, b"million", &big),
        (0, b"nowait", b"ff"),
        (u32::MAX, b"max-id", b""),
        (42, b"packed", &compressible),
    ];
    let mut plain = Vec::new();
    for (id, n, v) in &batch {
        plain.extend(req(*id, n, v));
    }
    // Several frames in one write.
    let mut enc = StreamEncoder::new(cc);
    s.write_all(&enc.flush(&plain)).await.unwrap();

    // One frame split across three flushes, every wire byte its own write.
    let f7 = req(7, b"split", b"byte by byte");
    for part in [&f7[..5], &f7[5..13], &f7[13..]] {
        for b in enc.flush(part) {
            s.write_all(&[b]).await.unwrap();
        }
    }
    let mut requests: Vec<(u32, Vec<u8>, Vec<u8>)> = batch
        .iter()
        .map(|(i, n, v)| (*i, n.to_vec(), v.to_vec()))
        .collect();
    requests.push((7, b"split".to_vec(), b"byte by byte".to_vec()));

    // Snappy extras: padding and skippable chunks, and a stored (0x01) chunk of data that
    // would compress.
    let f9 = req(9, b"stored", &b"zzzz".repeat(100));
    let mut w = Vec::new();
    if cc == Compression::Snappy {
        w.extend(snappy_chunk(0xfe, &[0, 0, 0]));
        w.extend(snappy_chunk(0x80, b"skip me"));
    }
    w.extend(enc.flush_with(&f9, true));
    s.write_all(&w).await.unwrap();
    requests.push((9, b"stored".to_vec(), b"zzzz".repeat(100)));

    // End our direction: the server answers what it has, then closes its own.
    s.shutdown().await.unwrap();
    let mut wire = Vec::new();
    s.read_to_end(&mut wire).await.unwrap();
    let mut dec = StreamDecoder::new(sc);
    dec.push(&wire);
    dec.assert_clean();

    let mut got = response_frames(&dec.plain);
    let mut want: Vec<Vec<u8>> = requests
        .iter()
        .filter(|(id, _, _)| *id != 0)
        .map(|(id, n, v)| {
            let mut e = n.clone();
            e.push(b':');
            e.extend_from_slice(v);
            resp(*id, &e)
        })
        .collect();
    assert!(
        got.iter().all(|f| u32_at(f, 0) != 0),
        "{ctx}: a response came for the fire-and-forget request"
    );
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len(), "{ctx}: number of responses");
    assert!(got == want, "{ctx}: response frames differ");

    // The handler saw every request exactly, the fire-and-forget one included.
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    requests.sort();
    assert!(seen == requests, "{ctx}: the handler saw other requests");
    let st = server.stats();
    assert_eq!(st.nowait_requests, 1, "{ctx}");
    assert_eq!(st.requests, 7, "{ctx}");
    assert_eq!(st.responses, 7, "{ctx}");
    assert_eq!(st.handshake_failures, 0, "{ctx}");
    assert_eq!(st.errors.total(), 0, "{ctx}: {:?}", st.errors);
    server.stop(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_none() {
    tokio::time::timeout(
        TEST_LIMIT,
        raw_client_against_our_server(Compression::None, Compression::None),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_flate() {
    tokio::time::timeout(
        TEST_LIMIT,
        raw_client_against_our_server(Compression::Flate, Compression::Flate),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_snappy() {
    tokio::time::timeout(
        TEST_LIMIT,
        raw_client_against_our_server(Compression::Snappy, Compression::Snappy),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_mixed_compressions() {
    tokio::time::timeout(TEST_LIMIT, async {
        for cc in ALL {
            for sc in ALL {
                if cc != sc {
                    raw_client_against_our_server(cc, sc).await;
                }
            }
        }
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// 2. A raw socket as the server of our client.

fn call_name(i: u32) -> Vec<u8> {
    format!("method-{i}").into_bytes()
}

fn call_value(i: u32) -> Vec<u8> {
    match i {
        4 => noise(100_000, 7),
        5 => b"0123456789".repeat(10_000),
        _ => format!("value-{i}").into_bytes(),
    }
}

fn reply_value(i: u32) -> Vec<u8> {
    let mut v = format!("reply-{i}:").into_bytes();
    v.extend(call_value(i).iter().rev());
    v
}

async fn raw_server_against_our_client(cc: Compression, sc: Compression) {
    let ctx = format!("client {cc} -> server {sc}");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut cfg = ClientConfig::new(&addr);
    cfg.sniff_header = SNIFF.to_vec();
    cfg.protocol_version = VERSION;
    cfg.compress_type = cc;
    let client = Client::new(cfg).unwrap();

    // Calls 1..=5 enqueued one after another (so call i gets id i), with a fire-and-forget
    // send after the second.
    let mut tasks = Vec::new();
    for i in 1..=5u32 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.call(&call_name(i), &call_value(i)).await
        }));
        wait_for("call enqueued", || client.pending_requests() == i as usize).await;
        if i == 2 {
            client.send(b"fire", b"and forget").unwrap();
        }
    }
    let mut expect = Vec::new();
    for i in 1..=5u32 {
        expect.extend(req(i, &call_name(i), &call_value(i)));
        if i == 2 {
            expect.extend(req(0, b"fire", b"and forget"));
        }
    }

    let (mut s, _) = listener.accept().await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut hdr = [0u8; 6];
    s.read_exact(&mut hdr).await.unwrap();
    assert_eq!(hdr, [b'x', b'y', b'z', 7, code(cc), 0], "{ctx}");
    s.write_all(&handshake(SNIFF, VERSION, sc)).await.unwrap();

    let mut dec = StreamDecoder::new(cc);
    read_plain(&mut s, &mut dec, expect.len()).await;
    assert_eq!(
        dec.plain.len(),
        expect.len(),
        "{ctx}: request stream length"
    );
    assert!(dec.plain == expect, "{ctx}: request stream bytes differ");
    // Field by field too, for a readable failure: ids 1, 2, 0, 3, 4, 5.
    let mut off = 0;
    for want_id in [1u32, 2, 0, 3, 4, 5] {
        let p = &dec.plain[off..];
        assert_eq!(u32_at(p, 0), want_id, "{ctx}");
        let nlen = u32_at(p, 4) as usize;
        let vlen = u32_at(p, 8 + nlen) as usize;
        let (n, v) = if want_id == 0 {
            (b"fire".to_vec(), b"and forget".to_vec())
        } else {
            (call_name(want_id), call_value(want_id))
        };
        assert_eq!(nlen, n.len(), "{ctx}");
        assert_eq!(vlen, v.len(), "{ctx}");
        off += 12 + nlen + vlen;
    }
    dec.plain.clear();

    let mut enc = StreamEncoder::new(sc);
    // A response for an id nobody waits for: read and dropped.
    s.write_all(&enc.flush(&resp(777, b"nobody asked")))
        .await
        .unwrap();
    wait_for("unknown response counted", || {
        client.stats().unexpected_responses == 1
    })
    .await;
    assert_eq!(client.pending_requests(), 5, "{ctx}");

    // Id 0 is never a call's id: a response carrying it is dropped as well.
    s.write_all(&enc.flush(&resp(0, b"zero"))).await.unwrap();
    wait_for("id-0 response counted", || {
        client.stats().unexpected_responses == 2
    })
    .await;
    assert_eq!(client.pending_requests(), 5, "{ctx}");

    // Responses in reverse order: 5 and 4 in one write; 3 split across two writes (two
    // flushes); 2 as one flush whose wire bytes are split in the middle across two writes
    // (after skippable chunks when snappy); then 1.
    let mut w = resp(5, &reply_value(5));
    w.extend(resp(4, &reply_value(4)));
    s.write_all(&enc.flush(&w)).await.unwrap();
    let r3 = resp(3, &reply_value(3));
    let (a, b) = r3.split_at(6);
    s.write_all(&enc.flush(a)).await.unwrap();
    s.flush().await.unwrap();
    s.write_all(&enc.flush(b)).await.unwrap();
    let mut w2 = Vec::new();
    if sc == Compression::Snappy {
        w2.extend(snappy_chunk(0xfe, &[0; 5]));
        w2.extend(snappy_chunk(0x9a, b"skippable"));
    }
    w2.extend(enc.flush(&resp(2, &reply_value(2))));
    let (a, b) = w2.split_at(w2.len() / 2);
    s.write_all(a).await.unwrap();
    s.flush().await.unwrap();
    s.write_all(b).await.unwrap();
    s.write_all(&enc.flush(&resp(1, &reply_value(1))))
        .await
        .unwrap();
    for (i, t) in tasks.into_iter().enumerate() {
        let i = i as u32 + 1;
        let got = t
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{ctx}: call {i}: {e}"));
        assert!(got == reply_value(i), "{ctx}: call {i} got another value");
    }
    assert_eq!(client.pending_requests(), 0, "{ctx}");

    // A duplicate of an answered response: dropped too.
    s.write_all(&enc.flush(&resp(2, b"again"))).await.unwrap();
    wait_for("duplicate response counted", || {
        client.stats().unexpected_responses == 3
    })
    .await;

    // The connection is still good: the next call gets id 6.
    let c = client.clone();
    let t = tokio::spawn(async move { c.call(b"next", b"one").await });
    let want = req(6, b"next", b"one");
    read_plain(&mut s, &mut dec, want.len()).await;
    assert!(dec.plain == want, "{ctx}: sixth request bytes");
    s.write_all(&enc.flush(&resp(6, b"six"))).await.unwrap();
    assert_eq!(t.await.unwrap().unwrap(), b"six", "{ctx}");

    let st = client.stats();
    assert_eq!(st.calls, 6, "{ctx}");
    assert_eq!(st.sends, 1, "{ctx}");
    assert_eq!(st.responses, 6, "{ctx}");
    assert_eq!(st.unexpected_responses, 3, "{ctx}");
    assert_eq!(st.connects, 1, "{ctx}");
    assert_eq!(st.errors.total(), 0, "{ctx}: {:?}", st.errors);

    // Our client closes cleanly: its stream ends on a flush boundary, with nothing more.
    drop(client);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    dec.push(&rest);
    dec.assert_clean();
    assert_eq!(
        dec.plain.len(),
        want.len(),
        "{ctx}: bytes after the last request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_server_none() {
    tokio::time::timeout(
        TEST_LIMIT,
        raw_server_against_our_client(Compression::None, Compression::None),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_server_flate() {
    tokio::time::timeout(
        TEST_LIMIT,
        raw_server_against_our_client(Compression::Flate, Compression::Flate),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_server_snappy() {
    tokio::time::timeout(
        TEST_LIMIT,
        raw_server_against_our_client(Compression::Snappy, Compression::Snappy),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_server_mixed_compressions() {
    tokio::time::timeout(TEST_LIMIT, async {
        for cc in ALL {
            for sc in ALL {
                if cc != sc {
                    raw_server_against_our_client(cc, sc).await;
                }
            }
        }
    })
    .await
    .unwrap();
}

/// A client asking for TLS from a server without TLS gets the server's header with tls = 0,
/// then the connection closes (PROTOCOL.md section 1, step 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_asking_for_tls_gets_tls_0_then_close() {
    tokio::time::timeout(TEST_LIMIT, async {
        for sc in ALL {
            let (server, seen) = echo_server(sc).await;
            let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
            s.write_all(&[b'x', b'y', b'z', VERSION, code(Compression::None), 1])
                .await
                .unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, [b'x', b'y', b'z', 7, code(sc), 0], "server {sc}");
            wait_for("handshake failure counted", || {
                server.stats().handshake_failures == 1
            })
            .await;
            assert!(seen.lock().unwrap().is_empty());
            assert_eq!(server.stats().errors.tls, 1, "{:?}", server.stats().errors);
            server.stop(Duration::from_secs(5)).await.unwrap();
        }
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// 3. Whole plaintext exchanges, byte for byte.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_plaintext_exchange_with_our_server() {
    tokio::time::timeout(TEST_LIMIT, async {
        let mut cfg = ServerConfig::default();
        cfg.sniff_header = b"ab".to_vec();
        cfg.protocol_version = 3;
        cfg.compress_type = Compression::None;
        let server = Server::bind("127.0.0.1:0", cfg, |call: Call| {
            let mut v = call.name().to_vec();
            v.push(b':');
            v.extend_from_slice(call.value());
            let _ = call.reply(&v);
        })
        .await
        .unwrap();
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        // Handshake: "ab", version 3, compression none (1), no TLS; then request id 1,
        // name "foo", value "bar".
        let sent: &[u8] = b"ab\x03\x01\x00\
            \x01\x00\x00\x00\x03\x00\x00\x00foo\x03\x00\x00\x00bar";
        s.write_all(sent).await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        // The server's header, then response id 1 with the 7-byte value "foo:bar".
        let want: &[u8] = b"ab\x03\x01\x00\
            \x01\x00\x00\x00\x07\x00\x00\x00foo:bar";
        assert_eq!(got, want);
        server.stop(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_plaintext_exchange_with_our_client() {
    tokio::time::timeout(TEST_LIMIT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut cfg = ClientConfig::new(&addr);
        cfg.sniff_header = b"ab".to_vec();
        cfg.protocol_version = 3;
        cfg.compress_type = Compression::None;
        let client = Client::new(cfg).unwrap();
        let c = client.clone();
        let call = tokio::spawn(async move { c.call(b"foo", b"bar").await });

        let (mut s, _) = listener.accept().await.unwrap();
        let mut hs = [0u8; 5];
        s.read_exact(&mut hs).await.unwrap();
        assert_eq!(&hs, b"ab\x03\x01\x00");
        s.write_all(b"ab\x03\x01\x00").await.unwrap();
        let want: &[u8] = b"\x01\x00\x00\x00\x03\x00\x00\x00foo\x03\x00\x00\x00bar";
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, want);
        s.write_all(b"\x01\x00\x00\x00\x02\x00\x00\x00ok")
            .await
            .unwrap();
        assert_eq!(call.await.unwrap().unwrap(), b"ok");

        // Nothing else was sent before the client closed.
        drop(client);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"");
    })
    .await
    .unwrap();
}
