//! Addresses and sockets: TCP (`host:port`) and Unix domain sockets (`unix:/path`), one
//! stream type over both (plain or TLS), and listeners.
//!
//! TCP sockets get TCP_NODELAY. Writes never raise SIGPIPE in the host process: std's TCP
//! writes pass MSG_NOSIGNAL, and Unix socket writes here call `send(..., MSG_NOSIGNAL)`
//! instead of `write`, because a C host has not ignored SIGPIPE the way Rust binaries do.

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::error::{Error, ErrorKind};
use crate::tls_stream::{TlsReader, TlsStream, TlsWriter};

/// Where to connect or listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    /// `host:port` over TCP.
    Tcp(String),
    /// `unix:/path` over a Unix domain socket.
    Unix(PathBuf),
}

impl Addr {
    /// Parses `host:port` or `unix:/path`.
    pub fn parse(s: &str) -> Result<Addr, Error> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(Error::invalid(
                    "unix address has an empty path: use unix:/path",
                ));
            }
            return Ok(Addr::Unix(PathBuf::from(p)));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Addr::Tcp(s.to_string()))
            }
            _ => Err(Error::invalid(format!(
                "address {s:?} is neither host:port nor unix:/path"
            ))),
        }
    }

    /// The host part of a TCP address (brackets of an IPv6 literal removed), for TLS.
    pub fn host(&self) -> &str {
        match self {
            Addr::Tcp(s) => {
                let h = s.rsplit_once(':').map(|(h, _)| h).unwrap_or(s);
                h.trim_start_matches('[').trim_end_matches(']')
            }
            Addr::Unix(_) => "",
        }
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(s) => f.write_str(s),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A connected socket before TLS.
pub(crate) enum RawStream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A client's socket in caller-reads mode (`ClientConfig::caller_reads`): the runtime
    /// watches it for writing only, so what arrives wakes no worker; reads are direct `recv`s
    /// that never wait (Pending, registering nothing, when it is empty).
    Direct(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>),
}

/// Connects to `addr`, with TCP_NODELAY on TCP.
pub(crate) async fn connect(addr: &Addr) -> Result<RawStream, Error> {
    match addr {
        Addr::Tcp(s) => {
            let t = TcpStream::connect(s.as_str()).await.map_err(|e| {
                Error::new(ErrorKind::Connect, format!("cannot connect to {s}: {e}"))
            })?;
            let _ = t.set_nodelay(true);
            Ok(RawStream::Tcp(t))
        }
        Addr::Unix(p) => {
            let u = UnixStream::connect(p).await.map_err(|e| {
                Error::new(
                    ErrorKind::Connect,
                    format!("cannot connect to unix:{}: {e}", p.display()),
                )
            })?;
            Ok(RawStream::Unix(u))
        }
    }
}

