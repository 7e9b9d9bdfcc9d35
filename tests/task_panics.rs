//! No panic reaches a user and no panic kills a client: a panic injected into each library
//! task (client connection manager, reader, timekeeper, a lone call's write; server accept
//! loop, connection, writer, a lone reply's write) ends only that connection with "internal error (panic) in <task>: ...", is logged
//! through the log hook, and the client connects again. Then the peer bytes that once
//! panicked the hand-written record layer: an empty Handshake record sent with the client's
//! Finished and data (200 connections), and a malicious TLS 1.2 server (a relay rewriting our
//! server's bytes) doing the same to a client.

mod common;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use fastrpc::guard::{clear_injected, inject_panic, panic_pending, Task};
use fastrpc::log::{self, Level};
use fastrpc::{
    Call, Client, ClientConfig, Compression, Error, ErrorKind, Server, ServerConfig,
    TlsClientConfig, TlsServerConfig,
};

/// Injection and the log hook are process-wide: one test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    clear_injected();
    logs().clear();
    g
}

fn logs() -> MutexGuard<'static, Vec<String>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    let l = LOGS.get_or_init(|| {
        let l = Arc::new(Mutex::new(Vec::new()));
        let sink = l.clone();
        log::set_hook(
            Level::Warn,
            Some(Box::new(move |_, m| {
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(m.to_string())
            })),
        );
        l
    });
    l.lock().unwrap_or_else(|e| e.into_inner())
}

fn logged(line: &str) -> bool {
    logs().iter().any(|l| l == line)
}

/// Runs one test alone (see [`serial`]) on a runtime of its own, bounded to 60 s.
fn run(f: impl Future<Output = ()>) {
    let _g = serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("the test did not finish within 60 s")
    });
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

fn echo(call: Call) {
    let mut v = call.name().to_vec();
    v.push(b':');
    v.extend_from_slice(call.value());
    let _ = call.reply(&v);
}

async fn server(tls: Option<TlsServerConfig>) -> Server {
    let mut cfg = ServerConfig::default();
    cfg.compress_type = Compression::None;
    cfg.tls = tls;
    Server::bind("127.0.0.1:0", cfg, |call: Call| {
        if call.name() == b"hang" {
            // Never answered while the test runs.
            std::mem::forget(call);
            return;
        }
        echo(call)
    })
    .await
    .unwrap()
}

fn client(addr: &str, tls: Option<TlsClientConfig>) -> Client {
    let mut cfg = ClientConfig::new(addr);
    cfg.compress_type = Compression::None;
    cfg.reconnect_backoff_min = Duration::from_millis(5);
    cfg.reconnect_backoff_max = Duration::from_millis(20);
    cfg.tls = tls;
    Client::new(cfg).unwrap()
}

/// Calls until one succeeds (after a failure the client backs off a few milliseconds).
async fn call_until_ok(c: &Client, value: &str) {
    let start = Instant::now();
    loop {
        match c.call(b"n", value.as_bytes()).await {
            Ok(v) => {
                assert_eq!(v, format!("n:{value}").as_bytes());
                return;
            }
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(10),
                "the client did not recover: {e}"
            ),
        }
    }
}

/// Injects a panic into `task` and calls until a call fails: a task that is running when the
/// panic is injected (a reader still reading) may serve a call or two before its next poll.
async fn call_until_it_panics(c: &Client, task: Task) -> Error {
    inject_panic(task);
    for _ in 0..1000 {
        if let Err(e) = c.call(b"n", b"x").await {
            assert!(!panic_pending(task), "a call failed before the panic: {e}");
            return e;
        }
    }
    panic!("the injected panic did not fire in 1000 calls");
}

fn panic_message(task: &str) -> String {
    format!("internal error (panic) in {task}: injected by a test")
}

fn assert_panic_error(e: Error, task: &str, prefix: &str) {
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert_eq!(e.message(), format!("{prefix}{}", panic_message(task)));
}

