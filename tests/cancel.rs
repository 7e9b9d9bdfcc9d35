//! Cancelling one call (`Client::submit_with_id` + `Client::cancel`) and abandoning an async
//! call by dropping its future: the call completes once with `Cancelled` (or not at all for a
//! dropped future), its pending slot is free at once, a queued request is never sent, a late
//! response is dropped and counted, and racing cancels with responses ends each call once.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use fastrpc::{
    Call, CallId, Client, ClientConfig, CloseMode, Completion, Error, ErrorKind, Server,
    ServerConfig,
};

mod common;

use common::{bounded, holding_server, wait_until};

/// Records every completion: per tag how many, and the outcome.
struct Tally {
    counts: Vec<AtomicU32>,
    /// 0 none yet, 1 Ok, 2 Cancelled, 3 other error.
    outcome: Vec<AtomicU32>,
    done: AtomicU64,
}

impl Tally {
    fn new(n: usize) -> Arc<Tally> {
        Arc::new(Tally {
            counts: (0..n).map(|_| AtomicU32::new(0)).collect(),
            outcome: (0..n).map(|_| AtomicU32::new(0)).collect(),
            done: AtomicU64::new(0),
        })
    }
}

impl Completion for Tally {
    fn complete(&self, tag: u128, result: Result<&[u8], &Error>) {
        let t = tag as usize;
        self.counts[t].fetch_add(1, SeqCst);
        let o = match result {
            Ok(_) => 1,
            Err(e) if e.kind() == ErrorKind::Cancelled => {
                assert_eq!(e.message(), "the call was cancelled");
                2
            }
            Err(_) => 3,
        };
        self.outcome[t].store(o, SeqCst);
        self.done.fetch_add(1, SeqCst);
    }
}

async fn echo_server() -> Server {
    Server::bind("127.0.0.1:0", ServerConfig::default(), |call: Call| {
        let v = call.value().to_vec();
        let _ = call.reply(&v);
    })
    .await
    .unwrap()
}

/// A call cancelled while still queued (the client is connecting: a proxy holds the
/// connection until the test lets it through) is never sent: the server sees only the call
/// made after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_call_is_never_sent() {
    bounded(async {
        let server = echo_server().await;
        let target = server.local_addr();
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let paddr = proxy.local_addr().unwrap().to_string();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let pump = tokio::spawn(async move {
            let (mut a, _) = proxy.accept().await.unwrap();
            go_rx.await.unwrap();
            let mut b = tokio::net::TcpStream::connect(target).await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
        });
        let mut cfg = ClientConfig::new(paddr);
        cfg.request_timeout = Duration::from_secs(30);
        let client = Client::new(cfg).unwrap();
        let tally = Tally::new(2);
        let sink: Arc<dyn Completion> = tally.clone();
        let id = client
            .submit_with_id(b"n", b"cancelled", Duration::from_secs(30), sink, 0)
            .unwrap();
        assert_eq!(client.pending_requests(), 1);
        assert!(client.cancel(id), "a queued call is cancelled");
        assert_eq!(client.pending_requests(), 0, "the slot is free at once");
        assert!(!client.cancel(id), "a second cancel finds nothing");
        wait_until("the cancelled call completed", || {
            tally.done.load(SeqCst) == 1
        })
        .await;
        assert_eq!(tally.outcome[0].load(SeqCst), 2);
        // Let the connection through; the next call goes out alone.
        go_tx.send(()).unwrap();
        let r = client
            .call_timeout(b"n", b"after", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(r, b"after");
        assert_eq!(tally.counts[0].load(SeqCst), 1);
        // A write is counted once it returns, which may be after the answer came; the batch
        // counts all its frames at once, so the first count is final.
        common::wait_until("the write counted", || client.stats().io.frames_sent > 0).await;
        let st = client.stats();
        assert_eq!(st.errors.cancelled, 1, "{st:?}");
        assert_eq!(st.io.frames_sent, 1, "the cancelled frame was cut: {st:?}");
        assert_eq!(st.responses, 1);
        assert_eq!(st.unexpected_responses, 0);
        let ss = server.stats();
        assert_eq!(ss.requests, 1, "the server saw only the later call: {ss:?}");
        client.close(CloseMode::Cancel).await;
        pump.abort();
    })
    .await;
}

