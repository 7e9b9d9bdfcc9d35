//! `fastrpc serve`: a server answering every request with an echo or a fixed reply, or with
//! `--raw` the raw-TCP peer of the bench's ceiling. Prints `listening ADDR` first, stops
//! gracefully on SIGINT or SIGTERM and prints a one-line summary to stderr. `-v` prints the
//! engine's warnings (why a handshake or a connection failed) to stderr as they happen.

use std::cell::RefCell;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use fastrpc::log::Level;
use fastrpc::{Call, Error, ErrorKind, Server, ServerConfig, ServerStats};
use tokio::sync::oneshot;

use crate::opts::{
    self, parse_duration, parse_reply, server_config, ProtoOpts, Reply, ServerTlsOpts,
};
use crate::raw::RawPeer;

/// How long a graceful stop may take before the rest is closed at once.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on: host:port (port 0 picks a free port) or unix:/path.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub listen: String,
    #[command(flatten)]
    pub proto: ProtoOpts,
    #[command(flatten)]
    pub tls: ServerTlsOpts,
    /// Run each connection's requests one after another, in order.
    #[arg(long)]
    pub pipeline: bool,
    /// Longest time a ready response waits for others to share its write (0, 500us, 2ms, 1s).
    #[arg(long, default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    pub batch_delay: Duration,
    /// Handlers running at once; over it requests get an empty "too busy" reply.
    #[arg(long, default_value_t = fastrpc::config::DEFAULT_CONCURRENCY, value_name = "N")]
    pub concurrency: usize,
    /// What to answer: "echo" (name ':' value) or "fixed:BYTES" (that many 'x').
    #[arg(long, default_value = "echo", value_parser = parse_reply, value_name = "REPLY")]
    pub reply: Reply,
    /// Be the raw-TCP peer of `fastrpc bench --raw` instead of a fastrpc server: no
    /// handshake, compression or TLS; same frame layout as uncompressed fastrpc.
    #[arg(long, conflicts_with_all = ["tls_cert", "pipeline"])]
    pub raw: bool,
    /// Longest time to read one whole request (also bounds the wait for the next one); 0
    /// is unlimited.
    #[arg(long, default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    pub read_timeout: Duration,
    /// Longest time to write one batch of responses to a client; 0 is unlimited.
    #[arg(long, default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    pub write_timeout: Duration,
    /// Close a connection that sends no request for this long while none of its requests
    /// runs; 0 keeps idle connections.
    #[arg(long, default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// Runtime worker threads (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print the engine's messages to stderr: -v warnings (why a handshake or a connection
    /// failed, handler panics), -vv also connection events (failed writes), -vvv debug.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The engine log level that `-v` repeated `n` times turns on (`None`: no messages).
pub fn log_level(n: u8) -> Option<Level> {
    match n {
        0 => None,
        1 => Some(Level::Warn),
        2 => Some(Level::Info),
        _ => Some(Level::Debug),
    }
}

/// Sends the engine's messages up to the level of `-v` x `n` to stderr, one line each:
/// `fastrpc serve: warn: fastrpc server: handshake with 127.0.0.1:51234 failed: ...`.
fn log_to_stderr(n: u8) {
    if let Some(max) = log_level(n) {
        fastrpc::log::set_hook(
            max,
            Some(Box::new(|level, msg| {
                let level = match level {
                    Level::Error => "error",
                    Level::Warn => "warn",
                    Level::Info => "info",
                    Level::Debug => "debug",
                };
                // One write per line, so lines from several threads do not interleave.
                let line = format!("fastrpc serve: {level}: {msg}\n");
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            })),
        );
    }
}

/// The request handler for `reply`. No allocation per request: fixed replies share one
/// buffer, echo replies are assembled in a per-thread buffer.
pub fn handler(reply: Reply) -> impl Fn(Call) + Send + Sync + 'static {
    let fixed: Arc<[u8]> = match reply {
        Reply::Fixed(n) => vec![b'x'; n].into(),
        Reply::Echo => Arc::from(&[][..]),
    };
    move |call: Call| match reply {
        Reply::Fixed(_) => {
            let _ = call.reply(&fixed);
        }
        Reply::Echo => {
            thread_local!(static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) });
            BUF.with(|b| {
                let mut b = b.borrow_mut();
                b.clear();
                b.extend_from_slice(call.name());
                b.push(b':');
                b.extend_from_slice(call.value());
                let _ = call.reply(&b);
            });
        }
    }
}

