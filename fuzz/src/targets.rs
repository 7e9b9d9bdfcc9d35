//! The fuzz targets. Each runs one input against live fastrpc servers or clients on Unix
//! sockets (no port or TIME_WAIT limits, the same engine code above the socket), within a
//! per-input time bound, and checks what can be checked:
//!
//! The servers' handler echoes: names starting with `x` are dropped unanswered, `d` answered
//! from another task, `w` answered 20 ms later (after the client's FIN has been read).
//!
//! * nothing hangs: the input's exchange ends within [`INPUT_BOUND`], and every connection
//!   closes (the peer's FIN or a protocol error ends it);
//! * nothing panics (the panic hook aborts);
//! * no single allocation passes the bound of [`crate::alloc_limit`];
//! * an untampered stream is answered exactly: every request its echo (server targets), every
//!   call its response and every stray response counted (client target);
//! * handshakes fail with the right error kind, and the pub parsers keep their contracts;
//! * every few inputs, each server still serves a normal client and holds no connection.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fastrpc::protocol::frame::{parse_request, parse_response, Parse};
use fastrpc::{Call, Client, ClientConfig, ErrorKind, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::runtime::Runtime;

use crate::alloc_limit::{self, exempt};
use crate::plan::{Comp, Plan, Side, LIMIT};

/// The time one input may take, exchange and checks included.
pub const INPUT_BOUND: Duration = Duration::from_secs(5);
/// The deadline of the client target's calls. The fake server closes the connection after
/// its bytes, so a call that reaches this deadline waited for nothing: a failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(4);

/// Sniff header and version of the harness's servers.
pub const SNIFF: &[u8] = b"fz";
/// Protocol version of the harness's servers.
pub const VERSION: u8 = 5;
/// The error reply of the harness's servers (dropped call).
const ERROR_REPLY: &[u8] = b"E";

/// Bound on one allocation while a server reads (see alloc_limit.rs).
pub const SERVER_ALLOC_BOUND: usize = 2 * LIMIT + 12 + 64 * 1024;
/// Bound on one allocation while a client reads.
pub const CLIENT_ALLOC_BOUND: usize = LIMIT + 8 + 64 * 1024;

/// Every target: name and what it feeds.
pub const TARGETS: [(&str, &str); 8] = [
    (
        "server_none",
        "raw bytes after a valid handshake, requests uncompressed",
    ),
    (
        "server_flate",
        "raw bytes after a valid handshake, requests declared flate",
    ),
    (
        "server_snappy",
        "raw bytes after a valid handshake, requests declared snappy",
    ),
    (
        "stream_none",
        "a plan: request frames uncompressed (up to full size), tampered/split",
    ),
    (
        "stream_flate",
        "a plan: request frames deflated by the harness, then tampered/split",
    ),
    (
        "stream_snappy",
        "a plan: request frames in snappy framing, then tampered/split",
    ),
    (
        "client",
        "the response stream of a fake server to a client with calls in flight",
    ),
    (
        "handshake",
        "handshake headers to a server and to a client; the pub parsers",
    ),
];

struct Harness {
    rt: Runtime,
    /// Servers answering with compression none, flate and snappy.
    servers: [(Comp, Server); 3],
    /// A listener playing a fake server for the client targets.
    fake: UnixListener,
    fake_path: PathBuf,
    dir: PathBuf,
    inputs: AtomicU64,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The harness's socket directory, removed at exit by [`remove_socket_dir`].
static SOCKET_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_socket_dir() {
    if let Some(d) = SOCKET_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Echoes up to this size are sent whole; longer ones as a digest, so that the servers'
/// output stays small and the allocation bound measures the *readers* (the write side's
/// buffering is tested by tests/robustness_catalogue.rs).
const ECHO_MAX: usize = 4096;

/// The reply to `name`, `value`: `name ":" value`, or for a longer echo `"H"`, its length
/// (u32) and its FNV-1a hash (u64).
fn echo(name: &[u8], value: &[u8]) -> Vec<u8> {
    let len = name.len() + 1 + value.len();
    if len <= ECHO_MAX {
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(name);
        v.push(b':');
        v.extend_from_slice(value);
        return v;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.iter().chain(b":").chain(value) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut v = b"H".to_vec();
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend_from_slice(&h.to_le_bytes());
    v
}

fn handler(call: Call) {
    let name = call.name();
    if name.first() == Some(&b'x') {
        drop(call); // unanswered: error_reply
        return;
    }
    let deferred = name.first() == Some(&b'd');
    let late = name.first() == Some(&b'w');
    let v = echo(call.name(), call.value());
    if late {
        // Answered well after the rest of the input (and the client's FIN) was read.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = call.reply(&v);
        });
    } else if deferred {
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            let _ = call.reply(&v);
        });
    } else {
        let _ = call.reply(&v);
    }
}

