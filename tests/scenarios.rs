//! The reference's own test scenarios (valyala/fastrpc client and server tests), end to end:
//! no server, timeouts while queued and in flight, the concurrency-limit reply,
//! fire-and-forget mixed with calls, echo with one and many callers, every compression pair,
//! and batch delays on either side.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastrpc::{Call, Client, ClientConfig, Compression, ErrorKind, Server, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const COMPRESSIONS: [Compression; 3] = [Compression::None, Compression::Flate, Compression::Snappy];

async fn bounded(f: impl Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the test did not finish within 30 s");
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

/// Replies with name, ':', value.
fn echo(call: Call) {
    let mut v = Vec::with_capacity(call.name().len() + 1 + call.value().len());
    v.extend_from_slice(call.name());
    v.push(b':');
    v.extend_from_slice(call.value());
    let _ = call.reply(&v);
}

fn echoed(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = name.to_vec();
    v.push(b':');
    v.extend_from_slice(value);
    v
}

fn holder() -> (
    impl Fn(Call) + Send + Sync + 'static,
    mpsc::UnboundedReceiver<Call>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        move |call: Call| {
            let _ = tx.send(call);
        },
        rx,
    )
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

async fn serve(cfg: ServerConfig, h: impl fastrpc::Handler) -> Server {
    Server::bind("127.0.0.1:0", cfg, h).await.unwrap()
}

/// A value of `n` bytes, part random and part repetitive.
fn value(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|i| {
            if (i / 512) % 2 == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            } else {
                b"fastrpc "[i % 8]
            }
        })
        .collect()
}

/// Caller `i`'s value size: a spread from empty to exactly 256 KiB.
fn size_for(i: usize) -> usize {
    match i % 40 {
        0 => 256 * 1024,
        1 => 128 * 1024 + i,
        2 | 22 => (i * 1297) % (256 * 1024),
        4 => 0,
        _ => i * 13,
    }
}

