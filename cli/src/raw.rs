//! The "raw ceiling": the same traffic as the engine, with none of its machinery. A raw peer
//! (`fastrpc serve --raw`) and a raw client (`fastrpc bench --raw`) exchange frames laid out
//! exactly like fastrpc's uncompressed request and response frames, over plain TCP with no
//! handshake, no compression, no TLS, no call table, no timekeeper: big buffered reads and
//! writes on one socket, flushed when nothing more is ready. What the engine reaches over this
//! ceiling is what its machinery costs.
//!
//! Request frame: id (4, LE), name length (4), name, value length (4), value.
//! Response frame: id (4), value length (4), value. Id 0 wants no response.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::bench::{new_histogram, Budget};
use crate::opts::Reply;

/// Buffer size of reads and writes, like the engine's defaults.
pub const BUF_SIZE: usize = 64 * 1024;
/// Largest name or value accepted (the protocol's 1 MiB).
const MAX_FIELD: usize = 1 << 20;

/// A read buffer: bytes `start..end` of `buf` are received and not yet consumed.
struct FrameBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameBuf {
    fn new() -> FrameBuf {
        FrameBuf {
            buf: vec![0; BUF_SIZE],
            start: 0,
            end: 0,
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room so that a frame of `need` bytes (0: unknown) fits after `start`, and
    /// returns the free tail to read into.
    fn spare(&mut self, need: usize) -> &mut [u8] {
        let have = self.end - self.start;
        let want = need.max(have + 1);
        if self.buf.len() - self.start < want || self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = have;
            if self.buf.len() < want {
                self.buf.resize(want.max(BUF_SIZE), 0);
            }
        }
        &mut self.buf[self.end..]
    }

    fn advance(&mut self, n: usize) {
        self.end += n;
    }
}

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// What the start of `d` holds.
enum Parse {
    /// A whole frame of this many bytes.
    Frame(usize),
    /// Not yet a whole frame; the frame needs this many bytes (0: not known yet).
    Partial(usize),
}

fn bad(what: &str, n: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} of {n} bytes exceeds 1 MiB"),
    )
}

fn parse_request(d: &[u8]) -> io::Result<Parse> {
    if d.len() < 8 {
        return Ok(Parse::Partial(0));
    }
    let nl = le32(d, 4);
    if nl > MAX_FIELD {
        return Err(bad("name", nl));
    }
    if d.len() < 12 + nl {
        return Ok(Parse::Partial(12 + nl));
    }
    let vl = le32(d, 8 + nl);
    if vl > MAX_FIELD {
        return Err(bad("value", vl));
    }
    let total = 12 + nl + vl;
    Ok(if d.len() < total {
        Parse::Partial(total)
    } else {
        Parse::Frame(total)
    })
}

fn parse_response(d: &[u8]) -> io::Result<Parse> {
    if d.len() < 8 {
        return Ok(Parse::Partial(0));
    }
    let vl = le32(d, 4);
    if vl > MAX_FIELD {
        return Err(bad("value", vl));
    }
    let total = 8 + vl;
    Ok(if d.len() < total {
        Parse::Partial(total)
    } else {
        Parse::Frame(total)
    })
}

/// Counters of a raw peer.
#[derive(Default)]
pub struct PeerStats {
    pub connections: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub flushes: AtomicU64,
}

impl PeerStats {
    /// One line for `fastrpc serve --raw`'s exit summary.
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let flushes = g(&self.flushes).max(1);
        format!(
            "{} requests, {} responses, {} connections, {:.1} MB in / {:.1} MB out, {:.1} \
             frames per flush",
            g(&self.frames_in),
            g(&self.frames_out),
            g(&self.connections),
            g(&self.bytes_in) as f64 / 1e6,
            g(&self.bytes_out) as f64 / 1e6,
            g(&self.frames_out) as f64 / flushes as f64,
        )
    }
}

