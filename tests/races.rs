//! Races on the client's lock-free call table: responses against deadlines, against
//! `close(Cancel)`, against callers that give up, and new calls displacing queued ones, with
//! more runtime threads than cores. Every call must end exactly once: each completion-sink
//! tag once, each async call with one outcome, the counters adding up, no cell left taken.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use fastrpc::{
    Call, Client, ClientConfig, CloseMode, Completion, Error, ErrorKind, Server, ServerConfig,
};

mod common;

use common::{bounded, wait_until};

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// A server that answers each request with its value after the number of microseconds the
/// value starts with ("1500:..." is answered 1.5 ms later; "0:..." at once), from a thread
/// that holds the calls meanwhile.
async fn delaying_server() -> (Server, std::thread::JoinHandle<()>) {
    let (tx, rx) = std_mpsc::channel::<(Instant, Call)>();
    let replier = std::thread::spawn(move || {
        let mut held: Vec<(Instant, Call)> = Vec::new();
        loop {
            let next = held.iter().map(|(t, _)| *t).min();
            let got = match next {
                None => rx
                    .recv()
                    .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
                Some(t) => rx.recv_timeout(t.saturating_duration_since(Instant::now())),
            };
            match got {
                Ok(c) => held.push(c),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            let mut i = 0;
            while i < held.len() {
                if held[i].0 <= now {
                    let (_, call) = held.swap_remove(i);
                    let v = call.value().to_vec();
                    let _ = call.reply(&v);
                } else {
                    i += 1;
                }
            }
        }
    });
    let tx = std::sync::Mutex::new(tx);
    let server = Server::bind("127.0.0.1:0", ServerConfig::default(), move |call: Call| {
        let us: u64 = std::str::from_utf8(call.value())
            .ok()
            .and_then(|s| s.split(':').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if us == 0 {
            let v = call.value().to_vec();
            let _ = call.reply(&v);
        } else {
            let due = Instant::now() + Duration::from_micros(us);
            let _ = tx.lock().unwrap().send((due, call));
        }
    })
    .await
    .unwrap();
    (server, replier)
}

/// The delaying server and a connected client with room for 100,000 calls.
async fn warm_client() -> (Server, std::thread::JoinHandle<()>, Client) {
    let (server, replier) = delaying_server().await;
    let mut cfg = ClientConfig::new(server.local_addr());
    cfg.max_pending_requests = 100_000;
    let client = Client::new(cfg).unwrap();
    assert_eq!(client.call(b"n", b"0:warm").await.unwrap(), b"0:warm");
    (server, replier, client)
}

/// Counts completions per tag.
struct Tally {
    counts: Vec<AtomicU32>,
    ok: AtomicU64,
    errs: std::sync::Mutex<Vec<ErrorKind>>,
    done: AtomicU64,
    /// Each Ok must carry the value that was sent for that tag.
    values: Vec<std::sync::Mutex<Vec<u8>>>,
}

impl Tally {
    fn new(n: usize) -> Arc<Tally> {
        Arc::new(Tally {
            counts: (0..n).map(|_| AtomicU32::new(0)).collect(),
            ok: AtomicU64::new(0),
            errs: std::sync::Mutex::new(Vec::new()),
            done: AtomicU64::new(0),
            values: (0..n).map(|_| std::sync::Mutex::new(Vec::new())).collect(),
        })
    }

    /// Waits for every accepted call's sink, then checks each ended once, as Ok or
    /// Closed. Returns how many were accepted.
    async fn all_ended_once_ok_or_closed(&self, accepted: &[bool]) -> u64 {
        let n_acc = accepted.iter().filter(|a| **a).count() as u64;
        wait_until("every sink call ended", || self.done.load(SeqCst) == n_acc).await;
        self.assert_exactly_once(accepted);
        let errs = self.errs.lock().unwrap().clone();
        assert!(errs.iter().all(|k| *k == ErrorKind::Closed), "{errs:?}");
        n_acc
    }

    fn assert_exactly_once(&self, accepted: &[bool]) {
        for (tag, c) in self.counts.iter().enumerate() {
            let want = u32::from(accepted[tag]);
            assert_eq!(
                c.load(SeqCst),
                want,
                "tag {tag} completed {c:?} times, want {want}"
            );
        }
    }
}

impl Completion for Tally {
    fn complete(&self, tag: u128, result: Result<&[u8], &Error>) {
        let t = tag as usize;
        self.counts[t].fetch_add(1, SeqCst);
        match result {
            Ok(v) => {
                assert_eq!(v, &self.values[t].lock().unwrap()[..], "tag {t}");
                self.ok.fetch_add(1, SeqCst);
            }
            Err(e) => self.errs.lock().unwrap().push(e.kind()),
        }
        self.done.fetch_add(1, SeqCst);
    }
}

fn value(us: u64, tag: usize) -> Vec<u8> {
    format!("{us}:{tag}").into_bytes()
}

/// Responses arriving around the deadline: from async callers and completion sinks at once,
/// 4 runtime threads on however many cores. Each call ends once, as Ok with its own value or
/// as a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn responses_racing_deadlines_end_each_call_exactly_once() {
    bounded(async {
        let (server, _replier) = delaying_server().await;
        let mut cfg = ClientConfig::new(server.local_addr());
        cfg.request_timeout = Duration::from_millis(3);
        cfg.max_pending_requests = 100_000;
        let client = Client::new(cfg).unwrap();
        // Warm: the connection is up (a long timeout: connecting may take longer than 3 ms).
        let warm = client.call_timeout(b"n", b"0:warm", Duration::from_secs(10));
        assert_eq!(warm.await.unwrap(), b"0:warm");

        const TASKS: usize = 48;
        const PER_TASK: usize = 150;
        const SINK_CALLS: usize = 4000;
        let ok = Arc::new(AtomicU64::new(0));
        let timeouts = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (client, ok, timeouts) = (client.clone(), ok.clone(), timeouts.clone());
            tasks.push(tokio::spawn(async move {
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
                let mut resp = Vec::new();
                for i in 0..PER_TASK {
                    // 0 to 6 ms around a 3 ms (+ up to a clock tick) deadline; every tenth
                    // call answered at once within 10 s, every tenth + 1 answered after 2 s
                    // within 1 ms: each way happens whatever the load.
                    let (us, sure) = match i % 10 {
                        0 => (0, Some(Duration::from_secs(10))),
                        1 => (2_000_000, Some(Duration::from_millis(1))),
                        _ => (xorshift(&mut seed) % 6000, None),
                    };
                    let v = value(us, t * PER_TASK + i);
                    let r = match sure {
                        Some(d) => {
                            let deadline = Instant::now() + d;
                            client
                                .call_deadline_into(b"n", &v, deadline, &mut resp)
                                .await
                        }
                        None => client.call_into(b"n", &v, &mut resp).await,
                    };
                    match r {
                        Ok(()) => {
                            assert_ne!(i % 10, 1, "answered after 2 s within 1 ms");
                            assert_eq!(resp, v);
                            ok.fetch_add(1, SeqCst);
                        }
                        Err(e) => {
                            assert_ne!(i % 10, 0, "{e}");
                            assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
                            timeouts.fetch_add(1, SeqCst);
                        }
                    }
                }
            }));
        }
        // Sinks from a plain thread meanwhile.
        let tally = Tally::new(SINK_CALLS);
        let (c2, t2) = (client.clone(), tally.clone());
        let submitter = std::thread::spawn(move || {
            let mut seed = 42u64;
            let mut accepted = vec![false; SINK_CALLS];
            for (tag, acc) in accepted.iter_mut().enumerate() {
                // As the async calls: racing, except tags 0 and 1 mod 10.
                let (us, timeout) = match tag % 10 {
                    0 => (0, Duration::from_secs(10)),
                    1 => (2_000_000, Duration::from_millis(1)),
                    _ => (
                        xorshift(&mut seed) % 6000,
                        Duration::from_micros(1000 + xorshift(&mut seed) % 4000),
                    ),
                };
                let v = value(us, tag);
                *t2.values[tag].lock().unwrap() = v.clone();
                let sink: Arc<dyn Completion> = t2.clone();
                *acc = c2.submit(b"n", &v, timeout, sink, tag as u128).is_ok();
                if tag % 64 == 0 {
                    std::thread::yield_now();
                }
            }
            accepted
        });
        for t in tasks {
            t.await.unwrap();
        }
        let accepted = tokio::task::spawn_blocking(move || submitter.join().unwrap())
            .await
            .unwrap();
        let n_acc = accepted.iter().filter(|a| **a).count() as u64;
        assert_eq!(n_acc, SINK_CALLS as u64, "every submit accepted");
        wait_until("every sink call ended", || tally.done.load(SeqCst) == n_acc).await;
        assert_eq!(client.pending_requests(), 0);
        client.close(CloseMode::Cancel).await;
        tally.assert_exactly_once(&accepted);
        let errs = tally.errs.lock().unwrap().clone();
        assert!(errs.iter().all(|k| *k == ErrorKind::Timeout), "{errs:?}");

        let (ok, timeouts) = (ok.load(SeqCst), timeouts.load(SeqCst));
        assert_eq!(ok + timeouts, (TASKS * PER_TASK) as u64);
        let st = client.stats();
        let calls = (TASKS * PER_TASK) as u64 + n_acc + 1;
        assert_eq!(st.calls, calls);
        assert_eq!(st.responses + st.errors.timeout, calls, "{st:?}");
        assert_eq!(st.errors.timeout, timeouts + errs.len() as u64, "{st:?}");
        // The race really happened both ways.
        // Both ways happened (the sure ones at least).
        let tenth = (TASKS * PER_TASK / 10) as u64;
        assert!(
            ok >= tenth && timeouts >= tenth,
            "ok {ok}, timeouts {timeouts}"
        );
        let sink_tenth = (SINK_CALLS / 10) as u64;
        assert!(tally.ok.load(SeqCst) >= sink_tenth && errs.len() as u64 >= sink_tenth);
        let _ = server.stop(Duration::from_secs(1)).await;
    })
    .await
}

