//! TLS interop with independent TLS stacks, as the peer of our client and of our server:
//!
//! * Go's crypto/tls: `tests/tls-peers/gopeer`, built here with `go build` (the Go toolchain is
//!   required; the test fails, never skips, without it). It speaks the fastrpc handshake and
//!   tlv frames (compression none) itself and reports what it saw line by line.
//! * OpenSSL: `openssl s_server` / `s_client` (Debian's `openssl` package). They do not speak
//!   the fastrpc handshake, so a relay in this test does the plaintext handshake with our side
//!   and then pipes the TLS bytes to OpenSSL; the test plays the fastrpc peer through OpenSSL's
//!   standard input (frames it sends) and output (frames it receives, found by their exact
//!   bytes among OpenSSL's own messages). OpenSSL's connected commands send KeyUpdate
//!   (`k`: not requested, `K`: requested) and close a connection (`q`).
//!
//! Cases: TLS 1.3 with each AEAD suite, TLS 1.2 ECDHE with AES-GCM and ChaCha20, KeyUpdate
//! from the peer (requested and not), session resumption, mutual TLS, and a relay that flips a
//! ciphertext bit or cuts a record short (a clean error, no hang, and service goes on).
//! Certificates: rcgen, written to a temporary directory (0700, keys 0600) removed on drop.
//! docs/RELIABILITY.md ("TLS interop") has the matrix.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::certs::{test_pki, TestPki};
use fastrpc::{
    Call, Client, ClientConfig, Compression, Error, ErrorKind, Server, ServerConfig,
    TlsClientConfig, TlsServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// Bound on each test's body (the Go peer's build, once per run, is bounded separately).
const TEST_BOUND: Duration = Duration::from_secs(90);
/// Bound on waiting for one thing a peer prints.
const WAIT_BOUND: Duration = Duration::from_secs(20);
/// A failed call must end well before this (a hang would wait for the request timeout).
const PROMPT: Duration = Duration::from_secs(5);

async fn bounded(f: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_BOUND, f)
        .await
        .expect("the test did not finish within its bound");
}

/// [`bounded`] for a test with the Go peer, built (once per run) before the clock starts.
async fn bounded_go(f: impl Future<Output = ()>) {
    tokio::task::spawn_blocking(gopeer).await.unwrap();
    bounded(f).await
}

// ---------------------------------------------------------------------------------------
// Certificates on disk.

/// A temporary directory (mode 0700) removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "fastrpc-tls-interop-{}-{}",
            std::process::id(),
            N.fetch_add(1, SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        TempDir(p)
    }

    /// Writes `body` to `name` with `mode` (0600 for keys) and returns its path.
    fn write(&self, name: &str, body: &str, mode: u32) -> PathBuf {
        let p = self.0.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&p)
            .unwrap();
        f.write_all(body.as_bytes()).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh test PKI and its PEM files.
struct Pki {
    pem: TestPki,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    dir: TempDir,
}

fn pki() -> Pki {
    let pem = test_pki();
    let dir = TempDir::new();
    let key_mode = 0o600;
    Pki {
        ca: dir.write("ca.pem", &pem.ca_pem, 0o644),
        server_cert: dir.write("server.pem", &pem.server_cert_pem, 0o644),
        server_key: dir.write("server.key", &pem.server_key_pem, key_mode),
        client_cert: dir.write("client.pem", &pem.client_cert_pem, 0o644),
        client_key: dir.write("client.key", &pem.client_key_pem, key_mode),
        pem,
        dir,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------
// Our side.

/// The handler of our servers: `name:value`, except the name `big`, answered with
/// [`big_value`] (so a peer client gets a response over several TLS records).
fn echo(call: Call) {
    if call.name() == b"big" {
        let _ = call.reply(&big_value());
        return;
    }
    let v = echoed(call.name(), call.value());
    let _ = call.reply(&v);
}

fn echoed(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = name.to_vec();
    v.push(b':');
    v.extend_from_slice(value);
    v
}

/// 40000 bytes of hex digits: more than two TLS records, and no byte an OpenSSL connected
/// command starts with.
fn big_value() -> Vec<u8> {
    (0..40_000u32)
        .map(|i| b"0123456789abcdef"[(i * 7 % 16) as usize])
        .collect()
}

async fn our_server(p: &Pki, client_ca: bool) -> Server {
    let mut cfg = ServerConfig::default();
    cfg.compress_type = Compression::None;
    cfg.handshake_timeout = Duration::from_secs(10);
    cfg.tls = Some(TlsServerConfig {
        cert_pem: p.pem.server_cert_pem.as_bytes().to_vec(),
        key_pem: p.pem.server_key_pem.as_bytes().to_vec(),
        client_ca_pem: client_ca.then(|| p.pem.ca_pem.as_bytes().to_vec()),
        ..Default::default()
    });
    Server::bind("127.0.0.1:0", cfg, echo).await.unwrap()
}

/// Our client for `addr`, verifying the server against the test CA (and the IP address
/// 127.0.0.1, which the server certificate names); with our client certificate if `cert`.
fn our_client(addr: &str, p: &Pki, cert: bool) -> Client {
    let mut cfg = ClientConfig::new(addr);
    cfg.compress_type = Compression::None;
    cfg.request_timeout = Duration::from_secs(15);
    cfg.handshake_timeout = Duration::from_secs(10);
    cfg.reconnect_backoff_min = Duration::from_millis(5);
    cfg.reconnect_backoff_max = Duration::from_millis(50);
    cfg.tls = Some(TlsClientConfig {
        ca_pem: Some(p.pem.ca_pem.as_bytes().to_vec()),
        client_cert_pem: cert.then(|| p.pem.client_cert_pem.as_bytes().to_vec()),
        client_key_pem: cert.then(|| p.pem.client_key_pem.as_bytes().to_vec()),
        ..Default::default()
    });
    Client::new(cfg).unwrap()
}

/// A call that must fail promptly (not by its timeout) with a TLS or connection error.
async fn call_fails_cleanly(cl: &Client, name: &[u8], value: &[u8]) -> Error {
    let t0 = Instant::now();
    let r = cl.call(name, value).await;
    let took = t0.elapsed();
    let e = match r {
        Ok(v) => panic!("the call succeeded with {:?}", String::from_utf8_lossy(&v)),
        Err(e) => e,
    };
    assert!(
        matches!(e.kind(), ErrorKind::Tls | ErrorKind::Connection),
        "expected a TLS or connection error, got {:?}: {e}",
        e.kind()
    );
    assert!(took < PROMPT, "the call failed only after {took:?}: {e}");
    e
}

/// A call that may first meet the end of a connection the peer just closed: retried (at most
/// four times) on a connection or connect error, which is how a user sees that race.
async fn call_across_reconnect(cl: &Client, name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut last = None;
    for _ in 0..4 {
        match cl.call(name, value).await {
            Ok(v) => return v,
            Err(e) if matches!(e.kind(), ErrorKind::Connection | ErrorKind::Connect) => {
                last = Some(e)
            }
            Err(e) => panic!("call failed: {e}"),
        }
    }
    panic!("call failed four times, last: {:?}", last)
}

/// Waits until `cond` holds (polled every 2 ms; a bounded wait, for server counters).
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < WAIT_BOUND,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Peer processes.

/// A child process with piped stdin/stdout/stderr; its output is collected by two threads.
/// Killed on drop.
struct Peer {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: watch::Receiver<Vec<u8>>,
    err: watch::Receiver<Vec<u8>>,
}

fn collect(mut r: impl Read + Send + 'static) -> watch::Receiver<Vec<u8>> {
    let (tx, rx) = watch::channel(Vec::new());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break, // dropping tx tells the waiters
                Ok(n) => tx.send_modify(|v| v.extend_from_slice(&buf[..n])),
            }
        }
    });
    rx
}

