//! Runs the built `fastrpc` binary: serve, call, bench, TLS, compression, signals, exit codes.
//! Every child process is killed when its guard drops and every wait is bounded; all traffic
//! stays on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fastrpc");
const LIMIT: Duration = Duration::from_secs(60);

/// A running `fastrpc serve`, killed on drop. Its stderr is read line by line as it comes.
struct Serve {
    child: Option<Child>,
    addr: String,
    first_line: String,
    stderr: mpsc::Receiver<String>,
}

impl Serve {
    fn start(args: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fastrpc serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let stderr = child.stderr.take().expect("stderr");
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if etx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Serve {
            child: Some(child),
            addr: String::new(),
            first_line: String::new(),
            stderr: erx,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("serve printed no line within 20 s");
        s.first_line = line.trim_end().to_string();
        s.addr = s
            .first_line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("first line {:?} is not `listening ADDR`", s.first_line))
            .to_string();
        s
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// The next line the server writes to stderr (waits at most 20 s).
    fn stderr_line(&self) -> String {
        self.stderr
            .recv_timeout(Duration::from_secs(20))
            .expect("serve wrote no line to stderr within 20 s")
    }

    /// Sends `sig`, waits (bounded) for the exit, returns the status and the rest of stderr.
    fn signal(mut self, sig: i32) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own, not yet reaped, child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let status = wait_bounded(&mut child, Duration::from_secs(15));
        // The reader ends at EOF, which the exit brings (bounded in case a grandchild kept
        // the pipe open).
        let mut err = String::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(15)) {
            err.push_str(&line);
            err.push('\n');
        }
        (status, err)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `fastrpc ARGS` to completion (killed after `LIMIT`), feeding `stdin`.
fn run(args: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fastrpc");
    if let Some(data) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        w.write_all(data).expect("write stdin");
    }
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child, LIMIT);
    Out {
        code: status.code().expect("exited, not signalled"),
        stdout: t_out.join().expect("stdout reader"),
        stderr: t_err.join().expect("stderr reader"),
    }
}

fn json(out: &Out) -> serde_json::Value {
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let text = String::from_utf8(out.stdout.clone()).expect("utf-8");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one JSON object expected, got {text:?}");
    serde_json::from_str(lines[0]).expect("valid JSON")
}

fn check_bench_json(v: &serde_json::Value, calls: u64) {
    let f = |k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("key {k} missing or not a number in {v}"))
    };
    assert!(f("calls_per_sec") > 0.0, "{v}");
    assert_eq!(f("errors"), 0.0, "{v}");
    assert_eq!(f("calls"), calls as f64, "{v}");
    assert!(f("p50_us") <= f("p99_us"), "{v}");
    assert!(
        f("p90_us") <= f("p999_us") && f("p999_us") <= f("max_us"),
        "{v}"
    );
    for k in [
        "mb_per_sec",
        "wire_bytes_out_per_call",
        "wire_bytes_in_per_call",
        "frames_per_flush",
        "cpu_user_s",
        "cpu_sys_s",
    ] {
        assert!(f(k) >= 0.0, "{k} in {v}");
    }
    assert!(v["mode"].is_string(), "{v}");
}

#[test]
fn serve_prints_listening_first_and_call_echoes() {
    let s = Serve::start(&["--listen", "127.0.0.1:0"]);
    assert!(
        s.first_line.starts_with("listening 127.0.0.1:"),
        "{:?}",
        s.first_line
    );
    let port: u16 = s.addr.rsplit(':').next().unwrap().parse().expect("port");
    assert_ne!(port, 0);
    let out = run(
        &["call", "--addr", &s.addr, "--name", "foo", "--value", "bar"],
        None,
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, b"foo:bar");
}

