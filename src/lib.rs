//! # fastrpc
//!
//! Fast RPC over one connection: many concurrent calls multiplexed on one TCP (or Unix)
//! connection with out-of-order responses, batched into few writes, compressed (flate or
//! snappy) and optionally encrypted (TLS, through rustls), with no memory allocation per call
//! once warm (with TLS, rustls allocates one buffer per record).
//! The wire format is that of the Go library valyala/fastrpc with its `tlv` messages
//! (`docs/PROTOCOL.md`): our client talks to its servers and our server to its clients.
//!
//! ```no_run
//! use fastrpc::{Client, ClientConfig, Server, ServerConfig, Call};
//!
//! # async fn demo() -> Result<(), fastrpc::Error> {
//! let server = Server::bind("127.0.0.1:0", ServerConfig::default(), |call: Call| {
//!     let mut v = call.name().to_vec();
//!     v.extend_from_slice(call.value());
//!     let _ = call.reply(&v);
//! })
//! .await?;
//! let client = Client::new(ClientConfig::new(server.local_addr()))?;
//! assert_eq!(client.call(b"foo", b"bar").await?, b"foobar");
//! # Ok(()) }
//! ```
//!
//! * [`Client`]: async calls ([`Client::call`], and [`Client::call_into`] which reuses the
//!   caller's buffer), completion sinks ([`Client::submit`]), fire-and-forget
//!   ([`Client::send`]), [`Client::close`] that drains or cancels. [`BlockingClient`] is the
//!   same for plain threads.
//! * [`Server`]: a [`Handler`] gets each request as a [`Call`] and answers it once, at once or
//!   later from any thread. [`BlockingServer`] runs on the library's own runtime.
//! * [`ClientConfig`] and [`ServerConfig`] carry the reference's options under its names and
//!   defaults; [`Error`] has an [`ErrorKind`] per failure.
#![warn(missing_docs)]

pub mod balance;
pub mod client;
pub mod compress;
pub mod config;
mod delay;
pub mod error;
pub mod ffi;
#[doc(hidden)]
pub mod guard;
pub mod log;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod tls;
mod tls_stream;
pub mod transport;
mod wire;
mod x509;

pub use balance::{
    BackendState, BackendStats, BalancedClient, BalancedConfig, BalancedStats, Endpoint, Resolve,
};
pub use client::{BlockingClient, CallId, Client, ClientStats, CloseMode, Completion};
pub use compress::Compression;
pub use config::{ClientConfig, ServerConfig};
pub use error::{Error, ErrorKind, Result, TlsDetail};
pub use server::{BlockingServer, Call, Handler, Server, ServerStats};
pub use stats::{ErrorCounts, IoStats};
pub use tls::{TlsClientConfig, TlsServerConfig};