// ---------------------------------------------------------------------------------------
// Client tasks.

#[test]
fn panic_in_the_client_connection_manager() {
    run(async {
        let s = server(None).await;
        let c = client(&s.local_addr(), None);
        call_until_ok(&c, "before").await;
        // A call the server holds: with it waiting, a new call is not alone, so it wakes the
        // manager (a lone call writes itself). The manager panics: both calls fail with it.
        let held = {
            let c = c.clone();
            tokio::spawn(async move { c.call(b"hang", b"").await })
        };
        wait_until("the held call is sent", || c.stats().io.frames_sent == 2).await;
        let e = call_until_it_panics(&c, Task::ClientManager).await;
        assert_panic_error(e, "the client connection manager", "");
        let held = held.await.unwrap().unwrap_err();
        assert_panic_error(held, "the client connection manager", "");
        assert!(!panic_pending(Task::ClientManager));
        assert!(logged(&format!(
            "fastrpc: {}",
            panic_message("the client connection manager")
        )));
        // The client connects again.
        call_until_ok(&c, "after").await;
        assert_eq!(c.stats().connects, 2);
    })
}

#[test]
fn panic_in_the_client_reader() {
    run(async {
        let s = server(None).await;
        // Without `read_spin`: a reader spinning for a lone call's response is polled until
        // the spin ends, also after the response came, so the injected panic could end the
        // connection between two calls, with no call to fail.
        let mut cfg = ClientConfig::new(s.local_addr());
        cfg.compress_type = Compression::None;
        cfg.reconnect_backoff_min = Duration::from_millis(5);
        cfg.reconnect_backoff_max = Duration::from_millis(20);
        cfg.read_spin = Duration::ZERO;
        let c = Client::new(cfg).unwrap();
        call_until_ok(&c, "before").await;
        // A response wakes the reader: it panics, the connection ends with the panic.
        let e = call_until_it_panics(&c, Task::ClientReader).await;
        assert_panic_error(
            e,
            "the client reader",
            &format!("connection to {} failed: ", s.local_addr()),
        );
        assert!(logged(&format!(
            "fastrpc: {}",
            panic_message("the client reader")
        )));
        call_until_ok(&c, "after").await;
        assert_eq!(c.stats().connects, 2);
    })
}

#[test]
fn panic_in_a_lone_call_write() {
    run(async {
        let s = server(None).await;
        let c = client(&s.local_addr(), None);
        call_until_ok(&c, "before").await;
        call_until_ok(&c, "lone").await;
        assert_eq!(c.stats().lone_writes, 1, "{:?}", c.stats());
        // The next call is alone too and writes its own request: the panic is caught on the
        // caller's side (before anything was taken from the queue), the connection ends with
        // it, and the call, still queued, goes out on the next connection.
        inject_panic(Task::ClientLoneWrite);
        let v = c.call(b"n", b"again").await.unwrap();
        assert_eq!(v, b"n:again");
        assert!(!panic_pending(Task::ClientLoneWrite));
        assert!(logged(&format!(
            "fastrpc: {}",
            panic_message("a lone call's write")
        )));
        assert_eq!(c.stats().connects, 2);
        assert_eq!(c.stats().errors.connection, 0);
    })
}

#[test]
fn panic_in_the_client_timekeeper() {
    run(async {
        let s = server(None).await;
        let mut cfg = ClientConfig::new(s.local_addr());
        cfg.compress_type = Compression::None;
        cfg.request_timeout = Duration::from_millis(300);
        let c = Client::new(cfg).unwrap();
        assert_eq!(c.call(b"n", b"1").await.unwrap(), b"n:1");
        inject_panic(Task::ClientTimekeeper);
        // The timekeeper wakes for a deadline, panics, starts again, and still times out
        // the call that is never answered.
        let t0 = Instant::now();
        let e = c.call(b"hang", b"").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        wait_until("the timekeeper's panic is logged", || {
            logged(&format!(
                "fastrpc: {}",
                panic_message("the client timekeeper")
            ))
        })
        .await;
        assert!(!panic_pending(Task::ClientTimekeeper));
        assert_eq!(c.call(b"n", b"2").await.unwrap(), b"n:2");
        assert_eq!(c.stats().connects, 1);
    })
}