/// The reply the harness's handler gives.
fn expected_reply(name: &[u8], value: &[u8]) -> Vec<u8> {
    if name.first() == Some(&b'x') {
        return ERROR_REPLY.to_vec();
    }
    echo(name, value)
}

fn server_config(c: Comp) -> ServerConfig {
    let mut cfg = ServerConfig::default();
    cfg.sniff_header = SNIFF.to_vec();
    cfg.protocol_version = VERSION;
    cfg.compress_type = c.engine();
    cfg.error_reply = ERROR_REPLY.to_vec();
    cfg.max_frame_size = LIMIT;
    cfg.handshake_timeout = Duration::from_secs(5);
    cfg
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = std::env::temp_dir().join(format!("fastrpc-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("socket directory");
        // The harness is static and never dropped: remove its sockets when the process exits
        // (replay's `process::exit`, libFuzzer's `exit`).
        SOCKET_DIR.set(dir.clone()).expect("one harness");
        // SAFETY: registers a plain function without arguments; it only removes files.
        unsafe { libc::atexit(remove_socket_dir) };
        let (servers, fake, fake_path) = rt.block_on(async {
            let mut v = Vec::new();
            for c in [Comp::None, Comp::Flate, Comp::Snappy] {
                let addr = format!("unix:{}", dir.join(format!("{c:?}.sock")).display());
                let s = Server::bind(&addr, server_config(c), handler)
                    .await
                    .expect("bind");
                v.push((c, s));
            }
            let fake_path = dir.join("fake.sock");
            let fake = UnixListener::bind(&fake_path).expect("fake listener");
            let servers: [(Comp, Server); 3] = v.try_into().ok().expect("three servers");
            (servers, fake, fake_path)
        });
        Harness {
            rt,
            servers,
            fake,
            fake_path,
            dir,
            inputs: Default::default(),
        }
    })
}

fn server(c: Comp) -> &'static Server {
    &harness()
        .servers
        .iter()
        .find(|(k, _)| *k == c)
        .expect("server")
        .1
}

fn server_path(c: Comp) -> String {
    server(c)
        .local_addr()
        .strip_prefix("unix:")
        .expect("unix address")
        .to_string()
}

