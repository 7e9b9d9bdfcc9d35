//! Turning the configured addresses into the set of servers: the [`Resolve`] trait (which a
//! program or a test may supply) and the default, which looks host names up in the system
//! resolver (DNS, /etc/hosts) and keeps IP addresses and `unix:` paths as they are.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::error::{Error, ErrorKind};

/// One server to connect to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `ip:port`, `host:port` or `unix:/path`.
    pub addr: String,
    /// The name to verify the server's TLS certificate against when `addr` is an IP address
    /// that a host name resolved to (the template's `TlsClientConfig::server_name`, if set,
    /// wins). `None`: the host part of `addr`.
    pub tls_name: Option<String>,
}

impl From<String> for Endpoint {
    fn from(addr: String) -> Endpoint {
        Endpoint {
            addr,
            tls_name: None,
        }
    }
}

impl From<&str> for Endpoint {
    fn from(addr: &str) -> Endpoint {
        Endpoint::from(addr.to_string())
    }
}

/// Produces the current set of servers. Called once when the balanced client is made and
/// then every `resolve_interval`, on a blocking thread (it may block, as DNS lookups do).
/// An `Err` keeps the previous set.
pub trait Resolve: Send + Sync + 'static {
    /// The servers now, in any order; duplicates are ignored.
    fn resolve(&self) -> Result<Vec<Endpoint>, Error>;
}

impl<F> Resolve for F
where
    F: Fn() -> Result<Vec<Endpoint>, Error> + Send + Sync + 'static,
{
    fn resolve(&self) -> Result<Vec<Endpoint>, Error> {
        self()
    }
}

/// The default resolver: every address of each host name, in the order the system gives.
pub(crate) struct SystemResolver {
    pub addrs: Vec<String>,
}

impl Resolve for SystemResolver {
    fn resolve(&self) -> Result<Vec<Endpoint>, Error> {
        let mut out = Vec::new();
        for a in &self.addrs {
            if a.starts_with("unix:") || a.parse::<SocketAddr>().is_ok() {
                out.push(Endpoint::from(a.as_str()));
                continue;
            }
            let host = match a.rsplit_once(':') {
                Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
                None => {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!("address {a:?} has no port (want host:port or unix:/path)"),
                    ))
                }
            };
            let resolved = a
                .to_socket_addrs()
                .map_err(|e| Error::new(ErrorKind::Connect, format!("cannot resolve {a}: {e}")))?;
            for sa in resolved {
                out.push(Endpoint {
                    addr: sa.to_string(),
                    tls_name: Some(host.to_string()),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_ips_and_paths_and_expands_names() {
        let r = SystemResolver {
            addrs: vec![
                "127.0.0.1:1".into(),
                "unix:/tmp/x".into(),
                "localhost:7".into(),
            ],
        };
        let got = r.resolve().unwrap();
        assert_eq!(got[0], Endpoint::from("127.0.0.1:1"));
        assert_eq!(got[1], Endpoint::from("unix:/tmp/x"));
        assert!(got.len() >= 3);
        for e in &got[2..] {
            assert!(e.addr.ends_with(":7"), "{e:?}");
            assert_eq!(e.tls_name.as_deref(), Some("localhost"));
        }
    }

    #[test]
    fn refuses_a_name_without_port() {
        let r = SystemResolver {
            addrs: vec!["localhost".into()],
        };
        assert_eq!(r.resolve().unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
}
