//! `fastrpc bench`: C callers per connection on K connections, each looping
//! `Client::call_into` with its own reused buffer, recording latencies into the histogram of
//! the worker thread it runs on (no allocation per call), against an external server, one in this process, or a child
//! `fastrpc serve`. `--raw` runs the same traffic shape without the engine (see `raw.rs`);
//! `--compare-raw` runs both and prints the ratio. With several servers (`--addr a,b,c`,
//! `--servers K`) or `--balance`, the callers share one `BalancedClient` with `--connections`
//! connections to each server.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use fastrpc::{
    BackendState, BalancedClient, BalancedConfig, Client, ClientStats, CloseMode, Error, ErrorKind,
    Server,
};
use hdrhistogram::Histogram;

use crate::opts::{
    self, client_config, cpu_times, parse_duration, ClientTlsOpts, ProtoOpts, Reply, ServerTlsOpts,
    EXIT_USAGE,
};
use crate::raw::{raw_client, Handshake, RawJob, RawPeer};
use crate::raw_tasks::raw_client_tasks;
use crate::report::{self, Report, ServerShare};
use crate::serve;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SpawnMode {
    /// A server in this process, on the bench's runtime.
    Inproc,
    /// `fastrpc serve` as a child process (this same executable).
    Child,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Server to benchmark (host:port or unix:/path). Several separated by commas
    /// (`a:1,b:2,c:3`) are called through the balancing client; a host name stands for every
    /// address it resolves to there. Without it a server is spawned.
    #[arg(long, value_name = "ADDR[,ADDR...]", conflicts_with_all = ["spawn_server", "servers"])]
    pub addr: Option<String>,
    /// Spawn this many servers and call them through the balancing client.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub servers: usize,
    /// Use the balancing client even with one server (its `--connections` connections are
    /// then chosen per call by load instead of each having its own callers).
    #[arg(long)]
    pub balance: bool,
    /// Spawn the server: "inproc" (in this process) or "child" (`fastrpc serve` as a child
    /// process; the default when neither --addr nor --spawn-server is given).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "child", value_name = "HOW")]
    pub spawn_server: Option<SpawnMode>,
    /// The raw peer (`fastrpc serve --raw`) for --compare-raw when --addr is given
    /// (default: start one as a child process).
    #[arg(long, value_name = "ADDR")]
    pub raw_addr: Option<String>,
    /// Calls in flight per connection (concurrent callers).
    #[arg(long, default_value_t = 1024, value_name = "C")]
    pub concurrency: usize,
    /// Connections per server. Without the balancing client: K clients, each with its own
    /// --concurrency callers. With it: K connections to each server inside one balanced
    /// client, shared by --concurrency callers per connection.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub connections: usize,
    /// How long to run.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Run this many calls instead of a duration.
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    pub count: Option<u64>,
    /// Request value size in bytes ("foobar" repeated).
    #[arg(long, default_value_t = 6, value_name = "BYTES")]
    pub value_size: usize,
    /// Request name.
    #[arg(long, default_value = "foo")]
    pub name: String,
    /// Reply size of a spawned server, bytes.
    #[arg(long, default_value_t = 255, value_name = "BYTES")]
    pub reply_size: usize,
    /// Measure fire-and-forget sends per second instead of calls.
    #[arg(long)]
    pub nowait: bool,
    /// Measure the raw ceiling only: the same frames over plain TCP, no RPC machinery.
    #[arg(long, conflicts_with = "compare_raw")]
    pub raw: bool,
    /// Run the raw ceiling, then the engine, with the same shape; print both and their ratio.
    #[arg(long)]
    pub compare_raw: bool,
    /// The raw ceiling with a tokio task per call in flight, woken by the reader when its
    /// response arrives (the engine callers' shape, see raw_tasks.rs), instead of one writer
    /// loop refilling the window. Not with --nowait.
    #[arg(long, conflicts_with = "nowait")]
    pub raw_tasks: bool,
    /// With --raw --addr: open each raw connection with the protocol's plaintext handshake
    /// (--sniff, --protocol-version; no compression, no TLS), so that the raw client measures
    /// a real fastrpc server, ours or the Go library's, that answers uncompressed: the cheapest
    /// client that server can have, a bound for any other client of it.
    #[arg(long)]
    pub raw_handshake: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// After the engine's run, keep its connections open and idle this long and report the
    /// CPU that this process and a spawned child server used meanwhile (percent of one core:
    /// an idle client or server should not burn CPU).
    #[arg(long, default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    pub idle: Duration,
    /// Worker threads of the bench's runtime.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub threads: usize,
    /// Worker threads of a child server.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub server_threads: usize,
    /// Max batch delay of the client and of a spawned server (0, 500us, 2ms).
    #[arg(long, default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    pub batch_delay: Duration,
    /// Client max_pending_requests (default: the larger of 1000 and --concurrency).
    #[arg(long, value_name = "N")]
    pub max_pending: Option<usize>,
    /// Deadline of each call.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// No live progress line on stderr.
    #[arg(long)]
    pub no_progress: bool,
    /// Certificate of a spawned server (with --tls), PEM.
    #[arg(long, value_name = "FILE", requires = "server_tls_key")]
    pub server_tls_cert: Option<std::path::PathBuf>,
    /// Private key of a spawned server's certificate, PEM.
    #[arg(long, value_name = "FILE", requires = "server_tls_cert")]
    pub server_tls_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub proto: ProtoOpts,
    #[command(flatten)]
    pub tls: ClientTlsOpts,
}

