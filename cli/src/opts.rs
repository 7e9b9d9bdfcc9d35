//! Options shared by the subcommands (connection options, durations, replies), how they turn
//! into engine configurations, the exit code table, and small process helpers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use fastrpc::{
    ClientConfig, Compression, Error, ErrorKind, ServerConfig, TlsClientConfig, TlsServerConfig,
};

/// The exit code table of `fastrpc call` (and of the other commands when they fail with an
/// engine error). Printed by `fastrpc call --help`; README.md repeats it.
pub const EXIT_CODES: &str = "\
Exit codes:
   0  success (the response was written to stdout)
   1  usage error (bad or missing arguments)
   2  timeout           the call's deadline passed (--timeout)
   3  overflow          too many calls waiting
   4  connect           cannot connect (refused, unreachable, handshake failed)
   5  connection        the connection broke while the call was in flight
   6  closed            the client or server was closed
   7  protocol          the peer broke the protocol (sniff header, version, frames)
   8  tls               TLS failed (certificate not trusted, handshake, plaintext peer)
   9  too large         the name or value exceeds the frame size limit
  10  invalid argument  an argument or configuration value was refused by the engine
  11  io                any other I/O failure (reading --value-file, writing stdout)
  12  unknown           an error kind this tool does not know yet";

/// The process exit code for an engine error kind (see [`EXIT_CODES`]).
pub fn exit_code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::Timeout => 2,
        ErrorKind::Overflow => 3,
        ErrorKind::Connect => 4,
        ErrorKind::Connection => 5,
        ErrorKind::Closed => 6,
        ErrorKind::Protocol => 7,
        ErrorKind::Tls => 8,
        ErrorKind::TooLarge => 9,
        ErrorKind::InvalidArgument => 10,
        ErrorKind::Io => 11,
        _ => 12,
    }
}

/// Exit code for usage errors.
pub const EXIT_USAGE: i32 = 1;

/// Parses a duration: `0`, or a number with a unit `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`:
/// `500us`, `2ms`, `1.5s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {s:?} needs a unit: ns, us, ms, s, m or h (e.g. 2ms)"))?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: {num:?} is not a number"))?;
    let nanos_per = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => {
            return Err(format!(
                "duration {s:?}: unknown unit {unit:?} (want ns, us, ms, s, m or h)"
            ))
        }
    };
    let nanos = n * nanos_per;
    if !nanos.is_finite() || nanos > 1e18 {
        return Err(format!("duration {s:?} is too long"));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// Parses `none`, `flate` or `snappy`.
pub fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse()
}

/// What `fastrpc serve` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The request's name, ':', then its value.
    Echo,
    /// This many bytes of 'x'.
    Fixed(usize),
}

/// Parses `echo` or `fixed:BYTES`.
pub fn parse_reply(s: &str) -> Result<Reply, String> {
    if s == "echo" {
        return Ok(Reply::Echo);
    }
    if let Some(n) = s.strip_prefix("fixed:") {
        return n
            .parse()
            .map(Reply::Fixed)
            .map_err(|_| format!("--reply {s:?}: {n:?} is not a byte count"));
    }
    Err(format!("--reply {s:?}: want \"echo\" or \"fixed:BYTES\""))
}

/// Protocol options both sides must agree on.
#[derive(Args, Clone, Debug)]
pub struct ProtoOpts {
    /// Compression of what this side sends: none, flate or snappy.
    #[arg(long, default_value = "flate", value_parser = parse_compression)]
    pub compress: Compression,
    /// DEFLATE level 0-9 with --compress flate (6: the reference's default; 1 is fastest).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9), value_name = "N")]
    pub flate_level: u32,
    /// Sniff header written first on each connection (both sides must use the same).
    #[arg(long, default_value = "")]
    pub sniff: String,
    /// Protocol version byte (both sides must use the same).
    #[arg(long, default_value_t = 0)]
    pub protocol_version: u8,
    /// Low latency: spin this long (at most 10ms) for expected bytes instead of letting the
    /// runtime's worker park, while a lone call is in flight (config `read_spin`; 0: off;
    /// default: the engine's, 50us).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub read_spin: Option<Duration>,
}

/// Client-side TLS options. Any of them turns TLS on.
#[derive(Args, Clone, Debug, Default)]
pub struct ClientTlsOpts {
    /// Use TLS. Without --tls-ca the system CA bundle ($SSL_CERT_FILE or
    /// /etc/ssl/certs/ca-certificates.crt) is trusted.
    #[arg(long)]
    pub tls: bool,
    /// PEM file of the CA certificates to trust (implies --tls).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Name to verify the server certificate against (default: the host of --addr).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Mutual TLS: our certificate chain, PEM (implies --tls; needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Mutual TLS: the private key of --tls-cert, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// DANGER, tests only: accept any server certificate (implies --tls).
    #[arg(long)]
    pub insecure_skip_verify: bool,
}

impl ClientTlsOpts {
    /// True when any TLS option was given.
    pub fn enabled(&self) -> bool {
        self.tls || self.tls_ca.is_some() || self.tls_cert.is_some() || self.insecure_skip_verify
    }

