//! One connection's byte streams after the handshake: the read side turns socket bytes into
//! decompressed frame bytes, the write side compresses one batch and writes it with a flush.
//!
//! Frame parsing is not here: readers look at [`FrameReader::data`], take whole frames, call
//! [`FrameReader::consume`], and ask [`FrameReader::fill`] for at least as many bytes as the
//! frame parser said it needs. Buffers are kept and reused for the life of the connection.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::compress::{Compression, Decoder, Encoder};
use crate::error::{Error, ErrorKind};
use crate::stats::IoCounters;
use crate::transport::{ReadHalf, WriteHalf};

/// Room a decoder is offered at least, so a whole snappy chunk always fits.
const DECODE_ROOM: usize = 64 * 1024;

/// How long a connection goes without traffic in a direction before that direction gives
/// back the buffers and compressor state it can do without (they come back with the next
/// frame): what keeps idle connections cheap (docs/RELIABILITY.md).
pub(crate) const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// Readers spin (see [`spin_then`], with `read_spin` set, the default) only for a lone call:
/// a client with at most this many calls waiting, a server whose last read brought at most
/// this many requests. With more the reader rarely waits, and a spinning process would take the
/// CPU its peer needs when both share the cores: measured on 2 CPUs, a limit of 64 cost up to
/// a quarter of the calls/s at 16 in flight on busy cores, and 2 lost 3-23% at 16 in flight
/// on quiet ones (docs/BENCHMARKS.md).
pub(crate) const SPIN_MAX_IN_FLIGHT: usize = 1;

/// Polls `fut`; while it is pending and `spin` has not passed, yields to the runtime instead
/// of waiting for a wakeup. A yielded task runs again once its worker has nothing else to run,
/// right after the worker polled the I/O driver without blocking (tokio's `yield_now`), so bytes
/// that arrive meanwhile are seen at once, and the worker does not park. A parked worker's CPU
/// may halt, and on a VM waking a halted CPU takes tens of microseconds: ping-pong latency was
/// two such wakeups per call (one on each side). The cost is the CPU of the spin itself, for at
/// most `spin`, only when bytes are expected (`spin` is None otherwise): an idle connection does
/// not spin. No allocation. The spin's end is on the real clock (`std::time::Instant`): a
/// runtime whose clock is paused (tests) does not advance it while a task spins. `gate` decides
/// whether this wait spins (see [`SpinGate`]) and is told how long it took.
pub(crate) async fn spin_then<F: std::future::Future>(
    fut: F,
    spin: Option<Duration>,
    gate: &mut SpinGate,
) -> F::Output {
    let Some(spin) = spin else {
        return fut.await;
    };
    let start = std::time::Instant::now();
    let mut fut = std::pin::pin!(fut);
    if gate.allow() {
        let until = start + spin;
        loop {
            let polled =
                std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
            if let std::task::Poll::Ready(v) = polled {
                gate.caught(start.elapsed());
                return v;
            }
            if std::time::Instant::now() >= until {
                gate.missed();
                break;
            }
            tokio::task::yield_now().await;
        }
        return fut.await;
    }
    let v = fut.await;
    gate.parked(start.elapsed());
    v
}

/// When a reader spins. After a spin that ended without the bytes it waited for, the next
/// waits do not spin (16 of them, doubling with each such spin in a row up to 4096). And the
/// gate compares how long the expected bytes took to come with a spin that caught them and
/// without spinning (every 64th wait does not spin, to keep measuring that): when parking is
/// not clearly slower (under 1.1 times), spinning only burns CPU, and the next 16 waits do not
/// spin (doubling while that holds, up to 256), until parking gets slower again. On cores
/// busy with other work the peer's answer comes later than the spin, or no CPU halts and
/// parking is as fast as spinning, and a spinning thread only takes the CPU the peer needs:
/// measured on 2 CPUs with one busy, spinning without this comparison cost a fifth of the
/// calls/s of ping-pong and doubled its p99 (docs/BENCHMARKS.md).
pub(crate) struct SpinGate {
    /// Waits that will not spin.
    skip: u32,
    /// `skip` after the next spin that finds nothing.
    backoff: u32,
    /// Waits since the last one measured without spinning.
    since_probe: u32,
    /// Waits skipped after the last decision that spinning gains nothing (doubling while
    /// that holds).
    no_gain: u32,
    /// The waits skipped were skipped for lack of gain: the next one spins, to measure again.
    retry: bool,
    /// Smoothed time (ns) the bytes took to come without spinning, and with a spin that
    /// caught them; 0 until measured.
    parked_ns: u64,
    spun_ns: u64,
}

