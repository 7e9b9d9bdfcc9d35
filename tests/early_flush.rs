//! Early flushes (src/server/conn.rs, `early_flush_at`): while the server's reader handles a
//! read that brought many requests, it writes the replies ready so far itself, so that the
//! client starts on them before the read is done. Each test makes the handler of the last
//! request of a big read wait (inline, on the reader) until the client has received a reply:
//! without early flushes no reply leaves before the reader is done with that read, and the
//! handler gives up after 20 s, failing the test. A raw client checks the replies byte for
//! byte; the engine's client checks them through every compression and TLS.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use fastrpc::protocol::frame::encode_request;
use fastrpc::{
    Call, Client, ClientConfig, Compression, Server, ServerConfig, TlsClientConfig, TlsServerConfig,
};

use common::bounded;

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
