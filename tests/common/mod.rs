//! Helpers shared by the integration tests (include with `mod common;`).
#![allow(dead_code)]

pub mod calls;
pub mod certs;
pub mod live_heap;

/// This process's resident memory in KiB (VmRSS), after giving free heap memory back to the
/// system so that it measures what is in use.
pub fn rss_kb() -> u64 {
    // SAFETY: malloc_trim only releases free memory back to the system.
    unsafe { libc::malloc_trim(0) };
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Runs a test body with a bound of 60 s.
pub async fn bounded(f: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(std::time::Duration::from_secs(60), f)
        .await
        .expect("the test did not finish within 60 s");
}

/// Polls `cond` every 2 ms for up to 20 s.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// A server on 127.0.0.1 whose handler hands every call to the test (which answers or holds
/// it), in arrival order.
pub async fn holding_server() -> (fastrpc::Server, std::sync::mpsc::Receiver<fastrpc::Call>) {
    let (tx, rx) = std::sync::mpsc::channel::<fastrpc::Call>();
    let tx = std::sync::Mutex::new(tx);
    let server = fastrpc::Server::bind(
        "127.0.0.1:0",
        fastrpc::ServerConfig::default(),
        move |call: fastrpc::Call| {
            let _ = tx.lock().unwrap().send(call);
        },
    )
    .await
    .unwrap();
    (server, rx)
}