/// Latency histogram: nanoseconds, 1 ns to 60 s, 2 significant digits (exact below 256 ns,
/// within 1% above). About 30 KiB each, allocated once per caller.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid histogram bounds")
}

/// One latency histogram per runtime worker thread, shared by the callers that run there.
///
/// Not one per caller: with C = 1024 callers, 1024 histograms of ~30 KiB each (30 MiB) made
/// nearly every `record` a cache miss, which cost ~19% of the bench client's CPU (perf:
/// `Histogram::record_n_inner`) and lowered the engine's measured calls/s. A worker's
/// histogram stays in its cache; its mutex is uncontended until the merge at the end.
type SharedHist = Arc<Mutex<Histogram<u64>>>;

static THREAD_HISTS: Mutex<Vec<SharedHist>> = Mutex::new(Vec::new());

thread_local! {
    static THREAD_HIST: RefCell<Option<SharedHist>> = const { RefCell::new(None) };
}

/// Records one latency (ns) into this thread's histogram (allocated on the thread's first
/// record, once per thread).
#[inline]
fn record_latency(ns: u64) {
    THREAD_HIST.with(|cell| {
        let mut cell = cell.borrow_mut();
        let h = cell.get_or_insert_with(|| {
            let h = Arc::new(Mutex::new(new_histogram()));
            THREAD_HISTS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(h.clone());
            h
        });
        h.lock()
            .unwrap_or_else(|e| e.into_inner())
            .saturating_record(ns.max(1));
    });
}

/// Merges every thread's histogram into `into` and empties them (for the next run).
fn take_latencies(into: &mut Histogram<u64>) -> Result<(), Error> {
    let all = THREAD_HISTS.lock().unwrap_or_else(|e| e.into_inner());
    for h in all.iter() {
        let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
        if !h.is_empty() {
            into.add(&*h)
                .map_err(|e| Error::new(ErrorKind::Io, format!("merging histograms: {e:?}")))?;
            h.reset();
        }
    }
    Ok(())
}

/// How many calls may still start: a count shared by all callers, or until stopped.
pub struct Budget {
    limit: Option<u64>,
    issued: AtomicU64,
    stop: AtomicBool,
}

