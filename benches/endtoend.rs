//! End-to-end benchmarks over TCP loopback, named and shaped like the reference's
//! (valyala/fastrpc `server_timing_test.go`): `BenchmarkEndToEndNoDelay1` ... `10K`,
//! `Delay1ms` ... `16ms`, `CompressNone/Flate/Snappy`, `TLSCompressNone/Flate/Snappy`,
//! `Pipeline1` ... `1000`, `SendNowait`.
//!
//! ```sh
//! cargo bench --bench endtoend                      # ~1 s per benchmark (Go's default benchtime)
//! cargo bench --bench endtoend -- --quick           # ~0.3 s each, whole table < 1 minute
//! FASTRPC_BENCH_QUICK=1 cargo bench --bench endtoend
//! cargo bench --bench endtoend -- NoDelay Compress  # only names containing one of these
//! cargo bench --bench endtoend -- --count 3 --benchtime 2s
//! cargo bench --bench endtoend -- --list
//! ```
//!
//! Shape (as the reference): server and clients in this process on one tokio runtime with
//! one worker per CPU (Go: GOMAXPROCS = CPUs), a real TCP loopback socket between them.
//! `NumCPU` clients (one connection each); `parallelism x NumCPU` callers (Go's
//! `b.SetParallelism(p)` + `RunParallel`), caller `i` on client `i % NumCPU`, each looping
//! `Client::call_into` with its own reused buffer (Go: `DoDeadline` with a reused
//! request/response) and checking the reply length. Server concurrency and client
//! `max_pending_requests` are `parallelism x NumCPU`; with a client batch delay the server's
//! is 100 us (as the reference). Request: name `foo`, value `foobar`; reply: a fixed
//! 255-byte text (Go: `b.SetBytes(len(body))`, so MB/s counts reply bytes).
//!
//! Columns (Go's `-benchmem` format, so `benchstat` reads it): iterations (calls completed
//! in the measured window), ns/op (window / calls: the inverse of throughput, as Go's
//! RunParallel), MB/s, B/op and allocs/op (a counting global allocator over the whole process,
//! client and server together, during the window only: steady state), and frames/flush on
//! the client side (how many requests share one write).
//!
//! `BenchmarkSendNowait`: `NumCPU` senders, each with its own client (max 100 queued sends,
//! as the reference), looping `Client::send` and yielding when the queue is full; the
//! server (pipelined, concurrency NumCPU+1) counts the requests it reads. ns/op is the
//! window divided by requests *received by the server*.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastrpc::{
    Call, Client, ClientConfig, ClientStats, CloseMode, Compression, ErrorKind, Server,
    ServerConfig, TlsClientConfig, TlsServerConfig,
};

// ---------------------------------------------------------------------------------------
// Allocation counting

