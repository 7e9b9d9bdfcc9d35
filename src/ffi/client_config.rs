//! `fastrpc_client_config_builder`: every client option, set one by one, then passed to
//! `fastrpc_client_new`. Durations are milliseconds (`_ms`) except the batch delay
//! (microseconds, `_us`); 0 means "no limit" for the read and write timeouts, as in the engine.

use std::ffi::c_char;
use std::time::Duration;

use super::{arg_mut, arg_out, arg_try, fastrpc_status, ffi_boundary, Castable};
use crate::config::ClientConfig;
use crate::tls::TlsClientConfig;
use crate::Compression;

/// Client options, filled by the `fastrpc_client_config_builder_set_*` functions (each
/// returns OK or INVALID_ARGUMENT, and the `_file` setters TLS when the file cannot be read;
/// each may be called from any thread, one at a time per
/// builder). Defaults are the reference's: flate compression, 1000 pending requests, no batch
/// delay, 64 KiB buffers, 1 MiB max frame size, 10 s request timeout, 3 s handshake timeout.
/// Created by `fastrpc_client_config_builder_new`, freed by
/// `fastrpc_client_config_builder_free`; `fastrpc_client_new` copies it, so it may be freed or
/// reused right after.
pub struct fastrpc_client_config_builder {
    _private: [u8; 0],
}

/// Compression codes, as on the wire (note the odd numbering: 0 is the default).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum fastrpc_compression {
    /// Raw DEFLATE, sync-flushed per batch (the default).
    FASTRPC_COMPRESSION_FLATE = 0,
    /// No compression.
    FASTRPC_COMPRESSION_NONE = 1,
    /// Snappy framing format.
    FASTRPC_COMPRESSION_SNAPPY = 2,
}

/// A `fastrpc_compression` as C passes it: the header names the parameter's type
/// `fastrpc_compression` (cbindgen.toml renames this alias), while Rust reads the raw
/// `uint32_t`, so an out-of-range value is refused, never undefined behaviour.
pub type fastrpc_compression_arg = u32;

/// A `fastrpc_log_level` as C passes it (see `fastrpc_compression_arg`).
pub type fastrpc_log_level_arg = u32;

pub(crate) struct ClientBuilder {
    pub cfg: ClientConfig,
    /// Servers added with `fastrpc_client_config_builder_add_addr` (for
    /// `fastrpc_balanced_client_new`).
    pub addrs: Vec<String>,
    pub connections_per_server: usize,
    pub resolve_interval: Duration,
}

impl Castable for fastrpc_client_config_builder {
    type Rust = ClientBuilder;
}

pub(crate) fn parse_compression(code: u32) -> Result<Compression, fastrpc_status> {
    u8::try_from(code)
        .ok()
        .and_then(Compression::from_code)
        .ok_or_else(|| {
            super::invalid(&format!(
                "unknown compression {code} (0 flate, 1 none, 2 snappy)"
            ))
        })
}

fn tls(b: &mut ClientBuilder) -> &mut TlsClientConfig {
    b.cfg.tls.get_or_insert_with(TlsClientConfig::default)
}

