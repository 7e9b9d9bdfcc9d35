//! The balancing client against real servers on 127.0.0.1: how calls spread over equal and
//! unequal servers, a server killed under load and restarted, servers added and removed by
//! re-resolution, and every server down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fastrpc::{
    BackendState, BalancedClient, BalancedConfig, Call, CloseMode, Endpoint, ErrorKind, Server,
    ServerConfig,
};
use tokio::sync::watch;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

/// The tests of this file run one at a time: the balancer follows how fast each connection
/// answers, so a test that measures the spread over equal servers must not share the 2 CPUs
/// with another test's load, which slows some connections more than others (warmed up and
/// run alongside the others, one of four equal servers got 0.37 to 0.42 of its share in 3 of
/// 30 runs of `load_spreads_over_equal_servers`; alone, 0.79 to 1.29 in 30 runs).
/// (An async lock: it is held across the test's awaits, on each test's own runtime; a test
/// that fails releases it as it unwinds.)
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

/// Calls parked (never answered) by a server while `armed`.
#[derive(Default)]
struct Park {
    armed: AtomicBool,
    calls: Mutex<Vec<Call>>,
    count: Mutex<Option<watch::Sender<usize>>>,
}

/// A server that counts its calls and answers "ok" after `delay` (0: at once).
async fn server(addr: &str, delay: Duration, hits: Arc<AtomicU64>, park: Arc<Park>) -> Server {
    Server::bind(addr, ServerConfig::default(), move |call: Call| {
        hits.fetch_add(1, Relaxed);
        if park.armed.load(Relaxed) {
            let mut v = park.calls.lock().unwrap();
            v.push(call);
            if let Some(tx) = park.count.lock().unwrap().as_ref() {
                tx.send_replace(v.len());
            }
            return;
        }
        if delay.is_zero() {
            let _ = call.reply(b"ok");
        } else {
            // The delay is the server's work, not synchronization.
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = call.reply(b"ok");
            });
        }
    })
    .await
    .unwrap()
}

struct Pool {
    servers: Vec<Server>,
    hits: Vec<Arc<AtomicU64>>,
    parks: Vec<Arc<Park>>,
    addrs: Vec<String>,
}

async fn pool(delays: &[Duration]) -> Pool {
    let mut p = Pool {
        servers: vec![],
        hits: vec![],
        parks: vec![],
        addrs: vec![],
    };
    for d in delays {
        let h = Arc::new(AtomicU64::new(0));
        let park = Arc::new(Park::default());
        let s = server("127.0.0.1:0", *d, h.clone(), park.clone()).await;
        p.addrs.push(s.local_addr());
        p.servers.push(s);
        p.hits.push(h);
        p.parks.push(park);
    }
    p
}

