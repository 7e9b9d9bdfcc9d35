//! TLS configuration: the client and server options ([`TlsClientConfig`], [`TlsServerConfig`]),
//! PEM loading with precise error messages, and the crate-internal builders that turn them
//! into rustls client and server configurations (always on the `aws-lc-rs` provider, with rustls'
//! safe default protocol versions).
//!
//! TLS runs over the TCP or Unix socket after the plaintext fastrpc handshake, exactly like
//! valyala/fastrpc does with Go's `crypto/tls`; this module only builds the TLS side.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, ErrorKind};

/// Client-side TLS options.
///
/// By default the server's certificate is verified against the roots in `ca_pem` and against
/// the server name (`server_name`, or the host part of the address being dialed).
///
/// Build one field by field (`TlsClientConfig { ca_pem: Some(pem), ..Default::default() }`),
/// with [`TlsClientConfig::from_files`], or hand over a ready rustls configuration in
/// `rustls`.
#[derive(Clone, Default)]
pub struct TlsClientConfig {
    /// PEM CA certificates to trust. Required unless `insecure_skip_verify_for_testing_only`
    /// or `rustls` is set (ignored when either is).
    pub ca_pem: Option<Vec<u8>>,
    /// The name to verify the server's certificate against (a DNS name or an IP address).
    /// `None` means the host part of the address being dialed.
    pub server_name: Option<String>,
    /// Mutual TLS: our certificate chain in PEM (leaf first). Needs `client_key_pem`.
    pub client_cert_pem: Option<Vec<u8>>,
    /// Mutual TLS: the private key of `client_cert_pem` in PEM (PKCS#8, PKCS#1 or SEC1,
    /// unencrypted). Needs `client_cert_pem`.
    pub client_key_pem: Option<Vec<u8>>,
    /// **DANGER: for tests and local development only.** Accept any server certificate:
    /// no chain, name or expiry checks, so anyone on the path can impersonate the server.
    /// Handshake signatures are still checked, which only proves the peer holds the key of
    /// the certificate it sent, not who it is. Never set this in production.
    pub insecure_skip_verify_for_testing_only: bool,
    /// A ready rustls configuration. When set it overrides every other field except
    /// `server_name`.
    pub rustls: Option<Arc<rustls::ClientConfig>>,
}

impl TlsClientConfig {
    /// Reads the CA certificates (`ca`), our certificate chain (`cert`) and our private key
    /// (`key`) from PEM files and checks that they parse. `cert` and `key` go together (mutual
    /// TLS); without `ca` the configuration must be completed (set `ca_pem`, `rustls` or the
    /// insecure flag) before use.
    ///
    /// Errors are [`ErrorKind::Tls`] and name the file that could not be read or parsed.
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Self, Error> {
        let ca_pem = match ca {
            Some(p) => {
                let pem = read_pem_file(p, "CA")?;
                parse_certs(&pem, "CA PEM").map_err(|e| e.context(&p.display().to_string()))?;
                Some(pem)
            }
            None => None,
        };
        let client_cert_pem = match cert {
            Some(p) => {
                let pem = read_pem_file(p, "client certificate")?;
                parse_certs(&pem, "client certificate PEM")
                    .map_err(|e| e.context(&p.display().to_string()))?;
                Some(pem)
            }
            None => None,
        };
        let client_key_pem = match key {
            Some(p) => {
                let pem = read_pem_file(p, "client private key")?;
                parse_key(&pem, "client private key PEM")
                    .map_err(|e| e.context(&p.display().to_string()))?;
                Some(pem)
            }
            None => None,
        };
        Ok(TlsClientConfig {
            ca_pem,
            client_cert_pem,
            client_key_pem,
            ..Default::default()
        })
    }
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientConfig")
            .field("ca_pem", &self.ca_pem.as_deref().map(PemLen))
            .field("server_name", &self.server_name)
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_deref().map(PemLen),
            )
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| Redacted),
            )
            .field(
                "insecure_skip_verify_for_testing_only",
                &self.insecure_skip_verify_for_testing_only,
            )
            .field(
                "rustls",
                &self.rustls.as_ref().map(|_| Opaque("rustls::ClientConfig")),
            )
            .finish()
    }
}

