//! `fastrpc_status`: what every fallible C function returns. The values are explicit and
//! never change meaning; new ones are only ever added.

use std::ffi::c_char;

use crate::error::ErrorKind;

/// The outcome of a C API function. `FASTRPC_STATUS_OK` is 0; every other value is a
/// failure whose kind never changes meaning.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum fastrpc_status {
    /// Success.
    FASTRPC_STATUS_OK = 0,
    /// A deadline passed: the call's (queued or sent), or a read, write or handshake timeout.
    FASTRPC_STATUS_TIMEOUT = 1,
    /// `max_pending_requests` calls already wait (or this queued call made room for a newer
    /// one under `prioritize_new_requests`).
    FASTRPC_STATUS_OVERFLOW = 2,
    /// Connecting to the server failed: the dial failed, or the server hung up during the
    /// handshake (as a server does on a wrong sniff header or version); or the client is
    /// backing off after such a failure. A handshake that times out is TIMEOUT, one answered
    /// wrongly is PROTOCOL, a failed TLS handshake is TLS.
    FASTRPC_STATUS_CONNECT = 3,
    /// The connection failed while the call was in flight.
    FASTRPC_STATUS_CONNECTION = 4,
    /// The client, server or queue was closed.
    FASTRPC_STATUS_CLOSED = 5,
    /// The peer broke the protocol.
    FASTRPC_STATUS_PROTOCOL = 6,
    /// TLS failed (certificates, verification, handshake, TLS refused or required). The
    /// message names the problem in words: "the server's certificate has expired: ...", "is
    /// not valid for the name ...", "is not signed by a trusted CA ...", "the server requires a
    /// client certificate (mutual TLS) and none was sent", "the server requires TLS", ...
    FASTRPC_STATUS_TLS = 7,
    /// A name or value exceeds `max_frame_size`.
    FASTRPC_STATUS_TOO_LARGE = 8,
    /// An argument is NULL or invalid, or the call is not allowed here (for example a
    /// blocking call from inside a library callback).
    FASTRPC_STATUS_INVALID_ARGUMENT = 9,
    /// Another I/O failure (for example: cannot listen on the address).
    FASTRPC_STATUS_IO = 10,
    /// The library caught an internal panic; the process keeps running. Please report it.
    FASTRPC_STATUS_PANIC = 11,
    /// The request was already answered: a second answer is refused.
    FASTRPC_STATUS_ALREADY_ANSWERED = 12,
    /// The text did not fit in the caller's buffer: it was cut (still NUL-terminated) and the
    /// full length was written to `out_len`.
    FASTRPC_STATUS_BUFFER_TOO_SMALL = 13,
    /// The call was cancelled with `fastrpc_client_cancel` (the status its callback or
    /// completion carries).
    FASTRPC_STATUS_CANCELLED = 14,
}

impl fastrpc_status {
    /// The status for an engine error kind.
    pub fn from_kind(k: ErrorKind) -> fastrpc_status {
        use fastrpc_status::*;
        match k {
            ErrorKind::Timeout => FASTRPC_STATUS_TIMEOUT,
            ErrorKind::Overflow => FASTRPC_STATUS_OVERFLOW,
            ErrorKind::Connect => FASTRPC_STATUS_CONNECT,
            ErrorKind::Connection => FASTRPC_STATUS_CONNECTION,
            ErrorKind::Closed => FASTRPC_STATUS_CLOSED,
            ErrorKind::Protocol => FASTRPC_STATUS_PROTOCOL,
            ErrorKind::Tls => FASTRPC_STATUS_TLS,
            ErrorKind::TooLarge => FASTRPC_STATUS_TOO_LARGE,
            ErrorKind::InvalidArgument => FASTRPC_STATUS_INVALID_ARGUMENT,
            ErrorKind::Cancelled => FASTRPC_STATUS_CANCELLED,
            _ => FASTRPC_STATUS_IO,
        }
    }

    /// A fixed human message for a status value (any u32, known or not).
    pub fn message(code: u32) -> &'static str {
        match code {
            0 => "ok",
            1 => "timeout: the deadline passed before the response arrived",
            2 => "overflow: too many pending requests",
            3 => "cannot connect to the server",
            4 => "the connection failed while the call was in flight",
            5 => "closed",
            6 => "protocol error: the peer sent something the protocol does not allow",
            7 => "TLS error",
            8 => "too large: a name or value exceeds max_frame_size",
            9 => "invalid argument",
            10 => "I/O error",
            11 => "internal panic caught by the library (please report it)",
            12 => "the request was already answered",
            13 => "the buffer is too small",
            14 => "the call was cancelled",
            _ => "unknown status",
        }
    }
}