/// `close(Cancel)` while async callers and sinks are queued, in flight, and being answered:
/// each call ends once (Ok or Closed), nothing stays pending, later calls are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_cancel_racing_responses_ends_each_call_exactly_once() {
    bounded(async {
        let (server, _replier, client) = warm_client().await;

        let stop = Arc::new(AtomicBool::new(false));
        let ends = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for t in 0..32usize {
            let (client, ends) = (client.clone(), ends.clone());
            tasks.push(tokio::spawn(async move {
                let mut seed = t as u64 + 7;
                let mut resp = Vec::new();
                let (mut ok, mut closed) = (0u64, 0u64);
                loop {
                    let us = xorshift(&mut seed) % 3 * 500;
                    let v = value(us, t);
                    match client.call_into(b"n", &v, &mut resp).await {
                        Ok(()) => {
                            assert_eq!(resp, v);
                            ok += 1;
                        }
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
                            closed += 1;
                            break;
                        }
                    }
                    ends.fetch_add(1, SeqCst);
                }
                (ok, closed)
            }));
        }
        const SINK_CALLS: usize = 200_000;
        let tally = Tally::new(SINK_CALLS);
        let (c2, t2, s2) = (client.clone(), tally.clone(), stop.clone());
        let submitter = std::thread::spawn(move || {
            let mut accepted = vec![false; SINK_CALLS];
            let mut seed = 99u64;
            for (tag, acc) in accepted.iter_mut().enumerate() {
                let us = xorshift(&mut seed) % 3 * 500;
                let v = value(us, tag);
                *t2.values[tag].lock().unwrap() = v.clone();
                let sink: Arc<dyn Completion> = t2.clone();
                match c2.submit(b"n", &v, Duration::from_secs(10), sink, tag as u128) {
                    Ok(()) => *acc = true,
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
                        break;
                    }
                }
                // Keep a few thousand in flight.
                while tag as u64 > t2.done.load(SeqCst) + 3000 && !s2.load(SeqCst) {
                    std::thread::yield_now();
                }
            }
            accepted
        });
        // Close once plenty has gone through both ways.
        wait_until("calls completed before the close", || {
            ends.load(SeqCst) > 2000 && tally.ok.load(SeqCst) > 2000
        })
        .await;
        client.close(CloseMode::Cancel).await;
        stop.store(true, SeqCst);
        let (mut ok, mut closed) = (0, 0);
        for t in tasks {
            let (o, c) = t.await.unwrap();
            ok += o;
            closed += c;
        }
        assert_eq!(closed, 32, "each task ended with Closed");
        let accepted = tokio::task::spawn_blocking(move || submitter.join().unwrap())
            .await
            .unwrap();
        let n_acc = tally.all_ended_once_ok_or_closed(&accepted).await;
        assert_eq!(client.pending_requests(), 0);
        let st = client.stats();
        assert_eq!(st.responses, ok + tally.ok.load(SeqCst) + 1, "{st:?}");
        // Accepted calls end with a response or Closed; a call made after the close is
        // refused at once (an error, not a call): at most one per task and the submitter.
        let failed_accepted = st.calls - st.responses;
        assert!(
            st.errors.closed >= failed_accepted && st.errors.closed <= failed_accepted + 33,
            "{st:?}"
        );
        let (lo, hi) = (ok + n_acc + 1, ok + closed + n_acc + 1);
        assert!((lo..=hi).contains(&st.calls), "{st:?}");
        let e = client.call(b"n", b"0:after").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed);
        let _ = server.stop(Duration::from_secs(1)).await;
    })
    .await
}