// ---------------------------------------------------------------------------------------
// Server tasks.

#[test]
fn panic_in_the_server_accept_loop() {
    run(async {
        let s = server(None).await;
        inject_panic(Task::ServerAccept);
        // The connection wakes the accept loop: it panics and starts again, and the
        // connection still waiting to be accepted is served.
        let c = client(&s.local_addr(), None);
        call_until_ok(&c, "x").await;
        wait_until("the accept loop's panic is logged", || {
            logged(&format!(
                "fastrpc: {}",
                panic_message("the server accept loop")
            ))
        })
        .await;
        assert!(!panic_pending(Task::ServerAccept));
        let c2 = client(&s.local_addr(), None);
        call_until_ok(&c2, "y").await;
    })
}

#[test]
fn panic_in_a_server_connection() {
    run(async {
        let s = server(None).await;
        inject_panic(Task::ServerConnection);
        let c = client(&s.local_addr(), None);
        // The first connection ends at the server's panic; the client connects again.
        let e = c.call(b"n", b"x").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
        call_until_ok(&c, "after").await;
        assert_eq!(c.stats().connects, 1);
        assert!(logged(&format!(
            "fastrpc: {}",
            panic_message("a server connection")
        )));
        // Counted by the connection's task right after its socket was dropped: the client
        // may have reconnected before that (a thread can be descheduled in between).
        wait_until("the panic counted", || s.stats().errors.connection == 1).await;
        assert_eq!(s.stats().errors.connection, 1);
    })
}

#[test]
fn panic_in_a_server_connections_writer() {
    run(async {
        let s = server(None).await;
        inject_panic(Task::ServerWriter);
        let c = client(&s.local_addr(), None);
        // The writer panics at its start: the connection closes, unanswered.
        let e = c.call(b"n", b"x").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
        call_until_ok(&c, "after").await;
        assert_eq!(c.stats().connects, 2);
        wait_until("the writer's panic is logged", || {
            logged(&format!(
                "fastrpc: {}",
                panic_message("a server connection's writer")
            ))
        })
        .await;
        assert_eq!(s.stats().errors.connection, 1);
    })
}

#[test]
fn panic_in_a_lone_reply_write() {
    run(async {
        // Replies from a thread outside the runtime, with nothing else outstanding: lone.
        let mut cfg = ServerConfig::default();
        cfg.compress_type = Compression::None;
        let s = Server::bind("127.0.0.1:0", cfg, |call: Call| {
            std::thread::spawn(move || echo(call));
        })
        .await
        .unwrap();
        let c = client(&s.local_addr(), None);
        call_until_ok(&c, "before").await;
        call_until_ok(&c, "lone").await;
        assert!(s.stats().lone_writes >= 1, "{:?}", s.stats());
        // The next reply is lone: its write panics (caught on the replying thread), the
        // connection ends with the panic, unanswered; the server serves on.
        inject_panic(Task::ServerLoneWrite);
        let e = c.call(b"n", b"x").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
        assert!(!panic_pending(Task::ServerLoneWrite));
        call_until_ok(&c, "after").await;
        assert_eq!(c.stats().connects, 2);
        assert!(logged(&format!(
            "fastrpc: {}",
            panic_message("a lone reply's write")
        )));
        wait_until("the failure counted", || s.stats().errors.connection == 1).await;
    })
}

// ---------------------------------------------------------------------------------------
// Peer bytes that once panicked the hand-written record layer.