impl Budget {
    pub fn new(limit: Option<u64>) -> Budget {
        Budget {
            limit,
            issued: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    /// Takes up to `n` calls; returns how many may start (0: the run is over).
    #[inline]
    pub fn take(&self, n: u64) -> u64 {
        if self.stop.load(Relaxed) {
            return 0;
        }
        let Some(limit) = self.limit else { return n };
        let prev = self.issued.fetch_add(n, Relaxed);
        if prev >= limit {
            0
        } else {
            n.min(limit - prev)
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }

    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
    }
}

/// A request value of `n` bytes: "foobar" repeated.
fn make_value(n: usize) -> Vec<u8> {
    b"foobar".iter().copied().cycle().take(n).collect()
}

/// Where one run's server is.
enum Target {
    Addr(String),
    Spawn(SpawnMode),
}

pub fn run(args: BenchArgs) -> i32 {
    if args.concurrency == 0 || args.connections == 0 || args.threads == 0 {
        eprintln!("fastrpc bench: --concurrency, --connections and --threads must be at least 1");
        return EXIT_USAGE;
    }
    if args.count == Some(0) {
        eprintln!("fastrpc bench: --count must be at least 1");
        return EXIT_USAGE;
    }
    if args.servers == 0 || args.servers > 64 {
        eprintln!("fastrpc bench: --servers must be 1..=64");
        return EXIT_USAGE;
    }
    if args.raw_tasks && !args.raw && !args.compare_raw {
        eprintln!("fastrpc bench: --raw-tasks shapes the raw ceiling: add --raw or --compare-raw");
        return EXIT_USAGE;
    }
    if args.raw_handshake && !(args.raw && args.addr.is_some()) {
        eprintln!("fastrpc bench: --raw-handshake opens raw connections to a real server: add --raw and --addr");
        return EXIT_USAGE;
    }
    if balanced(&args) && args.nowait {
        eprintln!("fastrpc bench: --nowait is not supported with the balancing client");
        return EXIT_USAGE;
    }
    let spawn = args.spawn_server.unwrap_or(SpawnMode::Child);
    let needs_server_tls = args.tls.enabled() && args.addr.is_none() && !args.raw;
    if needs_server_tls && args.server_tls_cert.is_none() {
        eprintln!(
            "fastrpc bench: TLS against a spawned server needs --server-tls-cert and \
             --server-tls-key"
        );
        return EXIT_USAGE;
    }
    let rt = match opts::runtime(args.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fastrpc bench: io: cannot start the runtime: {e}");
            return 11;
        }
    };
    let mut raw_report = None;
    let mut engine_report = None;
    if args.raw || args.compare_raw {
        let target = match (&args.raw_addr, args.raw, &args.addr) {
            (Some(a), _, _) => Target::Addr(a.clone()),
            (None, true, Some(a)) => Target::Addr(a.clone()),
            _ => Target::Spawn(spawn),
        };
        match run_phase(&rt, &args, true, target) {
            Ok(r) => raw_report = Some(r),
            Err(e) => return opts::fail("bench", &e),
        }
    }
    if !args.raw {
        let target = match &args.addr {
            Some(a) => Target::Addr(a.clone()),
            None => Target::Spawn(spawn),
        };
        match run_phase(&rt, &args, false, target) {
            Ok(r) => engine_report = Some(r),
            Err(e) => return opts::fail("bench", &e),
        }
    }
    report::print(raw_report.as_ref(), engine_report.as_ref(), args.json);
    // Exit 0 when the run's calls succeeded; when more than MAX_ERROR_SHARE of them failed
    // (all of them, say, with no server), exit with the code of the most frequent error.
    let last = engine_report.as_ref().or(raw_report.as_ref());
    match last {
        Some(r)
            if r.errors_total() as f64 > MAX_ERROR_SHARE * (r.calls + r.errors_total()) as f64 =>
        {
            if r.calls > 0 {
                eprintln!(
                    "bench: {} of {} calls failed (more than {}%): the run failed",
                    r.errors_total(),
                    r.calls + r.errors_total(),
                    MAX_ERROR_SHARE * 100.0
                );
            }
            let (i, _) = r
                .errors
                .iter()
                .enumerate()
                .max_by_key(|(_, n)| **n)
                .unwrap_or((0, &0));
            opts::exit_code(ErrorKind::ALL[i])
        }
        _ => 0,
    }
}

/// Whether the engine runs through the balancing client.
fn balanced(args: &BenchArgs) -> bool {
    args.balance || args.servers > 1 || args.addr.as_deref().is_some_and(|a| a.contains(','))
}

/// Servers the engine calls: the addresses in --addr, or --servers.
fn n_servers(args: &BenchArgs) -> usize {
    match &args.addr {
        Some(a) => a.split(',').count(),
        None => args.servers,
    }
}

/// The server of one run, kept alive until the run ends.
enum Running {
    External,
    Inproc(Server),
    InprocRaw(RawPeer),
    Child(ChildServer),
}

fn run_phase(
    rt: &tokio::runtime::Runtime,
    args: &BenchArgs,
    raw: bool,
    target: Target,
) -> Result<Report, Error> {
    let (addr, runnings, desc) = match target {
        Target::Addr(a) => (a, vec![Running::External], "external".to_string()),
        Target::Spawn(mode) => {
            // The raw ceiling is one peer taking all the connections; the engine gets
            // --servers servers.
            let n = if raw { 1 } else { args.servers };
            let mut addrs = Vec::with_capacity(n);
            let mut runnings = Vec::with_capacity(n);
            let mut descs = Vec::with_capacity(n);
            for _ in 0..n {
                let (a, r, d) = spawn_one(rt, args, raw, mode)?;
                addrs.push(a);
                runnings.push(r);
                descs.push(d);
            }
            descs.dedup();
            (addrs.join(","), runnings, descs.join(", "))
        }
    };
    let child_pids: Vec<u32> = runnings
        .iter()
        .filter_map(|r| match r {
            Running::Child(c) => Some(c.pid()),
            _ => None,
        })
        .collect();
    let name: Arc<[u8]> = args.name.as_bytes().into();
    let value: Arc<[u8]> = make_value(args.value_size).into();
    let measured = if raw {
        rt.block_on(raw_run(args, &addr, name, value, &child_pids))
    } else {
        rt.block_on(engine_run(args, &addr, name, value, &child_pids))
    };
    // Stop the servers whatever happened.
    let mut summaries = Vec::new();
    let mut rusage_cpu: Option<(f64, f64)> = None;
    for running in runnings {
        let (summary, cpu) = match running {
            Running::External => (None, None),
            Running::Inproc(s) => {
                let _ = rt.block_on(s.stop(serve::STOP_TIMEOUT));
                (Some(serve::summary(&s.stats())), None)
            }
            Running::InprocRaw(p) => {
                p.stop();
                (Some(p.stats.summary()), None)
            }
            Running::Child(c) => {
                let (summary, cpu) = c.stop();
                (summary, Some(cpu))
            }
        };
        summaries.extend(summary);
        if let Some((u, sy)) = cpu {
            let t = rusage_cpu.get_or_insert((0.0, 0.0));
            t.0 += u;
            t.1 += sy;
        }
    }
    let server_summary = (!summaries.is_empty()).then(|| summaries.join("; "));
    let mut report = measured?;
    report.server = desc;
    report.server_summary = server_summary;
    if report.server_cpu.is_none() {
        report.server_cpu = rusage_cpu;
    }
    if matches!(report.server.as_str(), "external") {
        report.reply_size = None;
    }
    Ok(report)
}

/// Starts one server for a run: its address, its handle and how it is described.
fn spawn_one(
    rt: &tokio::runtime::Runtime,
    args: &BenchArgs,
    raw: bool,
    mode: SpawnMode,
) -> Result<(String, Running, String), Error> {
    let reply = Reply::Fixed(args.reply_size);
    Ok(match mode {
        SpawnMode::Inproc if raw => {
            let peer = rt
                .block_on(RawPeer::bind("127.0.0.1:0", reply))
                .map_err(|e| Error::new(ErrorKind::Io, format!("raw peer: cannot listen: {e}")))?;
            let a = peer.local_addr().to_string();
            (a, Running::InprocRaw(peer), "inproc".to_string())
        }
        SpawnMode::Inproc => {
            let stls = ServerTlsOpts {
                tls_cert: args.server_tls_cert.clone(),
                tls_key: args.server_tls_key.clone(),
                ..Default::default()
            };
            let mut cfg = opts::server_config(&args.proto, &stls)?;
            cfg.max_batch_delay = args.batch_delay;
            let server = rt.block_on(async {
                Server::bind("127.0.0.1:0", cfg, serve::handler(reply)).await
            })?;
            let a = server.local_addr();
            (a, Running::Inproc(server), "inproc".to_string())
        }
        SpawnMode::Child => {
            let child = ChildServer::spawn(&child_args(args, raw))?;
            let a = child.addr.clone();
            let d = format!("child pid {}", child.pid());
            (a, Running::Child(child), d)
        }
    })
}

/// The `fastrpc serve` arguments of a child server matching the bench's options.
fn child_args(args: &BenchArgs, raw: bool) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--reply".into(),
        format!("fixed:{}", args.reply_size),
        "--threads".into(),
        args.server_threads.to_string(),
    ];
    if raw {
        a.push("--raw".into());
        return a;
    }
    a.extend([
        "--compress".into(),
        args.proto.compress.name().into(),
        "--flate-level".into(),
        args.proto.flate_level.to_string(),
        "--protocol-version".into(),
        args.proto.protocol_version.to_string(),
        "--batch-delay".into(),
        format!("{}ns", args.batch_delay.as_nanos()),
    ]);
    if let Some(d) = args.proto.read_spin {
        a.extend(["--read-spin".into(), format!("{}ns", d.as_nanos())]);
    }
    if !args.proto.sniff.is_empty() {
        a.extend(["--sniff".into(), args.proto.sniff.clone()]);
    }
    if let (Some(c), Some(k)) = (&args.server_tls_cert, &args.server_tls_key) {
        a.extend([
            "--tls-cert".into(),
            c.display().to_string(),
            "--tls-key".into(),
            k.display().to_string(),
        ]);
    }
    a
}

