//! The caller's read pass (src/client/read.rs): a thread outside the runtime waits on
//! `Client::read_fd` and completes the responses that arrived with `Client::read_now`.
//! With the runtime's only worker held busy (so the reader task cannot run), the pass alone
//! completes calls, byte for byte, with every compression and with TLS; it sees the
//! connection's end and a panic in it ends the connection (the client connects again); with
//! the worker free, passes on several threads racing the reader complete every call exactly
//! once.

mod common;

use common::calls::{echo, readable_within, runtime, tls_if, within, Sink};

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use fastrpc::{
    Client, ClientConfig, Completion, Compression, Error, ErrorKind, Server, ServerConfig,
};

/// The tests run one at a time: an injected panic is process-wide, and the held workers
/// make timing matter.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `f` on a thread, alone among these tests; fails the test if it takes more than
/// 60 s.
fn within_60s(f: impl FnOnce() + Send + 'static) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    within(60, f);
}

/// An echo server on a runtime of its own, and a client of it on a runtime with one worker
/// (which a test may hold) and no spinning reader.
fn echo_pair() -> (
    tokio::runtime::Runtime,
    Server,
    tokio::runtime::Runtime,
    Client,
) {
    let srt = runtime(1);
    let server = srt.block_on(async {
        Server::bind("127.0.0.1:0", ServerConfig::default(), echo)
            .await
            .unwrap()
    });
    let crt = runtime(1);
    let mut cfg = ClientConfig::new(server.local_addr().to_string());
    // No spinning reader: a held worker must not be needed to finish a spin.
    cfg.read_spin = Duration::ZERO;
    let client = crt.block_on(async { Client::new(cfg) }).unwrap();
    (srt, server, crt, client)
}

/// Waits up to 10 s for `fd` to be readable.
fn readable(fd: RawFd) -> bool {
    readable_within(fd, 10_000)
}

/// Keeps the runtime's workers busy (blocked in a std channel) until dropped.
struct Hold {
    release: Vec<mpsc::Sender<()>>,
}

impl Hold {
    fn workers(rt: &tokio::runtime::Runtime, n: usize) -> Hold {
        let (started_tx, started_rx) = mpsc::channel();
        let mut release = Vec::new();
        for _ in 0..n {
            let (tx, rx) = mpsc::channel::<()>();
            let started = started_tx.clone();
            rt.spawn(async move {
                started.send(()).unwrap();
                let _ = rx.recv();
            });
            release.push(tx);
        }
        for _ in 0..n {
            started_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a worker took the holding task");
        }
        Hold { release }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        for tx in self.release.drain(..) {
            let _ = tx.send(());
        }
    }
}

fn value(i: usize) -> Vec<u8> {
    let n = [0, 5, 300, 4096, 70_000][i % 5];
    (0..n).map(|k| (k * 13 + i) as u8).collect()
}

fn expect(i: usize) -> Vec<u8> {
    let mut v = b"f:".to_vec();
    v.extend_from_slice(&value(i));
    v
}

/// With the client runtime's one worker held, calls complete only through `read_now` on
/// this thread: each response exact, counted once, for every compression and TLS.
#[test]
fn a_caller_completes_its_calls_while_the_reader_cannot_run() {
    within_60s(|| {
        let cases = [
            (Compression::None, false),
            (Compression::Snappy, false),
            (Compression::Flate, false),
            (Compression::None, true),
            (Compression::Snappy, true),
        ];
        for (c, tls) in cases {
            let srt = runtime(1);
            let (stls, ctls) = tls_if(tls);
            let server = srt.block_on(async {
                let mut cfg = ServerConfig::default();
                cfg.compress_type = c;
                cfg.tls = stls;
                Server::bind("127.0.0.1:0", cfg, echo).await.unwrap()
            });
            let crt = runtime(1);
            let mut cfg = ClientConfig::new(server.local_addr().to_string());
            cfg.compress_type = c;
            cfg.tls = ctls;
            // No spinning reader: the held worker must not be needed to finish a spin.
            cfg.read_spin = Duration::ZERO;
            let client = crt.block_on(async { Client::new(cfg) }).unwrap();
            // Asked for before the first connection: each connection's socket is watched.
            let fd = client.read_fd().unwrap();
            assert_eq!(client.read_fd().unwrap(), fd, "one descriptor per client");
            // Connects; the reader and writer park.
            let v = crt.block_on(client.call(b"w", b"up")).unwrap();
            assert_eq!(v, b"w:up");
            assert_eq!(client.read_now(), 0, "nothing has arrived");
            let sink = Arc::new(Sink::default());
            let hold = Hold::workers(&crt, 1);
            for i in 0..10 {
                let lone = client.stats().lone_writes;
                client
                    .submit(
                        b"f",
                        &value(i),
                        Duration::from_secs(20),
                        sink.clone(),
                        i as u128,
                    )
                    .unwrap();
                assert_eq!(
                    client.stats().lone_writes,
                    lone + 1,
                    "the request went out on this thread ({c:?}, tls {tls})"
                );
                let mut done = 0;
                while sink.n.load(SeqCst) <= i {
                    assert!(
                        readable(fd),
                        "the response arrives ({c:?}, tls {tls}, call {i})"
                    );
                    done += client.read_now();
                }
                assert_eq!(done, 1, "({c:?}, tls {tls}, call {i})");
            }
            let got = std::mem::take(&mut *sink.got.lock().unwrap());
            assert_eq!(got.len(), 10);
            for (i, (tag, r)) in got.into_iter().enumerate() {
                assert_eq!(tag, i as u128);
                assert_eq!(r.unwrap(), expect(i), "call {i} ({c:?}, tls {tls})");
            }
            drop(hold);
            // The reader takes over again.
            let v = crt.block_on(client.call(b"w", b"again")).unwrap();
            assert_eq!(v, b"w:again");
            let st = client.stats();
            assert_eq!(st.responses, 12);
            assert_eq!(st.unexpected_responses, 0);
            assert_eq!(st.reconnects, 0);
            drop(client);
            drop(server);
        }
    });
}