struct CountingAlloc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(l.size() as u64, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(l.size() as u64, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // A realloc counts as one allocation (Go counts a grown slice as one too).
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(n as u64, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

// ---------------------------------------------------------------------------------------
// The benchmark table

const NAME: &[u8] = b"foo";
const VALUE: &[u8] = b"foobar";
/// The reply: 255 bytes of ordinary text (compressible the way text is, unlike 255 x 'x').
const BODY_SRC: &[u8] = b"fastrpc end-to-end benchmark reply: many calls share one connection, \
are batched into few writes, compressed with flate or snappy and optionally encrypted; this \
text is the response value every call gets back, 255 bytes long, checked by length 0123456789 \
abcdefghijklmnopqrstuvwxyz";
const BODY_LEN: usize = 255;

fn body() -> &'static [u8] {
    &BODY_SRC[..BODY_LEN]
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    EndToEnd {
        parallelism: usize,
        delay: Duration,
        compress: Compression,
        tls: bool,
        pipeline: bool,
    },
    SendNowait,
}

struct Spec {
    name: &'static str,
    kind: Kind,
}

const fn e2e(
    name: &'static str,
    parallelism: usize,
    delay_ms: u64,
    compress: Compression,
    tls: bool,
    pipeline: bool,
) -> Spec {
    Spec {
        name,
        kind: Kind::EndToEnd {
            parallelism,
            delay: Duration::from_millis(delay_ms),
            compress,
            tls,
            pipeline,
        },
    }
}

const NONE: Compression = Compression::None;
const FLATE: Compression = Compression::Flate;
const SNAPPY: Compression = Compression::Snappy;

/// The reference's table, in its order.
#[rustfmt::skip]
const TABLE: &[Spec] = &[
    e2e("BenchmarkEndToEndNoDelay1", 1, 0, NONE, false, false),
    e2e("BenchmarkEndToEndNoDelay10", 10, 0, NONE, false, false),
    e2e("BenchmarkEndToEndNoDelay100", 100, 0, NONE, false, false),
    e2e("BenchmarkEndToEndNoDelay1000", 1000, 0, NONE, false, false),
    e2e("BenchmarkEndToEndNoDelay10K", 10000, 0, NONE, false, false),
    e2e("BenchmarkEndToEndDelay1ms", 1000, 1, NONE, false, false),
    e2e("BenchmarkEndToEndDelay2ms", 1000, 2, NONE, false, false),
    e2e("BenchmarkEndToEndDelay4ms", 1000, 4, NONE, false, false),
    e2e("BenchmarkEndToEndDelay8ms", 1000, 8, NONE, false, false),
    e2e("BenchmarkEndToEndDelay16ms", 1000, 16, NONE, false, false),
    e2e("BenchmarkEndToEndCompressNone", 1000, 1, NONE, false, false),
    e2e("BenchmarkEndToEndCompressFlate", 1000, 1, FLATE, false, false),
    e2e("BenchmarkEndToEndCompressSnappy", 1000, 1, SNAPPY, false, false),
    e2e("BenchmarkEndToEndTLSCompressNone", 1000, 1, NONE, true, false),
    e2e("BenchmarkEndToEndTLSCompressFlate", 1000, 1, FLATE, true, false),
    e2e("BenchmarkEndToEndTLSCompressSnappy", 1000, 1, SNAPPY, true, false),
    e2e("BenchmarkEndToEndPipeline1", 1, 0, NONE, false, true),
    e2e("BenchmarkEndToEndPipeline10", 10, 0, NONE, false, true),
    e2e("BenchmarkEndToEndPipeline100", 100, 0, NONE, false, true),
    e2e("BenchmarkEndToEndPipeline1000", 1000, 0, NONE, false, true),
    Spec {
        name: "BenchmarkSendNowait",
        kind: Kind::SendNowait,
    },
];

// ---------------------------------------------------------------------------------------
// Options

struct Opts {
    benchtime: Duration,
    warmup: Duration,
    count: usize,
    filters: Vec<String>,
    list: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mul) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(format!("duration {s:?}: want e.g. 300ms, 1s, 2.5s"));
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: {num:?} is not a number"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(v * mul))
}

fn usage() -> ! {
    eprintln!(
        "usage: cargo bench --bench endtoend -- [--quick] [--benchtime D] [--count N] [--list] \
         [FILTER...]\n\
         \n\
         --quick        ~0.3 s per benchmark (also FASTRPC_BENCH_QUICK=1)\n\
         --benchtime D  measured time per benchmark (default 1s; FASTRPC_BENCHTIME)\n\
         --count N      run each benchmark N times (default 1)\n\
         --list         print the names and exit\n\
         FILTER         run only benchmarks whose name contains one of these"
    );
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    let env_quick = std::env::var("FASTRPC_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut quick = env_quick;
    let mut benchtime: Option<Duration> = match std::env::var("FASTRPC_BENCHTIME") {
        Ok(s) => Some(parse_duration(&s).unwrap_or_else(|e| {
            eprintln!("FASTRPC_BENCHTIME: {e}");
            usage()
        })),
        Err(_) => None,
    };
    let mut count = 1usize;
    let mut filters = Vec::new();
    let mut list = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        // `-x=v` / `--x=v` / `--x v`, Go-style single dash accepted too.
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with('-') => {
                (k.trim_start_matches('-').to_string(), Some(v.to_string()))
            }
            _ => (a.trim_start_matches('-').to_string(), None),
        };
        if !a.starts_with('-') {
            filters.push(a);
            continue;
        }
        let mut value = |inline: Option<String>| -> String {
            inline.or_else(|| args.next()).unwrap_or_else(|| usage())
        };
        match key.as_str() {
            // cargo bench passes --bench to harness = false targets.
            "bench" => {}
            "quick" => quick = true,
            "list" => list = true,
            "benchtime" => {
                benchtime = Some(parse_duration(&value(inline)).unwrap_or_else(|e| {
                    eprintln!("--benchtime: {e}");
                    usage()
                }))
            }
            "count" => {
                count = value(inline)
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage())
            }
            "h" | "help" => usage(),
            _ => {
                eprintln!("unknown option {a:?}");
                usage()
            }
        }
    }
    // `cargo test --all-targets` runs this target without --bench: then only a smoke run
    // (every benchmark briefly, so they keep working), not a measurement.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let benchtime = benchtime.unwrap_or(if smoke {
        // Long enough for the slowest shape (flate, 1000 callers) in an unoptimised build.
        Duration::from_millis(500)
    } else if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(1)
    });
    // Warm-up before the window: connections, buffers, pools and call tables reach their
    // working size (the window then sees steady state only; see `window`).
    let warmup = (benchtime / 3).clamp(Duration::from_millis(100), Duration::from_millis(500));
    Opts {
        benchtime,
        warmup,
        count,
        filters,
        list,
    }
}