/// Submitters on 8 OS threads at once (each on its own shard of the client's submission
/// queue), racing `close(Cancel)`: every accepted call ends exactly once, with its own value
/// or Closed; a refused one never reaches its sink; no cell is left taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submitters_on_many_threads_racing_close_end_each_call_exactly_once() {
    bounded(async {
        let (server, _replier, client) = warm_client().await;
        const THREADS: usize = 8;
        const EACH: usize = 25_000;
        let tally = Tally::new(THREADS * EACH);
        let submitted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (c, tally) = (client.clone(), tally.clone());
                let (submitted, stop) = (submitted.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut accepted = Vec::with_capacity(EACH);
                    let mut seed = t as u64 * 31 + 5;
                    for i in 0..EACH {
                        let tag = t * EACH + i;
                        let us = xorshift(&mut seed) % 3 * 300;
                        let v = value(us, tag);
                        *tally.values[tag].lock().unwrap() = v.clone();
                        let sink: Arc<dyn Completion> = tally.clone();
                        match c.submit(b"n", &v, Duration::from_secs(10), sink, tag as u128) {
                            Ok(()) => accepted.push(tag),
                            Err(e) => {
                                assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
                                break;
                            }
                        }
                        // Keep some thousands in flight.
                        let sent = submitted.fetch_add(1, SeqCst) + 1;
                        while tally.done.load(SeqCst) + 4000 < sent && !stop.load(SeqCst) {
                            std::thread::yield_now();
                        }
                    }
                    accepted
                })
            })
            .collect();
        wait_until("calls completed before the close", || {
            tally.ok.load(SeqCst) > 5000
        })
        .await;
        client.close(CloseMode::Cancel).await;
        stop.store(true, SeqCst);
        let mut accepted = vec![false; THREADS * EACH];
        for t in threads {
            let got = tokio::task::spawn_blocking(move || t.join().unwrap())
                .await
                .unwrap();
            for tag in got {
                accepted[tag] = true;
            }
        }
        let n_acc = tally.all_ended_once_ok_or_closed(&accepted).await;
        assert!(n_acc > 5000, "{n_acc} accepted");
        assert_eq!(client.pending_requests(), 0);
        let st = client.stats();
        assert_eq!(st.responses, tally.ok.load(SeqCst) + 1, "{st:?}");
        let _ = server.stop(Duration::from_secs(1)).await;
    })
    .await
}