/// An empty Handshake record (content type 22, length 0), as a peer may forge it.
const EMPTY_HANDSHAKE_RECORD: [u8; 5] = [22, 3, 3, 0, 0];

/// Splits whole TLS records off the front of `buf`: (content type, the record's bytes).
fn take_records(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        if buf.len() < 5 {
            return out;
        }
        let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            return out;
        }
        let rec: Vec<u8> = buf.drain(..5 + len).collect();
        out.push((rec[0], rec));
    }
}

fn frame(id: u32, name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&(name.len() as u32).to_le_bytes());
    v.extend_from_slice(name);
    v.extend_from_slice(&(value.len() as u32).to_le_bytes());
    v.extend_from_slice(value);
    v
}

/// A stock rustls client (blocking, its own thread) whose last handshake flight, the
/// Finished with a request sent along, gets an empty Handshake record right after the
/// Finished record. With `split`, the Finished goes in one write and the forged record and the
/// data in the next, so the server may take them after its handshake is done. Returns how
/// many plaintext bytes the server sent after the TLS handshake (none: it must refuse the
/// connection).
fn forged_finished_flight(port: u16, ca_pem: String, split: bool) -> usize {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // fastrpc handshake: empty sniff header, version 0, compression none, want_tls.
    tcp.write_all(&[0, 1, 1]).unwrap();
    let mut got = [0u8; 3];
    tcp.read_exact(&mut got).unwrap();
    assert_eq!(got, [0, 1, 1], "the server agrees to TLS");
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    // Sent by rustls right after its Finished, in the same flight.
    conn.writer().write_all(&frame(1, b"n", b"forged")).unwrap();
    let mut buf = [0u8; 16384];
    loop {
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        if !conn.is_handshaking() {
            // The last flight: [ChangeCipherSpec,] Finished, data. In TLS 1.3 every
            // encrypted record is of outer type 23; the Finished is the first of them.
            let mut forged = Vec::new();
            let mut cut = None;
            for (typ, rec) in take_records(&mut out) {
                forged.extend_from_slice(&rec);
                if typ == 23 && cut.is_none() {
                    cut = Some(forged.len());
                    forged.extend_from_slice(&EMPTY_HANDSHAKE_RECORD);
                }
            }
            let cut = cut.expect("no Finished record in the last flight");
            if split {
                tcp.set_nodelay(true).unwrap();
                tcp.write_all(&forged[..cut]).unwrap();
                tcp.write_all(&forged[cut..]).unwrap();
            } else {
                tcp.write_all(&forged).unwrap();
            }
            break;
        }
        tcp.write_all(&out).unwrap();
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed during the handshake");
        conn.read_tls(&mut &buf[..n]).unwrap();
        conn.process_new_packets().unwrap();
    }
    // Whatever comes now is read through rustls: application data would be a response.
    let mut plain = 0;
    loop {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => return plain,
            Ok(n) => {
                if conn.read_tls(&mut &buf[..n]).is_err() || conn.process_new_packets().is_err() {
                    return plain;
                }
                let mut p = [0u8; 4096];
                while let Ok(k) = conn.reader().read(&mut p) {
                    if k == 0 {
                        break;
                    }
                    plain += k;
                }
            }
        }
    }
}