impl Peer {
    fn spawn(name: &str, cmd: &mut Command) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        Peer {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            out,
            err,
        }
    }

    fn out(&self) -> Vec<u8> {
        self.out.borrow().clone()
    }

    fn out_text(&self) -> String {
        String::from_utf8_lossy(&self.out()).into_owned()
    }

    fn dump(&self) -> String {
        format!(
            "{} stdout:\n{}\n{} stderr:\n{}",
            self.name,
            String::from_utf8_lossy(&strip_noise(&self.out())),
            self.name,
            String::from_utf8_lossy(&self.err.borrow())
        )
    }

    /// Waits (bounded) until the output so far satisfies `pred`; `false` if the peer closed
    /// its output (exited) first.
    async fn try_wait_out(&self, mut pred: impl FnMut(&[u8]) -> bool) -> bool {
        let mut rx = self.out.clone();
        let r = tokio::time::timeout(WAIT_BOUND, async { rx.wait_for(|v| pred(v)).await.is_ok() })
            .await;
        match r {
            Ok(true) => true,
            Ok(false) => pred(&self.out()),
            Err(_) => panic!("{}: timed out\n{}", self.name, self.dump()),
        }
    }

    async fn wait_out(&self, what: &str, pred: impl FnMut(&[u8]) -> bool) {
        if !self.try_wait_out(pred).await {
            panic!("{} exited before {what}\n{}", self.name, self.dump());
        }
    }

    /// Waits for stdout to contain `needle` at least `count` times (after [`strip_noise`]).
    async fn wait_count(&self, needle: &str, count: usize) {
        self.wait_out(&format!("{count} x {needle:?}"), |v| {
            occurrences(&strip_noise(v), needle.as_bytes()) >= count
        })
        .await
    }

    fn send(&mut self, bytes: &[u8]) {
        let w = self.stdin.as_mut().expect("stdin closed");
        w.write_all(bytes).unwrap();
        w.flush().unwrap();
    }

    /// Closes stdin and waits (bounded) for the process to close its output and exit.
    async fn finish(&mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let mut rx = self.out.clone();
        let closed =
            tokio::time::timeout(WAIT_BOUND, async { while rx.changed().await.is_ok() {} }).await;
        assert!(
            closed.is_ok(),
            "{} did not exit\n{}",
            self.name,
            self.dump()
        );
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(t0.elapsed() < WAIT_BOUND, "{} did not exit", self.name);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn occurrences(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || hay.len() < needle.len() {
        return 0;
    }
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// OpenSSL's s_server and s_client print "Read BLOCK" / "read R BLOCK" whenever a read would
/// block, which can fall between two TLS records of one frame: removed before searching.
fn strip_noise(v: &[u8]) -> Vec<u8> {
    let mut out = v.to_vec();
    for noise in [&b"read R BLOCK\n"[..], b"Read BLOCK\n"] {
        while let Some(i) = find(&out, noise) {
            out.drain(i..i + noise.len());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The Go peer.

/// Builds tests/tls-peers/gopeer once per test run into cargo's temporary directory.
fn gopeer() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls-peers/gopeer");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-peers");
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!("gopeer.tmp-{}", std::process::id()));
        let go = ["go", "/usr/local/go/bin/go"]
            .into_iter()
            .find(|g| Command::new(g).arg("version").output().is_ok())
            .unwrap_or_else(|| {
                panic!(
                    "the Go toolchain (`go`) is needed to build the interop peer \
                     tests/tls-peers/gopeer: install Go (https://go.dev/dl/) and put it on PATH"
                )
            });
        let mut cmd = Command::new(go);
        cmd.args(["build", "-o"])
            .arg(&tmp)
            .arg(".")
            .current_dir(&src)
            .env("GOWORK", "off")
            .env("GOTOOLCHAIN", "local");
        if std::env::var_os("GOCACHE").is_none() && std::env::var_os("HOME").is_none() {
            cmd.env("GOCACHE", dir.join("go-build-cache"));
        }
        let out = run_bounded(cmd, Duration::from_secs(600), "go build");
        assert!(
            out.status.success(),
            "go build of tests/tls-peers/gopeer failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = dir.join("gopeer");
        std::fs::rename(&tmp, &bin).unwrap();
        bin
    })
}

/// Runs `cmd` to completion, killing it after `limit`.
fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{what} did not finish within {limit:?}")
        }
    }
}

fn go_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(gopeer());
    c.args(args);
    c
}

/// One line of the Go peer's report: `kind k=v ... msg=free text`.
#[derive(Debug)]
struct Line {
    kind: String,
    f: HashMap<String, String>,
    msg: String,
}

fn go_lines(p: &Peer) -> Vec<Line> {
    p.out_text()
        .lines()
        .map(|l| {
            let (kind, mut rest) = l.split_once(' ').unwrap_or((l, ""));
            let mut f = HashMap::new();
            let mut msg = String::new();
            while !rest.is_empty() {
                if let Some(m) = rest.strip_prefix("msg=") {
                    msg = m.to_string();
                    break;
                }
                let (word, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if let Some((k, v)) = word.split_once('=') {
                    f.insert(k.to_string(), v.to_string());
                }
                rest = tail;
            }
            Line {
                kind: kind.to_string(),
                f,
                msg,
            }
        })
        .collect()
}

fn go_find<'a>(lines: &'a [Line], kind: &str, n: usize) -> Option<&'a Line> {
    lines
        .iter()
        .find(|l| l.kind == kind && l.f.get("n").map(String::as_str) == Some(&n.to_string()))
}

/// Starts the Go peer as a server; returns it and its address.
async fn go_server(args: &[&str], env: &[(&str, &str)]) -> (Peer, String) {
    let mut cmd = go_cmd(&[&["-mode", "server"][..], args].concat());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let peer = Peer::spawn("go server", &mut cmd);
    peer.wait_out("listening", |v| {
        String::from_utf8_lossy(v)
            .lines()
            .any(|l| l.starts_with("listening "))
    })
    .await;
    let addr = peer
        .out_text()
        .lines()
        .find_map(|l| l.strip_prefix("listening ").map(str::to_string))
        .unwrap();
    (peer, addr)
}

fn go_server_args<'a>(p: &'a Pki, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["-cert", s(&p.server_cert), "-key", s(&p.server_key)];
    a.extend_from_slice(extra);
    a
}

fn go_client_cmd(p: &Pki, addr: &str, extra: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = go_cmd(&["-mode", "client", "-addr", addr, "-ca", s(&p.ca)]);
    cmd.args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The Go client's "conn" line for connection `n`, with its three responses checked (call 2
/// carries 40000 bytes each way).
fn assert_go_client_conn<'a>(lines: &'a [Line], n: usize, peer: &Peer) -> &'a Line {
    let conn =
        go_find(lines, "conn", n).unwrap_or_else(|| panic!("no conn n={n}\n{}", peer.dump()));
    let resps: Vec<&Line> = lines
        .iter()
        .filter(|l| l.kind == "resp" && l.f["n"] == n.to_string())
        .collect();
    assert_eq!(resps.len(), 3, "{}", peer.dump());
    for (i, r) in resps.iter().enumerate() {
        assert_eq!(r.f["id"], (i + 1).to_string());
        assert_eq!(r.f["len"], if i == 1 { "40003" } else { "19" });
        assert_eq!(r.f["ok"], "true", "{}", peer.dump());
    }
    conn
}