/// The pass sees the server close the connection: it completes nothing, and once the
/// reader runs the waiting call fails with CONNECTION (exactly once); the next call
/// connects again.
#[test]
fn a_caller_pass_that_finds_the_connection_closed_ends_it() {
    within_60s(|| {
        let srt = runtime(1);
        let (server, calls) = srt.block_on(common::holding_server());
        let addr = server.local_addr().to_string();
        let crt = runtime(1);
        let mut cfg = ClientConfig::new(addr.clone());
        cfg.read_spin = Duration::ZERO;
        let client = crt.block_on(async { Client::new(cfg) }).unwrap();
        let sink = Arc::new(Sink::default());
        client
            .submit(b"a", b"1", Duration::from_secs(20), sink.clone(), 1)
            .unwrap();
        calls
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .reply(b"one")
            .unwrap();
        while sink.n.load(SeqCst) < 1 {
            std::thread::yield_now();
        }
        // Connected after the first call: the descriptor watches the socket at once.
        let fd = client.read_fd().unwrap();
        let hold = Hold::workers(&crt, 1);
        client
            .submit(b"a", b"2", Duration::from_secs(20), sink.clone(), 2)
            .unwrap();
        let held = calls.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(held.value(), b"2");
        // The server goes: its connections close with the call unanswered (held: a dropped
        // call would answer with an empty value).
        srt.block_on(async { drop(server) });
        assert!(readable(fd), "the end of the stream is readable");
        assert_eq!(client.read_now(), 0);
        assert_eq!(client.read_now(), 0, "a pass after the end reads nothing");
        drop(hold);
        while sink.n.load(SeqCst) < 2 {
            std::thread::yield_now();
        }
        let got = std::mem::take(&mut *sink.got.lock().unwrap());
        assert_eq!(got[0], (1, Ok(b"one".to_vec())));
        assert_eq!(got[1].0, 2);
        let (kind, msg) = got[1].1.clone().unwrap_err();
        assert_eq!(kind, ErrorKind::Connection, "{msg}");
        assert!(msg.contains("closed the connection"), "{msg}");
        assert_eq!(got.len(), 2);
        assert_eq!(client.pending_requests(), 0);
        drop(held);
    });
}

/// A panic inside a caller's pass does not unwind into the caller: the connection ends
/// (the call in flight fails with CONNECTION naming the panic), and the next call connects
/// again and gets its exact response.
#[test]
fn a_panic_in_a_caller_pass_ends_the_connection_only() {
    within_60s(|| {
        let (_srt, _server, crt, client) = echo_pair();
        let fd = client.read_fd().unwrap();
        assert_eq!(crt.block_on(client.call(b"w", b"1")).unwrap(), b"w:1");
        let sink = Arc::new(Sink::default());
        let hold = Hold::workers(&crt, 1);
        client
            .submit(b"p", b"x", Duration::from_secs(20), sink.clone(), 7)
            .unwrap();
        assert!(readable(fd));
        fastrpc::guard::inject_panic(fastrpc::guard::Task::ClientReadNow);
        assert_eq!(client.read_now(), 0);
        assert!(!fastrpc::guard::panic_pending(
            fastrpc::guard::Task::ClientReadNow
        ));
        drop(hold);
        while sink.n.load(SeqCst) < 1 {
            std::thread::yield_now();
        }
        let got = std::mem::take(&mut *sink.got.lock().unwrap());
        let (kind, msg) = got[0].1.clone().unwrap_err();
        assert_eq!(kind, ErrorKind::Connection, "{msg}");
        assert!(msg.contains("panic) in a caller's read pass"), "{msg}");
        assert_eq!(crt.block_on(client.call(b"w", b"2")).unwrap(), b"w:2");
        assert_eq!(client.stats().reconnects, 1);
    });
}

