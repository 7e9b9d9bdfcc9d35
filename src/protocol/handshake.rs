//! The plaintext connection handshake (docs/PROTOCOL.md section 1), then TLS when agreed.
//!
//! Client: sniff header + `[version, client_compress, want_tls]`, then reads the server's.
//! Server: reads and checks the client's, answers with its own. A server without TLS that is
//! asked for it answers `tls = 0` and closes; a client that asked for TLS and got `tls = 0`
//! fails (never falls back to plaintext). Our addition, harmless to a v1 peer: a server that
//! *requires* TLS answers a plaintext client with `tls = 1` and closes, so our client can say
//! "the server requires TLS" instead of a bare disconnect.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::compress::Compression;
use crate::error::{Error, ErrorKind};
use crate::tls::{describe, Side};
use crate::tls_stream;
use crate::transport::{RawStream, Stream};

/// The bytes one side writes: its sniff header, then version, compression code and TLS flag.
pub fn encode_header(
    out: &mut Vec<u8>,
    sniff_header: &[u8],
    version: u8,
    compression: Compression,
    tls: bool,
) {
    out.extend_from_slice(sniff_header);
    out.extend_from_slice(&[version, compression.code(), tls as u8]);
}

/// What the peer's header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerHeader {
    /// The compression the peer will use for what it sends.
    pub compression: Compression,
    /// The peer's TLS flag.
    pub tls: bool,
}

/// Reads and checks the peer's header. `peer` is "client" or "server", for messages.
pub async fn read_header<S: AsyncRead + Unpin>(
    s: &mut S,
    sniff_header: &[u8],
    version: u8,
    peer: &str,
) -> Result<PeerHeader, Error> {
    let mut got = vec![0u8; sniff_header.len() + 3];
    if let Err(e) = s.read_exact(&mut got).await {
        // EOF or a reset before the header: whether it comes as one or the other depends on
        // TCP timing, so both are the same failure. A v1 peer closes like this on a wrong
        // sniff header or version, or when it cannot serve TLS.
        return Err(Error::new(
            ErrorKind::Connect,
            format!(
                "the {peer} closed the connection during the handshake, before its header \
                 ({e}); do the sniff header, protocol version and TLS settings match?"
            ),
        ));
    }
    let (sniff, rest) = got.split_at(sniff_header.len());
    if sniff != sniff_header {
        return Err(Error::protocol(format!(
            "the {peer} sent sniff header {:?}, expected {:?}",
            String::from_utf8_lossy(sniff),
            String::from_utf8_lossy(sniff_header)
        )));
    }
    if rest[0] != version {
        return Err(Error::protocol(format!(
            "the {peer} speaks protocol version {}, expected {version}",
            rest[0]
        )));
    }
    let compression = Compression::from_code(rest[1]).ok_or_else(|| {
        Error::protocol(format!(
            "the {peer} asked for unknown compression code {} (known: 0 flate, 1 none, 2 snappy)",
            rest[1]
        ))
    })?;
    Ok(PeerHeader {
        compression,
        tls: rest[2] != 0,
    })
}

/// Settings both sides' handshakes share.
#[derive(Clone, Copy)]
pub struct Params<'a> {
    /// The sniff header, written first and expected first.
    pub sniff_header: &'a [u8],
    /// The protocol version byte.
    pub version: u8,
    /// The compression this side uses for what it sends.
    pub compression: Compression,
    /// The bound on the whole handshake, TLS included.
    pub timeout: Duration,
}

fn timed_out(what: &str, t: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("{what} handshake did not finish within {t:?}"),
    )
}

/// Runs the client side. Returns the stream to use and the server's compression.
pub(crate) async fn client(
    mut s: RawStream,
    p: Params<'_>,
    tls: Option<(
        std::sync::Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
) -> Result<(Stream, Compression), Error> {
    let want_tls = tls.is_some();
    let fut = async move {
        let mut hdr = Vec::with_capacity(p.sniff_header.len() + 3);
        encode_header(&mut hdr, p.sniff_header, p.version, p.compression, want_tls);
        s.write_all(&hdr)
            .await
            .map_err(|e| Error::from_io(&e, ErrorKind::Io, "cannot write the handshake header"))?;
        let h = read_header(&mut s, p.sniff_header, p.version, "server").await?;
        match (want_tls, h.tls) {
            (true, false) => Err(Error::new(
                ErrorKind::Tls,
                "TLS was asked but the server does not offer it (it answered tls=0); \
                 not falling back to plaintext",
            )),
            (false, true) => Err(Error::new(
                ErrorKind::Tls,
                "the server requires TLS: configure TLS on the client",
            )),
            (true, true) => {
                let (config, name) = tls.expect("want_tls");
                let t = tls_stream::connect(s, config, name).await.map_err(|e| {
                    tls_error("TLS handshake with the server failed", &e, Side::Client)
                })?;
                Ok((Stream::Tls(Box::new(t)), h.compression))
            }
            (false, false) => Ok((Stream::Plain(s), h.compression)),
        }
    };
    tokio::time::timeout(p.timeout, fut)
        .await
        .map_err(|_| timed_out("the client", p.timeout))?
}

/// How a server treats TLS in the handshake.
pub(crate) struct ServerTls<'a> {
    pub config: Option<&'a std::sync::Arc<rustls::ServerConfig>>,
    /// Plaintext clients are refused, with this message (TLS required, or mutual TLS).
    pub refuse_plaintext: Option<&'static str>,
}

