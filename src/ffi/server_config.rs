//! `fastrpc_server_config_builder`: every server option, set one by one, then passed to
//! `fastrpc_server_new` or `fastrpc_server_new_queued`. Durations are milliseconds (`_ms`)
//! except the batch delay (microseconds, `_us`).

use std::ffi::c_char;
use std::time::Duration;

use super::client_config::parse_compression;
use super::{arg_mut, arg_out, arg_try, fastrpc_status, ffi_boundary, Castable};
use crate::config::ServerConfig;
use crate::tls::TlsServerConfig;

/// Server options, filled by the `fastrpc_server_config_builder_set_*` functions (each
/// returns OK or INVALID_ARGUMENT, and `tls_cert_files` TLS when a file cannot be read;
/// any thread, one at a time per builder). Defaults are the
/// reference's: flate compression, concurrency 10000, no batch delay, 64 KiB buffers, 1 MiB
/// max frame size, 3 s handshake timeout. Created by `fastrpc_server_config_builder_new`,
/// freed by `fastrpc_server_config_builder_free`; servers copy it.
pub struct fastrpc_server_config_builder {
    _private: [u8; 0],
}

pub(crate) struct ServerBuilder {
    pub cfg: ServerConfig,
}

impl Castable for fastrpc_server_config_builder {
    type Rust = ServerBuilder;
}

fn tls(b: &mut ServerBuilder) -> &mut TlsServerConfig {
    b.cfg.tls.get_or_insert_with(TlsServerConfig::default)
}

