//! A TLS connection over a [`RawStream`]: the handshake through rustls' unbuffered API, then
//! a read half and a write half that run concurrently on their own tasks and protect the
//! records themselves ([`crate::tls_record`]), so steady-state traffic allocates nothing.
//!
//! Design: after the handshake rustls hands over the traffic secrets and a
//! `KernelConnection` (its API for kTLS). The read half owns the receive key and a reused
//! ciphertext buffer in which records are decrypted in place; the write half owns the send key
//! and a reused output buffer into which plaintext batches are sealed. The halves share the
//! socket (readiness-based I/O through `&self`, one reader and one writer) and, behind a
//! mutex taken only for rare post-handshake messages, the `KernelConnection`: it computes new
//! secrets on a TLS 1.3 KeyUpdate and stores session tickets. A KeyUpdate that asks us to
//! update too is answered before our next record (RFC 8446 section 4.6.3); the write half
//! also updates its own key before the cipher's confidentiality limit. Writes never raise
//! SIGPIPE (see [`crate::transport`]).
//!
//! (rustls' unbuffered API alone would not do: in 0.23 it still allocates a Vec per record in
//! each direction, so it is used for the handshake only.)

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{AlertDescription, ExtractedSecrets, SupportedCipherSuite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::tls_record::{
    RecordKey, ALERT, APPLICATION_DATA, HANDSHAKE, HEADER, MAX_OVERHEAD, MAX_PAYLOAD, MAX_PLAIN,
};
use crate::transport::RawStream;

/// The read buffer holds a few whole records, so one read takes several.
const READ_BUF: usize = 4 * (HEADER + MAX_PAYLOAD);
/// The most plaintext sealed per `poll_write`: the output buffer stays about this size.
const WRITE_CHUNK: usize = 16 * MAX_PLAIN;
/// The largest handshake flight buffered (a long certificate chain fits many times over).
const MAX_HANDSHAKE_BUF: usize = 1 << 20;
/// The largest post-handshake message accepted (session tickets are a few hundred bytes).
const MAX_POST_HANDSHAKE_MESSAGE: usize = 64 * 1024;
/// KeyUpdates accepted in a row without application data between them (rustls bounds them
/// too): a peer cannot keep us computing new keys for nothing.
const MAX_KEY_UPDATES_IN_A_ROW: u32 = 32;

/// The rustls connection that computes new secrets and stores tickets after the handshake.
enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    /// The key our next records are sealed with, after a KeyUpdate of ours.
    fn next_tx_key(&mut self) -> Result<RecordKey, rustls::Error> {
        let (seq, secrets) = match self {
            Kernel::Client(k) => k.update_tx_secret()?,
            Kernel::Server(k) => k.update_tx_secret()?,
        };
        RecordKey::new(secrets, seq, self.suite())
    }

    /// The key the peer's next records are opened with, after a KeyUpdate of theirs.
    fn next_rx_key(&mut self) -> Result<RecordKey, rustls::Error> {
        let (seq, secrets) = match self {
            Kernel::Client(k) => k.update_rx_secret()?,
            Kernel::Server(k) => k.update_rx_secret()?,
        };
        RecordKey::new(secrets, seq, self.suite())
    }

    fn suite(&self) -> SupportedCipherSuite {
        match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
        }
    }
}

/// A connection whose handshake is done, before it is split.
pub(crate) struct TlsStream {
    sock: RawStream,
    kernel: Kernel,
    tx: RecordKey,
    rx: RecordKey,
    /// Ciphertext read past the end of the handshake.
    incoming: Vec<u8>,
    /// Application data that came with the handshake (normally none).
    early_plain: Vec<u8>,
}

/// What the two halves share.
struct Shared {
    sock: RawStream,
    kernel: Mutex<Kernel>,
    /// The peer updated its key and asked us to update ours before our next record.
    update_requested: AtomicBool,
}

