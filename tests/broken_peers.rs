//! Broken peers: neither our server nor our client crashes, hangs or leaks when the other end
//! misbehaves. Against our server a raw socket misbehaves, then a normal client must still be
//! served and every connection must end. Against our client a raw `TcpListener` plays a
//! broken server, and every call must end with the right error kind, naming the address,
//! before its deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use fastrpc::{Call, Client, ClientConfig, Compression, ErrorKind, Server, ServerConfig};

const SNIFF: &[u8] = b"xyz";
const VERSION: u8 = 7;
const TEST_LIMIT: Duration = Duration::from_secs(30);

/// The handshake a plaintext client (or server) of our test configuration writes.
const HELLO: [u8; 6] = [b'x', b'y', b'z', VERSION, 1, 0];

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

/// Waits for `cond`, polling every 10 ms for at most 5 s.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cond(), "condition not met within 5 s: {what}");
}

// ---------------------------------------------------------------------------------------
// Against our server.

/// What the handler saw: (request id, name, value) of each call.
type Seen = Arc<Mutex<Vec<(u32, Vec<u8>, Vec<u8>)>>>;

struct Echo {
    server: Server,
    calls: Arc<AtomicUsize>,
    seen: Seen,
}

fn server_config() -> ServerConfig {
    let mut cfg = ServerConfig::default();
    cfg.sniff_header = SNIFF.to_vec();
    cfg.protocol_version = VERSION;
    cfg.compress_type = Compression::None;
    cfg
}

async fn echo_server(cfg: ServerConfig) -> Echo {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen: Seen = Arc::default();
    let (c2, s2) = (calls.clone(), seen.clone());
    let server = Server::bind("127.0.0.1:0", cfg, move |call: Call| {
        s2.lock().unwrap().push((
            call.request_id(),
            call.name().to_vec(),
            call.value().to_vec(),
        ));
        c2.fetch_add(1, Ordering::SeqCst);
        let mut v = call.name().to_vec();
        v.push(b':');
        v.extend_from_slice(call.value());
        let _ = call.reply(&v);
    })
    .await
    .unwrap();
    Echo {
        server,
        calls,
        seen,
    }
}

/// A raw connection that has done a valid plaintext handshake (compression none both ways).
async fn handshaken(server: &Server) -> TcpStream {
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    s.write_all(&HELLO).await.unwrap();
    let mut hdr = [0u8; 6];
    s.read_exact(&mut hdr).await.unwrap();
    assert_eq!(hdr, HELLO);
    s
}

/// Reads until the server closes; returns what it sent. A reset counts as closed.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

async fn all_connections_closed(server: &Server) {
    wait_for("server connections_open back to 0", || {
        server.stats().connections_open == 0
    })
    .await;
}