/// Passes on several threads racing the reader task, while calls from other threads flow:
/// every call completes exactly once with its exact response, and nothing is unexpected.
#[test]
fn caller_passes_racing_the_reader_complete_every_call_once() {
    within_60s(|| {
        let srt = runtime(2);
        let server = srt.block_on(async {
            let mut cfg = ServerConfig::default();
            cfg.compress_type = Compression::Snappy;
            Server::bind("127.0.0.1:0", cfg, echo).await.unwrap()
        });
        let crt = runtime(2);
        let mut cfg = ClientConfig::new(server.local_addr().to_string());
        cfg.compress_type = Compression::Snappy;
        let client = Arc::new(crt.block_on(async { Client::new(cfg) }).unwrap());
        let fd = client.read_fd().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let by_pass = Arc::new(AtomicUsize::new(0));
        let mut readers = Vec::new();
        for _ in 0..2 {
            let (client, stop, by_pass) = (client.clone(), stop.clone(), by_pass.clone());
            readers.push(std::thread::spawn(move || {
                while !stop.load(SeqCst) {
                    let mut p = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    unsafe { libc::poll(&mut p, 1, 5) };
                    by_pass.fetch_add(client.read_now(), SeqCst);
                }
            }));
        }
        const THREADS: usize = 4;
        const CALLS: usize = 500;
        let sink = Arc::new(Sink::default());
        let sent = Arc::new(AtomicUsize::new(0));
        let mut callers = Vec::new();
        for t in 0..THREADS {
            let (client, sink, sent) = (client.clone(), sink.clone(), sent.clone());
            callers.push(std::thread::spawn(move || {
                for k in 0..CALLS {
                    let i = t * CALLS + k;
                    // At most 128 in flight: few enough that lone calls happen too.
                    while sent.load(SeqCst) > sink.n.load(SeqCst) + 128 {
                        std::thread::yield_now();
                    }
                    sent.fetch_add(1, SeqCst);
                    client
                        .submit(
                            b"f",
                            &value(i),
                            Duration::from_secs(30),
                            sink.clone(),
                            i as u128,
                        )
                        .unwrap();
                }
            }));
        }
        for c in callers {
            c.join().unwrap();
        }
        while sink.n.load(SeqCst) < THREADS * CALLS {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, SeqCst);
        for r in readers {
            r.join().unwrap();
        }
        let mut got = std::mem::take(&mut *sink.got.lock().unwrap());
        assert_eq!(got.len(), THREADS * CALLS);
        got.sort_by_key(|(tag, _)| *tag);
        for (i, (tag, r)) in got.into_iter().enumerate() {
            assert_eq!(tag, i as u128, "each call completed once");
            assert_eq!(r.unwrap(), expect(i), "call {i}");
        }
        // With the passes gone, the reader alone reads: it must still be registered for the
        // socket (a pass that consumed the bytes that woke it, or that it found reading,
        // leaves it so). Lone calls, each waiting for its response.
        let sink2 = Arc::new(Sink::default());
        for i in 0..200 {
            client
                .submit(
                    b"f",
                    &value(i),
                    Duration::from_secs(10),
                    sink2.clone(),
                    i as u128,
                )
                .unwrap();
            while sink2.n.load(SeqCst) <= i {
                std::thread::yield_now();
            }
        }
        for (i, (tag, r)) in std::mem::take(&mut *sink2.got.lock().unwrap())
            .into_iter()
            .enumerate()
        {
            assert_eq!(tag, i as u128);
            assert_eq!(r.unwrap(), expect(i), "call {i} after the passes");
        }
        let st = client.stats();
        assert_eq!(st.responses, (THREADS * CALLS + 200) as u64);
        assert_eq!(st.unexpected_responses, 0);
        assert_eq!(st.reconnects, 0);
        eprintln!(
            "{} of {} calls completed by callers' passes",
            by_pass.load(SeqCst),
            THREADS * CALLS
        );
    });
}

