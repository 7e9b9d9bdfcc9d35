//! A first throughput figure: calls/s with C concurrent callers on one connection over
//! loopback, server and client in this one process (the `fastrpc bench` tool of the CLI
//! measures across processes).
//!
//! cargo run --release --example throughput -- [callers=256] [seconds=5] [none|flate|snappy]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastrpc::{Call, Client, ClientConfig, Compression, Server, ServerConfig};

fn reply_255(call: Call) {
    static REPLY: [u8; 255] = [b'x'; 255];
    let _ = call.reply(&REPLY);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), fastrpc::Error> {
    let args: Vec<String> = std::env::args().collect();
    let callers: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let compression: Compression = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(Compression::None);

    let mut scfg = ServerConfig::default();
    scfg.compress_type = compression;
    let server = Server::bind("127.0.0.1:0", scfg, reply_255).await?;
    let mut ccfg = ClientConfig::new(server.local_addr());
    ccfg.compress_type = compression;
    ccfg.max_pending_requests = callers.max(1000);
    let client = Client::new(ccfg)?;

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (client, stop, done) = (client.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut resp = Vec::new();
            let mut n = 0;
            while !stop.load(Relaxed) {
                client.call_into(b"foo", b"foobar", &mut resp).await?;
                n += 1;
            }
            done.fetch_add(n, Relaxed);
            Ok::<_, fastrpc::Error>(())
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Relaxed);
    for t in tasks {
        t.await.expect("caller task")?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let calls = done.load(Relaxed);
    let s = client.stats();
    println!(
        "{compression}: {callers} callers, {calls} calls in {elapsed:.2} s = {:.0} calls/s; \
         {:.1} frames per flush (client), {:.1} wire bytes/call out",
        calls as f64 / elapsed,
        s.io.frames_per_flush(),
        s.io.bytes_sent_wire as f64 / calls as f64,
    );
    server.stop(Duration::from_secs(5)).await?;
    Ok(())
}