/// A raw echo-ish peer listening on TCP.
pub struct RawPeer {
    local_addr: String,
    pub stats: Arc<PeerStats>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl RawPeer {
    /// Listens on `addr` (`host:port`, port 0 allowed) and answers every request frame with
    /// `reply`, on the current tokio runtime.
    pub async fn bind(addr: &str, reply: Reply) -> io::Result<RawPeer> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?.to_string();
        let stats = Arc::new(PeerStats::default());
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (s, t) = (stats.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                };
                s.connections.fetch_add(1, Ordering::Relaxed);
                let _ = sock.set_nodelay(true);
                let h = tokio::spawn(peer_conn(sock, reply, s.clone()));
                let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
                t.retain(|h| !h.is_finished());
                t.push(h.abort_handle());
            }
        });
        tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(accept.abort_handle());
        Ok(RawPeer {
            local_addr,
            stats,
            tasks,
        })
    }

    /// The bound address, with the real port.
    pub fn local_addr(&self) -> &str {
        &self.local_addr
    }

    /// Stops accepting and closes every connection at once.
    pub fn stop(&self) {
        for h in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads more into `fb` without waiting. `Ok(None)`: nothing ready now.
fn try_fill(rd: &OwnedReadHalf, fb: &mut FrameBuf, need: usize) -> io::Result<Option<usize>> {
    match rd.try_read(fb.spare(need)) {
        Ok(n) => {
            fb.advance(n);
            Ok(Some(n))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

async fn peer_conn(sock: TcpStream, reply: Reply, stats: Arc<PeerStats>) {
    let _ = peer_loop(sock, reply, &stats).await;
}

async fn peer_loop(sock: TcpStream, reply: Reply, stats: &PeerStats) -> io::Result<()> {
    let (mut rd, wr) = sock.into_split();
    let mut w = BufWriter::with_capacity(BUF_SIZE, wr);
    let mut fb = FrameBuf::new();
    // For fixed replies: value length and value, written after each id.
    let fixed: Vec<u8> = match reply {
        Reply::Fixed(n) => {
            let mut v = (n as u32).to_le_bytes().to_vec();
            v.resize(4 + n, b'x');
            v
        }
        Reply::Echo => Vec::new(),
    };
    let (mut frames_in, mut frames_out, mut bytes_in, mut bytes_out) = (0u64, 0u64, 0u64, 0u64);
    let mut unflushed = false;
    let result = loop {
        // Answer every whole request already received.
        let need = loop {
            let d = fb.data();
            match parse_request(d)? {
                Parse::Partial(need) => break need,
                Parse::Frame(n) => {
                    let id = &d[..4];
                    frames_in += 1;
                    bytes_in += n as u64;
                    if id != [0, 0, 0, 0] {
                        w.write_all(id).await?;
                        match reply {
                            Reply::Fixed(_) => {
                                w.write_all(&fixed).await?;
                                bytes_out += 4 + fixed.len() as u64;
                            }
                            Reply::Echo => {
                                let nl = le32(d, 4);
                                let name = &d[8..8 + nl];
                                let value = &d[12 + nl..n];
                                let len = (nl + 1 + value.len()) as u32;
                                w.write_all(&len.to_le_bytes()).await?;
                                w.write_all(name).await?;
                                w.write_all(b":").await?;
                                w.write_all(value).await?;
                                bytes_out += 8 + len as u64;
                            }
                        }
                        frames_out += 1;
                        unflushed = true;
                    }
                    fb.consume(n);
                }
            }
        };
        // More already in the socket? Take it before flushing.
        match try_fill(&rd, &mut fb, need) {
            Ok(Some(0)) => break Ok(()),
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        if unflushed {
            w.flush().await?;
            stats.flushes.fetch_add(1, Ordering::Relaxed);
            stats.frames_in.fetch_add(frames_in, Ordering::Relaxed);
            stats.frames_out.fetch_add(frames_out, Ordering::Relaxed);
            stats.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
            stats.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
            (frames_in, frames_out, bytes_in, bytes_out) = (0, 0, 0, 0);
            unflushed = false;
        }
        match rd.read(fb.spare(need)).await {
            Ok(0) => break Ok(()),
            Ok(n) => fb.advance(n),
            Err(e) => break Err(e),
        }
    };
    let _ = w.flush().await;
    stats.frames_in.fetch_add(frames_in, Ordering::Relaxed);
    stats.frames_out.fetch_add(frames_out, Ordering::Relaxed);
    stats.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
    stats.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    result
}

/// What one raw client connection did.
pub struct RawResult {
    pub hist: Histogram<u64>,
    pub calls: u64,
    pub resp_payload: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub flushes: u64,
    pub frames_out: u64,
}

/// State shared by a raw connection's writer and reader.
struct Shared {
    /// Frames written and not yet answered.
    inflight: AtomicUsize,
    /// Signalled by the reader when it frees room.
    room: Notify,
    /// Send time of the frame in each slot (nanoseconds since `base`).
    sent_at: Vec<AtomicU64>,
    base: Instant,
    /// The reader has ended (the peer closed, or sent what it should not): nothing more
    /// will be answered, so the writer stops waiting for room.
    reader_done: AtomicBool,
}

/// The protocol's plaintext opening (docs/PROTOCOL.md, section 1) for a raw client of a real
/// fastrpc server, ours or the Go library's (`fastrpc bench --raw --raw-handshake`): the
/// client asks for no compression and no TLS, and the server must answer uncompressed too, so
/// that the frames after it are the raw ones.
#[derive(Clone, Debug)]
pub struct Handshake {
    pub sniff: Vec<u8>,
    pub version: u8,
}

/// Compression code "none" in the opening.
const COMPRESS_NONE: u8 = 1;

impl Handshake {
    /// Runs the opening on a connected socket; an error says what the server answered.
    async fn run(&self, sock: &mut TcpStream) -> io::Result<()> {
        let mut hello = self.sniff.clone();
        hello.extend_from_slice(&[self.version, COMPRESS_NONE, 0]);
        sock.write_all(&hello).await?;
        let mut answer = vec![0u8; self.sniff.len() + 3];
        sock.read_exact(&mut answer).await.map_err(|e| {
            let what = "the server closed the connection during the handshake \
                        (a different sniff header or protocol version?)";
            io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
        })?;
        let (sniff, rest) = answer.split_at(self.sniff.len());
        let bad = |m: String| Err(io::Error::new(io::ErrorKind::InvalidData, m));
        if sniff != self.sniff.as_slice() {
            return bad(format!(
                "the server's sniff header is {sniff:?}, not {:?}",
                self.sniff
            ));
        }
        if rest[0] != self.version {
            return bad(format!(
                "the server speaks protocol version {}, not {}",
                rest[0], self.version
            ));
        }
        if rest[1] != COMPRESS_NONE {
            return bad(format!(
                "the server compresses its responses (code {}): a raw run needs a server \
                 that sends them uncompressed (--compress none)",
                rest[1]
            ));
        }
        if rest[2] != 0 {
            return bad(format!("the server answered TLS byte {}, not 0", rest[2]));
        }
        Ok(())
    }
}

/// Connects a raw client to `addr`, with Nagle off, opens the connection with `handshake`
/// when given, and splits the socket.
pub(crate) async fn connect(
    addr: &str,
    handshake: Option<&Handshake>,
) -> io::Result<(OwnedReadHalf, OwnedWriteHalf)> {
    let mut sock = TcpStream::connect(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
    sock.set_nodelay(true)?;
    if let Some(h) = handshake {
        h.run(&mut sock).await?;
    }
    Ok(sock.into_split())
}

/// A request frame after its id: name length, name, value length, value.
pub(crate) fn request_tail(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut tail = Vec::with_capacity(8 + name.len() + value.len());
    tail.extend_from_slice(&(name.len() as u32).to_le_bytes());
    tail.extend_from_slice(name);
    tail.extend_from_slice(&(value.len() as u32).to_le_bytes());
    tail.extend_from_slice(value);
    tail
}

/// What one raw client connection runs: `concurrency` calls in flight to `addr` until the
/// budget runs out; `progress` counts answered (or, with `nowait`, written) frames.
pub struct RawJob {
    pub addr: String,
    pub name: Arc<[u8]>,
    pub value: Arc<[u8]>,
    pub concurrency: usize,
    pub budget: Arc<Budget>,
    pub progress: Arc<AtomicU64>,
    /// The protocol's opening first (a real server), or none (the raw peer).
    pub handshake: Option<Handshake>,
}

/// Runs one raw client connection: one writer refilling the window as answers free it.
pub async fn raw_client(job: RawJob, nowait: bool) -> io::Result<RawResult> {
    let (rd, wr) = connect(&job.addr, job.handshake.as_ref()).await?;
    let c = job.concurrency.max(1);
    let shared = Arc::new(Shared {
        inflight: AtomicUsize::new(0),
        room: Notify::new(),
        sent_at: (0..c).map(|_| AtomicU64::new(0)).collect(),
        base: Instant::now(),
        reader_done: AtomicBool::new(false),
    });
    let reader = {
        let (sh, p) = (shared.clone(), job.progress.clone());
        tokio::spawn(async move {
            let at = |id: usize| sh.sent_at[id - 1].load(Ordering::Relaxed);
            let freed = |done: u64| {
                sh.inflight.fetch_sub(done as usize, Ordering::AcqRel);
                sh.room.notify_one();
            };
            let r = read_responses(rd, c, sh.base, &p, at, freed).await;
            sh.reader_done.store(true, Ordering::Release);
            sh.room.notify_one();
            r
        })
    };

    let tail = request_tail(&job.name, &job.value);
    let frame_len = 4 + tail.len() as u64;

    let mut w = BufWriter::with_capacity(BUF_SIZE, wr);
    let (mut frames_out, mut flushes) = (0u64, 0u64);
    let mut seq: u64 = 0;
    let write_result: io::Result<()> = async {
        loop {
            let room = if nowait {
                c
            } else {
                c - shared.inflight.load(Ordering::Acquire)
            };
            if room == 0 {
                if shared.reader_done.load(Ordering::Acquire) {
                    break;
                }
                shared.room.notified().await;
                continue;
            }
            let n = job.budget.take(room as u64) as usize;
            if n == 0 {
                break;
            }
            if !nowait {
                shared.inflight.fetch_add(n, Ordering::AcqRel);
            }
            let now = shared.base.elapsed().as_nanos() as u64;
            for _ in 0..n {
                let id = if nowait {
                    0u32
                } else {
                    let slot = (seq % c as u64) as usize;
                    shared.sent_at[slot].store(now, Ordering::Relaxed);
                    slot as u32 + 1
                };
                seq += 1;
                w.write_all(&id.to_le_bytes()).await?;
                w.write_all(&tail).await?;
            }
            frames_out += n as u64;
            if nowait {
                job.progress.fetch_add(n as u64, Ordering::Relaxed);
            }
            w.flush().await?;
            flushes += 1;
        }
        // Wait for the last answers, then end the stream: the peer closes, the reader ends.
        while shared.inflight.load(Ordering::Acquire) != 0
            && !shared.reader_done.load(Ordering::Acquire)
        {
            shared.room.notified().await;
        }
        w.shutdown().await
    }
    .await;
    if let Err(e) = write_result {
        if !reader.is_finished() {
            reader.abort();
            return Err(e);
        }
        // The reader ended first: its error, if it has one, says more.
        finish(reader, frames_out, frame_len, flushes, false).await?;
        return Err(e);
    }
    let mut r = finish(reader, frames_out, frame_len, flushes, !nowait).await?;
    if nowait {
        r.calls = frames_out;
    }
    Ok(r)
}

/// Waits for a connection's reader and puts its figures and the writer's together; with
/// `answered_all`, fewer responses than requests is an error (the peer closed early).
pub(crate) async fn finish(
    reader: tokio::task::JoinHandle<io::Result<ReaderOut>>,
    frames_out: u64,
    frame_len: u64,
    flushes: u64,
    answered_all: bool,
) -> io::Result<RawResult> {
    let (hist, calls, resp_payload, bytes_in) = reader
        .await
        .map_err(|e| io::Error::other(format!("raw reader task: {e}")))??;
    if answered_all && calls < frames_out {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the raw peer closed the connection with {} of {frames_out} requests unanswered",
                frames_out - calls
            ),
        ));
    }
    Ok(RawResult {
        hist,
        calls,
        resp_payload,
        bytes_out: frames_out * frame_len,
        bytes_in,
        flushes,
        frames_out,
    })
}

/// What a reader returns: latencies, calls, response payload bytes, bytes read.
pub(crate) type ReaderOut = (Histogram<u64>, u64, u64, u64);

/// Reads response frames with ids `1..=c` until the peer closes. For each, `on_frame(id)`
/// returns its send time in nanoseconds since `base` (0: not timed) and the latency is
/// recorded; after each read with `done` frames in it, `after_read(done)` runs and `progress`
/// grows by `done`.
pub(crate) async fn read_responses(
    mut rd: OwnedReadHalf,
    c: usize,
    base: Instant,
    progress: &AtomicU64,
    mut on_frame: impl FnMut(usize) -> u64,
    mut after_read: impl FnMut(u64),
) -> io::Result<ReaderOut> {
    let mut hist = new_histogram();
    let mut fb = FrameBuf::new();
    let (mut calls, mut payload, mut bytes_in) = (0u64, 0u64, 0u64);
    let mut need = 0;
    loop {
        let n = rd.read(fb.spare(need)).await?;
        if n == 0 {
            if fb.data().is_empty() {
                return Ok((hist, calls, payload, bytes_in));
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the raw peer closed in the middle of a frame",
            ));
        }
        fb.advance(n);
        bytes_in += n as u64;
        // The clock is read once per read, at its first timed frame.
        let mut now = 0;
        let mut done = 0u64;
        need = loop {
            let d = fb.data();
            match parse_response(d)? {
                Parse::Partial(need) => break need,
                Parse::Frame(len) => {
                    let id = le32(d, 0);
                    if id == 0 || id > c {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("response with unknown id {id}"),
                        ));
                    }
                    payload += (len - 8) as u64;
                    done += 1;
                    fb.consume(len);
                    let sent = on_frame(id);
                    if sent != 0 {
                        if now == 0 {
                            now = base.elapsed().as_nanos() as u64;
                        }
                        hist.saturating_record(now.saturating_sub(sent).max(1));
                    }
                }
            }
        };
        if done > 0 {
            calls += done;
            after_read(done);
            progress.fetch_add(done, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames() {
        let mut f = vec![1, 0, 0, 0, 3, 0, 0, 0];
        assert!(matches!(parse_request(&f).unwrap(), Parse::Partial(15)));
        f.extend_from_slice(b"foo");
        f.extend_from_slice(&[3, 0, 0, 0]);
        assert!(matches!(parse_request(&f).unwrap(), Parse::Partial(18)));
        f.extend_from_slice(b"bar");
        assert!(matches!(parse_request(&f).unwrap(), Parse::Frame(18)));
        let r = [7, 0, 0, 0, 2, 0, 0, 0, b'o', b'k', 9];
        assert!(matches!(parse_response(&r).unwrap(), Parse::Frame(10)));
        assert!(parse_response(&[0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn frame_buf_grows_and_compacts() {
        let mut fb = FrameBuf::new();
        let s = fb.spare(0).len();
        assert_eq!(s, BUF_SIZE);
        fb.advance(BUF_SIZE - 2);
        fb.consume(BUF_SIZE - 4);
        assert_eq!(fb.data().len(), 2);
        assert!(fb.spare(200_000).len() >= 200_000 - 2);
        assert_eq!(fb.data().len(), 2);
    }
}