// ---------------------------------------------------------------------------------------
// Measurements

/// A counter owned by one task, on its own cache line.
#[repr(align(64))]
#[derive(Default)]
struct Slot(AtomicU64);

struct Measured {
    ops: u64,
    elapsed: Duration,
    allocs: u64,
    alloc_bytes: u64,
    frames_per_flush: Option<f64>,
    errors: u64,
    bytes_per_op: Option<usize>,
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("cannot build the tokio runtime")
}

struct TlsPair {
    server: TlsServerConfig,
    client: TlsClientConfig,
}

fn tls_pair() -> TlsPair {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("rcgen: cannot make a certificate");
    let server = TlsServerConfig {
        cert_pem: ck.cert.pem().into_bytes(),
        key_pem: ck.key_pair.serialize_pem().into_bytes(),
        ..Default::default()
    };
    // As the reference's benchmark: InsecureSkipVerify.
    let client = TlsClientConfig {
        insecure_skip_verify_for_testing_only: true,
        server_name: Some("localhost".to_string()),
        ..Default::default()
    };
    TlsPair { server, client }
}

fn sum_io(clients: &[Client]) -> (u64, u64) {
    clients
        .iter()
        .map(Client::stats)
        .fold((0, 0), |(f, n), s: ClientStats| {
            (f + s.io.frames_sent, n + s.io.flushes)
        })
}

fn snapshot(slots: &[Slot]) -> u64 {
    slots.iter().map(|s| s.0.load(Relaxed)).sum()
}

/// Lets the work run for `warmup` and until `min_ops` operations completed (at most 5 s
/// more), then measures `benchtime` of it.
///
/// `min_ops` matters with many callers: the client's call table has about 2 x
/// max_pending cells and ids go round all of them, each cell getting its response buffer on
/// first use, so steady state starts once every cell was used (8 calls per caller covers
/// it); before that, allocations are warm-up, not per-call cost.
fn window(
    opts: &Opts,
    min_ops: u64,
    ops: impl Fn() -> u64,
    io: impl Fn() -> (u64, u64),
) -> (u64, Duration, u64, u64, Option<f64>) {
    std::thread::sleep(opts.warmup);
    let limit = Instant::now() + Duration::from_secs(5);
    while ops() < min_ops && Instant::now() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (f0, n0) = io();
    let (a0, b0) = (ALLOCS.load(Relaxed), ALLOC_BYTES.load(Relaxed));
    let c0 = ops();
    let t0 = Instant::now();
    std::thread::sleep(opts.benchtime);
    let c1 = ops();
    let t1 = Instant::now();
    let (a1, b1) = (ALLOCS.load(Relaxed), ALLOC_BYTES.load(Relaxed));
    let (f1, n1) = io();
    let fpf = (n1 > n0).then(|| (f1 - f0) as f64 / (n1 - n0) as f64);
    (c1 - c0, t1 - t0, a1 - a0, b1 - b0, fpf)
}