/// `serve --idle-timeout`: a connection that sends nothing after its handshake is closed
/// after the idle timeout (tests/idle_timeout.rs checks the engine's side in detail).
#[test]
fn serve_idle_timeout_closes_quiet_connections() {
    use std::io::Read as _;
    let s = Serve::start(&["--idle-timeout", "300ms", "--read-timeout", "10s"]);
    let mut quiet = std::net::TcpStream::connect(&s.addr).unwrap();
    quiet.write_all(&[0, 1, 0]).unwrap();
    let mut hs = [0u8; 3];
    quiet.read_exact(&mut hs).unwrap();
    quiet
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t0 = Instant::now();
    let mut rest = Vec::new();
    let n = quiet
        .read_to_end(&mut rest)
        .expect("closed by the server, not timed out");
    assert_eq!(n, 0);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    // The server goes on serving.
    for _ in 0..3 {
        let out = run(
            &["call", "--addr", &s.addr, "--name", "a", "--value", "b"],
            None,
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
}

#[test]
fn call_fixed_reply_and_value_from_stdin_and_file() {
    let s = Serve::start(&["--reply", "fixed:255"]);
    let out = run(
        &["call", "--addr", &s.addr, "--name", "foo", "--value", "bar"],
        None,
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, vec![b'x'; 255]);

    let e = Serve::start(&["--reply", "echo"]);
    let out = run(
        &[
            "call",
            "--addr",
            &e.addr,
            "--name",
            "n",
            "--value-file",
            "-",
        ],
        Some(b"from stdin\n"),
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, b"n:from stdin\n");

    let tmp = temp_dir("value");
    let dir = tmp.path();
    let file = dir.join("value.bin");
    std::fs::write(&file, [0u8, 1, 2, 255]).unwrap();
    let out = run(
        &[
            "call",
            "--addr",
            &e.addr,
            "--name",
            "b",
            "--value-file",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, [b'b', b':', 0, 1, 2, 255]);

    let missing = dir.join("missing");
    let out = run(
        &[
            "call",
            "--addr",
            &e.addr,
            "--name",
            "b",
            "--value-file",
            missing.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.code, 11, "stderr: {}", out.stderr);
    assert!(
        out.stderr.starts_with("fastrpc call: io: "),
        "{}",
        out.stderr
    );
}

#[test]
fn call_to_closed_port_exits_with_connect_code() {
    // Bind then drop: the port is (almost certainly) closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let out = run(
        &["call", "--addr", &addr, "--name", "foo", "--value", "bar"],
        None,
    );
    assert_eq!(out.code, 4, "stderr: {}", out.stderr);
    assert!(
        out.stderr.starts_with("fastrpc call: connect: "),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&addr), "{}", out.stderr);
    assert!(out.stdout.is_empty());

    let out = run(
        &["call", "--addr", &addr, "--name", "foo", "--nowait"],
        None,
    );
    assert_eq!(out.code, 4, "nowait: stderr: {}", out.stderr);
}

#[test]
fn call_timeout_against_silent_listener() {
    // Accepts connections (in the kernel backlog) and never answers the handshake.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let started = Instant::now();
    let out = run(
        &[
            "call",
            "--addr",
            &addr,
            "--name",
            "foo",
            "--value",
            "bar",
            "--timeout",
            "1ms",
        ],
        None,
    );
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    assert!(
        out.stderr.starts_with("fastrpc call: timeout: "),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(listener);
}

#[test]
fn usage_errors_exit_1_and_help_documents_codes() {
    let out = run(&["call", "--addr", "127.0.0.1:1"], None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let out = run(
        &["call", "--addr", "x:1", "--name", "n", "--timeout", "5"],
        None,
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let out = run(&["call", "--help"], None);
    assert_eq!(out.code, 0);
    let help = String::from_utf8(out.stdout).unwrap();
    for line in ["2  timeout", "4  connect", "8  tls", "11  io"] {
        assert!(help.contains(line), "help lacks {line:?}:\n{help}");
    }
}

#[test]
fn serve_stops_gracefully_on_sigterm_and_sigint() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let s = Serve::start(&["--reply", "fixed:3"]);
        let out = run(&["call", "--addr", &s.addr, "--name", "a"], None);
        assert_eq!(out.stdout, b"xxx", "stderr: {}", out.stderr);
        assert!(s.pid() > 0);
        let (status, err) = s.signal(sig);
        assert_eq!(status.code(), Some(0), "signal {sig}: stderr: {err}");
        assert!(err.contains("stopped"), "{err}");
        assert!(err.contains("1 requests"), "{err}");
    }
    // Right after the listening line, too.
    let s = Serve::start(&["--raw"]);
    let (status, err) = s.signal(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "raw: stderr: {err}");
}

#[test]
fn nowait_call_reaches_the_server() {
    let s = Serve::start(&[]);
    let out = run(
        &[
            "call", "--addr", &s.addr, "--name", "log", "--value", "x", "--nowait",
        ],
        None,
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(out.stdout.is_empty());
    // The server counts it (its summary is printed on stop); give it a moment to read it.
    std::thread::sleep(Duration::from_millis(300));
    let (status, err) = s.signal(libc::SIGTERM);
    assert_eq!(status.code(), Some(0));
    assert!(err.contains("(1 fire-and-forget)"), "{err}");
}

#[test]
fn snappy_and_none_on_both_sides() {
    for c in ["snappy", "none", "flate"] {
        let s = Serve::start(&["--compress", c]);
        let out = run(
            &[
                "call",
                "--addr",
                &s.addr,
                "--name",
                "foo",
                "--value",
                "bar",
                "--compress",
                c,
            ],
            None,
        );
        assert_eq!(out.code, 0, "{c}: stderr: {}", out.stderr);
        assert_eq!(out.stdout, b"foo:bar", "{c}");
    }
    // Each side picks its own sending compression.
    let s = Serve::start(&["--compress", "snappy"]);
    let out = run(
        &[
            "call",
            "--addr",
            &s.addr,
            "--name",
            "a",
            "--value",
            "b",
            "--compress",
            "flate",
        ],
        None,
    );
    assert_eq!(out.stdout, b"a:b", "stderr: {}", out.stderr);
}

#[test]
fn sniff_and_version_mismatch_fail() {
    let s = Serve::start(&["--sniff", "hello", "--protocol-version", "3"]);
    let ok = run(
        &[
            "call",
            "--addr",
            &s.addr,
            "--name",
            "a",
            "--sniff",
            "hello",
            "--protocol-version",
            "3",
        ],
        None,
    );
    assert_eq!(ok.code, 0, "stderr: {}", ok.stderr);
    assert_eq!(ok.stdout, b"a:");
    let bad = run(
        &[
            "call",
            "--addr",
            &s.addr,
            "--name",
            "a",
            "--sniff",
            "hello",
            "--timeout",
            "5s",
        ],
        None,
    );
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.starts_with("fastrpc call: "), "{}", bad.stderr);
}

/// Runs one handshake on a new connection to `addr`: writes `header`, then `after` (if any,
/// once the server's header has come), reads to the end. Returns the client's own address
/// (the server names the peer by it) and what the server sent.
fn raw_handshake(addr: &str, header: &[u8], after: Option<&[u8]>) -> (String, Vec<u8>) {
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let me = c.local_addr().unwrap().to_string();
    c.write_all(header).unwrap();
    let mut got = Vec::new();
    if let Some(bytes) = after {
        let mut hdr = vec![0u8; header.len()];
        c.read_exact(&mut hdr).expect("the server's header");
        got.extend_from_slice(&hdr);
        c.write_all(bytes).unwrap();
    }
    // The server closes after a failed handshake: read until then (a reset is an end too).
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    got.extend_from_slice(&rest);
    (me, got)
}

#[test]
fn serve_verbose_says_why_handshakes_failed_and_counts_each_once() {
    let s = Serve::start(&["-v", "--sniff", "hello", "--compress", "none"]);
    let warn = |me: &str, why: &str| {
        format!("fastrpc serve: warn: fastrpc server: handshake with {me} failed: {why}")
    };
    // Header: sniff, protocol version, compression code (1: none), TLS flag.
    let (me, got) = raw_handshake(&s.addr, b"bye!!\x00\x01\x00", None);
    assert_eq!(got, b"");
    assert_eq!(
        s.stderr_line(),
        warn(
            &me,
            r#"fastrpc protocol: the client sent sniff header "bye!!", expected "hello""#
        )
    );
    let (me, got) = raw_handshake(&s.addr, b"hello\x07\x01\x00", None);
    assert_eq!(got, b"");
    assert_eq!(
        s.stderr_line(),
        warn(
            &me,
            "fastrpc protocol: the client speaks protocol version 7, expected 0"
        )
    );
    // TLS asked of a server without it: it answers "no TLS" and closes.
    let (me, got) = raw_handshake(&s.addr, b"hello\x00\x01\x01", None);
    assert_eq!(got, b"hello\x00\x01\x00");
    assert_eq!(
        s.stderr_line(),
        warn(
            &me,
            "fastrpc tls: the client asked for TLS but this server has no TLS configured"
        )
    );
    let (status, err) = s.signal(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    // Each failed handshake counted once, in `errors` (not again on top of it).
    assert!(
        err.contains(", 3 connections, 3 errors (3 failed handshakes), "),
        "{err}"
    );
    assert!(!err.contains("run with -v"), "{err}");

    // A TLS handshake that fails: garbage instead of a ClientHello.
    let pki = make_pki();
    let s = Serve::start(&[
        "-v",
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
    ]);
    let (me, _) = raw_handshake(&s.addr, b"\x00\x00\x01", Some(b"GET / HTTP/1.0\r\n\r\n"));
    let line = s.stderr_line();
    let prefix = warn(&me, "fastrpc tls: TLS handshake with the client failed: ");
    assert!(line.starts_with(&prefix), "{line}");
    assert!(
        line.len() > prefix.len(),
        "no reason after the prefix: {line}"
    );
    let (status, err) = s.signal(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert!(err.contains(" 1 errors (1 failed handshake), "), "{err}");
}

#[test]
fn serve_without_verbose_prints_no_reasons_but_points_to_v() {
    let s = Serve::start(&["--sniff", "hello"]);
    let (_, got) = raw_handshake(&s.addr, b"bye!!\x00\x01\x00", None);
    assert_eq!(got, b"");
    let (status, err) = s.signal(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert_eq!(
        err.lines().count(),
        1,
        "only the summary line expected: {err}"
    );
    assert!(err.starts_with("fastrpc serve: stopped after "), "{err}");
    assert!(
        err.contains(" 1 errors (1 failed handshake), ")
            && err
                .trim_end()
                .ends_with("; run with -v to see why connections failed"),
        "{err}"
    );
}

#[test]
fn bench_inproc_json() {
    let out = run(
        &[
            "bench",
            "--spawn-server",
            "inproc",
            "--count",
            "2000",
            "--concurrency",
            "64",
            "--json",
        ],
        None,
    );
    let v = json(&out);
    check_bench_json(&v, 2000);
    assert_eq!(v["mode"], "engine");
    assert_eq!(v["compress"], "flate");
}

#[test]
fn bench_idle_reports_idle_cpu_of_client_and_child_server() {
    let out = run(
        &[
            "bench",
            "--spawn-server",
            "child",
            "--compress",
            "none",
            "--count",
            "200",
            "--concurrency",
            "4",
            "--idle",
            "300ms",
            "--json",
        ],
        None,
    );
    let v = json(&out);
    check_bench_json(&v, 200);
    let idle = v["idle_s"].as_f64().expect("idle_s");
    assert!((0.3..30.0).contains(&idle), "{v}");
    // Percent of one core: at least 0, at most every core of the machine.
    let max = 100.0 * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for k in ["idle_client_cpu_pct", "idle_server_cpu_pct"] {
        let p = v[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {v}"));
        assert!((0.0..=max).contains(&p), "{k} in {v}");
    }
    // Without --idle there is no idle phase in the report.
    let out = run(
        &[
            "bench",
            "--spawn-server",
            "inproc",
            "--count",
            "10",
            "--json",
        ],
        None,
    );
    let v = json(&out);
    assert!(v.get("idle_s").is_none(), "{v}");
    assert!(v.get("idle_client_cpu_pct").is_none(), "{v}");
}

#[test]
fn bench_raw_json() {
    let out = run(
        &[
            "bench",
            "--raw",
            "--spawn-server",
            "inproc",
            "--count",
            "2000",
            "--json",
        ],
        None,
    );
    let v = json(&out);
    check_bench_json(&v, 2000);
    assert_eq!(v["mode"], "raw");
    // Same frames as uncompressed fastrpc: 4+4+3+4+6 out, 4+4+255 in.
    assert_eq!(v["wire_bytes_out_per_call"].as_f64(), Some(21.0), "{v}");
    assert_eq!(v["wire_bytes_in_per_call"].as_f64(), Some(263.0), "{v}");
}

#[test]
fn bench_raw_tasks_json() {
    // A task per call: exactly --count calls, as many frames written, the same frames, and
    // with more callers than one bitmap word holds (ids above 64) and a count that does not
    // divide among them.
    for (c, count) in [("1", "300"), ("100", "2999")] {
        let out = run(
            &[
                "bench",
                "--raw",
                "--raw-tasks",
                "--spawn-server",
                "inproc",
                "--concurrency",
                c,
                "--threads",
                "4",
                "--count",
                count,
                "--json",
            ],
            None,
        );
        let v = json(&out);
        let n: u64 = count.parse().unwrap();
        check_bench_json(&v, n);
        assert_eq!(v["mode"], "raw");
        assert_eq!(v["wire_bytes_out_per_call"].as_f64(), Some(21.0), "{v}");
        assert_eq!(v["wire_bytes_in_per_call"].as_f64(), Some(263.0), "{v}");
    }
    // Only with the raw ceiling.
    let out = run(&["bench", "--raw-tasks", "--count", "1"], None);
    exits_with(
        &out,
        1,
        "--raw-tasks shapes the raw ceiling: add --raw or --compare-raw",
    );
    // Not with --nowait.
    let out = run(
        &["bench", "--raw", "--raw-tasks", "--nowait", "--count", "1"],
        None,
    );
    exits_with(&out, 1, "'--raw-tasks' cannot be used with '--nowait'");
}

/// Asserts that a run exited with `code` and said `msg` on stderr.
fn exits_with(out: &Out, code: i32, msg: &str) {
    assert_eq!(out.code, code, "{}", out.stderr);
    assert!(out.stderr.contains(msg), "{msg:?} not in {}", out.stderr);
}

#[test]
fn bench_raw_against_a_peer_that_does_not_answer() {
    // A peer that reads one request and closes cleanly: the run ends (it used to wait for
    // room forever) with the protocol error's exit code and says what happened.
    let ln = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = ln.local_addr().expect("addr").to_string();
    let peer = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = ln.accept().expect("accept");
            let mut frame = [0u8; 21]; // id, name length, "foo", value length, "foobar"
            s.read_exact(&mut frame).expect("one request");
            assert_eq!(&frame[..], b"\x01\0\0\0\x03\0\0\0foo\x06\0\0\0foobar");
        }
    });
    // `fastrpc bench --raw` to addr with c in flight, with or without --raw-tasks.
    let raw_run = |addr: &str, c: &str, tasks: bool| {
        let mut args = vec!["bench", "--raw", "--addr", addr, "--concurrency", c];
        args.extend(["--duration", "5s", "--no-progress"]);
        if tasks {
            args.push("--raw-tasks");
        }
        run(&args, None)
    };
    for tasks in [false, true] {
        let out = raw_run(&addr, "1", tasks);
        let msg = "the raw peer closed the connection with 1 of 1 requests unanswered";
        exits_with(&out, 7, msg);
    }
    peer.join().expect("peer");
    // A fastrpc server is no raw peer: it resets the connection, and the run says so.
    let s = Serve::start(&["--compress", "none"]);
    for tasks in [false, true] {
        let out = raw_run(&s.addr, "64", tasks);
        exits_with(&out, 5, &format!("raw connection to {}", s.addr));
    }
}

#[test]
fn bench_raw_handshake_against_real_servers() {
    // The opening, byte for byte: the sniff header, the version, "none" (1), no TLS (0); then
    // the raw frames. A hand-made server answers the opening and one response.
    let ln = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = ln.local_addr().expect("addr").to_string();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = ln.accept().expect("accept");
        let mut hello = [0u8; 6];
        s.read_exact(&mut hello).expect("the opening");
        assert_eq!(&hello, b"xyz\x07\x01\x00");
        s.write_all(b"xyz\x07\x01\x00").expect("answer");
        let mut frame = [0u8; 21];
        s.read_exact(&mut frame).expect("one request");
        assert_eq!(&frame[..], b"\x01\0\0\0\x03\0\0\0foo\x06\0\0\0foobar");
        s.write_all(b"\x01\0\0\0\x02\0\0\0ok").expect("response");
        // The client ends its stream once answered; then we close.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("the client's end");
        assert!(rest.is_empty(), "{rest:?}");
    });
    let mut args = vec!["bench", "--raw", "--raw-handshake", "--addr", &addr];
    args.extend(["--sniff", "xyz", "--protocol-version", "7"]);
    args.extend(["--concurrency", "1", "--count", "1", "--json"]);
    let v = json(&run(&args, None));
    assert_eq!(v["calls"].as_u64(), Some(1), "{v}");
    assert_eq!(v["wire_bytes_in_per_call"].as_f64(), Some(10.0), "{v}");
    peer.join().expect("peer");

    // Our server without compression, with a sniff header and a version: exact counts and
    // wire bytes per call (the frames; the opening is not a call's), both raw clients.
    let s = Serve::start(&[
        "--compress",
        "none",
        "--sniff",
        "xyz",
        "--protocol-version",
        "7",
        "--reply",
        "fixed:255",
    ]);
    for tasks in [false, true] {
        let mut args = vec!["bench", "--raw", "--raw-handshake", "--addr", &s.addr];
        args.extend(["--sniff", "xyz", "--protocol-version", "7"]);
        args.extend(["--concurrency", "100", "--count", "2999", "--json"]);
        if tasks {
            args.push("--raw-tasks");
        }
        let v = json(&run(&args, None));
        check_bench_json(&v, 2999);
        assert_eq!(v["mode"], "raw");
        assert_eq!(v["wire_bytes_out_per_call"].as_f64(), Some(21.0), "{v}");
        assert_eq!(v["wire_bytes_in_per_call"].as_f64(), Some(263.0), "{v}");
    }
    // A different version: the server closes at once, and the run says where it stopped.
    let args = [
        "bench",
        "--raw",
        "--raw-handshake",
        "--addr",
        &s.addr,
        "--sniff",
        "xyz",
    ];
    exits_with(
        &run(&args, None),
        7,
        "the server closed the connection during the handshake",
    );
    // A server that compresses its responses cannot be read raw.
    let z = Serve::start(&["--compress", "snappy"]);
    exits_with(
        &run(
            &["bench", "--raw", "--raw-handshake", "--addr", &z.addr],
            None,
        ),
        7,
        "the server compresses its responses (code 2)",
    );
    // Only for raw runs against a given server.
    let msg = "--raw-handshake opens raw connections to a real server: add --raw and --addr";
    exits_with(
        &run(&["bench", "--raw-handshake", "--addr", &z.addr], None),
        1,
        msg,
    );
    exits_with(&run(&["bench", "--raw", "--raw-handshake"], None), 1, msg);
}

#[test]
fn bench_compare_raw_with_child_servers() {
    let out = run(
        &[
            "bench",
            "--spawn-server",
            "child",
            "--compress",
            "snappy",
            "--count",
            "3000",
            "--concurrency",
            "32",
            "--compare-raw",
            "--json",
        ],
        None,
    );
    let v = json(&out);
    check_bench_json(&v, 3000);
    assert!(v["raw_calls_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["ratio_to_raw"].as_f64().unwrap() > 0.0, "{v}");
    check_bench_json(&v["raw"], 3000);
    assert!(v["server_cpu_user_s"].is_number(), "{v}");
    // Text mode prints both and the ratio.
    let out = run(
        &[
            "bench",
            "--count",
            "500",
            "--concurrency",
            "8",
            "--compare-raw",
            "--compress",
            "none",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("engine / raw = "), "{text}");
}

#[test]
fn bench_against_external_server_and_nowait() {
    let s = Serve::start(&["--reply", "fixed:10", "--compress", "none"]);
    let out = run(
        &[
            "bench",
            "--addr",
            &s.addr,
            "--count",
            "1000",
            "--concurrency",
            "16",
            "--compress",
            "none",
            "--json",
        ],
        None,
    );
    let v = json(&out);
    check_bench_json(&v, 1000);
    assert_eq!(v["wire_bytes_in_per_call"].as_f64(), Some(18.0), "{v}");
    let out = run(
        &[
            "bench",
            "--addr",
            &s.addr,
            "--count",
            "5000",
            "--concurrency",
            "4",
            "--nowait",
            "--json",
        ],
        None,
    );
    let v = json(&out);
    assert_eq!(v["calls"].as_f64(), Some(5000.0), "{v}");
    assert_eq!(v["nowait"], true);
    let (status, err) = s.signal(libc::SIGTERM);
    assert_eq!(status.code(), Some(0));
    assert!(err.contains("(5000 fire-and-forget)"), "{err}");
}

#[test]
fn bench_to_closed_port_fails_with_connect_code() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let out = run(&["bench", "--addr", &addr, "--count", "10"], None);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains(&addr), "{}", out.stderr);
}

/// A server that goes away in the middle of a timed run: callers back off (1 ms doubling to
/// 100 ms) instead of retrying in a hot loop, and the run, whose calls mostly failed, exits
/// with the code of its most frequent error (connect).
#[test]
fn bench_backs_off_and_fails_when_the_server_goes_away() {
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let server = fastrpc::BlockingServer::bind(
        "127.0.0.1:0",
        fastrpc::ServerConfig::default(),
        move |call: fastrpc::Call| {
            h.fetch_add(1, SeqCst);
            let _ = call.reply(b"ok");
        },
    )
    .unwrap();
    let addr = server.local_addr();
    let child = Command::new(BIN)
        .args([
            "bench",
            "--addr",
            &addr,
            "--duration",
            "3s",
            "--concurrency",
            "64",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while handled.load(SeqCst) < 2000 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the bench made no calls"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Gone at once: the connection closes and new connects are refused.
    drop(server);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("calls failed (more than 1%)"), "{stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
    let errors = v["errors"].as_f64().unwrap();
    // At most about 40 attempts per caller in 3 s with the backoff (7 in the first 127 ms,
    // then one per 100 ms); the old 1 ms pause made about 3000.
    assert!(
        errors > 0.0 && errors <= 64.0 * 60.0,
        "{errors} errors: {v}"
    );
}

// ---- TLS ----

struct Pki {
    /// Removed with everything in it when the Pki drops (also when a test panics).
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).to_str().unwrap().to_string()
    }
}

/// A new private directory (0700) `$TMPDIR/fastrpc-cli-test-TAG-XXXXXX`, removed on drop.
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("fastrpc-cli-test-{tag}-"))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .expect("temporary directory")
}

/// Writes `data` to a new file readable by its owner only (0600): for private keys.
fn write_private(path: &Path, data: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(data.as_bytes()).unwrap();
}

/// A CA, a server certificate for localhost/127.0.0.1, a client certificate, an unrelated CA.
fn make_pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let k = KeyPair::generate().unwrap();
        let c = p.self_signed(&k).unwrap();
        (c, k)
    };
    let leaf = |sans: &[&str], usage, ca: &(rcgen::Certificate, KeyPair)| {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, "leaf");
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        let k = KeyPair::generate().unwrap();
        let c = p.signed_by(&k, &ca.0, &ca.1).unwrap();
        (c.pem(), k.serialize_pem())
    };
    let root = ca("fastrpc cli test CA");
    let other = ca("unrelated CA");
    let (scert, skey) = leaf(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
        &root,
    );
    let (ccert, ckey) = leaf(&["client"], ExtendedKeyUsagePurpose::ClientAuth, &root);
    let dir = temp_dir("pki");
    let w = |f: &str, s: &str| std::fs::write(dir.path().join(f), s).unwrap();
    w("ca.pem", &root.0.pem());
    w("other-ca.pem", &other.0.pem());
    w("server.pem", &scert);
    write_private(&dir.path().join("server.key"), &skey);
    w("client.pem", &ccert);
    write_private(&dir.path().join("client.key"), &ckey);
    Pki { dir }
}

