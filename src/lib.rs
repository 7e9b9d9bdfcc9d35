//! fastrpc: fast RPC over one connection, wire-compatible with valyala/fastrpc (tlv).
#![warn(missing_docs)]

pub mod compress;
pub mod error;
pub mod tls;

pub use compress::Compression;
pub use error::{Error, ErrorKind, Result};