fn run_endtoend(
    opts: &Opts,
    parallelism: usize,
    delay: Duration,
    compress: Compression,
    tls: bool,
    pipeline: bool,
) -> Result<Measured, String> {
    let ncpu = cpus();
    let callers = parallelism * ncpu;
    let rt = runtime(ncpu);
    let tls = tls.then(tls_pair);
    let (server, clients) = rt.block_on(async {
        let mut scfg = ServerConfig::default();
        scfg.compress_type = compress;
        scfg.concurrency = callers;
        scfg.max_batch_delay = if delay.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_micros(100)
        };
        scfg.pipeline_requests = pipeline;
        scfg.tls = tls.as_ref().map(|t| t.server.clone());
        let server = Server::bind("127.0.0.1:0", scfg, |call: Call| {
            let _ = call.reply(body());
        })
        .await
        .map_err(|e| format!("server: {e}"))?;
        let mut clients = Vec::with_capacity(ncpu);
        for _ in 0..ncpu {
            let mut c = ClientConfig::new(server.local_addr());
            c.compress_type = compress;
            c.max_pending_requests = callers;
            c.max_batch_delay = delay;
            c.request_timeout = Duration::from_secs(3600);
            c.tls = tls.as_ref().map(|t| t.client.clone());
            let client = Client::new(c).map_err(|e| format!("client: {e}"))?;
            // Connect before the callers start.
            client
                .call(NAME, VALUE)
                .await
                .map_err(|e| format!("first call: {e}"))?;
            clients.push(client);
        }
        Ok::<_, String>((server, clients))
    })?;

    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<[Slot]> = (0..callers).map(|_| Slot::default()).collect();
    let errs: Arc<[Slot]> = (0..callers).map(|_| Slot::default()).collect();
    let mut tasks = Vec::with_capacity(callers);
    for i in 0..callers {
        let client = clients[i % ncpu].clone();
        let (stop, done, errs) = (stop.clone(), done.clone(), errs.clone());
        tasks.push(rt.spawn(async move {
            let mut buf = Vec::with_capacity(BODY_LEN);
            let (mut n, mut bad) = (0u64, 0u64);
            while !stop.load(Relaxed) {
                match client.call_into(NAME, VALUE, &mut buf).await {
                    Ok(()) if buf.len() == BODY_LEN => {
                        n += 1;
                        done[i].0.store(n, Relaxed);
                    }
                    Ok(()) => {
                        bad += 1;
                        errs[i].0.store(bad, Relaxed);
                    }
                    Err(e) => {
                        bad += 1;
                        errs[i].0.store(bad, Relaxed);
                        if e.kind() == ErrorKind::Closed {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                }
            }
        }));
    }
    let (ops, elapsed, allocs, alloc_bytes, fpf) = window(
        opts,
        8 * callers as u64,
        || snapshot(&done),
        || sum_io(&clients),
    );
    let errors = snapshot(&errs);
    stop.store(true, Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        for c in &clients {
            c.close(CloseMode::Cancel).await;
        }
        let _ = server.stop(Duration::from_secs(1)).await;
    });
    drop(clients);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(Measured {
        ops,
        elapsed,
        allocs,
        alloc_bytes,
        frames_per_flush: fpf,
        errors,
        bytes_per_op: Some(BODY_LEN),
    })
}