/// `callers` tasks share `total` calls; every call must succeed.
async fn run_calls(c: &BalancedClient, callers: usize, total: u64) {
    let left = Arc::new(AtomicU64::new(total));
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let c = c.clone();
        let left = left.clone();
        tasks.push(tokio::spawn(async move {
            let mut resp = Vec::new();
            while left
                .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                c.call_into(b"f", b"x", &mut resp).await.unwrap();
                assert_eq!(resp, b"ok");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn hits(p: &Pool) -> Vec<u64> {
    p.hits.iter().map(|h| h.load(Relaxed)).collect()
}

/// Four equal servers, 128 callers: after 1024 calls that bring every connection up, 24000
/// calls give each server 6000 ± 50%, and the per-server stats say the same as the servers.
/// The choice equalizes calls in flight, not calls served: a connection whose round trips
/// happen to be slower (where its reader and writer tasks got scheduled) serves fewer with as
/// many in flight, and a caller prefers the busy connection it just got a response from (so
/// that callers woken together share a write, see `pick.rs`). So the spread is measured warm
/// (the first calls go to the connections up first: one server got 0.12 of its share of the
/// first 1024), alone (`alone`) and over enough calls: 8000 calls from the start, alongside
/// the other tests, went down to 0.37 of the fair share and failed about one run in ten.
/// Observed as it is now: 0.80 to 1.17 over 60 runs; within ±13% under the bench's 1024
/// callers (docs/BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_spreads_over_equal_servers() {
    let _alone = alone().await;
    timeout(LIMIT, async {
        let p = pool(&[Duration::ZERO; 4]).await;
        let mut cfg = BalancedConfig::new(p.addrs.clone());
        cfg.resolve_interval = Duration::ZERO;
        let c = BalancedClient::new(cfg).unwrap();
        run_calls(&c, 128, 1024).await;
        let warm = hits(&p);
        run_calls(&c, 128, 24000).await;
        let h = hits(&p);
        assert_eq!(h.iter().sum::<u64>(), 25024);
        let spread: Vec<u64> = h.iter().zip(&warm).map(|(a, b)| a - b).collect();
        for n in &spread {
            assert!((3000..=9000).contains(n), "uneven spread {spread:?}");
        }
        let st = c.stats();
        assert_eq!(st.total.calls, 25024);
        assert_eq!(st.total.responses, 25024);
        assert_eq!(st.total.errors.total(), 0);
        assert_eq!(st.total.pending_requests, 0);
        assert_eq!(st.resolutions, 1);
        for (i, s) in st.servers.iter().enumerate() {
            assert_eq!(s.addr, p.addrs[i]);
            assert_eq!(s.stats.calls, h[i]);
            assert_eq!(s.state, BackendState::Up);
            assert_eq!(s.connections, 1);
        }
        c.close(CloseMode::Drain(Duration::from_secs(1))).await;
    })
    .await
    .unwrap();
}

/// Several connections per server: each server gets `connections_per_server` clients and
/// the calls spread over all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_server() {
    let _alone = alone().await;
    timeout(LIMIT, async {
        let p = pool(&[Duration::ZERO; 2]).await;
        let mut cfg = BalancedConfig::new(p.addrs.clone());
        cfg.connections_per_server = 3;
        let c = BalancedClient::new(cfg).unwrap();
        run_calls(&c, 32, 2000).await;
        let st = c.stats();
        assert_eq!(st.total.connects, 6);
        for s in &st.servers {
            assert_eq!(s.connections, 3);
            assert_eq!(s.stats.connects, 3);
        }
        assert_eq!(p.servers[0].stats().connections_accepted, 3);
    })
    .await
    .unwrap();
}

/// Three servers answering in 10 ms and one in 100 ms: the slow one gets less than a third of
/// what the least used fast one gets (by the pending counts alone it would get about a
/// tenth; the delays are long enough that a loaded machine's scheduling delays, which add to
/// both, do not bring them close: with 2 ms and 20 ms the ratio came to 0.46 under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_server_gets_fewer_calls() {
    let _alone = alone().await;
    timeout(LIMIT, async {
        let ms = Duration::from_millis;
        let p = pool(&[ms(10), ms(10), ms(10), ms(100)]).await;
        let mut cfg = BalancedConfig::new(p.addrs.clone());
        cfg.resolve_interval = Duration::ZERO;
        let c = BalancedClient::new(cfg).unwrap();
        run_calls(&c, 32, 3000).await;
        let h = hits(&p);
        let fast_min = *h[..3].iter().min().unwrap();
        assert!(h[3] * 3 < fast_min, "slow server got too many: {h:?}");
        assert!(h[3] > 0, "{h:?}");
    })
    .await
    .unwrap();
}

/// One server killed under load: only the calls it held fail (with Connection), new calls
/// go to the others without a single error, and once it listens again on the same port it
/// gets calls again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_fails_only_its_calls_and_comes_back() {
    let _alone = alone().await;
    timeout(LIMIT, async {
        let mut p = pool(&[Duration::ZERO; 4]).await;
        let mut cfg = BalancedConfig::new(p.addrs.clone());
        cfg.resolve_interval = Duration::ZERO;
        cfg.client.reconnect_backoff_min = Duration::from_millis(10);
        cfg.client.reconnect_backoff_max = Duration::from_millis(100);
        let c = BalancedClient::new(cfg).unwrap();

        const CALLERS: usize = 32;
        let (ok_tx, mut ok_rx) = watch::channel(0u64);
        let ok_tx = Arc::new(ok_tx);
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..CALLERS {
            let (c, ok_tx, errors, stop) = (c.clone(), ok_tx.clone(), errors.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut resp = Vec::new();
                while !stop.load(Relaxed) {
                    match c.call_into(b"f", b"x", &mut resp).await {
                        Ok(()) => {
                            ok_tx.send_modify(|n| *n += 1);
                        }
                        Err(e) => errors.lock().unwrap().push(e),
                    }
                }
            }));
        }
        ok_rx.wait_for(|n| *n >= 500).await.unwrap();

        // Server 0 holds the calls it gets from now on; kill it while it holds some.
        let (park_tx, mut park_rx) = watch::channel(0usize);
        *p.parks[0].count.lock().unwrap() = Some(park_tx);
        p.parks[0].armed.store(true, Relaxed);
        park_rx.wait_for(|n| *n >= 3).await.unwrap();
        assert!(errors.lock().unwrap().is_empty());
        let _ = p.servers[0].stop(Duration::ZERO).await;
        let held = p.parks[0].calls.lock().unwrap().len();

        // New calls shift: 2000 more succeed.
        let now = *ok_rx.borrow();
        ok_rx.wait_for(|n| *n >= now + 2000).await.unwrap();
        {
            let errs = errors.lock().unwrap();
            assert!(
                errs.len() >= held && errs.len() <= CALLERS,
                "{} errors, {held} calls held",
                errs.len()
            );
            for e in errs.iter() {
                assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
            }
        }
        let st = c.stats();
        assert!(st.servers[0].stats.errors.connect >= 1, "{st:?}");
        assert!(st.connect_retries >= 1);
        let n_errors = errors.lock().unwrap().len();

        // Restart on the same port: it takes calls again.
        let back = Arc::new(AtomicU64::new(0));
        let (first_tx, mut first_rx) = watch::channel(0u64);
        let first_tx = Arc::new(first_tx);
        let b2 = back.clone();
        let restarted = Server::bind(&p.addrs[0], ServerConfig::default(), move |call: Call| {
            b2.fetch_add(1, Relaxed);
            first_tx.send_modify(|n| *n += 1);
            let _ = call.reply(b"ok");
        })
        .await
        .unwrap();
        first_rx.wait_for(|n| *n >= 100).await.unwrap();
        stop.store(true, Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            errors.lock().unwrap().len(),
            n_errors,
            "errors after the kill"
        );
        assert_eq!(c.stats().servers[0].state, BackendState::Up);
        p.parks[0].calls.lock().unwrap().clear();
        restarted.stop(Duration::from_secs(1)).await.unwrap();
        p.servers.clear();
    })
    .await
    .unwrap();
}

