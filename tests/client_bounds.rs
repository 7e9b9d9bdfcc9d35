//! What a client holds and how long it waits, against servers that stop reading: the bytes of
//! queued requests are bounded (`max_queued_bytes`), closing ends a connection whose write is
//! blocked, callers retrying immediate errors in a loop do not hold up other calls'
//! deadlines, and large responses do not pin memory after they are delivered. Heap bytes are
//! counted by this binary's global allocator.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fastrpc::{
    Call, Client, ClientConfig, CloseMode, Compression, ErrorKind, Server, ServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;

use common::live_heap::{live_bytes, LiveHeap};

#[global_allocator]
static GLOBAL: LiveHeap = LiveHeap;

const MIB: i64 = 1 << 20;

/// The tests measure the heap of the whole process: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A server that does the handshake (compression none) and then never reads.
async fn stalled_server() -> (String, tokio::task::JoinHandle<Vec<TcpStream>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut hdr = [0u8; 3];
        s.read_exact(&mut hdr).await.unwrap();
        s.write_all(&[0, 1, 0]).await.unwrap();
        vec![s]
    });
    (addr, task)
}

fn none_cfg(addr: &str) -> ClientConfig {
    let mut c = ClientConfig::new(addr);
    c.compress_type = Compression::None;
    c
}

/// 1000 callers of 64 KiB calls with 1 s deadlines against a server that stops reading:
/// every call ends (Timeout or Overflow), and the client's heap stays bounded (before the
/// bound it grew by about 60 MiB a second, 180 MiB in this test's 3 s). The bytes held are at
/// most max_queued_bytes queued plus the batch being written (at most as much); the buffers
/// holding them grow by doubling, so their capacity is at most twice that: 4 * 32 MiB, plus a
/// margin for the calls themselves. Typical peaks are 59-64 MiB; under a loaded machine
/// (the whole test suite running) one went past 80 MiB, the bound this test had before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_bytes_are_bounded_when_the_server_stops_reading() {
    let _g = SERIAL.lock().await;
    let (addr, server) = stalled_server().await;
    let base = live_bytes();
    let client = Client::new(none_cfg(&addr)).unwrap();
    let value = Arc::new(vec![7u8; 64 * 1024]);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let kinds = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (client, value, stop, peak, kinds) = (
            client.clone(),
            value.clone(),
            stop.clone(),
            peak.clone(),
            kinds.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut buf = Vec::new();
            while !stop.load(SeqCst) {
                let e = client
                    .call_deadline_into(
                        b"big",
                        &value,
                        Instant::now() + Duration::from_secs(1),
                        &mut buf,
                    )
                    .await
                    .unwrap_err();
                kinds.lock().unwrap().insert(format!("{:?}", e.kind()));
                peak.fetch_max(live_bytes() - base, SeqCst);
                if e.kind() == ErrorKind::Overflow {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, SeqCst);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("every caller ends")
            .unwrap();
    }
    let peak = peak.load(SeqCst);
    let bound = 4 * 32 * MIB + 16 * MIB;
    eprintln!(
        "client heap peak {} MiB (bound {} MiB)",
        peak / MIB,
        bound / MIB
    );
    assert!(peak <= bound, "heap grew by {} MiB", peak / MIB);
    let kinds = kinds.lock().unwrap().clone();
    assert!(kinds.contains("Overflow"), "{kinds:?}");
    assert!(
        kinds.iter().all(|k| k == "Overflow" || k == "Timeout"),
        "{kinds:?}"
    );
    client.close(CloseMode::Cancel).await;
    drop(client);
    drop(server);
}

