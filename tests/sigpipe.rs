//! A dead peer never raises SIGPIPE in the host process. Rust binaries ignore SIGPIPE at
//! start-up but a C host does not, so this test restores the default action (terminate) first:
//! if any write raised SIGPIPE, this test process would die and the test would fail.

use std::time::Duration;

use fastrpc::{Client, ClientConfig, Compression, ErrorKind};

fn restore_default_sigpipe() {
    // SAFETY: setting a signal disposition; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A fake server that completes the handshake, reads a little, then closes its socket, so
/// the client's next writes hit a dead peer.
async fn hostile_peer_then_calls(addr: String, listen: impl FnOnce() -> Acceptor) {
    let acceptor = listen();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for _ in 0..3 {
            let Ok(mut s) = acceptor.accept().await else {
                return;
            };
            let mut hdr = [0u8; 3];
            if s.read_exact(&mut hdr).await.is_err() {
                continue;
            }
            let _ = s.write_all(&[0, 1, 0]).await;
            let mut some = [0u8; 16];
            let _ = s.read(&mut some).await;
            drop(s);
        }
    });
    let mut cfg = ClientConfig::new(addr);
    cfg.compress_type = Compression::None;
    cfg.request_timeout = Duration::from_millis(500);
    let client = Client::new(cfg).unwrap();
    let big = vec![7u8; 256 * 1024];
    for _ in 0..20 {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (c, v) = (client.clone(), big.clone());
            tasks.push(tokio::spawn(async move { c.call(b"x", &v).await }));
        }
        for t in tasks {
            let r = t.await.unwrap();
            let e = r.expect_err("the peer never answers");
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::Connection
                        | ErrorKind::Connect
                        | ErrorKind::Timeout
                        | ErrorKind::Protocol
                ),
                "{e}"
            );
        }
    }
    server.abort();
}

enum Acceptor {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

enum Sock {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Acceptor {
    async fn accept(&self) -> std::io::Result<Sock> {
        Ok(match self {
            Acceptor::Tcp(l) => Sock::Tcp(l.accept().await?.0),
            Acceptor::Unix(l) => Sock::Unix(l.accept().await?.0),
        })
    }
}

impl tokio::io::AsyncRead for Sock {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sock::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Sock::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Sock {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Sock::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Sock::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sock::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            Sock::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sock::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Sock::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_dead_peers_raise_no_sigpipe() {
    restore_default_sigpipe();
    tokio::time::timeout(Duration::from_secs(60), async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        hostile_peer_then_calls(addr, move || Acceptor::Tcp(l)).await;

        // Removed on drop, also when the test fails.
        let dir = tempfile::Builder::new()
            .prefix("fastrpc-sigpipe-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let path = dir.path().join("s.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        hostile_peer_then_calls(format!("unix:{}", path.display()), move || {
            Acceptor::Unix(l)
        })
        .await;
        drop(dir);
    })
    .await
    .unwrap();
}
