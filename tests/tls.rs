//! Real TLS end to end with certificates generated at test time: echo in each compression,
//! server verification by name and by IP, wrong CA, TLS against a plaintext server and the
//! reverse, mutual TLS, the insecure test-only mode, and TLS over a Unix socket.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::certs::{test_pki, TestPki};
use fastrpc::{
    Call, Client, ClientConfig, Compression, Error, ErrorKind, Server, ServerConfig,
    TlsClientConfig, TlsServerConfig,
};

async fn bounded(f: impl Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the test did not finish within 30 s");
}

/// Polls `cond` every 2 ms for up to 10 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn echo(call: Call) {
    let mut v = call.name().to_vec();
    v.push(b':');
    v.extend_from_slice(call.value());
    let _ = call.reply(&v);
}

fn echoed(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = name.to_vec();
    v.push(b':');
    v.extend_from_slice(value);
    v
}

fn tls_server(p: &TestPki) -> TlsServerConfig {
    TlsServerConfig {
        cert_pem: p.server_cert_pem.as_bytes().to_vec(),
        key_pem: p.server_key_pem.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn tls_client(ca: &str) -> TlsClientConfig {
    TlsClientConfig {
        ca_pem: Some(ca.as_bytes().to_vec()),
        ..Default::default()
    }
}

async fn serve(addr: &str, tls: Option<TlsServerConfig>, comp: Compression) -> Server {
    let mut cfg = ServerConfig::default();
    cfg.tls = tls;
    cfg.compress_type = comp;
    Server::bind(addr, cfg, echo).await.unwrap()
}

fn client(addr: &str, tls: Option<TlsClientConfig>, comp: Compression) -> Client {
    let mut cfg = ClientConfig::new(addr);
    cfg.tls = tls;
    cfg.compress_type = comp;
    Client::new(cfg).unwrap()
}

fn assert_kind<T>(r: Result<T, Error>, kind: ErrorKind) -> Error {
    match r {
        Ok(_) => panic!("expected a {kind:?} error, got Ok"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{e}");
            e
        }
    }
}

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').unwrap().1
}

async fn one_then_200_callers(cl: &Client) {
    for i in 0..20u32 {
        let v = format!("one-{i}");
        assert_eq!(
            cl.call(b"n", v.as_bytes()).await.unwrap(),
            echoed(b"n", v.as_bytes())
        );
    }
    let mut tasks = Vec::new();
    for i in 0..200usize {
        let c = cl.clone();
        tasks.push(tokio::spawn(async move {
            let v: Vec<u8> = (0..i * 53).map(|k| (k * 7 + i) as u8).collect();
            assert_eq!(c.call(b"many", &v).await.unwrap(), echoed(b"many", &v));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let st = cl.stats();
    assert_eq!(st.responses, 220);
    assert_eq!(st.connects, 1);
    assert_eq!(st.errors.total(), 0);
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_echo_in_each_compression() {
    bounded(async {
        let p = test_pki();
        for comp in [Compression::None, Compression::Flate, Compression::Snappy] {
            let server = serve("127.0.0.1:0", Some(tls_server(&p)), comp).await;
            // Verified against the CA and the name "localhost".
            let mut t = tls_client(&p.ca_pem);
            t.server_name = Some("localhost".into());
            let cl = client(&server.local_addr(), Some(t), comp);
            one_then_200_callers(&cl).await;
            let ss = server.stats();
            assert_eq!(ss.requests, 220, "{comp}");
            assert_eq!(ss.handshake_failures, 0, "{comp}");
            if comp != Compression::None {
                assert!(
                    ss.io.bytes_received_wire < ss.io.bytes_received_plain,
                    "{comp}: {:?}",
                    ss.io
                );
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_ip_address_and_the_dns_name_of_the_address() {
    bounded(async {
        let p = test_pki();
        let server = serve("127.0.0.1:0", Some(tls_server(&p)), Compression::Flate).await;
        // No server_name: the host of the address, an IP, is verified (the certificate has
        // 127.0.0.1 among its names).
        let by_ip = client(
            &server.local_addr(),
            Some(tls_client(&p.ca_pem)),
            Compression::Flate,
        );
        assert_eq!(by_ip.call(b"ip", b"1").await.unwrap(), b"ip:1");
        // The host of the address, a DNS name.
        let by_name = client(
            &format!("localhost:{}", port_of(&server.local_addr())),
            Some(tls_client(&p.ca_pem)),
            Compression::Flate,
        );
        assert_eq!(by_name.call(b"dns", b"2").await.unwrap(), b"dns:2");
        // A name the certificate does not carry is refused.
        let mut t = tls_client(&p.ca_pem);
        t.server_name = Some("example.com".into());
        let wrong = client(&server.local_addr(), Some(t), Compression::Flate);
        let e = assert_kind(wrong.call(b"n", b"").await, ErrorKind::Tls);
        assert!(e.message().contains("certificate"), "{e}");
        assert!(e.message().contains(&server.local_addr()), "{e}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_wrong_ca_fails() {
    bounded(async {
        let p = test_pki();
        let server = serve("127.0.0.1:0", Some(tls_server(&p)), Compression::Flate).await;
        let cl = client(
            &server.local_addr(),
            Some(tls_client(&p.other_ca_pem)),
            Compression::Flate,
        );
        let e = assert_kind(cl.call(b"n", b"").await, ErrorKind::Tls);
        assert!(
            e.message()
                .contains("is not signed by a trusted CA (unknown issuer"),
            "{e}"
        );
        assert!(e.message().contains("TLS handshake"), "{e}");
        wait_until("the server counted the failed handshake", || {
            server.stats().handshake_failures == 1
        })
        .await;
        assert_eq!(server.stats().errors.tls, 1);
        assert_eq!(cl.stats().errors.tls, 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_asked_of_a_plaintext_server_fails_clearly() {
    bounded(async {
        let p = test_pki();
        let server = serve("127.0.0.1:0", None, Compression::Flate).await;
        let cl = client(
            &server.local_addr(),
            Some(tls_client(&p.ca_pem)),
            Compression::Flate,
        );
        let e = assert_kind(cl.call(b"n", b"").await, ErrorKind::Tls);
        assert!(e.message().contains("does not offer it"), "{e}");
        assert!(e.message().contains("not falling back to plaintext"), "{e}");
        wait_until("the server counted the refused handshake", || {
            server.stats().handshake_failures == 1
        })
        .await;
        assert_eq!(server.stats().errors.tls, 1);
        assert_eq!(server.stats().requests, 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_refuses_a_plaintext_client() {
    bounded(async {
        let p = test_pki();
        let mut t = tls_server(&p);
        t.require_tls = true;
        let server = serve("127.0.0.1:0", Some(t), Compression::Flate).await;
        let plain = client(&server.local_addr(), None, Compression::Flate);
        let e = assert_kind(plain.call(b"n", b"").await, ErrorKind::Tls);
        assert!(e.message().contains("requires TLS"), "{e}");
        wait_until("the server counted the refused client", || {
            server.stats().handshake_failures == 1
        })
        .await;
        assert_eq!(server.stats().requests, 0);
        // A TLS client is served.
        let secure = client(
            &server.local_addr(),
            Some(tls_client(&p.ca_pem)),
            Compression::Flate,
        );
        assert_eq!(secure.call(b"n", b"tls").await.unwrap(), b"n:tls");

        // Without require_tls, a TLS server also serves plaintext clients.
        let server = serve("127.0.0.1:0", Some(tls_server(&p)), Compression::Flate).await;
        let plain = client(&server.local_addr(), None, Compression::Flate);
        assert_eq!(plain.call(b"n", b"plain").await.unwrap(), b"n:plain");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls() {
    bounded(async {
        let p = test_pki();
        let mut t = tls_server(&p);
        t.client_ca_pem = Some(p.ca_pem.as_bytes().to_vec());
        let server = serve("127.0.0.1:0", Some(t), Compression::Snappy).await;

        let mut with_cert = tls_client(&p.ca_pem);
        with_cert.client_cert_pem = Some(p.client_cert_pem.as_bytes().to_vec());
        with_cert.client_key_pem = Some(p.client_key_pem.as_bytes().to_vec());
        let good = client(&server.local_addr(), Some(with_cert), Compression::Snappy);
        assert_eq!(good.call(b"n", b"mtls").await.unwrap(), b"n:mtls");

        // No certificate: the server refuses the handshake and the call fails with a TLS
        // error (TLS 1.3 reports it at the client's first read, as a received alert).
        let bad = client(
            &server.local_addr(),
            Some(tls_client(&p.ca_pem)),
            Compression::Snappy,
        );
        let e = assert_kind(bad.call(b"n", b"").await, ErrorKind::Tls);
        assert!(e.message().to_lowercase().contains("certificate"), "{e}");
        wait_until("the server counted the refused handshake", || {
            server.stats().handshake_failures == 1
        })
        .await;
        assert_eq!(server.stats().errors.tls, 1);
        assert_eq!(server.stats().requests, 1);
        // The good client is unaffected.
        assert_eq!(good.call(b"n", b"again").await.unwrap(), b"n:again");
    })
    .await
}

/// Mutual TLS is enforced by construction: a server with a client CA refuses a client that
/// sends want_tls = 0, even with require_tls off, and so does a server with a custom rustls
/// configuration (which may ask for client certificates); a client CA beside a custom rustls
/// configuration (where it would be ignored) is refused at bind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_plaintext_clients_whatever_require_tls_says() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(async {
        let p = test_pki();
        let mut t = tls_server(&p);
        t.client_ca_pem = Some(p.ca_pem.as_bytes().to_vec());
        t.require_tls = false;
        let server = serve("127.0.0.1:0", Some(t), Compression::None).await;

        // Our client without TLS: told the server requires TLS.
        let plain = client(&server.local_addr(), None, Compression::None);
        let e = assert_kind(plain.call(b"secret", b"x").await, ErrorKind::Tls);
        assert_eq!(
            e.message(),
            format!(
                "handshake with {} failed: the server requires TLS: configure TLS on the client",
                server.local_addr()
            )
        );
        // A raw v1 client sending want_tls = 0: answered tls = 1, then closed, nothing served.
        let mut s = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .unwrap();
        // The default sniff header is empty: version 0, compression none (1), want_tls 0.
        s.write_all(&[0, 1, 0]).await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [0, 1, 1]);
        wait_until("the server counted both refused clients", || {
            server.stats().handshake_failures == 2
        })
        .await;
        assert_eq!(server.stats().errors.tls, 2);
        assert_eq!(server.stats().requests, 0);

        // A custom rustls configuration: plaintext refused too.
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let rc = {
            use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
            let certs = CertificateDer::pem_slice_iter(p.server_cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(p.server_key_pem.as_bytes()).unwrap();
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap()
        };
        let custom = TlsServerConfig {
            rustls: Some(std::sync::Arc::new(rc)),
            ..Default::default()
        };
        let server2 = serve("127.0.0.1:0", Some(custom.clone()), Compression::None).await;
        let plain = client(&server2.local_addr(), None, Compression::None);
        let e = assert_kind(plain.call(b"n", b"").await, ErrorKind::Tls);
        assert!(
            e.message()
                .ends_with("the server requires TLS: configure TLS on the client"),
            "{e}"
        );
        let secure = client(
            &server2.local_addr(),
            Some(tls_client(&p.ca_pem)),
            Compression::None,
        );
        assert_eq!(secure.call(b"n", b"custom").await.unwrap(), b"n:custom");

        let mut both = custom;
        both.client_ca_pem = Some(p.ca_pem.as_bytes().to_vec());
        let mut cfg = ServerConfig::default();
        cfg.tls = Some(both);
        let e = assert_kind(
            Server::bind("127.0.0.1:0", cfg, echo).await,
            ErrorKind::InvalidArgument,
        );
        assert_eq!(
            e.message(),
            "TlsServerConfig: client_ca_pem cannot be combined with rustls (it would be ignored); \
             configure client certificate verification in the rustls configuration"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_verify_accepts_an_unknown_ca() {
    bounded(async {
        let p = test_pki();
        let server = serve("127.0.0.1:0", Some(tls_server(&p)), Compression::Flate).await;
        // No CA at all.
        let t = TlsClientConfig {
            insecure_skip_verify_for_testing_only: true,
            ..Default::default()
        };
        let cl = client(&server.local_addr(), Some(t), Compression::Flate);
        assert_eq!(cl.call(b"n", b"insecure").await.unwrap(), b"n:insecure");
        // An unrelated CA and a name the certificate does not carry: still accepted.
        let t = TlsClientConfig {
            ca_pem: Some(p.other_ca_pem.as_bytes().to_vec()),
            server_name: Some("nowhere.invalid".into()),
            insecure_skip_verify_for_testing_only: true,
            ..Default::default()
        };
        let cl = client(&server.local_addr(), Some(t), Compression::Flate);
        assert_eq!(cl.call(b"n", b"x").await.unwrap(), b"n:x");
        // Without the flag and without a CA, the configuration is refused up front.
        let mut cfg = ClientConfig::new(server.local_addr());
        cfg.tls = Some(TlsClientConfig::default());
        let e = assert_kind(Client::new(cfg), ErrorKind::InvalidArgument);
        assert!(e.message().contains("ca_pem is required"), "{e}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_over_a_unix_socket() {
    bounded(async {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fastrpc-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let addr = format!("unix:{}", dir.join("tls.sock").display());
        let p = test_pki();
        let mut t = tls_server(&p);
        t.require_tls = true;
        let server = serve(&addr, Some(t), Compression::Snappy).await;
        let mut t = tls_client(&p.ca_pem);
        t.server_name = Some("localhost".into());
        let cl = client(&addr, Some(t), Compression::Snappy);
        one_then_200_callers(&cl).await;
        // A Unix address has no host to verify: without server_name the client is refused
        // at creation.
        let mut cfg = ClientConfig::new(&addr);
        cfg.tls = Some(tls_client(&p.ca_pem));
        let e = assert_kind(Client::new(cfg), ErrorKind::InvalidArgument);
        assert!(e.message().contains("server_name"), "{e}");
        server.stop(Duration::from_secs(5)).await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}

/// Who the peer is: a handler sees the client's address, whether the connection is TLS, and
/// with mutual TLS the verified client certificate (exactly the client's DER) with its
/// subject and subject alternative names as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_knows_its_peer() {
    bounded(async {
        type Seen = (
            String,
            bool,
            Option<Vec<u8>>,
            Option<String>,
            Option<String>,
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Seen>();
        let handler = move |call: Call| {
            let _ = tx.send((
                call.peer_addr().to_string(),
                call.is_tls(),
                call.peer_certificate().map(|c| c.to_vec()),
                call.peer_subject(),
                call.peer_subject_alt_names(),
            ));
            call.reply(b"ok").unwrap();
        };
        let p = test_pki();
        let client_der = rustls_pemfile_der(&p.client_cert_pem);
        let cases: Vec<(Option<TlsServerConfig>, Option<TlsClientConfig>, bool)> = vec![
            (None, None, false),
            (Some(tls_server(&p)), Some(tls_client(&p.ca_pem)), false),
            (
                Some({
                    let mut t = tls_server(&p);
                    t.client_ca_pem = Some(p.ca_pem.as_bytes().to_vec());
                    t
                }),
                Some({
                    let mut c = tls_client(&p.ca_pem);
                    c.client_cert_pem = Some(p.client_cert_pem.as_bytes().to_vec());
                    c.client_key_pem = Some(p.client_key_pem.as_bytes().to_vec());
                    c
                }),
                true,
            ),
        ];
        for (st, ct, mutual) in cases {
            let tls = st.is_some();
            let mut cfg = ServerConfig::default();
            cfg.tls = st;
            let server = Server::bind("127.0.0.1:0", cfg, handler.clone())
                .await
                .unwrap();
            let cl = client(&server.local_addr(), ct, Compression::Snappy);
            assert_eq!(cl.call(b"who", b"").await.unwrap(), b"ok");
            let (addr, is_tls, cert, subject, sans) = rx.recv().await.unwrap();
            assert!(addr.starts_with("127.0.0.1:"), "{addr}");
            assert_eq!(is_tls, tls);
            if mutual {
                assert_eq!(cert.as_deref(), Some(&client_der[..]));
                assert_eq!(subject.as_deref(), Some("CN=fastrpc test client"));
                assert_eq!(sans.as_deref(), Some("DNS:fastrpc-test-client"));
            } else {
                assert_eq!((cert, subject, sans), (None, None, None));
            }
            server.stop(Duration::from_secs(5)).await.unwrap();
        }
    })
    .await
}

/// The DER of the first certificate in a PEM text.
fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}