/// The engine server configuration of these arguments.
pub fn config(args: &ServeArgs) -> Result<ServerConfig, Error> {
    let mut cfg = server_config(&args.proto, &args.tls)?;
    cfg.pipeline_requests = args.pipeline;
    cfg.max_batch_delay = args.batch_delay;
    cfg.concurrency = args.concurrency;
    cfg.read_timeout = args.read_timeout;
    cfg.write_timeout = args.write_timeout;
    cfg.idle_timeout = args.idle_timeout;
    Ok(cfg)
}

/// One line summing up a server's counters. `errors` already counts each failed handshake
/// (under its kind); the handshakes among them are shown in parentheses.
pub fn summary(s: &ServerStats) -> String {
    let handshakes = match s.handshake_failures {
        0 => String::new(),
        1 => " (1 failed handshake)".to_string(),
        n => format!(" ({n} failed handshakes)"),
    };
    format!(
        "{} requests ({} fire-and-forget), {} responses, {} connections, {} errors{handshakes}, \
         {:.1} MB in / {:.1} MB out on the wire, {:.1} frames per flush",
        s.requests + s.nowait_requests,
        s.nowait_requests,
        s.responses,
        s.connections_accepted,
        s.errors.total(),
        s.io.bytes_received_wire as f64 / 1e6,
        s.io.bytes_sent_wire as f64 / 1e6,
        s.io.frames_per_flush(),
    )
}

pub fn run(args: ServeArgs) -> i32 {
    // Before the runtime's threads exist, so that they inherit the blocked signals.
    let stop = match stop_signals() {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("fastrpc serve: io: cannot install signal handlers: {e}");
            return 11;
        }
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let rt = match opts::runtime(threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fastrpc serve: io: cannot start the runtime: {e}");
            return 11;
        }
    };
    log_to_stderr(args.verbose);
    rt.block_on(serve(args, stop))
}

/// SIGINT and SIGTERM: blocked in this thread (and so in every thread started after it) and
/// taken by one thread with sigwait(2), which reports the first one. A signal sent at any time
/// after this call, even before the `listening` line, stops the server gracefully.
///
/// Not tokio's signal feature: the library does not use it, and with it the CLI would build
/// tokio and fastrpc a second time (a crate is compiled once per feature set), while enabling
/// it in the library would give every runtime its signal socket pair.
fn stop_signals() -> std::io::Result<oneshot::Receiver<i32>> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use; the calls only
    // change this thread's signal mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        set
    };
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is initialised; sigwait writes the signal number into `sig`.
            while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
            let _ = tx.send(sig);
        })?;
    Ok(rx)
}

async fn serve(args: ServeArgs, stop: oneshot::Receiver<i32>) -> i32 {
    let started = Instant::now();
    if args.raw {
        let peer = match RawPeer::bind(&args.listen, args.reply).await {
            Ok(p) => p,
            Err(e) => {
                let e = Error::new(
                    ErrorKind::Io,
                    format!("cannot listen on {}: {e}", args.listen),
                );
                return opts::fail("serve", &e);
            }
        };
        announce(peer.local_addr());
        let _ = stop.await;
        peer.stop();
        eprintln!(
            "fastrpc serve --raw: stopped after {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            peer.stats.summary()
        );
        return 0;
    }
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => return opts::fail("serve", &e),
    };
    let server = match Server::bind(&args.listen, cfg, handler(args.reply)).await {
        Ok(s) => s,
        Err(e) => return opts::fail("serve", &e),
    };
    announce(&server.local_addr());
    let _ = stop.await;
    let stopped = server.stop(STOP_TIMEOUT).await;
    let stats = server.stats();
    let mut tail = match stopped {
        Ok(()) => String::new(),
        Err(e) => format!(" ({})", e.message()),
    };
    if stats.errors.total() > 0 && args.verbose == 0 {
        tail.push_str("; run with -v to see why connections failed");
    }
    eprintln!(
        "fastrpc serve: stopped after {:.1} s: {}{tail}",
        started.elapsed().as_secs_f64(),
        summary(&stats)
    );
    0
}

/// Prints the `listening ADDR` line and flushes it.
fn announce(addr: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
}