/// An injected resolver: a server added to its set is used after the next re-resolution,
/// and one removed gets no more calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_adds_and_removes_servers() {
    let _alone = alone().await;
    timeout(LIMIT, async {
        let p = pool(&[Duration::ZERO; 2]).await;
        let set: Arc<Mutex<Vec<Endpoint>>> =
            Arc::new(Mutex::new(vec![Endpoint::from(p.addrs[0].as_str())]));
        let s2 = set.clone();
        let mut cfg = BalancedConfig::with_resolver(move || Ok(s2.lock().unwrap().clone()));
        cfg.resolve_interval = Duration::from_millis(20);
        let c = BalancedClient::new(cfg).unwrap();
        run_calls(&c, 1, 50).await;
        assert_eq!(hits(&p), [50, 0]);

        // Two resolutions after the change: the second surely started after it.
        let mut rx = c.resolutions();
        set.lock()
            .unwrap()
            .push(Endpoint::from(p.addrs[1].as_str()));
        let g = *rx.borrow_and_update();
        rx.wait_for(|n| *n >= g + 2).await.unwrap();
        assert_eq!(c.servers(), p.addrs);
        run_calls(&c, 1, 200).await;
        let h = hits(&p);
        assert!(h[1] >= 50 && h[0] >= 100, "{h:?}");

        set.lock().unwrap().remove(0);
        let g = *rx.borrow_and_update();
        rx.wait_for(|n| *n >= g + 2).await.unwrap();
        assert_eq!(c.servers(), [p.addrs[1].clone()]);
        let before = hits(&p);
        run_calls(&c, 4, 100).await;
        let after = hits(&p);
        assert_eq!(after[0], before[0]);
        assert_eq!(after[1], before[1] + 100);

        // Closed: no more resolutions.
        c.close(CloseMode::Cancel).await;
        assert_eq!(c.resolve_now().await.unwrap_err().kind(), ErrorKind::Closed);
        assert_eq!(
            c.call(b"f", b"x").await.unwrap_err().kind(),
            ErrorKind::Closed
        );
    })
    .await
    .unwrap();
}

