//! One connection's byte streams after the handshake: the read side turns socket bytes into
//! decompressed frame bytes, the write side compresses one batch and writes it with a flush.
//!
//! Frame parsing is not here: readers look at [`FrameReader::data`], take whole frames, call
//! [`FrameReader::consume`], and ask [`FrameReader::fill`] for at least as many bytes as the
//! frame parser said it needs. Buffers are kept and reused for the life of the connection.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::compress::{Compression, Decoder, Encoder};
use crate::error::{Error, ErrorKind};
use crate::stats::IoCounters;
use crate::transport::{ReadHalf, WriteHalf};

/// Room a decoder is offered at least, so a whole snappy chunk always fits.
const DECODE_ROOM: usize = 64 * 1024;

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
            stats,
        }
    }

    /// The plain bytes not yet consumed.
    #[inline]
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..]
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
        let have = self.buf.len() - self.start;
        if have >= need {
            return Ok(true);
        }
        if have == 0 || self.deadline.is_none() {
            // A new frame starts: the read timeout bounds the whole frame.
            self.deadline = self.read_timeout.map(|t| Instant::now() + t);
        }
        // Make room at the front, then enough capacity for the whole frame.
        if self.start > 0 {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(have);
            self.start = 0;
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
                    let n = read_some(&mut self.rd, &mut self.buf, self.deadline).await?;
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
                    self.raw.reserve(self.read_size);
                    let n = read_some(&mut self.rd, &mut self.raw, self.deadline).await?;
                    self.stats.received_wire.fetch_add(n as u64, Relaxed);
                    n
                }
            };
            if got == 0 {
                let have = self.buf.len();
                if have == 0 && self.raw_pos == self.raw.len() {
                    return Ok(false);
                }
                return Err(Error::protocol(format!(
                    "the peer closed the stream in the middle of a frame ({have} of {need} bytes)"
                )));
            }
        }
        Ok(true)
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

async fn read_some(
    rd: &mut ReadHalf,
    into: &mut Vec<u8>,
    deadline: Option<Instant>,
) -> Result<usize, Error> {
    let r = match deadline {
        None => rd.read_buf(into).await,
        Some(d) => match tokio::time::timeout_at(d, rd.read_buf(into)).await {
            Ok(r) => r,
            Err(_) => {
                return Err(Error::fixed(
                    ErrorKind::Timeout,
                    "read timeout: the peer sent no whole frame within read_timeout",
                ))
            }
        },
    };
    r.map_err(|e| Error::from_io(&e, ErrorKind::Connection, "read failed"))
}

/// The write side of a connection.
pub(crate) struct FrameWriter {
    wr: WriteHalf,
    encoder: Option<Encoder>,
    wire: Vec<u8>,
    write_timeout: Option<Duration>,
    stats: Arc<IoCounters>,
}

impl FrameWriter {
    pub(crate) fn new(
        wr: WriteHalf,
        compression: Compression,
        flate_level: u32,
        write_size: usize,
        write_timeout: Option<Duration>,
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
            write_timeout,
            stats,
        }
    }

    /// Compresses `plain` (whole frames) and writes it out with a flush.
    pub(crate) async fn write_batch(&mut self, plain: &[u8], frames: usize) -> Result<(), Error> {
        if plain.is_empty() {
            return Ok(());
        }
        let bytes: &[u8] = match self.encoder.as_mut() {
            None => plain,
            Some(enc) => {
                self.wire.clear();
                enc.encode(plain, &mut self.wire)?;
                &self.wire
            }
        };
        let wr = &mut self.wr;
        let io = async {
            wr.write_all(bytes).await?;
            wr.flush().await
        };
        let r = match self.write_timeout {
            None => io.await,
            Some(t) => match tokio::time::timeout(t, io).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Error::fixed(
                        ErrorKind::Timeout,
                        "write timeout: the peer did not take a batch within write_timeout",
                    ))
                }
            },
        };
        r.map_err(|e| Error::from_io(&e, ErrorKind::Connection, "write failed"))?;
        let s = &self.stats;
        s.sent_plain.fetch_add(plain.len() as u64, Relaxed);
        s.sent_wire.fetch_add(bytes.len() as u64, Relaxed);
        s.flushes.fetch_add(1, Relaxed);
        s.frames_sent.fetch_add(frames as u64, Relaxed);
        Ok(())
    }

    /// Closes the write direction (TLS close_notify, then FIN), best effort.
    pub(crate) async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.wr.shutdown()).await;
    }
}