/// Callers that give up (their future dropped) while the call is queued, sent, being
/// completed or completed: every cell comes back, and the client keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abandoned_calls_give_back_their_cells() {
    bounded(async {
        let (server, _replier) = delaying_server().await;
        let mut cfg = ClientConfig::new(server.local_addr());
        cfg.max_pending_requests = 64;
        let client = Client::new(cfg).unwrap();
        assert_eq!(client.call(b"n", b"0:warm").await.unwrap(), b"0:warm");
        let mut tasks = Vec::new();
        for t in 0..32usize {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut seed = t as u64 * 31 + 1;
                let (mut ok, mut gave_up) = (0u32, 0u32);
                for i in 0..300 {
                    // Racing, except every tenth call (answered at once, waited for up to 10 s)
                    // and every tenth + 1 (answered after 300 ms, given up after 1 ms).
                    let (us, patience) = match i % 10 {
                        0 => (0, Duration::from_secs(10)),
                        1 => (300_000, Duration::from_millis(1)),
                        _ => (
                            xorshift(&mut seed) % 4 * 400,
                            Duration::from_micros(xorshift(&mut seed) % 2000),
                        ),
                    };
                    let v = value(us, i);
                    let mut resp = Vec::new();
                    match tokio::time::timeout(patience, client.call_into(b"n", &v, &mut resp))
                        .await
                    {
                        Ok(Ok(())) => {
                            assert_eq!(resp, v);
                            ok += 1;
                        }
                        Ok(Err(e)) => assert_eq!(e.kind(), ErrorKind::Overflow, "{e}"),
                        Err(_) => gave_up += 1,
                    }
                }
                (ok, gave_up)
            }));
        }
        let (mut ok, mut gave_up) = (0, 0);
        for t in tasks {
            let (o, g) = t.await.unwrap();
            ok += o;
            gave_up += g;
        }
        assert!(
            ok >= 32 * 30 && gave_up >= 32 * 30,
            "ok {ok}, gave up {gave_up}"
        );
        wait_until("every abandoned cell came back", || {
            client.pending_requests() == 0
        })
        .await;
        // All 64 slots usable again, at once.
        let mut calls = Vec::new();
        for i in 0..64 {
            let c = client.clone();
            calls.push(tokio::spawn(async move {
                let v = value(500, i);
                assert_eq!(c.call(b"n", &v).await.unwrap(), v);
            }));
        }
        for c in calls {
            c.await.unwrap();
        }
        assert_eq!(client.pending_requests(), 0);
        let _ = server.stop(Duration::from_secs(1)).await;
    })
    .await
}