impl TlsStream {
    /// Splits into the read half and the write half.
    pub(crate) fn split(self) -> (TlsReader, TlsWriter) {
        let shared = Arc::new(Shared {
            sock: self.sock,
            kernel: Mutex::new(self.kernel),
            update_requested: AtomicBool::new(false),
        });
        let mut buf = self.incoming;
        let end = buf.len();
        buf.resize(READ_BUF.max(end), 0);
        let reader = TlsReader {
            shared: shared.clone(),
            rx: self.rx,
            buf,
            start: 0,
            end,
            plain: 0..0,
            early_plain: self.early_plain,
            early_pos: 0,
            hs: Vec::new(),
            key_updates: 0,
            eof: false,
        };
        let writer = TlsWriter {
            shared,
            tx: self.tx,
            out: Vec::new(),
            sent: 0,
            closed: false,
        };
        (reader, writer)
    }
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn general(msg: &str) -> io::Error {
    invalid(rustls::Error::General(msg.to_string()))
}

/// The two kinds of unbuffered connection, driven by one handshake loop.
trait Unbuffered {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn handshaking(&self) -> bool;
    fn wants_write(&self) -> bool;
    fn into_kernel(self)
        -> Result<(ExtractedSecrets, Kernel, SupportedCipherSuite), rustls::Error>;
}

impl Unbuffered for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn handshaking(&self) -> bool {
        self.is_handshaking()
    }
    fn wants_write(&self) -> bool {
        rustls::CommonState::wants_write(self)
    }
    fn into_kernel(
        self,
    ) -> Result<(ExtractedSecrets, Kernel, SupportedCipherSuite), rustls::Error> {
        let (s, k) = self.dangerous_into_kernel_connection()?;
        let suite = k.negotiated_cipher_suite();
        Ok((s, Kernel::Client(k), suite))
    }
}

impl Unbuffered for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn handshaking(&self) -> bool {
        self.is_handshaking()
    }
    fn wants_write(&self) -> bool {
        rustls::CommonState::wants_write(self)
    }
    fn into_kernel(
        self,
    ) -> Result<(ExtractedSecrets, Kernel, SupportedCipherSuite), rustls::Error> {
        let (s, k) = self.dangerous_into_kernel_connection()?;
        let suite = k.negotiated_cipher_suite();
        Ok((s, Kernel::Server(k), suite))
    }
}

/// A handshake failure: rustls' error, or the socket's.
pub(crate) enum HandshakeError {
    Tls(rustls::Error),
    Io(io::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Tls(e) => e.fmt(f),
            HandshakeError::Io(e) => e.fmt(f),
        }
    }
}

