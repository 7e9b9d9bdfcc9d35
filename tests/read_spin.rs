//! `read_spin` (client and server): 50 µs by default; calls stay exact with it (default and
//! off) in every compression, below and above the concurrency where readers spin; a
//! connected, idle client and server do not spin; values over 10 ms are refused.

mod common;

use std::time::Duration;

use fastrpc::config::DEFAULT_READ_SPIN;
use fastrpc::{Call, Client, ClientConfig, Compression, ErrorKind, Server, ServerConfig};

fn echo(call: Call) {
    let mut v = call.name().to_vec();
    v.push(b':');
    v.extend_from_slice(call.value());
    let _ = call.reply(&v);
}

/// The CPU check reads the whole process's CPU time: the tests that make calls take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A server and a client with `spin` on both sides (`None`: the defaults).
async fn pair(c: Compression, spin: Option<Duration>) -> (Server, Client) {
    let mut scfg = ServerConfig::default();
    scfg.compress_type = c;
    if let Some(d) = spin {
        scfg.read_spin = d;
    }
    let server = Server::bind("127.0.0.1:0", scfg, echo).await.unwrap();
    let mut ccfg = ClientConfig::new(server.local_addr());
    ccfg.compress_type = c;
    if let Some(d) = spin {
        ccfg.read_spin = d;
    }
    (server, Client::new(ccfg).unwrap())
}

#[test]
fn the_default_is_50_us_on_both_sides() {
    assert_eq!(DEFAULT_READ_SPIN, Duration::from_micros(50));
    assert_eq!(ClientConfig::new("x:1").read_spin, DEFAULT_READ_SPIN);
    assert_eq!(ClientConfig::default().read_spin, DEFAULT_READ_SPIN);
    assert_eq!(ServerConfig::default().read_spin, DEFAULT_READ_SPIN);
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
        let modes = [Compression::None, Compression::Flate, Compression::Snappy]
            .into_iter()
            .flat_map(|c| [(c, None), (c, Some(Duration::ZERO))]);
        for (c, spin) in modes {
            let (server, client) = pair(c, spin).await;
            // One at a time: both readers spin between calls (by default).
            for i in 0..300u32 {
                let v = format!("v{i}");
                let r = client.call(b"one", v.as_bytes()).await.unwrap();
                assert_eq!(r, format!("one:v{i}").as_bytes(), "{c:?} {spin:?}");
            }
            // 200 at once: above the spinning limit (one call), then down to it as they end.
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
            assert_eq!(st.responses, 500, "{c:?} {spin:?}");
            assert_eq!(st.errors.total(), 0, "{c:?} {spin:?}");
            server.stop(Duration::from_secs(5)).await.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_does_not_spin() {
    let _turn = ONE_AT_A_TIME.lock().await;
    common::bounded(async {
        let (server, client) = pair(Compression::None, None).await;
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
