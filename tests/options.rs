//! Every `ClientConfig` and `ServerConfig` option does what its doc comment says, plus the
//! client and server APIs around them (close, send, stats, blocking facades, stop).

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fastrpc::{
    BlockingClient, BlockingServer, Call, Client, ClientConfig, CloseMode, Completion, Compression,
    Error, ErrorKind, Server, ServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const TEST_LIMIT: Duration = Duration::from_secs(30);

async fn bounded(f: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("the test did not finish within 30 s");
}

/// Runs `f` on a plain thread (no tokio runtime) and fails if it takes over 30 s.
fn bounded_thread(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(TEST_LIMIT) {
        Ok(()) => h.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the test did not finish within 30 s")
        }
    }
}

/// Polls `cond` every 2 ms for up to 10 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Replies with the request's value.
fn echo(call: Call) {
    let v = call.value().to_vec();
    let _ = call.reply(&v);
}

/// A handler that hands every call wanting a response to the test, which answers it when it
/// likes. Fire-and-forget requests are dropped.
fn holder() -> (
    impl Fn(Call) + Send + Sync + 'static,
    mpsc::UnboundedReceiver<Call>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        move |call: Call| {
            if !call.is_nowait() {
                let _ = tx.send(call);
            }
        },
        rx,
    )
}

async fn serve(cfg: ServerConfig, h: impl fastrpc::Handler) -> Server {
    Server::bind("127.0.0.1:0", cfg, h).await.unwrap()
}

fn client(addr: &str) -> Client {
    Client::new(ClientConfig::new(addr)).unwrap()
}

fn server_cfg(f: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut c = ServerConfig::default();
    f(&mut c);
    c
}

fn client_cfg(addr: &str, f: impl FnOnce(&mut ClientConfig)) -> ClientConfig {
    let mut c = ClientConfig::new(addr);
    f(&mut c);
    c
}

fn compressible(n: usize) -> Vec<u8> {
    b"the quick brown fox jumps over the lazy dog; "
        .iter()
        .cycle()
        .take(n)
        .copied()
        .collect()
}

fn noisy(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An address nothing listens on (it was free a moment ago).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A listener that accepts connections and never says a word (the handshake never ends).
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, h)
}

/// Reads one request frame (compression none). None at EOF.
async fn read_request(s: &mut TcpStream) -> Option<(u32, Vec<u8>, Vec<u8>)> {
    let mut b4 = [0u8; 4];
    s.read_exact(&mut b4).await.ok()?;
    let id = u32::from_le_bytes(b4);
    s.read_exact(&mut b4).await.ok()?;
    let mut name = vec![0u8; u32::from_le_bytes(b4) as usize];
    s.read_exact(&mut name).await.ok()?;
    s.read_exact(&mut b4).await.ok()?;
    let mut value = vec![0u8; u32::from_le_bytes(b4) as usize];
    s.read_exact(&mut value).await.ok()?;
    Some((id, name, value))
}

fn request_frame(id: u32, name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&(name.len() as u32).to_le_bytes());
    b.extend_from_slice(name);
    b.extend_from_slice(&(value.len() as u32).to_le_bytes());
    b.extend_from_slice(value);
    b
}

/// A hand-written v1 server (compression none both ways) that reads the client's handshake,
/// answers it only once `release` fires, then echoes every request's value.
async fn delayed_echo_server(release: oneshot::Receiver<()>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut hdr = [0u8; 3];
        s.read_exact(&mut hdr).await.unwrap();
        assert_eq!(hdr, [0, 1, 0], "client header: version 0, none, no TLS");
        let _ = release.await;
        s.write_all(&[0, 1, 0]).await.unwrap();
        while let Some((id, _, value)) = read_request(&mut s).await {
            let mut out = Vec::new();
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(&value);
            if s.write_all(&out).await.is_err() {
                break;
            }
        }
    });
    addr
}

/// A raw client that does the plaintext handshake with compression none both ways.
async fn raw_client(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 1, 0]).await.unwrap();
    let mut h = [0u8; 3];
    s.read_exact(&mut h).await.unwrap();
    assert_eq!(h, [0, 1, 0], "server header: version 0, none, no TLS");
    s
}

/// Reads until EOF or an error; returns how long it took.
async fn until_closed(s: &mut TcpStream) -> Duration {
    let t = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return t.elapsed(),
            Ok(_) => {}
        }
    }
}

/// A private temporary directory, removed on drop (also when a test fails).
struct TempDir(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let t = tempfile::Builder::new()
            .prefix(&format!("fastrpc-opt-{tag}-"))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        TempDir(t.path().to_path_buf(), t)
    }
}

/// Completion sink that forwards outcomes to a channel.
struct Sink(mpsc::UnboundedSender<(u128, Result<Vec<u8>, ErrorKind>)>);

impl Completion for Sink {
    fn complete(&self, tag: u128, result: Result<&[u8], &Error>) {
        let _ = self
            .0
            .send((tag, result.map(|v| v.to_vec()).map_err(|e| e.kind())));
    }
}

fn assert_kind<T>(r: Result<T, Error>, kind: ErrorKind) -> Error {
    match r {
        Ok(_) => panic!("expected a {kind:?} error, got Ok"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{e}");
            e
        }
    }
}

