//! The bad-input catalogue: each case feeds one kind of bad input to a live server or a live
//! client over real sockets (or bad arguments to the C ABI) and checks that
//!
//! 1. the failure is reported clearly: the exact `ErrorKind` (or C status), counted in the
//!    stats, with a message fragment that names the problem (client errors as returned,
//!    server errors through the log hook);
//! 2. the process lives on and the server still serves a normal client;
//! 3. afterwards, file descriptors (`/proc/self/fd`), live heap bytes (a counting global
//!    allocator) and VmRSS (after `malloc_trim`) are back to their baseline, within the
//!    tolerances of [`HEAP_TOLERANCE`] and [`RSS_TOLERANCE`].
//!
//! Cases run one at a time (a process-wide lock), each on a fresh runtime, so that the
//! descriptor and memory measurements belong to one case. docs/RELIABILITY.md has the table
//! case -> expected error -> test name.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::{c_char, c_void, CString};
use std::future::Future;
use std::io::Write as _;
use std::sync::atomic::{AtomicIsize, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flate2::{Compress, FlushCompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use fastrpc::{
    Call, Client, ClientConfig, Compression, ErrorCounts, ErrorKind, Server, ServerConfig,
    TlsClientConfig, TlsServerConfig,
};

// ---------------------------------------------------------------------------------------
// Measurement: a counting allocator, descriptors, RSS.

/// Counts live heap bytes and the largest single allocation since the last reset.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK_SINGLE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            LIVE.fetch_add(l.size() as isize, SeqCst);
            PEAK_SINGLE.fetch_max(l.size(), SeqCst);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            LIVE.fetch_add(l.size() as isize, SeqCst);
            PEAK_SINGLE.fetch_max(l.size(), SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size() as isize, SeqCst);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let q = System.realloc(p, l, n);
        if !q.is_null() {
            LIVE.fetch_add(n as isize - l.size() as isize, SeqCst);
            PEAK_SINGLE.fetch_max(n, SeqCst);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Live heap bytes may exceed the baseline by this much after a case. Every object a case
/// creates (servers, clients, connections, their pools and buffers) is freed when it ends;
/// what may legitimately remain is runtime bookkeeping that grows once and is reused (tokio's
/// per-worker task and timer structures, the log lines' strings between tests): well under
/// 256 KiB. A leaked connection (two 64 KiB buffers at least) or a leaked 1 MiB frame
/// buffer is over it.
const HEAP_TOLERANCE: isize = 256 * 1024;
/// VmRSS, measured after `malloc_trim(0)`, may exceed the baseline by this much. RSS also
/// counts what the allocator keeps mapped for reuse: after the cases that move 1 MiB frames
/// (up to 64 MiB of responses in one case) glibc's arenas can stay fragmented by a few tens
/// of MiB even after `malloc_trim` (seen: +17 MiB with the live heap unchanged to the KiB).
/// The live-heap check above is the precise one; this one catches memory outside the Rust
/// heap and gross growth (an unbounded buffer or leaked connections are far more).
const RSS_TOLERANCE_KB: u64 = 32 * 1024;

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[derive(Clone, Copy, Debug)]
struct Snapshot {
    fds: usize,
    heap: isize,
    rss_kb: u64,
}

fn snapshot() -> Snapshot {
    Snapshot {
        fds: fd_count(),
        heap: LIVE.load(SeqCst),
        rss_kb: common::rss_kb(),
    }
}

// ---------------------------------------------------------------------------------------
// Log capture (server-side errors are reported through the log hook).

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn logs() -> MutexGuard<'static, Vec<String>> {
    LOGS.lock().unwrap_or_else(|e| e.into_inner())
}

fn logged(fragment: &str) -> bool {
    logs().iter().any(|l| l.contains(fragment))
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        if t0.elapsed() > Duration::from_secs(10) {
            panic!("not within 10 s: {what}\nlog:\n  {}", logs().join("\n  "));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_logged(fragment: &str) {
    wait_until(&format!("a log line containing {fragment:?}"), || {
        logged(fragment)
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Running a case.

static SERIAL: Mutex<()> = Mutex::new(());

/// Process-wide things that are created once and kept (the library's own runtime used by the
/// C ABI, TLS provider state, the log hook): started before any baseline is taken.
fn warm_up() {
    // Not a `Once`: if the warm-up fails (and fails its test), the next case tries again
    // instead of every later case failing on a poisoned `Once`.
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    {
        fastrpc::log::set_hook(
            fastrpc::log::Level::Info,
            Some(Box::new(|_, m| logs().push(m.to_string()))),
        );
        raise_fd_limit();
        let _ = fastrpc::runtime::global();
        // One of everything the cases use, so lazily created statics exist before baselines.
        let rt = runtime();
        rt.block_on(async {
            let pki = common::certs::test_pki();
            let mut cfg = server_config();
            cfg.tls = Some(tls_server(&pki, false));
            let s = Server::bind("127.0.0.1:0", cfg, |c: Call| {
                let _ = c.reply(b"w");
            })
            .await
            .unwrap();
            let mut cc = client_config(&s.local_addr());
            cc.tls = Some(TlsClientConfig {
                ca_pem: Some(pki.ca_pem.as_bytes().to_vec()),
                ..Default::default()
            });
            let c = Client::new(cc).unwrap();
            c.call(b"w", b"w").await.unwrap();
            for comp in [Compression::Flate, Compression::Snappy] {
                let mut cc = client_config(&s.local_addr());
                cc.compress_type = comp;
                let c = Client::new(cc).unwrap();
                c.call(b"w", b"w").await.unwrap();
            }
        });
        // The C ABI's first call installs its panic hook (library panics to the log hook,
        // every other panic, such as this test's assertions, to the previous hook).
        ffi_warm_up();
        logs().clear();
    }
    *done = true;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs one catalogue case: serially, on a fresh runtime, bounded in time, then checks that
/// descriptors and memory came back to the baseline taken just before it.
fn case<F, Fut>(name: &str, body: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    warm_up();
    logs().clear();
    let rt = runtime();
    let base = rt.block_on(async {
        // Let the previous case's last closes land.
        tokio::time::sleep(Duration::from_millis(20)).await;
        snapshot()
    });
    PEAK_SINGLE.store(0, SeqCst);
    let t0 = Instant::now();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(90), body())
            .await
            .unwrap_or_else(|_| panic!("{name}: the case did not finish within 90 s"))
    });
    let took = t0.elapsed();
    // Back to the baseline: everything the case opened is closed, and freed.
    {
        let mut l = logs();
        l.clear();
        l.shrink_to_fit();
    }
    let after = rt.block_on(async {
        let t = Instant::now();
        loop {
            let s = Snapshot {
                fds: fd_count(),
                heap: LIVE.load(SeqCst),
                rss_kb: 0,
            };
            if (s.fds <= base.fds && s.heap <= base.heap + HEAP_TOLERANCE)
                || t.elapsed() > Duration::from_secs(10)
            {
                break Snapshot {
                    rss_kb: common::rss_kb(),
                    ..s
                };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    drop(rt);
    let line = format!(
        "{name}: {:.0} ms; fds {} -> {}; heap {} -> {} KiB; rss {} -> {} KiB",
        took.as_secs_f64() * 1000.0,
        base.fds,
        after.fds,
        base.heap / 1024,
        after.heap / 1024,
        base.rss_kb,
        after.rss_kb
    );
    let _ = writeln!(std::io::stderr(), "{line}");
    assert!(
        after.fds <= base.fds,
        "{name}: file descriptors not back to baseline: {line}"
    );
    assert!(
        after.heap <= base.heap + HEAP_TOLERANCE,
        "{name}: live heap not back to baseline (tolerance {} KiB): {line}",
        HEAP_TOLERANCE / 1024
    );
    assert!(
        after.rss_kb <= base.rss_kb + RSS_TOLERANCE_KB,
        "{name}: VmRSS not back to baseline (tolerance {RSS_TOLERANCE_KB} KiB): {line}"
    );
}

fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < 4096 {
            r.rlim_cur = r.rlim_max.min(4096);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    r.rlim_cur
}

// ---------------------------------------------------------------------------------------
// The server under test and raw peers.

const SNIFF: &[u8] = b"cat";
const VERSION: u8 = 7;
const LIMIT: usize = 1 << 20;
const ERROR_REPLY: &[u8] = b"ERR";

fn server_config() -> ServerConfig {
    let mut cfg = ServerConfig::default();
    cfg.sniff_header = SNIFF.to_vec();
    cfg.protocol_version = VERSION;
    cfg.compress_type = Compression::None;
    cfg.error_reply = ERROR_REPLY.to_vec();
    cfg.max_frame_size = LIMIT;
    cfg
}

fn client_config(addr: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new(addr);
    cfg.sniff_header = SNIFF.to_vec();
    cfg.protocol_version = VERSION;
    cfg.compress_type = Compression::None;
    cfg.max_frame_size = LIMIT;
    cfg.request_timeout = Duration::from_secs(10);
    cfg
}

fn tls_server(pki: &common::certs::TestPki, require: bool) -> TlsServerConfig {
    TlsServerConfig {
        cert_pem: pki.server_cert_pem.as_bytes().to_vec(),
        key_pem: pki.server_key_pem.as_bytes().to_vec(),
        require_tls: require,
        ..Default::default()
    }
}

/// The handler: `echo` answers the value, `big` answers as many bytes as its value says
/// (u32), `hold` never answers (the call is kept until the server goes), anything else
/// answers `"<name length>/<value length>"`.
struct Srv {
    server: Server,
    calls: Arc<AtomicUsize>,
    held: Arc<Mutex<Vec<Call>>>,
}

impl Srv {
    fn addr(&self) -> String {
        self.server.local_addr()
    }

    fn errors(&self) -> ErrorCounts {
        self.server.stats().errors
    }

    /// The server still serves a normal client, and holds no connection afterwards.
    async fn still_serves(&self) {
        let c = Client::new(client_config(&self.addr())).unwrap();
        assert_eq!(c.call(b"ping", b"pong").await.unwrap(), b"4/4");
        c.close(fastrpc::CloseMode::Drain(Duration::from_secs(1)))
            .await;
        drop(c);
        self.no_connections().await;
    }

    async fn no_connections(&self) {
        wait_until("the server has no connection open", || {
            self.server.stats().connections_open == 0
        })
        .await;
    }

    /// Stops the server (held calls are released first).
    async fn stop(self) {
        self.held.lock().unwrap().clear();
        self.server.stop(Duration::from_secs(2)).await.unwrap();
    }
}

async fn serve(cfg: ServerConfig) -> Srv {
    let calls = Arc::new(AtomicUsize::new(0));
    let held: Arc<Mutex<Vec<Call>>> = Arc::default();
    let (c2, h2) = (calls.clone(), held.clone());
    let server = Server::bind("127.0.0.1:0", cfg, move |call: Call| {
        c2.fetch_add(1, SeqCst);
        match call.name() {
            b"echo" => {
                let v = call.value().to_vec();
                let _ = call.reply(&v);
            }
            b"big" => {
                let mut n = [0u8; 4];
                n.copy_from_slice(&call.value()[..4]);
                let v = vec![b'b'; u32::from_le_bytes(n) as usize];
                let _ = call.reply(&v);
            }
            b"hold" => h2.lock().unwrap().push(call),
            _ => {
                let v = format!("{}/{}", call.name().len(), call.value().len());
                let _ = call.reply(v.as_bytes());
            }
        }
    })
    .await
    .unwrap();
    Srv {
        server,
        calls,
        held,
    }
}

fn count(e: &ErrorCounts, k: ErrorKind) -> u64 {
    match k {
        ErrorKind::Timeout => e.timeout,
        ErrorKind::Overflow => e.overflow,
        ErrorKind::Connect => e.connect,
        ErrorKind::Connection => e.connection,
        ErrorKind::Closed => e.closed,
        ErrorKind::Protocol => e.protocol,
        ErrorKind::Tls => e.tls,
        ErrorKind::TooLarge => e.too_large,
        ErrorKind::InvalidArgument => e.invalid_argument,
        _ => e.io,
    }
}

/// Waits until the server counted `n` more errors of `kind` than `before`, and logged a line
/// with `fragment`; then checks nothing else was counted.
async fn expect_server_errors(
    srv: &Srv,
    before: ErrorCounts,
    kind: ErrorKind,
    n: u64,
    fragment: &str,
) {
    wait_until(&format!("{n} more {kind:?} errors counted"), || {
        count(&srv.errors(), kind) >= count(&before, kind) + n
    })
    .await;
    wait_logged(fragment).await;
    let after = srv.errors();
    assert_eq!(
        after.total() - before.total(),
        n,
        "other errors were counted too: {before:?} -> {after:?}"
    );
}

fn hello(code: u8, tls: u8) -> Vec<u8> {
    let mut v = SNIFF.to_vec();
    v.extend_from_slice(&[VERSION, code, tls]);
    v
}

/// The server's answer to a valid handshake (compression none, no TLS).
fn answer() -> Vec<u8> {
    hello(1, 0)
}

async fn connect(srv: &Srv) -> TcpStream {
    let s = TcpStream::connect(srv.addr()).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A raw connection after a valid handshake declaring request compression `code`.
async fn handshaken(srv: &Srv, code: u8) -> TcpStream {
    let mut s = connect(srv).await;
    s.write_all(&hello(code, 0)).await.unwrap();
    let mut got = vec![0u8; answer().len()];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(got, answer());
    s
}

/// Reads until the peer closes; a reset counts as closed.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn req(id: u32, name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&(name.len() as u32).to_le_bytes());
    v.extend_from_slice(name);
    v.extend_from_slice(&(value.len() as u32).to_le_bytes());
    v.extend_from_slice(value);
    v
}

fn resp(id: u32, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&(value.len() as u32).to_le_bytes());
    v.extend_from_slice(value);
    v
}

fn deflate(plain: &[u8]) -> Vec<u8> {
    let mut z = Compress::new(flate2::Compression::new(6), false);
    let mut out = Vec::with_capacity(plain.len() + 1024);
    loop {
        if out.capacity() - out.len() < 256 {
            out.reserve(4096);
        }
        let used = z.total_in() as usize;
        z.compress_vec(&plain[used..], &mut out, FlushCompress::Sync)
            .unwrap();
        if z.total_in() as usize == plain.len() && out.len() < out.capacity() {
            return out;
        }
    }
}

const SNAPPY_ID: [u8; 10] = [0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y'];

fn masked_crc(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
        .rotate_right(15)
        .wrapping_add(0xa282_ead8)
}

/// A snappy stream of one uncompressed chunk holding `plain`; `crc_xor` spoils the checksum.
fn snappy_stored(plain: &[u8], crc_xor: u32) -> Vec<u8> {
    let mut v = SNAPPY_ID.to_vec();
    v.push(0x01);
    v.extend_from_slice(&((plain.len() + 4) as u32).to_le_bytes()[..3]);
    v.extend_from_slice(&(masked_crc(plain) ^ crc_xor).to_le_bytes());
    v.extend_from_slice(plain);
    v
}

/// A server-side case: a raw connection sends `bytes` after a valid handshake declaring
/// compression `code`, then FIN; the server must close without answering, and count one
/// `kind` error logged with `fragment`.
async fn server_refuses_stream(code: u8, bytes: Vec<u8>, kind: ErrorKind, fragment: &str) {
    let srv = serve(server_config()).await;
    let before = srv.errors();
    let mut s = handshaken(&srv, code).await;
    s.write_all(&bytes).await.unwrap();
    let _ = s.shutdown().await;
    let got = read_until_closed(&mut s).await;
    assert_eq!(got, b"", "the server answered a broken stream");
    expect_server_errors(&srv, before, kind, 1, fragment).await;
    assert_eq!(srv.calls.load(SeqCst), 0, "a handler ran");
    drop(s);
    srv.still_serves().await;
    srv.stop().await;
}

/// A server-side handshake case: `bytes` instead of a valid header; nothing is answered.
async fn server_refuses_handshake(bytes: Vec<u8>, kind: ErrorKind, fragment: &str) {
    let srv = serve(server_config()).await;
    let before = srv.errors();
    let mut s = connect(&srv).await;
    s.write_all(&bytes).await.unwrap();
    let _ = s.shutdown().await;
    let got = read_until_closed(&mut s).await;
    assert_eq!(got, b"", "the server answered a bad handshake");
    expect_server_errors(&srv, before, kind, 1, fragment).await;
    assert_eq!(srv.server.stats().handshake_failures, 1);
    drop(s);
    srv.still_serves().await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------
// Server: handshakes.

#[test]
fn srv_garbage_instead_of_handshake() {
    case("srv_garbage_instead_of_handshake", || {
        server_refuses_handshake(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            ErrorKind::Protocol,
            "the client sent sniff header \"GET\", expected \"cat\"",
        )
    });
}

#[test]
fn srv_wrong_sniff_header() {
    case("srv_wrong_sniff_header", || {
        server_refuses_handshake(
            vec![b'c', b'a', b'X', VERSION, 1, 0],
            ErrorKind::Protocol,
            "sent sniff header \"caX\", expected \"cat\"",
        )
    });
}

#[test]
fn srv_wrong_protocol_version() {
    case("srv_wrong_protocol_version", || {
        server_refuses_handshake(
            hello(1, 0)
                .iter()
                .enumerate()
                .map(|(i, b)| if i == 3 { VERSION + 1 } else { *b })
                .collect::<Vec<_>>(),
            ErrorKind::Protocol,
            "the client speaks protocol version 8, expected 7",
        )
    });
}

#[test]
fn srv_unknown_compression_code() {
    case("srv_unknown_compression_code", || {
        server_refuses_handshake(
            hello(9, 0),
            ErrorKind::Protocol,
            "the client asked for unknown compression code 9",
        )
    });
}

#[test]
fn srv_handshake_cut_short() {
    case("srv_handshake_cut_short", || {
        server_refuses_handshake(
            b"ca".to_vec(),
            ErrorKind::Connect,
            "the client closed the connection during the handshake",
        )
    });
}

#[test]
fn srv_handshake_never_sent() {
    case("srv_handshake_never_sent", || async {
        let mut cfg = server_config();
        cfg.handshake_timeout = Duration::from_millis(300);
        let srv = serve(cfg).await;
        let before = srv.errors();
        let mut s = connect(&srv).await;
        let t0 = Instant::now();
        let got = read_until_closed(&mut s).await;
        let took = t0.elapsed();
        assert_eq!(got, b"");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "closed after {took:?}"
        );
        expect_server_errors(
            &srv,
            before,
            ErrorKind::Timeout,
            1,
            "the server handshake did not finish within 300ms",
        )
        .await;
        drop(s);
        srv.still_serves().await;
        srv.stop().await;
    });
}

// ---------------------------------------------------------------------------------------
// Server: frames.

#[test]
fn srv_frame_truncated_at_each_field_boundary() {
    case("srv_frame_truncated_at_each_field_boundary", || async {
        let srv = serve(server_config()).await;
        let first = req(1, b"whole", b"frame");
        let cut = req(2, b"name", b"value");
        // Inside and after the id, the name length, the name, the value length, the value.
        let cuts = [2usize, 4, 6, 8, 10, 12, 14, 16, 19];
        for (i, &at) in cuts.iter().enumerate() {
            let before = srv.errors();
            let mut s = handshaken(&srv, 1).await;
            let mut bytes = first.clone();
            bytes.extend_from_slice(&cut[..at]);
            s.write_all(&bytes).await.unwrap();
            s.shutdown().await.unwrap();
            let got = read_until_closed(&mut s).await;
            // The whole frame runs; its response goes out unless the protocol error closed
            // the connection first (responses not yet written then are dropped). The cut
            // frame is never answered.
            assert!(
                got.is_empty() || got == resp(1, b"5/5"),
                "cut at {at}: got {got:?}"
            );
            expect_server_errors(
                &srv,
                before,
                ErrorKind::Protocol,
                1,
                &format!(
                    "the peer closed the stream in the middle of a frame ({at} of {} bytes)",
                    if at < 8 {
                        8
                    } else if at < 16 {
                        16
                    } else {
                        cut.len()
                    }
                ),
            )
            .await;
            assert_eq!(srv.calls.load(SeqCst), i + 1);
        }
        srv.still_serves().await;
        srv.stop().await;
    });
}

#[test]
fn srv_name_length_limit_plus_one() {
    case("srv_name_length_limit_plus_one", || {
        let mut b = 1u32.to_le_bytes().to_vec();
        b.extend_from_slice(&((LIMIT + 1) as u32).to_le_bytes());
        async move {
            server_refuses_stream(
                1,
                b,
                ErrorKind::TooLarge,
                "request name length 1048577 exceeds max_frame_size 1048576",
            )
            .await
        }
    });
}

#[test]
fn srv_value_length_limit_plus_one() {
    case("srv_value_length_limit_plus_one", || {
        let mut b = req(1, b"n", b"");
        b.truncate(b.len() - 4);
        b.extend_from_slice(&((LIMIT + 1) as u32).to_le_bytes());
        b.extend_from_slice(&[0u8; 1000]);
        async move {
            server_refuses_stream(
                1,
                b,
                ErrorKind::TooLarge,
                "request value length 1048577 exceeds max_frame_size 1048576",
            )
            .await
        }
    });
}

/// Length fields near 4 GiB are refused as soon as they arrive, before anything is allocated
/// for them: no single allocation during the case comes near the claimed size.
#[test]
fn srv_lengths_near_4gib() {
    case("srv_lengths_near_4gib", || async {
        let srv = serve(server_config()).await;
        for len in [u32::MAX, u32::MAX - 11, 0x8000_0000u32, 0x1000_0000] {
            for field in ["name", "value"] {
                let before = srv.errors();
                let mut b = 3u32.to_le_bytes().to_vec();
                if field == "name" {
                    b.extend_from_slice(&len.to_le_bytes());
                } else {
                    b.extend_from_slice(&0u32.to_le_bytes());
                    b.extend_from_slice(&len.to_le_bytes());
                }
                let mut s = handshaken(&srv, 1).await;
                s.write_all(&b).await.unwrap();
                let got = read_until_closed(&mut s).await;
                assert_eq!(got, b"");
                expect_server_errors(
                    &srv,
                    before,
                    ErrorKind::TooLarge,
                    1,
                    &format!("request {field} length {len} exceeds max_frame_size 1048576"),
                )
                .await;
            }
        }
        let peak = PEAK_SINGLE.load(SeqCst);
        assert!(
            peak < LIMIT,
            "a {peak}-byte allocation was made for lengths the server refuses"
        );
        srv.still_serves().await;
        srv.stop().await;
    });
}

#[test]
fn srv_request_at_exact_limit_and_empty() {
    case("srv_request_at_exact_limit_and_empty", || async {
        let srv = serve(server_config()).await;
        let c = Client::new(client_config(&srv.addr())).unwrap();
        // A value of exactly max_frame_size, echoed back: both directions at the limit.
        let v: Vec<u8> = (0..LIMIT).map(|i| (i * 7 % 251) as u8).collect();
        assert!(c.call(b"echo", &v).await.unwrap() == v);
        // A name and a value of exactly the limit each: the largest request frame.
        let name = vec![b'n'; LIMIT];
        assert_eq!(
            c.call(&name, &v).await.unwrap(),
            format!("{LIMIT}/{LIMIT}").as_bytes()
        );
        // 0 bytes: empty name and value, and an empty reply.
        assert_eq!(c.call(b"", b"").await.unwrap(), b"0/0");
        assert_eq!(c.call(b"echo", b"").await.unwrap(), b"");
        // The same on a raw connection: exact bytes back.
        let mut s = handshaken(&srv, 1).await;
        s.write_all(&req(5, b"", b"")).await.unwrap();
        s.write_all(&req(6, b"echo", b"")).await.unwrap();
        s.shutdown().await.unwrap();
        let got = read_until_closed(&mut s).await;
        let mut want = resp(5, b"0/0");
        want.extend(resp(6, b""));
        assert_eq!(got, want);
        assert_eq!(srv.errors().total(), 0, "{:?}", srv.errors());
        drop(c);
        drop(s);
        srv.still_serves().await;
        srv.stop().await;
    });
}

#[test]
fn srv_reply_over_the_limit() {
    case("srv_reply_over_the_limit", || async {
        let srv = serve(server_config()).await;
        let before = srv.errors();
        let c = Client::new(client_config(&srv.addr())).unwrap();
        let n = (LIMIT as u32 + 1).to_le_bytes();
        // The handler's reply is refused; the client gets the configured error reply.
        assert_eq!(c.call(b"big", &n).await.unwrap(), ERROR_REPLY);
        // Exactly the limit is fine.
        let n = (LIMIT as u32).to_le_bytes();
        assert_eq!(c.call(b"big", &n).await.unwrap().len(), LIMIT);
        let after = srv.errors();
        assert_eq!(after.too_large, before.too_large + 1, "{after:?}");
        assert_eq!(after.total(), before.total() + 1, "{after:?}");
        drop(c);
        srv.still_serves().await;
        srv.stop().await;
    });
}

// ---------------------------------------------------------------------------------------
// Server: compressed streams.

#[test]
fn srv_corrupt_flate_stream() {
    case("srv_corrupt_flate_stream", || {
        server_refuses_stream(
            0,
            vec![0xff; 16],
            ErrorKind::Protocol,
            "flate stream corrupt: invalid block type",
        )
    });
}

#[test]
fn srv_flate_final_block() {
    case("srv_flate_final_block", || {
        server_refuses_stream(
            0,
            vec![0x03, 0x00],
            ErrorKind::Protocol,
            "flate stream corrupt: the peer ended its stream with a final block",
        )
    });
}

/// A deflate bomb whose frame claims more than the limit: refused at its length field, after
/// inflating a bounded amount, with no allocation near the bomb's size.
#[test]
fn srv_flate_bomb_over_the_limit() {
    case("srv_flate_bomb_over_the_limit", || {
        let mut plain = req(1, b"bomb", b"");
        plain.truncate(plain.len() - 4);
        plain.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
        plain.extend(std::iter::repeat_n(0u8, 64 << 20));
        let wire = deflate(&plain);
        drop(plain);
        assert!(wire.len() < 128 * 1024, "{}", wire.len());
        async move {
            PEAK_SINGLE.store(0, SeqCst);
            server_refuses_stream(
                0,
                wire,
                ErrorKind::TooLarge,
                "request value length 4294967294 exceeds max_frame_size 1048576",
            )
            .await;
            let peak = PEAK_SINGLE.load(SeqCst);
            assert!(peak < LIMIT, "a {peak}-byte allocation for a refused bomb");
        }
    });
}

#[test]
fn srv_snappy_bad_checksum() {
    case("srv_snappy_bad_checksum", || {
        server_refuses_stream(
            2,
            snappy_stored(&req(1, b"foo", b"bar"), 0x40),
            ErrorKind::Protocol,
            "snappy uncompressed chunk checksum mismatch",
        )
    });
}

#[test]
fn srv_snappy_unknown_chunk_type() {
    case("srv_snappy_unknown_chunk_type", || {
        let mut b = SNAPPY_ID.to_vec();
        b.extend_from_slice(&[0x05, 3, 0, 0, b'a', b'b', b'c']);
        async move {
            server_refuses_stream(
                2,
                b,
                ErrorKind::Protocol,
                "unknown snappy chunk type 0x05 (reserved, unskippable)",
            )
            .await
        }
    });
}

#[test]
fn srv_snappy_missing_stream_identifier() {
    case("srv_snappy_missing_stream_identifier", || {
        let b = snappy_stored(&req(1, b"foo", b"bar"), 0)[SNAPPY_ID.len()..].to_vec();
        async move {
            server_refuses_stream(
                2,
                b,
                ErrorKind::Protocol,
                "snappy stream does not start with the stream identifier chunk",
            )
            .await
        }
    });
}

// ---------------------------------------------------------------------------------------
// Server: TLS.

#[test]
fn srv_tls_asked_of_plaintext_server() {
    case("srv_tls_asked_of_plaintext_server", || async {
        let srv = serve(server_config()).await;
        let before = srv.errors();
        // A raw client: the server answers tls = 0, then closes (PROTOCOL.md 1.3).
        let mut s = connect(&srv).await;
        s.write_all(&hello(1, 1)).await.unwrap();
        let got = read_until_closed(&mut s).await;
        assert_eq!(got, hello(1, 0));
        expect_server_errors(
            &srv,
            before,
            ErrorKind::Tls,
            1,
            "the client asked for TLS but this server has no TLS configured",
        )
        .await;
        // Our client configured for TLS: a TLS error, never a plaintext fallback.
        let pki = common::certs::test_pki();
        let mut cc = client_config(&srv.addr());
        cc.tls = Some(TlsClientConfig {
            ca_pem: Some(pki.ca_pem.as_bytes().to_vec()),
            ..Default::default()
        });
        let c = Client::new(cc).unwrap();
        let e = c.call(b"x", b"y").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
        assert!(
            e.message()
                .contains("TLS was asked but the server does not offer it"),
            "{e}"
        );
        assert!(e.message().contains(&srv.addr()), "{e}");
        assert_eq!(srv.calls.load(SeqCst), 0);
        drop(c);
        drop(s);
        srv.still_serves().await;
        srv.stop().await;
    });
}

#[test]
fn srv_plaintext_to_tls_requiring_server() {
    case("srv_plaintext_to_tls_requiring_server", || async {
        let pki = common::certs::test_pki();
        let mut cfg = server_config();
        cfg.tls = Some(tls_server(&pki, true));
        let srv = serve(cfg).await;
        let before = srv.errors();
        let c = Client::new(client_config(&srv.addr())).unwrap();
        let e = c.call(b"x", b"y").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
        assert!(e.message().contains("the server requires TLS"), "{e}");
        expect_server_errors(
            &srv,
            before,
            ErrorKind::Tls,
            1,
            "refused a plaintext client: this server requires TLS",
        )
        .await;
        assert_eq!(srv.calls.load(SeqCst), 0);
        drop(c);
        // A TLS client is served.
        let mut cc = client_config(&srv.addr());
        cc.tls = Some(TlsClientConfig {
            ca_pem: Some(pki.ca_pem.as_bytes().to_vec()),
            ..Default::default()
        });
        let c = Client::new(cc).unwrap();
        assert_eq!(c.call(b"ping", b"tls").await.unwrap(), b"4/3");
        drop(c);
        srv.no_connections().await;
        srv.stop().await;
    });
}

#[test]
fn srv_garbage_instead_of_tls_client_hello() {
    case("srv_garbage_instead_of_tls_client_hello", || async {
        let pki = common::certs::test_pki();
        let mut cfg = server_config();
        cfg.tls = Some(tls_server(&pki, false));
        let srv = serve(cfg).await;
        let before = srv.errors();
        let mut s = connect(&srv).await;
        s.write_all(&hello(1, 1)).await.unwrap();
        let mut got = vec![0u8; 6];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, hello(1, 1), "the server agrees to TLS");
        s.write_all(b"this is not a TLS ClientHello at all, just text\r\n")
            .await
            .unwrap();
        let _ = read_until_closed(&mut s).await;
        expect_server_errors(
            &srv,
            before,
            ErrorKind::Tls,
            1,
            "TLS handshake with the client failed",
        )
        .await;
        drop(s);
        srv.still_serves().await;
        srv.stop().await;
    });
}

/// A TLS client (stock rustls, blocking, on its own thread) that finishes the fastrpc and TLS
/// handshakes with the server, then writes `raw` straight to the socket, past rustls: records
/// the server's record layer must refuse. `half_close` then closes the write side. Returns
/// what the client's rustls makes of the server's answer (its alert), if anything.
fn tls_client_then_raw(
    port: u16,
    ca_pem: String,
    raw: Vec<u8>,
    half_close: bool,
) -> Option<String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(&hello(1, 1)).unwrap();
    let mut got = [0u8; 6];
    tcp.read_exact(&mut got).unwrap();
    assert_eq!(got.to_vec(), hello(1, 1), "the server agrees to TLS");
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    tcp.write_all(&raw).unwrap();
    if half_close {
        tcp.shutdown(std::net::Shutdown::Write).unwrap();
    }
    // Until the server closes (it refuses the records), through the client's rustls.
    let mut buf = [0u8; 4096];
    let mut verdict = None;
    while let Ok(n) = tcp.read(&mut buf) {
        if n == 0 {
            break;
        }
        if verdict.is_none() && conn.read_tls(&mut &buf[..n]).is_ok() {
            if let Err(e) = conn.process_new_packets() {
                verdict = Some(e.to_string());
            }
        }
    }
    verdict
}

/// After a good TLS handshake: a record whose authentication tag does not verify, a record
/// longer than TLS allows, and a record cut short by the peer's close. rustls refuses each
/// (the first two as TLS errors, the truncation as a connection error: a FIN without
/// close_notify), the connection closes with an error naming it, and the server serves on.
#[test]
fn srv_tls_records_tampered_after_the_handshake() {
    case("srv_tls_records_tampered_after_the_handshake", || async {
        let pki = common::certs::test_pki();
        let mut cfg = server_config();
        cfg.tls = Some(tls_server(&pki, false));
        let srv = serve(cfg).await;
        let port: u16 = srv.addr().rsplit(':').next().unwrap().parse().unwrap();
        let mut forged = vec![23, 3, 3, 0, 40];
        forged.extend((0..40u8).map(|i| i.wrapping_mul(37)));
        // The server's rustls answers the first two with a fatal alert (not close_notify); a
        // truncation by the client's FIN gets none (the client can no longer read one anyway).
        // (bytes, half-close after, server error kind, its message, the client's rustls verdict)
        type Case = (Vec<u8>, bool, ErrorKind, &'static str, Option<&'static str>);
        let cases: [Case; 3] = [
            (
                forged,
                false,
                ErrorKind::Tls,
                "read failed: cannot decrypt peer's message",
                Some("received fatal alert: BadRecordMac"),
            ),
            (
                vec![23, 3, 3, 0xff, 0xff, 0, 0, 0],
                false,
                ErrorKind::Tls,
                "read failed: received corrupt message of type MessageTooLarge",
                Some("received fatal alert: DecodeError"),
            ),
            (
                vec![23, 3, 3, 0, 100, 1, 2, 3],
                true,
                ErrorKind::Connection,
                "read failed: peer closed connection without sending TLS close_notify",
                None,
            ),
        ];
        for (raw, half_close, kind, fragment, alert) in cases {
            let before = srv.errors();
            let ca = pki.ca_pem.clone();
            let client =
                tokio::task::spawn_blocking(move || tls_client_then_raw(port, ca, raw, half_close));
            expect_server_errors(&srv, before, kind, 1, fragment).await;
            assert_eq!(client.await.unwrap().as_deref(), alert, "{fragment}");
            srv.no_connections().await;
        }
        assert_eq!(srv.calls.load(SeqCst), 0, "a handler ran");
        srv.still_serves().await;
        srv.stop().await;
    });
}

// ---------------------------------------------------------------------------------------
// Server: stalls, floods and peers that never read.

#[test]
fn srv_stalled_mid_frame_read_timeout() {
    case("srv_stalled_mid_frame_read_timeout", || async {
        let mut cfg = server_config();
        cfg.read_timeout = Duration::from_millis(300);
        let srv = serve(cfg).await;
        let before = srv.errors();
        let mut s = handshaken(&srv, 1).await;
        let f = req(1, b"stalled", b"frame");
        let t0 = Instant::now();
        s.write_all(&f[..f.len() - 3]).await.unwrap();
        let got = read_until_closed(&mut s).await;
        let took = t0.elapsed();
        assert_eq!(got, b"");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "closed after {took:?}"
        );
        expect_server_errors(
            &srv,
            before,
            ErrorKind::Timeout,
            1,
            "read timeout: the peer sent no whole frame within read_timeout",
        )
        .await;
        drop(s);
        srv.still_serves().await;
        srv.stop().await;
    });
}

/// Fire-and-forget requests whose handler answers (or drops the call) only after the client
/// has closed its side: the connection must still close once they are done. (A nowait call
/// sends nothing, but being the last outstanding call it must still wake the writer, which
/// ends the connection.)
#[test]
fn srv_nowait_calls_finished_after_the_client_closed() {
    case(
        "srv_nowait_calls_finished_after_the_client_closed",
        || async {
            let srv = serve(server_config()).await;
            for answer in [true, false] {
                let mut s = handshaken(&srv, 1).await;
                s.write_all(&req(0, b"hold", b"fire and forget"))
                    .await
                    .unwrap();
                s.shutdown().await.unwrap();
                wait_until("the handler holds the call", || {
                    srv.held.lock().unwrap().len() == 1
                })
                .await;
                // Give the reader time to see the client's FIN before the call ends.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let call = srv.held.lock().unwrap().pop().unwrap();
                if answer {
                    call.reply(b"dropped: nowait").unwrap();
                } else {
                    drop(call);
                }
                let closed =
                    tokio::time::timeout(Duration::from_secs(5), read_until_closed(&mut s)).await;
                assert!(
                    closed.is_ok(),
                    "the server never closed a connection whose client left and whose last \
                 (fire-and-forget) call was {} after that",
                    if answer { "answered" } else { "dropped" }
                );
                assert_eq!(
                    closed.unwrap(),
                    b"",
                    "a nowait call was answered on the wire"
                );
                srv.no_connections().await;
            }
            assert_eq!(srv.errors().total(), 0, "{:?}", srv.errors());
            srv.still_serves().await;
            srv.stop().await;
        },
    );
}

/// 10,000 connections opened and dropped in batches of 500 (some send nothing, some half a
/// handshake, some a whole handshake and half a frame), closed with a reset so the test
/// leaves no TIME_WAIT ports behind.
#[test]
fn srv_ten_thousand_connections_opened_and_dropped() {
    case(
        "srv_ten_thousand_connections_opened_and_dropped",
        || async {
            let srv = serve(server_config()).await;
            let batch = if fd_limit() >= 1200 { 500 } else { 200 };
            let total = 10_000;
            let mut opened = 0;
            while opened < total {
                let mut conns = Vec::with_capacity(batch);
                for i in 0..batch {
                    let mut s = connect(&srv).await;
                    match (opened + i) % 4 {
                        0 => {}
                        1 => s.write_all(&hello(1, 0)[..2]).await.unwrap(),
                        2 => s.write_all(&hello(1, 0)).await.unwrap(),
                        _ => {
                            s.write_all(&hello(1, 0)).await.unwrap();
                            s.write_all(&req(1, b"half", b"a frame")[..9])
                                .await
                                .unwrap();
                        }
                    }
                    s.set_zero_linger().unwrap();
                    conns.push(s);
                }
                opened += batch;
                drop(conns);
            }
            wait_until("every connection accepted", || {
                srv.server.stats().connections_accepted == total as u64
            })
            .await;
            srv.no_connections().await;
            let st = srv.server.stats();
            assert_eq!(st.requests, 0);
            srv.still_serves().await;
            srv.stop().await;
        },
    );
}

/// A client that sends requests and never reads the responses. The server must push back
/// (stop reading while its unsent responses pile up) instead of buffering every response:
/// its heap may not grow by more than [`NEVER_READS_HEAP_BOUND`] while the client sends
/// 128 MiB of requests whose responses are as large.
#[test]
fn srv_client_never_reads_memory_stays_bounded() {
    /// Room for the connection's own buffers (a frame being read, a batch being written:
    /// each at most 2 * max_frame_size) and pooled request buffers, several times over.
    const NEVER_READS_HEAP_BOUND: isize = 32 << 20;
    case("srv_client_never_reads_memory_stays_bounded", || async {
        let srv = serve(server_config()).await;
        let heap0 = LIVE.load(SeqCst);
        let mut s = handshaken(&srv, 1).await;
        let value = vec![b'v'; 16 * 1024];
        let mut batch = Vec::new();
        for id in 1..=64u32 {
            batch.extend(req(id, b"echo", &value));
        }
        let total = 128usize << 20;
        let mut sent = 0;
        let mut peak = 0isize;
        let mut blocked = false;
        while sent < total {
            // A write the server does not take within 2 s: it pushes back. Good.
            match tokio::time::timeout(Duration::from_secs(2), s.write_all(&batch)).await {
                Ok(Ok(())) => sent += batch.len(),
                Ok(Err(e)) => {
                    panic!("the server closed on a client that sends valid requests: {e}")
                }
                Err(_) => {
                    blocked = true;
                    break;
                }
            }
            peak = peak.max(LIVE.load(SeqCst) - heap0);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(LIVE.load(SeqCst) - heap0);
        eprintln!(
            "never-reading client: sent {} MiB, writes blocked: {blocked}, server heap grew by \
             up to {} MiB",
            sent >> 20,
            peak >> 20
        );
        // Let go: the connection ends and everything is freed (checked by `case`).
        s.set_zero_linger().unwrap();
        drop(s);
        srv.no_connections().await;
        srv.still_serves().await;
        srv.stop().await;
        assert!(
            peak <= NEVER_READS_HEAP_BOUND,
            "the server buffered {} MiB of responses for a client that never reads (it read \
             {} MiB of requests without pushing back); bound {} MiB",
            peak >> 20,
            sent >> 20,
            NEVER_READS_HEAP_BOUND >> 20
        );
    });
}

/// With write_timeout set, a client that never reads is cut off with a timeout.
#[test]
fn srv_write_timeout_closes_a_client_that_never_reads() {
    case(
        "srv_write_timeout_closes_a_client_that_never_reads",
        || async {
            let mut cfg = server_config();
            cfg.write_timeout = Duration::from_millis(300);
            let srv = serve(cfg).await;
            let before = srv.errors();
            let mut s = handshaken(&srv, 1).await;
            // 64 responses of 1 MiB: far more than the socket buffers hold.
            let n = (LIMIT as u32).to_le_bytes();
            let mut b = Vec::new();
            for id in 1..=64u32 {
                b.extend(req(id, b"big", &n));
            }
            s.write_all(&b).await.unwrap();
            expect_server_errors(
                &srv,
                before,
                ErrorKind::Timeout,
                1,
                "write timeout: the peer did not take a batch within write_timeout",
            )
            .await;
            srv.no_connections().await;
            drop(s);
            srv.still_serves().await;
            srv.stop().await;
        },
    );
}

// ---------------------------------------------------------------------------------------
// Client: a raw listener plays a broken server.

async fn fake_server() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap().to_string();
    (l, a)
}

/// Accepts one connection, reads the client's handshake, answers with `header`.
async fn accept_with(l: &TcpListener, header: &[u8]) -> TcpStream {
    let (mut s, _) = l.accept().await.unwrap();
    let mut hdr = vec![0u8; SNIFF.len() + 3];
    s.read_exact(&mut hdr).await.unwrap();
    assert_eq!(hdr, hello(1, 0));
    s.write_all(header).await.unwrap();
    s
}

/// Reads `n` whole request frames; returns (id, value).
async fn read_requests(s: &mut TcpStream, n: usize) -> Vec<(u32, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        while buf.len() >= 8 {
            let id = u32::from_le_bytes(buf[0..4].try_into().unwrap());
            let nl = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
            if buf.len() < 12 + nl {
                break;
            }
            let vl = u32::from_le_bytes(buf[8 + nl..12 + nl].try_into().unwrap()) as usize;
            if buf.len() < 12 + nl + vl {
                break;
            }
            out.push((id, buf[12 + nl..12 + nl + vl].to_vec()));
            buf.drain(..12 + nl + vl);
        }
        if out.len() >= n {
            return out;
        }
        let k = s.read(&mut tmp).await.unwrap();
        assert!(k > 0, "the client closed after {} requests", out.len());
        buf.extend_from_slice(&tmp[..k]);
    }
}

/// Keeps a connection open, discarding what comes, until the peer closes.
async fn drain(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// A client case: the fake server answers the handshake with `header`, reads one request
/// and answers `bytes`; the call must fail with `kind` and a message holding `fragment` and
/// the server's address, well before its deadline.
async fn client_refuses(header: Vec<u8>, bytes: Vec<u8>, kind: ErrorKind, fragment: &str) {
    let (l, addr) = fake_server().await;
    let fake = tokio::spawn(async move {
        let mut s = accept_with(&l, &header).await;
        // A header the client accepts (our sniff and version, a known compression, no
        // TLS): then a request comes, and `bytes` answer it.
        let valid = header.len() == 6 && header[..4] == hello(1, 0)[..4] && header[4] <= 2;
        if valid && header[5] == 0 {
            let r = read_requests(&mut s, 1).await;
            let mut b = bytes.clone();
            // The first 4 bytes of `bytes` may be a placeholder for the request's id.
            if b.len() >= 4 && b[..4] == [0xee; 4] {
                b[..4].copy_from_slice(&r[0].0.to_le_bytes());
            }
            let _ = s.write_all(&b).await;
        }
        drain(s).await;
    });
    let c = Client::new(client_config(&addr)).unwrap();
    let t0 = Instant::now();
    let e = c.call(b"x", b"y").await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(e.kind(), kind, "{e}");
    assert!(e.message().contains(fragment), "{e}");
    assert!(e.message().contains(&addr), "no address in: {e}");
    assert_eq!(c.pending_requests(), 0);
    assert_eq!(count(&c.stats().errors, kind), 1, "{:?}", c.stats().errors);
    drop(c);
    fake.await.unwrap();
}

/// A placeholder id, replaced by the id of the request the fake server read.
fn id_placeholder() -> Vec<u8> {
    vec![0xee; 4]
}

#[test]
fn cli_wrong_protocol_version_from_server() {
    case("cli_wrong_protocol_version_from_server", || {
        client_refuses(
            vec![b'c', b'a', b't', 9, 1, 0],
            Vec::new(),
            ErrorKind::Protocol,
            "the server speaks protocol version 9, expected 7",
        )
    });
}

#[test]
fn cli_unknown_compression_code_from_server() {
    case("cli_unknown_compression_code_from_server", || {
        client_refuses(
            hello(7, 0),
            Vec::new(),
            ErrorKind::Protocol,
            "the server asked for unknown compression code 7",
        )
    });
}

#[test]
fn cli_response_length_limit_plus_one() {
    case("cli_response_length_limit_plus_one", || {
        let mut b = id_placeholder();
        b.extend_from_slice(&((LIMIT + 1) as u32).to_le_bytes());
        client_refuses(
            hello(1, 0),
            b,
            ErrorKind::TooLarge,
            "response value length 1048577 exceeds max_frame_size 1048576",
        )
    });
}

#[test]
fn cli_response_length_near_4gib() {
    case("cli_response_length_near_4gib", || {
        let mut b = id_placeholder();
        b.extend_from_slice(&(u32::MAX - 7).to_le_bytes());
        async move {
            PEAK_SINGLE.store(0, SeqCst);
            client_refuses(
                hello(1, 0),
                b,
                ErrorKind::TooLarge,
                "response value length 4294967288 exceeds max_frame_size 1048576",
            )
            .await;
            assert!(PEAK_SINGLE.load(SeqCst) < LIMIT);
        }
    });
}

#[test]
fn cli_response_truncated_then_closed() {
    case("cli_response_truncated_then_closed", || async {
        let (l, addr) = fake_server().await;
        let fake = tokio::spawn(async move {
            let mut s = accept_with(&l, &hello(1, 0)).await;
            let r = read_requests(&mut s, 1).await;
            let f = resp(r[0].0, b"a response cut short");
            s.write_all(&f[..12]).await.unwrap();
            // Closed here, mid-frame.
        });
        let c = Client::new(client_config(&addr)).unwrap();
        let e = c.call(b"x", b"y").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        assert!(
            e.message()
                .contains("the peer closed the stream in the middle of a frame (12 of 28 bytes)"),
            "{e}"
        );
        assert!(e.message().contains(&addr), "{e}");
        fake.await.unwrap();
        drop(c);
    });
}

#[test]
fn cli_corrupt_flate_from_server() {
    case("cli_corrupt_flate_from_server", || {
        client_refuses(
            hello(0, 0),
            vec![0xff; 16],
            ErrorKind::Protocol,
            "flate stream corrupt: invalid block type",
        )
    });
}

#[test]
fn cli_snappy_bad_checksum_from_server() {
    case("cli_snappy_bad_checksum_from_server", || {
        // The fake server does not know the id in advance: id 1 is the client's first.
        client_refuses(
            hello(2, 0),
            snappy_stored(&resp(1, b"value"), 1),
            ErrorKind::Protocol,
            "snappy uncompressed chunk checksum mismatch",
        )
    });
}

#[test]
fn cli_snappy_unknown_chunk_type_from_server() {
    case("cli_snappy_unknown_chunk_type_from_server", || {
        let mut b = SNAPPY_ID.to_vec();
        b.extend_from_slice(&[0x42, 0, 0, 0]);
        client_refuses(
            hello(2, 0),
            b,
            ErrorKind::Protocol,
            "unknown snappy chunk type 0x42",
        )
    });
}

/// Responses for ids nobody waits for, and a duplicate response: counted and dropped, the
/// waiting call gets its own (first) response, the connection lives on.
#[test]
fn cli_unknown_and_duplicate_responses() {
    case("cli_unknown_and_duplicate_responses", || async {
        let (l, addr) = fake_server().await;
        let fake = tokio::spawn(async move {
            let mut s = accept_with(&l, &hello(1, 0)).await;
            let r = read_requests(&mut s, 1).await;
            let id = r[0].0;
            let mut b = resp(id + 1000, b"nobody waits for this");
            b.extend(resp(0, b"id zero"));
            b.extend(resp(id, b"first"));
            b.extend(resp(id, b"duplicate"));
            s.write_all(&b).await.unwrap();
            // The next request is answered normally on the same connection.
            let r = read_requests(&mut s, 1).await;
            s.write_all(&resp(r[0].0, b"second")).await.unwrap();
            drain(s).await;
        });
        let c = Client::new(client_config(&addr)).unwrap();
        assert_eq!(c.call(b"x", b"1").await.unwrap(), b"first");
        assert_eq!(c.call(b"x", b"2").await.unwrap(), b"second");
        let st = c.stats();
        assert_eq!(st.unexpected_responses, 3, "{st:?}");
        assert_eq!(st.connects, 1);
        assert_eq!(st.errors.total(), 0, "{:?}", st.errors);
        drop(c);
        fake.await.unwrap();
    });
}

/// A server that stalls in the middle of a response: with read_timeout the connection is
/// failed (its calls get a timeout naming the cause) and the next call reconnects.
#[test]
fn cli_server_stalls_mid_frame_read_timeout() {
    case("cli_server_stalls_mid_frame_read_timeout", || async {
        let (l, addr) = fake_server().await;
        let (stalled_tx, stalled_rx) = tokio::sync::oneshot::channel::<TcpStream>();
        let fake = tokio::spawn(async move {
            let mut s = accept_with(&l, &hello(1, 0)).await;
            let r = read_requests(&mut s, 1).await;
            s.write_all(&resp(r[0].0, b"stalled response")[..10])
                .await
                .unwrap();
            stalled_tx.send(s).unwrap(); // kept open, never finished
            let mut s = accept_with(&l, &hello(1, 0)).await;
            let r = read_requests(&mut s, 1).await;
            s.write_all(&resp(r[0].0, b"fresh")).await.unwrap();
            drain(s).await;
        });
        let mut cfg = client_config(&addr);
        cfg.read_timeout = Duration::from_millis(300);
        let c = Client::new(cfg).unwrap();
        let t0 = Instant::now();
        let e = c.call(b"x", b"y").await.unwrap_err();
        let took = t0.elapsed();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert!(e.message().contains("read timeout"), "{e}");
        assert!(e.message().contains(&addr), "{e}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert_eq!(c.call(b"x", b"again").await.unwrap(), b"fresh");
        assert_eq!(c.stats().connects, 2);
        drop(c);
        drop(stalled_rx.await.unwrap());
        fake.await.unwrap();
    });
}

/// Calls whose batch failed to be written (the server reset the connection mid-write) fail
/// with a connection error, and their requests are never sent again: the next connection
/// carries only the requests of the calls made after.
#[test]
fn cli_failed_requests_are_not_resent_after_reconnect() {
    case(
        "cli_failed_requests_are_not_resent_after_reconnect",
        || async {
            let (l, addr) = fake_server().await;
            let (names_tx, names_rx) = tokio::sync::oneshot::channel::<Vec<String>>();
            let fake = tokio::spawn(async move {
                // Connection 1: never read; once the client is stuck writing, reset it.
                let s = accept_with(&l, &hello(1, 0)).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                s.set_zero_linger().unwrap();
                drop(s);
                // Connection 2: answer and record every request until two fresh ones came.
                let mut s = accept_with(&l, &hello(1, 0)).await;
                let mut names = Vec::new();
                let mut buf = Vec::new();
                let mut tmp = vec![0u8; 64 * 1024];
                while names
                    .iter()
                    .filter(|n: &&String| n.starts_with("fresh"))
                    .count()
                    < 2
                {
                    while buf.len() >= 8 {
                        let id = u32::from_le_bytes(buf[0..4].try_into().unwrap());
                        let nl = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
                        if buf.len() < 12 + nl {
                            break;
                        }
                        let vl =
                            u32::from_le_bytes(buf[8 + nl..12 + nl].try_into().unwrap()) as usize;
                        if buf.len() < 12 + nl + vl {
                            break;
                        }
                        names.push(String::from_utf8_lossy(&buf[8..8 + nl]).into_owned());
                        buf.drain(..12 + nl + vl);
                        s.write_all(&resp(id, b"ok")).await.unwrap();
                    }
                    match s.read(&mut tmp).await {
                        Ok(k) if k > 0 => buf.extend_from_slice(&tmp[..k]),
                        r => {
                            names.push(format!(
                                "<connection ended: {r:?}, {} bytes left>",
                                buf.len()
                            ));
                            break;
                        }
                    }
                }
                let _ = names_tx.send(names);
                drain(s).await;
            });
            let client = Client::new(client_config(&addr)).unwrap();
            // 16 MiB of requests: more than the socket buffers take, so the write blocks.
            let big = vec![b'd'; LIMIT];
            let mut doomed = Vec::new();
            for _ in 0..16 {
                let (c, v) = (client.clone(), big.clone());
                doomed.push(tokio::spawn(async move { c.call(b"doomed", &v).await }));
            }
            for t in doomed {
                // The calls the writer had taken fail with the connection; any still queued go
                // out on the next connection (they were never sent), and are answered there.
                if let Err(e) = t.await.unwrap() {
                    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
                    assert!(e.message().contains(&addr), "{e}");
                }
            }
            let failed = client.stats().errors.connection;
            assert!(failed > 0, "no call failed on the reset connection");
            // Two calls on the new connection, one after the other.
            let r1 = client
                .call_timeout(b"fresh1", b"v", Duration::from_secs(3))
                .await;
            let r2 = client
                .call_timeout(b"fresh2", b"v", Duration::from_secs(3))
                .await;
            let st = client.stats();
            drop(client); // ends connection 2, so the fake server reports what it saw
            let names = tokio::time::timeout(Duration::from_secs(5), names_rx)
                .await
                .expect("the fake server saw no end of connection 2")
                .unwrap();
            assert!(
                r1.is_ok() && r2.is_ok(),
                "calls after the reconnect failed: {r1:?} {r2:?}; the server saw {:?}",
                names.iter().take(20).collect::<Vec<_>>()
            );
            let resent = names.iter().filter(|n| *n == "doomed").count() as u64;
            let answered = st.responses - 2;
            assert_eq!(
                resent,
                answered,
                "the new connection carried {resent} `doomed` requests but only {answered} of \
             those calls were still waiting ({failed} had failed with the old connection): \
             requests of failed calls were sent again; requests seen: {:?}",
                names.iter().take(20).collect::<Vec<_>>()
            );
            assert_eq!(st.unexpected_responses, 0);
            fake.abort();
            let _ = fake.await;
        },
    );
}

#[test]
fn cli_server_never_answers_deadline() {
    case("cli_server_never_answers_deadline", || async {
        let (l, addr) = fake_server().await;
        let fake = tokio::spawn(async move {
            let s = accept_with(&l, &hello(1, 0)).await;
            drain(s).await;
        });
        let c = Client::new(client_config(&addr)).unwrap();
        let t0 = Instant::now();
        let e = c
            .call_timeout(b"x", b"y", Duration::from_millis(300))
            .await
            .unwrap_err();
        let took = t0.elapsed();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert!(
            e.message()
                .contains("the call's deadline passed before its response arrived"),
            "{e}"
        );
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(c.pending_requests(), 0);
        drop(c);
        fake.await.unwrap();
    });
}

#[test]
fn cli_request_over_the_limit() {
    case("cli_request_over_the_limit", || async {
        let c = Client::new(client_config("127.0.0.1:9")).unwrap();
        let big = vec![0u8; LIMIT + 1];
        let e = c.call(b"x", &big).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
        assert!(
            e.message()
                .contains("request value of 1048577 bytes exceeds max_frame_size 1048576"),
            "{e}"
        );
        let e = c.call(&big, b"").await.unwrap_err();
        assert!(e.message().contains("request name of 1048577 bytes"), "{e}");
        let e = c.send(b"x", &big).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
        let st = c.stats();
        assert_eq!(st.connects + st.connect_failures, 0, "nothing was dialed");
        assert_eq!(st.errors.too_large, 3);
    });
}

// ---------------------------------------------------------------------------------------
// The C ABI, called from Rust.

use fastrpc::ffi::client::*;
use fastrpc::ffi::client_config::*;
use fastrpc::ffi::completion_queue::*;
use fastrpc::ffi::fastrpc_status;
use fastrpc::ffi::fastrpc_status::*;
use fastrpc::ffi::request::*;
use fastrpc::ffi::response::*;
use fastrpc::ffi::server::*;
use fastrpc::ffi::server_config::*;
use fastrpc::ffi::status::*;

fn last_error() -> String {
    let mut buf = vec![0u8; 1024];
    let mut n = 0usize;
    fastrpc_last_error_message(buf.as_mut_ptr().cast(), buf.len(), &mut n);
    buf.truncate(n.min(1023));
    String::from_utf8_lossy(&buf).into_owned()
}

#[track_caller]
fn expect_status(got: fastrpc_status, want: fastrpc_status, fragment: &str) {
    assert_eq!(got, want, "last error: {}", last_error());
    if !fragment.is_empty() {
        let e = last_error();
        assert!(e.contains(fragment), "last error {e:?} lacks {fragment:?}");
    }
}

/// Runs `f` on a plain thread: the C ABI's blocking calls refuse runtime threads (the
/// blocking pool's included).
async fn on_plain_thread(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    if let Err(p) = rx.await.expect("the thread ended") {
        std::panic::resume_unwind(p);
    }
}

fn ffi_warm_up() {
    let mut r = std::ptr::null_mut();
    fastrpc_response_new(&mut r);
    fastrpc_response_free(r);
    let _ = last_error();
}

extern "C" fn never_called(_: *mut c_void, _: fastrpc_status, r: *mut fastrpc_response) {
    fastrpc_response_free(r);
}

#[test]
fn ffi_null_pointers() {
    case("ffi_null_pointers", || {
        on_plain_thread(|| {
            let null_c: *const fastrpc_client = std::ptr::null();
            let mut r = std::ptr::null_mut();
            expect_status(fastrpc_response_new(&mut r), FASTRPC_STATUS_OK, "");
            expect_status(
                fastrpc_client_call(null_c, b"x".as_ptr(), 1, std::ptr::null(), 0, 0, r),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "`client` is NULL",
            );
            expect_status(
                fastrpc_client_config_builder_new(std::ptr::null_mut()),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "`out` is NULL",
            );
            let mut b = std::ptr::null_mut();
            expect_status(
                fastrpc_client_config_builder_new(&mut b),
                FASTRPC_STATUS_OK,
                "",
            );
            let addr = CString::new("127.0.0.1:9").unwrap();
            expect_status(
                fastrpc_client_config_builder_set_addr(b, addr.as_ptr()),
                FASTRPC_STATUS_OK,
                "",
            );
            expect_status(
                fastrpc_client_new(b, std::ptr::null_mut()),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "`out` is NULL",
            );
            let mut c = std::ptr::null_mut();
            expect_status(fastrpc_client_new(b, &mut c), FASTRPC_STATUS_OK, "");
            fastrpc_client_config_builder_free(b);
            expect_status(
                fastrpc_client_call(
                    c,
                    b"x".as_ptr(),
                    1,
                    std::ptr::null(),
                    0,
                    0,
                    std::ptr::null_mut(),
                ),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "`response` is NULL",
            );
            expect_status(
                fastrpc_client_call_async(
                    c,
                    b"x".as_ptr(),
                    1,
                    std::ptr::null(),
                    0,
                    0,
                    None,
                    std::ptr::null_mut(),
                ),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "`callback` is NULL",
            );
            expect_status(
                fastrpc_client_call_queued(
                    c,
                    b"x".as_ptr(),
                    1,
                    std::ptr::null(),
                    0,
                    0,
                    std::ptr::null(),
                    1,
                ),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "`queue` is NULL",
            );
            expect_status(
                fastrpc_client_get_stats(c, std::ptr::null_mut()),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "`out` is NULL",
            );
            expect_status(
                fastrpc_request_reply(std::ptr::null_mut(), std::ptr::null(), 0),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "`request` is NULL",
            );
            expect_status(
                fastrpc_server_new(
                    std::ptr::null(),
                    addr.as_ptr(),
                    None,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                ),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "is NULL",
            );
            assert_eq!(fastrpc_response_len(std::ptr::null()), 0);
            assert!(
                fastrpc_response_data(std::ptr::null()).is_null()
                    || fastrpc_response_len(std::ptr::null()) == 0
            );
            assert_eq!(fastrpc_client_pending_requests(std::ptr::null()), 0);
            // Every _free accepts NULL.
            fastrpc_client_free(std::ptr::null_mut());
            fastrpc_response_free(std::ptr::null_mut());
            fastrpc_server_free(std::ptr::null_mut());
            fastrpc_request_free(std::ptr::null_mut());
            fastrpc_completion_queue_free(std::ptr::null_mut());
            fastrpc_client_config_builder_free(std::ptr::null_mut());
            fastrpc_server_config_builder_free(std::ptr::null_mut());
            let _ = never_called;
            fastrpc_client_free(c);
            fastrpc_response_free(r);
        })
    });
}

#[test]
fn ffi_bad_buffers_and_text() {
    case("ffi_bad_buffers_and_text", || {
        on_plain_thread(|| {
            let mut b = std::ptr::null_mut();
            fastrpc_client_config_builder_new(&mut b);
            let addr = CString::new("127.0.0.1:9").unwrap();
            fastrpc_client_config_builder_set_addr(b, addr.as_ptr());
            let mut c = std::ptr::null_mut();
            expect_status(fastrpc_client_new(b, &mut c), FASTRPC_STATUS_OK, "");
            let mut r = std::ptr::null_mut();
            fastrpc_response_new(&mut r);
            // (NULL, n > 0) buffers.
            expect_status(
                fastrpc_client_call(c, std::ptr::null(), 5, std::ptr::null(), 0, 0, r),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "`name` is NULL with length 5",
            );
            expect_status(
                fastrpc_client_send(c, b"n".as_ptr(), 1, std::ptr::null(), 7),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "`value` is NULL with length 7",
            );
            expect_status(
                fastrpc_client_config_builder_set_sniff_header(b, std::ptr::null(), 3),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "is NULL with length 3",
            );
            // Text that is not UTF-8, and a NULL buffer with a length.
            let bad = [0xffu8, 0xfe, b':', b'1', 0];
            expect_status(
                fastrpc_client_config_builder_set_addr(b, bad.as_ptr() as *const c_char),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "not valid UTF-8",
            );
            let mut n = 0usize;
            expect_status(
                fastrpc_status_message(1, std::ptr::null_mut(), 10, &mut n),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "`buf` is NULL with a non-zero length",
            );
            // A buffer too small: cut, NUL-terminated, the full length reported.
            let mut small = [0x55u8; 4];
            let st = fastrpc_status_message(1, small.as_mut_ptr().cast(), 4, &mut n);
            assert_eq!(st, FASTRPC_STATUS_BUFFER_TOO_SMALL);
            assert_eq!(small[3], 0);
            assert!(n > 4);
            // An unknown status code still renders.
            let mut buf = [0u8; 128];
            assert_eq!(
                fastrpc_status_message(999, buf.as_mut_ptr().cast(), buf.len(), &mut n),
                FASTRPC_STATUS_OK
            );
            // A call too large for the client's limit.
            let big = vec![0u8; LIMIT + 1];
            expect_status(
                fastrpc_client_call(c, b"x".as_ptr(), 1, big.as_ptr(), big.len(), 0, r),
                FASTRPC_STATUS_TOO_LARGE,
                "exceeds max_frame_size",
            );
            assert_eq!(fastrpc_response_status(r), FASTRPC_STATUS_TOO_LARGE);
            let mut m = [0u8; 256];
            fastrpc_response_error_message(r, m.as_mut_ptr().cast(), m.len(), &mut n);
            assert!(String::from_utf8_lossy(&m[..n]).contains("exceeds max_frame_size"));
            fastrpc_response_free(r);
            fastrpc_client_free(c);
            fastrpc_client_config_builder_free(b);
        })
    });
}

#[test]
fn ffi_bad_configuration() {
    case("ffi_bad_configuration", || {
        on_plain_thread(|| {
            let mut b = std::ptr::null_mut();
            fastrpc_client_config_builder_new(&mut b);
            let mut c = std::ptr::null_mut();
            expect_status(
                fastrpc_client_new(b, &mut c),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "",
            );
            assert!(c.is_null(), "out-parameters are written only on success");
            for bad in ["nohost", "h:notaport", "unix:", ":80"] {
                let a = CString::new(bad).unwrap();
                let st = fastrpc_client_config_builder_set_addr(b, a.as_ptr());
                if st == FASTRPC_STATUS_OK {
                    expect_status(
                        fastrpc_client_new(b, &mut c),
                        FASTRPC_STATUS_INVALID_ARGUMENT,
                        "address",
                    );
                } else {
                    expect_status(st, FASTRPC_STATUS_INVALID_ARGUMENT, "");
                }
            }
            expect_status(
                fastrpc_client_config_builder_set_flate_level(b, 10),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "flate",
            );
            expect_status(
                fastrpc_client_config_builder_set_max_pending_requests(b, 0),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "max_pending_requests",
            );
            expect_status(
                fastrpc_client_config_builder_set_max_frame_size(b, 0),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "max_frame_size",
            );
            expect_status(
                fastrpc_client_config_builder_set_compression(b, 7),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "compression",
            );
            expect_status(
                fastrpc_client_config_builder_set_reconnect_backoff_ms(b, 100, 10),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "",
            );
            // Certificates are checked when the client is made.
            let mut tb = std::ptr::null_mut();
            fastrpc_client_config_builder_new(&mut tb);
            fastrpc_client_config_builder_set_addr(
                tb,
                CString::new("127.0.0.1:9").unwrap().as_ptr(),
            );
            expect_status(
                fastrpc_client_config_builder_set_tls_ca_pem(tb, b"not a pem".as_ptr(), 9),
                FASTRPC_STATUS_OK,
                "",
            );
            expect_status(fastrpc_client_new(tb, &mut c), FASTRPC_STATUS_TLS, "");
            assert!(c.is_null());
            fastrpc_client_config_builder_free(tb);
            let mut sb = std::ptr::null_mut();
            fastrpc_server_config_builder_new(&mut sb);
            expect_status(
                fastrpc_server_config_builder_set_concurrency(sb, 0),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "concurrency",
            );
            let mut s = std::ptr::null_mut();
            let a = CString::new("256.0.0.1:0").unwrap();
            extern "C" fn h(_: *mut c_void, r: *mut fastrpc_request) {
                fastrpc_request_free(r);
            }
            let st = fastrpc_server_new(sb, a.as_ptr(), Some(h), std::ptr::null_mut(), &mut s);
            assert_ne!(st, FASTRPC_STATUS_OK, "listening on 256.0.0.1");
            assert!(s.is_null());
            fastrpc_server_config_builder_free(sb);
            fastrpc_client_config_builder_free(b);
        })
    });
}

static DOUBLE_SECOND: AtomicU32 = AtomicU32::new(u32::MAX);

extern "C" fn answer_twice(_: *mut c_void, r: *mut fastrpc_request) {
    fastrpc_request_reply(r, b"once".as_ptr(), 4);
    DOUBLE_SECOND.store(
        fastrpc_request_reply(r, b"twice".as_ptr(), 5) as u32,
        SeqCst,
    );
    fastrpc_request_free(r);
}

/// Misuse through the C ABI: a second answer, calls on a closed client, a closed queue.
#[test]
fn ffi_double_answer_and_use_after_close() {
    case("ffi_double_answer_and_use_after_close", || async {
        // The C ABI blocks: run it on a plain thread, off this runtime.
        on_plain_thread(|| {
            let mut sb = std::ptr::null_mut();
            fastrpc_server_config_builder_new(&mut sb);
            let a = CString::new("127.0.0.1:0").unwrap();
            let mut s = std::ptr::null_mut();
            expect_status(
                fastrpc_server_new(
                    sb,
                    a.as_ptr(),
                    Some(answer_twice),
                    std::ptr::null_mut(),
                    &mut s,
                ),
                FASTRPC_STATUS_OK,
                "",
            );
            fastrpc_server_config_builder_free(sb);
            let mut buf = [0u8; 64];
            let mut n = 0;
            fastrpc_server_local_addr(s, buf.as_mut_ptr().cast(), buf.len(), &mut n);
            let mut b = std::ptr::null_mut();
            fastrpc_client_config_builder_new(&mut b);
            fastrpc_client_config_builder_set_addr(b, buf.as_ptr().cast());
            let mut c = std::ptr::null_mut();
            expect_status(fastrpc_client_new(b, &mut c), FASTRPC_STATUS_OK, "");
            fastrpc_client_config_builder_free(b);
            let mut r = std::ptr::null_mut();
            fastrpc_response_new(&mut r);
            expect_status(
                fastrpc_client_call(c, b"x".as_ptr(), 1, std::ptr::null(), 0, 5000, r),
                FASTRPC_STATUS_OK,
                "",
            );
            let got = unsafe {
                std::slice::from_raw_parts(fastrpc_response_data(r), fastrpc_response_len(r))
            };
            assert_eq!(got, b"once");
            assert_eq!(
                DOUBLE_SECOND.load(SeqCst),
                FASTRPC_STATUS_ALREADY_ANSWERED as u32
            );
            // Closed client: every way to call says CLOSED.
            expect_status(fastrpc_client_close(c, 0), FASTRPC_STATUS_OK, "");
            expect_status(
                fastrpc_client_call(c, b"x".as_ptr(), 1, std::ptr::null(), 0, 0, r),
                FASTRPC_STATUS_CLOSED,
                "closed",
            );
            expect_status(
                fastrpc_client_send(c, b"x".as_ptr(), 1, std::ptr::null(), 0),
                FASTRPC_STATUS_CLOSED,
                "closed",
            );
            expect_status(
                fastrpc_client_call_async(
                    c,
                    b"x".as_ptr(),
                    1,
                    std::ptr::null(),
                    0,
                    0,
                    Some(never_called),
                    std::ptr::null_mut(),
                ),
                FASTRPC_STATUS_CLOSED,
                "closed",
            );
            // A shut-down completion queue.
            let mut q = std::ptr::null_mut();
            fastrpc_completion_queue_new(&mut q);
            expect_status(fastrpc_completion_queue_shutdown(q), FASTRPC_STATUS_OK, "");
            let mut out: [fastrpc_completion; 4] = std::array::from_fn(|_| fastrpc_completion {
                tag: 0,
                status: FASTRPC_STATUS_OK,
                response: std::ptr::null_mut(),
            });
            let mut k = 0usize;
            expect_status(
                fastrpc_completion_queue_poll(q, out.as_mut_ptr(), 4, 10, &mut k),
                FASTRPC_STATUS_CLOSED,
                "",
            );
            expect_status(
                fastrpc_completion_queue_poll(q, std::ptr::null_mut(), 4, 10, &mut k),
                FASTRPC_STATUS_INVALID_ARGUMENT,
                "",
            );
            fastrpc_completion_queue_free(q);
            fastrpc_response_free(r);
            fastrpc_client_free(c);
            expect_status(fastrpc_server_stop(s, 1000), FASTRPC_STATUS_OK, "");
            fastrpc_server_free(s);
        })
        .await;
    });
}
