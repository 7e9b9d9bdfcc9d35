//! Early flushes, so that one side starts on a batch before the other is done with it.
//!
//! Server (src/server/conn.rs, `early_flush_at`): while the reader handles a read that brought
//! many requests, it writes the replies ready so far itself. Two tests make the handler of the
//! last request of a big read wait (inline, on the reader) until the client has received a
//! reply: without early flushes no reply leaves before the reader is done with that read, and
//! the handler gives up after 20 s, failing the test. A raw client checks the replies byte for
//! byte; the engine's client checks them through every compression and TLS.
//!
//! Client (src/client/mod.rs, `Inner::early_flush`): callers woken together by one read
//! queue their next requests, and the writer goes as soon as a few KiB are queued instead of
//! waiting for the last of them; a raw peer counts the writes. Below that size the callers of
//! one read share one write, also when they run on several worker threads.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use fastrpc::protocol::frame::{encode_request, encode_response, parse_request, Parse};
use fastrpc::{
    Call, Client, ClientConfig, Compression, Server, ServerConfig, TlsClientConfig, TlsServerConfig,
};

use common::bounded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CALLS: u32 = 1024;

/// The reply to request `id`: 255 bytes depending on it.
fn reply(id: u32) -> Vec<u8> {
    (0..255u32).map(|k| (k * 7 + id * 13) as u8).collect()
}

/// A server on a runtime of its own (its handler blocks one of its workers), whose handler
/// answers `reply(value as u32)`; for the request named "last" it first waits until `seen`
/// says the client got a reply, and records in `waited` that it did within 20 s.
struct Waiting {
    server: Server,
    rt: Option<tokio::runtime::Runtime>,
    seen: mpsc::Sender<()>,
    waited: Arc<AtomicBool>,
}

fn waiting_server(comp: Compression, tls: Option<TlsServerConfig>) -> Waiting {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (seen, seen_rx) = mpsc::channel::<()>();
    let seen_rx = Mutex::new(seen_rx);
    let waited = Arc::new(AtomicBool::new(false));
    let w = waited.clone();
    let mut cfg = ServerConfig::default();
    cfg.compress_type = comp;
    cfg.tls = tls;
    // Bound from a thread of its own: a runtime cannot be entered from a test's runtime.
    let (rt, server) = std::thread::spawn(move || {
        let server = rt
            .block_on(Server::bind("127.0.0.1:0", cfg, move |call: Call| {
                let id = u32::from_le_bytes(call.value()[..4].try_into().unwrap());
                if call.name() == b"last" {
                    let got = seen_rx
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(20))
                        .is_ok();
                    w.store(got, SeqCst);
                }
                let _ = call.reply(&reply(id));
            }))
            .unwrap();
        (rt, server)
    })
    .join()
    .unwrap();
    Waiting {
        server,
        rt: Some(rt),
        seen,
        waited,
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        // Dropped on a test's runtime, where a runtime may not block to shut down.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// 1024 requests in one write from a raw client, the last one's handler waiting for a reply
/// to reach the client: it does, and all 1024 replies come in order, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_leave_while_the_rest_of_a_read_is_handled() {
    bounded(async {
        let w = waiting_server(Compression::None, None);
        let addr = w.server.local_addr();
        let seen = w.seen.clone();
        let client = std::thread::spawn(move || {
            let mut sock = std::net::TcpStream::connect(addr).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(40)))
                .unwrap();
            sock.write_all(&[0, 1, 0]).unwrap();
            let mut hdr = [0u8; 3];
            sock.read_exact(&mut hdr).unwrap();
            assert_eq!(hdr, [0, 1, 0]);
            let mut reqs = Vec::new();
            for id in 1..=CALLS {
                let name: &[u8] = if id == CALLS { b"last" } else { b"n" };
                encode_request(&mut reqs, id, name, &id.to_le_bytes());
            }
            sock.write_all(&reqs).unwrap();
            for id in 1..=CALLS {
                let mut head = [0u8; 8];
                sock.read_exact(&mut head).unwrap();
                assert_eq!(u32::from_le_bytes(head[..4].try_into().unwrap()), id);
                assert_eq!(u32::from_le_bytes(head[4..].try_into().unwrap()), 255);
                let mut v = vec![0u8; 255];
                sock.read_exact(&mut v).unwrap();
                assert!(v == reply(id), "reply {id}");
                if id == 1 {
                    seen.send(()).unwrap();
                }
            }
        });
        tokio::task::spawn_blocking(move || client.join().unwrap())
            .await
            .unwrap();
        assert!(
            w.waited.load(SeqCst),
            "the first replies were written only after the whole read was handled"
        );
        let st = w.server.stats();
        assert_eq!(st.responses, CALLS as u64);
        assert!(st.io.flushes >= 2, "{st:?}");
    })
    .await
}

