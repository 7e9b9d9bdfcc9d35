//! A TLS connection over a [`RawStream`], entirely through rustls's own buffered connection
//! (`rustls::Connection`): rustls handles every handshake and record byte (record limits,
//! alerts, KeyUpdate, session tickets, truncation detection, key usage limits, zeroizing).
//! This file only moves bytes between rustls and the socket; it makes no TLS decision itself.
//!
//! After the handshake the stream splits into a read half and a write half that run on their
//! own tasks at the same time. They share the socket (readiness I/O through `&self`: one reader,
//! one writer) and the rustls connection behind a std mutex that is held only while rustls
//! processes bytes, never across a socket operation or an await:
//!
//! * the read half reads ciphertext into its own buffer without the lock, then under the lock
//!   gives it to rustls (`read_tls` + `process_new_packets`) and copies the plaintext out;
//! * the write half under the lock gives plaintext to rustls (`writer()`) and copies the
//!   records rustls sealed (`write_tls`) into its own buffer, then writes them without the lock.
//!   Whatever rustls queued on the read side (a KeyUpdate answer, a warning alert) goes out
//!   with the writer's next records.
//!
//! When rustls reports a fatal error on the read side it queues an alert; the read half sends
//! it at once unless the write half is in the middle of a write (then the write half sends it
//! next), and the write half refuses further data.
//!
//! Bounds: the read half's buffer is [`READ_BUF`] bytes; rustls's own buffers are bounded by
//! rustls (a 64 KiB handshake message at most while joining one, one record otherwise, 16 KiB
//! of received plaintext, 64 KiB of sealed records: we drain them on each call). The handshake
//! reads in [`HANDSHAKE_READ`] byte steps.

use std::io::{self, BufRead, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use rustls::pki_types::ServerName;
use rustls::Connection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::tls::{Side, TlsFailure};
use crate::transport::RawStream;

/// The read half's ciphertext buffer: several whole records per socket read.
pub(crate) const READ_BUF: usize = 64 * 1024;
/// The handshake's read step (rustls's own read step is 4 KiB).
pub(crate) const HANDSHAKE_READ: usize = 4096;

/// A connection whose handshake is done, before it is split.
pub(crate) struct TlsStream {
    sock: RawStream,
    conn: Connection,
    /// Ciphertext read with the end of the handshake that rustls has not taken yet.
    pending: Vec<u8>,
}

/// The rustls connection and what the halves know about it.
struct State {
    conn: Connection,
    /// rustls reported a fatal error (its alert is queued): nothing more is written.
    failed: Option<String>,
}

/// What the two halves share.
struct Shared {
    sock: RawStream,
    state: Mutex<State>,
    /// The write half holds records it has not finished writing; while it does, only it
    /// writes to the socket.
    writing: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handshake failure: rustls's error, or the socket's.
pub(crate) enum HandshakeError {
    Tls(rustls::Error),
    Io(io::Error),
}

/// Runs the client handshake.
pub(crate) async fn connect(
    sock: RawStream,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> Result<TlsStream, HandshakeError> {
    let conn = rustls::ClientConnection::new(config, name).map_err(HandshakeError::Tls)?;
    handshake(sock, conn.into()).await
}

/// Runs the server handshake.
pub(crate) async fn accept(
    sock: RawStream,
    config: Arc<rustls::ServerConfig>,
) -> Result<TlsStream, HandshakeError> {
    let conn = rustls::ServerConnection::new(config).map_err(HandshakeError::Tls)?;
    handshake(sock, conn.into()).await
}

/// Everything rustls has sealed, appended to `out`.
fn take_records(conn: &mut Connection, out: &mut Vec<u8>) {
    while conn.wants_write() {
        // Writing into a Vec cannot fail.
        if conn.write_tls(out).is_err() {
            break;
        }
    }
}

/// Drives the handshake over `sock` until rustls no longer handshakes.
async fn handshake(mut sock: RawStream, mut conn: Connection) -> Result<TlsStream, HandshakeError> {
    let mut buf = vec![0u8; HANDSHAKE_READ];
    let mut out = Vec::new();
    let mut pending = Vec::new();
    loop {
        take_records(&mut conn, &mut out);
        if !out.is_empty() {
            sock.write_all(&out).await.map_err(HandshakeError::Io)?;
            out.clear();
        }
        if !conn.is_handshaking() {
            break;
        }
        let n = sock.read(&mut buf).await.map_err(HandshakeError::Io)?;
        if n == 0 {
            return Err(HandshakeError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during the TLS handshake",
            )));
        }
        let mut input = &buf[..n];
        while !input.is_empty() {
            match conn.read_tls(&mut input) {
                Ok(0) => break,
                Ok(_) => {}
                // rustls refuses bytes: its handshake buffer is full (the peer's handshake
                // message is over rustls's limit), or, once the handshake is done, its
                // plaintext buffer is (the read half takes the rest).
                Err(e) if conn.is_handshaking() => {
                    return Err(HandshakeError::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        e,
                    )))
                }
                Err(_) => break,
            }
            if let Err(e) = conn.process_new_packets() {
                // rustls queued an alert for the peer: send it, best effort.
                take_records(&mut conn, &mut out);
                let _ = sock.write_all(&out).await;
                return Err(HandshakeError::Tls(e));
            }
        }
        if !conn.is_handshaking() {
            pending.extend_from_slice(input);
        }
    }
    Ok(TlsStream {
        sock,
        conn,
        pending,
    })
}