/// Connections of each server left open by an input reported as a hang.
static STUCK: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// The counters of every server, for reports.
fn server_states() -> String {
    harness()
        .servers
        .iter()
        .map(|(c, s)| {
            let st = s.stats();
            format!(
                "{c:?}: {} open, {} running, {} requests, {} nowait, {} responses, {} \
                 unanswered, errors {:?}",
                st.connections_open,
                st.running,
                st.requests,
                st.nowait_requests,
                st.responses,
                st.unanswered,
                st.errors
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs one input of `target`. `Err` describes a finding.
pub fn run(target: &str, data: &[u8]) -> Result<(), String> {
    let h = harness();
    let n = h.inputs.fetch_add(1, Relaxed);
    let r = h.rt.block_on(async {
        match tokio::time::timeout(INPUT_BOUND, run_async(target, data)).await {
            Ok(r) => r,
            Err(_) => {
                let states = server_states();
                // The stuck connections stay; later health checks look past them.
                for (i, (_, s)) in h.servers.iter().enumerate() {
                    STUCK[i].store(s.stats().connections_open, Relaxed);
                }
                Err(format!(
                    "hang: the input was not done within {INPUT_BOUND:?} (a connection \
                     neither answered nor closed, or a call outlived its deadline); servers: \
                     {states}"
                ))
            }
        }
    });
    r?;
    if n % 64 == 63 {
        check_health()?;
    }
    Ok(())
}

async fn run_async(target: &str, data: &[u8]) -> Result<(), String> {
    match target {
        "server_none" => server_raw(Comp::None, data).await,
        "server_flate" => server_raw(Comp::Flate, data).await,
        "server_snappy" => server_raw(Comp::Snappy, data).await,
        "stream_none" => server_stream(Comp::None, data).await,
        "stream_flate" => server_stream(Comp::Flate, data).await,
        "stream_snappy" => server_stream(Comp::Snappy, data).await,
        "client" => client_stream(data).await,
        "handshake" => handshake(data).await,
        t => Err(format!("unknown target {t:?}")),
    }
}

fn hello(c: Comp) -> Vec<u8> {
    let mut v = SNIFF.to_vec();
    v.extend_from_slice(&[VERSION, c.code(), 0]);
    v
}

/// What came back on a connection, and how it ended.
struct Received {
    bytes: Vec<u8>,
    /// The read side ended with an error (a reset) rather than EOF.
    reset: bool,
}

/// Writes `writes` (a short pause between them, so they arrive as separate reads), then
/// FIN, while reading everything the peer sends until it closes.
async fn exchange(s: UnixStream, writes: &[&[u8]]) -> Received {
    let (mut rd, mut wr) = s.into_split();
    let writer = async {
        for (i, w) in writes.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            if wr.write_all(w).await.is_err() {
                return; // the peer closed on us: expected for bad input
            }
        }
        let _ = wr.shutdown().await;
    };
    let reader = async {
        let mut got = Received {
            bytes: Vec::new(),
            reset: false,
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => exempt(|| got.bytes.extend_from_slice(&buf[..n])),
                Err(_) => {
                    got.reset = true;
                    break;
                }
            }
        }
        got
    };
    let ((), got) = tokio::join!(writer, reader);
    got
}

/// Connects to the server of compression `c` and completes the handshake declaring request
/// compression `req`.
async fn handshaken(c: Comp, req: Comp) -> Result<UnixStream, String> {
    let mut s = UnixStream::connect(server_path(c))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(&hello(req))
        .await
        .map_err(|e| format!("write handshake: {e}"))?;
    let mut hdr = [0u8; 5];
    s.read_exact(&mut hdr)
        .await
        .map_err(|e| format!("the server did not answer a valid handshake: {e}"))?;
    if hdr[..] != hello(c)[..] {
        return Err(format!("the server answered handshake {hdr:02x?}"));
    }
    Ok(s)
}

async fn server_raw(c: Comp, data: &[u8]) -> Result<(), String> {
    alloc_limit::set_limit(SERVER_ALLOC_BOUND);
    let s = handshaken(c, c).await?;
    let got = exchange(s, &[data]).await;
    if c == Comp::None {
        // The stream is the plain frames: check like an untampered plan.
        let plan = Plan {
            wire: data.to_vec(),
            splits: Vec::new(),
            plain_total: data.to_vec(),
            tampered: false,
        };
        check_responses(&plan, &got, None)?;
    }
    Ok(())
}

async fn server_stream(c: Comp, data: &[u8]) -> Result<(), String> {
    alloc_limit::set_limit(SERVER_ALLOC_BOUND);
    let plan = Plan::build(data, Side::Requests, c);
    let before = server(Comp::None).stats().errors;
    let s = handshaken(Comp::None, c).await?;
    let writes = plan.writes();
    let got = exchange(s, &writes).await;
    check_responses(&plan, &got, Some(before))
}

/// The requests a plain stream holds, up to where it stops being valid, and whether it is
/// valid to its end.
fn requests_of(plain: &[u8]) -> (Vec<(u32, Vec<u8>)>, bool) {
    exempt(|| {
        let mut out = Vec::new();
        let mut off = 0;
        loop {
            match parse_request(&plain[off..], LIMIT) {
                Ok(Parse::Frame(p, n)) => {
                    let b = &plain[off..];
                    if p.id != 0 {
                        out.push((
                            p.id,
                            expected_reply(&b[p.name.clone()], &b[p.value.clone()]),
                        ));
                    }
                    off += n;
                }
                Ok(Parse::Incomplete(_)) => return (out, off == plain.len()),
                Err(_) => return (out, false),
            }
        }
    })
}

fn responses_of(b: &[u8]) -> Result<Vec<(u32, Vec<u8>)>, String> {
    exempt(|| {
        let mut out = Vec::new();
        let mut off = 0;
        while off < b.len() {
            match parse_response(&b[off..], LIMIT) {
                Ok(Parse::Frame(p, n)) => {
                    out.push((p.id, b[off..][p.value.clone()].to_vec()));
                    off += n;
                }
                Ok(Parse::Incomplete(_)) => {
                    return Err(format!(
                        "the server's response stream ends in the middle of a frame ({} bytes \
                         left)",
                        b.len() - off
                    ))
                }
                Err(e) => return Err(format!("the server sent a bad response frame: {e}")),
            }
        }
        Ok(out)
    })
}

fn check_responses(
    plan: &Plan,
    got: &Received,
    errors_before: Option<fastrpc::ErrorCounts>,
) -> Result<(), String> {
    if plan.tampered {
        return Ok(());
    }
    let (mut want, valid) = requests_of(&plan.plain_total);
    let mut have = responses_of(&got.bytes)?;
    exempt(|| {
        want.sort();
        have.sort();
    });
    if valid {
        if got.reset {
            return Err("the server reset a connection whose stream was valid".into());
        }
        if have != want {
            return Err(format!(
                "a valid stream of {} requests got {} responses that differ from their echoes",
                want.len(),
                have.len()
            ));
        }
        if let Some(before) = errors_before {
            let after = server(Comp::None).stats().errors;
            let bad = |e: &fastrpc::ErrorCounts| e.protocol + e.timeout + e.connection + e.io;
            if bad(&after) != bad(&before) {
                return Err(format!(
                    "the server counted connection errors on a valid stream: {before:?} -> \
                     {after:?}"
                ));
            }
        }
    } else {
        // Cut short by a protocol error: what came back must be a sub-multiset of the echoes.
        let mut w: HashMap<(u32, &[u8]), usize> = HashMap::new();
        for (id, v) in &want {
            *w.entry((*id, v.as_slice())).or_default() += 1;
        }
        for (id, v) in &have {
            match w.get_mut(&(*id, v.as_slice())) {
                Some(n) if *n > 0 => *n -= 1,
                _ => {
                    return Err(format!(
                        "the server sent a response (id {id}, {} bytes) that answers no request \
                         it was sent",
                        v.len()
                    ))
                }
            }
        }
    }
    Ok(())
}

/// The client target. Byte 0: bits 0-1 the server's compression, bit 2 the rest is a plan
/// (else raw response-stream bytes), bits 3-4 the number of calls in flight minus 1.
async fn client_stream(data: &[u8]) -> Result<(), String> {
    alloc_limit::set_limit(CLIENT_ALLOC_BOUND);
    let sel = data.first().copied().unwrap_or(0);
    let rest = data.get(1..).unwrap_or(&[]);
    let comp = Comp::from_bits(sel);
    let calls = 1 + ((sel >> 3) & 3) as usize;
    let plan = if sel & 4 != 0 {
        Plan::build(rest, Side::Responses, comp)
    } else {
        exempt(|| Plan {
            wire: rest.to_vec(),
            splits: Vec::new(),
            plain_total: rest.to_vec(),
            tampered: comp != Comp::None,
        })
    };
    let h = harness();
    let mut cfg = ClientConfig::new(format!("unix:{}", h.fake_path.display()));
    cfg.compress_type = fastrpc::Compression::None;
    cfg.max_frame_size = LIMIT;
    cfg.request_timeout = CALL_TIMEOUT;
    let client = Client::new(cfg).map_err(|e| format!("client: {e}"))?;
    let mut tasks = Vec::new();
    for i in 0..calls {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = c.call(b"call", &[i as u8]).await;
            (r, t0.elapsed())
        }));
    }
    // The fake server: handshake, read every request, then the plan's bytes, then close.
    let (mut s, _) = h.fake.accept().await.map_err(|e| format!("accept: {e}"))?;
    let mut hdr = [0u8; 3];
    s.read_exact(&mut hdr)
        .await
        .map_err(|e| format!("the client sent no handshake: {e}"))?;
    if hdr != [0, 1, 0] {
        return Err(format!("the client sent handshake {hdr:02x?}"));
    }
    s.write_all(&[0, comp.code(), 0])
        .await
        .map_err(|e| format!("write handshake: {e}"))?;
    let mut ids: HashMap<u32, usize> = HashMap::new();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while ids.len() < calls {
        match parse_request(&buf, LIMIT) {
            Ok(Parse::Frame(p, n)) => {
                ids.insert(p.id, buf[p.value.clone()][0] as usize);
                buf.drain(..n);
            }
            Ok(Parse::Incomplete(_)) => {
                let k = s
                    .read(&mut tmp)
                    .await
                    .map_err(|e| format!("read requests: {e}"))?;
                if k == 0 {
                    return Err("the client closed before sending its requests".into());
                }
                buf.extend_from_slice(&tmp[..k]);
            }
            Err(e) => return Err(format!("the client sent a bad request: {e}")),
        }
    }
    let mut want_ids: Vec<u32> = ids.keys().copied().collect();
    want_ids.sort();
    if want_ids != (1..=calls as u32).collect::<Vec<_>>() {
        return Err(format!("a fresh client used request ids {want_ids:?}"));
    }
    let writes = plan.writes();
    let got = exchange(s, &writes).await;
    let _ = got;
    // Every call ends, at once (the connection is closed), with its response or an error.
    let mut outcomes: Vec<Option<Result<Vec<u8>, fastrpc::Error>>> = vec![None; calls];
    for (i, t) in tasks.into_iter().enumerate() {
        let (r, took) = t.await.map_err(|e| format!("call task: {e}"))?;
        if let Err(e) = &r {
            let ok_kind = matches!(
                e.kind(),
                ErrorKind::Connection | ErrorKind::Protocol | ErrorKind::TooLarge
            );
            if !ok_kind {
                return Err(format!(
                    "call {i} failed with {e} after {took:?}; the server had closed the \
                     connection, so only connection, protocol or too-large errors fit"
                ));
            }
        }
        outcomes[i] = Some(r);
    }
    if !plan.tampered {
        // The oracle: the first response for each waiting id before the first bad frame.
        let mut answered: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut unexpected = 0u64;
        let mut off = 0;
        let plain = &plan.plain_total;
        while let Ok(Parse::Frame(p, n)) = parse_response(&plain[off..], LIMIT) {
            let v = plain[off..][p.value.clone()].to_vec();
            if ids.contains_key(&p.id) && !answered.contains_key(&p.id) {
                answered.insert(p.id, v);
            } else {
                unexpected += 1;
            }
            off += n;
        }
        for (id, call) in &ids {
            let got = outcomes[*call].as_ref().expect("outcome");
            match (answered.get(id), got) {
                (Some(w), Ok(v)) if w == v => {}
                (None, Err(_)) => {}
                (w, g) => {
                    return Err(format!(
                        "call with id {id}: expected {}, got {}",
                        match w {
                            Some(w) => format!("a {}-byte response", w.len()),
                            None => "an error".into(),
                        },
                        match g {
                            Ok(v) => format!("a {}-byte response", v.len()),
                            Err(e) => e.to_string(),
                        }
                    ))
                }
            }
        }
        let st = client.stats();
        if st.unexpected_responses != unexpected {
            return Err(format!(
                "the client counted {} unexpected responses, the stream had {unexpected}",
                st.unexpected_responses
            ));
        }
    }
    if client.pending_requests() != 0 {
        return Err(format!(
            "{} calls still pending after every call ended",
            client.pending_requests()
        ));
    }
    Ok(())
}