/// Three calls from our client (16 bytes, 40000 bytes, 16 bytes), each answered exactly.
async fn three_calls(cl: &Client, tag: &str) {
    for (i, size) in [16usize, 40_000, 16].into_iter().enumerate() {
        let v: Vec<u8> = (0..size).map(|k| b'a' + ((k * 7 + i) % 26) as u8).collect();
        let name = format!("{tag}-{i}");
        assert_eq!(
            cl.call(name.as_bytes(), &v).await.unwrap(),
            echoed(name.as_bytes(), &v),
            "{tag} call {i}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Relays.

/// What a relay does with the plaintext fastrpc handshake before piping TLS records.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Front {
    /// Passes it through (both ends speak fastrpc).
    Pass,
    /// Answers our client's handshake itself (the upstream is an OpenSSL server).
    AsServer,
    /// Does the client's handshake with our server itself (the downstream is OpenSSL).
    AsClient,
}

/// Which direction a tampered record travels.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Toward {
    Client,
    Server,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Tamper {
    /// One bit of the record's ciphertext flipped.
    FlipBit,
    /// Half of the record sent, then both connections closed.
    Truncate,
}

/// A TCP relay on 127.0.0.1 in front of `upstream`. When armed, the next application-data
/// record (type 23) travelling `toward` is tampered with, once.
struct Relay {
    addr: String,
    armed: Arc<AtomicBool>,
    tampered: Arc<(AtomicUsize, Notify)>,
    /// Bumped to close every connection open through the relay (both sides see a FIN).
    cut: Arc<watch::Sender<u64>>,
}

impl Relay {
    async fn start(upstream: &str, front: Front, toward: Toward, tamper: Tamper) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let armed = Arc::new(AtomicBool::new(false));
        let tampered = Arc::new((AtomicUsize::new(0), Notify::new()));
        let cut = Arc::new(watch::channel(0u64).0);
        let upstream = upstream.to_string();
        let (a, t, c) = (armed.clone(), tampered.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((down, _)) = l.accept().await {
                let (upstream, a, t) = (upstream.clone(), a.clone(), t.clone());
                let mut cut = c.subscribe();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = relay_conn(down, &upstream, front, toward, tamper, a, t) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay {
            addr,
            armed,
            tampered,
            cut,
        }
    }

    /// A relay that only does `front` and never tampers.
    async fn plain(upstream: &str, front: Front) -> Relay {
        Relay::start(upstream, front, Toward::Client, Tamper::FlipBit).await
    }

    /// Closes every connection open through the relay now.
    fn cut(&self) {
        self.cut.send_modify(|g| *g += 1);
    }

    fn arm(&self) {
        self.armed.store(true, SeqCst);
    }

    async fn wait_tampered(&self) {
        let (n, notify) = &*self.tampered;
        let fired = notify.notified();
        if n.load(SeqCst) == 0 {
            tokio::time::timeout(WAIT_BOUND, fired)
                .await
                .expect("the relay never saw the record to tamper with");
        }
        assert_eq!(n.load(SeqCst), 1);
    }

    fn port(&self) -> &str {
        self.addr.rsplit_once(':').unwrap().1
    }
}

/// The handshake header of both sides in every relayed test: no sniff header, version 0,
/// compression none, TLS. (A relay that does not get it drops the connection, which fails
/// the test's call.)
const HELLO: [u8; 3] = [0, 1, 1];

async fn relay_conn(
    mut down: TcpStream,
    upstream: &str,
    front: Front,
    toward: Toward,
    tamper: Tamper,
    armed: Arc<AtomicBool>,
    tampered: Arc<(AtomicUsize, Notify)>,
) -> std::io::Result<()> {
    let mut hs = [0u8; 3];
    let mut up;
    match front {
        Front::Pass => {
            up = TcpStream::connect(upstream).await?;
            down.read_exact(&mut hs).await?;
            up.write_all(&hs).await?;
            up.read_exact(&mut hs).await?;
            down.write_all(&hs).await?;
        }
        Front::AsServer => {
            down.read_exact(&mut hs).await?;
            if hs != HELLO {
                return Err(std::io::Error::other(format!("our client sent {hs:?}")));
            }
            down.write_all(&HELLO).await?;
            up = TcpStream::connect(upstream).await?;
        }
        Front::AsClient => {
            up = TcpStream::connect(upstream).await?;
            up.write_all(&HELLO).await?;
            up.read_exact(&mut hs).await?;
            if hs != HELLO {
                return Err(std::io::Error::other(format!("our server sent {hs:?}")));
            }
        }
    }
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    let to_server = pump(
        dr,
        uw,
        toward == Toward::Server,
        tamper,
        armed.clone(),
        tampered.clone(),
    );
    let to_client = pump(ur, dw, toward == Toward::Client, tamper, armed, tampered);
    let _ = tokio::join!(to_server, to_client);
    Ok(())
}

/// Copies TLS records from `r` to `w`, tampering with one if this is the chosen direction.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    chosen: bool,
    tamper: Tamper,
    armed: Arc<AtomicBool>,
    tampered: Arc<(AtomicUsize, Notify)>,
) -> std::io::Result<()> {
    loop {
        let mut hdr = [0u8; 5];
        if r.read_exact(&mut hdr).await.is_err() {
            let _ = w.shutdown().await;
            return Ok(());
        }
        let len = u16::from_be_bytes([hdr[3], hdr[4]]) as usize;
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        if chosen && hdr[0] == 23 && len > 1 && armed.swap(false, SeqCst) {
            match tamper {
                Tamper::FlipBit => body[len / 2] ^= 0x10,
                Tamper::Truncate => {
                    w.write_all(&hdr).await?;
                    w.write_all(&body[..len / 2]).await?;
                    let _ = w.shutdown().await;
                    tampered.0.fetch_add(1, SeqCst);
                    tampered.1.notify_waiters();
                    return Ok(());
                }
            }
            tampered.0.fetch_add(1, SeqCst);
            tampered.1.notify_waiters();
        }
        w.write_all(&hdr).await?;
        w.write_all(&body).await?;
    }
}

// ---------------------------------------------------------------------------------------
// OpenSSL.

fn openssl() -> &'static str {
    static OK: OnceLock<()> = OnceLock::new();
    OK.get_or_init(|| {
        let out = Command::new("openssl")
            .arg("version")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "the `openssl` command is needed for the OpenSSL interop tests ({e}); \
                 install Debian's package: apt-get install openssl"
                )
            });
        assert!(out.status.success(), "openssl version failed");
    });
    "openssl"
}

/// `openssl s_server` on a free port of 127.0.0.1 (non-quiet, so its connected commands work
/// and it says what it negotiated). Returns it and its address.
async fn s_server(p: &Pki, extra: &[&str]) -> (Peer, String) {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(openssl());
        cmd.args(["s_server", "-accept", &addr, "-naccept", "10"])
            .args(["-cert", s(&p.server_cert), "-key", s(&p.server_key)])
            .args(extra);
        let peer = Peer::spawn("openssl s_server", &mut cmd);
        if peer.try_wait_out(|v| find(v, b"ACCEPT\n").is_some()).await {
            return (peer, addr);
        }
        // The port was taken in between: try another.
    }
    panic!("openssl s_server could not listen");
}

/// `openssl s_client` connected to `port`, verifying our server as `localhost` against the
/// test CA.
fn s_client(p: &Pki, port: &str, extra: &[&str]) -> Peer {
    let mut cmd = Command::new(openssl());
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-CAfile", s(&p.ca), "-verify_return_error"])
        .args(["-verify_hostname", "localhost", "-servername", "localhost"])
        .args(extra);
    Peer::spawn("openssl s_client", &mut cmd)
}

fn frame_request(id: u32, name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut f = id.to_le_bytes().to_vec();
    f.extend_from_slice(&(name.len() as u32).to_le_bytes());
    f.extend_from_slice(name);
    f.extend_from_slice(&(value.len() as u32).to_le_bytes());
    f.extend_from_slice(value);
    f
}

fn frame_response(id: u32, value: &[u8]) -> Vec<u8> {
    let mut f = id.to_le_bytes().to_vec();
    f.extend_from_slice(&(value.len() as u32).to_le_bytes());
    f.extend_from_slice(value);
    f
}

/// Plays the fastrpc server behind `openssl s_server` for one call of our client: waits for
/// the request `name`/`value` on s_server's output, answers `reply` (small: written to its
/// input in one piece). Returns the call's result.
async fn serve_one_via_s_server(
    srv: &mut Peer,
    cl: &Client,
    name: &[u8],
    value: &[u8],
    reply: &[u8],
) -> Result<Vec<u8>, Error> {
    let (n, v) = (name.to_vec(), value.to_vec());
    let c = cl.clone();
    let call = tokio::spawn(async move { c.call(&n, &v).await });
    // The request without its id (which our client chose).
    let tail = frame_request(0, name, value)[4..].to_vec();
    srv.wait_out("the request", |o| find(&strip_noise(o), &tail).is_some())
        .await;
    let o = strip_noise(&srv.out());
    let at = find(&o, &tail).unwrap();
    assert!(at >= 4, "request id missing");
    let id = u32::from_le_bytes(o[at - 4..at].try_into().unwrap());
    assert!(
        (1..75).contains(&id),
        "request id {id}: beyond what this test expects"
    );
    srv.send(&frame_response(id, reply));
    tokio::time::timeout(WAIT_BOUND, call)
        .await
        .expect("the call did not end")
        .unwrap()
}

/// Plays the fastrpc client behind `openssl s_client`: writes request `id` and waits for
/// the exact response frame `expect` on s_client's output.
async fn call_via_s_client(cli: &mut Peer, id: u32, name: &[u8], value: &[u8], expect: &[u8]) {
    let before = occurrences(&strip_noise(&cli.out()), &frame_response(id, expect));
    cli.send(&frame_request(id, name, value));
    let resp = frame_response(id, expect);
    cli.wait_out("the response", |o| {
        occurrences(&strip_noise(o), &resp) > before
    })
    .await;
}

// =======================================================================================
// Go's crypto/tls.