/// Creates a builder with the default options. `*out` receives a new builder the caller owns
/// (free with `fastrpc_client_config_builder_free`). Returns OK or INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_new(
    out: *mut *mut fastrpc_client_config_builder,
) -> fastrpc_status {
    ffi_boundary!({
        arg_out!(out);
        unsafe {
            *out = super::into_raw(ClientBuilder {
                cfg: ClientConfig::default(),
                addrs: Vec::new(),
                connections_per_server: 1,
                resolve_interval: Duration::from_secs(30),
            })
        };
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Frees a builder (NULL is allowed and does nothing).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_free(builder: *mut fastrpc_client_config_builder) {
    super::boundary_or((), || drop(unsafe { super::from_raw(builder) }))
}

/// The server address: `host:port` or `unix:/path` (NUL-terminated UTF-8). Required.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, NULL or non-UTF-8 `addr`).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_addr(
    builder: *mut fastrpc_client_config_builder,
    addr: *const c_char,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.addr = arg_try!(unsafe { super::c_str(addr, "addr") }).to_string();
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Adds a server for `fastrpc_balanced_client_new`: `ip:port`, `unix:/path`, or `host:port`
/// for every address the host name resolves to (NUL-terminated UTF-8). May be called many
/// times; an address given with `fastrpc_client_config_builder_set_addr` is one of them too.
/// `fastrpc_client_new` ignores this list. Returns OK or INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_add_addr(
    builder: *mut fastrpc_client_config_builder,
    addr: *const c_char,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        let a = arg_try!(unsafe { super::c_str(addr, "addr") });
        if a.is_empty() {
            return super::invalid("`addr` is empty");
        }
        b.addrs.push(a.to_string());
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Connections per server of a balanced client, 1..=1024 (1 by default). Returns OK or
/// INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_connections_per_server(
    builder: *mut fastrpc_client_config_builder,
    n: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        if n == 0 || n > 1024 {
            return super::invalid("connections per server must be between 1 and 1024");
        }
        b.connections_per_server = n as usize;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// How often a balanced client resolves its host names again, in milliseconds (30000 by
/// default; 0: never after the first time). Returns OK or INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_resolve_interval_ms(
    builder: *mut fastrpc_client_config_builder,
    interval_ms: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.resolve_interval = Duration::from_millis(interval_ms as u64);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// The sniff header written first on each connection (`(NULL, 0)`: none).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_sniff_header(
    builder: *mut fastrpc_client_config_builder,
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
pub extern "C" fn fastrpc_client_config_builder_set_protocol_version(
    builder: *mut fastrpc_client_config_builder,
    version: u8,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.protocol_version = version;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Compression of requests: a `fastrpc_compression` value; anything else is INVALID_ARGUMENT.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, not a `fastrpc_compression` value).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_compression(
    builder: *mut fastrpc_client_config_builder,
    compression: fastrpc_compression_arg,
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
pub extern "C" fn fastrpc_client_config_builder_set_flate_level(
    builder: *mut fastrpc_client_config_builder,
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

/// Calls that may wait at once (1000 by default); must be at least 1.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0; above 16777216 is refused by `fastrpc_client_new`).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_max_pending_requests(
    builder: *mut fastrpc_client_config_builder,
    n: usize,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        if n == 0 {
            return super::invalid("max_pending_requests must be at least 1");
        }
        b.cfg.max_pending_requests = n;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Bytes of requests that may wait for the writer (32 MiB by default); a call or send that
/// would pass it fails at once with OVERFLOW (a request alone in the queue is always taken).
/// With a server that stops reading, the client holds at most this plus the batch being
/// written.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_max_queued_bytes(
    builder: *mut fastrpc_client_config_builder,
    n: usize,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        if n == 0 {
            return super::invalid("max_queued_bytes must be at least 1");
        }
        b.cfg.max_queued_bytes = n;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// At the pending limit, fail the oldest queued call instead of the new one.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_prioritize_new_requests(
    builder: *mut fastrpc_client_config_builder,
    on: bool,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.prioritize_new_requests = on;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Longest wait, in microseconds, for more requests to share a write (0 by default).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_max_batch_delay_us(
    builder: *mut fastrpc_client_config_builder,
    us: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.max_batch_delay = Duration::from_micros(us as u64);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Low-latency option (50 by default; 0 turns it off): while a lone call waits (one call in
/// flight), the connection's reader keeps its task runnable for up to `us` microseconds
/// waiting for its response instead of letting its worker thread park (waking a parked,
/// halted CPU of a VM takes tens of µs). It spends CPU only while a lone call waits, none
/// when idle or with more calls in flight. At most 10000 (10 ms).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `us` above 10000).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_read_spin_us(
    builder: *mut fastrpc_client_config_builder,
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

/// Whether the program reads the connection itself (false, the default: the library does).
/// With true, while calls are in flight no library thread waits for the socket's bytes: the program
/// waits on `fastrpc_client_read_fd` and calls `fastrpc_client_read_now` whenever it is
/// readable, for as long as any of its calls is in flight (a call no one reads for completes
/// at its deadline). Before a call goes out on a connection with none in flight, the library
/// reads what arrived meanwhile itself, so a connection the server closed while idle is
/// replaced before the call is written; it also watches for the server's close alone (not
/// for each arrival) and closes its side then, so an idle client does not keep a server's
/// graceful stop waiting. Saves a library thread's wakeup per arrival for
/// programs whose own thread waits on the socket (the Go binding). A balanced client
/// refuses it (INVALID_ARGUMENT from `fastrpc_balanced_client_new`).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_caller_reads(
    builder: *mut fastrpc_client_config_builder,
    on: bool,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.caller_reads = on;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Deadline of calls made with timeout 0 (10000 by default); must be more than 0.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `ms` 0).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_request_timeout_ms(
    builder: *mut fastrpc_client_config_builder,
    ms: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        if ms == 0 {
            return super::invalid("request timeout must be more than 0");
        }
        b.cfg.request_timeout = Duration::from_millis(ms as u64);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Longest time to read one whole response frame; also the idle lifetime (0: none).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_read_timeout_ms(
    builder: *mut fastrpc_client_config_builder,
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
pub extern "C" fn fastrpc_client_config_builder_set_write_timeout_ms(
    builder: *mut fastrpc_client_config_builder,
    ms: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        b.cfg.write_timeout = Duration::from_millis(ms as u64);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Socket read buffer size in bytes (64 KiB by default).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_read_buffer_size(
    builder: *mut fastrpc_client_config_builder,
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
pub extern "C" fn fastrpc_client_config_builder_set_write_buffer_size(
    builder: *mut fastrpc_client_config_builder,
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
pub extern "C" fn fastrpc_client_config_builder_set_max_frame_size(
    builder: *mut fastrpc_client_config_builder,
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
pub extern "C" fn fastrpc_client_config_builder_set_handshake_timeout_ms(
    builder: *mut fastrpc_client_config_builder,
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

/// Wait between connect attempts: starts at `min_ms`, doubles with jitter up to `max_ms` (20 and 1000 by default).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `min_ms` above `max_ms`).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_reconnect_backoff_ms(
    builder: *mut fastrpc_client_config_builder,
    min_ms: u32,
    max_ms: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        if min_ms > max_ms {
            return super::invalid("reconnect backoff: min_ms exceeds max_ms");
        }
        b.cfg.reconnect_backoff_min = Duration::from_millis(min_ms as u64);
        b.cfg.reconnect_backoff_max = Duration::from_millis(max_ms as u64);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Turns TLS on, trusting the CA certificates in `pem` (PEM bytes) to verify the server.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).; PEM that does not parse is TLS from `fastrpc_client_new`
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_tls_ca_pem(
    builder: *mut fastrpc_client_config_builder,
    pem: *const u8,
    len: usize,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        tls(b).ca_pem = Some(arg_try!(unsafe { super::bytes(pem, len, "pem") }).to_vec());
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Turns TLS on, trusting the CA certificates in the PEM file at `path`.
///
/// Returns OK, INVALID_ARGUMENT (NULL `builder`, NULL or non-UTF-8 `path`), or TLS (the file cannot be read).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_tls_ca_file(
    builder: *mut fastrpc_client_config_builder,
    path: *const c_char,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        let p = arg_try!(unsafe { super::c_str(path, "path") });
        match std::fs::read(p) {
            Ok(pem) => tls(b).ca_pem = Some(pem),
            Err(e) => {
                return super::fail(&crate::Error::new(
                    crate::ErrorKind::Tls,
                    format!("reading CA file {p}: {e}"),
                ))
            }
        }
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// The name the server's certificate must carry (default: the host of the address).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, NULL or non-UTF-8 `name`).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_tls_server_name(
    builder: *mut fastrpc_client_config_builder,
    name: *const c_char,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        tls(b).server_name = Some(arg_try!(unsafe { super::c_str(name, "name") }).to_string());
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Mutual TLS: the client's certificate chain and private key (PEM bytes).
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).; PEM that does not parse is TLS from `fastrpc_client_new`
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_tls_client_cert_pem(
    builder: *mut fastrpc_client_config_builder,
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
        t.client_cert_pem = Some(c);
        t.client_key_pem = Some(k);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// DANGEROUS, for tests and development only: turns TLS on and accepts any server certificate, so the connection is encrypted but the server is not authenticated.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `builder`).
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_tls_insecure_skip_verify_for_testing_only(
    builder: *mut fastrpc_client_config_builder,
    on: bool,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        tls(b).insecure_skip_verify_for_testing_only = on;
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Mutual TLS: the client's certificate chain and private key from PEM files (NUL-terminated
/// paths). Returns OK, INVALID_ARGUMENT, or TLS when a file cannot be read.
#[no_mangle]
pub extern "C" fn fastrpc_client_config_builder_set_tls_client_cert_files(
    builder: *mut fastrpc_client_config_builder,
    cert_path: *const c_char,
    key_path: *const c_char,
) -> fastrpc_status {
    ffi_boundary!({
        let b = arg_mut!(builder);
        let cert = arg_try!(read_pem_file(cert_path, "cert_path"));
        let key = arg_try!(read_pem_file(key_path, "key_path"));
        let t = tls(b);
        t.client_cert_pem = Some(cert);
        t.client_key_pem = Some(key);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Reads a whole PEM file named by a C string; a failure is TLS with the path in the message.
pub(crate) fn read_pem_file(path: *const c_char, what: &str) -> Result<Vec<u8>, fastrpc_status> {
    let p = unsafe { super::c_str(path, what) }?;
    std::fs::read(p).map_err(|e| {
        super::fail(&crate::Error::new(
            crate::ErrorKind::Tls,
            format!("reading {p}: {e}"),
        ))
    })
}
