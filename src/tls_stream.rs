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
//! next), and the write half refuses further data. Data rustls decrypted before the failure
//! is handed out first, the error with the next read.
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
use crate::transport::{poll_recv, poll_send, RawStream};

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
    /// The socket's descriptor.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.raw_fd()
    }

    /// The stream with its socket in caller-reads mode ([`RawStream::into_direct`]).
    pub(crate) fn into_direct(self) -> io::Result<TlsStream> {
        Ok(TlsStream {
            sock: self.sock.into_direct()?,
            conn: self.conn,
            pending: self.pending,
        })
    }

    /// The peer's end-entity certificate (DER) when it presented one (and so, on a server
    /// that asks for client certificates, one rustls verified).
    pub(crate) fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
    }

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
            error: None,
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
    /// rustls failed after handing out data: the error for the next call.
    error: Option<io::Error>,
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
                let err = self.fail(&mut st, e);
                // What rustls decrypted before the failure is handed out first; the error
                // comes with the next call.
                if copy_plain(&mut st.conn, out).is_ok_and(|n| n > 0) || copied {
                    self.error = Some(err);
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(err));
            }
        }
    }

    /// rustls failed on the peer's bytes: marks the connection failed and sends the alert
    /// rustls queued, unless the write half is writing (it sends the alert next).
    fn fail(&self, st: &mut State, e: rustls::Error) -> io::Error {
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
        if let Some(e) = me.error.take() {
            return Poll::Ready(Err(e));
        }
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

#[cfg(test)]
mod tests {
    //! Our plumbing against stock rustls (blocking, over std sockets) on each suite of the
    //! aws-lc-rs provider, TLS 1.2 and 1.3: multi-record transfers both ways, KeyUpdate both ways
    //! (the answer rustls queues on our read side goes out with our next write),
    //! close_notify both ways, and rustls's own limit on KeyUpdates in a row.
    use super::*;
    use rustls::crypto::aws_lc_rs::{cipher_suite as cs, default_provider};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        let c = rustls::ServerConfig::builder_with_provider(provider(suite))
            .with_protocol_versions(versions(suite))
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![p.cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.key.clone())),
            )
            .unwrap();
        Arc::new(c)
    }

    fn client_cfg(p: &Pki, suite: rustls::SupportedCipherSuite) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(p.cert.clone()).unwrap();
        let c = rustls::ClientConfig::builder_with_provider(provider(suite))
            .with_protocol_versions(versions(suite))
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
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

    /// A stock rustls client that sends KeyUpdates without end: our server (that is, its
    /// rustls) reads through 32 of them (and data after a run of them), then refuses the 33rd
    /// in a row.
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
                .ends_with("peer misbehaved: TooManyKeyUpdateRequests"),
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