pub(crate) fn unix_send(
    s: &UnixStream,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(s.poll_write_ready(cx))?;
        let r = s.try_io(Interest::WRITABLE, || {
            // SAFETY: the fd is open for the life of `s`, and buf is a valid slice.
            let n = unsafe {
                libc::send(
                    s.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

// Reads on this thread go to the socket directly (see `reading_directly`).
thread_local! {
    static DIRECT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's socket reads made directly: a `recv` on the socket, without
/// the runtime's readiness (which only the runtime's I/O driver updates, so a thread outside
/// the runtime woken by the socket itself would find it stale), and Pending when the socket
/// is empty, without registering a waker: for a caller's read pass (client `read.rs`),
/// whose reader task stays registered for the socket's readiness.
pub(crate) fn reading_directly<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            DIRECT.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DIRECT.with(|d| d.replace(true)));
    f()
}

#[inline]
pub(crate) fn is_direct() -> bool {
    DIRECT.with(|d| d.get())
}

/// One `recv` of at most `len` bytes into `ptr` (retried on EINTR). Writes only what it
/// returns, reads nothing there.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn recv_raw(fd: std::os::fd::RawFd, ptr: *mut u8, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: upheld by the caller.
        let n = unsafe { libc::recv(fd, ptr.cast(), len, 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Ready(result) of a direct `recv`, Pending when the socket has nothing now.
fn ready_unless_would_block<T>(r: io::Result<T>) -> Poll<io::Result<T>> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        r => Poll::Ready(r),
    }
}

/// One `recv` into `buf` (at most its length); Pending when the socket has nothing now.
pub(crate) fn recv_direct(fd: std::os::fd::RawFd, buf: &mut [u8]) -> Poll<io::Result<usize>> {
    // SAFETY: `buf` is valid for writes of its length.
    ready_unless_would_block(unsafe { recv_raw(fd, buf.as_mut_ptr(), buf.len()) })
}

/// [`recv_direct`] into a `ReadBuf`'s unfilled part (never reading it, so it may be
/// uninitialized, as in a `Vec`'s spare capacity).
fn recv_direct_buf(fd: std::os::fd::RawFd, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
    // SAFETY: recv writes at most the unfilled length and reads nothing; the bytes it wrote
    // are marked initialized and filled below.
    let unfilled = unsafe { buf.unfilled_mut() };
    let r = unsafe { recv_raw(fd, unfilled.as_mut_ptr().cast(), unfilled.len()) };
    let n = ready!(ready_unless_would_block(r))?;
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Poll::Ready(Ok(()))
}

impl AsyncRead for RawStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if is_direct() {
            return recv_direct_buf(self.raw_fd(), buf);
        }
        match self.get_mut() {
            RawStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            RawStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            RawStream::Direct(s) => recv_direct_buf(s.get_ref().as_raw_fd(), buf),
        }
    }
}

impl AsyncWrite for RawStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            RawStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            RawStream::Unix(s) => unix_send(s, cx, buf),
            s @ RawStream::Direct(_) => poll_send(s, cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RawStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            RawStream::Unix(s) => Pin::new(s).poll_flush(cx),
            RawStream::Direct(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RawStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            RawStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            s @ RawStream::Direct(_) => {
                s.shutdown_write();
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl RawStream {
    /// The socket's descriptor.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            RawStream::Tcp(s) => s.as_raw_fd(),
            RawStream::Unix(s) => s.as_raw_fd(),
            RawStream::Direct(s) => s.get_ref().as_raw_fd(),
        }
    }

    /// The same socket in caller-reads mode ([`RawStream::Direct`]): taken off the
    /// runtime's read readiness, watched for writing only. Needs the runtime's context.
    pub(crate) fn into_direct(self) -> io::Result<RawStream> {
        let fd: std::os::fd::OwnedFd = match self {
            RawStream::Tcp(s) => s.into_std()?.into(),
            RawStream::Unix(s) => s.into_std()?.into(),
            d @ RawStream::Direct(_) => return Ok(d),
        };
        // SAFETY: an OwnedFd stays open, the same descriptor, for as long as it is owned.
        let a =
            unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, Interest::WRITABLE) }?;
        Ok(RawStream::Direct(a))
    }

    /// Shuts the write direction (FIN), through `&self`; best effort.
    pub(crate) fn shutdown_write(&self) {
        let fd = self.raw_fd();
        // SAFETY: the fd is open for the life of `self`.
        unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    }
}

/// Reads what the socket has into `buf`, through `&self`.
pub(crate) fn poll_recv(
    sock: &RawStream,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    if is_direct() {
        return recv_direct(sock.raw_fd(), buf);
    }
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
            RawStream::Direct(s) => return recv_direct(s.get_ref().as_raw_fd(), buf),
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

/// Writes some of `buf` to the socket through `&self`, never raising SIGPIPE.
pub(crate) fn poll_send(
    sock: &RawStream,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    match sock {
        RawStream::Tcp(s) => loop {
            ready!(s.poll_write_ready(cx))?;
            // std's TCP write passes MSG_NOSIGNAL.
            match s.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        },
        RawStream::Unix(s) => unix_send(s, cx, buf),
        RawStream::Direct(s) => loop {
            let mut g = ready!(s.poll_write_ready(cx))?;
            let fd = s.get_ref().as_raw_fd();
            // SAFETY: `fd` is open for the life of `s`; send reads at most `buf.len()` bytes
            // of `buf`. MSG_NOSIGNAL: a peer gone is an error, not SIGPIPE.
            let r = g.try_io(|_| {
                let n =
                    unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        },
    }
}

/// [`poll_recv`] into a `ReadBuf`'s unfilled part (never reading it, so it may be
/// uninitialized, as in a `Vec`'s spare capacity).
fn poll_recv_buf(
    sock: &RawStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    let fd = sock.raw_fd();
    if is_direct() {
        return recv_direct_buf(fd, buf);
    }
    // SAFETY: recv writes at most `len` bytes at `ptr` and reads none; those it wrote are
    // marked initialized and filled below.
    let unfilled = unsafe { buf.unfilled_mut() };
    let (ptr, len) = (unfilled.as_mut_ptr().cast::<u8>(), unfilled.len());
    // SAFETY: see above.
    let recv = || unsafe { recv_raw(fd, ptr, len) };
    let n = loop {
        let r = match sock {
            RawStream::Tcp(s) => {
                ready!(s.poll_read_ready(cx))?;
                s.try_io(Interest::READABLE, recv)
            }
            RawStream::Unix(s) => {
                ready!(s.poll_read_ready(cx))?;
                s.try_io(Interest::READABLE, recv)
            }
            RawStream::Direct(_) => return recv_direct_buf(fd, buf),
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => break r?,
        }
    };
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Poll::Ready(Ok(()))
}

/// A connection after the handshake: plain, or TLS over the same socket.
pub(crate) enum Stream {
    Plain(RawStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    /// `Some(peer certificate, if any)` for a TLS stream, `None` for plaintext.
    pub(crate) fn tls_peer(&self) -> Option<Option<Vec<u8>>> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => Some(t.peer_certificate()),
        }
    }

    /// The socket's descriptor (open for the life of the stream and of its halves).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Stream::Plain(s) => s.raw_fd(),
            Stream::Tls(t) => t.raw_fd(),
        }
    }

    /// The stream in caller-reads mode (see [`RawStream::into_direct`]).
    pub(crate) fn into_direct(self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Plain(s) => Stream::Plain(s.into_direct()?),
            Stream::Tls(t) => Stream::Tls(Box::new(t.into_direct()?)),
        })
    }

    /// Splits into the halves the reader and the writer tasks own.
    pub(crate) fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                // Both halves use the socket through `&self` (readiness I/O): no lock between
                // the reader and the writer, which run at once on different threads.
                let s = std::sync::Arc::new(s);
                (ReadHalf::Plain(s.clone()), WriteHalf::Plain(s))
            }
            Stream::Tls(t) => {
                let (r, w) = t.split();
                (ReadHalf::Tls(Box::new(r)), WriteHalf::Tls(Box::new(w)))
            }
        }
    }
}