/// A completion sink run by a caller's pass (on the caller's thread, while the pass holds
/// the reader's state) may use the client again: `read_fd` returns at once (it does not
/// wait for the reader's lock), `read_now` reads nothing (the pass is reading), and a new
/// call goes out.
#[test]
fn a_sink_run_by_a_pass_may_use_the_client() {
    struct Reentrant {
        client: std::sync::OnceLock<Arc<Client>>,
        fd: RawFd,
        seen: Mutex<Vec<(u128, usize, RawFd)>>,
        n: AtomicUsize,
    }
    impl Completion for Reentrant {
        fn complete(&self, tag: u128, r: Result<&[u8], &Error>) {
            assert!(r.is_ok(), "{:?}", r.err());
            let c = self.client.get().unwrap();
            let fd = c.read_fd().unwrap();
            let nested = c.read_now();
            self.seen.lock().unwrap().push((tag, nested, fd));
            self.n.fetch_add(1, SeqCst);
        }
    }
    within_60s(|| {
        let (_srt, _server, crt, client) = echo_pair();
        let client = Arc::new(client);
        let fd = client.read_fd().unwrap();
        assert_eq!(crt.block_on(client.call(b"w", b"1")).unwrap(), b"w:1");
        let sink = Arc::new(Reentrant {
            client: std::sync::OnceLock::new(),
            fd,
            seen: Mutex::new(Vec::new()),
            n: AtomicUsize::new(0),
        });
        let _ = sink.client.set(client.clone());
        let hold = Hold::workers(&crt, 1);
        for i in 0..5u128 {
            client
                .submit(b"s", b"x", Duration::from_secs(20), sink.clone(), i)
                .unwrap();
            while sink.n.load(SeqCst) as u128 <= i {
                assert!(readable(fd));
                client.read_now();
            }
        }
        drop(hold);
        let seen = std::mem::take(&mut *sink.seen.lock().unwrap());
        assert_eq!(seen.len(), 5);
        for (i, (tag, nested, got_fd)) in seen.into_iter().enumerate() {
            assert_eq!(tag, i as u128);
            assert_eq!(nested, 0, "a pass inside a pass reads nothing");
            assert_eq!(got_fd, sink.fd);
        }
        assert_eq!(crt.block_on(client.call(b"w", b"2")).unwrap(), b"w:2");
        // The sink holds the client: break the cycle.
        drop(client);
    });
}

/// A panic in the reader task while it holds the reader's state (which marks that lock
/// poisoned) ends the connection (the call in flight fails with CONNECTION), and on the next
/// connection callers' passes read again (the mark does not keep them out for good).
#[test]
fn callers_read_again_after_the_reader_panicked_holding_its_state() {
    within_60s(|| {
        let (_srt, _server, crt, client) = echo_pair();
        let fd = client.read_fd().unwrap();
        assert_eq!(crt.block_on(client.call(b"w", b"1")).unwrap(), b"w:1");
        let sink = Arc::new(Sink::default());
        fastrpc::guard::inject_panic(fastrpc::guard::Task::ClientReaderLocked);
        // The next response wakes the reader, which panics holding its state.
        client
            .submit(b"p", b"x", Duration::from_secs(20), sink.clone(), 1)
            .unwrap();
        while sink.n.load(SeqCst) < 1 {
            std::thread::yield_now();
        }
        assert!(!fastrpc::guard::panic_pending(
            fastrpc::guard::Task::ClientReaderLocked
        ));
        let got = std::mem::take(&mut *sink.got.lock().unwrap());
        let (kind, msg) = got[0].1.clone().unwrap_err();
        assert_eq!(kind, ErrorKind::Connection, "{msg}");
        // A new connection; then, with the worker held, only a caller can read.
        assert_eq!(crt.block_on(client.call(b"w", b"2")).unwrap(), b"w:2");
        assert_eq!(client.stats().reconnects, 1);
        let hold = Hold::workers(&crt, 1);
        client
            .submit(b"f", &value(3), Duration::from_secs(20), sink.clone(), 3)
            .unwrap();
        let mut done = 0;
        while sink.n.load(SeqCst) < 2 {
            assert!(readable(fd), "the response arrives");
            done += client.read_now();
        }
        assert_eq!(done, 1, "a caller's pass read it");
        drop(hold);
        let got = std::mem::take(&mut *sink.got.lock().unwrap());
        assert_eq!(got, vec![(3, Ok(expect(3)))]);
    });
}