/// Every this many waits, one does not spin, to measure parking.
const SPIN_PROBE_EVERY: u32 = 64;
/// Most waits skipped in a row when spinning does not beat parking.
const SPIN_NO_GAIN_SKIP: u32 = 256;
/// Longest wait counted, so that a quiet spell does not make parking look slow for long.
const SPIN_SAMPLE_MAX_NS: u64 = 1_000_000;

impl SpinGate {
    pub(crate) fn new() -> SpinGate {
        SpinGate {
            skip: 0,
            backoff: 0,
            since_probe: 0,
            no_gain: 0,
            retry: false,
            parked_ns: 0,
            spun_ns: 0,
        }
    }

    /// Whether this wait may spin.
    fn allow(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        if self.retry {
            self.retry = false;
            return true;
        }
        self.since_probe += 1;
        if self.since_probe >= SPIN_PROBE_EVERY {
            self.since_probe = 0;
            return false;
        }
        if self.parked_ns > 0 && self.spun_ns > 0 && self.parked_ns * 10 < self.spun_ns * 11 {
            // Parking is about as fast as spinning: spinning gains nothing here now.
            self.no_gain = (self.no_gain * 2).clamp(16, SPIN_NO_GAIN_SKIP);
            self.skip = self.no_gain - 1;
            self.retry = true;
            return false;
        }
        self.no_gain = 0;
        true
    }

    /// A spin caught the bytes after `took`.
    fn caught(&mut self, took: Duration) {
        self.backoff = 0;
        self.spun_ns = smooth(self.spun_ns, took);
    }

    /// A spin ended without the bytes: it does not pay, for a while.
    fn missed(&mut self) {
        self.backoff = (self.backoff * 2).clamp(16, 4096);
        self.skip = self.backoff;
        self.retry = false;
    }

    /// A wait that did not spin got its bytes after `took`.
    fn parked(&mut self, took: Duration) {
        self.parked_ns = smooth(self.parked_ns, took);
    }
}

/// An exponential moving average (1/8 per sample) of wait times in ns; the first sample
/// starts it. A sample counts as at most twice the average: one slow wait (a preempted
/// thread, a quiet spell) does not swing it.
fn smooth(avg: u64, took: Duration) -> u64 {
    let x = (took.as_nanos() as u64).clamp(1, SPIN_SAMPLE_MAX_NS);
    if avg == 0 {
        x
    } else {
        avg - avg / 8 + x.min(avg * 2) / 8
    }
}

/// What [`FrameReader::fill_or_idle`] found.
pub(crate) enum Fill {
    /// [`FrameReader::data`] holds at least the bytes asked for.
    Ready,
    /// The peer closed the stream cleanly between frames.
    Eof,
    /// Nothing came for [`IDLE_RELEASE`] between frames: the reader gave back its buffers.
    Idle,
}

/// The read side of a connection.
pub(crate) struct FrameReader {
    rd: ReadHalf,
    decoder: Option<Decoder>,
    /// Compressed bytes read from the socket, `raw[raw_pos..]` not yet decoded.
    raw: Vec<u8>,
    raw_pos: usize,
    /// Plain bytes; `buf[start..]` not yet consumed.
    buf: Vec<u8>,
    start: usize,
    read_size: usize,
    read_timeout: Option<Duration>,
    deadline: Option<Instant>,
    /// The decoder may hold decoded bytes it could not hand out for lack of room.
    decoder_pending: bool,
    /// The buffers were given back after an idle spell and nothing has come since.
    released: bool,
    stats: Arc<IoCounters>,
}

impl FrameReader {
    pub(crate) fn new(
        rd: ReadHalf,
        compression: Compression,
        read_size: usize,
        read_timeout: Option<Duration>,
        stats: Arc<IoCounters>,
    ) -> FrameReader {
        let read_size = read_size.max(4096);
        let decoder = match compression {
            Compression::None => None,
            c => Some(Decoder::new(c)),
        };
        FrameReader {
            rd,
            raw: if decoder.is_some() {
                Vec::with_capacity(read_size)
            } else {
                Vec::new()
            },
            decoder,
            raw_pos: 0,
            buf: Vec::with_capacity(read_size),
            start: 0,
            read_size,
            read_timeout,
            deadline: None,
            decoder_pending: false,
            released: false,
            stats,
        }
    }