/// What a handshake header should lead to.
#[derive(Debug, PartialEq, Eq)]
enum HsVerdict {
    Short,
    BadSniff,
    BadVersion,
    BadCompression,
    Tls,
    Ok,
}

fn verdict(h: &[u8]) -> HsVerdict {
    if h.len() < SNIFF.len() + 3 {
        HsVerdict::Short
    } else if &h[..SNIFF.len()] != SNIFF {
        HsVerdict::BadSniff
    } else if h[2] != VERSION {
        HsVerdict::BadVersion
    } else if h[3] > 2 {
        HsVerdict::BadCompression
    } else if h[4] != 0 {
        HsVerdict::Tls
    } else {
        HsVerdict::Ok
    }
}

/// The handshake target. Byte 0 bit 0: 0 = the rest is a client's header (and what follows)
/// sent to a server; 1 = the rest is a server's header sent to a client. Both ways the pub
/// `read_header`, `parse_request` and `parse_response` also get the bytes.
async fn handshake(data: &[u8]) -> Result<(), String> {
    alloc_limit::set_limit(SERVER_ALLOC_BOUND);
    let sel = data.first().copied().unwrap_or(0);
    let rest = data.get(1..).unwrap_or(&[]);
    let v = verdict(rest);
    check_parsers(rest, sel)?;
    // The pub header reader.
    let mut r: &[u8] = rest;
    let res = fastrpc::protocol::handshake::read_header(&mut r, SNIFF, VERSION, "peer").await;
    match (&v, &res) {
        (HsVerdict::Short, Err(e)) if e.kind() == ErrorKind::Connect => {}
        (HsVerdict::BadSniff | HsVerdict::BadVersion | HsVerdict::BadCompression, Err(e))
            if e.kind() == ErrorKind::Protocol => {}
        (HsVerdict::Tls, Ok(h)) if h.tls && h.compression.code() == rest[3] => {}
        (HsVerdict::Ok, Ok(h)) if !h.tls && h.compression.code() == rest[3] => {}
        _ => return Err(format!("read_header on {v:?} gave {res:?}")),
    }
    if sel & 1 == 0 {
        let s = UnixStream::connect(server_path(Comp::None))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let got = exchange(s, &[rest]).await;
        let ours = hello(Comp::None);
        let fine = match v {
            HsVerdict::Ok => got.bytes.starts_with(&ours),
            HsVerdict::Tls => got.bytes == ours,
            _ => got.bytes.is_empty(),
        };
        if !fine {
            return Err(format!(
                "a server given a {v:?} handshake answered {} bytes: {:02x?}",
                got.bytes.len(),
                &got.bytes[..got.bytes.len().min(16)]
            ));
        }
    } else {
        let h = harness();
        let mut cfg = ClientConfig::new(format!("unix:{}", h.fake_path.display()));
        cfg.sniff_header = SNIFF.to_vec();
        cfg.protocol_version = VERSION;
        cfg.compress_type = fastrpc::Compression::None;
        cfg.request_timeout = CALL_TIMEOUT;
        cfg.handshake_timeout = Duration::from_secs(5);
        let client = Client::new(cfg).map_err(|e| format!("client: {e}"))?;
        let c2 = client.clone();
        let call = tokio::spawn(async move { c2.call(b"hs", b"x").await });
        let (mut s, _) = h.fake.accept().await.map_err(|e| format!("accept: {e}"))?;
        let mut hdr = [0u8; 5];
        s.read_exact(&mut hdr)
            .await
            .map_err(|e| format!("the client sent no handshake: {e}"))?;
        if hdr[..] != hello(Comp::None)[..] {
            return Err(format!("the client sent handshake {hdr:02x?}"));
        }
        let _ = exchange(s, &[rest]).await;
        let r = call.await.map_err(|e| format!("call task: {e}"))?;
        let fine = match (&v, &r) {
            (HsVerdict::Short, Err(e)) => {
                e.kind() == ErrorKind::Connect && e.message().contains("handshake")
            }
            (HsVerdict::BadSniff, Err(e)) => {
                e.kind() == ErrorKind::Protocol && e.message().contains("sniff header")
            }
            (HsVerdict::BadVersion, Err(e)) => {
                e.kind() == ErrorKind::Protocol && e.message().contains("protocol version")
            }
            (HsVerdict::BadCompression, Err(e)) => {
                e.kind() == ErrorKind::Protocol && e.message().contains("compression code")
            }
            (HsVerdict::Tls, Err(e)) => e.kind() == ErrorKind::Tls,
            (HsVerdict::Ok, Ok(_)) => true,
            (HsVerdict::Ok, Err(e)) => matches!(
                e.kind(),
                ErrorKind::Connection | ErrorKind::Protocol | ErrorKind::TooLarge
            ),
            _ => false,
        };
        if !fine {
            return Err(format!("a client given a {v:?} server handshake got {r:?}"));
        }
        if client.pending_requests() != 0 {
            return Err("a call is still pending after it ended".into());
        }
    }
    Ok(())
}