/// Creates a builder with the default options. `*out` receives a new builder the caller owns
/// (free with `fastrpc_server_config_builder_free`). Returns OK or INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_new(
    out: *mut *mut fastrpc_server_config_builder,
) -> fastrpc_status {
    ffi_boundary!({
        arg_out!(out);
        unsafe {
            *out = super::into_raw(ServerBuilder {
                cfg: ServerConfig::default(),
            })
        };
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Frees a builder (NULL is allowed and does nothing).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_free(builder: *mut fastrpc_server_config_builder) {
    super::boundary_or((), || drop(unsafe { super::from_raw(builder) }))
}

/// The sniff header expected first on each connection and written back (`(NULL, 0)`: none).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_sniff_header(
    builder: *mut fastrpc_server_config_builder,
    data: *const u8,
    len: usize,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.sniff_header = arg_try!(unsafe { super::bytes(data, len, "data") }).to_vec();
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// The protocol version byte (0 by default).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_protocol_version(
    builder: *mut fastrpc_server_config_builder,
    version: u8,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.protocol_version = version;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Compression of responses: a `fastrpc_compression` value; anything else is INVALID_ARGUMENT.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, not a `fastrpc_compression` value).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_compression(
    builder: *mut fastrpc_server_config_builder,
    compression: super::client_config::fastrpc_compression_arg,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.compress_type = arg_try!(parse_compression(compression));
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// DEFLATE level 0-9 (6 by default).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `level` above 9).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_flate_level(
    builder: *mut fastrpc_server_config_builder,
    level: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        if level > 9 {
            return super::invalid(&format!("flate level {level} is not between 0 and 9"));
        }
        b.cfg.flate_level = level;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Handlers that may run at once over all connections (10000 by default); at least 1.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_concurrency(
    builder: *mut fastrpc_server_config_builder,
    n: usize,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        if n == 0 {
            return super::invalid("concurrency must be at least 1");
        }
        b.cfg.concurrency = n;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// The response value sent at once, instead of running the handler, when `concurrency` handlers already run (empty by default).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_concurrency_limit_reply(
    builder: *mut fastrpc_server_config_builder,
    data: *const u8,
    len: usize,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.concurrency_limit_reply =
            arg_try!(unsafe { super::bytes(data, len, "data") }).to_vec();
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// The response value sent for a request freed unanswered (empty by default).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_error_reply(
    builder: *mut fastrpc_server_config_builder,
    data: *const u8,
    len: usize,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.error_reply = arg_try!(unsafe { super::bytes(data, len, "data") }).to_vec();
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Run each connection's requests one after another, in order.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_pipeline_requests(
    builder: *mut fastrpc_server_config_builder,
    on: bool,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.pipeline_requests = on;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Longest wait, in microseconds, for more responses to share a write (0 by default).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_max_batch_delay_us(
    builder: *mut fastrpc_server_config_builder,
    us: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.max_batch_delay = Duration::from_micros(us as u64);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Low-latency option (50 by default; 0 turns it off): after a read that brought a single
/// request, a connection's reader keeps its task runnable for up to `us` microseconds waiting
/// for the next one instead of letting its worker thread park. It spends CPU only while
/// requests come one at a time, none when idle. At most 10000 (10 ms).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `us` above 10000).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_read_spin_us(
    builder: *mut fastrpc_server_config_builder,
    us: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        if us > super::MAX_READ_SPIN_US {
            return super::invalid(&format!(
                "read spin {us} µs: it must be at most 10000 µs (10 ms)"
            ));
        }
        b.cfg.read_spin = Duration::from_micros(us as u64);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Longest time to read one whole request frame; also the idle lifetime (0: none).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_read_timeout_ms(
    builder: *mut fastrpc_server_config_builder,
    ms: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.read_timeout = Duration::from_millis(ms as u64);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Longest time to write one batch (0: none).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_write_timeout_ms(
    builder: *mut fastrpc_server_config_builder,
    ms: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.write_timeout = Duration::from_millis(ms as u64);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Close a connection with no request for this long and no request running (0, the
/// default: keep idle connections).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_idle_timeout_ms(
    builder: *mut fastrpc_server_config_builder,
    ms: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.idle_timeout = Duration::from_millis(ms as u64);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Socket read buffer size in bytes (64 KiB by default).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_read_buffer_size(
    builder: *mut fastrpc_server_config_builder,
    n: usize,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        if n == 0 {
            return super::invalid("read buffer size 0: it must be at least 1 byte");
        }
        b.cfg.read_buffer_size = n;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Write buffer size in bytes (64 KiB by default).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_write_buffer_size(
    builder: *mut fastrpc_server_config_builder,
    n: usize,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        if n == 0 {
            return super::invalid("write buffer size 0: it must be at least 1 byte");
        }
        b.cfg.write_buffer_size = n;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Largest name or value in bytes, both directions (1 MiB by default).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0 or above 4294967295).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_max_frame_size(
    builder: *mut fastrpc_server_config_builder,
    n: usize,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        if n == 0 || n > u32::MAX as usize {
            return super::invalid(&format!(
                "max_frame_size {n} is not between 1 and 4294967295 bytes"
            ));
        }
        b.cfg.max_frame_size = n;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Bound on the connection handshake, TLS included (3000 by default); more than 0.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `ms` 0).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_handshake_timeout_ms(
    builder: *mut fastrpc_server_config_builder,
    ms: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        if ms == 0 {
            return super::invalid("handshake timeout must be more than 0");
        }
        b.cfg.handshake_timeout = Duration::from_millis(ms as u64);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Turns TLS on with this certificate chain and private key (PEM bytes).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).; PEM that does not parse is TLS from `fastrpc_server_new`
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_tls_cert_pem(
    builder: *mut fastrpc_server_config_builder,
    cert: *const u8,
    cert_len: usize,
    key: *const u8,
    key_len: usize,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        let c = arg_try!(unsafe { super::bytes(cert, cert_len, "cert") }).to_vec();
        let k = arg_try!(unsafe { super::bytes(key, key_len, "key") }).to_vec();
        let t = tls(b);
        t.cert_pem = c;
        t.key_pem = k;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Turns TLS on with the certificate chain and private key in these PEM files.
///
/// Returns OK, INVALID_ARGUMENT (NULL `builder`, NULL or non-UTF-8 paths), or TLS (a file cannot be read).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_tls_cert_files(
    builder: *mut fastrpc_server_config_builder,
    cert_path: *const c_char,
    key_path: *const c_char,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        let p = arg_try!(unsafe { super::c_str(cert_path, "cert_path") });
        let cert = match std::fs::read(p) {
            Ok(d) => d,
            Err(e) => {
                return super::fail(&crate::Error::new(
                    crate::ErrorKind::Tls,
                    format!("reading {p}: {e}"),
                ))
            }
        };
        let p2 = arg_try!(unsafe { super::c_str(key_path, "key_path") });
        let key = match std::fs::read(p2) {
            Ok(d) => d,
            Err(e) => {
                return super::fail(&crate::Error::new(
                    crate::ErrorKind::Tls,
                    format!("reading {p2}: {e}"),
                ))
            }
        };
        let t = tls(b);
        t.cert_pem = cert;
        t.key_pem = key;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Mutual TLS: clients must present a certificate signed by one of these CAs (PEM bytes).
/// This also makes TLS required: a client that does not ask for TLS is refused (its
/// handshake is answered with TLS required, then the connection closes), whatever
/// `fastrpc_server_config_builder_set_require_tls` says. No setting serves plaintext while
/// asking for client certificates.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).; PEM that does not parse is TLS from `fastrpc_server_new`
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_tls_client_ca_pem(
    builder: *mut fastrpc_server_config_builder,
    pem: *const u8,
    len: usize,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        tls(b).client_ca_pem = Some(arg_try!(unsafe { super::bytes(pem, len, "pem") }).to_vec());
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Refuse plaintext clients (TLS must be configured too): they get a handshake answer saying
/// TLS is required, then the connection closes. With a client CA
/// (`fastrpc_server_config_builder_set_tls_client_ca_pem` or `_file`) plaintext clients are
/// refused even when this is off.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`).
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_require_tls(
    builder: *mut fastrpc_server_config_builder,
    on: bool,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        tls(b).require_tls = on;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Mutual TLS: clients must present a certificate signed by one of the CAs in this PEM file.
/// Like `fastrpc_server_config_builder_set_tls_client_ca_pem`, this makes TLS required.
/// Returns OK, INVALID_ARGUMENT, or TLS when the file cannot be read.
#[no_mangle]
pub extern "C" fn fastrpc_server_config_builder_set_tls_client_ca_file(
    builder: *mut fastrpc_server_config_builder,
    path: *const c_char,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        let pem = arg_try!(super::client_config::read_pem_file(path, "path"));
        tls(b).client_ca_pem = Some(pem);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}