    /// The plain bytes not yet consumed.
    #[inline]
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// When the frame being read must be whole (with a read timeout, once started).
    #[inline]
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Marks `n` bytes of [`Self::data`] as used.
    #[inline]
    pub(crate) fn consume(&mut self, n: usize) {
        if n > 0 {
            // Whole frames were taken: the next frame gets a fresh read deadline, even when
            // its first bytes are already here.
            self.deadline = None;
        }
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads until [`Self::data`] holds at least `need` bytes. Returns Ok(false) when the
    /// peer closed the stream cleanly between frames.
    pub(crate) async fn fill(&mut self, need: usize) -> Result<bool, Error> {
        match self.fill_inner(need, false).await? {
            Fill::Eof => Ok(false),
            _ => Ok(true),
        }
    }

    /// Like [`Self::fill`], but when the stream is between frames and nothing arrives for
    /// [`IDLE_RELEASE`], gives back the read buffers and the decoder's spare buffers and
    /// returns [`Fill::Idle`] (once per quiet spell); the caller then calls again.
    pub(crate) async fn fill_or_idle(&mut self, need: usize) -> Result<Fill, Error> {
        self.fill_inner(need, true).await
    }

    fn release_idle(&mut self) {
        // The quiet spell is not a frame: the next bytes start one, with a fresh deadline.
        self.deadline = None;
        self.buf = Vec::new();
        self.start = 0;
        self.raw = Vec::new();
        self.raw_pos = 0;
        if let Some(d) = self.decoder.as_mut() {
            d.release_idle();
        }
        self.released = true;
    }

    async fn fill_inner(&mut self, need: usize, idle: bool) -> Result<Fill, Error> {
        let have = self.buf.len() - self.start;
        if have >= need {
            return Ok(Fill::Ready);
        }
        if self.deadline.is_none() {
            // A new frame starts (`consume` of whole frames, and an idle release, clear the
            // deadline): the read timeout bounds the whole frame. Kept while the frame is
            // read, also when the reader polls a new `fill` each time (client `read.rs`).
            self.deadline = self.read_timeout.map(|t| Instant::now() + t);
        }
        // Make room at the front, then enough capacity for the whole frame.
        if self.start > 0 {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(have);
            self.start = 0;
        }
        if self.released {
            // The buffers were given back: wait for the next bytes in a small buffer on the
            // stack, so a connection that stays quiet holds none.
            let mut first = [0u8; 512];
            let n = read_slice(&mut self.rd, &mut first, self.deadline).await?;
            self.released = false;
            if n == 0 {
                return Ok(Fill::Eof);
            }
            self.stats.received_wire.fetch_add(n as u64, Relaxed);
            if self.decoder.is_some() {
                self.raw.reserve(self.read_size);
                self.raw.extend_from_slice(&first[..n]);
            } else {
                self.stats.received_plain.fetch_add(n as u64, Relaxed);
                let step = self.read_size.max(DECODE_ROOM);
                self.buf.reserve_exact(need.max(n) + step);
                self.buf.extend_from_slice(&first[..n]);
            }
        }
        // Grown only for a frame larger than any before, and then to exactly the frame plus
        // one read or decode step: the buffer never holds more than that (a doubling `reserve`
        // would allocate up to twice the largest frame).
        if self.buf.capacity() < need {
            let step = self.read_size.max(DECODE_ROOM);
            self.buf.reserve_exact(need + step - self.buf.len());
        }
        while self.buf.len() < need {
            let got = match self.decoder.as_mut() {
                None => {
                    // Reads into the spare capacity, never past it (len < need <= capacity).
                    let between = idle && self.buf.is_empty();
                    let read = read_some(&mut self.rd, &mut self.buf, self.deadline);
                    let Some(n) = idle_race(read, between).await? else {
                        self.release_idle();
                        return Ok(Fill::Idle);
                    };
                    self.stats.received_wire.fetch_add(n as u64, Relaxed);
                    self.stats.received_plain.fetch_add(n as u64, Relaxed);
                    n
                }
                Some(dec) => {
                    if self.raw_pos < self.raw.len() || self.decoder_pending {
                        // Within the spare capacity, so the decoder never grows the buffer.
                        let spare = self.buf.capacity() - self.buf.len();
                        let room = (need - self.buf.len()).max(DECODE_ROOM).min(spare);
                        let p = dec.decode(&self.raw[self.raw_pos..], &mut self.buf, room)?;
                        self.raw_pos += p.consumed;
                        if self.raw_pos == self.raw.len() {
                            self.raw.clear();
                            self.raw_pos = 0;
                        }
                        self.decoder_pending = p.produced > 0;
                        self.stats
                            .received_plain
                            .fetch_add(p.produced as u64, Relaxed);
                        if p.produced > 0 || p.consumed > 0 {
                            continue;
                        }
                    }
                    // The decoder needs more input.
                    if self.raw_pos > 0 {
                        self.raw.drain(..self.raw_pos);
                        self.raw_pos = 0;
                    }
                    let between =
                        idle && self.buf.is_empty() && self.raw.is_empty() && !self.decoder_pending;
                    self.raw.reserve(self.read_size);
                    let read = read_some(&mut self.rd, &mut self.raw, self.deadline);
                    let Some(n) = idle_race(read, between).await? else {
                        self.release_idle();
                        return Ok(Fill::Idle);
                    };
                    self.stats.received_wire.fetch_add(n as u64, Relaxed);
                    n
                }
            };
            if got == 0 {
                let have = self.buf.len();
                if have == 0 && self.raw_pos == self.raw.len() {
                    return Ok(Fill::Eof);
                }
                return Err(Error::protocol(format!(
                    "the peer closed the stream in the middle of a frame ({have} of {need} bytes)"
                )));
            }
        }
        Ok(Fill::Ready)
    }

    /// Reads and discards everything until the peer closes its side or the read fails: a
    /// server that stops gracefully must not close a socket holding unread bytes (that
    /// resets the connection and loses responses the peer has not read yet). Reuses the
    /// frame buffer; allocates nothing.
    pub(crate) async fn discard_to_eof(&mut self) {
        loop {
            self.buf.clear();
            self.start = 0;
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    self.stats.received_wire.fetch_add(n as u64, Relaxed);
                }
            }
        }
    }
}