/// What the callers call: one client each, or a balanced client shared by all.
#[derive(Clone)]
enum Handle {
    One(Client),
    Balanced(BalancedClient),
}

impl Handle {
    #[inline]
    async fn call_into(&self, name: &[u8], value: &[u8], resp: &mut Vec<u8>) -> Result<(), Error> {
        match self {
            Handle::One(c) => c.call_into(name, value, resp).await,
            Handle::Balanced(b) => b.call_into(name, value, resp).await,
        }
    }

    #[inline]
    fn send(&self, name: &[u8], value: &[u8]) -> Result<(), Error> {
        match self {
            Handle::One(c) => c.send(name, value),
            Handle::Balanced(b) => b.send(name, value),
        }
    }

    fn stats(&self) -> ClientStats {
        match self {
            Handle::One(c) => c.stats(),
            Handle::Balanced(b) => b.stats().total,
        }
    }

    async fn close(&self, mode: CloseMode) {
        match self {
            Handle::One(c) => c.close(mode).await,
            Handle::Balanced(b) => b.close(mode).await,
        }
    }
}

/// What one engine caller did, and its reusable response buffer.
struct CallerResult {
    calls: u64,
    errors: [u64; ErrorKind::ALL.len()],
    resp_bytes: u64,
    buf: Vec<u8>,
}

impl CallerResult {
    fn new(reply_hint: usize) -> CallerResult {
        CallerResult {
            calls: 0,
            errors: [0; ErrorKind::ALL.len()],
            resp_bytes: 0,
            buf: Vec::with_capacity(reply_hint),
        }
    }
}