/// Server-side TLS options.
///
/// Build one field by field, with [`TlsServerConfig::from_files`], or hand over a ready
/// rustls configuration in `rustls`.
#[derive(Clone, Default)]
pub struct TlsServerConfig {
    /// The server's certificate chain in PEM, leaf first. Required unless `rustls` is set.
    pub cert_pem: Vec<u8>,
    /// The private key of `cert_pem` in PEM (PKCS#8, PKCS#1 or SEC1, unencrypted). Required
    /// unless `rustls` is set.
    pub key_pem: Vec<u8>,
    /// Mutual TLS: when set, clients must present a certificate signed by one of these PEM
    /// CA certificates, and every connection must complete TLS with one: clients that do not
    /// ask for TLS are refused whatever `require_tls` says.
    pub client_ca_pem: Option<Vec<u8>>,
    /// Refuse clients that do not ask for TLS in the fastrpc handshake. When `false`, such
    /// clients are served in plaintext, but only if neither `client_ca_pem` nor `rustls` is
    /// set: both imply that TLS is required.
    pub require_tls: bool,
    /// A ready rustls configuration. When set it overrides `cert_pem` and `key_pem`
    /// (`client_ca_pem` must then be unset: client verification is part of the rustls
    /// configuration). It always means TLS is required, since it may ask for client
    /// certificates.
    pub rustls: Option<Arc<rustls::ServerConfig>>,
}

impl TlsServerConfig {
    /// Reads the server's certificate chain (`cert`), its private key (`key`) and, for mutual
    /// TLS, the CA certificates that client certificates must chain to (`client_ca`) from PEM
    /// files, and checks that they parse.
    ///
    /// Errors are [`ErrorKind::Tls`] and name the file that could not be read or parsed.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, Error> {
        let cert_pem = read_pem_file(cert, "server certificate")?;
        parse_certs(&cert_pem, "server certificate PEM")
            .map_err(|e| e.context(&cert.display().to_string()))?;
        let key_pem = read_pem_file(key, "server private key")?;
        parse_key(&key_pem, "server private key PEM")
            .map_err(|e| e.context(&key.display().to_string()))?;
        let client_ca_pem = match client_ca {
            Some(p) => {
                let pem = read_pem_file(p, "client CA")?;
                parse_certs(&pem, "client CA PEM")
                    .map_err(|e| e.context(&p.display().to_string()))?;
                Some(pem)
            }
            None => None,
        };
        Ok(TlsServerConfig {
            cert_pem,
            key_pem,
            client_ca_pem,
            ..Default::default()
        })
    }
}

impl TlsServerConfig {
    /// Why a client that does not ask for TLS is refused (the message the server logs), or
    /// `None` when this configuration lets such a client be served in plaintext: only when
    /// nothing about clients is promised (no client CA, no custom rustls configuration).
    pub(crate) fn plaintext_refusal(&self) -> Option<&'static str> {
        if self.client_ca_pem.is_some() {
            Some(
                "refused a plaintext client: this server requires mutual TLS (TLS with a client \
                 certificate)",
            )
        } else if self.rustls.is_some() {
            Some(
                "refused a plaintext client: this server requires TLS (a custom rustls \
                 configuration always does: it may ask for client certificates)",
            )
        } else if self.require_tls {
            Some("refused a plaintext client: this server requires TLS")
        } else {
            None
        }
    }
}

impl fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerConfig")
            .field("cert_pem", &PemLen(&self.cert_pem))
            .field("key_pem", &Redacted)
            .field("client_ca_pem", &self.client_ca_pem.as_deref().map(PemLen))
            .field("require_tls", &self.require_tls)
            .field(
                "rustls",
                &self.rustls.as_ref().map(|_| Opaque("rustls::ServerConfig")),
            )
            .finish()
    }
}

/// Builds the rustls configuration for `cfg`: verifies the server against `ca_pem` (or accepts
/// anything when the insecure flag is set), presents our certificate when one is configured.
pub(crate) fn client_config(cfg: &TlsClientConfig) -> Result<Arc<rustls::ClientConfig>, Error> {
    if let Some(rc) = &cfg.rustls {
        return Ok(Arc::clone(rc));
    }
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(format!("TLS client config: protocol versions: {e}")))?;
    let builder = if cfg.insecure_skip_verify_for_testing_only {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(InsecureServerVerifier {
                algorithms: provider.signature_verification_algorithms,
            }))
    } else {
        let ca = cfg.ca_pem.as_deref().ok_or_else(|| {
            Error::invalid(
                "TlsClientConfig: ca_pem is required to verify the server (or set rustls, or \
                 insecure_skip_verify_for_testing_only for tests)",
            )
        })?;
        builder.with_root_certificates(root_store(ca, "CA PEM")?)
    };
    let config =
        match (&cfg.client_cert_pem, &cfg.client_key_pem) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let certs = parse_certs(cert, "client certificate PEM")?;
                let key = parse_key(key, "client private key PEM")?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| cert_key_error(e, "client"))?
            }
            (Some(_), None) => return Err(Error::invalid(
                "TlsClientConfig: client_cert_pem is set but client_key_pem is not; mutual TLS \
                 needs both",
            )),
            (None, Some(_)) => return Err(Error::invalid(
                "TlsClientConfig: client_key_pem is set but client_cert_pem is not; mutual TLS \
                 needs both",
            )),
        };
    Ok(Arc::new(config))
}