/// Runs `read`; when `race` is set and nothing has arrived within [`IDLE_RELEASE`], gives up
/// on it (reads are cancel-safe: nothing was taken) and returns None.
async fn idle_race(
    read: impl std::future::Future<Output = Result<usize, Error>>,
    race: bool,
) -> Result<Option<usize>, Error> {
    if !race {
        return read.await.map(Some);
    }
    tokio::select! {
        biased;
        r = read => r.map(Some),
        _ = tokio::time::sleep(IDLE_RELEASE) => Ok(None),
    }
}

/// Reads once into `into`, bounded by `deadline`.
async fn read_slice(
    rd: &mut ReadHalf,
    into: &mut [u8],
    deadline: Option<Instant>,
) -> Result<usize, Error> {
    let r = match deadline {
        None => rd.read(into).await,
        Some(d) => match tokio::time::timeout_at(d, rd.read(into)).await {
            Ok(r) => r,
            Err(_) => return Err(read_timeout()),
        },
    };
    r.map_err(|e| Error::from_io(&e, ErrorKind::Connection, "read failed"))
}

/// The error of a batch the peer did not take in time (the connection ends with it).
pub(crate) fn write_timeout() -> Error {
    Error::fixed(
        ErrorKind::Timeout,
        "write timeout: the peer did not take a batch within write_timeout",
    )
}

fn read_timeout() -> Error {
    Error::fixed(
        ErrorKind::Timeout,
        "read timeout: the peer sent no whole frame within read_timeout",
    )
}

async fn read_some(
    rd: &mut ReadHalf,
    into: &mut Vec<u8>,
    deadline: Option<Instant>,
) -> Result<usize, Error> {
    let r = match deadline {
        None => rd.read_buf(into).await,
        Some(d) => match tokio::time::timeout_at(d, rd.read_buf(into)).await {
            Ok(r) => r,
            Err(_) => return Err(read_timeout()),
        },
    };
    r.map_err(|e| Error::from_io(&e, ErrorKind::Connection, "read failed"))
}