/// With prioritize_new_requests and a small limit, new calls from several threads displace
/// queued ones while responses and deadlines complete others: each call ends once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn displacement_racing_completions_ends_each_call_exactly_once() {
    bounded(async {
        let (server, _replier) = delaying_server().await;
        let mut cfg = ClientConfig::new(server.local_addr());
        cfg.max_pending_requests = 16;
        cfg.prioritize_new_requests = true;
        let client = Client::new(cfg).unwrap();
        assert_eq!(client.call(b"n", b"0:warm").await.unwrap(), b"0:warm");
        const PER_THREAD: usize = 5000;
        const THREADS: usize = 4;
        let tally = Tally::new(PER_THREAD * THREADS);
        let mut threads = Vec::new();
        for th in 0..THREADS {
            let (c, t) = (client.clone(), tally.clone());
            threads.push(std::thread::spawn(move || {
                let mut seed = th as u64 + 5;
                let (mut accepted, mut refused) = (Vec::new(), 0usize);
                for i in 0..PER_THREAD {
                    let tag = th * PER_THREAD + i;
                    let us = xorshift(&mut seed) % 3 * 300;
                    let v = value(us, tag);
                    *t.values[tag].lock().unwrap() = v.clone();
                    let sink: Arc<dyn Completion> = t.clone();
                    let timeout = Duration::from_micros(500 + xorshift(&mut seed) % 3000);
                    match c.submit(b"n", &v, timeout, sink, tag as u128) {
                        Ok(()) => accepted.push(tag),
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
                            refused += 1;
                        }
                    }
                }
                (accepted, refused)
            }));
        }
        let mut accepted = vec![false; PER_THREAD * THREADS];
        let mut refused = 0;
        for th in threads {
            let (a, r) = tokio::task::spawn_blocking(move || th.join().unwrap())
                .await
                .unwrap();
            refused += r;
            for tag in a {
                accepted[tag] = true;
            }
        }
        let n_acc = accepted.iter().filter(|a| **a).count() as u64;
        wait_until("every sink call ended", || tally.done.load(SeqCst) == n_acc).await;
        assert_eq!(client.pending_requests(), 0);
        client.close(CloseMode::Cancel).await;
        tally.assert_exactly_once(&accepted);
        let errs = tally.errs.lock().unwrap().clone();
        assert!(
            errs.iter()
                .all(|k| matches!(k, ErrorKind::Overflow | ErrorKind::Timeout)),
            "{errs:?}"
        );
        let displaced = errs.iter().filter(|k| **k == ErrorKind::Overflow).count();
        // The limit was reached: queued calls were displaced, or (all of them sent) new ones
        // refused.
        assert!(displaced + refused > 0, "the limit was never reached");
        assert_eq!(
            tally.ok.load(SeqCst) + errs.len() as u64,
            n_acc,
            "{displaced} displaced, {refused} refused"
        );
        let st = client.stats();
        assert_eq!(st.calls, n_acc + 1, "{st:?}");
        let _ = server.stop(Duration::from_secs(1)).await;
    })
    .await
}