/// A call cancelled while the server holds it completes with Cancelled at once; the reply
/// the server sends later is dropped and counted in `unexpected_responses`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_sent_call_drops_the_late_reply() {
    bounded(async {
        let (server, rx) = holding_server().await;
        let client = Client::new(ClientConfig::new(server.local_addr())).unwrap();
        let tally = Tally::new(1);
        let sink: Arc<dyn Completion> = tally.clone();
        let id = client
            .submit_with_id(b"n", b"held", Duration::from_secs(30), sink, 0)
            .unwrap();
        // The server holds it: it was sent.
        let held = tokio::task::spawn_blocking(move || {
            let c = rx.recv_timeout(Duration::from_secs(20)).unwrap();
            (c, rx)
        })
        .await
        .unwrap();
        let (call, rx) = held;
        assert_eq!(call.value(), b"held");
        assert_eq!(client.pending_requests(), 1);
        assert!(client.cancel(id));
        assert_eq!(client.pending_requests(), 0);
        wait_until("cancelled", || tally.done.load(SeqCst) == 1).await;
        assert_eq!(tally.outcome[0].load(SeqCst), 2);
        call.reply(b"late").unwrap();
        wait_until("the late reply was counted", || {
            client.stats().unexpected_responses == 1
        })
        .await;
        assert_eq!(tally.counts[0].load(SeqCst), 1, "completed exactly once");
        assert!(!client.cancel(id), "a finished call cannot be cancelled");
        // The client still works.
        let next = client.call_timeout(b"n", b"next", Duration::from_secs(30));
        let answer = tokio::task::spawn_blocking(move || {
            let c = rx.recv_timeout(Duration::from_secs(20)).unwrap();
            let v = c.value().to_vec();
            c.reply(&v).unwrap();
        });
        assert_eq!(next.await.unwrap(), b"next");
        answer.await.unwrap();
        let st = client.stats();
        assert_eq!(
            (
                st.calls,
                st.responses,
                st.errors.cancelled,
                st.errors.total()
            ),
            (2, 1, 1, 1),
            "{st:?}"
        );
        client.close(CloseMode::Cancel).await;
    })
    .await;
}

/// Cancels racing immediate responses from 4 threads: each call completes exactly once, as
/// Cancelled exactly when `cancel` returned true, else Ok; the counters add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_racing_responses_ends_each_call_once() {
    bounded(async {
        let server = echo_server().await;
        let mut cfg = ClientConfig::new(server.local_addr());
        cfg.max_pending_requests = 100_000;
        cfg.request_timeout = Duration::from_secs(30);
        let client = Client::new(cfg).unwrap();
        client.call(b"n", b"warm").await.unwrap();
        const THREADS: usize = 4;
        const PER: usize = 5000;
        let tally = Tally::new(THREADS * PER);
        let mut threads = Vec::new();
        for t in 0..THREADS {
            let (client, tally) = (client.clone(), tally.clone());
            threads.push(std::thread::spawn(move || {
                let mut cancelled = Vec::new();
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
                let mut ids: Vec<(usize, CallId)> = Vec::new();
                for i in 0..PER {
                    let tag = t * PER + i;
                    let sink: Arc<dyn Completion> = tally.clone();
                    let id = client
                        .submit_with_id(b"n", b"v", Duration::from_secs(30), sink, tag as u128)
                        .unwrap();
                    ids.push((tag, id));
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Cancel some at once, some a few calls later, some never; every 100th
                    // only once it completed (that cancel must find nothing).
                    if i % 100 == 0 {
                        let (tag, id) = ids.pop().unwrap();
                        let start = Instant::now();
                        while tally.counts[tag].load(SeqCst) == 0 {
                            assert!(start.elapsed() < Duration::from_secs(20), "tag {tag}");
                            std::thread::yield_now();
                        }
                        let late = client.cancel(id);
                        assert!(!late, "tag {tag}: cancelled after it completed");
                        cancelled.push((tag, late));
                    } else if seed % 3 == 0 {
                        let (tag, id) = ids.pop().unwrap();
                        cancelled.push((tag, client.cancel(id)));
                    } else if seed % 3 == 1 && ids.len() > 8 {
                        let (tag, id) = ids.remove(0);
                        cancelled.push((tag, client.cancel(id)));
                    }
                }
                cancelled
            }));
        }
        let mut results = Vec::new();
        for th in threads {
            let r = tokio::task::spawn_blocking(move || th.join().unwrap())
                .await
                .unwrap();
            results.extend(r);
        }
        let n = (THREADS * PER) as u64;
        wait_until("every call completed", || tally.done.load(SeqCst) == n).await;
        let mut true_cancels = 0u64;
        let mut tried = vec![None; THREADS * PER];
        for (tag, ok) in &results {
            tried[*tag] = Some(*ok);
            true_cancels += u64::from(*ok);
        }
        for (tag, tried) in tried.iter().enumerate() {
            assert_eq!(tally.counts[tag].load(SeqCst), 1, "tag {tag}");
            let o = tally.outcome[tag].load(SeqCst);
            match tried {
                Some(true) => assert_eq!(o, 2, "tag {tag}: cancel said true"),
                _ => assert_eq!(o, 1, "tag {tag}: not cancelled"),
            }
        }
        assert_eq!(client.pending_requests(), 0);
        let st = client.stats();
        assert_eq!(st.errors.cancelled, true_cancels, "{st:?}");
        assert_eq!(st.errors.total(), true_cancels, "{st:?}");
        assert_eq!(st.responses + true_cancels, n + 1, "{st:?}");
        // Every response came (the server answers all it got) or was never sent.
        wait_until("late replies counted", || {
            let st = client.stats();
            st.unexpected_responses + st.responses == st.io.frames_sent
        })
        .await;
        // Some cancels won (the every-100th ones, which came late, lost: asserted above).
        assert!(true_cancels > 0, "some cancels won");
        client.close(CloseMode::Cancel).await;
    })
    .await;
}