/// The write side of a connection. A batch is written in two steps, so that it can be
/// started on one thread and finished on another (the lone-call and lone-reply paths):
/// [`FrameWriter::start_batch`] compresses it, [`FrameWriter::poll_batch`] writes and
/// flushes it, keeping how far it got (the writers bound that with their `write_timeout`).
pub(crate) struct FrameWriter {
    wr: WriteHalf,
    encoder: Option<Encoder>,
    wire: Vec<u8>,
    stats: Arc<IoCounters>,
    /// The started batch: bytes of it written, and where it stands.
    sent: usize,
    stage: Stage,
    /// Its plain length and frame count, counted once it is flushed.
    plain_len: usize,
    frames: usize,
}

/// Where a started batch stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Idle,
    Write,
    Flush,
}

impl FrameWriter {
    pub(crate) fn new(
        wr: WriteHalf,
        compression: Compression,
        flate_level: u32,
        write_size: usize,
        stats: Arc<IoCounters>,
    ) -> FrameWriter {
        let encoder = match compression {
            Compression::None => None,
            c => Some(Encoder::new(c, flate_level)),
        };
        FrameWriter {
            wire: if encoder.is_some() {
                Vec::with_capacity(write_size)
            } else {
                Vec::new()
            },
            encoder,
            wr,
            stats,
            sent: 0,
            stage: Stage::Idle,
            plain_len: 0,
            frames: 0,
        }
    }

    /// Starts writing `plain` (whole frames): compresses it when the connection compresses.
    /// Nothing is written yet; an empty batch leaves the writer idle.
    pub(crate) fn start_batch(&mut self, plain: &[u8], frames: usize) -> Result<(), Error> {
        debug_assert_eq!(self.stage, Stage::Idle, "a batch is still being written");
        if plain.is_empty() {
            return Ok(());
        }
        if let Some(enc) = self.encoder.as_mut() {
            self.wire.clear();
            enc.encode(plain, &mut self.wire)?;
        }
        self.sent = 0;
        self.plain_len = plain.len();
        self.frames = frames;
        self.stage = Stage::Write;
        Ok(())
    }

    /// Drops the rest of a started batch (the connection ends without it).
    pub(crate) fn abandon(&mut self) {
        self.stage = Stage::Idle;
    }

    /// A started batch is not written and flushed yet.
    pub(crate) fn is_writing(&self) -> bool {
        self.stage != Stage::Idle
    }

    /// Writes the started batch (`plain` is the slice given to [`FrameWriter::start_batch`])
    /// as far as the socket takes it, then flushes it. Ready when it is all out (or failed:
    /// then the connection is done); pending with `cx` registered for the socket's readiness.
    pub(crate) fn poll_batch(
        &mut self,
        cx: &mut std::task::Context<'_>,
        plain: &[u8],
    ) -> std::task::Poll<Result<(), Error>> {
        use std::task::Poll;
        let failed = |e: std::io::Error| Error::from_io(&e, ErrorKind::Connection, "write failed");
        loop {
            match self.stage {
                Stage::Idle => return Poll::Ready(Ok(())),
                Stage::Write => {
                    let bytes: &[u8] = match self.encoder {
                        None => plain,
                        Some(_) => &self.wire,
                    };
                    while self.sent < bytes.len() {
                        match std::pin::Pin::new(&mut self.wr).poll_write(cx, &bytes[self.sent..]) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Ok(0)) => {
                                self.stage = Stage::Idle;
                                return Poll::Ready(Err(failed(
                                    std::io::ErrorKind::WriteZero.into(),
                                )));
                            }
                            Poll::Ready(Ok(n)) => self.sent += n,
                            Poll::Ready(Err(e)) => {
                                self.stage = Stage::Idle;
                                return Poll::Ready(Err(failed(e)));
                            }
                        }
                    }
                    self.stage = Stage::Flush;
                }
                Stage::Flush => {
                    let r = match std::pin::Pin::new(&mut self.wr).poll_flush(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(r) => r,
                    };
                    self.stage = Stage::Idle;
                    r.map_err(failed)?;
                    let wire = match self.encoder {
                        None => self.plain_len,
                        Some(_) => self.wire.len(),
                    };
                    let s = &self.stats;
                    s.sent_plain.fetch_add(self.plain_len as u64, Relaxed);
                    s.sent_wire.fetch_add(wire as u64, Relaxed);
                    s.flushes.fetch_add(1, Relaxed);
                    s.frames_sent.fetch_add(self.frames as u64, Relaxed);
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    /// Gives back what an idle connection can do without (the compressor's state and the
    /// wire buffer); both come back with the next batch. See [`IDLE_RELEASE`].
    pub(crate) fn release_idle(&mut self) {
        if let Some(e) = self.encoder.as_mut() {
            e.release_idle();
        }
        self.wire = Vec::new();
    }

    /// Closes the write direction (TLS close_notify, then FIN), best effort.
    pub(crate) async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.wr.shutdown()).await;
    }
}