const GO_TLS12_SUITES: [&str; 3] = [
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// TLS 1.3 suites Go can be made to pick: AES-128-GCM by default, ChaCha20-Poly1305 when Go
/// believes it has no AES hardware (it then prefers ChaCha20 as server and offers it first
/// as client). Go never prefers AES-256-GCM; OpenSSL covers it below.
const GO_TLS13: [(&str, &str); 2] = [
    ("", "TLS_AES_128_GCM_SHA256"),
    ("cpu.aes=off", "TLS_CHACHA20_POLY1305_SHA256"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_server_tls13_and_tls12_suites_with_our_client() {
    bounded_go(async {
        let p = pki();
        let mut cases: Vec<(Vec<&str>, &str, &str, &str)> = Vec::new();
        for (godebug, suite) in GO_TLS13 {
            cases.push((vec!["-tls", "1.3"], godebug, "TLSv1.3", suite));
        }
        for suite in GO_TLS12_SUITES {
            cases.push((vec!["-tls", "1.2", "-ciphers", suite], "", "TLSv1.2", suite));
        }
        for (args, godebug, version, suite) in cases {
            let (mut go, addr) =
                go_server(&go_server_args(&p, &args), &[("GODEBUG", godebug)]).await;
            let cl = our_client(&addr, &p, false);
            three_calls(&cl, "rs").await;
            let st = cl.stats();
            assert_eq!((st.responses, st.connects, st.errors.total()), (3, 1, 0));
            cl.close(fastrpc::CloseMode::Drain(Duration::from_secs(5)))
                .await;
            go.wait_count("closed n=0", 1).await;
            let lines = go_lines(&go);
            let conn = go_find(&lines, "conn", 0).unwrap();
            assert_eq!(conn.f["version"], version, "{}", go.dump());
            assert_eq!(conn.f["cipher"], suite, "{}", go.dump());
            assert_eq!(conn.f["resumed"], "false");
            assert_eq!(conn.f["peer"], "-", "no client certificate was sent");
            let closed = go_find(&lines, "closed", 0).unwrap();
            assert_eq!(closed.f["requests"], "3", "{}", go.dump());
            go.finish().await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_tls13_and_tls12_suites_with_our_server() {
    bounded_go(async {
        let p = pki();
        let server = our_server(&p, false).await;
        let addr = server.local_addr();
        let mut cases: Vec<(Vec<&str>, &str, &str, &str)> = Vec::new();
        for (godebug, suite) in GO_TLS13 {
            cases.push((vec!["-tls", "1.3"], godebug, "TLSv1.3", suite));
        }
        for suite in GO_TLS12_SUITES {
            cases.push((vec!["-tls", "1.2", "-ciphers", suite], "", "TLSv1.2", suite));
        }
        let mut want_requests = 0;
        for (args, godebug, version, suite) in cases {
            let mut go = Peer::spawn(
                "go client",
                &mut go_client_cmd(&p, &addr, &args, &[("GODEBUG", godebug)]),
            );
            assert!(go.finish().await.success(), "{}", go.dump());
            let lines = go_lines(&go);
            let conn = assert_go_client_conn(&lines, 0, &go);
            assert_eq!(conn.f["version"], version, "{}", go.dump());
            assert_eq!(conn.f["cipher"], suite, "{}", go.dump());
            assert_eq!(conn.f["peer"], "localhost");
            assert!(lines.iter().all(|l| l.kind != "error"), "{}", go.dump());
            want_requests += 3;
            assert_eq!(server.stats().requests, want_requests);
        }
        let st = server.stats();
        assert_eq!((st.handshake_failures, st.errors.total()), (0, 0), "{st:?}");
        server.stop(Duration::from_secs(5)).await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_session_resumption_both_ways() {
    bounded_go(async {
        let p = pki();
        for version in ["1.3", "1.2"] {
            // Our client against Go's server: the relay drops the first connection, our client
            // reconnects and must resume.
            let (mut go, addr) =
                go_server(&go_server_args(&p, &["-tls", version, "-conns", "2"]), &[]).await;
            let relay = Relay::plain(&addr, Front::Pass).await;
            let cl = our_client(&relay.addr, &p, false);
            assert_eq!(cl.call(b"a", b"1").await.unwrap(), b"a:1");
            relay.cut();
            assert_eq!(call_across_reconnect(&cl, b"b", b"2").await, b"b:2");
            go.wait_count("conn n=1", 1).await;
            let lines = go_lines(&go);
            assert_eq!(go_find(&lines, "conn", 0).unwrap().f["resumed"], "false");
            assert_eq!(
                go_find(&lines, "conn", 1).unwrap().f["resumed"],
                "true",
                "TLS {version}: our client did not resume its session with Go's server\n{}",
                go.dump()
            );
            assert_eq!(cl.stats().connects, 2);
            go.finish().await;

            // Go's client against our server, with a session cache. TLS 1.3 only: Go's client
            // resumes TLS 1.2 only with session tickets (RFC 5077), and our server keeps TLS
            // 1.2 sessions by session id (rustls' default: no ticketer), which OpenSSL's
            // client uses (openssl_session_resumption_both_ways).
            if version == "1.2" {
                continue;
            }
            let server = our_server(&p, false).await;
            let mut go = Peer::spawn(
                "go client",
                &mut go_client_cmd(
                    &p,
                    &server.local_addr(),
                    &["-tls", version, "-conns", "2", "-resume"],
                    &[],
                ),
            );
            assert!(go.finish().await.success(), "{}", go.dump());
            let lines = go_lines(&go);
            assert_eq!(assert_go_client_conn(&lines, 0, &go).f["resumed"], "false");
            assert_eq!(
                assert_go_client_conn(&lines, 1, &go).f["resumed"],
                "true",
                "TLS {version}: Go's client did not resume with our server\n{}",
                go.dump()
            );
            assert_eq!(server.stats().connections_accepted, 2);
            server.stop(Duration::from_secs(5)).await.unwrap();
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_mutual_tls_both_ways() {
    bounded_go(async {
        let p = pki();
        for version in ["1.3", "1.2"] {
            // Go's server requires a client certificate signed by the test CA.
            let (mut go, addr) = go_server(
                &go_server_args(
                    &p,
                    &["-tls", version, "-client-ca", s(&p.ca), "-conns", "2"],
                ),
                &[],
            )
            .await;
            let cl = our_client(&addr, &p, true);
            three_calls(&cl, "mtls").await;
            go.wait_count("conn n=0", 1).await;
            assert_eq!(
                go_find(&go_lines(&go), "conn", 0).unwrap().f["peer"],
                "fastrpc_test_client"
            );
            // Without a certificate our client is refused, cleanly.
            let anon = our_client(&addr, &p, false);
            let t0 = Instant::now();
            let e = anon.call(b"x", b"y").await.unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::Tls | ErrorKind::Connection | ErrorKind::Connect
                ),
                "TLS {version}: {:?}: {e}",
                e.kind()
            );
            assert!(t0.elapsed() < PROMPT, "{e}");
            go.wait_count("error n=1", 1).await;
            let lines = go_lines(&go);
            let refused = go_find(&lines, "error", 1).unwrap();
            assert_eq!(refused.f["stage"], "handshake");
            assert!(refused.msg.contains("certificate"), "{}", refused.msg);
            go.finish().await;

            // Our server requires a client certificate; Go's client presents one.
            let server = our_server(&p, true).await;
            let mut go = Peer::spawn(
                "go client",
                &mut go_client_cmd(
                    &p,
                    &server.local_addr(),
                    &[
                        "-tls",
                        version,
                        "-cert",
                        s(&p.client_cert),
                        "-key",
                        s(&p.client_key),
                    ],
                    &[],
                ),
            );
            assert!(go.finish().await.success(), "{}", go.dump());
            assert_go_client_conn(&go_lines(&go), 0, &go);
            assert_eq!(server.stats().requests, 3);
            // Without one, Go's client is refused: in TLS 1.3 with a certificate_required
            // alert (RFC 8446 4.4.2.4), which Go reports at its first read; in TLS 1.2 during
            // the handshake.
            let mut go = Peer::spawn(
                "go client",
                &mut go_client_cmd(&p, &server.local_addr(), &["-tls", version], &[]),
            );
            go.finish().await;
            let lines = go_lines(&go);
            let err = lines.iter().find(|l| l.kind == "error").unwrap_or_else(|| {
                panic!(
                    "Go's client was served without a certificate\n{}",
                    go.dump()
                )
            });
            if version == "1.3" {
                assert!(
                    err.msg.contains("certificate required"),
                    "Go's client saw: {}\n{}",
                    err.msg,
                    go.dump()
                );
            } else {
                assert_eq!(err.f["stage"], "handshake", "{}", go.dump());
            }
            wait_until("the refusal is counted", || {
                server.stats().handshake_failures == 1
            })
            .await;
            assert_eq!(server.stats().requests, 3);
            // And the server still serves.
            let cl = our_client(&server.local_addr(), &p, true);
            three_calls(&cl, "after").await;
            server.stop(Duration::from_secs(5)).await.unwrap();
        }
    })
    .await
}

/// A sniff header and a protocol version other than the defaults, both ways (the handshake
/// bytes before TLS are all the peers' own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_peers_with_a_sniff_header_and_protocol_version() {
    bounded_go(async {
        let p = pki();
        let (mut go, addr) = go_server(
            &go_server_args(&p, &["-sniff", "fastrpc-interop", "-pv", "7"]),
            &[],
        )
        .await;
        let mut cfg = ClientConfig::new(addr.as_str());
        cfg.compress_type = Compression::None;
        cfg.sniff_header = b"fastrpc-interop".to_vec();
        cfg.protocol_version = 7;
        cfg.tls = Some(TlsClientConfig {
            ca_pem: Some(p.pem.ca_pem.as_bytes().to_vec()),
            ..Default::default()
        });
        let cl = Client::new(cfg).unwrap();
        three_calls(&cl, "sniff").await;
        cl.close(fastrpc::CloseMode::Drain(Duration::from_secs(5)))
            .await;
        go.wait_count("closed n=0 requests=3", 1).await;
        go.finish().await;

        let mut cfg = ServerConfig::default();
        cfg.compress_type = Compression::None;
        cfg.sniff_header = b"fastrpc-interop".to_vec();
        cfg.protocol_version = 7;
        cfg.tls = Some(TlsServerConfig {
            cert_pem: p.pem.server_cert_pem.as_bytes().to_vec(),
            key_pem: p.pem.server_key_pem.as_bytes().to_vec(),
            ..Default::default()
        });
        let server = Server::bind("127.0.0.1:0", cfg, echo).await.unwrap();
        let mut go = Peer::spawn(
            "go client",
            &mut go_client_cmd(
                &p,
                &server.local_addr(),
                &["-sniff", "fastrpc-interop", "-pv", "7"],
                &[],
            ),
        );
        assert!(go.finish().await.success(), "{}", go.dump());
        assert_go_client_conn(&go_lines(&go), 0, &go);
        assert_eq!(server.stats().requests, 3);
        server.stop(Duration::from_secs(5)).await.unwrap();
    })
    .await
}

/// Our client, through a relay that tampers with the second response of Go's server: the
/// call fails promptly with a TLS or connection error, the next call reconnects and works.
/// Returns Go's report of the tampered connection's end.
async fn go_server_tampered_toward_our_client(tamper: Tamper, version: &str) -> (Peer, Vec<Line>) {
    let p = pki();
    let (go, addr) = go_server(&go_server_args(&p, &["-tls", version, "-conns", "2"]), &[]).await;
    let relay = Relay::start(&addr, Front::Pass, Toward::Client, tamper).await;
    let cl = our_client(&relay.addr, &p, false);
    assert_eq!(cl.call(b"a", b"1").await.unwrap(), b"a:1");
    relay.arm();
    let e = call_fails_cleanly(&cl, b"b", b"2").await;
    relay.wait_tampered().await;
    eprintln!(
        "{tamper:?} toward our client, TLS {version}: {:?}: {e}",
        e.kind()
    );
    assert_eq!(call_across_reconnect(&cl, b"c", b"3").await, b"c:3");
    let st = cl.stats();
    assert_eq!((st.responses, st.connects), (2, 2), "{st:?}");
    go.wait_count("closed n=0", 1).await;
    go.wait_count("conn n=1", 1).await;
    let lines = go_lines(&go);
    (go, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_server_flipped_bit_toward_our_client() {
    bounded_go(async {
        for version in ["1.3", "1.2"] {
            let (go, lines) = go_server_tampered_toward_our_client(Tamper::FlipBit, version).await;
            let closed = go_find(&lines, "closed", 0).unwrap();
            assert_eq!(closed.f["requests"], "2", "{}", go.dump());
        }
    })
    .await
}

/// RFC 8446 5.2: a record that fails to decrypt ends the connection with a bad_record_mac
/// alert, which Go reports as "remote error: tls: bad record MAC" (an orderly close_notify
/// would hide the attack from the peer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_server_hears_bad_record_mac_from_our_client() {
    bounded_go(async {
        for version in ["1.3", "1.2"] {
            let (go, lines) = go_server_tampered_toward_our_client(Tamper::FlipBit, version).await;
            let closed = go_find(&lines, "closed", 0).unwrap();
            assert!(
                closed.msg.contains("bad record MAC"),
                "Go's server saw: {}\n{}",
                closed.msg,
                go.dump()
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_server_truncated_record_toward_our_client() {
    bounded_go(async {
        for version in ["1.3", "1.2"] {
            let (go, lines) = go_server_tampered_toward_our_client(Tamper::Truncate, version).await;
            let closed = go_find(&lines, "closed", 0).unwrap();
            assert_eq!(closed.f["requests"], "2", "{}", go.dump());
        }
    })
    .await
}

/// Go's client through a relay that tampers with its second request: our server drops that
/// connection with a TLS error and serves the next client. Returns Go's report.
async fn go_client_tampered_toward_our_server(tamper: Tamper, version: &str) -> (Peer, Vec<Line>) {
    let p = pki();
    let server = our_server(&p, false).await;
    let relay = Relay::start(&server.local_addr(), Front::Pass, Toward::Server, tamper).await;
    let mut go = Peer::spawn(
        "go client",
        &mut go_client_cmd(
            &p,
            &relay.addr,
            &["-tls", version, "-calls", "2", "-pause-after", "1"],
            &[],
        ),
    );
    go.wait_count("paused n=0", 1).await;
    assert_eq!(server.stats().requests, 1);
    let before = server.stats().errors;
    relay.arm();
    go.send(b"go on\n");
    relay.wait_tampered().await;
    go.finish().await;
    let lines = go_lines(&go);
    let failed = go_find(&lines, "error", 0)
        .unwrap_or_else(|| panic!("Go's client got an answer\n{}", go.dump()));
    assert_eq!(failed.f["stage"], "call");
    assert_eq!(failed.f["id"], "2");
    wait_until("the server counts the failed connection", || {
        server.stats().errors.total() > before.total()
    })
    .await;
    let after = server.stats().errors;
    assert_eq!(
        (after.tls - before.tls) + (after.connection - before.connection),
        1,
        "one TLS or connection error: {after:?}"
    );
    assert_eq!(after.total() - before.total(), 1, "{after:?}");
    assert_eq!(
        server.stats().requests,
        1,
        "the tampered request was not served"
    );
    wait_until("the connection is closed", || {
        server.stats().connections_open == 0
    })
    .await;
    // The server serves the next client.
    let mut go2 = Peer::spawn(
        "go client",
        &mut go_client_cmd(&p, &server.local_addr(), &[], &[]),
    );
    assert!(go2.finish().await.success());
    assert_go_client_conn(&go_lines(&go2), 0, &go2);
    assert_eq!(server.stats().requests, 4);
    server.stop(Duration::from_secs(5)).await.unwrap();
    (go, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_flipped_bit_toward_our_server() {
    bounded_go(async {
        for version in ["1.3", "1.2"] {
            go_client_tampered_toward_our_server(Tamper::FlipBit, version).await;
        }
    })
    .await
}

/// As [`go_server_hears_bad_record_mac_from_our_client`], from our server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_hears_bad_record_mac_from_our_server() {
    bounded_go(async {
        for version in ["1.3", "1.2"] {
            let (go, lines) = go_client_tampered_toward_our_server(Tamper::FlipBit, version).await;
            let failed = go_find(&lines, "error", 0).unwrap();
            assert!(
                failed.msg.contains("bad record MAC"),
                "Go's client saw: {}\n{}",
                failed.msg,
                go.dump()
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_truncated_record_toward_our_server() {
    bounded_go(async {
        for version in ["1.3", "1.2"] {
            go_client_tampered_toward_our_server(Tamper::Truncate, version).await;
        }
    })
    .await
}

// =======================================================================================
// OpenSSL.

/// (s_server / s_client arguments, the suite's OpenSSL name, the protocol)
fn openssl_suites() -> Vec<(Vec<&'static str>, &'static str, &'static str)> {
    let mut v = Vec::new();
    for suite in [
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
    ] {
        v.push((vec!["-tls1_3", "-ciphersuites", suite], suite, "TLSv1.3"));
    }
    for suite in [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ] {
        v.push((vec!["-tls1_2", "-cipher", suite], suite, "TLSv1.2"));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_server_tls13_and_tls12_suites_with_our_client() {
    bounded(async {
        let p = pki();
        for (args, suite, _version) in openssl_suites() {
            let (mut srv, addr) = s_server(&p, &args).await;
            let front = Relay::plain(&addr, Front::AsServer).await;
            let cl = our_client(&front.addr, &p, false);
            let big: Vec<u8> = big_value();
            for (i, value) in [&b"small"[..], &big, b"last"].into_iter().enumerate() {
                let reply = format!("{suite}-{i}");
                let got = serve_one_via_s_server(&mut srv, &cl, b"ossl", value, reply.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("{suite} call {i}: {e}\n{}", srv.dump()));
                assert_eq!(got, reply.as_bytes());
            }
            srv.wait_count(&format!("CIPHER is {suite}\n"), 1).await;
            let st = cl.stats();
            assert_eq!(
                (st.responses, st.connects, st.errors.total()),
                (3, 1, 0),
                "{suite}"
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_client_tls13_and_tls12_suites_with_our_server() {
    bounded(async {
        let p = pki();
        let server = our_server(&p, false).await;
        let front = Relay::plain(&server.local_addr(), Front::AsClient).await;
        for (k, (args, suite, version)) in openssl_suites().into_iter().enumerate() {
            let mut cli = s_client(&p, front.port(), &args);
            cli.wait_count(&format!("New, {version}, Cipher is {suite}\n"), 1)
                .await;
            call_via_s_client(
                &mut cli,
                1,
                b"ossl",
                suite.as_bytes(),
                &echoed(b"ossl", suite.as_bytes()),
            )
            .await;
            call_via_s_client(&mut cli, 2, b"big", b"", &big_value()).await;
            call_via_s_client(&mut cli, 3, b"x", b"y", b"x:y").await;
            cli.finish().await;
            assert_eq!(server.stats().requests, 3 * (k as u64 + 1), "{suite}");
        }
        let st = server.stats();
        assert_eq!((st.handshake_failures, st.errors.total()), (0, 0), "{st:?}");
        server.stop(Duration::from_secs(5)).await.unwrap();
    })
    .await
}

const KU_SENT_REQ: &str = ">>> TLS 1.3, Handshake [length 0005], KeyUpdate\n    18 00 00 01 01";
const KU_SENT_NOREQ: &str = ">>> TLS 1.3, Handshake [length 0005], KeyUpdate\n    18 00 00 01 00";
const KU_RECV_NOREQ: &str = "<<< TLS 1.3, Handshake [length 0005], KeyUpdate\n    18 00 00 01 00";
const KU_RECV_ANY: &str = "<<< TLS 1.3, Handshake [length 0005], KeyUpdate";

/// OpenSSL's server updates its keys, without (`k`) and with (`K`) asking our client to
/// update too, twice each; two calls follow each update. Our client must answer each `K` with
/// exactly one KeyUpdate of its own (not requesting another) and nothing for `k`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_server_key_update_toward_our_client() {
    bounded(async {
        let p = pki();
        let (mut srv, addr) = s_server(&p, &["-tls1_3", "-msg"]).await;
        let front = Relay::plain(&addr, Front::AsServer).await;
        let cl = our_client(&front.addr, &p, false);
        let got = serve_one_via_s_server(&mut srv, &cl, b"ku", b"0", b"r0")
            .await
            .unwrap();
        assert_eq!(got, b"r0");
        let mut sent_noreq = 0;
        let mut sent_req = 0;
        for (i, cmd) in ["k\n", "K\n", "k\n", "K\n"].into_iter().enumerate() {
            // s_server traces the KeyUpdate it sends (-msg): then the next frame can follow.
            let (trace, count) = if cmd == "K\n" {
                sent_req += 1;
                (KU_SENT_REQ, sent_req)
            } else {
                sent_noreq += 1;
                (KU_SENT_NOREQ, sent_noreq)
            };
            srv.send(cmd.as_bytes());
            srv.wait_count(trace, count).await;
            let v = format!("after-{i}");
            let reply = format!("r{}", i + 1);
            let got = serve_one_via_s_server(&mut srv, &cl, b"ku", v.as_bytes(), reply.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("call after {cmd:?}: {e}\n{}", srv.dump()));
            assert_eq!(got, reply.as_bytes());
            // Our client answers a `K` with its next write after its reader processed it
            // (RFC 8446 4.6.3: before its next application data). The call above may have
            // been written before that; its reply came after the `K`, so the reader has
            // processed it now, and the next call's request carries the answer.
            let v = format!("sync-{i}");
            let reply = format!("s{}", i + 1);
            let got = serve_one_via_s_server(&mut srv, &cl, b"ku", v.as_bytes(), reply.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("second call after {cmd:?}: {e}\n{}", srv.dump()));
            assert_eq!(got, reply.as_bytes());
            // s_server traces our KeyUpdate when it reads it.
            srv.wait_count(KU_RECV_ANY, sent_req).await;
            let o = srv.out_text();
            assert_eq!(
                occurrences(o.as_bytes(), KU_SENT_REQ.as_bytes()),
                sent_req,
                "{}",
                srv.dump()
            );
            assert_eq!(
                occurrences(o.as_bytes(), KU_SENT_NOREQ.as_bytes()),
                sent_noreq
            );
            // Our client answered each requested update once, without requesting another.
            assert_eq!(
                occurrences(o.as_bytes(), KU_RECV_ANY.as_bytes()),
                sent_req,
                "{}",
                srv.dump()
            );
            assert_eq!(
                occurrences(o.as_bytes(), KU_RECV_NOREQ.as_bytes()),
                sent_req
            );
        }
        let st = cl.stats();
        assert_eq!(
            (st.responses, st.connects, st.errors.total()),
            (9, 1, 0),
            "{st:?}"
        );
    })
    .await
}

/// OpenSSL's client updates its keys toward our server, without and with a request, twice
/// each, a call after each; our server answers each request with one KeyUpdate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_client_key_update_toward_our_server() {
    bounded(async {
        let p = pki();
        let server = our_server(&p, false).await;
        let front = Relay::plain(&server.local_addr(), Front::AsClient).await;
        let mut cli = s_client(&p, front.port(), &["-tls1_3", "-msg"]);
        cli.wait_count("New, TLSv1.3, Cipher is ", 1).await;
        call_via_s_client(&mut cli, 1, b"ku", b"0", b"ku:0").await;
        let mut sent_noreq = 0;
        let mut sent_req = 0;
        for (i, cmd) in ["k\n", "K\n", "k\n", "K\n"].into_iter().enumerate() {
            let mut err = cli.err.clone();
            let before = occurrences(&err.borrow(), b"KEYUPDATE\n");
            cli.send(cmd.as_bytes());
            tokio::time::timeout(
                WAIT_BOUND,
                err.wait_for(|e| occurrences(e, b"KEYUPDATE\n") > before),
            )
            .await
            .expect("s_client did not take the KeyUpdate command")
            .unwrap();
            if cmd == "K\n" {
                sent_req += 1;
            } else {
                sent_noreq += 1;
            }
            let id = i as u32 + 2;
            let v = format!("after-{i}");
            call_via_s_client(
                &mut cli,
                id,
                b"ku",
                v.as_bytes(),
                &echoed(b"ku", v.as_bytes()),
            )
            .await;
            let o = cli.out_text();
            assert_eq!(
                occurrences(o.as_bytes(), KU_SENT_REQ.as_bytes()),
                sent_req,
                "{}",
                cli.dump()
            );
            assert_eq!(
                occurrences(o.as_bytes(), KU_SENT_NOREQ.as_bytes()),
                sent_noreq
            );
            assert_eq!(
                occurrences(o.as_bytes(), KU_RECV_ANY.as_bytes()),
                sent_req,
                "{}",
                cli.dump()
            );
            assert_eq!(
                occurrences(o.as_bytes(), KU_RECV_NOREQ.as_bytes()),
                sent_req
            );
        }
        cli.finish().await;
        let st = server.stats();
        assert_eq!((st.requests, st.errors.total()), (5, 0), "{st:?}");
        server.stop(Duration::from_secs(5)).await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_session_resumption_both_ways() {
    bounded(async {
        let p = pki();
        for (flag, version) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
            // Our client against s_server: `q` ends the first connection, our client
            // reconnects and must resume ("Reused session-id").
            let (mut srv, addr) = s_server(&p, &[flag]).await;
            let front = Relay::plain(&addr, Front::AsServer).await;
            let cl = our_client(&front.addr, &p, false);
            let got = serve_one_via_s_server(&mut srv, &cl, b"one", b"1", b"r1")
                .await
                .unwrap();
            assert_eq!(got, b"r1");
            srv.send(b"q\n");
            srv.wait_count("DONE\n", 1).await;
            // The next call may meet the closed connection once (see call_across_reconnect).
            let mut got = None;
            for attempt in 0..4 {
                let v = format!("2-{attempt}");
                got = serve_or_fail(&mut srv, &cl, v.as_bytes(), b"r2").await;
                if got.is_some() {
                    break;
                }
            }
            assert_eq!(got.as_deref(), Some(&b"r2"[..]), "{}", srv.dump());
            assert_eq!(cl.stats().connects, 2);
            assert_eq!(
                occurrences(&srv.out(), b"Reused session-id"),
                1,
                "{version}: our client did not resume with OpenSSL's server\n{}",
                srv.dump()
            );

            // s_client against our server: -sess_out, then -sess_in.
            let server = our_server(&p, false).await;
            let front = Relay::plain(&server.local_addr(), Front::AsClient).await;
            let sess = p.dir.0.join(format!("session{flag}.pem"));
            let mut cli = s_client(&p, front.port(), &[flag, "-sess_out", s(&sess)]);
            cli.wait_count(&format!("New, {version}, Cipher is "), 1)
                .await;
            // The response also brings the TLS 1.3 session tickets along.
            call_via_s_client(&mut cli, 1, b"a", b"1", b"a:1").await;
            cli.finish().await;
            assert!(
                std::fs::metadata(&sess)
                    .map(|m| m.len() > 0)
                    .unwrap_or(false),
                "{}",
                cli.dump()
            );
            let mut cli = s_client(&p, front.port(), &[flag, "-sess_in", s(&sess)]);
            call_via_s_client(&mut cli, 1, b"b", b"2", b"b:2").await;
            cli.finish().await;
            assert_eq!(
                occurrences(
                    &cli.out(),
                    format!("Reused, {version}, Cipher is ").as_bytes()
                ),
                1,
                "{version}: OpenSSL's client did not resume with our server\n{}",
                cli.dump()
            );
            server.stop(Duration::from_secs(5)).await.unwrap();
        }
    })
    .await
}

/// One call `two`/`value` of our client served through s_server with `reply`, or `None` if
/// the call failed with a connection error before reaching s_server (the race after the
/// server closed the previous connection).
async fn serve_or_fail(srv: &mut Peer, cl: &Client, value: &[u8], reply: &[u8]) -> Option<Vec<u8>> {
    let (c, v) = (cl.clone(), value.to_vec());
    let mut call = tokio::spawn(async move { c.call(b"two", &v).await });
    let tail = frame_request(0, b"two", value)[4..].to_vec();
    let mut out = srv.out.clone();
    let reached = tokio::time::timeout(WAIT_BOUND, async {
        tokio::select! {
            r = &mut call => match r.unwrap() {
                Ok(v) => panic!("answered without s_server: {v:?}"),
                Err(e) if matches!(e.kind(), ErrorKind::Connection | ErrorKind::Connect) => false,
                Err(e) => panic!("{e}"),
            },
            r = out.wait_for(|o| find(&strip_noise(o), &tail).is_some()) => {
                r.expect("s_server exited");
                true
            }
        }
    })
    .await
    .expect("neither the request nor an error came");
    if !reached {
        return None;
    }
    let o = strip_noise(&srv.out());
    let at = find(&o, &tail).unwrap();
    let id = u32::from_le_bytes(o[at - 4..at].try_into().unwrap());
    srv.send(&frame_response(id, reply));
    Some(
        tokio::time::timeout(WAIT_BOUND, call)
            .await
            .expect("the call did not end")
            .unwrap()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_mutual_tls_both_ways() {
    bounded(async {
        let p = pki();
        // s_server requires a client certificate signed by the test CA.
        let (mut srv, addr) = s_server(&p, &["-Verify", "1", "-CAfile", s(&p.ca)]).await;
        let front = Relay::plain(&addr, Front::AsServer).await;
        let cl = our_client(&front.addr, &p, true);
        let got = serve_one_via_s_server(&mut srv, &cl, b"m", b"1", b"ok")
            .await
            .unwrap();
        assert_eq!(got, b"ok");
        srv.wait_count("subject=CN = fastrpc test client\n", 1)
            .await;
        // Without a certificate, our client is refused cleanly. (s_server serves one
        // connection at a time: `q` ends the first.)
        srv.send(b"q\n");
        srv.wait_count("DONE\n", 1).await;
        let anon = our_client(&front.addr, &p, false);
        let t0 = Instant::now();
        let e = anon.call(b"m", b"2").await.unwrap_err();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Tls | ErrorKind::Connection | ErrorKind::Connect
            ),
            "{:?}: {e}",
            e.kind()
        );
        assert!(t0.elapsed() < PROMPT, "{e}");

        // Our server requires one; s_client presents it.
        let server = our_server(&p, true).await;
        let front = Relay::plain(&server.local_addr(), Front::AsClient).await;
        let mut cli = s_client(
            &p,
            front.port(),
            &["-cert", s(&p.client_cert), "-key", s(&p.client_key)],
        );
        call_via_s_client(&mut cli, 1, b"m", b"3", b"m:3").await;
        cli.finish().await;
        assert_eq!(server.stats().requests, 1);
        // Without one, s_client is refused and the server counts it.
        let mut cli = s_client(&p, front.port(), &["-tls1_3"]);
        cli.send(&frame_request(1, b"m", b"4"));
        cli.finish().await;
        assert_eq!(occurrences(&cli.out(), &frame_response(1, b"m:4")), 0);
        wait_until("the refusal is counted", || {
            server.stats().handshake_failures == 1
        })
        .await;
        assert_eq!(server.stats().requests, 1);
        server.stop(Duration::from_secs(5)).await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_server_tampered_records_toward_our_client() {
    bounded(async {
        let p = pki();
        let cases = [Tamper::FlipBit, Tamper::Truncate]
            .into_iter()
            .flat_map(|t| [(t, "-tls1_3"), (t, "-tls1_2")]);
        for (tamper, flag) in cases {
            let (mut srv, addr) = s_server(&p, &[flag]).await;
            let relay = Relay::start(&addr, Front::AsServer, Toward::Client, tamper).await;
            let cl = our_client(&relay.addr, &p, false);
            let got = serve_one_via_s_server(&mut srv, &cl, b"t", b"1", b"r1")
                .await
                .unwrap();
            assert_eq!(got, b"r1");
            relay.arm();
            // s_server answers; the relay tampers with that record on its way.
            let c = cl.clone();
            let call = tokio::spawn(async move { call_fails_cleanly(&c, b"t", b"2").await });
            let tail = frame_request(0, b"t", b"2")[4..].to_vec();
            srv.wait_out("request 2", |o| find(&strip_noise(o), &tail).is_some())
                .await;
            let o = strip_noise(&srv.out());
            let at = find(&o, &tail).unwrap();
            let id = u32::from_le_bytes(o[at - 4..at].try_into().unwrap());
            srv.send(&frame_response(id, b"r2"));
            let e = call.await.unwrap();
            relay.wait_tampered().await;
            eprintln!(
                "{tamper:?} from s_server {flag} toward our client: {:?}: {e}",
                e.kind()
            );
            // s_server goes back to accepting; our client reconnects.
            let mut got = None;
            for attempt in 0..4 {
                let v = format!("3-{attempt}");
                got = serve_or_fail(&mut srv, &cl, v.as_bytes(), b"r3").await;
                if got.is_some() {
                    break;
                }
            }
            assert_eq!(got.as_deref(), Some(&b"r3"[..]), "{}", srv.dump());
            assert_eq!(cl.stats().connects, 2);
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_client_tampered_records_toward_our_server() {
    bounded(async {
        let p = pki();
        let server = our_server(&p, false).await;
        let cases = [Tamper::FlipBit, Tamper::Truncate]
            .into_iter()
            .flat_map(|t| [(t, "-tls1_3"), (t, "-tls1_2")]);
        for (k, (tamper, flag)) in cases.enumerate() {
            let relay = Relay::start(
                &server.local_addr(),
                Front::AsClient,
                Toward::Server,
                tamper,
            )
            .await;
            let mut cli = s_client(&p, relay.port(), &[flag]);
            call_via_s_client(&mut cli, 1, b"t", b"1", b"t:1").await;
            let before = server.stats().errors;
            relay.arm();
            cli.send(&frame_request(2, b"t", b"2"));
            relay.wait_tampered().await;
            cli.finish().await;
            assert_eq!(
                occurrences(&cli.out(), &frame_response(2, b"t:2")),
                0,
                "{}",
                cli.dump()
            );
            wait_until("the server counts the failed connection", || {
                server.stats().errors.total() > before.total()
            })
            .await;
            let after = server.stats().errors;
            assert_eq!(
                (after.tls - before.tls) + (after.connection - before.connection),
                1,
                "{tamper:?} {flag}: one TLS or connection error: {after:?}"
            );
            assert_eq!(server.stats().requests, k as u64 + 1);
            wait_until("the connection is closed", || {
                server.stats().connections_open == 0
            })
            .await;
        }
        // Still serving.
        let cl = our_client(&server.local_addr(), &p, false);
        three_calls(&cl, "after").await;
        server.stop(Duration::from_secs(5)).await.unwrap();
    })
    .await
}

const CLOSE_NOTIFY_THEN_DONE: &str =
    "<<< TLS 1.3, Alert [length 0002], warning close_notify\n    01 00\nDONE\n";
const CLOSE_NOTIFY_THEN_CLOSED: &str =
    "<<< TLS 1.3, Alert [length 0002], warning close_notify\n    01 00\nclosed\n";

/// An orderly end is a TLS close_notify, which OpenSSL tells apart from a bare FIN (it
/// reports "unexpected eof while reading" for the latter): our client's `close` and our
/// server's `stop` end their connections with one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_peers_see_close_notify_when_we_close() {
    bounded(async {
        let p = pki();
        let (mut srv, addr) = s_server(&p, &["-msg"]).await;
        let front = Relay::plain(&addr, Front::AsServer).await;
        let cl = our_client(&front.addr, &p, false);
        let got = serve_one_via_s_server(&mut srv, &cl, b"c", b"1", b"r1")
            .await
            .unwrap();
        assert_eq!(got, b"r1");
        cl.close(fastrpc::CloseMode::Drain(Duration::from_secs(5)))
            .await;
        srv.wait_count(CLOSE_NOTIFY_THEN_DONE, 1).await;
        assert!(
            find(&srv.err.borrow(), b"unexpected eof").is_none(),
            "{}",
            srv.dump()
        );
        assert_eq!(cl.stats().errors.total(), 0);

        let server = our_server(&p, false).await;
        let front = Relay::plain(&server.local_addr(), Front::AsClient).await;
        let mut cli = s_client(&p, front.port(), &["-msg"]);
        call_via_s_client(&mut cli, 1, b"c", b"2", b"c:2").await;
        server.stop(Duration::from_secs(5)).await.unwrap();
        cli.wait_count(CLOSE_NOTIFY_THEN_CLOSED, 1).await;
        cli.finish().await;
        assert!(
            find(&cli.err.borrow(), b"unexpected eof").is_none(),
            "{}",
            cli.dump()
        );
    })
    .await
}

/// As the Go alert tests, with OpenSSL: after a flipped bit, the side that could not decrypt
/// sends a fatal bad_record_mac alert, which OpenSSL's -msg trace shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_peers_hear_bad_record_mac() {
    bounded(async {
        let p = pki();
        // From our client to s_server.
        let (mut srv, addr) = s_server(&p, &["-msg"]).await;
        let relay = Relay::start(&addr, Front::AsServer, Toward::Client, Tamper::FlipBit).await;
        let cl = our_client(&relay.addr, &p, false);
        let got = serve_one_via_s_server(&mut srv, &cl, b"t", b"1", b"r1")
            .await
            .unwrap();
        assert_eq!(got, b"r1");
        relay.arm();
        let c = cl.clone();
        let call = tokio::spawn(async move { call_fails_cleanly(&c, b"t", b"2").await });
        let tail = frame_request(0, b"t", b"2")[4..].to_vec();
        srv.wait_out("request 2", |o| find(&strip_noise(o), &tail).is_some())
            .await;
        let o = strip_noise(&srv.out());
        let at = find(&o, &tail).unwrap();
        let id = u32::from_le_bytes(o[at - 4..at].try_into().unwrap());
        srv.send(&frame_response(id, b"r2"));
        call.await.unwrap();
        relay.wait_tampered().await;
        srv.wait_count(BAD_RECORD_MAC_RECEIVED, 1).await;

        // From our server to s_client.
        let server = our_server(&p, false).await;
        let relay = Relay::start(
            &server.local_addr(),
            Front::AsClient,
            Toward::Server,
            Tamper::FlipBit,
        )
        .await;
        let mut cli = s_client(&p, relay.port(), &["-msg"]);
        call_via_s_client(&mut cli, 1, b"t", b"1", b"t:1").await;
        relay.arm();
        cli.send(&frame_request(2, b"t", b"2"));
        relay.wait_tampered().await;
        cli.wait_count(BAD_RECORD_MAC_RECEIVED, 1).await;
        cli.finish().await;
        server.stop(Duration::from_secs(5)).await.unwrap();
    })
    .await
}

const BAD_RECORD_MAC_RECEIVED: &str = "<<< TLS 1.3, Alert [length 0002], fatal bad_record_mac";

/// Key exchange groups, and HelloRetryRequest both ways: our client sends an X25519 key
/// share first, so s_server limited to P-256 or P-384 asks it to retry; s_client offering an
/// X448 share first (which our server does not have) is asked to retry with P-256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_key_exchange_groups_and_hello_retry_request() {
    bounded(async {
        let p = pki();
        for (group, hellos) in [("X25519", 1), ("P-256", 2), ("P-384", 2)] {
            let (mut srv, addr) = s_server(&p, &["-tls1_3", "-msg", "-groups", group]).await;
            let front = Relay::plain(&addr, Front::AsServer).await;
            let cl = our_client(&front.addr, &p, false);
            let got = serve_one_via_s_server(&mut srv, &cl, b"g", group.as_bytes(), b"ok")
                .await
                .unwrap_or_else(|e| panic!("{group}: {e}\n{}", srv.dump()));
            assert_eq!(got, b"ok");
            let o = srv.out_text();
            let client_hellos = o
                .lines()
                .filter(|l| l.starts_with("<<< TLS 1.3, Handshake") && l.ends_with("ClientHello"))
                .count();
            assert_eq!(client_hellos, hellos, "{group}\n{}", srv.dump());
        }

        let server = our_server(&p, false).await;
        let front = Relay::plain(&server.local_addr(), Front::AsClient).await;
        for (groups, temp_key, hellos) in [
            ("X25519", "Server Temp Key: X25519, 253 bits\n", 1),
            ("P-256", "Server Temp Key: ECDH, prime256v1, 256 bits\n", 1),
            ("P-384", "Server Temp Key: ECDH, secp384r1, 384 bits\n", 1),
            (
                "X448:P-256",
                "Server Temp Key: ECDH, prime256v1, 256 bits\n",
                2,
            ),
        ] {
            let mut cli = s_client(&p, front.port(), &["-tls1_3", "-msg", "-groups", groups]);
            cli.wait_count(temp_key, 1).await;
            call_via_s_client(
                &mut cli,
                1,
                b"g",
                groups.as_bytes(),
                &echoed(b"g", groups.as_bytes()),
            )
            .await;
            cli.finish().await;
            let o = cli.out_text();
            let client_hellos = o
                .lines()
                .filter(|l| l.starts_with(">>> TLS 1.3, Handshake") && l.ends_with("ClientHello"))
                .count();
            assert_eq!(client_hellos, hellos, "{groups}\n{}", cli.dump());
        }
        assert_eq!(server.stats().requests, 4);
        server.stop(Duration::from_secs(5)).await.unwrap();
    })
    .await
}