/// 10,000 calls cancelled one after another with max_pending_requests 100 (the server never
/// answers) never overflow: each cancel frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cancels_never_overflow() {
    bounded(async {
        let (server, rx) = holding_server().await;
        let mut cfg = ClientConfig::new(server.local_addr());
        cfg.max_pending_requests = 100;
        let client = Client::new(cfg).unwrap();
        let tally = Tally::new(10_000);
        for i in 0..10_000usize {
            let sink: Arc<dyn Completion> = tally.clone();
            let id = client
                .submit_with_id(b"n", b"v", Duration::from_secs(30), sink, i as u128)
                .unwrap_or_else(|e| panic!("call {i}: {e}"));
            assert!(client.cancel(id), "call {i}");
            assert_eq!(client.pending_requests(), 0);
        }
        wait_until("every call completed", || tally.done.load(SeqCst) == 10_000).await;
        assert!((0..10_000).all(|t| tally.outcome[t].load(SeqCst) == 2));
        let st = client.stats();
        assert_eq!(st.errors.cancelled, 10_000);
        assert_eq!(st.errors.overflow, 0);
        client.close(CloseMode::Cancel).await;
        drop(rx);
    })
    .await;
}

/// Dropping an async call's future after it was queued frees its pending slot; 10,000 in a
/// row with max_pending_requests 100 never overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_futures_free_their_slots() {
    bounded(async {
        let (server, rx) = holding_server().await;
        let mut cfg = ClientConfig::new(server.local_addr());
        cfg.max_pending_requests = 100;
        let client = Client::new(cfg).unwrap();
        for i in 0..10_000 {
            let mut f = Box::pin(client.call(b"n", b"v"));
            // One poll queues the call.
            std::future::poll_fn(|cx| {
                assert!(f.as_mut().poll(cx).is_pending(), "call {i}");
                Poll::Ready(())
            })
            .await;
            assert_eq!(client.pending_requests(), 1, "call {i}");
            drop(f);
            assert_eq!(client.pending_requests(), 0, "call {i}");
        }
        let st = client.stats();
        assert_eq!(st.errors.overflow, 0, "{st:?}");
        assert_eq!(st.calls, 10_000);
        client.close(CloseMode::Cancel).await;
        drop(rx);
    })
    .await;
}

/// Cancels racing `close(Cancel)` on calls the server holds: each call completes exactly
/// once, Cancelled exactly when `cancel` returned true, else Closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_racing_close_ends_each_call_once() {
    bounded(async {
        let (server, rx) = holding_server().await;
        let mut cfg = ClientConfig::new(server.local_addr());
        cfg.max_pending_requests = 10_000;
        let client = Client::new(cfg).unwrap();
        const N: usize = 2000;
        let tally = Tally::new(N);
        let mut ids = Vec::new();
        for i in 0..N {
            let sink: Arc<dyn Completion> = tally.clone();
            ids.push(
                client
                    .submit_with_id(b"n", b"v", Duration::from_secs(30), sink, i as u128)
                    .unwrap(),
            );
        }
        let c2 = client.clone();
        let canceller =
            std::thread::spawn(move || ids.iter().map(|id| c2.cancel(*id)).collect::<Vec<bool>>());
        client.close(CloseMode::Cancel).await;
        let won = tokio::task::spawn_blocking(move || canceller.join().unwrap())
            .await
            .unwrap();
        wait_until("every call completed", || {
            tally.done.load(SeqCst) == N as u64
        })
        .await;
        for (tag, w) in won.iter().enumerate() {
            assert_eq!(tally.counts[tag].load(SeqCst), 1, "tag {tag}");
            let want = if *w { 2 } else { 3 };
            assert_eq!(tally.outcome[tag].load(SeqCst), want, "tag {tag}");
        }
        let n_won = won.iter().filter(|w| **w).count() as u64;
        let st = client.stats();
        assert_eq!(st.errors.cancelled, n_won, "{st:?}");
        assert_eq!(st.errors.closed, N as u64 - n_won, "{st:?}");
        assert_eq!(client.pending_requests(), 0);
        drop(rx);
    })
    .await;
}