/// The contracts of the pub frame parsers on arbitrary bytes and limits.
fn check_parsers(b: &[u8], sel: u8) -> Result<(), String> {
    let limits = [
        1usize,
        (sel as usize) * 3 + 1,
        65536,
        LIMIT,
        u32::MAX as usize,
    ];
    for limit in limits {
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        match parse_request(b, limit) {
            Ok(Parse::Incomplete(n)) => {
                if n <= b.len() || n > 12 + 2 * limit {
                    return Err(format!(
                        "parse_request({} bytes, limit {limit}) asked for {n} bytes",
                        b.len()
                    ));
                }
            }
            Ok(Parse::Frame(p, n)) => {
                let ok = n <= b.len()
                    && p.id == u32_at(0)
                    && p.name.start == 8
                    && p.name.len() == u32_at(4) as usize
                    && p.name.len() <= limit
                    && p.value.start == p.name.end + 4
                    && p.value.len() <= limit
                    && p.value.end == n;
                if !ok {
                    return Err(format!(
                        "parse_request gave {p:?}, {n} on {} bytes",
                        b.len()
                    ));
                }
            }
            Err(e) => {
                if e.kind() != ErrorKind::TooLarge
                    || !e.message().contains("exceeds max_frame_size")
                {
                    return Err(format!("parse_request failed with {e}"));
                }
            }
        }
        match parse_response(b, limit) {
            Ok(Parse::Incomplete(n)) => {
                if n <= b.len() || n > 8 + limit {
                    return Err(format!(
                        "parse_response({} bytes, limit {limit}) asked for {n} bytes",
                        b.len()
                    ));
                }
            }
            Ok(Parse::Frame(p, n)) => {
                let ok = n <= b.len()
                    && p.id == u32_at(0)
                    && p.value.start == 8
                    && p.value.len() == u32_at(4) as usize
                    && p.value.len() <= limit
                    && p.value.end == n;
                if !ok {
                    return Err(format!(
                        "parse_response gave {p:?}, {n} on {} bytes",
                        b.len()
                    ));
                }
            }
            Err(e) => {
                if e.kind() != ErrorKind::TooLarge
                    || !e.message().contains("exceeds max_frame_size")
                {
                    return Err(format!("parse_response failed with {e}"));
                }
            }
        }
    }
    Ok(())
}