/// One caller: loops `call_into` with its own buffer until the budget ends, recording each
/// latency in its worker thread's histogram.
async fn caller(
    client: Handle,
    name: Arc<[u8]>,
    value: Arc<[u8]>,
    budget: Arc<Budget>,
    mut r: CallerResult,
) -> CallerResult {
    let mut buf = std::mem::take(&mut r.buf);
    let mut backoff = Duration::ZERO;
    // The latency of one call in LATENCY_SAMPLE is measured (each caller's first, then every
    // LATENCY_SAMPLE-th): a clock read cost 40-50 ns on the 2-core VM of docs/BENCHMARKS.md,
    // and two per call were 18% of the client's CPU at 1 worker thread (perf), more than the
    // raw ceiling's client pays (one per batch) or the engine itself needs.
    let mut n = 0u32;
    while budget.take(1) == 1 {
        let t0 = n.is_multiple_of(LATENCY_SAMPLE).then(Instant::now);
        n = n.wrapping_add(1);
        match client.call_into(&name, &value, &mut buf).await {
            Ok(()) => {
                if let Some(t0) = t0 {
                    record_latency(t0.elapsed().as_nanos() as u64);
                }
                r.calls += 1;
                r.resp_bytes += buf.len() as u64;
                backoff = Duration::ZERO;
            }
            Err(e) => {
                r.errors[e.kind().index()] += 1;
                // Connection-level failures fail fast: back off instead of spinning on them.
                if matches!(
                    e.kind(),
                    ErrorKind::Connect | ErrorKind::Connection | ErrorKind::Closed
                ) {
                    backoff = next_backoff(backoff);
                    tokio::time::sleep(backoff).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
    r
}

/// One call in this many has its latency measured (see `caller`).
const LATENCY_SAMPLE: u32 = 16;

/// A caller's wait after each connection-level failure in a row: 1 ms, doubling up to
/// 100 ms, so a run against a server that is down makes about ten attempts per second per
/// caller instead of spinning.
fn next_backoff(b: Duration) -> Duration {
    (b * 2).clamp(Duration::from_millis(1), Duration::from_millis(100))
}

/// A run fails (exits non-zero) when more than this share of its calls failed: its figures
/// would not describe the engine.
pub const MAX_ERROR_SHARE: f64 = 0.01;

/// One fire-and-forget sender: `Client::send` until the budget ends, waiting (not failing)
/// when the client's send queue is full.
async fn sender(
    client: Handle,
    name: Arc<[u8]>,
    value: Arc<[u8]>,
    budget: Arc<Budget>,
    mut r: CallerResult,
) -> CallerResult {
    let mut since_yield = 0u32;
    'outer: while budget.take(1) == 1 {
        loop {
            match client.send(&name, &value) {
                Ok(()) => {
                    r.calls += 1;
                    break;
                }
                // The queue is full: let the writer run, then retry the same send.
                Err(e) if e.kind() == ErrorKind::Overflow => {
                    if budget.stopped() {
                        break 'outer;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    r.errors[e.kind().index()] += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    break;
                }
            }
        }
        // `send` never waits: yield now and then so other tasks get to run (the writer runs on
        // the other worker, or when the queue is full).
        since_yield += 1;
        if since_yield == 1024 {
            since_yield = 0;
            tokio::task::yield_now().await;
        }
    }
    r
}

/// Prints a progress line on stderr every second until aborted.
fn spawn_progress(
    args: &BenchArgs,
    label: &'static str,
    start: Instant,
    sample: impl Fn() -> (u64, u64) + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    if args.no_progress {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = 0u64;
        loop {
            tick.tick().await;
            let (done, errors) = sample();
            let t = start.elapsed().as_secs_f64();
            eprint!(
                "\r{label}: {t:5.1} s  {done} calls  {:.0} calls/s  (last second {})  {errors} \
                 errors   ",
                done as f64 / t,
                done - last.min(done),
            );
            last = done;
        }
    }))
}

fn end_progress(p: Option<tokio::task::JoinHandle<()>>, start: Instant) {
    if let Some(p) = p {
        p.abort();
        // Clear the progress line if one was printed.
        if start.elapsed() >= Duration::from_secs(1) {
            eprint!("\r{:100}\r", "");
        }
    }
}

/// CPU seconds (user, sys) of these processes together; `None` when there are none or one
/// cannot be read.
fn procs_cpu(pids: &[u32]) -> Option<(f64, f64)> {
    if pids.is_empty() {
        return None;
    }
    let mut t = (0.0, 0.0);
    for p in pids {
        let (u, s) = proc_cpu(*p)?;
        t.0 += u;
        t.1 += s;
    }
    Some(t)
}

/// CPU seconds (user, sys) of process `pid` from /proc/PID/stat.
fn proc_cpu(pid: u32) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = if tck > 0 { tck as f64 } else { 100.0 };
    // Fields 14 (utime) and 15 (stime) of stat(5); `rest` starts at field 3.
    Some((
        f.get(11)?.parse::<f64>().ok()? / tck,
        f.get(12)?.parse::<f64>().ok()? / tck,
    ))
}

fn sub(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    (a.0 - b.0, a.1 - b.1)
}

fn sum_stats(clients: &[Handle]) -> ClientStats {
    let mut t = ClientStats::default();
    for c in clients {
        let s = c.stats();
        t.calls += s.calls;
        t.responses += s.responses;
        t.sends += s.sends;
        t.errors.timeout += s.errors.timeout;
        t.errors.overflow += s.errors.overflow;
        t.errors.connect += s.errors.connect;
        t.errors.connection += s.errors.connection;
        t.errors.closed += s.errors.closed;
        t.errors.protocol += s.errors.protocol;
        t.errors.tls += s.errors.tls;
        t.errors.too_large += s.errors.too_large;
        t.errors.invalid_argument += s.errors.invalid_argument;
        t.errors.io += s.errors.io;
        t.errors.cancelled += s.errors.cancelled;
        t.io.bytes_sent_wire += s.io.bytes_sent_wire;
        t.io.bytes_received_wire += s.io.bytes_received_wire;
        t.io.frames_sent += s.io.frames_sent;
        t.io.flushes += s.io.flushes;
    }
    t
}

fn base_report(args: &BenchArgs, mode: &'static str) -> Report {
    Report {
        mode,
        nowait: args.nowait,
        server: String::new(),
        compress: args.proto.compress.name().to_string(),
        tls: args.tls.enabled() && mode == "engine",
        connections: args.connections,
        concurrency: args.concurrency,
        threads: args.threads,
        name_size: args.name.len(),
        value_size: args.value_size,
        reply_size: Some(args.reply_size),
        calls: 0,
        errors: [0; ErrorKind::ALL.len()],
        elapsed: 0.0,
        hist: new_histogram(),
        payload_bytes: 0,
        wire_out: 0,
        wire_in: 0,
        frames_sent: 0,
        flushes: 0,
        cpu: (0.0, 0.0),
        server_cpu: None,
        server_summary: None,
        servers: Vec::new(),
        idle: None,
    }
}

async fn engine_run(
    args: &BenchArgs,
    addr: &str,
    name: Arc<[u8]>,
    value: Arc<[u8]>,
    child: &[u32],
) -> Result<Report, Error> {
    let mut cfg = client_config(addr, &args.proto, &args.tls)?;
    cfg.max_pending_requests = args.max_pending.unwrap_or_else(|| {
        args.concurrency
            .max(fastrpc::config::DEFAULT_MAX_PENDING_REQUESTS)
    });
    cfg.max_batch_delay = args.batch_delay;
    cfg.request_timeout = args.timeout;
    let (clients, callers_per_handle) = if balanced(args) {
        let mut bcfg = BalancedConfig::new(addr.split(','));
        bcfg.client = cfg;
        bcfg.connections_per_server = args.connections;
        let b = BalancedClient::new(bcfg)?;
        warm_up_balanced(&b, &name, &value).await?;
        let total = args.connections * b.servers().len();
        (vec![Handle::Balanced(b)], args.concurrency * total)
    } else {
        let clients = (0..args.connections)
            .map(|_| Client::new(cfg.clone()).map(Handle::One))
            .collect::<Result<Vec<_>, _>>()?;
        // Connect every client before the clock starts (and fail early when the server is
        // not there).
        let mut buf = Vec::new();
        for c in &clients {
            c.call_into(&name, &value, &mut buf)
                .await
                .map_err(|e| e.context(&format!("warm-up call to {addr}")))?;
        }
        (clients, args.concurrency)
    };
    let base = sum_stats(&clients);
    let base_servers = balanced_shares(&clients);
    let budget = Arc::new(Budget::new(args.count));
    // Everything a caller needs is allocated before the clock starts.
    let n_callers = clients.len() * callers_per_handle;
    let mut states: Vec<CallerResult> = (0..n_callers)
        .map(|_| CallerResult::new(if args.nowait { 0 } else { args.reply_size }))
        .collect();
    let cpu0 = cpu_times(libc::RUSAGE_SELF);
    let server_cpu0 = procs_cpu(child);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n_callers);
    for c in &clients {
        for _ in 0..callers_per_handle {
            let (c, n, v, b) = (c.clone(), name.clone(), value.clone(), budget.clone());
            let st = states.pop().expect("one state per caller");
            tasks.push(if args.nowait {
                tokio::spawn(sender(c, n, v, b, st))
            } else {
                tokio::spawn(caller(c, n, v, b, st))
            });
        }
    }
    let progress = {
        let clients = clients.clone();
        let nowait = args.nowait;
        spawn_progress(args, "engine", start, move || {
            let s = sum_stats(&clients);
            let errors = s.errors.total() - base.errors.total();
            if nowait {
                // A full send queue is waited on, not counted as an error.
                let overflow = s.errors.overflow - base.errors.overflow;
                (s.sends - base.sends, errors - overflow)
            } else {
                (s.responses - base.responses, errors)
            }
        })
    };
    let stopper = if args.count.is_none() {
        let (b, d) = (budget.clone(), args.duration);
        Some(tokio::spawn(async move {
            tokio::time::sleep(d).await;
            b.stop();
        }))
    } else {
        None
    };
    let mut report = base_report(args, "engine");
    for t in tasks {
        let r = t
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("caller task failed: {e}")))?;
        report.calls += r.calls;
        report.payload_bytes += r.resp_bytes;
        for (a, b) in report.errors.iter_mut().zip(r.errors) {
            *a += b;
        }
    }
    take_latencies(&mut report.hist)?;
    if let Some(s) = stopper {
        s.abort();
    }
    if args.nowait {
        // Fire-and-forget is done when the server has read every send: a server reads a
        // connection's requests in order, so the answer to one call made after them proves it.
        let mut buf = Vec::new();
        for c in &clients {
            c.call_into(&name, &value, &mut buf)
                .await
                .map_err(|e| e.context(&format!("closing call to {addr} after the sends")))?;
        }
    }
    report.elapsed = start.elapsed().as_secs_f64();
    report.cpu = sub(cpu_times(libc::RUSAGE_SELF), cpu0);
    report.server_cpu = match (server_cpu0, procs_cpu(child)) {
        (Some(a), Some(b)) => Some(sub(b, a)),
        _ => None,
    };
    end_progress(progress, start);
    let s = sum_stats(&clients);
    report.wire_out = s.io.bytes_sent_wire - base.io.bytes_sent_wire;
    report.wire_in = s.io.bytes_received_wire - base.io.bytes_received_wire;
    report.frames_sent = s.io.frames_sent - base.io.frames_sent;
    report.flushes = s.io.flushes - base.io.flushes;
    report.payload_bytes += report.calls * (name.len() + value.len()) as u64;
    if let Handle::Balanced(_) = &clients[0] {
        report.servers = balanced_shares(&clients)
            .into_iter()
            .map(|mut b| {
                if let Some(b0) = base_servers.iter().find(|b0| b0.addr == b.addr) {
                    b.calls -= b0.calls;
                    b.errors -= b0.errors;
                }
                b
            })
            .collect();
        report.connections = args.connections * report.servers.len();
    }
    if !args.idle.is_zero() {
        report.idle = Some(measure_idle(args.idle, child).await);
    }
    for c in &clients {
        c.close(CloseMode::Drain(Duration::from_secs(1))).await;
    }
    Ok(report)
}