/// The engine's client with 1024 calls in flight, with each compression, plaintext and TLS:
/// every response is exact while early flushes mix with the writer's batches, and a reply
/// reaches the client before the last request's handler is done. (Here the client may send
/// the burst in several writes, so replies may also leave between the server's reads: the
/// test above is the one that tells early flushes apart.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_flushes_are_exact_with_every_compression_and_tls() {
    bounded(async {
        let pki = common::certs::test_pki();
        for comp in [Compression::None, Compression::Snappy, Compression::Flate] {
            for tls in [false, true] {
                let w = waiting_server(
                    comp,
                    tls.then(|| TlsServerConfig {
                        cert_pem: pki.server_cert_pem.as_bytes().to_vec(),
                        key_pem: pki.server_key_pem.as_bytes().to_vec(),
                        ..Default::default()
                    }),
                );
                let mut cfg = ClientConfig::new(w.server.local_addr());
                cfg.compress_type = comp;
                cfg.max_pending_requests = 2 * CALLS as usize;
                cfg.tls = tls.then(|| TlsClientConfig {
                    ca_pem: Some(pki.ca_pem.as_bytes().to_vec()),
                    ..Default::default()
                });
                let c = Arc::new(Client::new(cfg).unwrap());
                // Connected (and the TLS handshake done) before the burst.
                let warm = c.call(b"n", &0u32.to_le_bytes()).await.unwrap();
                assert!(warm == reply(0));
                let ok = Arc::new(AtomicUsize::new(0));
                let seen = Arc::new(Mutex::new(Some(w.seen.clone())));
                let mut tasks = Vec::new();
                for id in 1..=CALLS {
                    let (c, ok, seen) = (c.clone(), ok.clone(), seen.clone());
                    tasks.push(tokio::spawn(async move {
                        let name: &[u8] = if id == CALLS { b"last" } else { b"n" };
                        let v = c.call(name, &id.to_le_bytes()).await.unwrap();
                        assert!(v == reply(id), "{comp:?} tls {tls}: call {id}");
                        ok.fetch_add(1, SeqCst);
                        if let Some(s) = seen.lock().unwrap().take() {
                            let _ = s.send(());
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                assert_eq!(ok.load(SeqCst), CALLS as usize);
                assert!(
                    w.waited.load(SeqCst),
                    "{comp:?} tls {tls}: no reply left before the last request's handler ran"
                );
                w.server.stop(Duration::from_secs(1)).await.unwrap();
            }
        }
    })
    .await
}

/// Reads requests from `s` into `buf` until `n` whole ones are there; returns their ids.
async fn read_requests(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, n: usize) -> Vec<u32> {
    let mut ids = Vec::new();
    while ids.len() < n {
        match parse_request(buf, 1 << 20).unwrap() {
            Parse::Frame(p, len) => {
                ids.push(p.id);
                buf.drain(..len);
            }
            Parse::Incomplete(_) => {
                let mut chunk = [0u8; 65536];
                let k = s.read(&mut chunk).await.unwrap();
                assert!(k > 0, "the client closed");
                buf.extend_from_slice(&chunk[..k]);
            }
        }
    }
    ids
}

/// A raw peer (compression none) that, for each of `rounds` rounds, reads `n` requests, says
/// so on the first channel, waits for the second, then answers them all in one write (one
/// read of the client's completes them all, 8 bytes each). Returns its address, the channels
/// and its task.
async fn round_peer(
    rounds: usize,
    n: usize,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::sync::mpsc::UnboundedSender<()>,
    tokio::task::JoinHandle<()>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (round_tx, round_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (go_tx, mut go_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let peer = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut hdr = [0u8; 3];
        s.read_exact(&mut hdr).await.unwrap();
        s.write_all(&[0, 1, 0]).await.unwrap();
        let mut buf = Vec::new();
        for _round in 0..rounds {
            let ids = read_requests(&mut s, &mut buf, n).await;
            round_tx.send(()).unwrap();
            go_rx.recv().await.unwrap();
            let mut out = Vec::new();
            for id in ids {
                encode_response(&mut out, id, b"");
            }
            s.write_all(&out).await.unwrap();
        }
    });
    (addr, round_rx, go_tx, peer)
}

/// 1024 callers woken by one read (a raw peer answers all their calls in one write) each call
/// again with a 100-byte value: the client writes those 113 KiB in many writes, as they are
/// queued (one per 4 KiB or so), not once the last caller has queued its request. One worker
/// thread, so the order in which callers run is the queue's.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_burst_of_callers_is_written_as_it_is_queued() {
    bounded(async {
        let (addr, mut round_rx, go_tx, peer) = round_peer(2, CALLS as usize).await;
        let mut cfg = ClientConfig::new(&addr);
        cfg.compress_type = Compression::None;
        cfg.max_pending_requests = 2 * CALLS as usize;
        let c = Arc::new(Client::new(cfg).unwrap());
        let mut tasks = Vec::new();
        for _ in 0..CALLS {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..2 {
                    assert_eq!(c.call(b"n", &[7u8; 100]).await.unwrap(), b"");
                }
            }));
        }
        round_rx.recv().await.unwrap();
        common::wait_until("round 1 counted", || {
            c.stats().io.frames_sent == CALLS as u64
        })
        .await;
        let first = c.stats().io.flushes;
        go_tx.send(()).unwrap();
        round_rx.recv().await.unwrap();
        common::wait_until("round 2 counted", || {
            c.stats().io.frames_sent == 2 * CALLS as u64
        })
        .await;
        let second = c.stats().io.flushes - first;
        assert!(
            second >= 8,
            "the burst went out in {second} writes: the writer waited for the whole burst"
        );
        go_tx.send(()).unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        peer.await.unwrap();
    })
    .await
}