fn run_send_nowait(opts: &Opts) -> Result<Measured, String> {
    let ncpu = cpus();
    let rt = runtime(ncpu);
    let received = Arc::new(Slot::default());
    let (server, clients) = rt.block_on(async {
        let mut scfg = ServerConfig::default();
        scfg.compress_type = Compression::None;
        scfg.concurrency = ncpu + 1;
        scfg.pipeline_requests = true;
        let r = received.clone();
        let server = Server::bind("127.0.0.1:0", scfg, move |call: Call| {
            r.0.fetch_add(1, Relaxed);
            let _ = call.reply(&[]);
        })
        .await
        .map_err(|e| format!("server: {e}"))?;
        let mut clients = Vec::with_capacity(ncpu);
        for _ in 0..ncpu {
            let mut c = ClientConfig::new(server.local_addr());
            c.compress_type = Compression::None;
            c.max_pending_requests = 100;
            let client = Client::new(c).map_err(|e| format!("client: {e}"))?;
            client
                .call(NAME, VALUE)
                .await
                .map_err(|e| format!("first call: {e}"))?;
            clients.push(client);
        }
        Ok::<_, String>((server, clients))
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let errs: Arc<[Slot]> = (0..ncpu).map(|_| Slot::default()).collect();
    let mut tasks = Vec::with_capacity(ncpu);
    for (i, client) in clients.iter().enumerate() {
        let (client, stop, errs) = (client.clone(), stop.clone(), errs.clone());
        tasks.push(rt.spawn(async move {
            let mut bad = 0u64;
            while !stop.load(Relaxed) {
                match client.send(NAME, VALUE) {
                    Ok(()) => {}
                    // The send queue is full: let the writer run (Go: runtime.Gosched()).
                    Err(e) if e.kind() == ErrorKind::Overflow => tokio::task::yield_now().await,
                    Err(e) => {
                        bad += 1;
                        errs[i].0.store(bad, Relaxed);
                        if e.kind() == ErrorKind::Closed {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                }
            }
        }));
    }
    let (ops, elapsed, allocs, alloc_bytes, fpf) =
        window(opts, 0, || received.0.load(Relaxed), || sum_io(&clients));
    let errors = snapshot(&errs);
    stop.store(true, Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        for c in &clients {
            c.close(CloseMode::Cancel).await;
        }
        let _ = server.stop(Duration::from_secs(1)).await;
    });
    drop(clients);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(Measured {
        ops,
        elapsed,
        allocs,
        alloc_bytes,
        frames_per_flush: fpf,
        errors,
        bytes_per_op: None,
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let opts = parse_opts();
    let selected: Vec<&Spec> = TABLE
        .iter()
        .filter(|s| {
            opts.filters.is_empty() || opts.filters.iter().any(|f| s.name.contains(f.as_str()))
        })
        .collect();
    if opts.list {
        for s in &selected {
            println!("{}", s.name);
        }
        return;
    }
    let ncpu = cpus();
    println!("goos: {}", std::env::consts::OS);
    println!("goarch: {}", std::env::consts::ARCH);
    println!(
        "pkg: fastrpc {} (benches/endtoend.rs, TCP loopback, in-process)",
        env!("CARGO_PKG_VERSION")
    );
    println!("cpu: {} ({ncpu} CPUs)", cpu_model());
    println!(
        "benchtime: {:?} after {:?} warm-up; allocations: whole process (client + server) during the window",
        opts.benchtime, opts.warmup
    );
    let start = Instant::now();
    let mut failed = false;
    for spec in &selected {
        for _ in 0..opts.count {
            let r = match spec.kind {
                Kind::EndToEnd {
                    parallelism,
                    delay,
                    compress,
                    tls,
                    pipeline,
                } => run_endtoend(&opts, parallelism, delay, compress, tls, pipeline),
                Kind::SendNowait => run_send_nowait(&opts),
            };
            let name = format!("{}-{ncpu}", spec.name);
            match r {
                Ok(r) if r.ops > 0 => {
                    let ns = r.elapsed.as_nanos() as f64 / r.ops as f64;
                    let mut line = format!("{name:<40}\t{:>10}\t{:>12.1} ns/op", r.ops, ns);
                    if let Some(b) = r.bytes_per_op {
                        let mbs = (r.ops as f64 * b as f64) / r.elapsed.as_secs_f64() / 1e6;
                        line += &format!("\t{mbs:>8.2} MB/s");
                    }
                    line += &format!(
                        "\t{:>8.2} B/op\t{:>8.3} allocs/op",
                        r.alloc_bytes as f64 / r.ops as f64,
                        r.allocs as f64 / r.ops as f64
                    );
                    if let Some(f) = r.frames_per_flush {
                        line += &format!("\t{f:>8.1} frames/flush");
                    }
                    if r.errors > 0 {
                        line += &format!("\t{} errors", r.errors);
                        failed = true;
                    }
                    println!("{line}");
                }
                Ok(r) => {
                    println!(
                        "{name:<40}\tFAIL: no call completed in {:?} ({} errors)",
                        r.elapsed, r.errors
                    );
                    failed = true;
                }
                Err(e) => {
                    println!("{name:<40}\tFAIL: {e}");
                    failed = true;
                }
            }
        }
    }
    println!(
        "{}\nok  \tfastrpc/benches/endtoend\t{:.3}s",
        if failed { "FAIL" } else { "PASS" },
        start.elapsed().as_secs_f64()
    );
    if failed {
        std::process::exit(1);
    }
}