/// The test PKI leaves nothing behind and its private keys are the owner's alone.
#[test]
fn test_pki_keys_are_private_and_removed() {
    use std::os::unix::fs::PermissionsExt;
    let pki = make_pki();
    let mode = |f: &str| std::fs::metadata(pki.path(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("server.key"), 0o600);
    assert_eq!(mode("client.key"), 0o600);
    let dir = pki.dir.path().to_path_buf();
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    drop(pki);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn tls_call_with_and_without_trust() {
    let pki = make_pki();
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let s = Serve::start(&["--tls-cert", &cert, "--tls-key", &key, "--require-tls"]);
    let ok = run(
        &[
            "call", "--addr", &s.addr, "--name", "foo", "--value", "bar", "--tls", "--tls-ca", &ca,
        ],
        None,
    );
    assert_eq!(ok.code, 0, "stderr: {}", ok.stderr);
    assert_eq!(ok.stdout, b"foo:bar");

    // Verified against the name "localhost" too.
    let ok = run(
        &[
            "call",
            "--addr",
            &s.addr,
            "--name",
            "foo",
            "--tls",
            "--tls-ca",
            &ca,
            "--tls-server-name",
            "localhost",
        ],
        None,
    );
    assert_eq!(ok.code, 0, "stderr: {}", ok.stderr);

    // A CA that did not sign the server's certificate.
    let other = pki.path("other-ca.pem");
    let bad = run(
        &[
            "call", "--addr", &s.addr, "--name", "foo", "--tls", "--tls-ca", &other,
        ],
        None,
    );
    assert_eq!(bad.code, 8, "stderr: {}", bad.stderr);
    assert!(
        bad.stderr.starts_with("fastrpc call: tls: "),
        "{}",
        bad.stderr
    );

    // No --tls-ca: the system bundle is trusted, which does not know our test CA.
    let bad = run(&["call", "--addr", &s.addr, "--name", "foo", "--tls"], None);
    let has_bundle = std::env::var_os("SSL_CERT_FILE").is_some()
        || [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/cert.pem",
        ]
        .iter()
        .any(|p| Path::new(p).is_file());
    let want = if has_bundle { 8 } else { 10 };
    assert_eq!(bad.code, want, "stderr: {}", bad.stderr);

    // --insecure-skip-verify accepts it.
    let ok = run(
        &[
            "call",
            "--addr",
            &s.addr,
            "--name",
            "i",
            "--insecure-skip-verify",
        ],
        None,
    );
    assert_eq!(ok.code, 0, "stderr: {}", ok.stderr);
    assert_eq!(ok.stdout, b"i:");

    // Plaintext to a --require-tls server fails.
    let plain = run(
        &[
            "call",
            "--addr",
            &s.addr,
            "--name",
            "foo",
            "--timeout",
            "5s",
        ],
        None,
    );
    assert_ne!(plain.code, 0);
}

#[test]
fn mutual_tls() {
    let pki = make_pki();
    let ca = pki.path("ca.pem");
    let s = Serve::start(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
        "--tls-client-ca",
        &ca,
        "--compress",
        "snappy",
    ]);
    let ok = run(
        &[
            "call",
            "--addr",
            &s.addr,
            "--name",
            "m",
            "--value",
            "tls",
            "--tls-ca",
            &ca,
            "--tls-cert",
            &pki.path("client.pem"),
            "--tls-key",
            &pki.path("client.key"),
            "--compress",
            "snappy",
        ],
        None,
    );
    assert_eq!(ok.code, 0, "stderr: {}", ok.stderr);
    assert_eq!(ok.stdout, b"m:tls");
    let no_cert = run(
        &[
            "call",
            "--addr",
            &s.addr,
            "--name",
            "m",
            "--tls-ca",
            &ca,
            "--timeout",
            "5s",
        ],
        None,
    );
    assert_ne!(no_cert.code, 0, "a client without certificate must fail");
    // A plaintext client (want_tls = 0) is refused: --tls-client-ca implies --require-tls.
    let plain = run(
        &[
            "call",
            "--addr",
            &s.addr,
            "--compress",
            "none",
            "--name",
            "secret",
            "--value",
            "x",
            "--timeout",
            "5s",
        ],
        None,
    );
    assert_eq!(plain.code, 8, "stderr: {}", plain.stderr);
    assert_eq!(plain.stdout, b"", "a plaintext client was served");
    assert!(
        plain
            .stderr
            .contains("the server requires TLS: configure TLS on the client"),
        "{}",
        plain.stderr
    );
}

#[test]
fn bench_tls_inproc() {
    let pki = make_pki();
    let out = run(
        &[
            "bench",
            "--spawn-server",
            "inproc",
            "--count",
            "1000",
            "--concurrency",
            "16",
            "--tls-ca",
            &pki.path("ca.pem"),
            "--server-tls-cert",
            &pki.path("server.pem"),
            "--server-tls-key",
            &pki.path("server.key"),
            "--json",
        ],
        None,
    );
    let v = json(&out);
    check_bench_json(&v, 1000);
    assert_eq!(v["tls"], true);
}

/// `bench --addr a,b,c --connections 2`: one balanced client with two connections to each
/// of three servers; every call counted once, and each server took some.
#[test]
fn bench_balanced_over_three_servers() {
    let servers: Vec<Serve> = (0..3)
        .map(|_| Serve::start(&["--reply", "fixed:10", "--compress", "none"]))
        .collect();
    let list = servers
        .iter()
        .map(|s| s.addr.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let out = run(
        &[
            "bench",
            "--addr",
            &list,
            "--connections",
            "2",
            "--count",
            "3000",
            "--concurrency",
            "8",
            "--compress",
            "none",
            "--json",
        ],
        None,
    );
    let v = json(&out);
    check_bench_json(&v, 3000);
    assert_eq!(v["connections"].as_f64(), Some(6.0), "{v}");
    let per = v["servers"].as_array().expect("servers array");
    assert_eq!(per.len(), 3, "{v}");
    let mut sum = 0.0;
    for (b, s) in per.iter().zip(&servers) {
        assert_eq!(b["addr"].as_str(), Some(s.addr.as_str()), "{v}");
        assert_eq!(b["state"].as_str(), Some("up"), "{v}");
        assert_eq!(b["errors"].as_f64(), Some(0.0), "{v}");
        let n = b["calls"].as_f64().unwrap();
        assert!(n > 0.0, "{v}");
        sum += n;
    }
    assert_eq!(sum, 3000.0, "{v}");
}

/// `bench --servers 2 --spawn-server inproc`: two spawned servers behind one balanced client.
#[test]
fn bench_spawns_several_servers() {
    let out = run(
        &[
            "bench",
            "--servers",
            "2",
            "--spawn-server",
            "inproc",
            "--count",
            "1000",
            "--concurrency",
            "8",
            "--json",
        ],
        None,
    );
    let v = json(&out);
    check_bench_json(&v, 1000);
    assert_eq!(v["servers"].as_array().map(|a| a.len()), Some(2), "{v}");
}

/// Every server of the list down: the run fails with the connect code, naming each.
#[test]
fn bench_balanced_all_down_names_them() {
    let addrs: Vec<String> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        })
        .collect();
    let out = run(
        &["bench", "--addr", &addrs.join(","), "--count", "10"],
        None,
    );
    assert_eq!(out.code, 4, "{}", out.stderr);
    for a in &addrs {
        assert!(out.stderr.contains(a.as_str()), "{}", out.stderr);
    }
}