/// Runs the server side. Returns the stream to use and the client's compression.
pub(crate) async fn server(
    mut s: RawStream,
    p: Params<'_>,
    tls: ServerTls<'_>,
) -> Result<(Stream, Compression), Error> {
    let fut = async move {
        let h = read_header(&mut s, p.sniff_header, p.version, "client").await?;
        let mut hdr = Vec::with_capacity(p.sniff_header.len() + 3);
        match (h.tls, tls.config) {
            (true, None) => {
                encode_header(&mut hdr, p.sniff_header, p.version, p.compression, false);
                let _ = s.write_all(&hdr).await;
                let _ = s.shutdown().await;
                Err(Error::new(
                    ErrorKind::Tls,
                    "the client asked for TLS but this server has no TLS configured",
                ))
            }
            (false, _) if tls.refuse_plaintext.is_some() => {
                encode_header(&mut hdr, p.sniff_header, p.version, p.compression, true);
                let _ = s.write_all(&hdr).await;
                let _ = s.shutdown().await;
                Err(Error::new(
                    ErrorKind::Tls,
                    tls.refuse_plaintext.unwrap_or_default(),
                ))
            }
            (true, Some(config)) => {
                encode_header(&mut hdr, p.sniff_header, p.version, p.compression, true);
                s.write_all(&hdr).await.map_err(|e| {
                    Error::from_io(&e, ErrorKind::Io, "cannot write the handshake header")
                })?;
                let t = tls_stream::accept(s, config.clone()).await.map_err(|e| {
                    tls_error("TLS handshake with the client failed", &e, Side::Server)
                })?;
                Ok((Stream::Tls(Box::new(t)), h.compression))
            }
            (false, _) => {
                encode_header(&mut hdr, p.sniff_header, p.version, p.compression, false);
                s.write_all(&hdr).await.map_err(|e| {
                    Error::from_io(&e, ErrorKind::Io, "cannot write the handshake header")
                })?;
                Ok((Stream::Plain(s), h.compression))
            }
        }
    };
    tokio::time::timeout(p.timeout, fut)
        .await
        .map_err(|_| timed_out("the server", p.timeout))?
}

fn tls_error(what: &str, e: &tls_stream::HandshakeError, side: Side) -> Error {
    let (text, tls) = match e {
        tls_stream::HandshakeError::Tls(e) => (describe(e, side), crate::tls::detail(e)),
        tls_stream::HandshakeError::Io(e) => (e.to_string(), crate::error::TlsDetail::Other),
    };
    Error::new(ErrorKind::Tls, format!("{what}: {text}")).with_tls_detail(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes() {
        let mut b = Vec::new();
        encode_header(&mut b, b"xy", 3, Compression::Snappy, true);
        assert_eq!(b, [b'x', b'y', 3, 2, 1]);
        b.clear();
        encode_header(&mut b, b"", 0, Compression::Flate, false);
        assert_eq!(b, [0, 0, 0]);
    }

    #[tokio::test]
    async fn header_checks() {
        let mut ok: &[u8] = &[b'x', 1, 1, 0];
        let h = read_header(&mut ok, b"x", 1, "server").await.unwrap();
        assert_eq!(
            h,
            PeerHeader {
                compression: Compression::None,
                tls: false
            }
        );
        let mut bad_sniff: &[u8] = &[b'y', 1, 1, 0];
        let e = read_header(&mut bad_sniff, b"x", 1, "server")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert_eq!(
            e.message(),
            "the server sent sniff header \"y\", expected \"x\""
        );
        let mut bad_ver: &[u8] = &[b'x', 2, 1, 0];
        let e = read_header(&mut bad_ver, b"x", 1, "client")
            .await
            .unwrap_err();
        assert_eq!(
            e.message(),
            "the client speaks protocol version 2, expected 1"
        );
        let mut bad_comp: &[u8] = &[b'x', 1, 9, 0];
        let e = read_header(&mut bad_comp, b"x", 1, "client")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.message().contains("unknown compression code 9"));
        let mut short: &[u8] = &[b'x', 1];
        let e = read_header(&mut short, b"x", 1, "client")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect);
        assert!(e.message().contains("during the handshake"), "{e}");
    }
}
