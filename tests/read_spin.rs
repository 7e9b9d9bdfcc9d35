//! `read_spin` (client and server): calls stay exact with it in every compression, below and
//! above the concurrency where readers spin; a connected, idle client and server do not spin;
//! values over 10 ms are refused.

mod common;

use std::time::Duration;

use fastrpc::{Call, Client, ClientConfig, Compression, ErrorKind, Server, ServerConfig};

fn echo(call: Call) {
    let mut v = call.name().to_vec();
    v.push(b':');
    v.extend_from_slice(call.value());
    let _ = call.reply(&v);
}

const SPIN: Duration = Duration::from_micros(50);

/// The CPU check reads the whole process's CPU time: the tests that make calls take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn spinning_pair(c: Compression) -> (Server, Client) {
    let mut scfg = ServerConfig::default();
    scfg.compress_type = c;
    scfg.read_spin = SPIN;
    let server = Server::bind("127.0.0.1:0", scfg, echo).await.unwrap();
    let mut ccfg = ClientConfig::new(server.local_addr());
    ccfg.compress_type = c;
    ccfg.read_spin = SPIN;
    (server, Client::new(ccfg).unwrap())
}

/// This process's CPU time (user + system).
fn cpu() -> Duration {
    // SAFETY: getrusage only writes the struct we pass; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable rusage.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_exact_with_read_spin_at_low_and_high_concurrency() {
    let _turn = ONE_AT_A_TIME.lock().await;
    common::bounded(async {
        for c in [Compression::None, Compression::Flate, Compression::Snappy] {
            let (server, client) = spinning_pair(c).await;
            // One at a time: both readers spin between calls.
            for i in 0..300u32 {
                let v = format!("v{i}");
                let r = client.call(b"one", v.as_bytes()).await.unwrap();
                assert_eq!(r, format!("one:v{i}").as_bytes(), "{c:?}");
            }
            // 200 at once: above the spinning limit, then below it as they finish.
            let mut tasks = Vec::new();
            for i in 0..200u32 {
                let cl = client.clone();
                tasks.push(tokio::spawn(async move {
                    let v = vec![(i % 251) as u8; (i as usize) * 13];
                    let r = cl.call(b"n", &v).await.unwrap();
                    assert_eq!(&r[..2], b"n:");
                    assert_eq!(&r[2..], &v[..]);
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(client.pending_requests(), 0);
            let st = client.stats();
            assert_eq!(st.responses, 500, "{c:?}");
            assert_eq!(st.errors.total(), 0, "{c:?}");
            server.stop(Duration::from_secs(5)).await.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_does_not_spin() {
    let _turn = ONE_AT_A_TIME.lock().await;
    common::bounded(async {
        let (server, client) = spinning_pair(Compression::None).await;
        for _ in 0..100 {
            assert_eq!(client.call(b"a", b"b").await.unwrap(), b"a:b");
        }
        // Connected and idle for 500 ms: a reader that kept spinning would use about that
        // much CPU (a core); the spins end 50 µs after the last bytes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = cpu();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let used = cpu() - before;
        assert!(
            used < Duration::from_millis(100),
            "{used:?} of CPU in 500 ms while idle"
        );
        assert_eq!(client.stats().connects, 1);
        server.stop(Duration::from_secs(5)).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn read_spin_over_10ms_is_refused() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut ccfg = ClientConfig::new("127.0.0.1:1");
    ccfg.read_spin = Duration::from_millis(11);
    let e = Client::new(ccfg).err().expect("refused");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(e.message(), "read_spin must be at most 10 ms");
    let mut scfg = ServerConfig::default();
    scfg.read_spin = Duration::from_millis(11);
    let e = Server::bind("127.0.0.1:0", scfg, echo)
        .await
        .err()
        .expect("refused");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(e.message(), "read_spin must be at most 10 ms");
    // 10 ms itself is accepted.
    let mut ccfg = ClientConfig::new("127.0.0.1:1");
    ccfg.read_spin = Duration::from_millis(10);
    assert!(Client::new(ccfg).is_ok());
}