/// The read half of a [`Stream`].
pub(crate) enum ReadHalf {
    Plain(std::sync::Arc<RawStream>),
    Tls(Box<TlsReader>),
}

/// The write half of a [`Stream`].
pub(crate) enum WriteHalf {
    Plain(std::sync::Arc<RawStream>),
    Tls(Box<TlsWriter>),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(s) => poll_recv_buf(s, cx, buf),
            ReadHalf::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(s) => poll_send(s, cx, buf),
            WriteHalf::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(_) => Poll::Ready(Ok(())),
            WriteHalf::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(s) => {
                s.shutdown_write();
                Poll::Ready(Ok(()))
            }
            WriteHalf::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A bound listener.
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `addr`. A stale Unix socket file at the path is removed first.
    pub(crate) async fn bind(addr: &Addr) -> Result<Listener, Error> {
        match addr {
            Addr::Tcp(s) => TcpListener::bind(s.as_str())
                .await
                .map(Listener::Tcp)
                .map_err(|e| Error::new(ErrorKind::Io, format!("cannot listen on {s}: {e}"))),
            Addr::Unix(p) => {
                use std::os::unix::fs::FileTypeExt;
                if let Ok(md) = std::fs::symlink_metadata(p) {
                    if md.file_type().is_socket() {
                        let _ = std::fs::remove_file(p);
                    }
                }
                UnixListener::bind(p)
                    .map(|l| Listener::Unix(l, p.clone()))
                    .map_err(|e| {
                        Error::new(
                            ErrorKind::Io,
                            format!("cannot listen on unix:{}: {e}", p.display()),
                        )
                    })
            }
        }
    }

    /// The bound address (with the real port when port 0 was asked).
    pub(crate) fn local_addr(&self) -> Addr {
        match self {
            Listener::Tcp(l) => Addr::Tcp(
                l.local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| "?".into()),
            ),
            Listener::Unix(_, p) => Addr::Unix(p.clone()),
        }
    }

    /// Accepts one connection and names its peer.
    pub(crate) async fn accept(&self) -> io::Result<(RawStream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, a) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((RawStream::Tcp(s), a.to_string()))
            }
            Listener::Unix(l, p) => {
                let (s, _) = l.accept().await?;
                Ok((RawStream::Unix(s), format!("unix:{}", p.display())))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            Addr::parse("127.0.0.1:80").unwrap(),
            Addr::Tcp("127.0.0.1:80".into())
        );
        assert_eq!(
            Addr::parse("unix:/tmp/x.sock").unwrap(),
            Addr::Unix("/tmp/x.sock".into())
        );
        assert_eq!(Addr::parse("[::1]:9").unwrap().host(), "::1");
        assert_eq!(Addr::parse("localhost:9").unwrap().host(), "localhost");
        for bad in ["", "nohost", ":80", "h:notaport", "unix:", "h:70000"] {
            let e = Addr::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
    }
}
