//! A completion sink that panics costs nobody else anything: the other calls completed in the
//! same batch (by the reader, from one read; by the connection manager, when a connect fails)
//! still get their outcome exactly once, and the connection stays up. (The library's
//! delivery loops once let the panic end the task, dropping the outcomes still in hand.)

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use fastrpc::{Call, Client, ClientConfig, Completion, Error, ErrorKind};

mod common;

use common::{bounded, holding_server};

const N: usize = 8;
/// The tag whose sink panics: in the middle of the batch.
const PANICS: u128 = 3;

/// One completion: the tag and its value or error kind.
type Outcome = (u128, Result<Vec<u8>, ErrorKind>);

/// Records each tag's outcome (`Ok` value or error kind) and how often it came; the sink of
/// tag [`PANICS`] panics after recording.
struct Sink {
    counts: Vec<AtomicU32>,
    tx: Mutex<std_mpsc::Sender<Outcome>>,
}

impl Completion for Sink {
    fn complete(&self, tag: u128, result: Result<&[u8], &Error>) {
        self.counts[tag as usize].fetch_add(1, SeqCst);
        let r = result.map(|v| v.to_vec()).map_err(|e| e.kind());
        let _ = self.tx.lock().unwrap().send((tag, r));
        if tag == PANICS {
            panic!("a completion sink panics on purpose (expected by the test)");
        }
    }
}

fn sink() -> (Arc<Sink>, std_mpsc::Receiver<Outcome>) {
    let (tx, rx) = std_mpsc::channel();
    let s = Arc::new(Sink {
        counts: (0..N).map(|_| AtomicU32::new(0)).collect(),
        tx: Mutex::new(tx),
    });
    (s, rx)
}

/// Receives all `N` outcomes (within 10 s each), sorted by tag.
fn outcomes(rx: &std_mpsc::Receiver<Outcome>) -> Vec<Outcome> {
    let mut v: Vec<_> = (0..N)
        .map(|i| {
            rx.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("only {i} of {N} calls completed"))
        })
        .collect();
    v.sort_by_key(|o| o.0);
    v
}

/// The reader completes a batch of responses (answered together by the server) through
/// their sinks; the fourth panics, the other seven get their exact value, and the same
/// connection serves the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_sink_in_a_read_costs_the_other_responses_nothing() {
    bounded(async {
        let (server, rx) = holding_server().await;
        let client = Client::new(ClientConfig::new(server.local_addr())).unwrap();
        let (s, done) = sink();
        for tag in 0..N as u128 {
            let v = format!("v{tag}");
            client
                .submit(b"n", v.as_bytes(), Duration::from_secs(10), s.clone(), tag)
                .unwrap();
        }
        // Held until all are in, then answered together (one batch of replies).
        let calls = tokio::task::spawn_blocking(move || {
            let calls: Vec<Call> = (0..N)
                .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
                .collect();
            for c in calls {
                let v = c.value().to_vec();
                c.reply(&v).unwrap();
            }
            rx
        });
        let got = tokio::task::spawn_blocking(move || outcomes(&done))
            .await
            .unwrap();
        let rx = calls.await.unwrap();
        for (tag, r) in &got {
            assert_eq!(r, &Ok(format!("v{tag}").into_bytes()), "call {tag}");
        }
        for (tag, c) in s.counts.iter().enumerate() {
            assert_eq!(c.load(SeqCst), 1, "call {tag} completed once");
        }
        // The reader lives on: the next call is answered on the same connection.
        let answer = tokio::task::spawn_blocking(move || {
            let c = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            c.reply(b"after").unwrap();
        });
        assert_eq!(client.call(b"n", b"x").await.unwrap(), b"after");
        answer.await.unwrap();
        assert_eq!(client.stats().connects, 1);
        drop(server);
    })
    .await
}

/// A connect that fails (the listener never accepts, the handshake times out) fails every
/// queued call at once; the panicking sink does not keep the seven others from theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_sink_among_failed_calls_costs_the_others_nothing() {
    bounded(async {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut cfg = ClientConfig::new(l.local_addr().unwrap().to_string());
        cfg.handshake_timeout = Duration::from_millis(300);
        let client = Client::new(cfg).unwrap();
        let (s, done) = sink();
        for tag in 0..N as u128 {
            client
                .submit(b"n", b"v", Duration::from_secs(10), s.clone(), tag)
                .unwrap();
        }
        let got = tokio::task::spawn_blocking(move || outcomes(&done))
            .await
            .unwrap();
        for (tag, r) in &got {
            assert_eq!(r, &Err(ErrorKind::Timeout), "call {tag}");
        }
        for (tag, c) in s.counts.iter().enumerate() {
            assert_eq!(c.load(SeqCst), 1, "call {tag} completed once");
        }
        drop(l);
    })
    .await
}