/// The name to verify the server against: `cfg.server_name` if set, else `addr_host` (the host
/// part of the dialed address; DNS names and IP addresses, IPv6 with or without brackets).
pub(crate) fn server_name(
    cfg: &TlsClientConfig,
    addr_host: &str,
) -> Result<ServerName<'static>, Error> {
    let (name, origin) = match &cfg.server_name {
        Some(n) => (n.as_str(), "the configured server_name"),
        None => (addr_host, "the host of the server address"),
    };
    let trimmed = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    if trimmed.is_empty() {
        return Err(Error::invalid(format!(
            "TLS server name is empty ({origin}); set server_name \
             (fastrpc_client_config_builder_set_tls_server_name in C)"
        )));
    }
    ServerName::try_from(trimmed.to_owned()).map_err(|e| {
        Error::invalid(format!(
            "TLS server name {name:?} ({origin}) is neither a DNS name nor an IP address: {e}"
        ))
    })
}

/// Builds the rustls configuration for `cfg`: presents `cert_pem`/`key_pem`, and requires
/// client certificates signed by `client_ca_pem` when that is set.
pub(crate) fn server_config(cfg: &TlsServerConfig) -> Result<Arc<rustls::ServerConfig>, Error> {
    if let Some(rc) = &cfg.rustls {
        if cfg.client_ca_pem.is_some() {
            return Err(Error::invalid(
                "TlsServerConfig: client_ca_pem cannot be combined with rustls (it would be \
                 ignored); configure client certificate verification in the rustls configuration",
            ));
        }
        return Ok(Arc::clone(rc));
    }
    if cfg.cert_pem.is_empty() {
        return Err(Error::invalid(
            "TlsServerConfig: cert_pem is empty; set the server certificate chain (or rustls)",
        ));
    }
    if cfg.key_pem.is_empty() {
        return Err(Error::invalid(
            "TlsServerConfig: key_pem is empty; set the server private key (or rustls)",
        ));
    }
    let provider = provider();
    let certs = parse_certs(&cfg.cert_pem, "server certificate PEM")?;
    let key = parse_key(&cfg.key_pem, "server private key PEM")?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(format!("TLS server config: protocol versions: {e}")))?;
    let builder = match &cfg.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = root_store(ca, "client CA PEM")?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
                    .build()
                    .map_err(|e| {
                        tls(format!(
                            "client CA PEM: cannot build the client verifier: {e}"
                        ))
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| cert_key_error(e, "server"))?;
    Ok(Arc::new(config))
}

/// The crate's one crypto provider: rustls' `aws-lc-rs` provider, built once. Chosen over
/// `ring` for speed (measured, docs/BENCHMARKS.md): its AES-GCM uses VAES with AVX-512 where
/// the CPU has them, and AES-GCM was the largest share of the TLS cost. Without rustls's
/// `prefer-post-quantum` feature its key exchange groups are X25519, P-256, P-384, then
/// X25519MLKEM768.
///
/// Its cipher suites are rustls's, in rustls's order except that AES-128-GCM comes first (TLS
/// 1.3, then TLS 1.2): our client offers it first and our server takes the client's order.
/// AES-128-GCM is TLS 1.3's mandatory suite and what Go's crypto/tls and browsers offer first;
/// the key exchange (X25519, P-256) gives 128-bit security either way, and AES-128's 10 rounds
/// against AES-256's 14 cut the AES-GCM time of a TLS run by about 30% (docs/BENCHMARKS.md).
/// Every suite stays available to a peer that prefers another.
fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let mut p = rustls::crypto::aws_lc_rs::default_provider();
        // A stable sort: TLS 1.3 suites before TLS 1.2 ones as in rustls, AES-128-GCM first
        // within each, the others in rustls's order.
        p.cipher_suites.sort_by_key(|s| {
            let tls12 = matches!(s, rustls::SupportedCipherSuite::Tls12(_));
            (tls12, !is_aes_128_gcm(s.suite()))
        });
        Arc::new(p)
    })
}

fn is_aes_128_gcm(s: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as C;
    matches!(
        s,
        C::TLS13_AES_128_GCM_SHA256
            | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

fn tls(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Tls, msg)
}

fn read_pem_file(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| tls(format!("reading {what} PEM file {}: {e}", path.display())))
}

/// Every certificate in `pem`; `what` names the input in messages ("CA PEM", ...).
fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(format!("{what}: {}", pem_error(&e))))?;
    if certs.is_empty() {
        return Err(tls(format!(
            "no certificate found in {what} (expected a \"-----BEGIN CERTIFICATE-----\" block)"
        )));
    }
    Ok(certs)
}

