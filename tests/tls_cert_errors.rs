//! Certificate problems give messages that name the problem in plain words, checked exactly:
//! a self-signed server certificate (a CA certificate trusted directly, and a plain one not
//! trusted), an unknown CA, a wrong name, an expired and a not-yet-valid certificate, and a
//! missing client certificate (on both ends). Certificates are generated here with rcgen.

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use fastrpc::log::{self, Level};
use fastrpc::{
    Call, Client, ClientConfig, Compression, Error, ErrorKind, Server, ServerConfig,
    TlsClientConfig, TlsDetail, TlsServerConfig,
};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

fn ca(name: &str) -> (Certificate, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    (p.self_signed(&key).unwrap(), key)
}

/// Leaf parameters for `localhost` and 127.0.0.1.
fn leaf_params(usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut p =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "localhost");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    p
}

/// (certificate PEM, key PEM) of `p` signed by `issuer`.
fn signed(p: CertificateParams, issuer: &(Certificate, KeyPair)) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer.0, &issuer.1).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn logs() -> &'static Mutex<Vec<String>> {
    static LOGS: OnceLock<&'static Mutex<Vec<String>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let l: &'static Mutex<Vec<String>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        log::set_hook(
            Level::Warn,
            Some(Box::new(move |_, m| {
                l.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(m.to_string())
            })),
        );
        l
    })
}