fn server_tls(p: &common::certs::TestPki) -> TlsServerConfig {
    TlsServerConfig {
        cert_pem: p.server_cert_pem.as_bytes().to_vec(),
        key_pem: p.server_key_pem.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// The forged case: an empty Handshake record plus data sent with the client's
/// Finished, on 200 connections. Each is refused by rustls with a TLS error (the request is
/// never served), nothing panics, and the server serves on.
#[test]
fn forged_empty_handshake_record_with_finished_is_refused_without_panic() {
    run(async {
        let p = common::certs::test_pki();
        let s = server(Some(server_tls(&p))).await;
        let port: u16 = s.local_addr().rsplit(':').next().unwrap().parse().unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let ca = p.ca_pem.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                forged_finished_flight(port, ca, i % 2 == 1)
            }));
        }
        for t in tasks {
            assert_eq!(
                t.await.unwrap(),
                0,
                "the server answered a forged connection"
            );
        }
        let refused = || {
            logs()
                .iter()
                .filter(|l| l.ends_with("received corrupt message of type InvalidEmptyPayload"))
                .count()
        };
        // A connection counts its failure, then logs it: wait for both.
        wait_until("the server counted and logged 200 TLS errors", || {
            s.stats().errors.tls == 200 && refused() >= 200
        })
        .await;
        assert_eq!(s.stats().requests, 0);
        assert_eq!(refused(), 200, "{:?}", logs());
        assert_eq!(s.stats().errors.total(), 200);
        assert!(!logs().iter().any(|l| l.contains("panic")), "{:?}", logs());
        let c = client(
            &s.local_addr(),
            Some(TlsClientConfig {
                ca_pem: Some(p.ca_pem.as_bytes().to_vec()),
                ..Default::default()
            }),
        );
        call_until_ok(&c, "still serving").await;
    })
}

/// A relay between our client and our server that, on the first connection only, puts an
/// empty Handshake record right after the server's Finished (TLS 1.2: the Finished is the
/// first record after the server's ChangeCipherSpec): a malicious TLS 1.2 server.
async fn tampering_relay(upstream: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((down, _)) = l.accept().await else {
                return;
            };
            let up = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let (mut dr, mut dw) = down.into_split();
            let (mut ur, mut uw) = up.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut dr, &mut uw).await;
                let _ = uw.shutdown().await;
            });
            let tamper = std::mem::replace(&mut first, false);
            tokio::spawn(async move {
                // The fastrpc handshake answer (3 bytes), then TLS records.
                let mut hdr = [0u8; 3];
                if ur.read_exact(&mut hdr).await.is_err() || dw.write_all(&hdr).await.is_err() {
                    return;
                }
                let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 16384]);
                let (mut saw_ccs, mut inserted) = (false, !tamper);
                loop {
                    let n = match ur.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let mut out = Vec::new();
                    for (typ, rec) in take_records(&mut buf) {
                        out.extend_from_slice(&rec);
                        if typ == 20 {
                            saw_ccs = true;
                        } else if saw_ccs && !inserted {
                            out.extend_from_slice(&EMPTY_HANDSHAKE_RECORD);
                            inserted = true;
                        }
                    }
                    if dw.write_all(&out).await.is_err() {
                        break;
                    }
                }
                let _ = dw.shutdown().await;
            });
        }
    });
    addr
}

#[test]
fn malicious_tls12_server_fails_one_connection_and_the_client_reconnects() {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    run(async {
        let p = common::certs::test_pki();
        let certs = CertificateDer::pem_slice_iter(p.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(p.server_key_pem.as_bytes()).unwrap();
        let tls12 = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let s = server(Some(TlsServerConfig {
            rustls: Some(Arc::new(tls12)),
            ..Default::default()
        }))
        .await;
        let relay = tampering_relay(s.local_addr()).await;
        let mut cfg = TlsClientConfig {
            ca_pem: Some(p.ca_pem.as_bytes().to_vec()),
            ..Default::default()
        };
        cfg.server_name = Some("localhost".into());
        let c = client(&relay, Some(cfg));
        // The first connection: the client's rustls refuses the forged record.
        let e = c.call(b"n", b"x").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
        assert_eq!(
            e.message(),
            format!(
                "handshake with {relay} failed: TLS handshake with the server failed: received \
                 corrupt message of type InvalidEmptyPayload"
            )
        );
        // The client is not dead: the next connection (not tampered with) serves.
        call_until_ok(&c, "after").await;
        assert!(!logs().iter().any(|l| l.contains("panic")), "{:?}", logs());
    })
}
