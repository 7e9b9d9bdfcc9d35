//! The basic round trip in each compression pair, over TCP and Unix sockets.

use std::time::Duration;

use fastrpc::{Call, Client, ClientConfig, Compression, Server, ServerConfig};

fn echo(call: Call) {
    let mut v = call.name().to_vec();
    v.push(b':');
    v.extend_from_slice(call.value());
    let _ = call.reply(&v);
}

async fn roundtrip(addr: &str, cc: Compression, sc: Compression) {
    let mut scfg = ServerConfig::default();
    scfg.compress_type = sc;
    let server = Server::bind(addr, scfg, echo).await.unwrap();
    let mut ccfg = ClientConfig::new(server.local_addr());
    ccfg.compress_type = cc;
    let client = Client::new(ccfg).unwrap();
    for i in 0..50u32 {
        let v = format!("value-{i}");
        let r = client.call(b"foo", v.as_bytes()).await.unwrap();
        assert_eq!(r, format!("foo:value-{i}").as_bytes());
    }
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let v = vec![(i % 251) as u8; (i as usize) * 37];
            let r = c.call(b"n", &v).await.unwrap();
            assert_eq!(&r[..2], b"n:");
            assert_eq!(&r[2..], &v[..]);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(client.pending_requests(), 0);
    server.stop(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_every_compression_pair_over_tcp() {
    tokio::time::timeout(Duration::from_secs(60), async {
        for cc in [Compression::None, Compression::Flate, Compression::Snappy] {
            for sc in [Compression::None, Compression::Flate, Compression::Snappy] {
                roundtrip("127.0.0.1:0", cc, sc).await;
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_unix_socket() {
    // Removed on drop, also when the test fails.
    let dir = tempfile::Builder::new()
        .prefix("fastrpc-smoke-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let path = format!("unix:{}/s.sock", dir.path().display());
    tokio::time::timeout(
        Duration::from_secs(30),
        roundtrip(&path, Compression::Snappy, Compression::Flate),
    )
    .await
    .unwrap();
}
