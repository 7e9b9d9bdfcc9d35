//! Zero heap allocations per call in steady state, client and server together: a counting
//! global allocator watches 10,000+ calls after warm-up, for none and snappy compression,
//! with one caller and with many concurrent callers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use fastrpc::{Call, Client, ClientConfig, Compression, Server, ServerConfig};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(std::sync::atomic::Ordering::Relaxed) {
            ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            BYTES.fetch_add(l.size() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(std::sync::atomic::Ordering::Relaxed) {
            ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            BYTES.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// The tests share the global counter: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn echo_no_alloc(call: Call) {
    // Call::value borrows the call; reply consumes it. Copy into a thread-local buffer
    // that keeps its capacity.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        b.extend_from_slice(call.value());
        let _ = call.reply(&b);
    });
}

async fn measure(compression: Compression, callers: usize, calls_each: usize) -> (u64, u64) {
    let mut scfg = ServerConfig::default();
    scfg.compress_type = compression;
    let server = Server::bind("127.0.0.1:0", scfg, echo_no_alloc)
        .await
        .unwrap();
    let mut ccfg = ClientConfig::new(server.local_addr());
    ccfg.compress_type = compression;
    let client = Client::new(ccfg).unwrap();
    let go = Arc::new(tokio::sync::Notify::new());
    let warm = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..callers {
        let (client, go, warm) = (client.clone(), go.clone(), warm.clone());
        tasks.push(tokio::spawn(async move {
            let mut resp = Vec::with_capacity(64);
            let value = format!("foobar-{t:04}").into_bytes();
            // Warm-up: buffers, table cells and pools reach their working size.
            for _ in 0..2000 {
                client.call_into(b"foo", &value, &mut resp).await.unwrap();
                assert_eq!(resp, value);
            }
            let notified = go.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            warm.fetch_add(1, SeqCst);
            notified.await;
            for _ in 0..calls_each {
                client.call_into(b"foo", &value, &mut resp).await.unwrap();
                assert_eq!(resp, value);
            }
        }));
    }
    while warm.load(SeqCst) < callers as u64 {
        tokio::task::yield_now().await;
    }
    ALLOCS.store(0, SeqCst);
    BYTES.store(0, SeqCst);
    COUNTING.store(true, SeqCst);
    go.notify_waiters();
    for t in tasks {
        t.await.unwrap();
    }
    let r = (ALLOCS.load(SeqCst), BYTES.load(SeqCst));
    // The counter itself works: one allocation made now is seen.
    let probe = std::hint::black_box(Box::new([0u8; 24]));
    assert_eq!(
        ALLOCS.load(SeqCst),
        r.0 + 1,
        "the counting allocator missed an allocation"
    );
    drop(probe);
    COUNTING.store(false, SeqCst);
    server.stop(Duration::from_secs(5)).await.unwrap();
    r
}

async fn check(compression: Compression, callers: usize) {
    let calls_each = 10_000 / callers + 1;
    let (allocs, bytes) = measure(compression, callers, calls_each).await;
    let calls = (calls_each * callers) as u64;
    println!(
        "{compression} x{callers}: {allocs} allocations ({bytes} bytes) over {calls} calls \
         ({:.4} per call)",
        allocs as f64 / calls as f64
    );
    assert_eq!(
        allocs, 0,
        "{compression} with {callers} callers: {allocs} allocations ({bytes} bytes) in {calls} calls"
    );
}

fn run(compression: Compression, callers: usize) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), check(compression, callers))
            .await
            .unwrap()
    });
}

#[test]
fn no_allocation_per_call_none_one_caller() {
    run(Compression::None, 1);
}

#[test]
fn no_allocation_per_call_snappy_one_caller() {
    run(Compression::Snappy, 1);
}

#[test]
fn no_allocation_per_call_none_many_callers() {
    run(Compression::None, 64);
}

#[test]
fn no_allocation_per_call_snappy_many_callers() {
    run(Compression::Snappy, 64);
}

#[test]
fn no_allocation_per_call_flate_many_callers() {
    run(Compression::Flate, 64);
}