impl TlsStream {
    /// Splits into the read half and the write half.
    pub(crate) fn split(self) -> (TlsReader, TlsWriter) {
        let shared = Arc::new(Shared {
            sock: self.sock,
            state: Mutex::new(State {
                conn: self.conn,
                failed: None,
            }),
            writing: AtomicBool::new(false),
        });
        let mut buf = self.pending;
        let end = buf.len();
        buf.resize(READ_BUF.max(end), 0);
        let reader = TlsReader {
            shared: shared.clone(),
            buf,
            start: 0,
            end,
            eof: false,
        };
        let writer = TlsWriter {
            shared,
            out: Vec::new(),
            sent: 0,
        };
        (reader, writer)
    }
}

/// The read half.
pub(crate) struct TlsReader {
    shared: Arc<Shared>,
    /// Ciphertext in `buf[start..end]` not yet given to rustls.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket reached its end.
    eof: bool,
}

impl TlsReader {
    /// Under the lock: hands out plaintext and gives rustls ciphertext until `out` is full or
    /// the buffered ciphertext is used up. Ready(()) when something was copied or the stream
    /// ended; Pending when the socket must be read.
    fn step(&mut self, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        let mut copied = false;
        loop {
            match copy_plain(&mut st.conn, out) {
                Ok(0) => return Poll::Ready(Ok(())), // close_notify
                Ok(_) => {
                    copied = true;
                    if out.remaining() == 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if self.start == self.end {
                if self.eof {
                    // Tells rustls the transport ended: its reader then says whether that was
                    // after close_notify (end of stream) or a truncation (UnexpectedEof).
                    let _ = st.conn.read_tls(&mut &[][..]);
                    return match copy_plain(&mut st.conn, out) {
                        Ok(_) => Poll::Ready(Ok(())),
                        // The error comes with the next call.
                        Err(_) if copied => Poll::Ready(Ok(())),
                        Err(e) => Poll::Ready(Err(e)),
                    };
                }
                return if copied {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            }
            let mut input = &self.buf[self.start..self.end];
            match st.conn.read_tls(&mut input) {
                // close_notify was received: rustls takes nothing more.
                Ok(0) => self.start = self.end,
                Ok(n) => self.start += n,
                Err(e) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
            }
            if let Err(e) = st.conn.process_new_packets() {
                return Poll::Ready(Err(self.fail(st, e)));
            }
        }
    }

    /// rustls failed on the peer's bytes: marks the connection failed and sends the alert
    /// rustls queued, unless the write half is writing (it sends the alert next).
    fn fail(&self, mut st: MutexGuard<'_, State>, e: rustls::Error) -> io::Error {
        let side = match st.conn {
            Connection::Client(_) => Side::Client,
            Connection::Server(_) => Side::Server,
        };
        let e = TlsFailure::new(e, side);
        st.failed = Some(e.text.clone());
        if !self.shared.writing.load(Ordering::Acquire) {
            let mut alert = Vec::new();
            take_records(&mut st.conn, &mut alert);
            // Best effort and without waiting: the connection is over.
            let _ = try_send(&self.shared.sock, &alert);
        }
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Copies what plaintext rustls holds into `out`, chunk by chunk (without zeroing `out`'s
/// free space first, as `Read::read` would need). Ok(0) with room in `out`: the peer's
/// close_notify came and nothing is left; Err(WouldBlock): nothing yet; UnexpectedEof: the
/// transport ended without close_notify.
fn copy_plain(conn: &mut Connection, out: &mut ReadBuf<'_>) -> io::Result<usize> {
    let mut total = 0;
    let mut rd = conn.reader();
    while out.remaining() > 0 {
        let n = match rd.fill_buf() {
            Ok(chunk) => {
                let n = chunk.len().min(out.remaining());
                out.put_slice(&chunk[..n]);
                n
            }
            Err(_) if total > 0 => break,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        rd.consume(n);
        total += n;
    }
    Ok(total)
}

impl AsyncRead for TlsReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Poll::Ready(r) = me.step(out) {
                return Poll::Ready(r);
            }
            me.start = 0;
            me.end = 0;
            let n = ready!(poll_recv(&me.shared.sock, cx, &mut me.buf))?;
            if n == 0 {
                me.eof = true;
            }
            me.end = n;
        }
    }
}

/// The write half.
pub(crate) struct TlsWriter {
    shared: Arc<Shared>,
    /// Records rustls sealed; `out[sent..]` not yet written.
    out: Vec<u8>,
    sent: usize,
}

impl TlsWriter {
    /// Writes `out[sent..]` to the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(poll_send(&self.shared.sock, cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        self.shared.writing.store(false, Ordering::Release);
        Poll::Ready(Ok(()))
    }

    /// Under the lock: gives rustls `plain` (when some) and copies out what it sealed,
    /// including what the read side queued. Returns how much of `plain` rustls took.
    fn seal(&mut self, plain: &[u8]) -> io::Result<usize> {
        let mut st = self.shared.lock();
        if let Some(e) = &st.failed {
            let e = io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("the TLS connection failed: {e}"),
            );
            take_records(&mut st.conn, &mut self.out);
            self.mark_writing();
            return Err(e);
        }
        let n = if plain.is_empty() {
            0
        } else {
            st.conn.writer().write(plain)?
        };
        take_records(&mut st.conn, &mut self.out);
        self.mark_writing();
        Ok(n)
    }

    fn mark_writing(&self) {
        if !self.out.is_empty() {
            self.shared.writing.store(true, Ordering::Release);
        }
    }
}

impl AsyncWrite for TlsWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        ready!(me.poll_drain(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let r = me.seal(buf);
        // Start sending now; what the socket does not take goes out on the next call.
        if let Poll::Ready(Err(e)) = me.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        match r {
            // rustls takes at least one byte while its sealed-record buffer is empty, and
            // we just emptied it.
            Ok(0) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            r => Poll::Ready(r),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_drain(cx))?;
        me.seal(&[])?;
        me.poll_drain(cx)
    }

    /// Sends close_notify, then shuts the socket's write direction.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_drain(cx))?;
        {
            let mut st = me.shared.lock();
            st.conn.send_close_notify();
            take_records(&mut st.conn, &mut me.out);
            me.mark_writing();
        }
        ready!(me.poll_drain(cx))?;
        me.shared.sock.shutdown_write();
        Poll::Ready(Ok(()))
    }
}

/// Reads what the socket has into `buf`, through `&self`.
fn poll_recv(sock: &RawStream, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
    loop {
        let r = match sock {
            RawStream::Tcp(s) => {
                ready!(s.poll_read_ready(cx))?;
                s.try_read(buf)
            }
            RawStream::Unix(s) => {
                ready!(s.poll_read_ready(cx))?;
                s.try_read(buf)
            }
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

/// Writes some of `buf` to the socket through `&self`, never raising SIGPIPE.
fn poll_send(sock: &RawStream, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    match sock {
        RawStream::Tcp(s) => loop {
            ready!(s.poll_write_ready(cx))?;
            // std's TCP write passes MSG_NOSIGNAL.
            match s.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        },
        RawStream::Unix(s) => crate::transport::unix_send(s, cx, buf),
    }
}

/// Writes what the socket takes of `buf` now, without waiting.
fn try_send(sock: &RawStream, buf: &[u8]) -> io::Result<usize> {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    match poll_send(sock, &mut cx, buf) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Tls(e) => e.fmt(f),
            HandshakeError::Io(e) => e.fmt(f),
        }
    }
}