/// The first private key in `pem`, checked to be usable by the provider.
fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, Error> {
    let key = match PrivateKeyDer::from_pem_slice(pem) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => {
            let encrypted = pem.windows(b"ENCRYPTED".len()).any(|w| w == b"ENCRYPTED");
            return Err(tls(if encrypted {
                format!("{what}: no key found (encrypted private keys are not supported; decrypt it first)")
            } else {
                format!(
                    "{what}: no key found (expected a \"-----BEGIN PRIVATE KEY-----\", \
                     \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)"
                )
            }));
        }
        Err(e) => return Err(tls(format!("{what}: {}", pem_error(&e)))),
    };
    provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| tls(format!("{what}: unusable key: {e}")))?;
    Ok(key)
}

fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "malformed PEM: missing {:?} line",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "malformed PEM: bad section start line {:?}",
            String::from_utf8_lossy(line)
        ),
        other => format!("malformed PEM: {other}"),
    }
}

/// A root store with every certificate of `pem`.
fn root_store(pem: &[u8], what: &str) -> Result<RootCertStore, Error> {
    let certs = parse_certs(pem, what)?;
    let n = certs.len();
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            tls(format!(
                "{what}: bad certificate: {e} (certificate {} of {n})",
                i + 1
            ))
        })?;
    }
    Ok(roots)
}

/// Maps the error of pairing a certificate chain with its key.
fn cert_key_error(e: rustls::Error, side: &str) -> Error {
    match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => tls(format!(
            "{side} certificate PEM and {side} private key PEM do not match: the key does not \
             belong to the (first) certificate of the chain"
        )),
        other => tls(format!("{side} certificate PEM: bad certificate: {other}")),
    }
}

/// Which end of a TLS connection we are, for messages about the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

impl Side {
    fn peer(self) -> &'static str {
        match self {
            Side::Client => "server",
            Side::Server => "client",
        }
    }

    /// The option that lists the CAs we trust for the peer's certificate.
    fn trust_option(self) -> &'static str {
        match self {
            Side::Client => "ca_pem",
            Side::Server => "client_ca_pem",
        }
    }
}

/// A rustls failure in words a user understands: certificate problems (self-signed, unknown
/// CA, wrong name, expired, not yet valid, missing client certificate) and the peer's alerts
/// about ours. Anything else keeps rustls's own wording.
/// Which problem a rustls failure was, for [`crate::Error::tls_detail`].
pub(crate) fn detail(e: &rustls::Error) -> crate::error::TlsDetail {
    use crate::error::TlsDetail as D;
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => D::UnknownCa,
            C::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => D::UnknownCa,
            C::NotValidForName | C::NotValidForNameContext { .. } => D::NameMismatch,
            C::Expired | C::ExpiredContext { .. } => D::Expired,
            C::NotValidYet | C::NotValidYetContext { .. } => D::NotYetValid,
            _ => D::BadCertificate,
        },
        E::NoCertificatesPresented => D::NoClientCertificate,
        E::AlertReceived(A::CertificateRequired) => D::NoClientCertificate,
        E::AlertReceived(
            A::UnknownCA
            | A::BadCertificate
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::AccessDenied,
        ) => D::PeerRejectedCertificate,
        E::AlertReceived(_) => D::HandshakeAlert,
        _ => D::Other,
    }
}

pub(crate) fn describe(e: &rustls::Error, side: Side) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let peer = side.peer();
    match e {
        E::InvalidCertificate(c) => {
            let problem = match c {
                C::UnknownIssuer => format!(
                    "is not signed by a trusted CA (unknown issuer: neither it nor its issuer is \
                     in {}); a self-signed certificate also gives this",
                    side.trust_option()
                ),
                C::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => format!(
                    "is a CA certificate, which cannot serve as the {peer}'s own certificate: a \
                     self-signed certificate made with `openssl req -x509` is one; issue a {peer} \
                     certificate from that CA instead"
                ),
                C::NotValidForNameContext {
                    expected,
                    presented,
                } => format!(
                    "is not valid for the name {:?} (it names {})",
                    expected.to_str(),
                    if presented.is_empty() {
                        "nothing".to_string()
                    } else {
                        presented.join(", ")
                    }
                ),
                C::NotValidForName => "is not valid for the name connected to".to_string(),
                C::ExpiredContext { not_after, .. } => format!(
                    "has expired: it was valid until {}",
                    utc(not_after.as_secs())
                ),
                C::Expired => "has expired".to_string(),
                C::NotValidYetContext { not_before, .. } => format!(
                    "is not valid yet: it is valid from {} (check the clocks)",
                    utc(not_before.as_secs())
                ),
                C::NotValidYet => "is not valid yet (check the clocks)".to_string(),
                C::InvalidPurpose | C::InvalidPurposeContext { .. } => format!(
                    "is not meant for a TLS {peer} (its extended key usage does not allow it)"
                ),
                C::BadSignature => "has a signature that does not verify".to_string(),
                C::Revoked => "has been revoked".to_string(),
                C::BadEncoding => "is malformed".to_string(),
                other => format!("is invalid ({other:?})"),
            };
            format!("the {peer}'s certificate {problem}")
        }
        E::NoCertificatesPresented => match side {
            Side::Server => "the client presented no certificate, but this server requires one \
                             (mutual TLS: client_ca_pem is set)"
                .to_string(),
            Side::Client => "the server presented no certificate".to_string(),
        },
        E::AlertReceived(a) => match a {
            A::CertificateRequired => format!(
                "the {peer} requires a client certificate (mutual TLS) and none was sent: set \
                 client_cert_pem and client_key_pem"
            ),
            A::UnknownCA => format!(
                "the {peer} does not trust our certificate: it is not signed by a CA the {peer} \
                 trusts (TLS alert unknown_ca)"
            ),
            A::BadCertificate => {
                format!("the {peer} rejected our certificate (TLS alert bad_certificate)")
            }
            A::CertificateUnknown => {
                format!("the {peer} rejected our certificate (TLS alert certificate_unknown)")
            }
            A::CertificateExpired => format!(
                "the {peer} says our certificate has expired or is not valid yet (TLS alert \
                 certificate_expired)"
            ),
            A::HandshakeFailure => format!(
                "the {peer} refused the TLS handshake (TLS alert handshake_failure): no protocol \
                 version, cipher suite or certificate that both sides accept"
            ),
            other => format!("the {peer} ended the TLS connection with alert {other:?}"),
        },
        other => other.to_string(),
    }
}