#[cfg(test)]
mod spin_gate_tests {
    use super::{SpinGate, SPIN_NO_GAIN_SKIP, SPIN_PROBE_EVERY};
    use std::time::Duration;

    /// How many waits in a row the gate refuses to spin, starting now.
    fn refused(g: &mut SpinGate) -> u32 {
        let mut n = 0;
        while !g.allow() {
            n += 1;
            assert!(n <= 4096, "the gate never opens");
        }
        n
    }

    #[test]
    fn empty_spins_close_the_gate_for_longer_each_time_and_a_caught_one_resets_it() {
        let mut g = SpinGate::new();
        assert_eq!(refused(&mut g), 0);
        g.missed();
        assert_eq!(refused(&mut g), 16);
        g.missed();
        assert_eq!(refused(&mut g), 32);
        for _ in 0..20 {
            g.missed();
            let _ = refused(&mut g);
        }
        g.missed();
        assert_eq!(refused(&mut g), 4096, "capped");
        g.caught(Duration::from_micros(10));
        g.missed();
        assert_eq!(refused(&mut g), 16, "back to the start after a caught spin");
    }

    #[test]
    fn every_64th_wait_parks_to_measure_it() {
        let mut g = SpinGate::new();
        let spun: Vec<bool> = (0..2 * SPIN_PROBE_EVERY).map(|_| g.allow()).collect();
        let parked: Vec<usize> = (0..spun.len()).filter(|&i| !spun[i]).collect();
        let p = SPIN_PROBE_EVERY as usize;
        assert_eq!(parked, [p - 1, 2 * p - 1]);
    }

    /// Measured: parking 55 µs, spinning 11 µs (an idle VM's halted CPUs): spin. Parking 16 µs,
    /// spinning 16 µs or more (busy cores): spin once in 16 waits, then 32, ... 256 while that
    /// holds, until parking is slow again.
    #[test]
    fn spins_only_while_parking_is_clearly_slower() {
        let us = Duration::from_micros;
        let mut g = SpinGate::new();
        g.parked(us(55));
        g.caught(us(11));
        assert!(g.allow(), "parking 5x slower: spin");
        // Busy cores: both about as fast.
        for _ in 0..64 {
            g.parked(us(16));
            g.caught(us(16));
        }
        let mut skipped = Vec::new();
        for _ in 0..6 {
            skipped.push(refused(&mut g));
            // The one wait that spins after them catches at 16 µs: still no gain.
            g.caught(us(16));
        }
        assert_eq!(
            skipped,
            [16, 32, 64, 128, SPIN_NO_GAIN_SKIP, SPIN_NO_GAIN_SKIP]
        );
        // The machine quiets down: the waits that park take 60 µs again.
        for _ in 0..32 {
            g.parked(us(60));
        }
        assert!(g.allow(), "parking slow again: spin");
        // Busy again: the skips start small again.
        for _ in 0..64 {
            g.parked(us(16));
        }
        assert_eq!(refused(&mut g), 16);
        // Just under 1.1 times: still no gain; just over: spin.
        let mut g = SpinGate::new();
        g.parked(us(21));
        g.caught(us(20));
        assert!(!g.allow());
        let mut g = SpinGate::new();
        g.parked(us(23));
        g.caught(us(20));
        assert!(g.allow());
        // One slow wait counts as twice the average.
        g.parked(us(900));
        assert_eq!(g.parked_ns, 23_000 - 23_000 / 8 + 46_000 / 8);
    }

    #[test]
    fn a_long_quiet_spell_counts_as_one_millisecond() {
        let mut g = SpinGate::new();
        g.parked(Duration::from_secs(5));
        assert_eq!(g.parked_ns, 1_000_000);
    }
}