// ---------------------------------------------------------------------------------------
// Client options
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_addr_tcp_and_unix() {
    bounded(async {
        let tcp = serve(ServerConfig::default(), echo).await;
        assert!(
            tcp.local_addr().starts_with("127.0.0.1:"),
            "{}",
            tcp.local_addr()
        );
        let c = client(&tcp.local_addr());
        assert_eq!(c.call(b"n", b"over tcp").await.unwrap(), b"over tcp");

        let dir = TempDir::new("addr");
        let addr = format!("unix:{}", dir.0.join("s.sock").display());
        let unix = Server::bind(&addr, ServerConfig::default(), echo)
            .await
            .unwrap();
        assert_eq!(unix.local_addr(), addr);
        let c = client(&addr);
        assert_eq!(c.call(b"n", b"over unix").await.unwrap(), b"over unix");
        assert_eq!(c.config().addr, addr);

        for bad in ["nohost", "unix:", "h:notaport", ":80"] {
            let e = assert_kind(
                Client::new(ClientConfig::new(bad)),
                ErrorKind::InvalidArgument,
            );
            assert!(!e.message().is_empty());
        }
        // A Unix path nothing listens on: a connect error naming it.
        let missing = format!("unix:{}", dir.0.join("missing.sock").display());
        let e = assert_kind(client(&missing).call(b"n", b"").await, ErrorKind::Connect);
        assert!(e.message().contains(&missing), "{e}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sniff_header_and_protocol_version_must_match() {
    bounded(async {
        let scfg = server_cfg(|c| {
            c.sniff_header = b"fastrpc-x".to_vec();
            c.protocol_version = 7;
        });
        let server = serve(scfg, echo).await;
        let addr = server.local_addr();

        let ok = Client::new(client_cfg(&addr, |c| {
            c.sniff_header = b"fastrpc-x".to_vec();
            c.protocol_version = 7;
        }))
        .unwrap();
        assert_eq!(ok.call(b"n", b"hello").await.unwrap(), b"hello");

        // Same length, other bytes: the server closes without answering (as the reference
        // does), so the client can only report a connect failure during the handshake, with a
        // hint at the likely causes.
        let bad_sniff = Client::new(client_cfg(&addr, |c| {
            c.sniff_header = b"fastrpc-y".to_vec();
            c.protocol_version = 7;
        }))
        .unwrap();
        let e = assert_kind(bad_sniff.call(b"n", b"").await, ErrorKind::Connect);
        assert!(e.message().contains(&addr), "{e}");
        assert!(e.message().contains("sniff header"), "{e}");

        let bad_version = Client::new(client_cfg(&addr, |c| {
            c.sniff_header = b"fastrpc-x".to_vec();
            c.protocol_version = 8;
        }))
        .unwrap();
        assert_kind(bad_version.call(b"n", b"").await, ErrorKind::Connect);

        wait_until("the server counted both failed handshakes", || {
            server.stats().handshake_failures == 2
        })
        .await;
        assert_eq!(server.stats().errors.protocol, 2);
        // The good client is unaffected.
        assert_eq!(ok.call(b"n", b"again").await.unwrap(), b"again");

        // A peer answering with the wrong sniff header or version: the client's message names
        // what it got and what it expected.
        for (reply, want) in [
            (
                b"abd\x03\x01\x00".to_vec(),
                "sniff header \"abd\", expected \"abc\"",
            ),
            (
                b"abc\x04\x01\x00".to_vec(),
                "protocol version 4, expected 3",
            ),
        ] {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let peer = l.local_addr().unwrap().to_string();
            let task = tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut hdr = [0u8; 6];
                s.read_exact(&mut hdr).await.unwrap();
                assert_eq!(&hdr, b"abc\x03\x01\x00");
                s.write_all(&reply).await.unwrap();
                until_closed(&mut s).await;
            });
            let c = Client::new(client_cfg(&peer, |c| {
                c.sniff_header = b"abc".to_vec();
                c.protocol_version = 3;
                c.compress_type = Compression::None;
            }))
            .unwrap();
            let e = assert_kind(c.call(b"n", b"").await, ErrorKind::Protocol);
            assert!(e.message().contains(want), "{e:?} should contain {want:?}");
            drop(c);
            task.await.unwrap();
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compress_type_of_each_direction() {
    bounded(async {
        let value = compressible(64 * 1024);
        let req_plain = (12 + 1 + value.len()) as u64;
        let resp_plain = (8 + value.len()) as u64;
        for (comp, compresses) in [
            (Compression::Flate, true),
            (Compression::Snappy, true),
            (Compression::None, false),
        ] {
            // The client's compress_type governs requests.
            let server = serve(
                server_cfg(|c| c.compress_type = Compression::None),
                |c: Call| {
                    let _ = c.reply(b"ok");
                },
            )
            .await;
            let cl =
                Client::new(client_cfg(&server.local_addr(), |c| c.compress_type = comp)).unwrap();
            assert_eq!(cl.call(b"n", &value).await.unwrap(), b"ok");
            let io = server.stats().io;
            assert_eq!(io.bytes_received_plain, req_plain, "{comp}");
            if compresses {
                assert!(
                    io.bytes_received_wire < io.bytes_received_plain / 4,
                    "{comp}: {io:?}"
                );
            } else {
                assert_eq!(io.bytes_received_wire, io.bytes_received_plain, "{comp}");
            }

            // The server's compress_type governs responses.
            let server = serve(server_cfg(|c| c.compress_type = comp), echo).await;
            let cl = Client::new(client_cfg(&server.local_addr(), |c| {
                c.compress_type = Compression::None
            }))
            .unwrap();
            assert_eq!(cl.call(b"n", &value).await.unwrap(), value);
            let io = cl.stats().io;
            assert_eq!(io.bytes_received_plain, resp_plain, "{comp}");
            if compresses {
                assert!(
                    io.bytes_received_wire < io.bytes_received_plain / 4,
                    "{comp}: {io:?}"
                );
            } else {
                assert_eq!(io.bytes_received_wire, io.bytes_received_plain, "{comp}");
            }
            let sio = server.stats().io;
            assert_eq!(sio.bytes_received_wire, sio.bytes_received_plain);
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flate_level_changes_the_wire_bytes() {
    bounded(async {
        let value = compressible(64 * 1024);
        let plain = (12 + 1 + value.len()) as u64;
        let mut client_wire = Vec::new();
        let mut server_wire = Vec::new();
        for level in [0u32, 9] {
            let server = serve(
                server_cfg(|c| {
                    c.compress_type = Compression::Flate;
                    c.flate_level = level;
                }),
                echo,
            )
            .await;
            let cl = Client::new(client_cfg(&server.local_addr(), |c| {
                c.compress_type = Compression::Flate;
                c.flate_level = level;
            }))
            .unwrap();
            assert_eq!(cl.call(b"n", &value).await.unwrap(), value, "level {level}");
            wait_until("the server read every byte the client wrote", || {
                server.stats().io.bytes_received_wire == cl.stats().io.bytes_sent_wire
            })
            .await;
            wait_until("the client read every byte the server wrote", || {
                cl.stats().io.bytes_received_wire == server.stats().io.bytes_sent_wire
            })
            .await;
            client_wire.push(server.stats().io.bytes_received_wire);
            server_wire.push(cl.stats().io.bytes_received_wire);
        }
        // Level 0 stores: more than the plain bytes. Level 9 squeezes the repetitive text.
        assert!(client_wire[0] > plain, "{client_wire:?}");
        assert!(client_wire[1] * 10 < client_wire[0], "{client_wire:?}");
        assert!(server_wire[0] > (8 + value.len()) as u64, "{server_wire:?}");
        assert!(server_wire[1] * 10 < server_wire[0], "{server_wire:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_requests_refuses_the_next_call_at_once() {
    bounded(async {
        let (h, mut rx) = holder();
        let server = serve(ServerConfig::default(), h).await;
        let cl = Client::new(client_cfg(&server.local_addr(), |c| {
            c.max_pending_requests = 4
        }))
        .unwrap();
        let mut tasks = Vec::new();
        for i in 0..4u8 {
            let c = cl.clone();
            tasks.push(tokio::spawn(async move { c.call(b"n", &[i]).await }));
        }
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(rx.recv().await.unwrap());
        }
        assert_eq!(cl.pending_requests(), 4);
        assert_eq!(cl.stats().pending_requests, 4);

        let t = Instant::now();
        let e = assert_kind(cl.call(b"n", b"one too many").await, ErrorKind::Overflow);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(e.message().contains("max_pending_requests"), "{e}");
        assert_eq!(cl.pending_requests(), 4);

        for c in held {
            let v = c.value().to_vec();
            c.reply(&v).unwrap();
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), vec![i as u8]);
        }
        assert_eq!(cl.pending_requests(), 0);
        let st = cl.stats();
        assert_eq!(st.calls, 4);
        assert_eq!(st.responses, 4);
        assert_eq!(st.errors.overflow, 1);
        assert_eq!(st.errors.total(), 1);
        // Room again.
        let c = cl.clone();
        let t = tokio::spawn(async move { c.call(b"n", b"room").await });
        let call = rx.recv().await.unwrap();
        call.reply(b"room").unwrap();
        assert_eq!(t.await.unwrap().unwrap(), b"room");
    })
    .await
}

/// Fills max_pending (3) with queued calls while the handshake is held, then makes a 4th.
async fn overflow_while_queued(prioritize: bool) {
    let (release, released) = oneshot::channel();
    let addr = delayed_echo_server(released).await;
    let cl = Client::new(client_cfg(&addr, |c| {
        c.compress_type = Compression::None;
        c.max_pending_requests = 3;
        c.prioritize_new_requests = prioritize;
    }))
    .unwrap();
    let mut tasks = Vec::new();
    for i in 1..=3u8 {
        let c = cl.clone();
        tasks.push(tokio::spawn(async move { c.call(b"n", &[i]).await }));
        wait_until("the call is queued", || cl.pending_requests() == i as usize).await;
    }
    let c = cl.clone();
    let newest = tokio::spawn(async move { c.call(b"n", &[4]).await });
    if prioritize {
        // The oldest queued call makes room, at once, while the handshake is still held.
        let oldest = tasks.remove(0).await.unwrap();
        let e = assert_kind(oldest, ErrorKind::Overflow);
        assert!(e.message().contains("make room"), "{e}");
        release.send(()).unwrap();
        assert_eq!(newest.await.unwrap().unwrap(), vec![4]);
        for (t, want) in tasks.into_iter().zip([2u8, 3]) {
            assert_eq!(t.await.unwrap().unwrap(), vec![want]);
        }
    } else {
        let e = assert_kind(newest.await.unwrap(), ErrorKind::Overflow);
        assert!(e.message().contains("already waiting"), "{e}");
        release.send(()).unwrap();
        for (t, want) in tasks.into_iter().zip([1u8, 2, 3]) {
            assert_eq!(t.await.unwrap().unwrap(), vec![want]);
        }
    }
    let st = cl.stats();
    assert_eq!(st.errors.overflow, 1);
    assert_eq!(st.responses, 3);
    assert_eq!(cl.pending_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prioritize_new_requests_fails_the_oldest_queued_call() {
    bounded(overflow_while_queued(true)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_prioritize_the_new_queued_call_fails() {
    bounded(overflow_while_queued(false)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_max_batch_delay_batches_requests() {
    bounded(async {
        let server = serve(ServerConfig::default(), echo).await;
        let cl = Client::new(client_cfg(&server.local_addr(), |c| {
            c.max_batch_delay = Duration::from_millis(50)
        }))
        .unwrap();
        // A lone call waits out the delay (a sleep never ends early).
        let t = Instant::now();
        assert_eq!(cl.call(b"n", b"warm").await.unwrap(), b"warm");
        assert!(
            t.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t.elapsed()
        );

        let before = cl.stats().io;
        let mut tasks = Vec::new();
        for i in 0..100u32 {
            let c = cl.clone();
            tasks.push(tokio::spawn(async move {
                let v = i.to_le_bytes();
                assert_eq!(c.call(b"n", &v).await.unwrap(), v);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // The send counters move once a write has returned, maybe after the reply arrived.
        wait_until("100 frames were counted", || {
            cl.stats().io.frames_sent - before.frames_sent == 100
        })
        .await;
        let after = cl.stats().io;
        let frames = after.frames_sent - before.frames_sent;
        let flushes = after.flushes - before.flushes;
        assert_eq!(frames, 100);
        assert!(flushes >= 1);
        assert!(
            frames as f64 / flushes as f64 > 1.0,
            "{frames} frames in {flushes} flushes"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_and_call_timeout_while_queued() {
    bounded(async {
        let (addr, silent) = silent_server().await;
        let cl = Client::new(client_cfg(&addr, |c| {
            c.request_timeout = Duration::from_millis(200)
        }))
        .unwrap();
        let t = Instant::now();
        let e = assert_kind(cl.call(b"n", b"queued").await, ErrorKind::Timeout);
        let el = t.elapsed();
        assert!(el >= Duration::from_millis(200), "{el:?}");
        assert!(el < Duration::from_secs(2), "{el:?}");
        assert!(e.message().contains("deadline"), "{e}");

        // A call's own timeout overrides request_timeout.
        let cl2 = Client::new(client_cfg(&addr, |c| {
            c.request_timeout = Duration::from_secs(20)
        }))
        .unwrap();
        let t = Instant::now();
        assert_kind(
            cl2.call_timeout(b"n", b"queued", Duration::from_millis(150))
                .await,
            ErrorKind::Timeout,
        );
        let el = t.elapsed();
        assert!(el >= Duration::from_millis(150), "{el:?}");
        assert!(el < Duration::from_secs(2), "{el:?}");
        assert_eq!(cl.stats().errors.timeout, 1);
        assert_eq!(cl2.stats().errors.timeout, 1);
        assert_eq!(cl.pending_requests() + cl2.pending_requests(), 0);
        silent.abort();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_and_call_timeout_while_in_flight() {
    bounded(async {
        let (h, mut rx) = holder();
        let server = serve(ServerConfig::default(), h).await;
        let cl = Client::new(client_cfg(&server.local_addr(), |c| {
            c.request_timeout = Duration::from_millis(200)
        }))
        .unwrap();
        let c = cl.clone();
        let t = Instant::now();
        let task = tokio::spawn(async move { c.call(b"n", b"in flight").await });
        // It reached the handler: it is in flight, not queued.
        let late = rx.recv().await.unwrap();
        assert_kind(task.await.unwrap(), ErrorKind::Timeout);
        let el = t.elapsed();
        assert!(el >= Duration::from_millis(200), "{el:?}");
        assert!(el < Duration::from_secs(2), "{el:?}");

        let c = cl.clone();
        let t = Instant::now();
        let task = tokio::spawn(async move {
            c.call_timeout(b"n", b"in flight", Duration::from_millis(100))
                .await
        });
        let late2 = rx.recv().await.unwrap();
        assert_kind(task.await.unwrap(), ErrorKind::Timeout);
        let el = t.elapsed();
        assert!(el >= Duration::from_millis(100), "{el:?}");
        assert!(el < Duration::from_secs(2), "{el:?}");

        // Late responses are read and dropped; the connection keeps working.
        late.reply(b"late").unwrap();
        late2.reply(b"late").unwrap();
        wait_until("both late responses arrived", || {
            cl.stats().unexpected_responses == 2
        })
        .await;
        let c = cl.clone();
        let task = tokio::spawn(async move { c.call(b"n", b"x").await });
        rx.recv().await.unwrap().reply(b"fresh").unwrap();
        assert_eq!(task.await.unwrap().unwrap(), b"fresh");
        let st = cl.stats();
        assert_eq!(st.errors.timeout, 2);
        assert_eq!(st.connects, 1);
        assert_eq!(st.responses, 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_read_timeout_closes_an_idle_connection() {
    bounded(async {
        let server = serve(ServerConfig::default(), echo).await;
        let cl = Client::new(client_cfg(&server.local_addr(), |c| {
            c.read_timeout = Duration::from_millis(200)
        }))
        .unwrap();
        let t = Instant::now();
        assert_eq!(cl.call(b"n", b"1").await.unwrap(), b"1");
        assert_eq!(cl.stats().connects, 1);
        wait_until("the client dropped its idle connection", || {
            server.stats().connections_open == 0
        })
        .await;
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(cl.call(b"n", b"2").await.unwrap(), b"2");
        let st = cl.stats();
        assert_eq!(st.connects, 2);
        assert_eq!(st.reconnects, 1);
        assert_eq!(st.errors.total(), 0);
        assert_eq!(server.stats().connections_accepted, 2);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_write_timeout_fails_calls_to_a_peer_that_does_not_read() {
    bounded(async {
        // A peer that completes the handshake and then never reads.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let peer = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = l.accept().await {
                let mut hdr = [0u8; 3];
                if s.read_exact(&mut hdr).await.is_ok() {
                    let _ = s.write_all(&[0, 1, 0]).await;
                }
                held.push(s);
            }
        });
        let cl = Client::new(client_cfg(&addr, |c| {
            c.compress_type = Compression::None;
            c.write_timeout = Duration::from_millis(100);
            c.request_timeout = Duration::from_secs(20);
            c.max_frame_size = 16 << 20;
            c.max_queued_bytes = 128 << 20;
        }))
        .unwrap();
        // Each request alone is more than the socket buffers hold (4 MiB of send buffer at
        // most here, 128 KiB received by a peer that never reads), so every write stalls,
        // whichever calls share it (a call queued after a batch was taken goes in the next
        // batch, on the next connection).
        let value = Arc::new(vec![7u8; 8 << 20]);
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (c, v) = (cl.clone(), value.clone());
            tasks.push(tokio::spawn(async move { c.call(b"n", &v).await }));
        }
        for task in tasks {
            let e = assert_kind(task.await.unwrap(), ErrorKind::Timeout);
            assert!(e.message().contains("write timeout"), "{e}");
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        peer.abort();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_read_and_write_buffers_carry_a_1mib_value() {
    bounded(async {
        for comp in [Compression::None, Compression::Flate, Compression::Snappy] {
            let server = serve(
                server_cfg(|c| {
                    c.compress_type = comp;
                    c.read_buffer_size = 4096;
                    c.write_buffer_size = 4096;
                }),
                echo,
            )
            .await;
            let cl = Client::new(client_cfg(&server.local_addr(), |c| {
                c.compress_type = comp;
                c.read_buffer_size = 4096;
                c.write_buffer_size = 4096;
            }))
            .unwrap();
            let mut v = noisy(1 << 19, 5);
            v.extend_from_slice(&compressible(1 << 19));
            assert_eq!(v.len(), 1 << 20);
            let r = cl.call(b"big", &v).await.unwrap();
            assert!(r == v, "{comp}: the 1 MiB value came back altered");
            assert_eq!(cl.call(b"n", b"small").await.unwrap(), b"small");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_buffer_size_flushes_a_delayed_batch_early() {
    bounded(async {
        // Client: a 10 s batch delay holds a small request; one that fills the write buffer
        // goes at once.
        let server = serve(ServerConfig::default(), echo).await;
        let cl = Client::new(client_cfg(&server.local_addr(), |c| {
            c.max_batch_delay = Duration::from_secs(10);
            c.write_buffer_size = 4096;
        }))
        .unwrap();
        assert_kind(
            cl.call_timeout(b"n", b"small", Duration::from_millis(200))
                .await,
            ErrorKind::Timeout,
        );
        let t = Instant::now();
        let big = noisy(5000, 9);
        assert_eq!(cl.call(b"n", &big).await.unwrap(), big);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

        // Server: same for responses.
        let server = serve(
            server_cfg(|c| {
                c.max_batch_delay = Duration::from_secs(10);
                c.write_buffer_size = 4096;
            }),
            echo,
        )
        .await;
        let cl = client(&server.local_addr());
        assert_kind(
            cl.call_timeout(b"n", b"small", Duration::from_millis(200))
                .await,
            ErrorKind::Timeout,
        );
        let t = Instant::now();
        assert_eq!(cl.call(b"n", &big).await.unwrap(), big);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // The small response came along in the same flush, too late: dropped.
        wait_until("the late small response was dropped", || {
            cl.stats().unexpected_responses == 1
        })
        .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_max_frame_size() {
    bounded(async {
        let server = serve(server_cfg(|c| c.max_frame_size = 1000), echo).await;
        let cl = Client::new(client_cfg(&server.local_addr(), |c| {
            c.max_frame_size = 1000
        }))
        .unwrap();
        let v = vec![1u8; 1000];
        assert_eq!(cl.call(&[b'n'; 1000], &v).await.unwrap(), v);
        wait_until("the first frame is counted", || {
            cl.stats().io.frames_sent == 1
        })
        .await;
        let before = (cl.stats(), server.stats());

        let t = Instant::now();
        let e = assert_kind(cl.call(b"n", &[1u8; 1001]).await, ErrorKind::TooLarge);
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(
            e.message()
                .contains("value of 1001 bytes exceeds max_frame_size 1000"),
            "{e}"
        );
        let e = assert_kind(cl.call(&[b'n'; 1001], b"").await, ErrorKind::TooLarge);
        assert!(e.message().contains("name of 1001 bytes"), "{e}");
        assert_kind(cl.send(b"n", &[1u8; 1001]), ErrorKind::TooLarge);
        // Nothing was sent.
        let after = (cl.stats(), server.stats());
        assert_eq!(after.0.calls, before.0.calls);
        assert_eq!(after.0.io.frames_sent, before.0.io.frames_sent);
        assert_eq!(after.1.requests, before.1.requests);
        assert_eq!(after.0.errors.too_large, 3);

        // A response over the client's limit fails the call (and its connection).
        let server = serve(ServerConfig::default(), |c: Call| {
            let n = if c.value() == b"big" { 1001 } else { 2 };
            let _ = c.reply(&vec![b'r'; n]);
        })
        .await;
        let cl = Client::new(client_cfg(&server.local_addr(), |c| {
            c.max_frame_size = 1000
        }))
        .unwrap();
        let e = assert_kind(cl.call(b"n", b"big").await, ErrorKind::TooLarge);
        assert!(
            e.message()
                .contains("length 1001 exceeds max_frame_size 1000"),
            "{e}"
        );
        // The client reconnects for the next call.
        assert_eq!(cl.call(b"n", b"small").await.unwrap(), b"rr");
        assert_eq!(cl.stats().connects, 2);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_handshake_timeout() {
    bounded(async {
        let (addr, silent) = silent_server().await;
        let cl = Client::new(client_cfg(&addr, |c| {
            c.handshake_timeout = Duration::from_millis(200);
            c.request_timeout = Duration::from_secs(20);
        }))
        .unwrap();
        let t = Instant::now();
        let e = assert_kind(cl.call(b"n", b"").await, ErrorKind::Timeout);
        let el = t.elapsed();
        assert!(el >= Duration::from_millis(200), "{el:?}");
        assert!(el < Duration::from_secs(3), "{el:?}");
        assert!(e.message().contains("within 200ms"), "{e}");
        assert!(e.message().contains(&addr), "{e}");
        assert_eq!(cl.stats().connect_failures, 1);
        silent.abort();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_backoff_min_and_max() {
    bounded(async {
        let addr = free_addr();
        let backoff = Duration::from_millis(200);
        let cl = Client::new(client_cfg(&addr, |c| {
            c.reconnect_backoff_min = backoff;
            c.reconnect_backoff_max = backoff;
        }))
        .unwrap();
        let e1 = assert_kind(cl.call(b"n", b"").await, ErrorKind::Connect);
        let mut seen = vec![Instant::now()];
        assert!(e1.message().contains(&addr), "{e1}");
        assert_eq!(cl.stats().connect_failures, 1);

        // During the backoff: the same error, at once, without a new attempt.
        let t = Instant::now();
        let e2 = assert_kind(cl.call(b"n", b"").await, ErrorKind::Connect);
        assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
        assert_eq!(e2.message(), e1.message());
        assert_kind(cl.send(b"n", b""), ErrorKind::Connect);

        // The wait between attempts never exceeds reconnect_backoff_max ("longest wait
        // between connect attempts"). Watch a dozen attempts.
        let mut failures = 1;
        while seen.len() < 13 {
            let r = cl.call(b"n", b"").await;
            assert_kind(r, ErrorKind::Connect);
            let f = cl.stats().connect_failures;
            if f != failures {
                failures = f;
                seen.push(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let waits: Vec<Duration> = seen.windows(2).map(|w| w[1] - w[0]).collect();
        let longest = *waits.iter().max().unwrap();
        // The waits are observed by a loop that polls every 2 ms on a shared machine, so an
        // observation can come late by a scheduling delay (70 ms seen under a parallel build);
        // an unclamped doubling would show waits of 400 ms and more.
        assert!(
            longest <= backoff + Duration::from_millis(150),
            "a wait between connect attempts exceeded reconnect_backoff_max {backoff:?}: {waits:?}"
        );

        // Once a server listens there, a call succeeds within backoff_max + margin.
        let server = Server::bind(&addr, ServerConfig::default(), echo)
            .await
            .unwrap();
        let start = Instant::now();
        loop {
            match cl.call(b"n", b"up").await {
                Ok(v) => {
                    assert_eq!(v, b"up");
                    break;
                }
                Err(e) => assert_eq!(e.kind(), ErrorKind::Connect, "{e}"),
            }
            assert!(start.elapsed() < backoff + Duration::from_millis(150));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(cl.stats().connects, 1);
        drop(server);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_drain_waits_for_calls_in_flight() {
    bounded(async {
        let (h, mut rx) = holder();
        let server = serve(ServerConfig::default(), h).await;
        let cl = client(&server.local_addr());
        let mut tasks = Vec::new();
        for i in 0..2u8 {
            let c = cl.clone();
            tasks.push(tokio::spawn(async move { c.call(b"n", &[i]).await }));
        }
        let held = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];

        let c = cl.clone();
        let t = Instant::now();
        let closing =
            tokio::spawn(async move { c.close(CloseMode::Drain(Duration::from_secs(10))).await });
        // New calls are refused once close has begun.
        wait_until(
            "close refuses new requests",
            || matches!(cl.send(b"probe", b""), Err(e) if e.kind() == ErrorKind::Closed),
        )
        .await;
        assert_kind(cl.call(b"n", b"late").await, ErrorKind::Closed);
        assert!(!closing.is_finished());
        assert_eq!(cl.pending_requests(), 2);

        for c in held {
            let v = c.value().to_vec();
            c.reply(&v).unwrap();
        }
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap().unwrap(), vec![i as u8]);
        }
        closing.await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_kind(cl.call(b"n", b"after").await, ErrorKind::Closed);
        // Closing again returns at once.
        cl.close(CloseMode::Drain(Duration::from_secs(10))).await;
        assert!(cl.stats().errors.closed >= 3);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_drain_gives_up_after_its_timeout() {
    bounded(async {
        let (h, mut rx) = holder();
        let server = serve(ServerConfig::default(), h).await;
        let cl = client(&server.local_addr());
        let c = cl.clone();
        let task = tokio::spawn(async move { c.call(b"n", b"never").await });
        let _held = rx.recv().await.unwrap();
        let t = Instant::now();
        cl.close(CloseMode::Drain(Duration::from_millis(200))).await;
        let el = t.elapsed();
        assert!(el >= Duration::from_millis(200), "{el:?}");
        assert!(el < Duration::from_secs(2), "{el:?}");
        assert_kind(task.await.unwrap(), ErrorKind::Closed);
        assert_eq!(cl.pending_requests(), 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_cancel_fails_calls_in_flight_at_once() {
    bounded(async {
        let (h, mut rx) = holder();
        let server = serve(ServerConfig::default(), h).await;
        let cl = client(&server.local_addr());
        let c = cl.clone();
        let task = tokio::spawn(async move { c.call(b"n", b"in flight").await });
        let held = rx.recv().await.unwrap();
        let t = Instant::now();
        cl.close(CloseMode::Cancel).await;
        let e = assert_kind(task.await.unwrap(), ErrorKind::Closed);
        assert_eq!(e.message(), "the client was closed");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_kind(cl.call(b"n", b"after").await, ErrorKind::Closed);
        assert_kind(cl.send(b"n", b"after"), ErrorKind::Closed);
        assert_eq!(cl.pending_requests(), 0);
        // The late reply goes nowhere, harmlessly.
        let _ = held.reply(b"late");
        cl.close(CloseMode::Cancel).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_is_fire_and_forget_with_request_id_0() {
    bounded(async {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let server = serve(ServerConfig::default(), move |call: Call| {
            let _ = tx.send((
                call.request_id(),
                call.is_nowait(),
                call.name().to_vec(),
                call.value().to_vec(),
            ));
            // Replying to a fire-and-forget request is allowed and sends nothing.
            let _ = call.reply(b"ignored");
        })
        .await;
        let cl = client(&server.local_addr());
        cl.send(b"fire", b"forget").unwrap();
        let (id, nowait, name, value) = rx.recv().await.unwrap();
        assert_eq!((id, nowait), (0, true));
        assert_eq!(
            (name.as_slice(), value.as_slice()),
            (&b"fire"[..], &b"forget"[..])
        );
        assert_eq!(cl.call(b"call", b"x").await.unwrap(), b"ignored");
        let (id, nowait, _, _) = rx.recv().await.unwrap();
        assert!(id != 0 && !nowait);
        let st = cl.stats();
        assert_eq!((st.sends, st.calls, st.responses), (1, 1, 1));
        assert_eq!(st.unexpected_responses, 0);
        let ss = server.stats();
        assert_eq!((ss.nowait_requests, ss.requests, ss.responses), (1, 1, 1));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_stats_count_calls_responses_and_errors_by_kind() {
    bounded(async {
        let (h, mut rx) = holder();
        let server = serve(ServerConfig::default(), h).await;
        let cl = Client::new(client_cfg(&server.local_addr(), |c| {
            c.max_pending_requests = 2;
            c.max_frame_size = 100;
        }))
        .unwrap();
        assert_eq!(cl.stats(), fastrpc::ClientStats::default());

        let c = cl.clone();
        let ok = tokio::spawn(async move { c.call(b"n", b"ok").await });
        rx.recv().await.unwrap().reply(b"ok").unwrap();
        assert_eq!(ok.await.unwrap().unwrap(), b"ok");

        // Timeout (in flight), then too large and overflow (refused, not counted as calls).
        assert_kind(
            cl.call_timeout(b"n", b"t", Duration::from_millis(50)).await,
            ErrorKind::Timeout,
        );
        let _t = rx.recv().await.unwrap();
        assert_kind(cl.call(b"n", &[0u8; 101]).await, ErrorKind::TooLarge);
        let mut holding = Vec::new();
        for _ in 0..2 {
            let c = cl.clone();
            holding.push(tokio::spawn(async move { c.call(b"n", b"h").await }));
        }
        let h1 = rx.recv().await.unwrap();
        let h2 = rx.recv().await.unwrap();
        assert_eq!(cl.stats().pending_requests, 2);
        assert_kind(cl.call(b"n", b"o").await, ErrorKind::Overflow);
        h1.reply(b"1").unwrap();
        h2.reply(b"2").unwrap();
        for t in holding {
            t.await.unwrap().unwrap();
        }
        cl.send(b"s", b"").unwrap();

        let st = cl.stats();
        assert_eq!(st.calls, 4);
        assert_eq!(st.responses, 3);
        assert_eq!(st.sends, 1);
        assert_eq!(st.errors.timeout, 1);
        assert_eq!(st.errors.too_large, 1);
        assert_eq!(st.errors.overflow, 1);
        assert_eq!(st.errors.total(), 3);
        assert_eq!(st.connects, 1);
        assert_eq!(st.reconnects, 0);
        assert_eq!(st.connect_failures, 0);
        assert_eq!(st.pending_requests, 0);
        wait_until("the send went out", || cl.stats().io.frames_sent == 5).await;
        assert_eq!(cl.stats().io.frames_received, 3);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configurations_are_refused() {
    bounded(async {
        let bad_client: Vec<(&str, ClientConfig)> = vec![
            (
                "max_pending_requests",
                client_cfg("127.0.0.1:1", |c| c.max_pending_requests = 0),
            ),
            (
                "flate_level",
                client_cfg("127.0.0.1:1", |c| c.flate_level = 10),
            ),
            (
                "request_timeout",
                client_cfg("127.0.0.1:1", |c| c.request_timeout = Duration::ZERO),
            ),
            (
                "max_frame_size",
                client_cfg("127.0.0.1:1", |c| c.max_frame_size = 0),
            ),
            (
                "handshake_timeout",
                client_cfg("127.0.0.1:1", |c| c.handshake_timeout = Duration::ZERO),
            ),
            (
                "reconnect_backoff_min",
                client_cfg("127.0.0.1:1", |c| {
                    c.reconnect_backoff_min = Duration::from_secs(2);
                    c.reconnect_backoff_max = Duration::from_secs(1);
                }),
            ),
        ];
        for (what, cfg) in bad_client {
            let e = assert_kind(Client::new(cfg), ErrorKind::InvalidArgument);
            assert!(e.message().contains(what), "{what}: {e}");
        }
        let bad_server: Vec<(&str, ServerConfig)> = vec![
            ("concurrency", server_cfg(|c| c.concurrency = 0)),
            ("flate_level", server_cfg(|c| c.flate_level = 10)),
            (
                "error_reply",
                server_cfg(|c| {
                    c.max_frame_size = 4;
                    c.error_reply = b"12345".to_vec();
                }),
            ),
        ];
        for (what, cfg) in bad_server {
            let e = assert_kind(
                Server::bind("127.0.0.1:0", cfg, echo).await,
                ErrorKind::InvalidArgument,
            );
            assert!(e.message().contains(what), "{what}: {e}");
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Blocking facades
// ---------------------------------------------------------------------------------------

#[test]
fn blocking_client_and_server_from_plain_threads() {
    bounded_thread(|| {
        let server = BlockingServer::bind("127.0.0.1:0", ServerConfig::default(), |call: Call| {
            if call.name() == b"hold" {
                // Answered from another plain thread, late.
                std::thread::spawn(move || {
                    let rx = HOLD.lock().unwrap().take();
                    if let Some(rx) = rx {
                        let _ = rx.recv();
                    }
                    let _ = call.reply(b"held");
                });
            } else {
                echo(call)
            }
        })
        .unwrap();
        let client = BlockingClient::new(ClientConfig::new(server.local_addr())).unwrap();
        assert_eq!(client.call(b"n", b"v").unwrap(), b"v");
        let mut out = b"old contents".to_vec();
        client.call_into(b"n", b"into", &mut out).unwrap();
        assert_eq!(out, b"into");

        // A per-call timeout, then the late answer is dropped.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        *HOLD.lock().unwrap() = Some(rx);
        let e = client
            .call_timeout_into(b"hold", b"", Duration::from_millis(100), &mut out)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        tx.send(()).unwrap();

        // Many plain threads share one client.
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let client = client.clone();
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..50u8 {
                        client.call_into(b"n", &[t, i], &mut out).unwrap();
                        assert_eq!(out, [t, i]);
                    }
                });
            }
        });
        client.send(b"n", b"fire").unwrap();
        assert_eq!(client.pending_requests(), 0);
        assert_eq!(client.stats().responses, 402);
        assert_eq!(client.client().stats().calls, 403);

        client.close(CloseMode::Drain(Duration::from_secs(2)));
        assert_eq!(
            client.call(b"n", b"").unwrap_err().kind(),
            ErrorKind::Closed
        );
        let st = server.stats();
        assert!(st.requests >= 403, "{st:?}");
        server.stop(Duration::from_secs(5)).unwrap();
        // Stopping twice is fine.
        server.stop(Duration::from_secs(5)).unwrap();
    });
}

static HOLD: Mutex<Option<std::sync::mpsc::Receiver<()>>> = Mutex::new(None);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_api_refuses_inside_a_tokio_runtime() {
    bounded(async {
        let server = serve(ServerConfig::default(), echo).await;
        let bc = BlockingClient::new(ClientConfig::new(server.local_addr())).unwrap();
        let e = assert_kind(bc.call(b"n", b""), ErrorKind::InvalidArgument);
        assert!(e.message().contains("tokio runtime"), "{e}");
        let mut out = Vec::new();
        assert_kind(
            bc.call_into(b"n", b"", &mut out),
            ErrorKind::InvalidArgument,
        );
        assert_kind(
            bc.call_timeout_into(b"n", b"", Duration::from_secs(1), &mut out),
            ErrorKind::InvalidArgument,
        );
        let e = assert_kind(
            BlockingServer::bind("127.0.0.1:0", ServerConfig::default(), echo),
            ErrorKind::InvalidArgument,
        );
        assert!(e.message().contains("tokio runtime"), "{e}");
        // The async client underneath still works here.
        assert_eq!(bc.client().call(b"n", b"async").await.unwrap(), b"async");
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Server options
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_answers_with_concurrency_limit_reply() {
    bounded(async {
        let (h, mut rx) = holder();
        let server = serve(
            server_cfg(|c| {
                c.concurrency = 2;
                c.concurrency_limit_reply = b"too busy".to_vec();
            }),
            h,
        )
        .await;
        let a = client(&server.local_addr());
        let mut tasks = Vec::new();
        for i in 0..2u8 {
            let c = a.clone();
            tasks.push(tokio::spawn(async move { c.call(b"n", &[i]).await }));
        }
        let held = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
        assert_eq!(server.stats().running, 2);

        // The limit is over all connections: another client is refused too, at once.
        let b = client(&server.local_addr());
        let t = Instant::now();
        assert_eq!(b.call(b"n", b"third").await.unwrap(), b"too busy");
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(a.call(b"n", b"fourth").await.unwrap(), b"too busy");
        assert_eq!(server.stats().concurrency_limit_replies, 2);
        assert!(rx.try_recv().is_err(), "the handler ran over the limit");

        for c in held {
            let v = c.value().to_vec();
            c.reply(&v).unwrap();
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), vec![i as u8]);
        }
        // Below the limit again: the handler runs.
        let c = b.clone();
        let t = tokio::spawn(async move { c.call(b"n", b"x").await });
        rx.recv().await.unwrap().reply(b"ran").unwrap();
        assert_eq!(t.await.unwrap().unwrap(), b"ran");
        let st = server.stats();
        assert_eq!(st.concurrency_limit_replies, 2);
        assert_eq!(st.running, 0);
        assert_eq!(st.requests, 5);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_third_call_gets_the_reply_exactly_once() {
    bounded(async {
        let (h, mut rx) = holder();
        let server = serve(
            server_cfg(|c| {
                c.concurrency = 2;
                c.concurrency_limit_reply = b"busy".to_vec();
            }),
            h,
        )
        .await;
        let cl = client(&server.local_addr());
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let c = cl.clone();
            tasks.push(tokio::spawn(async move { c.call(b"n", b"hold").await }));
        }
        let held = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
        assert_eq!(cl.call(b"n", b"3rd").await.unwrap(), b"busy");
        assert_eq!(server.stats().concurrency_limit_replies, 1);
        for c in held {
            c.reply(b"done").unwrap();
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), b"done");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_reply_for_dropped_calls_and_panicking_handlers() {
    bounded(async {
        let server = serve(
            server_cfg(|c| c.error_reply = b"internal error".to_vec()),
            |call: Call| match call.name() {
                b"drop" => drop(call),
                b"panic" => panic!("handler panic on purpose (expected by the test)"),
                _ => echo(call),
            },
        )
        .await;
        let cl = client(&server.local_addr());
        assert_eq!(cl.call(b"drop", b"").await.unwrap(), b"internal error");
        assert_eq!(server.stats().unanswered, 1);
        assert_eq!(cl.call(b"panic", b"").await.unwrap(), b"internal error");
        let st = server.stats();
        assert_eq!(st.handler_panics, 1);
        assert_eq!(st.running, 0);
        // The server and the same connection keep working.
        assert_eq!(
            cl.call(b"echo", b"still here").await.unwrap(),
            b"still here"
        );
        let st = server.stats();
        assert_eq!(st.connections_accepted, 1);
        assert_eq!(st.connections_open, 1);
        assert_eq!(cl.stats().connects, 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_requests_runs_one_at_a_time_in_order() {
    bounded(async {
        let log = Arc::new(Mutex::new(Vec::<(char, u8)>::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let (l, f, m) = (log.clone(), in_flight.clone(), max.clone());
        let server = serve(
            server_cfg(|c| c.pipeline_requests = true),
            move |call: Call| {
                let i = call.value()[0];
                l.lock().unwrap().push(('s', i));
                let n = f.fetch_add(1, SeqCst) + 1;
                m.fetch_max(n, SeqCst);
                let (l, f) = (l.clone(), f.clone());
                // Answered later from another task.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    f.fetch_sub(1, SeqCst);
                    l.lock().unwrap().push(('e', i));
                    let _ = call.reply(&[i]);
                });
            },
        )
        .await;
        let cl = client(&server.local_addr());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sink: Arc<dyn Completion> = Arc::new(Sink(tx));
        for i in 0..10u8 {
            cl.submit(b"n", &[i], Duration::from_secs(10), sink.clone(), i as u128)
                .unwrap();
        }
        for _ in 0..10 {
            let (tag, r) = rx.recv().await.unwrap();
            assert_eq!(r.unwrap(), vec![tag as u8]);
        }
        assert_eq!(max.load(SeqCst), 1);
        let want: Vec<(char, u8)> = (0..10u8).flat_map(|i| [('s', i), ('e', i)]).collect();
        assert_eq!(*log.lock().unwrap(), want);

        // Without pipelining the same connection's requests run concurrently.
        let (h, mut hold) = holder();
        let server = serve(ServerConfig::default(), h).await;
        let cl = client(&server.local_addr());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sink: Arc<dyn Completion> = Arc::new(Sink(tx));
        for i in 0..10u8 {
            cl.submit(b"n", &[i], Duration::from_secs(10), sink.clone(), i as u128)
                .unwrap();
        }
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(hold.recv().await.unwrap());
        }
        assert_eq!(server.stats().running, 10);
        for c in held {
            let v = c.value().to_vec();
            c.reply(&v).unwrap();
        }
        for _ in 0..10 {
            let (tag, r) = rx.recv().await.unwrap();
            assert_eq!(r.unwrap(), vec![tag as u8]);
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_max_batch_delay_batches_responses() {
    bounded(async {
        let server = serve(
            server_cfg(|c| c.max_batch_delay = Duration::from_millis(50)),
            echo,
        )
        .await;
        let cl = client(&server.local_addr());
        let t = Instant::now();
        assert_eq!(cl.call(b"n", b"warm").await.unwrap(), b"warm");
        assert!(
            t.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t.elapsed()
        );
        let before = server.stats().io;
        let mut tasks = Vec::new();
        for i in 0..100u32 {
            let c = cl.clone();
            tasks.push(tokio::spawn(async move {
                let v = i.to_le_bytes();
                assert_eq!(c.call(b"n", &v).await.unwrap(), v);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // The send counters move once a write has returned, maybe after the reply arrived.
        wait_until("100 frames were counted", || {
            server.stats().io.frames_sent - before.frames_sent == 100
        })
        .await;
        let after = server.stats().io;
        let frames = after.frames_sent - before.frames_sent;
        let flushes = after.flushes - before.flushes;
        assert_eq!(frames, 100);
        assert!(
            frames as f64 / flushes as f64 > 1.0,
            "{frames} frames in {flushes} flushes"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_read_timeout_disconnects_idle_clients() {
    bounded(async {
        let read_timeout = Duration::from_millis(300);
        let server = serve(
            server_cfg(|c| {
                c.compress_type = Compression::None;
                c.read_timeout = read_timeout;
            }),
            echo,
        )
        .await;
        let addr = server.local_addr();

        // A raw client that goes quiet after the handshake is closed after read_timeout.
        let mut raw = raw_client(&addr).await;
        let el = until_closed(&mut raw).await;
        assert!(el >= read_timeout - Duration::from_millis(5), "{el:?}");
        assert!(el < Duration::from_secs(3), "{el:?}");
        assert_eq!(server.stats().errors.timeout, 1);

        // A raw client that stops in the middle of a frame, too.
        let mut raw = raw_client(&addr).await;
        raw.write_all(&request_frame(1, b"name", b"value")[..10])
            .await
            .unwrap();
        let el = until_closed(&mut raw).await;
        assert!(el >= read_timeout - Duration::from_millis(5), "{el:?}");
        assert!(el < Duration::from_secs(3), "{el:?}");
        wait_until("the second timeout is counted", || {
            server.stats().errors.timeout == 2
        })
        .await;

        // A client that keeps calling well within read_timeout keeps its connection.
        let cl = client(&addr);
        for i in 0..10u8 {
            assert_eq!(cl.call(b"n", &[i]).await.unwrap(), [i]);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(cl.stats().connects, 1);
        // Once idle, it is disconnected by the server.
        wait_until("the server dropped the idle client", || {
            server.stats().connections_open == 0
        })
        .await;
        assert_eq!(server.stats().errors.timeout, 3);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_write_timeout_closes_a_client_that_does_not_read() {
    bounded(async {
        let server = serve(
            server_cfg(|c| {
                c.compress_type = Compression::None;
                c.write_timeout = Duration::from_millis(100);
            }),
            |call: Call| {
                let _ = call.reply(&vec![3u8; 1 << 20]);
            },
        )
        .await;
        let mut raw = raw_client(&server.local_addr()).await;
        let mut reqs = Vec::new();
        for id in 1..=24u32 {
            reqs.extend_from_slice(&request_frame(id, b"n", b""));
        }
        raw.write_all(&reqs).await.unwrap();
        // Never read: the server's writer stalls and gives up after write_timeout.
        wait_until("the server counted a write timeout", || {
            server.stats().errors.timeout == 1
        })
        .await;
        wait_until("the server closed the connection", || {
            server.stats().connections_open == 0
        })
        .await;
        // Back-pressure: once the unwritten replies reached the high-water mark (1 MiB here),
        // the server read no more requests; 24 MiB of replies cannot fit in socket buffers.
        let read = server.stats().requests;
        assert!((1..24).contains(&read), "requests read: {read}");
        until_closed(&mut raw).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_max_frame_size() {
    bounded(async {
        let server = serve(
            server_cfg(|c| {
                c.max_frame_size = 1000;
                c.error_reply = b"reply too large".to_vec();
            }),
            |call: Call| {
                let n = call.value().len();
                let r = call.reply(&vec![b'r'; n * 2]);
                if n * 2 > 1000 {
                    let e = r.unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
                    assert!(e
                        .message()
                        .contains("2000 bytes exceeds max_frame_size 1000"));
                } else {
                    r.unwrap();
                }
            },
        )
        .await;
        let cl = client(&server.local_addr());
        // A request of exactly the limit is served.
        assert_eq!(cl.call(b"n", &[0u8; 500]).await.unwrap(), vec![b'r'; 1000]);
        // A reply over the limit: Call::reply fails and the client gets error_reply.
        assert_eq!(
            cl.call(b"n", &[0u8; 1000]).await.unwrap(),
            b"reply too large"
        );
        assert_eq!(server.stats().errors.too_large, 1);
        assert_eq!(server.stats().handler_panics, 0);

        // A request over the server's limit: the connection is closed.
        let e = cl.call(b"n", &[0u8; 1001]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
        wait_until("the server counted the too-large request", || {
            server.stats().errors.too_large == 2
        })
        .await;
        assert_eq!(server.stats().requests, 2);
        // The client reconnects and carries on.
        assert_eq!(cl.call(b"n", b"x").await.unwrap(), b"rr");
        assert_eq!(cl.stats().connects, 2);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_handshake_timeout() {
    bounded(async {
        let server = serve(
            server_cfg(|c| c.handshake_timeout = Duration::from_millis(200)),
            echo,
        )
        .await;
        let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
        let el = until_closed(&mut raw).await;
        assert!(el >= Duration::from_millis(195), "{el:?}");
        assert!(el < Duration::from_secs(2), "{el:?}");
        wait_until("the failed handshake is counted", || {
            server.stats().handshake_failures == 1
        })
        .await;
        assert_eq!(server.stats().errors.timeout, 1);
        // A real client still gets through.
        assert_eq!(
            client(&server.local_addr())
                .call(b"n", b"ok")
                .await
                .unwrap(),
            b"ok"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_is_graceful() {
    bounded(async {
        let (h, mut rx) = holder();
        let server = Arc::new(serve(ServerConfig::default(), h).await);
        let addr = server.local_addr();
        let cl = client(&addr);
        let c = cl.clone();
        let first = tokio::spawn(async move { c.call(b"n", b"in flight").await });
        let held = rx.recv().await.unwrap();

        let s = server.clone();
        let stopping = tokio::spawn(async move { s.stop(Duration::from_secs(10)).await });
        // New connections are refused once stop has begun.
        let probe_start = Instant::now();
        loop {
            if TcpStream::connect(&addr).await.is_err() {
                break;
            }
            assert!(probe_start.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(!stopping.is_finished());
        // Only our client's connection is left (the probes' end as stop cancels them).
        wait_until("only the busy connection is open", || {
            server.stats().connections_open == 1
        })
        .await;
        // A request sent now is not read any more.
        let c = cl.clone();
        let second = tokio::spawn(async move { c.call(b"n", b"after stop").await });
        wait_until("the second request is on the wire", || {
            cl.stats().io.frames_sent == 2
        })
        .await;

        // The call in flight still gets its response.
        held.reply(b"answered").unwrap();
        assert_eq!(first.await.unwrap().unwrap(), b"answered");
        stopping.await.unwrap().unwrap();
        assert_kind(second.await.unwrap(), ErrorKind::Connection);
        assert_eq!(server.stats().connections_open, 0);
        assert_eq!(server.stats().requests, 1);
        // Nobody listens any more.
        let e = assert_kind(client(&addr).call(b"n", b"").await, ErrorKind::Connect);
        assert!(e.message().contains(&addr), "{e}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_times_out_with_a_handler_that_never_answers() {
    bounded(async {
        let (h, mut rx) = holder();
        let server = serve(ServerConfig::default(), h).await;
        let cl = Client::new(client_cfg(&server.local_addr(), |c| {
            c.request_timeout = Duration::from_secs(20)
        }))
        .unwrap();
        let c = cl.clone();
        let task = tokio::spawn(async move { c.call(b"n", b"never").await });
        let _held = rx.recv().await.unwrap();
        let t = Instant::now();
        let e = assert_kind(
            server.stop(Duration::from_millis(200)).await,
            ErrorKind::Timeout,
        );
        let el = t.elapsed();
        assert!(el >= Duration::from_millis(200), "{el:?}");
        assert!(el < Duration::from_secs(2), "{el:?}");
        assert!(e.message().contains("1 connection(s) still busy"), "{e}");
        // The busy connection was closed at once: the client's call fails now, not at its
        // 20 s deadline.
        let r = tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("the client call still waits: the connection was not closed")
            .unwrap();
        assert_kind(r, ErrorKind::Connection);
        assert_eq!(server.stats().connections_open, 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_answered_later_from_plain_threads() {
    bounded(async {
        let server = serve(ServerConfig::default(), |call: Call| {
            std::thread::spawn(move || {
                let mut v = b"thread:".to_vec();
                v.extend_from_slice(call.value());
                call.reply(&v).unwrap();
            });
        })
        .await;
        let cl = client(&server.local_addr());
        let mut tasks = Vec::new();
        for i in 0..50u32 {
            let c = cl.clone();
            tasks.push(tokio::spawn(async move {
                let v = i.to_string();
                let r = c.call(b"n", v.as_bytes()).await.unwrap();
                assert_eq!(r, format!("thread:{i}").as_bytes());
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(server.stats().responses, 50);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_server_removes_its_file_after_stop() {
    bounded(async {
        let dir = TempDir::new("unix");
        let path = dir.0.join("srv.sock");
        // A stale socket file is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let addr = format!("unix:{}", path.display());
        let server = Server::bind(&addr, ServerConfig::default(), echo)
            .await
            .unwrap();
        {
            use std::os::unix::fs::FileTypeExt;
            assert!(std::fs::metadata(&path).unwrap().file_type().is_socket());
        }
        let cl = client(&addr);
        assert_eq!(cl.call(b"n", b"unix").await.unwrap(), b"unix");
        cl.close(CloseMode::Drain(Duration::from_secs(1))).await;
        server.stop(Duration::from_secs(5)).await.unwrap();
        assert!(!path.exists(), "the socket file is still there after stop");
    })
    .await
}
