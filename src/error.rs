//! The one error type of the crate: a kind per failure and a message that says what happened.
//!
//! Errors on hot paths (timeout, overflow, closed) carry static messages so that producing
//! them allocates nothing; errors with details (which peer, which cause) share one `Arc<str>`
//! among every call they fail.

use std::fmt;
use std::io;
use std::sync::Arc;

/// What kind of failure an [`Error`] is. The values never change meaning; the C ABI maps
/// them one to one onto its status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The call's deadline passed, whether it was still queued or already sent; or a read,
    /// write or handshake timeout fired.
    Timeout,
    /// `max_pending_requests` calls are already waiting (or, with
    /// `prioritize_new_requests`, this queued call was failed to make room for a newer one).
    Overflow,
    /// Connecting to the server failed: dial, handshake, or the client is backing off after
    /// such a failure.
    Connect,
    /// The connection failed while the call was in flight; the message names the peer and
    /// the cause.
    Connection,
    /// The client or server was closed by its owner.
    Closed,
    /// The peer broke the protocol: wrong sniff header or version, unknown compression,
    /// corrupt compressed stream, malformed frame.
    Protocol,
    /// TLS failed: certificates, verification, handshake, or TLS asked of a plaintext peer.
    Tls,
    /// A name or value is larger than `max_frame_size`.
    TooLarge,
    /// An argument or a configuration value is invalid.
    InvalidArgument,
    /// Any other I/O failure.
    Io,
    /// The call was cancelled by its caller ([`crate::Client::cancel`]).
    Cancelled,
}

impl ErrorKind {
    /// A short lowercase name, stable, used in stats and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Overflow => "overflow",
            ErrorKind::Connect => "connect",
            ErrorKind::Connection => "connection",
            ErrorKind::Closed => "closed",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Tls => "tls",
            ErrorKind::TooLarge => "too large",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Io => "io",
            ErrorKind::Cancelled => "cancelled",
        }
    }

    /// All kinds, in the order of their index (see [`ErrorKind::index`]).
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::Timeout,
        ErrorKind::Overflow,
        ErrorKind::Connect,
        ErrorKind::Connection,
        ErrorKind::Closed,
        ErrorKind::Protocol,
        ErrorKind::Tls,
        ErrorKind::TooLarge,
        ErrorKind::InvalidArgument,
        ErrorKind::Io,
        ErrorKind::Cancelled,
    ];

    /// A dense index `0..ALL.len()`, for counting errors by kind.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// For a TLS failure: which problem it was, so a program can tell them apart without
/// reading the message. [`TlsDetail::None`] for every other error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsDetail {
    /// Not a TLS failure, or no detail known.
    #[default]
    None,
    /// The peer's certificate is not signed by a trusted CA (also: self-signed).
    UnknownCa,
    /// The server's certificate is not valid for the name connected to.
    NameMismatch,
    /// The peer's certificate has expired.
    Expired,
    /// The peer's certificate is not valid yet.
    NotYetValid,
    /// The peer's certificate is invalid in another way (purpose, signature, encoding, ...).
    BadCertificate,
    /// A client certificate was required and none was presented.
    NoClientCertificate,
    /// The peer refused our certificate (it sent a certificate alert).
    PeerRejectedCertificate,
    /// The peer ended the handshake with another alert.
    HandshakeAlert,
    /// Another TLS failure (a corrupt or forged record, a protocol violation, ...).
    Other,
}

#[derive(Clone)]
enum Message {
    Static(&'static str),
    Shared(Arc<str>),
}

/// An error from the engine: a [`ErrorKind`] and a message saying what went wrong.
///
/// Cloning is cheap (no allocation): one error is shared by every call it fails.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    tls: TlsDetail,
    msg: Message,
}

impl Error {
    /// An error with a fixed message (allocates nothing).
    pub const fn fixed(kind: ErrorKind, msg: &'static str) -> Error {
        Error {
            kind,
            tls: TlsDetail::None,
            msg: Message::Static(msg),
        }
    }

    /// An error with a message built at run time.
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Error {
        let s: String = msg.into();
        Error {
            kind,
            tls: TlsDetail::None,
            msg: Message::Shared(Arc::from(s)),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match &self.msg {
            Message::Static(s) => s,
            Message::Shared(s) => s,
        }
    }

    /// For a TLS failure, which problem it was ([`TlsDetail::None`] otherwise).
    pub fn tls_detail(&self) -> TlsDetail {
        self.tls
    }

    /// The same message with another kind.
    pub fn with_kind(&self, kind: ErrorKind) -> Error {
        Error {
            kind,
            tls: self.tls,
            msg: self.msg.clone(),
        }
    }

    /// This error's message prefixed by `context` (for example the peer's address).
    pub fn context(&self, context: &str) -> Error {
        self.rewrap(self.kind, format!("{context}: {}", self.message()))
    }

    /// A new kind and message that keep this error's TLS detail.
    pub(crate) fn rewrap(&self, kind: ErrorKind, msg: impl Into<String>) -> Error {
        let mut e = Error::new(kind, msg);
        e.tls = self.tls;
        e
    }

    /// The same error with a TLS detail.
    pub(crate) fn with_tls_detail(mut self, tls: TlsDetail) -> Error {
        self.tls = tls;
        self
    }

    pub(crate) fn timeout() -> Error {
        Error::fixed(
            ErrorKind::Timeout,
            "the call's deadline passed before its response arrived",
        )
    }

    pub(crate) fn overflow() -> Error {
        Error::fixed(
            ErrorKind::Overflow,
            "pending requests overflow: max_pending_requests calls are already waiting; raise \
             max_pending_requests (fastrpc_client_config_builder_set_max_pending_requests in \
             C), lower the request rate or speed up the server",
        )
    }

    pub(crate) fn overflow_displaced() -> Error {
        Error::fixed(
            ErrorKind::Overflow,
            "pending requests overflow: this queued call was failed to make room for a newer one \
             (prioritize_new_requests is set)",
        )
    }

    pub(crate) fn cancelled() -> Error {
        Error::fixed(ErrorKind::Cancelled, "the call was cancelled")
    }

    pub(crate) fn closed() -> Error {
        Error::fixed(ErrorKind::Closed, "the client was closed")
    }

    pub(crate) fn protocol(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::Protocol, msg)
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, msg)
    }

    /// Classifies an I/O error: invalid data is a protocol error, timeouts are timeouts,
    /// anything else keeps `kind`.
    pub(crate) fn from_io(e: &io::Error, kind: ErrorKind, what: &str) -> Error {
        let k = match e.kind() {
            io::ErrorKind::InvalidData => ErrorKind::Protocol,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => kind,
        };
        // rustls reports its failures as InvalidData with a rustls::Error inside.
        let (k, tls) = match e.get_ref() {
            Some(inner) => {
                if let Some(f) = inner.downcast_ref::<crate::tls::TlsFailure>() {
                    (ErrorKind::Tls, crate::tls::detail(&f.error))
                } else if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                    (ErrorKind::Tls, crate::tls::detail(r))
                } else {
                    (k, TlsDetail::None)
                }
            }
            None => (k, TlsDetail::None),
        };
        Error::new(k, format!("{what}: {e}")).with_tls_detail(tls)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fastrpc {}: {}", self.kind.as_str(), self.message())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message())
            .finish()
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let k = match e.kind {
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            ErrorKind::Protocol => io::ErrorKind::InvalidData,
            ErrorKind::InvalidArgument => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(k, e)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