    /// The engine's TLS configuration, or `None` for plaintext.
    pub fn config(&self) -> Result<Option<TlsClientConfig>, Error> {
        if !self.enabled() {
            return Ok(None);
        }
        let ca = match (&self.tls_ca, self.insecure_skip_verify) {
            (Some(p), _) => Some(p.clone()),
            (None, true) => None,
            (None, false) => Some(system_ca_bundle().ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    "--tls needs --tls-ca FILE: no system CA bundle found (set SSL_CERT_FILE or \
                     pass --tls-ca)",
                )
            })?),
        };
        let mut cfg = TlsClientConfig::from_files(
            ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
        )?;
        cfg.server_name = self.tls_server_name.clone();
        cfg.insecure_skip_verify_for_testing_only = self.insecure_skip_verify;
        Ok(Some(cfg))
    }
}

/// The system's CA bundle, if one is found.
fn system_ca_bundle() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SSL_CERT_FILE") {
        return Some(PathBuf::from(p));
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ]
    .iter()
    .map(Path::new)
    .find(|p| p.is_file())
    .map(Path::to_path_buf)
}

/// Server-side TLS options.
#[derive(Args, Clone, Debug, Default)]
pub struct ServerTlsOpts {
    /// Serve TLS with this certificate chain, PEM (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: require client certificates signed by these CAs, PEM. Implies
    /// --require-tls: clients that do not ask for TLS are refused.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Refuse clients that do not ask for TLS (otherwise they are served in plaintext;
    /// always on with --tls-client-ca).
    #[arg(long, requires = "tls_cert")]
    pub require_tls: bool,
}

impl ServerTlsOpts {
    /// The engine's TLS configuration, or `None` for plaintext only.
    pub fn config(&self) -> Result<Option<TlsServerConfig>, Error> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let mut cfg = TlsServerConfig::from_files(cert, key, self.tls_client_ca.as_deref())?;
        cfg.require_tls = self.require_tls || self.tls_client_ca.is_some();
        Ok(Some(cfg))
    }
}

/// A client configuration for `addr` with these options.
pub fn client_config(
    addr: &str,
    proto: &ProtoOpts,
    tls: &ClientTlsOpts,
) -> Result<ClientConfig, Error> {
    let mut cfg = ClientConfig::new(addr);
    cfg.compress_type = proto.compress;
    cfg.flate_level = proto.flate_level;
    cfg.sniff_header = proto.sniff.as_bytes().to_vec();
    cfg.protocol_version = proto.protocol_version;
    if let Some(d) = proto.read_spin {
        cfg.read_spin = d;
    }
    cfg.tls = tls.config()?;
    Ok(cfg)
}

/// A server configuration with these options.
pub fn server_config(proto: &ProtoOpts, tls: &ServerTlsOpts) -> Result<ServerConfig, Error> {
    let mut cfg = ServerConfig::default();
    cfg.compress_type = proto.compress;
    cfg.flate_level = proto.flate_level;
    cfg.sniff_header = proto.sniff.as_bytes().to_vec();
    cfg.protocol_version = proto.protocol_version;
    if let Some(d) = proto.read_spin {
        cfg.read_spin = d;
    }
    cfg.tls = tls.config()?;
    Ok(cfg)
}

/// User and system CPU seconds of this process (`RUSAGE_SELF`) or of its waited-for children
/// (`RUSAGE_CHILDREN`).
pub fn cpu_times(who: libc::c_int) -> (f64, f64) {
    // SAFETY: getrusage only writes the struct we pass; a zeroed rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    if rc != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

/// Builds a multi-thread runtime with `threads` workers.
///
/// Diagnostic: in a build with `RUSTFLAGS="--cfg tokio_unstable"`, setting
/// `FASTRPC_DISABLE_LIFO_SLOT=1` turns off tokio's LIFO slot (see cli/README.md: it decides
/// how many frames share a client flush).
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(threads.max(1)).enable_all();
    #[cfg(tokio_unstable)]
    if std::env::var_os("FASTRPC_DISABLE_LIFO_SLOT").is_some_and(|v| v == "1") {
        b.disable_lifo_slot();
    }
    b.build()
}

/// Prints `fastrpc CMD: <kind>: <message>` to stderr and returns the exit code of the kind.
pub fn fail(cmd: &str, e: &Error) -> i32 {
    eprintln!("fastrpc {cmd}: {}: {}", e.kind().as_str(), e.message());
    exit_code(e.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("500µs"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("2ms"), Ok(Duration::from_millis(2)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5parsecs").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn replies() {
        assert_eq!(parse_reply("echo"), Ok(Reply::Echo));
        assert_eq!(parse_reply("fixed:255"), Ok(Reply::Fixed(255)));
        assert!(parse_reply("fixed:x").is_err());
        assert!(parse_reply("nope").is_err());
    }

    #[test]
    fn codes_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            assert!(seen.insert(exit_code(k)), "{k:?}");
            assert!(exit_code(k) > 1);
        }
    }
}