/// The server still serves a normal client, and its connection ends when the client goes.
async fn still_serves(server: &Server) {
    all_connections_closed(server).await;
    let mut cfg = ClientConfig::new(server.local_addr());
    cfg.sniff_header = SNIFF.to_vec();
    cfg.protocol_version = VERSION;
    let client = Client::new(cfg).unwrap();
    assert_eq!(client.call(b"ping", b"pong").await.unwrap(), b"ping:pong");
    assert_eq!(server.stats().connections_open, 1);
    drop(client);
    all_connections_closed(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_survives_connect_and_close_at_once() {
    tokio::time::timeout(TEST_LIMIT, async {
        let e = echo_server(server_config()).await;
        drop(TcpStream::connect(e.server.local_addr()).await.unwrap());
        wait_for("handshake failure counted", || {
            e.server.stats().handshake_failures == 1
        })
        .await;
        all_connections_closed(&e.server).await;
        still_serves(&e.server).await;
        assert_eq!(e.server.stats().handshake_failures, 1);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_survives_half_a_handshake() {
    tokio::time::timeout(TEST_LIMIT, async {
        let e = echo_server(server_config()).await;
        let mut s = TcpStream::connect(e.server.local_addr()).await.unwrap();
        s.write_all(&HELLO[..4]).await.unwrap();
        drop(s);
        wait_for("handshake failure counted", || {
            e.server.stats().handshake_failures == 1
        })
        .await;
        let st = e.server.stats();
        assert_eq!(st.errors.total(), 1, "{:?}", st.errors);
        assert_eq!(st.requests, 0);
        still_serves(&e.server).await;
        assert_eq!(e.calls.load(Ordering::SeqCst), 1);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closes_on_a_name_length_over_the_limit() {
    tokio::time::timeout(TEST_LIMIT, async {
        let e = echo_server(server_config()).await;
        let mut s = handshaken(&e.server).await;
        s.write_all(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        let got = read_until_closed(&mut s).await;
        assert_eq!(got, b"", "the server answered garbage");
        wait_for("too_large counted", || {
            e.server.stats().errors.too_large == 1
        })
        .await;
        let st = e.server.stats();
        assert_eq!(st.handshake_failures, 0);
        assert_eq!(st.requests, 0);
        still_serves(&e.server).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closes_on_a_value_length_over_the_limit() {
    tokio::time::timeout(TEST_LIMIT, async {
        let mut cfg = server_config();
        cfg.max_frame_size = 100;
        let e = echo_server(cfg).await;
        let mut s = handshaken(&e.server).await;
        // A good request, answered, then one whose value is 101 bytes (only its head sent).
        s.write_all(&req(1, b"ok", b"fine")).await.unwrap();
        let want = resp(1, b"ok:fine");
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, want);
        s.write_all(&req(2, b"big", &[7u8; 101])[..15])
            .await
            .unwrap();
        let got = read_until_closed(&mut s).await;
        assert_eq!(got, b"");
        wait_for("too_large counted", || {
            e.server.stats().errors.too_large == 1
        })
        .await;
        assert_eq!(e.server.stats().requests, 1);
        still_serves(&e.server).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_counts_a_stream_ending_mid_frame_as_protocol_error() {
    tokio::time::timeout(TEST_LIMIT, async {
        let e = echo_server(server_config()).await;
        let mut s = handshaken(&e.server).await;
        let f = req(1, b"name", b"value");
        s.write_all(&f[..f.len() - 2]).await.unwrap();
        s.shutdown().await.unwrap();
        let got = read_until_closed(&mut s).await;
        assert_eq!(got, b"");
        wait_for("protocol error counted", || {
            e.server.stats().errors.protocol == 1
        })
        .await;
        assert_eq!(e.calls.load(Ordering::SeqCst), 0);
        still_serves(&e.server).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closes_on_a_corrupt_snappy_stream() {
    tokio::time::timeout(TEST_LIMIT, async {
        let e = echo_server(server_config()).await;
        let mut s = TcpStream::connect(e.server.local_addr()).await.unwrap();
        // The client says snappy (2) but sends no stream identifier chunk.
        s.write_all(&[b'x', b'y', b'z', VERSION, 2, 0])
            .await
            .unwrap();
        let mut hdr = [0u8; 6];
        s.read_exact(&mut hdr).await.unwrap();
        assert_eq!(hdr, HELLO);
        s.write_all(&req(1, b"not", b"snappy")).await.unwrap();
        let got = read_until_closed(&mut s).await;
        assert_eq!(got, b"");
        wait_for("protocol error counted", || {
            e.server.stats().errors.protocol == 1
        })
        .await;
        assert_eq!(e.calls.load(Ordering::SeqCst), 0);
        still_serves(&e.server).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refuses_bad_handshakes() {
    tokio::time::timeout(TEST_LIMIT, async {
        let e = echo_server(server_config()).await;
        let bad: [(&str, [u8; 6]); 3] = [
            ("wrong sniff header", [b'x', b'y', b'Z', VERSION, 1, 0]),
            (
                "wrong protocol version",
                [b'x', b'y', b'z', VERSION + 1, 1, 0],
            ),
            (
                "unknown compression code 9",
                [b'x', b'y', b'z', VERSION, 9, 0],
            ),
        ];
        for (n, (what, hello)) in bad.iter().enumerate() {
            let mut s = TcpStream::connect(e.server.local_addr()).await.unwrap();
            s.write_all(hello).await.unwrap();
            let got = read_until_closed(&mut s).await;
            assert_eq!(got, b"", "{what}: the server answered a bad handshake");
            wait_for(what, || e.server.stats().handshake_failures == n as u64 + 1).await;
        }
        let st = e.server.stats();
        assert_eq!(st.handshake_failures, 3);
        assert_eq!(st.errors.protocol, 3, "{:?}", st.errors);
        still_serves(&e.server).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_runs_a_request_whose_client_left() {
    tokio::time::timeout(TEST_LIMIT, async {
        let e = echo_server(server_config()).await;
        let mut s = handshaken(&e.server).await;
        s.write_all(&req(1, b"orphan", b"request")).await.unwrap();
        drop(s);
        wait_for("handler called", || e.calls.load(Ordering::SeqCst) == 1).await;
        assert_eq!(
            e.seen.lock().unwrap()[0],
            (1, b"orphan".to_vec(), b"request".to_vec())
        );
        all_connections_closed(&e.server).await;
        assert_eq!(e.server.stats().requests, 1);
        still_serves(&e.server).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_read_timeout_closes_a_stalled_frame() {
    tokio::time::timeout(TEST_LIMIT, async {
        let mut cfg = server_config();
        cfg.read_timeout = Duration::from_millis(200);
        let e = echo_server(cfg).await;
        let mut s = handshaken(&e.server).await;
        let f = req(1, b"stalled", b"frame");
        let t0 = Instant::now();
        s.write_all(&f[..6]).await.unwrap();
        let got = read_until_closed(&mut s).await;
        let took = t0.elapsed();
        assert_eq!(got, b"");
        assert!(took < Duration::from_secs(2), "closed after {took:?}");
        assert!(took >= Duration::from_millis(150), "closed after {took:?}");
        wait_for("timeout counted", || e.server.stats().errors.timeout >= 1).await;
        assert_eq!(e.calls.load(Ordering::SeqCst), 0);
        // A normal client still works (its calls are quicker than the read timeout).
        still_serves(&e.server).await;
    })
    .await
    .unwrap();
}

/// read_timeout bounds the reading of one frame, so a slow but steady client whose every
/// frame arrives well within it keeps its connection, even when no read ends on a frame
/// boundary (each write carries the end of one frame and the start of the next). The sleeps
/// here are the slow client's pace, not synchronisation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_read_timeout_spares_a_steady_client_with_unaligned_frames() {
    tokio::time::timeout(TEST_LIMIT, async {
        let read_timeout = Duration::from_millis(300);
        let mut cfg = server_config();
        cfg.read_timeout = read_timeout;
        let e = echo_server(cfg).await;
        let mut s = handshaken(&e.server).await;
        s.set_nodelay(true).unwrap();
        let n = 12u32;
        // Each write ends 10 bytes before the end of a frame (the last one ends the stream).
        let mut stream = Vec::new();
        let mut cuts = Vec::new();
        for id in 1..=n {
            stream.extend(req(id, b"steady", &id.to_le_bytes()));
            cuts.push(stream.len() - 10);
        }
        cuts.push(stream.len());
        // Write k: from the middle of frame k to the middle of frame k+1, 100 ms apart, so
        // each frame takes about 100 ms (a third of read_timeout) to arrive.
        let mut cut = 0;
        let mut prev = Instant::now();
        for next in cuts {
            if s.write_all(&stream[cut..next]).await.is_err() {
                break; // The server closed on us: the assertions below say why.
            }
            cut = next;
            let gap = prev.elapsed();
            assert!(gap < read_timeout, "the test itself was too slow: {gap:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            prev = Instant::now();
        }
        let _ = s.shutdown().await;
        let got = read_until_closed(&mut s).await;
        let mut want = Vec::new();
        for id in 1..=n {
            let mut v = b"steady:".to_vec();
            v.extend_from_slice(&id.to_le_bytes());
            want.extend(resp(id, &v));
        }
        let st = e.server.stats();
        assert_eq!(
            st.errors.timeout, 0,
            "the server timed out a client whose every frame took ~100 ms ({} of {n} requests \
             read)",
            st.requests
        );
        assert_eq!(got, want);
        still_serves(&e.server).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_survives_a_thousand_dropped_connections() {
    tokio::time::timeout(TEST_LIMIT, async {
        let e = echo_server(server_config()).await;
        let addr = e.server.local_addr();
        for round in 0..10 {
            let mut conns = Vec::with_capacity(100);
            for i in 0..100 {
                let mut s = TcpStream::connect(&addr).await.unwrap();
                // Some send part of a handshake, some a whole one, some nothing.
                match (round + i) % 3 {
                    0 => {}
                    1 => s.write_all(&HELLO[..2]).await.unwrap(),
                    _ => s.write_all(&HELLO).await.unwrap(),
                }
                conns.push(s);
            }
            drop(conns);
        }
        wait_for("1000 connections accepted", || {
            e.server.stats().connections_accepted == 1000
        })
        .await;
        all_connections_closed(&e.server).await;
        still_serves(&e.server).await;
        let st = e.server.stats();
        assert_eq!(st.connections_accepted, 1001);
        assert_eq!(st.requests, 1);
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// Against our client, with a raw listener as a broken server.

async fn fake_server() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap().to_string();
    (l, a)
}

/// Accepts one connection and does the server side of a plaintext handshake with a client of
/// default configuration (empty sniff header, version 0, compression none asked by config).
async fn accept_handshake(l: &TcpListener) -> TcpStream {
    let (mut s, _) = l.accept().await.unwrap();
    let mut hdr = [0u8; 3];
    s.read_exact(&mut hdr).await.unwrap();
    assert_eq!(hdr, [0, 1, 0]);
    s.write_all(&[0, 1, 0]).await.unwrap();
    s
}

/// Reads whole request frames until `n` have arrived; returns their ids and values.
async fn read_requests(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        loop {
            if buf.len() < 8 {
                break;
            }
            let id = u32::from_le_bytes(buf[0..4].try_into().unwrap());
            let nl = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
            if buf.len() < 12 + nl {
                break;
            }
            let vl = u32::from_le_bytes(buf[8 + nl..12 + nl].try_into().unwrap()) as usize;
            if buf.len() < 12 + nl + vl {
                break;
            }
            out.push((id, buf[12 + nl..12 + nl + vl].to_vec()));
            buf.drain(..12 + nl + vl);
        }
        if out.len() >= n {
            return out;
        }
        let k = s.read(&mut tmp).await.unwrap();
        assert!(k > 0, "the client closed after {} requests", out.len());
        buf.extend_from_slice(&tmp[..k]);
    }
}

fn client_config(addr: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new(addr);
    cfg.compress_type = Compression::None;
    cfg
}

/// Holds a connection open, reading and discarding, until the client closes it.
async fn drain(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_against_a_server_that_closes_at_once() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (l, addr) = fake_server().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let a2 = accepted.clone();
        let fake = tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                a2.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        });
        let client = Client::new(client_config(&addr)).unwrap();
        let timeout = Duration::from_secs(2);
        let mut tasks = Vec::new();
        for i in 0..5u32 {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let r = c.call_timeout(b"x", &i.to_le_bytes(), timeout).await;
                (r, t0.elapsed())
            }));
        }
        for t in tasks {
            let (r, took) = t.await.unwrap();
            let err = r.expect_err("a call succeeded against a server that closes at once");
            assert!(
                matches!(err.kind(), ErrorKind::Connect | ErrorKind::Connection),
                "kind {:?}: {err}",
                err.kind()
            );
            assert!(err.message().contains(&addr), "no address in: {err}");
            assert!(took < timeout, "a call waited {took:?}, past its deadline");
        }
        // A call made later (maybe while backing off) fails the same way, and at once.
        let t0 = Instant::now();
        let err = client
            .call_timeout(b"x", b"later", timeout)
            .await
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Connect | ErrorKind::Connection),
            "kind {:?}: {err}",
            err.kind()
        );
        assert!(err.message().contains(&addr), "no address in: {err}");
        assert!(t0.elapsed() < timeout);
        assert!(accepted.load(Ordering::SeqCst) >= 1);
        assert_eq!(client.pending_requests(), 0);
        assert_eq!(client.stats().connects, 0);
        fake.abort();
    })
    .await
    .unwrap();
}

/// The same as above without the race between FIN and RST: the fake server reads the
/// client's whole handshake, then closes cleanly, so the client always sees EOF where the
/// server's header should be. That is a connection that failed while connecting, not a peer
/// that broke the protocol, and it must be reported as the RST case is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_against_a_server_that_reads_the_handshake_then_closes() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (l, addr) = fake_server().await;
        let fake = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut hdr = [0u8; 3];
            s.read_exact(&mut hdr).await.unwrap();
            assert_eq!(hdr, [0, 1, 0]);
            drop(s);
        });
        let client = Client::new(client_config(&addr)).unwrap();
        let timeout = Duration::from_secs(2);
        let t0 = Instant::now();
        let err = client.call_timeout(b"x", b"y", timeout).await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Connect | ErrorKind::Connection),
            "kind {:?}: {err}",
            err.kind()
        );
        assert!(err.message().contains(&addr), "no address in: {err}");
        assert!(err.message().contains("handshake"), "{err}");
        assert!(t0.elapsed() < timeout);
        assert_eq!(client.pending_requests(), 0);
        fake.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_fails_calls_in_flight_when_the_server_dies_then_reconnects() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (l, addr) = fake_server().await;
        let (got_all_tx, got_all_rx) = tokio::sync::oneshot::channel::<Vec<u32>>();
        let fake = tokio::spawn(async move {
            // First connection: read 50 requests, then close without answering.
            let mut s = accept_handshake(&l).await;
            let mut buf = Vec::new();
            let reqs = read_requests(&mut s, &mut buf, 50).await;
            drop(s);
            got_all_tx.send(reqs.iter().map(|r| r.0).collect()).unwrap();
            // Second connection: a working echo server.
            let mut s = accept_handshake(&l).await;
            let mut buf = Vec::new();
            loop {
                let reqs = read_requests(&mut s, &mut buf, 1).await;
                let mut w = Vec::new();
                for (id, v) in reqs {
                    let mut r = b"echo:".to_vec();
                    r.extend_from_slice(&v);
                    w.extend(resp(id, &r));
                }
                s.write_all(&w).await.unwrap();
            }
        });
        let mut cfg = client_config(&addr);
        cfg.request_timeout = Duration::from_secs(20);
        let client = Client::new(cfg).unwrap();
        let mut tasks = Vec::new();
        for i in 0..50u32 {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let r = c.call(b"doomed", &i.to_le_bytes()).await;
                (r, t0.elapsed())
            }));
        }
        let mut ids = got_all_rx.await.unwrap();
        ids.sort();
        assert_eq!(ids, (1..=50).collect::<Vec<u32>>());
        for t in tasks {
            let (r, took) = t.await.unwrap();
            let err = r.expect_err("a call succeeded on a connection that died");
            assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
            assert!(err.message().contains(&addr), "no address in: {err}");
            assert!(took < Duration::from_secs(5), "failed only after {took:?}");
        }
        assert_eq!(client.pending_requests(), 0);
        assert_eq!(client.stats().errors.connection, 50);

        // The client reconnects on the next call, and it works.
        assert_eq!(
            client.call(b"again", b"hello").await.unwrap(),
            b"echo:hello"
        );
        let st = client.stats();
        assert_eq!(st.connects, 2);
        assert_eq!(st.reconnects, 1);
        assert_eq!(st.responses, 1);
        assert_eq!(client.pending_requests(), 0);
        fake.abort();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_garbage_instead_of_a_handshake() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (l, addr) = fake_server().await;
        let fake = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                .await
                .unwrap();
            drain(s).await;
        });
        let client = Client::new(client_config(&addr)).unwrap();
        let err = client.call(b"x", b"y").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
        assert!(err.message().contains(&addr), "no address in: {err}");
        assert!(err.message().contains("handshake"), "{err}");
        assert_eq!(client.pending_requests(), 0);
        drop(client);
        fake.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_a_response_length_over_the_limit() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (l, addr) = fake_server().await;
        let fake = tokio::spawn(async move {
            let mut s = accept_handshake(&l).await;
            let mut buf = Vec::new();
            let reqs = read_requests(&mut s, &mut buf, 1).await;
            let mut w = reqs[0].0.to_le_bytes().to_vec();
            w.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
            s.write_all(&w).await.unwrap();
            drain(s).await;
        });
        let client = Client::new(client_config(&addr)).unwrap();
        let t0 = Instant::now();
        let err = client.call(b"x", b"y").await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::TooLarge | ErrorKind::Protocol),
            "kind {:?}: {err}",
            err.kind()
        );
        assert!(
            err.message().contains("exceeds max_frame_size"),
            "message: {err}"
        );
        assert!(err.message().contains(&addr), "no address in: {err}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(client.pending_requests(), 0);
        drop(client);
        fake.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_call_times_out_against_a_silent_server() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (l, addr) = fake_server().await;
        let fake = tokio::spawn(async move {
            let s = accept_handshake(&l).await;
            drain(s).await;
        });
        let client = Client::new(client_config(&addr)).unwrap();
        let t0 = Instant::now();
        let err = client
            .call_timeout(b"x", b"y", Duration::from_millis(200))
            .await
            .unwrap_err();
        let took = t0.elapsed();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(err.message().contains("deadline"), "{err}");
        assert!(
            took >= Duration::from_millis(190),
            "timed out after {took:?}"
        );
        assert!(took < Duration::from_secs(2), "timed out after {took:?}");
        assert_eq!(client.pending_requests(), 0);
        assert_eq!(client.stats().errors.timeout, 1);
        drop(client);
        fake.await.unwrap();
    })
    .await
    .unwrap();
}

/// The client side of the read_timeout rule: a server that streams responses slowly but
/// steadily, every read ending in the middle of a frame, is not a timed-out server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_read_timeout_spares_a_steady_server_with_unaligned_frames() {
    tokio::time::timeout(TEST_LIMIT, async {
        let read_timeout = Duration::from_millis(300);
        let n = 12u32;
        let (l, addr) = fake_server().await;
        let fake = tokio::spawn(async move {
            let mut s = accept_handshake(&l).await;
            s.set_nodelay(true).unwrap();
            let mut buf = Vec::new();
            let mut reqs = read_requests(&mut s, &mut buf, n as usize).await;
            reqs.sort();
            // Each write ends 3 bytes before the end of a frame (the last ends the stream).
            let mut stream = Vec::new();
            let mut cuts = Vec::new();
            for (id, v) in reqs {
                stream.extend(resp(id, &v));
                cuts.push(stream.len() - 3);
            }
            cuts.push(stream.len());
            let mut cut = 0;
            for next in cuts {
                if s.write_all(&stream[cut..next]).await.is_err() {
                    break;
                }
                cut = next;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drain(s).await;
        });
        let mut cfg = client_config(&addr);
        cfg.read_timeout = read_timeout;
        let client = Client::new(cfg).unwrap();
        let mut tasks = Vec::new();
        for i in 0..n {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                c.call(b"slow", format!("v{i}").as_bytes()).await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let r = t.await.unwrap();
            assert_eq!(
                r.unwrap_or_else(|e| panic!("call {i}: {e}")),
                format!("v{i}").as_bytes()
            );
        }
        let st = client.stats();
        assert_eq!(st.connects, 1);
        assert_eq!(st.errors.total(), 0, "{:?}", st.errors);
        drop(client);
        fake.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_handshake_times_out_against_a_mute_server() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (l, addr) = fake_server().await;
        let fake = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            drain(s).await;
        });
        let mut cfg = client_config(&addr);
        cfg.handshake_timeout = Duration::from_millis(300);
        let client = Client::new(cfg).unwrap();
        let t0 = Instant::now();
        let err = client.call(b"x", b"y").await.unwrap_err();
        let took = t0.elapsed();
        assert!(
            matches!(err.kind(), ErrorKind::Timeout | ErrorKind::Connect),
            "kind {:?}: {err}",
            err.kind()
        );
        assert!(err.message().contains("handshake"), "{err}");
        assert!(err.message().contains(&addr), "no address in: {err}");
        assert!(took >= Duration::from_millis(250), "failed after {took:?}");
        assert!(took < Duration::from_secs(2), "failed after {took:?}");
        assert_eq!(client.pending_requests(), 0);
        assert_eq!(client.stats().connect_failures, 1);
        drop(client);
        fake.await.unwrap();
    })
    .await
    .unwrap();
}
