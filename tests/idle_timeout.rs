//! `ServerConfig::idle_timeout`: a connection with no request and no running handler for that
//! long is closed; a connection whose handler is still running is not idle, and its
//! response arrives; a client that calls again after the close reconnects.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastrpc::{Call, Client, ClientConfig, Server, ServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_quiet_connections_only() {
    let mut cfg = ServerConfig::default();
    cfg.idle_timeout = Duration::from_millis(200);
    let server = Server::bind("127.0.0.1:0", cfg, |call: Call| {
        // "slow" answers after 600 ms, three idle timeouts later.
        if call.name() == b"slow" {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(600)).await;
                let _ = call.reply(b"late");
            });
        } else {
            let _ = call.reply(b"ok");
        }
    })
    .await
    .unwrap();
    let client = Client::new(ClientConfig::new(server.local_addr())).unwrap();
    assert_eq!(client.call(b"slow", b"").await.unwrap(), b"late");
    assert_eq!(
        server.stats().connections_accepted,
        1,
        "not closed while busy"
    );
    // Quiet now: closed after the idle timeout.
    let start = Instant::now();
    while server.stats().connections_open > 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "never closed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(150), "closed after {took:?}");
    assert_eq!(server.stats().errors.timeout, 1);
    // The next call reconnects (its first attempt may meet the closing connection).
    let n = Arc::new(AtomicU64::new(0));
    loop {
        n.fetch_add(1, SeqCst);
        match client.call(b"x", b"").await {
            Ok(v) => {
                assert_eq!(v, b"ok");
                break;
            }
            Err(e) => assert!(n.load(SeqCst) < 3, "{e}"),
        }
    }
    assert_eq!(server.stats().connections_accepted, 2);
}