/// Sleeps `d` with the clients connected and idle; returns the seconds slept and the CPU this
/// process and the `child` servers used meanwhile, in percent of one core.
async fn measure_idle(d: Duration, child: &[u32]) -> report::Idle {
    let cpu0 = cpu_times(libc::RUSAGE_SELF);
    let server0 = procs_cpu(child);
    let t0 = Instant::now();
    tokio::time::sleep(d).await;
    let secs = t0.elapsed().as_secs_f64();
    let (u, s) = sub(cpu_times(libc::RUSAGE_SELF), cpu0);
    let server_pct = match (server0, procs_cpu(child)) {
        (Some(a), Some(b)) => {
            let (u, s) = sub(b, a);
            Some(100.0 * (u + s) / secs)
        }
        _ => None,
    };
    report::Idle {
        secs,
        client_pct: 100.0 * (u + s) / secs,
        server_pct,
    }
}

/// Connects every connection of a balanced client before the clock starts (and fails early
/// when a server is not there): rounds of concurrent calls until each connection has
/// connected, at most 50 rounds.
async fn warm_up_balanced(b: &BalancedClient, name: &[u8], value: &[u8]) -> Result<(), Error> {
    let want = b
        .stats()
        .servers
        .iter()
        .map(|s| s.connections as u64)
        .sum::<u64>();
    for _ in 0..50 {
        let st = b.stats();
        if st.total.connects >= want {
            return Ok(());
        }
        let calls: Vec<_> = (0..want * 2)
            .map(|_| {
                let (b, n, v) = (b.clone(), name.to_vec(), value.to_vec());
                tokio::spawn(async move { b.call(&n, &v).await })
            })
            .collect();
        for c in calls {
            c.await
                .map_err(|e| Error::new(ErrorKind::Io, format!("warm-up task failed: {e}")))?
                .map_err(|e| e.context("warm-up call"))?;
        }
    }
    Ok(())
}