/// Every server holds no connection and no running handler, and still serves a normal
/// client. Run every 64 inputs and at the end of a run.
pub fn check_health() -> Result<(), String> {
    let h = harness();
    h.rt.block_on(async {
        for (i, (c, s)) in h.servers.iter().enumerate() {
            let t0 = Instant::now();
            loop {
                let st = s.stats();
                if st.connections_open <= STUCK[i].load(Relaxed) && st.running == 0 {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(5) {
                    return Err(format!(
                        "server {c:?}: {} connections open and {} handlers running 5 s after \
                         the last input",
                        st.connections_open, st.running
                    ));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut cfg = ClientConfig::new(s.local_addr());
            cfg.sniff_header = SNIFF.to_vec();
            cfg.protocol_version = VERSION;
            cfg.compress_type = fastrpc::Compression::Snappy;
            cfg.request_timeout = Duration::from_secs(5);
            let client = Client::new(cfg).map_err(|e| format!("client: {e}"))?;
            match client.call(b"health", b"check").await {
                Ok(v) if v == b"health:check" => {}
                r => {
                    return Err(format!(
                        "server {c:?} no longer serves a normal client: {r:?}"
                    ))
                }
            }
            client
                .close(fastrpc::CloseMode::Drain(Duration::from_secs(1)))
                .await;
        }
        Ok(())
    })
}