/// Waits up to 10 s for a log line that ends with `tail`.
async fn logged(tail: &str) {
    let start = Instant::now();
    loop {
        if logs()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|l| l.ends_with(tail))
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no log line ends with {tail:?}: {:?}",
            logs().lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn serve(cert: &str, key: &str, client_ca: Option<&str>) -> Server {
    logs();
    let mut cfg = ServerConfig::default();
    cfg.compress_type = Compression::None;
    cfg.tls = Some(TlsServerConfig {
        cert_pem: cert.as_bytes().to_vec(),
        key_pem: key.as_bytes().to_vec(),
        client_ca_pem: client_ca.map(|c| c.as_bytes().to_vec()),
        ..Default::default()
    });
    Server::bind("127.0.0.1:0", cfg, |c: Call| {
        let v = c.value().to_vec();
        let _ = c.reply(&v);
    })
    .await
    .unwrap()
}

async fn call(addr: &str, tls: TlsClientConfig) -> Result<Vec<u8>, Error> {
    let mut cfg = ClientConfig::new(addr);
    cfg.compress_type = Compression::None;
    cfg.tls = Some(tls);
    let c = Client::new(cfg).unwrap();
    tokio::time::timeout(Duration::from_secs(20), c.call(b"n", b"v"))
        .await
        .expect("the call did not end within 20 s")
}

fn trusting(ca_pem: &str) -> TlsClientConfig {
    TlsClientConfig {
        ca_pem: Some(ca_pem.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// The client's error for a failed TLS handshake with the server at `addr`.
fn handshake_error(addr: &str, what: &str) -> String {
    format!("handshake with {addr} failed: TLS handshake with the server failed: {what}")
}

fn tls_err(r: Result<Vec<u8>, Error>) -> Error {
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    e
}

const UNKNOWN_ISSUER: &str = "the server's certificate is not signed by a trusted CA (unknown \
     issuer: neither it nor its issuer is in ca_pem); a self-signed certificate also gives this";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_server_certificate() {
    // As `openssl req -x509` makes it: a CA certificate, trusted directly by the client.
    let mut p = leaf_params(ExtendedKeyUsagePurpose::ServerAuth);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap().pem();
    let s = serve(&cert, &key.serialize_pem(), None).await;
    let e = tls_err(call(&s.local_addr(), trusting(&cert)).await);
    assert_eq!(e.tls_detail(), TlsDetail::UnknownCa, "{e}");
    assert_eq!(
        e.message(),
        handshake_error(
            &s.local_addr(),
            "the server's certificate is a CA certificate, which cannot serve as the server's \
             own certificate: a self-signed certificate made with `openssl req -x509` is one; \
             issue a server certificate from that CA instead"
        )
    );
    // A plain self-signed certificate the client does not trust.
    let key = KeyPair::generate().unwrap();
    let cert = leaf_params(ExtendedKeyUsagePurpose::ServerAuth)
        .self_signed(&key)
        .unwrap()
        .pem();
    let s = serve(&cert, &key.serialize_pem(), None).await;
    let e = tls_err(call(&s.local_addr(), trusting(&ca("some CA").0.pem())).await);
    assert_eq!(e.tls_detail(), TlsDetail::UnknownCa, "{e}");
    assert_eq!(
        e.message(),
        handshake_error(&s.local_addr(), UNKNOWN_ISSUER)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_from_an_unknown_ca() {
    let (cert, key) = signed(
        leaf_params(ExtendedKeyUsagePurpose::ServerAuth),
        &ca("CA 1"),
    );
    let s = serve(&cert, &key, None).await;
    let e = tls_err(call(&s.local_addr(), trusting(&ca("CA 2").0.pem())).await);
    assert_eq!(e.tls_detail(), TlsDetail::UnknownCa, "{e}");
    assert_eq!(
        e.message(),
        handshake_error(&s.local_addr(), UNKNOWN_ISSUER)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_for_another_name() {
    let root = ca("CA");
    let (cert, key) = signed(leaf_params(ExtendedKeyUsagePurpose::ServerAuth), &root);
    let s = serve(&cert, &key, None).await;
    let mut tls = trusting(&root.0.pem());
    tls.server_name = Some("example.com".into());
    let e = tls_err(call(&s.local_addr(), tls).await);
    assert_eq!(e.tls_detail(), TlsDetail::NameMismatch, "{e}");
    assert_eq!(
        e.message(),
        handshake_error(
            &s.local_addr(),
            "the server's certificate is not valid for the name \"example.com\" (it names \
             DnsName(\"localhost\"), IpAddress(127.0.0.1))"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_server_certificate() {
    let root = ca("CA");
    let mut p = leaf_params(ExtendedKeyUsagePurpose::ServerAuth);
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let (cert, key) = signed(p, &root);
    let s = serve(&cert, &key, None).await;
    let e = tls_err(call(&s.local_addr(), trusting(&root.0.pem())).await);
    assert_eq!(e.tls_detail(), TlsDetail::Expired, "{e}");
    assert_eq!(
        e.message(),
        handshake_error(
            &s.local_addr(),
            "the server's certificate has expired: it was valid until 2021-01-01 00:00:00 UTC"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_not_yet_valid() {
    let root = ca("CA");
    let mut p = leaf_params(ExtendedKeyUsagePurpose::ServerAuth);
    p.not_before = rcgen::date_time_ymd(2098, 1, 1);
    p.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let (cert, key) = signed(p, &root);
    let s = serve(&cert, &key, None).await;
    let e = tls_err(call(&s.local_addr(), trusting(&root.0.pem())).await);
    assert_eq!(e.tls_detail(), TlsDetail::NotYetValid, "{e}");
    assert_eq!(
        e.message(),
        handshake_error(
            &s.local_addr(),
            "the server's certificate is not valid yet: it is valid from 2098-01-01 00:00:00 \
             UTC (check the clocks)"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_client_certificate() {
    let root = ca("CA");
    let (cert, key) = signed(leaf_params(ExtendedKeyUsagePurpose::ServerAuth), &root);
    let s = serve(&cert, &key, Some(&root.0.pem())).await;
    let e = tls_err(call(&s.local_addr(), trusting(&root.0.pem())).await);
    assert_eq!(e.tls_detail(), TlsDetail::NoClientCertificate, "{e}");
    // TLS 1.3: the client's handshake is done before the server checks its certificate, so
    // the server's alert arrives at the client's first read.
    assert_eq!(
        e.message(),
        format!(
            "connection to {} failed: read failed: the server requires a client certificate \
             (mutual TLS) and none was sent: set client_cert_pem and client_key_pem",
            s.local_addr()
        )
    );
    logged(
        "TLS handshake with the client failed: the client presented no certificate, but this \
         server requires one (mutual TLS: client_ca_pem is set)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_from_an_unknown_ca() {
    let root = ca("CA");
    let (cert, key) = signed(leaf_params(ExtendedKeyUsagePurpose::ServerAuth), &root);
    let s = serve(&cert, &key, Some(&root.0.pem())).await;
    let (ccert, ckey) = signed(
        leaf_params(ExtendedKeyUsagePurpose::ClientAuth),
        &ca("another CA"),
    );
    let mut tls = trusting(&root.0.pem());
    tls.client_cert_pem = Some(ccert.into_bytes());
    tls.client_key_pem = Some(ckey.into_bytes());
    let e = tls_err(call(&s.local_addr(), tls).await);
    assert_eq!(e.tls_detail(), TlsDetail::PeerRejectedCertificate, "{e}");
    assert_eq!(
        e.message(),
        format!(
            "connection to {} failed: read failed: the server does not trust our certificate: \
             it is not signed by a CA the server trusts (TLS alert unknown_ca)",
            s.local_addr()
        )
    );
    logged(
        "TLS handshake with the client failed: the client's certificate is not signed by a \
         trusted CA (unknown issuer: neither it nor its issuer is in client_ca_pem); a \
         self-signed certificate also gives this",
    )
    .await;
}
