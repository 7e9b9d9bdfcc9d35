//! Memory per idle connection, measured on a server in its own process (this test binary
//! run again as a child): after each connection made a few calls and went quiet, the heap
//! bytes the server holds per connection must fall under the bound stated in
//! docs/RELIABILITY.md for each compression. Heap bytes are counted by this binary's global
//! allocator; resident memory (VmRSS) is reported too, but it depends on the allocator
//! (glibc keeps freed small blocks resident), so the bound is on what the library holds.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use fastrpc::{Client, ClientConfig, Compression, Server, ServerConfig};

mod common;

use common::live_heap::{live_bytes, LiveHeap};

#[global_allocator]
static GLOBAL: LiveHeap = LiveHeap;

/// Connections opened per compression.
const CONNS: usize = 200;

/// The stated bounds, KiB per idle connection on the server (docs/RELIABILITY.md).
fn bound_kib(c: Compression) -> u64 {
    match c {
        Compression::None => 24,
        Compression::Snappy => 24,
        Compression::Flate => 64,
    }
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The child: serves with the compression named in the environment, prints its address,
/// and ends when its stdin closes.
#[test]
fn idle_memory_server_child() {
    let Ok(c) = std::env::var("FASTRPC_IDLE_MEMORY_CHILD") else {
        return;
    };
    let c = match c.as_str() {
        "none" => Compression::None,
        "snappy" => Compression::Snappy,
        _ => Compression::Flate,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut cfg = ServerConfig::default();
        cfg.compress_type = c;
        let server = Server::bind("127.0.0.1:0", cfg, |call: fastrpc::Call| {
            let v = call.value().to_vec();
            let _ = call.reply(&v);
        })
        .await
        .unwrap();
        println!("addr {}", server.local_addr());
        std::io::stdout().flush().unwrap();
        // Each line on stdin asks for the heap bytes live now; end of input ends the child.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {
                println!("live {}", live_bytes());
                std::io::stdout().flush().unwrap();
                line.clear();
            }
        })
        .await
        .unwrap();
    });
}

/// Asks the child for its live heap bytes, in KiB.
fn live_kib(stdin: &mut ChildStdin, out: &mut impl BufRead) -> u64 {
    writeln!(stdin, "measure").unwrap();
    stdin.flush().unwrap();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended early"
        );
        if let Some(i) = line.find("live ") {
            return line[i + 5..].trim().parse::<u64>().unwrap() / 1024;
        }
    }
}

/// (heap KiB per idle connection, resident KiB per idle connection).
fn measure(c: Compression) -> (u64, u64) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "idle_memory_server_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FASTRPC_IDLE_MEMORY_CHILD", c.name())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended early"
        );
        // The harness may print `test idle_memory_server_child ... ` on the same line.
        if let Some(i) = line.find("addr ") {
            break line[i + 5..].trim().to_string();
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (heap, rss) = rt.block_on(async {
        // One warm-up connection, so the baseline includes what the first connection starts.
        let mk = || {
            let mut cfg = ClientConfig::new(&addr);
            cfg.compress_type = c;
            Client::new(cfg).unwrap()
        };
        let warm = mk();
        warm.call(b"warm", b"up").await.unwrap();
        let base_rss = rss_kib(pid);
        let base_heap = live_kib(&mut stdin, &mut out);
        // Values that exercise the compressors: 16 KiB of text-like bytes.
        let value: Vec<u8> = (0..16 * 1024).map(|i| b"fastrpc idle "[i % 13]).collect();
        let mut clients = Vec::new();
        for _ in 0..CONNS {
            let client = mk();
            for _ in 0..4 {
                assert_eq!(client.call(b"echo", &value).await.unwrap(), value);
            }
            clients.push(client);
        }
        // Idle now: wait (bounded) until the server has released what idle connections do
        // without, or the time is up.
        let bound = bound_kib(c);
        let start = Instant::now();
        let heap = loop {
            let per = live_kib(&mut stdin, &mut out).saturating_sub(base_heap) / CONNS as u64;
            if per <= bound || start.elapsed() > Duration::from_secs(10) {
                break per;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let rss = rss_kib(pid).saturating_sub(base_rss) / CONNS as u64;
        drop(clients);
        (heap, rss)
    });
    drop(stdin);
    let _ = child.wait();
    (heap, rss)
}

#[test]
fn idle_connection_memory_is_bounded() {
    let mut report = Vec::new();
    for c in [Compression::None, Compression::Snappy, Compression::Flate] {
        let (per, rss) = measure(c);
        eprintln!(
            "{c}: {per} KiB of heap per idle connection (bound {}), resident {rss} KiB",
            bound_kib(c)
        );
        report.push((c, per));
    }
    for (c, per) in report {
        assert!(
            per <= bound_kib(c),
            "{c}: {per} KiB per idle connection, over the bound of {} KiB",
            bound_kib(c)
        );
    }
}