/// close(Cancel) and dropping the client end a connection whose write is blocked: the
/// server sees the connection close, and the client's buffers are freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_ends_a_connection_whose_write_is_blocked() {
    let _g = SERIAL.lock().await;
    let (addr, server) = stalled_server().await;
    let base = live_bytes();
    let client = Client::new(none_cfg(&addr)).unwrap();
    let value = vec![1u8; 1 << 20];
    let c2 = client.clone();
    let call = tokio::spawn(async move {
        let mut calls = Vec::new();
        for _ in 0..24 {
            let c = c2.clone();
            let v = value.clone();
            calls.push(tokio::spawn(async move { c.call(b"big", &v).await }));
        }
        for c in calls {
            assert_eq!(c.await.unwrap().unwrap_err().kind(), ErrorKind::Closed);
        }
    });
    let mut streams = server.await.unwrap();
    let mut s = streams.pop().unwrap();
    // Wait until the client's write is blocked: 24 MiB cannot fit in the socket buffers.
    let start = Instant::now();
    while client.pending_requests() < 24 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.close(CloseMode::Cancel).await;
    drop(client);
    call.await.unwrap();
    // The server still reads nothing: the client must let go of the connection and its
    // 24 MiB of queued and blocked requests by itself.
    let start = Instant::now();
    while live_bytes() - base > 4 * MIB {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the client still holds {} MiB",
            (live_bytes() - base) / MIB
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And the connection is closed: the server reads what was sent, then the end.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the client kept the blocked connection open");
}

/// Callers retrying immediate errors (connect refused during backoff) in loops without a
/// pause do not hold the runtime's threads: another call's 200 ms deadline still ends it
/// in time (before, it ended after about 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_loops_do_not_delay_other_deadlines() {
    let _g = SERIAL.lock().await;
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    // After the first refused connect every call fails at once (a long backoff).
    let mut dcfg = none_cfg(&closed_port);
    dcfg.reconnect_backoff_min = Duration::from_secs(30);
    dcfg.reconnect_backoff_max = Duration::from_secs(30);
    let down = Client::new(dcfg).unwrap();
    assert_eq!(
        down.call(b"x", b"").await.unwrap_err().kind(),
        ErrorKind::Connect
    );
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (down, stop, errors) = (down.clone(), stop.clone(), errors.clone());
        loops.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(SeqCst) && n < 20_000_000 {
                let _ = down.call(b"x", b"").await;
                n += 1;
            }
            errors.fetch_add(n, SeqCst);
        }));
    }
    let (addr, server) = stalled_server().await;
    let client = Client::new(none_cfg(&addr)).unwrap();
    let t0 = Instant::now();
    let r = client
        .call_timeout(b"slow", b"", Duration::from_millis(200))
        .await;
    let took = t0.elapsed();
    stop.store(true, SeqCst);
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Timeout);
    assert!(errors.load(SeqCst) > 100, "the retry loops ran");
    assert!(
        took < Duration::from_millis(200 + 100),
        "a 200 ms deadline ended after {took:?}"
    );
    drop(server);
}

/// A burst of 256 callers of 1 MiB responses reusing their buffers (`call_into`): once the
/// callers are gone, the client does not keep their buffers (call cells keep at most 64 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_responses_do_not_pin_memory() {
    let _g = SERIAL.lock().await;
    let mut scfg = ServerConfig::default();
    scfg.compress_type = Compression::None;
    let server = Server::bind("127.0.0.1:0", scfg, |call: Call| {
        let n = if call.name() == b"small" { 10 } else { 1 << 20 };
        let _ = call.reply_with(|_, _, out| out.resize(out.len() + n, 9));
    })
    .await
    .unwrap();
    let base = live_bytes();
    let client = Client::new(none_cfg(&server.local_addr())).unwrap();
    let mut callers = Vec::new();
    for _ in 0..256 {
        let c = client.clone();
        callers.push(tokio::spawn(async move {
            let mut buf = Vec::new();
            for _ in 0..2 {
                c.call_into(b"big", b"", &mut buf).await.unwrap();
                assert_eq!(buf.len(), 1 << 20);
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
    // Small calls only from now on; the server gives back its buffers after a quiet second.
    assert_eq!(client.call(b"small", b"").await.unwrap().len(), 10);
    let start = Instant::now();
    loop {
        let held = live_bytes() - base;
        if held <= 24 * MIB {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} MiB still held after the burst",
            held / MIB
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