/// Runs the client handshake. `config` must allow secret extraction.
pub(crate) async fn connect(
    sock: RawStream,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> Result<TlsStream, HandshakeError> {
    let conn = UnbufferedClientConnection::new(config, name).map_err(HandshakeError::Tls)?;
    handshake(sock, conn).await
}

/// Runs the server handshake. `config` must allow secret extraction.
pub(crate) async fn accept(
    sock: RawStream,
    config: Arc<rustls::ServerConfig>,
) -> Result<TlsStream, HandshakeError> {
    let conn = UnbufferedServerConnection::new(config).map_err(HandshakeError::Tls)?;
    handshake(sock, conn).await
}

/// Appends the record `enc` holds to `out`.
fn encode_into<D>(
    enc: &mut rustls::unbuffered::EncodeTlsData<'_, D>,
    out: &mut Vec<u8>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    out.resize(start + 2 * MAX_PLAIN, 0);
    let n = match enc.encode(&mut out[start..]) {
        Ok(n) => n,
        Err(EncodeError::InsufficientSize(s)) => {
            out.resize(start + s.required_size, 0);
            enc.encode(&mut out[start..])
                .map_err(|e| rustls::Error::General(e.to_string()))?
        }
        Err(e) => return Err(rustls::Error::General(e.to_string())),
    };
    out.truncate(start + n);
    Ok(())
}

/// Drives `conn` through the handshake over `sock`. Once rustls no longer handshakes, it is
/// given no more input: records after the handshake stay in our buffer for the read half.
async fn handshake<C: Unbuffered>(
    mut sock: RawStream,
    mut conn: C,
) -> Result<TlsStream, HandshakeError> {
    let mut buf = vec![0u8; READ_BUF];
    let mut end = 0;
    let mut out = Vec::new();
    let mut early_plain = Vec::new();
    loop {
        let mut read = false;
        let mut transmit = false;
        let mut failed = None;
        let mut traffic = false;
        let handshaking = conn.handshaking();
        let mut none: [u8; 0] = [];
        let input: &mut [u8] = if handshaking {
            &mut buf[..end]
        } else {
            &mut none
        };
        let status = conn.process(input);
        let discard = status.discard;
        match status.state {
            Err(e) => failed = Some(e),
            Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                if let Err(e) = encode_into(&mut enc, &mut out) {
                    failed = Some(e);
                }
            }
            Ok(ConnectionState::TransmitTlsData(t)) => {
                t.done();
                transmit = true;
            }
            Ok(ConnectionState::BlockedHandshake) => read = true,
            Ok(ConnectionState::WriteTraffic(_)) => traffic = true,
            Ok(ConnectionState::ReadTraffic(mut r)) => {
                while let Some(rec) = r.next_record() {
                    match rec {
                        Ok(rec) => early_plain.extend_from_slice(rec.payload),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
            }
            Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => {
                failed = Some(rustls::Error::General(
                    "the peer closed the TLS connection during the handshake".into(),
                ))
            }
            Ok(_) => {
                failed = Some(rustls::Error::General(
                    "unexpected TLS state during the handshake (early data?)".into(),
                ))
            }
        }
        if discard > 0 {
            buf.copy_within(discard..end, 0);
            end -= discard;
        }
        if traffic {
            // Asked again now: this very call may have finished the handshake.
            if conn.handshaking() {
                read = true;
            } else {
                break;
            }
        }
        if let Some(e) = failed {
            // rustls queued an alert for the peer: send it, best effort. Only while it has
            // records queued, which it hands out before looking at the input again (which
            // would fail again).
            while conn.wants_write() {
                match conn.process(&mut buf[..end]).state {
                    Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                        if encode_into(&mut enc, &mut out).is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            if !out.is_empty() {
                let _ = sock.write_all(&out).await;
            }
            return Err(HandshakeError::Tls(e));
        }
        if transmit && !out.is_empty() {
            sock.write_all(&out).await.map_err(HandshakeError::Io)?;
            sock.flush().await.map_err(HandshakeError::Io)?;
            out.clear();
        }
        if read {
            if end == buf.len() {
                // A handshake message larger than the buffer (a long certificate chain).
                if buf.len() >= MAX_HANDSHAKE_BUF {
                    return Err(HandshakeError::Tls(rustls::Error::General(format!(
                        "the peer's TLS handshake messages exceed {MAX_HANDSHAKE_BUF} bytes"
                    ))));
                }
                buf.resize(buf.len() * 2, 0);
            }
            let n = sock
                .read(&mut buf[end..])
                .await
                .map_err(HandshakeError::Io)?;
            if n == 0 {
                return Err(HandshakeError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                )));
            }
            end += n;
        }
    }
    if !out.is_empty() {
        sock.write_all(&out).await.map_err(HandshakeError::Io)?;
    }
    let (secrets, kernel, suite) = conn.into_kernel().map_err(HandshakeError::Tls)?;
    let ExtractedSecrets { tx, rx } = secrets;
    let tx = RecordKey::new(tx.1, tx.0, suite).map_err(HandshakeError::Tls)?;
    let rx = RecordKey::new(rx.1, rx.0, suite).map_err(HandshakeError::Tls)?;
    buf.truncate(end);
    Ok(TlsStream {
        sock,
        kernel,
        tx,
        rx,
        incoming: buf,
        early_plain,
    })
}

/// The read half: decrypts records in place in its buffer and hands out their plaintext.
pub(crate) struct TlsReader {
    shared: Arc<Shared>,
    rx: RecordKey,
    /// Ciphertext in `buf[start..end]`; the rest is room to read into.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Decrypted application data not yet handed out, within `buf`.
    plain: std::ops::Range<usize>,
    early_plain: Vec<u8>,
    early_pos: usize,
    /// A post-handshake handshake message split over records.
    hs: Vec<u8>,
    /// KeyUpdates received since the last application data.
    key_updates: u32,
    /// The peer sent close_notify.
    eof: bool,
}

impl TlsReader {
    /// Opens the next whole record in the buffer, if there is one. Returns Ok(false) when
    /// more bytes are needed first.
    fn next_record(&mut self) -> io::Result<bool> {
        let avail = self.end - self.start;
        if avail < HEADER {
            return Ok(false);
        }
        let h = &self.buf[self.start..];
        let len = u16::from_be_bytes([h[3], h[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(general("received a TLS record longer than TLS allows"));
        }
        if avail < HEADER + len {
            return Ok(false);
        }
        let at = self.start;
        self.start += HEADER + len;
        let rec = &mut self.buf[at..at + HEADER + len];
        let (typ, r) = self.rx.open(rec).map_err(invalid)?;
        let (a, b) = (at + r.start, at + r.end);
        match typ {
            APPLICATION_DATA => {
                self.plain = a..b;
                self.key_updates = 0;
            }
            ALERT => {
                let &[_level, desc] = &self.buf[a..b] else {
                    return Err(general("received a malformed TLS alert"));
                };
                match AlertDescription::from(desc) {
                    AlertDescription::CloseNotify => self.eof = true,
                    AlertDescription::UserCanceled => {}
                    d => return Err(invalid(rustls::Error::AlertReceived(d))),
                }
            }
            HANDSHAKE => {
                self.hs.extend_from_slice(&self.buf[a..b]);
                self.handshake_messages()?;
            }
            _ => return Err(general("received an unexpected TLS record type")),
        }
        Ok(true)
    }

    /// Handles the whole post-handshake messages in `hs`: session tickets, KeyUpdate.
    fn handshake_messages(&mut self) -> io::Result<()> {
        let mut at = 0;
        while self.hs.len() - at >= 4 {
            let m = &self.hs[at..];
            let len = u32::from_be_bytes([0, m[1], m[2], m[3]]) as usize;
            if len > MAX_POST_HANDSHAKE_MESSAGE {
                return Err(general(
                    "received a post-handshake TLS message over 64 KiB (session tickets and \
                     KeyUpdates are small)",
                ));
            }
            if m.len() < 4 + len {
                break;
            }
            let (typ, body) = (m[0], &m[4..4 + len]);
            at += 4 + len;
            let mut kernel = self.shared.kernel.lock().unwrap_or_else(|e| e.into_inner());
            match typ {
                // NewSessionTicket (TLS 1.3).
                4 => match &mut *kernel {
                    Kernel::Client(k) => k.handle_new_session_ticket(body).map_err(invalid)?,
                    Kernel::Server(_) => {
                        return Err(general("a TLS client sent a session ticket"));
                    }
                },
                // KeyUpdate (TLS 1.3): must end its record.
                24 => {
                    let request = match body {
                        [0] => false,
                        [1] => true,
                        _ => return Err(general("received a malformed TLS KeyUpdate")),
                    };
                    if at != self.hs.len() {
                        return Err(general("a TLS KeyUpdate did not end its record"));
                    }
                    self.key_updates += 1;
                    if self.key_updates > MAX_KEY_UPDATES_IN_A_ROW {
                        return Err(general(
                            "the peer sent more than 32 TLS KeyUpdates without data between them",
                        ));
                    }
                    self.rx = kernel.next_rx_key().map_err(invalid)?;
                    if request {
                        self.shared.update_requested.store(true, Ordering::Release);
                    }
                }
                // HelloRequest (TLS 1.2 renegotiation): declined by ignoring it, as allowed.
                0 if !self.rx.is_tls13() => {}
                _ => return Err(general("received an unexpected TLS handshake message")),
            }
        }
        self.hs.drain(..at);
        Ok(())
    }
}

impl AsyncRead for TlsReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.early_pos < me.early_plain.len() {
            let n = out.remaining().min(me.early_plain.len() - me.early_pos);
            out.put_slice(&me.early_plain[me.early_pos..me.early_pos + n]);
            me.early_pos += n;
            return Poll::Ready(Ok(()));
        }
        let mut copied = false;
        loop {
            if !me.plain.is_empty() && out.remaining() > 0 {
                let n = out.remaining().min(me.plain.len());
                out.put_slice(&me.buf[me.plain.start..me.plain.start + n]);
                me.plain.start += n;
                copied = true;
            }
            if !me.plain.is_empty() || out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if me.eof {
                return Poll::Ready(Ok(()));
            }
            if me.next_record()? {
                continue;
            }
            if copied {
                return Poll::Ready(Ok(()));
            }
            // Need more ciphertext: keep the partial record at the front, then read.
            if me.start > 0 {
                me.buf.copy_within(me.start..me.end, 0);
                me.end -= me.start;
                me.start = 0;
            }
            let n = ready!(poll_recv(&me.shared.sock, cx, &mut me.buf[me.end..]))?;
            if n == 0 {
                if me.end > 0 {
                    return Poll::Ready(Err(general(
                        "the peer closed the connection in the middle of a TLS record",
                    )));
                }
                // EOF without close_notify at a record boundary: the frame layer decides
                // whether it cut a frame.
                me.eof = true;
                return Poll::Ready(Ok(()));
            }
            me.end += n;
        }
    }
}

/// The write half: seals plaintext into its output buffer and writes it out.
pub(crate) struct TlsWriter {
    shared: Arc<Shared>,
    tx: RecordKey,
    /// Sealed records; `out[sent..]` not yet written.
    out: Vec<u8>,
    sent: usize,
    /// close_notify was sealed: nothing more may be.
    closed: bool,
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
        Poll::Ready(Ok(()))
    }

    /// Seals `plain` as application data records after `out`, updating our key first when
    /// the peer asked for it or the key is worn out.
    fn seal(&mut self, plain: &[u8]) -> io::Result<()> {
        if self.shared.update_requested.swap(false, Ordering::Acquire) || self.tx.exhausted() {
            if !self.tx.is_tls13() {
                return Err(general(
                    "the TLS 1.2 traffic key reached its confidentiality limit; reconnect",
                ));
            }
            // KeyUpdate(update_not_requested) under the old key, then the new key.
            self.tx
                .seal(HANDSHAKE, &[24, 0, 0, 1, 0], &mut self.out)
                .map_err(invalid)?;
            let mut kernel = self.shared.kernel.lock().unwrap_or_else(|e| e.into_inner());
            self.tx = kernel.next_tx_key().map_err(invalid)?;
        }
        // One reservation for the whole chunk: none at all once the buffer has grown.
        let records = plain.len().div_ceil(MAX_PLAIN) + 2;
        self.out.reserve(plain.len() + records * MAX_OVERHEAD);
        for rec in plain.chunks(MAX_PLAIN) {
            self.tx
                .seal(APPLICATION_DATA, rec, &mut self.out)
                .map_err(invalid)?;
        }
        Ok(())
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
        if me.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(WRITE_CHUNK);
        me.seal(&buf[..n])?;
        // Start sending now; what the socket does not take goes out on the next call.
        if let Poll::Ready(Err(e)) = me.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    /// Sends close_notify, then shuts the socket's write direction.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_drain(cx))?;
        if !me.closed {
            me.closed = true;
            me.tx.seal(ALERT, &[1, 0], &mut me.out).map_err(invalid)?;
            ready!(me.poll_drain(cx))?;
        }
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

#[cfg(test)]
mod tests {
    //! Interop with stock rustls (its buffered API, its own record layer) on each suite of
    //! the ring provider, TLS 1.2 and 1.3: multi-record transfers, KeyUpdate both ways,
    //! close_notify both ways.
    use super::*;
    use rustls::crypto::ring::{cipher_suite as cs, default_provider};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::io::{Read, Write};
    use tokio::net::TcpListener;

    struct Pki {
        cert: CertificateDer<'static>,
        key: Vec<u8>,
    }

    fn pki() -> Pki {
        let k = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&k)
            .unwrap();
        Pki {
            cert: c.der().clone(),
            key: k.serialize_der(),
        }
    }

    fn provider(suite: rustls::SupportedCipherSuite) -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..default_provider()
        })
    }

    fn versions(
        suite: rustls::SupportedCipherSuite,
    ) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static V12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
        static V13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match suite {
            rustls::SupportedCipherSuite::Tls12(_) => &V12,
            rustls::SupportedCipherSuite::Tls13(_) => &V13,
        }
    }

    fn server_cfg(p: &Pki, suite: rustls::SupportedCipherSuite) -> Arc<rustls::ServerConfig> {
        let mut c = rustls::ServerConfig::builder_with_provider(provider(suite))
            .with_protocol_versions(versions(suite))
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![p.cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.key.clone())),
            )
            .unwrap();
        c.enable_secret_extraction = true;
        Arc::new(c)
    }

    fn client_cfg(p: &Pki, suite: rustls::SupportedCipherSuite) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(p.cert.clone()).unwrap();
        let mut c = rustls::ClientConfig::builder_with_provider(provider(suite))
            .with_protocol_versions(versions(suite))
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.enable_secret_extraction = true;
        Arc::new(c)
    }

    const N: usize = 600 * 1024;

    fn data() -> Vec<u8> {
        (0..N).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn name() -> ServerName<'static> {
        ServerName::try_from("localhost").unwrap()
    }

    /// Our server, a stock rustls client: the client sends N bytes with a KeyUpdate in the
    /// middle (TLS 1.3), our server echoes them in one write and closes.
    async fn ours_serving_stock(suite: rustls::SupportedCipherSuite) {
        let p = pki();
        let (scfg, ccfg) = (server_cfg(&p, suite), client_cfg(&p, suite));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            let conn = rustls::ClientConnection::new(ccfg, name()).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let d = data();
            s.write_all(&d[..N / 2]).unwrap();
            if matches!(suite, rustls::SupportedCipherSuite::Tls13(_)) {
                s.conn.refresh_traffic_keys().unwrap();
            }
            s.write_all(&d[N / 2..]).unwrap();
            s.flush().unwrap();
            let mut back = Vec::new();
            // Ends cleanly only on close_notify.
            s.read_to_end(&mut back).unwrap();
            assert!(back == d, "echo differs");
        });
        let (tcp, _) = l.accept().await.unwrap();
        let t = accept(RawStream::Tcp(tcp), scfg)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut rd, mut wr) = t.split();
        let mut got = vec![0u8; N];
        rd.read_exact(&mut got).await.unwrap();
        wr.write_all(&got).await.unwrap();
        wr.shutdown().await.unwrap();
        tokio::task::spawn_blocking(move || client.join().unwrap())
            .await
            .unwrap();
    }

    /// A stock rustls server, our client: the server echoes with a KeyUpdate in the middle
    /// (TLS 1.3) and sends close_notify, then reads the byte our client sends afterwards
    /// (after our answering KeyUpdate).
    async fn ours_calling_stock(suite: rustls::SupportedCipherSuite) {
        let p = pki();
        let (scfg, ccfg) = (server_cfg(&p, suite), client_cfg(&p, suite));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (tcp, _) = l.accept().unwrap();
            let conn = rustls::ServerConnection::new(scfg).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let mut got = vec![0u8; N];
            s.read_exact(&mut got).unwrap();
            s.write_all(&got[..N / 3]).unwrap();
            if matches!(suite, rustls::SupportedCipherSuite::Tls13(_)) {
                s.conn.refresh_traffic_keys().unwrap();
            }
            s.write_all(&got[N / 3..]).unwrap();
            s.conn.send_close_notify();
            s.flush().unwrap();
            let mut last = [0u8; 1];
            s.read_exact(&mut last).unwrap();
            assert_eq!(last[0], b'z');
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let t = connect(RawStream::Tcp(tcp), ccfg, name())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut rd, mut wr) = t.split();
        let d = data();
        wr.write_all(&d).await.unwrap();
        wr.flush().await.unwrap();
        let mut back = Vec::new();
        rd.read_to_end(&mut back).await.unwrap();
        assert!(back == d, "echo differs");
        wr.write_all(b"z").await.unwrap();
        wr.flush().await.unwrap();
        tokio::task::spawn_blocking(move || server.join().unwrap())
            .await
            .unwrap();
    }

    /// A stock rustls client that sends KeyUpdates without end: our server reads through 32 of
    /// them (and data after a run of them), then refuses the 33rd in a row.
    #[tokio::test]
    async fn a_flood_of_key_updates_is_refused() {
        let suite = cs::TLS13_AES_128_GCM_SHA256;
        let p = pki();
        let (scfg, ccfg) = (server_cfg(&p, suite), client_cfg(&p, suite));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // The client keeps its socket until the server has read (a close with unread
        // session tickets would reset the connection).
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            let conn = rustls::ClientConnection::new(ccfg, name()).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock).unwrap();
            }
            // 32 in a row, then data: accepted.
            for _ in 0..32 {
                s.conn.refresh_traffic_keys().unwrap();
                s.flush().unwrap();
            }
            s.write_all(b"ok").unwrap();
            s.flush().unwrap();
            // 40 more in a row: refused at the 33rd.
            for _ in 0..40 {
                s.conn.refresh_traffic_keys().unwrap();
                let _ = s.flush();
            }
            let _ = s.write_all(b"never");
            let _ = s.flush();
            let _ = done_rx.recv();
        });
        let (tcp, _) = l.accept().await.unwrap();
        let t = accept(RawStream::Tcp(tcp), scfg)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut rd, _wr) = t.split();
        let mut ok = [0u8; 2];
        rd.read_exact(&mut ok).await.unwrap();
        assert_eq!(&ok, b"ok");
        let mut rest = [0u8; 5];
        let e = rd.read_exact(&mut rest).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("more than 32 TLS KeyUpdates without data between them"),
            "{e}"
        );
        done_tx.send(()).unwrap();
        tokio::task::spawn_blocking(move || client.join().unwrap())
            .await
            .unwrap();
    }

    const SUITES: [rustls::SupportedCipherSuite; 6] = [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ];

    #[tokio::test]
    async fn interop_with_stock_rustls_on_every_suite() {
        for suite in SUITES {
            tokio::time::timeout(std::time::Duration::from_secs(20), async {
                ours_serving_stock(suite).await;
                ours_calling_stock(suite).await;
            })
            .await
            .unwrap_or_else(|_| panic!("{suite:?} timed out"));
        }
    }
}