/// Each server's counters so far, for a balanced client (empty otherwise).
fn balanced_shares(clients: &[Handle]) -> Vec<ServerShare> {
    let Some(Handle::Balanced(b)) = clients.first() else {
        return Vec::new();
    };
    b.stats()
        .servers
        .into_iter()
        .map(|s| ServerShare {
            addr: s.addr,
            calls: s.stats.calls,
            errors: s.stats.errors.total(),
            state: match s.state {
                BackendState::Up => "up",
                BackendState::Down => "down",
            },
        })
        .collect()
}

async fn raw_run(
    args: &BenchArgs,
    addr: &str,
    name: Arc<[u8]>,
    value: Arc<[u8]>,
    child: &[u32],
) -> Result<Report, Error> {
    let budget = Arc::new(Budget::new(args.count));
    let progress_count = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_times(libc::RUSAGE_SELF);
    let server_cpu0 = procs_cpu(child);
    let start = Instant::now();
    // Against several servers the raw ceiling takes as many connections as the engine has.
    let connections = if balanced(args) {
        args.connections * n_servers(args)
    } else {
        args.connections
    };
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let job = RawJob {
            addr: addr.to_string(),
            name: name.clone(),
            value: value.clone(),
            concurrency: args.concurrency,
            budget: budget.clone(),
            progress: progress_count.clone(),
            handshake: args.raw_handshake.then(|| Handshake {
                sniff: args.proto.sniff.as_bytes().to_vec(),
                version: args.proto.protocol_version,
            }),
        };
        tasks.push(if args.raw_tasks {
            tokio::spawn(raw_client_tasks(job))
        } else {
            tokio::spawn(raw_client(job, args.nowait))
        });
    }
    let progress = {
        let p = progress_count.clone();
        spawn_progress(args, "raw", start, move || (p.load(Relaxed), 0))
    };
    let stopper = if args.count.is_none() {
        let (b, d) = (budget.clone(), args.duration);
        Some(tokio::spawn(async move {
            tokio::time::sleep(d).await;
            b.stop();
        }))
    } else {
        None
    };
    let mut report = base_report(args, "raw");
    report.connections = connections;
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => {
                report.calls += r.calls;
                report.payload_bytes += r.resp_payload;
                report.wire_out += r.bytes_out;
                report.wire_in += r.bytes_in;
                report.flushes += r.flushes;
                report.frames_sent += r.frames_out;
                if !r.hist.is_empty() {
                    let _ = report.hist.add(&r.hist);
                }
            }
            Ok(Err(e)) => {
                let kind = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => ErrorKind::Connect,
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                        ErrorKind::Protocol
                    }
                    _ if e.to_string().starts_with("cannot connect") => ErrorKind::Connect,
                    _ => ErrorKind::Connection,
                };
                report.errors[kind.index()] += 1;
                first_err.get_or_insert(Error::new(kind, format!("raw connection to {addr}: {e}")));
                budget.stop();
            }
            Err(e) => {
                first_err.get_or_insert(Error::new(ErrorKind::Io, format!("raw task: {e}")));
            }
        }
    }
    if let Some(s) = stopper {
        s.abort();
    }
    report.elapsed = start.elapsed().as_secs_f64();
    report.cpu = sub(cpu_times(libc::RUSAGE_SELF), cpu0);
    report.server_cpu = match (server_cpu0, procs_cpu(child)) {
        (Some(a), Some(b)) => Some(sub(b, a)),
        _ => None,
    };
    end_progress(progress, start);
    if report.calls == 0 {
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    report.payload_bytes += report.calls * (name.len() + value.len()) as u64;
    Ok(report)
}