struct CountWaker(AtomicU64);

impl std::task::Wake for CountWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// A call polled first with one waker, then with another before its response comes, wakes
/// the second one only (the first is registered when the call is queued, without a lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_polled_with_a_new_waker_wakes_that_one() {
    bounded(async {
        let (server, _replier) = delaying_server().await;
        let client = Client::new(ClientConfig::new(server.local_addr())).unwrap();
        assert_eq!(client.call(b"n", b"0:warm").await.unwrap(), b"0:warm");
        let (a, b) = (
            Arc::new(CountWaker(AtomicU64::new(0))),
            Arc::new(CountWaker(AtomicU64::new(0))),
        );
        let (wa, wb) = (
            std::task::Waker::from(a.clone()),
            std::task::Waker::from(b.clone()),
        );
        let mut call = Box::pin(client.call(b"n", b"200000:late"));
        fn poll<F: Future>(
            f: &mut std::pin::Pin<Box<F>>,
            w: &std::task::Waker,
        ) -> std::task::Poll<F::Output> {
            f.as_mut().poll(&mut std::task::Context::from_waker(w))
        }
        assert!(poll(&mut call, &wa).is_pending());
        assert_eq!(client.pending_requests(), 1);
        assert!(poll(&mut call, &wb).is_pending());
        assert!(poll(&mut call, &wb).is_pending());
        wait_until("the second waker was woken", || b.0.load(SeqCst) > 0).await;
        match poll(&mut call, &wb) {
            std::task::Poll::Ready(r) => assert_eq!(r.unwrap(), b"200000:late"),
            std::task::Poll::Pending => panic!("woken but not ready"),
        }
        assert_eq!((a.0.load(SeqCst), b.0.load(SeqCst)), (0, 1));
        assert_eq!(client.pending_requests(), 0);
        let _ = server.stop(Duration::from_secs(1)).await;
    })
    .await
}