/// Writes a human message for `status` (any value, known or not) into `buf` of `len` bytes,
/// NUL-terminated. `*out_len` (when not NULL) receives the message's full length without the
/// NUL. The message is fixed per status; for the details of a particular failure (which
/// address, which TLS alert) see `fastrpc_last_error_message` and
/// `fastrpc_response_error_message`.
///
/// Returns OK, or BUFFER_TOO_SMALL when the message was cut to fit, or INVALID_ARGUMENT
/// when `buf` is NULL with a non-zero `len`. `(NULL, 0)` measures: OK with the length in
/// `*out_len`.
/// Any thread.
#[no_mangle]
pub extern "C" fn fastrpc_status_message(
    status: u32,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> fastrpc_status {
    super::ffi_boundary!({
        unsafe { super::write_text(fastrpc_status::message(status), buf, len, out_len) }
    })
}

/// Writes the details of the last failure returned to this thread by a fastrpc function
/// (for example "fastrpc connect: cannot connect to 127.0.0.1:1: Connection refused") into
/// `buf`, as `fastrpc_status_message` does. Empty when nothing failed on this thread yet.
///
/// Returns OK, BUFFER_TOO_SMALL (the text was cut; `*out_len` has its full length) or
/// INVALID_ARGUMENT (NULL `buf` with `len` > 0). `(NULL, 0)` measures: OK with the length
/// in `*out_len`.
#[no_mangle]
pub extern "C" fn fastrpc_last_error_message(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> fastrpc_status {
    super::ffi_boundary!({
        // Copied out first: write_text records its own error on a bad buffer.
        let msg = super::with_last_error(|m| m.to_string());
        unsafe { super::write_text(&msg, buf, len, out_len) }
    })
}

/// Which TLS problem a failure with status TLS (or CONNECT/CONNECTION caused by TLS) was, so
/// a program can tell them apart without reading the message. The values are explicit and
/// never change meaning; new ones are only ever added.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum fastrpc_tls_detail {
    /// Not a TLS failure, or no detail known.
    FASTRPC_TLS_DETAIL_NONE = 0,
    /// The peer's certificate is not signed by a trusted CA (also: self-signed).
    FASTRPC_TLS_DETAIL_UNKNOWN_CA = 1,
    /// The server's certificate is not valid for the name connected to.
    FASTRPC_TLS_DETAIL_NAME_MISMATCH = 2,
    /// The peer's certificate has expired.
    FASTRPC_TLS_DETAIL_EXPIRED = 3,
    /// The peer's certificate is not valid yet.
    FASTRPC_TLS_DETAIL_NOT_YET_VALID = 4,
    /// The peer's certificate is invalid in another way (purpose, signature, encoding).
    FASTRPC_TLS_DETAIL_BAD_CERTIFICATE = 5,
    /// A client certificate was required and none was presented.
    FASTRPC_TLS_DETAIL_NO_CLIENT_CERTIFICATE = 6,
    /// The peer refused our certificate (it sent a certificate alert).
    FASTRPC_TLS_DETAIL_PEER_REJECTED_CERTIFICATE = 7,
    /// The peer ended the handshake with another alert.
    FASTRPC_TLS_DETAIL_HANDSHAKE_ALERT = 8,
    /// Another TLS failure (a corrupt or forged record, a protocol violation).
    FASTRPC_TLS_DETAIL_OTHER = 9,
}

impl From<crate::error::TlsDetail> for fastrpc_tls_detail {
    fn from(d: crate::error::TlsDetail) -> Self {
        use crate::error::TlsDetail as D;
        use fastrpc_tls_detail::*;
        match d {
            D::None => FASTRPC_TLS_DETAIL_NONE,
            D::UnknownCa => FASTRPC_TLS_DETAIL_UNKNOWN_CA,
            D::NameMismatch => FASTRPC_TLS_DETAIL_NAME_MISMATCH,
            D::Expired => FASTRPC_TLS_DETAIL_EXPIRED,
            D::NotYetValid => FASTRPC_TLS_DETAIL_NOT_YET_VALID,
            D::BadCertificate => FASTRPC_TLS_DETAIL_BAD_CERTIFICATE,
            D::NoClientCertificate => FASTRPC_TLS_DETAIL_NO_CLIENT_CERTIFICATE,
            D::PeerRejectedCertificate => FASTRPC_TLS_DETAIL_PEER_REJECTED_CERTIFICATE,
            D::HandshakeAlert => FASTRPC_TLS_DETAIL_HANDSHAKE_ALERT,
            _ => FASTRPC_TLS_DETAIL_OTHER,
        }
    }
}

/// The TLS detail of the last failure returned to this thread by a fastrpc function
/// (`FASTRPC_TLS_DETAIL_NONE` when it was not a TLS failure, or nothing failed yet). Any
/// thread; never fails.
#[no_mangle]
pub extern "C" fn fastrpc_last_error_tls_detail() -> fastrpc_tls_detail {
    super::boundary_or(fastrpc_tls_detail::FASTRPC_TLS_DETAIL_NONE, || {
        super::last_tls_detail().into()
    })
}