/// A `fastrpc serve` child process; killed if dropped without `stop`.
struct ChildServer {
    child: Option<Child>,
    addr: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl ChildServer {
    /// Starts `current_exe() ARGS` and reads its `listening ADDR` line.
    fn spawn(args: &[String]) -> Result<ChildServer, Error> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot find this executable: {e}")))?;
        let mut child = Command::new(&exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("cannot start {} {}: {e}", exe.display(), args.join(" ")),
                )
            })?;
        let stderr = child.stderr.take().map(|mut s| {
            std::thread::spawn(move || {
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                out
            })
        });
        let mut server = ChildServer {
            child: Some(child),
            addr: String::new(),
            stderr,
        };
        let stdout = server
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .ok_or_else(|| Error::new(ErrorKind::Io, "child server: no stdout"))?;
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        match line.trim_end().strip_prefix("listening ") {
            Some(a) => {
                server.addr = a.to_string();
                Ok(server)
            }
            None => {
                let (msg, _) = server.stop();
                Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "child server `fastrpc {}` did not start: {}",
                        args.join(" "),
                        msg.unwrap_or_else(|| "no `listening` line".into())
                    ),
                ))
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Stops the child with SIGTERM (SIGKILL after 10 s), waits for it, and returns the last
    /// line it wrote to stderr and its CPU time (user, sys) from RUSAGE_CHILDREN.
    fn stop(mut self) -> (Option<String>, (f64, f64)) {
        let before = cpu_times(libc::RUSAGE_CHILDREN);
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid; the child is not yet reaped.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let limit = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < limit => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        let cpu = sub(cpu_times(libc::RUSAGE_CHILDREN), before);
        let text = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let last = text.lines().rev().find(|l| !l.trim().is_empty()).map(|l| {
            l.trim_start_matches("fastrpc serve --raw: ")
                .trim_start_matches("fastrpc serve: ")
                .to_string()
        });
        (last, cpu)
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_1ms_to_100ms() {
        let mut b = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..10 {
            b = next_backoff(b);
            seen.push(b.as_millis());
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 64, 100, 100, 100]);
    }
}