/// Runs `callers` concurrent callers, each making `calls` echo calls; checks every answer.
async fn echo_callers(cl: &Client, callers: usize, calls: usize, size: fn(usize) -> usize) {
    let mut tasks = Vec::with_capacity(callers);
    for i in 0..callers {
        let c = cl.clone();
        tasks.push(tokio::spawn(async move {
            let mut resp = Vec::new();
            for j in 0..calls {
                let name = format!("caller-{i}-{j}");
                let v = value(size(i), (i * 1000 + j) as u64);
                c.call_into(name.as_bytes(), &v, &mut resp).await.unwrap();
                assert!(
                    resp == echoed(name.as_bytes(), &v),
                    "caller {i} call {j}: wrong response of {} bytes",
                    resp.len()
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_calls_fail_fast_with_the_dial_error() {
    bounded(async {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let cl = Client::new(client_cfg(&addr, |c| {
            c.request_timeout = Duration::from_secs(20)
        }))
        .unwrap();
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let c = cl.clone();
            tasks.push(tokio::spawn(async move { c.call(b"n", b"v").await }));
        }
        for task in tasks {
            let e = task.await.unwrap().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
            assert!(
                e.message().contains(&format!("cannot connect to {addr}")),
                "{e}"
            );
        }
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let st = cl.stats();
        assert_eq!(st.errors.connect, 50);
        assert_eq!(st.connects, 0);
        assert!(st.connect_failures >= 1);
        assert_eq!(cl.pending_requests(), 0);
        // Fire-and-forget is refused the same way while the client backs off.
        let e = cl.send(b"n", b"").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_calls_time_out() {
    bounded(async {
        // Something accepts connections but never answers the handshake.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let cl = Client::new(client_cfg(&addr, |c| {
            c.request_timeout = Duration::from_millis(300)
        }))
        .unwrap();
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let c = cl.clone();
            tasks.push(tokio::spawn(async move { c.call(b"n", b"v").await }));
        }
        for task in tasks {
            let e = task.await.unwrap().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        }
        let el = t.elapsed();
        assert!(el >= Duration::from_millis(300), "{el:?}");
        assert!(el < Duration::from_secs(2), "{el:?}");
        assert_eq!(cl.stats().errors.timeout, 100);
        assert_eq!(cl.pending_requests(), 0);
        silent.abort();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_in_flight_then_late_responses_are_dropped() {
    bounded(async {
        let (h, mut rx) = holder();
        let server = serve(ServerConfig::default(), h).await;
        let cl = Client::new(client_cfg(&server.local_addr(), |c| {
            c.request_timeout = Duration::from_millis(300)
        }))
        .unwrap();
        let t = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..100u32 {
            let c = cl.clone();
            tasks.push(tokio::spawn(
                async move { c.call(b"n", &i.to_le_bytes()).await },
            ));
        }
        let mut held = Vec::new();
        for _ in 0..100 {
            held.push(rx.recv().await.unwrap());
        }
        for task in tasks {
            let e = task.await.unwrap().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        }
        let el = t.elapsed();
        assert!(el >= Duration::from_millis(300), "{el:?}");
        assert!(el < Duration::from_secs(3), "{el:?}");
        assert_eq!(cl.pending_requests(), 0);
        for c in held {
            c.reply(b"too late").unwrap();
        }
        wait_until("every late response was dropped", || {
            cl.stats().unexpected_responses == 100
        })
        .await;
        // The connection is still good.
        let c = cl.clone();
        let task = tokio::spawn(async move { c.call(b"n", b"now").await });
        rx.recv().await.unwrap().reply(b"fresh").unwrap();
        assert_eq!(task.await.unwrap().unwrap(), b"fresh");
        let st = cl.stats();
        assert_eq!(st.errors.timeout, 100);
        assert_eq!(st.connects, 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_reply_under_load() {
    bounded(async {
        let (h, mut rx) = holder();
        let server = serve(
            server_cfg(|c| {
                c.concurrency = 5;
                c.concurrency_limit_reply = b"server is too busy".to_vec();
            }),
            h,
        )
        .await;
        let cl = Client::new(ClientConfig::new(server.local_addr())).unwrap();
        let (tx, mut results) = mpsc::unbounded_channel();
        for i in 0..20u32 {
            let (c, tx) = (cl.clone(), tx.clone());
            tokio::spawn(async move {
                let _ = tx.send(c.call(b"n", &i.to_le_bytes()).await.unwrap());
            });
        }
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(rx.recv().await.unwrap());
        }
        for _ in 0..15 {
            assert_eq!(results.recv().await.unwrap(), b"server is too busy");
        }
        assert_eq!(server.stats().running, 5);
        for c in held {
            c.reply(b"handled").unwrap();
        }
        for _ in 0..5 {
            assert_eq!(results.recv().await.unwrap(), b"handled");
        }
        let st = server.stats();
        assert_eq!(st.concurrency_limit_replies, 15);
        assert_eq!(st.requests, 20);
        assert_eq!(st.running, 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_and_forget_mixed_with_calls() {
    bounded(async {
        let nowait = Arc::new(AtomicU64::new(0));
        let n = nowait.clone();
        let server = serve(ServerConfig::default(), move |call: Call| {
            if call.is_nowait() {
                assert_eq!(call.request_id(), 0);
                assert_eq!(call.name(), b"send");
                n.fetch_add(1, SeqCst);
            } else {
                assert_ne!(call.request_id(), 0);
                echo(call);
            }
        })
        .await;
        let cl = Client::new(ClientConfig::new(server.local_addr())).unwrap();
        let mut tasks = Vec::new();
        for t in 0..10u32 {
            let c = cl.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100u32 {
                    let v = (t * 1000 + i).to_le_bytes();
                    c.send(b"send", &v).unwrap();
                    assert_eq!(c.call(b"call", &v).await.unwrap(), echoed(b"call", &v));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        wait_until("the handler saw all 1000 sends", || {
            nowait.load(SeqCst) == 1000
        })
        .await;
        let st = cl.stats();
        assert_eq!((st.sends, st.calls, st.responses), (1000, 1000, 1000));
        assert_eq!(st.errors.total(), 0);
        let ss = server.stats();
        assert_eq!(
            (ss.nowait_requests, ss.requests, ss.responses),
            (1000, 1000, 1000)
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_one_caller() {
    bounded(async {
        let server = serve(ServerConfig::default(), echo).await;
        let cl = Client::new(ClientConfig::new(server.local_addr())).unwrap();
        echo_callers(&cl, 1, 500, |_| 100).await;
        let mut resp = Vec::new();
        for i in 0..500usize {
            let v = value(i * 7, i as u64);
            cl.call_into(b"seq", &v, &mut resp).await.unwrap();
            assert_eq!(resp, echoed(b"seq", &v));
        }
        let st = cl.stats();
        assert_eq!((st.calls, st.responses, st.connects), (1000, 1000, 1));
        assert_eq!(server.stats().requests, 1000);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_500_concurrent_callers() {
    bounded(async {
        let server = serve(ServerConfig::default(), echo).await;
        let cl = Client::new(ClientConfig::new(server.local_addr())).unwrap();
        echo_callers(&cl, 500, 10, |i| i % 300).await;
        let st = cl.stats();
        assert_eq!((st.calls, st.responses, st.connects), (5000, 5000, 1));
        assert_eq!(st.errors.total(), 0);
        assert_eq!(cl.pending_requests(), 0);
        // 500 callers share few flushes.
        assert!(st.io.frames_per_flush() > 1.0, "{:?}", st.io);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_pair_with_200_callers_and_varied_sizes() {
    bounded(async {
        for cc in COMPRESSIONS {
            for sc in COMPRESSIONS {
                let server = serve(server_cfg(|c| c.compress_type = sc), echo).await;
                let cl = Client::new(client_cfg(&server.local_addr(), |c| c.compress_type = cc))
                    .unwrap();
                echo_callers(&cl, 200, 1, size_for).await;
                let st = cl.stats();
                assert_eq!(st.responses, 200, "client {cc}, server {sc}");
                assert_eq!(st.errors.total(), 0, "client {cc}, server {sc}");
                let ss = server.stats();
                // Each side compresses what it sends with its own choice.
                if cc == Compression::None {
                    assert_eq!(ss.io.bytes_received_wire, ss.io.bytes_received_plain);
                } else {
                    assert!(
                        ss.io.bytes_received_wire < ss.io.bytes_received_plain,
                        "client {cc}: {:?}",
                        ss.io
                    );
                }
                if sc == Compression::None {
                    assert_eq!(st.io.bytes_received_wire, st.io.bytes_received_plain);
                } else {
                    assert!(
                        st.io.bytes_received_wire < st.io.bytes_received_plain,
                        "server {sc}: {:?}",
                        st.io
                    );
                }
                server.stop(Duration::from_secs(5)).await.unwrap();
            }
        }
    })
    .await
}

async fn batch_delay_case(client_delay: Duration, server_delay: Duration) {
    let server = serve(server_cfg(|c| c.max_batch_delay = server_delay), echo).await;
    let cl = Client::new(client_cfg(&server.local_addr(), |c| {
        c.max_batch_delay = client_delay
    }))
    .unwrap();
    // Connect first, so the batches below are formed by the delay, not by the connect.
    assert_eq!(cl.call(b"warm", b"").await.unwrap(), b"warm:");
    let (c0, s0) = (cl.stats().io, server.stats().io);
    echo_callers(&cl, 200, 1, |i| i * 5).await;
    // Send counters move once a write has returned, possibly after the peer got the bytes.
    wait_until("both sides counted 200 frames sent", || {
        cl.stats().io.frames_sent - c0.frames_sent == 200
            && server.stats().io.frames_sent - s0.frames_sent == 200
    })
    .await;
    let (c1, s1) = (cl.stats().io, server.stats().io);
    let per_flush = |frames: u64, flushes: u64| frames as f64 / flushes as f64;
    if !client_delay.is_zero() {
        let r = per_flush(c1.frames_sent - c0.frames_sent, c1.flushes - c0.flushes);
        assert!(r > 1.0, "client frames per flush {r}");
    }
    if !server_delay.is_zero() {
        let r = per_flush(s1.frames_sent - s0.frames_sent, s1.flushes - s0.flushes);
        assert!(r > 1.0, "server frames per flush {r}");
    }
    assert_eq!(cl.stats().errors.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_delay_on_requests() {
    bounded(batch_delay_case(Duration::from_millis(20), Duration::ZERO)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_delay_on_responses() {
    bounded(batch_delay_case(Duration::ZERO, Duration::from_millis(20))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_delay_on_both_sides() {
    bounded(batch_delay_case(
        Duration::from_millis(20),
        Duration::from_millis(20),
    ))
    .await
}