/// Every server down: the first call tries each once and fails with Connect naming them
/// all; the next fails at once, without another connect attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_down_fails_at_once_naming_them() {
    let _alone = alone().await;
    timeout(LIMIT, async {
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            addrs.push(l.local_addr().unwrap().to_string());
        } // both closed: connections are refused
        let mut cfg = BalancedConfig::new(addrs.clone());
        cfg.resolve_interval = Duration::ZERO;
        cfg.client.reconnect_backoff_min = Duration::from_secs(5);
        cfg.client.reconnect_backoff_max = Duration::from_secs(10);
        let c = BalancedClient::new(cfg).unwrap();
        let e = c.call(b"f", b"x").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect);
        for a in &addrs {
            assert!(e.message().contains(a.as_str()), "{e}");
        }
        assert!(e.message().starts_with("all 2 servers are down"), "{e}");
        let st = c.stats();
        assert_eq!(st.total.connect_failures, 2);
        assert!(st.servers.iter().all(|s| s.state == BackendState::Down));

        let t = Instant::now();
        let e2 = c.call(b"f", b"x").await.unwrap_err();
        assert_eq!(e2.kind(), ErrorKind::Connect);
        assert_eq!(e2.message(), e.message());
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(c.stats().total.connect_failures, 2);
        assert_eq!(c.send(b"f", b"x").unwrap_err().kind(), ErrorKind::Connect);
    })
    .await
    .unwrap();
}

/// Configuration errors are refused when the client is made.
#[test]
fn bad_configs() {
    let mut cfg = BalancedConfig::new(["127.0.0.1:1"]);
    cfg.connections_per_server = 0;
    assert_eq!(
        BalancedClient::new(cfg).err().unwrap().kind(),
        ErrorKind::InvalidArgument
    );
    let cfg = BalancedConfig::new(Vec::<String>::new());
    assert_eq!(
        BalancedClient::new(cfg).err().unwrap().kind(),
        ErrorKind::InvalidArgument
    );
}

/// Completion sink for `submit`: sends each outcome (tag, kind or None) on a channel.
struct Sink(tokio::sync::mpsc::UnboundedSender<(u128, Result<Vec<u8>, fastrpc::Error>)>);

impl fastrpc::Completion for Sink {
    fn complete(&self, tag: u128, result: Result<&[u8], &fastrpc::Error>) {
        let _ = self
            .0
            .send((tag, result.map(|v| v.to_vec()).map_err(|e| e.clone())));
    }
}

/// Submitted calls whose connect fails (accepted first, then the connect fails) go to the
/// other server: with one of two servers dead, every call succeeds; with both dead the sink
/// gets the Connect error naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_retries_connect_failures_elsewhere() {
    let _alone = alone().await;
    timeout(LIMIT, async {
        let p = pool(&[Duration::ZERO]).await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let mut cfg = BalancedConfig::new([dead.clone(), p.addrs[0].clone()]);
        cfg.resolve_interval = Duration::ZERO;
        cfg.client.reconnect_backoff_min = Duration::from_secs(5);
        cfg.client.reconnect_backoff_max = Duration::from_secs(10);
        let c = BalancedClient::new(cfg).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = Arc::new(Sink(tx));
        for tag in 0..100u128 {
            c.submit(b"f", b"x", Duration::from_secs(10), sink.clone(), tag)
                .unwrap();
        }
        let mut seen = [false; 100];
        for _ in 0..100 {
            let (tag, r) = rx.recv().await.unwrap();
            assert_eq!(r.unwrap(), b"ok");
            assert!(!std::mem::replace(&mut seen[tag as usize], true));
        }
        assert_eq!(p.hits[0].load(Relaxed), 100);
        let st = c.stats();
        assert_eq!(st.servers[0].state, BackendState::Down);
        assert_eq!(st.total.connect_failures, 1);

        // Both dead: the last try's error names both.
        p.servers[0].stop(Duration::from_secs(1)).await.unwrap();
        let e = loop {
            c.submit(b"f", b"x", Duration::from_secs(10), sink.clone(), 7)
                .unwrap_or_else(|e| panic!("refused at once: {e}"));
            let (tag, r) = rx.recv().await.unwrap();
            assert_eq!(tag, 7);
            match r {
                // The connection to the stopped server breaks first (at most once).
                Err(e) if e.kind() == ErrorKind::Connection => continue,
                r => break r.unwrap_err(),
            }
        };
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
        assert!(
            e.message().contains(&dead) && e.message().contains(&p.addrs[0]),
            "{e}"
        );
        // Now refused at once, naming both.
        let e = c
            .submit(b"f", b"x", Duration::from_secs(10), sink.clone(), 8)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect);
        assert!(e.message().contains(&dead), "{e}");
    })
    .await
    .unwrap();
}