/// 128 callers on 4 worker threads, woken by one read, each call again with a 1-byte value
/// (about 2 KiB in all, under the early flush): their requests go out in one write, or two
/// when the writer takes the queue between the last caller's collect (which wakes it) and
/// that caller's next request. (The writer is parked when the read comes here, so this
/// checks the wake side of a burst on several threads; the writer's own gate, for a writer
/// that is running when a burst starts, has a unit test in `src/client/write.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_on_several_worker_threads_shares_one_write() {
    const N: u32 = 128;
    bounded(async {
        let (addr, mut round_rx, go_tx, peer) = round_peer(3, N as usize).await;
        let mut cfg = ClientConfig::new(&addr);
        cfg.compress_type = Compression::None;
        let c = Arc::new(Client::new(cfg).unwrap());
        let mut tasks = Vec::new();
        for _ in 0..N {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..3 {
                    assert_eq!(c.call(b"n", b"v").await.unwrap(), b"");
                }
            }));
        }
        let mut writes = Vec::new();
        for round in 1..=3u64 {
            round_rx.recv().await.unwrap();
            common::wait_until("the round counted", || {
                c.stats().io.frames_sent == round * N as u64
            })
            .await;
            writes.push(c.stats().io.flushes);
            go_tx.send(()).unwrap();
        }
        for t in tasks {
            t.await.unwrap();
        }
        peer.await.unwrap();
        // Rounds 2 and 3: the callers of one read.
        for (k, w) in writes.windows(2).enumerate() {
            let n = w[1] - w[0];
            assert!(
                (1..=2).contains(&n),
                "round {}: the burst of {N} requests went out in {n} writes",
                k + 2
            );
        }
    })
    .await
}