/// A rustls failure on an established connection, carried in an `io::Error`: shown in words
/// ([`describe`]), with rustls's error as its source.
#[derive(Debug)]
pub(crate) struct TlsFailure {
    pub error: rustls::Error,
    pub text: String,
}

impl TlsFailure {
    pub(crate) fn new(error: rustls::Error, side: Side) -> TlsFailure {
        let text = describe(&error, side);
        TlsFailure { error, text }
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for TlsFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Seconds since the Unix epoch as "YYYY-MM-DD hh:mm:ss UTC".
fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Accepts every server certificate, but still verifies the handshake signatures with the
/// provider's algorithms. Only reachable through `insecure_skip_verify_for_testing_only`.
#[derive(Debug)]
struct InsecureServerVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for InsecureServerVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Debug helper: a PEM input shown by its size only.
struct PemLen<'a>(&'a [u8]);

impl fmt::Debug for PemLen<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes of PEM>", self.0.len())
    }
}

/// Debug helper: secret material, never shown.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Debug helper: an object shown by its type name only.
struct Opaque(&'static str);

impl fmt::Debug for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::RawStream;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const LIMIT: Duration = Duration::from_secs(10);

    struct Pki {
        ca: String,
        server_cert: String,
        server_key: String,
        client_cert: String,
        client_key: String,
        other_ca: String,
        other_server_cert: String,
        other_server_key: String,
    }

    fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        (p.self_signed(&key).unwrap(), key)
    }

    fn leaf(
        sans: &[&str],
        usage: rcgen::ExtendedKeyUsagePurpose,
        issuer: &(rcgen::Certificate, rcgen::KeyPair),
    ) -> (String, String) {
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            sans.first().copied().unwrap_or("client"),
        );
        p.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer.0, &issuer.1).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn pki() -> Pki {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let ca1 = ca("fastrpc test CA");
        let ca2 = ca("unrelated CA");
        let (server_cert, server_key) = leaf(&["localhost", "127.0.0.1"], ServerAuth, &ca1);
        let (client_cert, client_key) = leaf(&["fastrpc test client"], ClientAuth, &ca1);
        let (other_server_cert, other_server_key) =
            leaf(&["localhost", "127.0.0.1"], ServerAuth, &ca2);
        Pki {
            ca: ca1.0.pem(),
            server_cert,
            server_key,
            client_cert,
            client_key,
            other_ca: ca2.0.pem(),
            other_server_cert,
            other_server_key,
        }
    }

    fn server_cfg(cert: &str, key: &str) -> TlsServerConfig {
        TlsServerConfig {
            cert_pem: cert.as_bytes().to_vec(),
            key_pem: key.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn client_cfg(ca: &str) -> TlsClientConfig {
        TlsClientConfig {
            ca_pem: Some(ca.as_bytes().to_vec()),
            ..Default::default()
        }
    }

    /// Runs one TLS connection over real loopback TCP: the client sends a byte, the server
    /// answers it plus one. Returns the client's and the server's outcome.
    async fn exchange(
        server: &TlsServerConfig,
        client: &TlsClientConfig,
        host: &str,
    ) -> (Result<u8, Error>, Result<(), Error>) {
        let server_config = server_config(server).expect("server config");
        let client_config = client_config(client).expect("client config");
        let name = server_name(client, host).expect("server name");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let s = crate::tls_stream::accept(RawStream::Tcp(tcp), server_config)
                .await
                .map_err(|e| Error::new(ErrorKind::Tls, format!("server TLS handshake: {e}")))?;
            let (mut rd, mut wr) = s.split();
            let mut b = [0u8; 1];
            rd.read_exact(&mut b)
                .await
                .map_err(|e| Error::from_io(&e, ErrorKind::Connection, "server read"))?;
            wr.write_all(&[b[0].wrapping_add(1)])
                .await
                .map_err(|e| Error::from_io(&e, ErrorKind::Connection, "server write"))?;
            wr.shutdown()
                .await
                .map_err(|e| Error::from_io(&e, ErrorKind::Connection, "server shutdown"))?;
            Ok::<(), Error>(())
        });
        let client_res = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let s = crate::tls_stream::connect(RawStream::Tcp(tcp), client_config, name)
                .await
                .map_err(|e| Error::new(ErrorKind::Tls, format!("client TLS handshake: {e}")))?;
            let (mut rd, mut wr) = s.split();
            wr.write_all(&[41])
                .await
                .map_err(|e| Error::from_io(&e, ErrorKind::Connection, "client write"))?;
            wr.flush()
                .await
                .map_err(|e| Error::from_io(&e, ErrorKind::Connection, "client flush"))?;
            let mut b = [0u8; 1];
            rd.read_exact(&mut b)
                .await
                .map_err(|e| Error::from_io(&e, ErrorKind::Connection, "client read"))?;
            // The server's close_notify reads as a clean end of stream.
            let mut rest = Vec::new();
            rd.read_to_end(&mut rest)
                .await
                .map_err(|e| Error::from_io(&e, ErrorKind::Connection, "client read to end"))?;
            assert!(rest.is_empty());
            Ok::<u8, Error>(b[0])
        }
        .await;
        let server_res = server_task.await.unwrap();
        (client_res, server_res)
    }

    async fn bounded<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(LIMIT, f)
            .await
            .expect("test timed out")
    }

    /// The provider keeps all nine suites of rustls's aws-lc-rs provider, AES-128-GCM first
    /// within each version, and our client and server settle on TLS 1.3 AES-128-GCM.
    #[test]
    fn aes_128_gcm_first_and_every_suite_kept() {
        use rustls::CipherSuite as C;
        let suites: Vec<C> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites,
            [
                C::TLS13_AES_128_GCM_SHA256,
                C::TLS13_AES_256_GCM_SHA384,
                C::TLS13_CHACHA20_POLY1305_SHA256,
                C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ]
        );
        let p = pki();
        let ccfg = client_cfg(&p.ca);
        let mut c = rustls::ClientConnection::new(
            client_config(&ccfg).unwrap(),
            server_name(&ccfg, "localhost").unwrap(),
        )
        .unwrap();
        let mut s = rustls::ServerConnection::new(
            server_config(&server_cfg(&p.server_cert, &p.server_key)).unwrap(),
        )
        .unwrap();
        // The handshake in memory: each side's records straight into the other.
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                s.read_tls(&mut &buf[..]).unwrap();
                s.process_new_packets().unwrap();
            }
            buf.clear();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                c.read_tls(&mut &buf[..]).unwrap();
                c.process_new_packets().unwrap();
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        assert_eq!(
            c.negotiated_cipher_suite().map(|s| s.suite()),
            Some(C::TLS13_AES_128_GCM_SHA256)
        );
        assert_eq!(
            s.negotiated_cipher_suite().map(|s| s.suite()),
            Some(C::TLS13_AES_128_GCM_SHA256)
        );
    }

    #[tokio::test]
    async fn tls_verified_handshake_by_dns_name_and_ip() {
        bounded(async {
            let p = pki();
            let server = server_cfg(&p.server_cert, &p.server_key);
            let (c, s) = exchange(&server, &client_cfg(&p.ca), "localhost").await;
            assert_eq!(c.unwrap(), 42);
            s.unwrap();
            let (c, s) = exchange(&server, &client_cfg(&p.ca), "127.0.0.1").await;
            assert_eq!(c.unwrap(), 42);
            s.unwrap();
            // An explicit server_name overrides the address host.
            let mut cfg = client_cfg(&p.ca);
            cfg.server_name = Some("localhost".into());
            let (c, s) = exchange(&server, &cfg, "127.0.0.1").await;
            assert_eq!(c.unwrap(), 42);
            s.unwrap();
        })
        .await
    }

    #[tokio::test]
    async fn tls_wrong_server_name_fails() {
        bounded(async {
            let p = pki();
            let server = server_cfg(&p.server_cert, &p.server_key);
            let mut cfg = client_cfg(&p.ca);
            cfg.server_name = Some("example.com".into());
            let (c, s) = exchange(&server, &cfg, "127.0.0.1").await;
            let e = c.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
            assert!(e.message().contains("not valid for name"), "{e}");
            assert!(e.message().contains("example.com"), "{e}");
            assert!(s.is_err());
        })
        .await
    }

    #[tokio::test]
    async fn tls_untrusted_ca_fails() {
        bounded(async {
            let p = pki();
            let server = server_cfg(&p.server_cert, &p.server_key);
            let (c, s) = exchange(&server, &client_cfg(&p.other_ca), "localhost").await;
            let e = c.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
            assert!(e.message().contains("UnknownIssuer"), "{e}");
            assert!(s.is_err());
        })
        .await
    }

    #[tokio::test]
    async fn tls_insecure_skip_verify_accepts_untrusted_server() {
        bounded(async {
            let p = pki();
            let server = server_cfg(&p.other_server_cert, &p.other_server_key);
            let cfg = TlsClientConfig {
                insecure_skip_verify_for_testing_only: true,
                ..Default::default()
            };
            let (c, s) = exchange(&server, &cfg, "127.0.0.1").await;
            assert_eq!(c.unwrap(), 42);
            s.unwrap();
            // A name that matches nothing is accepted too.
            let cfg = TlsClientConfig {
                insecure_skip_verify_for_testing_only: true,
                server_name: Some("nowhere.invalid".into()),
                ..Default::default()
            };
            let (c, s) = exchange(&server, &cfg, "127.0.0.1").await;
            assert_eq!(c.unwrap(), 42);
            s.unwrap();
        })
        .await
    }

    #[tokio::test]
    async fn tls_mutual_auth() {
        bounded(async {
            let p = pki();
            let mut server = server_cfg(&p.server_cert, &p.server_key);
            server.client_ca_pem = Some(p.ca.as_bytes().to_vec());

            let mut with_cert = client_cfg(&p.ca);
            with_cert.client_cert_pem = Some(p.client_cert.as_bytes().to_vec());
            with_cert.client_key_pem = Some(p.client_key.as_bytes().to_vec());
            let (c, s) = exchange(&server, &with_cert, "localhost").await;
            assert_eq!(c.unwrap(), 42);
            s.unwrap();

            // No certificate: the server refuses; the client sees the failure at the
            // handshake (TLS 1.2) or at its first read (TLS 1.3).
            let (c, s) = exchange(&server, &client_cfg(&p.ca), "localhost").await;
            let se = s.unwrap_err();
            assert_eq!(se.kind(), ErrorKind::Tls, "{se}");
            assert!(se.message().contains("no certificates"), "{se}");
            assert!(c.is_err());

            // A certificate from another CA is refused as well.
            let mut foreign = client_cfg(&p.ca);
            foreign.client_cert_pem = Some(p.other_server_cert.as_bytes().to_vec());
            foreign.client_key_pem = Some(p.other_server_key.as_bytes().to_vec());
            let (c, s) = exchange(&server, &foreign, "localhost").await;
            let se = s.unwrap_err();
            assert_eq!(se.kind(), ErrorKind::Tls, "{se}");
            assert!(c.is_err());
        })
        .await
    }

    #[tokio::test]
    async fn tls_bad_inputs_give_clear_errors() {
        bounded(async {
            let p = pki();
            let tls_msg = |r: Result<(), Error>, want: &str| {
                let e = r.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
                assert!(e.message().contains(want), "{e:?} does not contain {want:?}");
            };
            let invalid = |r: Result<(), Error>, want: &str| {
                let e = r.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
                assert!(e.message().contains(want), "{e:?} does not contain {want:?}");
            };
            let srv = |c: &str, k: &str| server_config(&server_cfg(c, k)).map(|_| ());
            let cli = |cfg: &TlsClientConfig| client_config(cfg).map(|_| ());

            // Server certificate and key.
            tls_msg(srv("garbage", &p.server_key), "no certificate found in server certificate PEM");
            tls_msg(srv(&p.server_key, &p.server_key), "no certificate found in server certificate PEM");
            tls_msg(srv(&p.server_cert, "garbage"), "server private key PEM: no key found");
            tls_msg(srv(&p.server_cert, &p.server_cert), "private key PEM: no key found");
            tls_msg(
                srv(&p.server_cert, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"),
                "encrypted private keys are not supported",
            );
            tls_msg(
                srv("-----BEGIN CERTIFICATE-----\nAAAA\n", &p.server_key),
                "server certificate PEM: malformed PEM",
            );
            tls_msg(srv(&p.server_cert, &p.client_key), "do not match");
            tls_msg(
                srv("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", &p.server_key),
                "server certificate PEM: bad certificate",
            );
            invalid(srv("", &p.server_key), "cert_pem is empty");
            invalid(srv(&p.server_cert, ""), "key_pem is empty");
            let mut s = server_cfg(&p.server_cert, &p.server_key);
            s.client_ca_pem = Some(b"nothing".to_vec());
            tls_msg(server_config(&s).map(|_| ()), "no certificate found in client CA PEM");

            // Client side.
            tls_msg(cli(&client_cfg("nothing here")), "no certificate found in CA PEM");
            tls_msg(
                cli(&client_cfg("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")),
                "CA PEM: bad certificate: ",
            );
            invalid(cli(&TlsClientConfig::default()), "ca_pem is required");
            let mut c = client_cfg(&p.ca);
            c.client_cert_pem = Some(p.client_cert.as_bytes().to_vec());
            invalid(cli(&c), "client_key_pem is not");
            c.client_key_pem = Some(b"nope".to_vec());
            tls_msg(cli(&c), "client private key PEM: no key found");
            c.client_key_pem = Some(p.server_key.as_bytes().to_vec());
            tls_msg(cli(&c), "do not match");
            c.client_cert_pem = None;
            invalid(cli(&c), "client_cert_pem is not");

            // Server names.
            let e = server_name(&TlsClientConfig::default(), "").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            let e = server_name(&TlsClientConfig::default(), "bad name!").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.message().contains("bad name!"), "{e}");
            assert!(matches!(
                server_name(&TlsClientConfig::default(), "[::1]").unwrap(),
                ServerName::IpAddress(_)
            ));
            assert!(matches!(
                server_name(&TlsClientConfig::default(), "127.0.0.1").unwrap(),
                ServerName::IpAddress(_)
            ));
            let named = TlsClientConfig {
                server_name: Some("localhost".into()),
                ..Default::default()
            };
            assert!(matches!(server_name(&named, "10.0.0.1").unwrap(), ServerName::DnsName(_)));
        })
        .await
    }

    #[tokio::test]
    async fn tls_from_files() {
        bounded(async {
            let p = pki();
            // Private (0700) and removed on drop, also when an assertion fails.
            let tmp = tempfile::Builder::new()
                .prefix("fastrpc-tls-test-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .tempdir()
                .unwrap();
            let dir = tmp.path();
            let write = |name: &str, body: &str| {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let path = dir.join(name);
                // 0600: some of these are private keys.
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .unwrap();
                f.write_all(body.as_bytes()).unwrap();
                path
            };
            let ca = write("ca.pem", &p.ca);
            let cert = write("server.pem", &p.server_cert);
            let key = write("server.key", &p.server_key);
            let ccert = write("client.pem", &p.client_cert);
            let ckey = write("client.key", &p.client_key);
            let garbage = write("garbage.pem", "garbage");
            let missing = dir.join("missing.pem");

            let s = TlsServerConfig::from_files(&cert, &key, Some(&ca)).unwrap();
            assert_eq!(s.cert_pem, p.server_cert.as_bytes());
            assert!(s.client_ca_pem.is_some());
            let c = TlsClientConfig::from_files(Some(&ca), Some(&ccert), Some(&ckey)).unwrap();
            let (r, sr) = exchange(&s, &c, "localhost").await;
            assert_eq!(r.unwrap(), 42);
            sr.unwrap();

            let e = TlsServerConfig::from_files(&missing, &key, None).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Tls);
            assert!(e.message().contains(&missing.display().to_string()), "{e}");
            let e = TlsServerConfig::from_files(&cert, &missing, None).unwrap_err();
            assert!(e.message().contains(&missing.display().to_string()), "{e}");
            assert!(e.message().contains("private key"), "{e}");
            let e = TlsClientConfig::from_files(Some(&missing), None, None).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Tls);
            assert!(e.message().contains(&missing.display().to_string()), "{e}");
            assert!(e.message().contains("CA"), "{e}");
            let e = TlsClientConfig::from_files(Some(&garbage), None, None).unwrap_err();
            assert!(e.message().contains(&garbage.display().to_string()), "{e}");
            assert!(
                e.message().contains("no certificate found in CA PEM"),
                "{e}"
            );

            drop(tmp);
        })
        .await
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn tls_debug_hides_keys() {
        let c = TlsClientConfig {
            client_key_pem: Some(b"SECRET-KEY-BYTES".to_vec()),
            ca_pem: Some(b"abc".to_vec()),
            ..Default::default()
        };
        let s = TlsServerConfig {
            key_pem: b"SECRET-KEY-BYTES".to_vec(),
            ..Default::default()
        };
        let (dc, ds) = (format!("{c:?}"), format!("{s:?}"));
        assert!(
            !dc.contains("SECRET") && !ds.contains("SECRET"),
            "{dc} {ds}"
        );
        assert!(dc.contains("<redacted>") && ds.contains("<redacted>"));
        assert!(dc.contains("<3 bytes of PEM>"), "{dc}");
    }
}