/// `submit_with_id` and `cancel`: with one dead server and one that parks every call, calls
/// that reached the live server (some after a failed connect moved them there: the id
/// follows them) and calls cancelled right after their submit each complete exactly once
/// with Cancelled, free their slot at once, and a second cancel does nothing; the late
/// answers are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_follows_calls_moved_by_a_failed_connect() {
    let _alone = alone().await;
    timeout(LIMIT, async {
        let p = pool(&[Duration::ZERO]).await;
        let (count_tx, mut count_rx) = watch::channel(0usize);
        *p.parks[0].count.lock().unwrap() = Some(count_tx);
        p.parks[0].armed.store(true, Relaxed);
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let mut cfg = BalancedConfig::new([dead, p.addrs[0].clone()]);
        cfg.resolve_interval = Duration::ZERO;
        cfg.client.reconnect_backoff_min = Duration::from_secs(5);
        cfg.client.reconnect_backoff_max = Duration::from_secs(10);
        let c = BalancedClient::new(cfg).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = Arc::new(Sink(tx));

        // Held by the server, then cancelled.
        let ids: Vec<_> = (0..100u128)
            .map(|tag| {
                c.submit_with_id(b"f", b"x", Duration::from_secs(20), sink.clone(), tag)
                    .unwrap()
            })
            .collect();
        count_rx.wait_for(|n| *n == 100).await.unwrap();
        assert_eq!(c.pending_requests(), 100);
        // The dead server's connect is tried by the first call it gets (at the latest the
        // second: it has fewer calls in flight), which then moves to the live one.
        assert!(c.stats().connect_retries >= 1);
        for id in &ids {
            assert!(c.cancel(*id));
            assert!(!c.cancel(*id), "a second cancel must do nothing");
        }
        assert_eq!(c.pending_requests(), 0);
        let mut seen = [false; 200];
        for _ in 0..100 {
            let (tag, r) = rx.recv().await.unwrap();
            assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
            assert!(!std::mem::replace(&mut seen[tag as usize], true));
        }

        // Cancelled at once after the submit (queued, or just written).
        for tag in 100..200u128 {
            let id = c
                .submit_with_id(b"f", b"x", Duration::from_secs(20), sink.clone(), tag)
                .unwrap();
            assert!(c.cancel(id));
        }
        for _ in 100..200 {
            let (tag, r) = rx.recv().await.unwrap();
            assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
            assert!(!std::mem::replace(&mut seen[tag as usize], true));
        }
        assert_eq!(c.pending_requests(), 0);

        // The server answers what it holds, and from now on answers at once what still
        // arrives (a call alone in flight writes its request at once, so some of those
        // cancelled right after their submit were written and may still be on the way):
        // every answer is dropped, nothing more reaches the sink.
        p.parks[0].armed.store(false, Relaxed);
        let held: Vec<Call> = std::mem::take(&mut *p.parks[0].calls.lock().unwrap());
        for call in held {
            let _ = call.reply(b"late");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let settled = || {
            let (st, got) = (c.stats().total, p.servers[0].stats().requests);
            st.io.frames_sent == got && st.unexpected_responses == got
        };
        while !settled() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let got = p.servers[0].stats().requests;
        assert!(got >= 100, "the 100 held calls reached the server: {got}");
        assert_eq!(c.stats().total.unexpected_responses, got);
        assert!(rx.try_recv().is_err());
        assert!(!c.cancel(fastrpc::balance::BalancedCallId::from_u64(0)));
    })
    .await
    .unwrap();
}
