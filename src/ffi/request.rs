//! `fastrpc_request`: one request handed to a C handler or taken from a server queue. It is
//! answered once with `fastrpc_request_reply` (a second answer is refused) and freed with
//! `fastrpc_request_free`; freed unanswered, the configured error reply is sent. Handles come
//! from a pool, so steady traffic allocates nothing for them.

use super::pool::{Local, Pool};
use super::{arg_mut, arg_out, arg_ref, arg_try, fastrpc_status, ffi_boundary, Castable};
use crate::server::Call;

/// A request being served. Owned by whoever received it (the handler callback or the caller
/// of `fastrpc_server_queue_poll`), who answers it with `fastrpc_request_reply` (now or later,
/// from any thread) and frees it with `fastrpc_request_free`. Functions:
/// `fastrpc_request_name`, `fastrpc_request_value`, `fastrpc_request_id`,
/// `fastrpc_request_reply`, `fastrpc_request_free`.
pub struct fastrpc_request {
    _private: [u8; 0],
}

pub(crate) struct RequestHandle {
    pub call: Option<Call>,
}

impl Castable for fastrpc_request {
    type Rust = RequestHandle;
}

const POOL_MAX: usize = 4096;
/// Handles each thread keeps of its own (a handler that frees its request on the library
/// thread that hands out the next one takes no shared lock).
const LOCAL_MAX: usize = 64;

std::thread_local! {
    static LOCAL: Local<RequestHandle> = const { std::cell::RefCell::new(Vec::new()) };
}

static POOL: Pool<RequestHandle> = Pool::new(&LOCAL, POOL_MAX, LOCAL_MAX);

/// Wraps a call in a pooled handle.
pub(crate) fn wrap(call: Call) -> Box<RequestHandle> {
    match POOL.take() {
        Some(mut h) => {
            h.call = Some(call);
            h
        }
        None => Box::new(RequestHandle { call: Some(call) }),
    }
}

/// Answers (with the error reply, if still unanswered) and returns the handle to the pool.
pub(crate) fn release(mut h: Box<RequestHandle>) {
    drop(h.call.take());
    POOL.put(h, true);
}

/// A view's pointer: NULL for an empty slice, whose own pointer need not point anywhere
/// (Rust's is dangling, 0x1), which a cgo program may not hold in a pointer variable.
fn view_ptr(b: &[u8]) -> *const u8 {
    if b.is_empty() {
        std::ptr::null()
    } else {
        b.as_ptr()
    }
}

/// Points `*data`/`*len` at the request's name (`(NULL, 0)` when empty). Valid until the
/// request is answered or freed, whichever comes first. Returns OK, ALREADY_ANSWERED (name no
/// longer available) or INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_request_name(
    request: *const fastrpc_request,
    data: *mut *const u8,
    len: *mut usize,
) -> fastrpc_status {
    ffi_boundary!({
        let r = arg_ref!(request);
        arg_out!(data);
        arg_out!(len);
        let Some(c) = &r.call else {
            return answered();
        };
        unsafe {
            *data = view_ptr(c.name());
            *len = c.name().len();
        }
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Points `*data`/`*len` at the request's value (`(NULL, 0)` when empty). Valid until the
/// request is answered or freed, whichever comes first. Returns OK, ALREADY_ANSWERED or
/// INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_request_value(
    request: *const fastrpc_request,
    data: *mut *const u8,
    len: *mut usize,
) -> fastrpc_status {
    ffi_boundary!({
        let r = arg_ref!(request);
        arg_out!(data);
        arg_out!(len);
        let Some(c) = &r.call else {
            return answered();
        };
        unsafe {
            *data = view_ptr(c.value());
            *len = c.value().len();
        }
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// The request id (0 for a fire-and-forget request, whose reply is not sent; also 0 when
/// `request` is NULL or already answered, so 0 is ambiguous: prefer
/// `fastrpc_request_get_id`, which tells those apart).
#[no_mangle]
pub extern "C" fn fastrpc_request_id(request: *const fastrpc_request) -> u32 {
    super::boundary_or(0, || {
        unsafe { super::as_ref(request) }
            .and_then(|r| r.call.as_ref())
            .map_or(0, |c| c.request_id())
    })
}

fn answered() -> fastrpc_status {
    super::set_last_error("fastrpc: the request was already answered");
    fastrpc_status::FASTRPC_STATUS_ALREADY_ANSWERED
}

/// Answers the request with `value` (copied before this returns). Once only: a second
/// answer returns ALREADY_ANSWERED and sends nothing. Any thread, at any time before
/// `fastrpc_request_free`. The name and value views of the request end here.
///
/// Returns OK; ALREADY_ANSWERED; TOO_LARGE (value over max_frame_size: the error reply was
/// sent instead, the request counts as answered); CLOSED (the connection is gone: the reply
/// was dropped, the request counts as answered); INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_request_reply(
    request: *mut fastrpc_request,
    value: *const u8,
    value_len: usize,
) -> fastrpc_status {
    ffi_boundary!({
        let r = arg_mut!(request);
        let v = arg_try!(unsafe { super::bytes(value, value_len, "value") });
        let Some(c) = r.call.take() else {
            return answered();
        };
        match c.reply(v) {
            Ok(()) => fastrpc_status::FASTRPC_STATUS_OK,
            Err(e) => super::fail(&e),
        }
    })
}

/// Frees the request (NULL is allowed). If it was not answered, the server's error reply is
/// sent (see `fastrpc_server_config_builder_set_error_reply`), so the client never waits
/// forever. Any thread. The pointer is invalid afterwards.
#[no_mangle]
pub extern "C" fn fastrpc_request_free(request: *mut fastrpc_request) {
    super::boundary_or((), || {
        if let Some(h) = unsafe { super::from_raw(request) } {
            release(h);
        }
    })
}

/// Writes the request id into `*id`: 0 means exactly a fire-and-forget request (its reply is
/// not sent), anything else a call that waits for its reply. Returns OK, ALREADY_ANSWERED
/// (the request was answered: `*id` is not written) or INVALID_ARGUMENT (NULL `request` or
/// `id`). Any thread.
#[no_mangle]
pub extern "C" fn fastrpc_request_get_id(
    request: *const fastrpc_request,
    id: *mut u32,
) -> fastrpc_status {
    ffi_boundary!({
        let r = arg_ref!(request);
        arg_out!(id);
        let Some(c) = &r.call else {
            return answered();
        };
        unsafe { *id = c.request_id() };
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Writes the client's address (`127.0.0.1:50123`, or `unix:...` for a Unix socket) into
/// `buf`, NUL-terminated, as `fastrpc_status_message` does. Returns OK, BUFFER_TOO_SMALL
/// (cut; `*out_len` has the full length), ALREADY_ANSWERED or INVALID_ARGUMENT (NULL
/// `request`, NULL `buf` with `len` > 0). `(NULL, 0)` measures. Any thread.
#[no_mangle]
pub extern "C" fn fastrpc_request_peer_addr(
    request: *const fastrpc_request,
    buf: *mut std::ffi::c_char,
    len: usize,
    out_len: *mut usize,
) -> fastrpc_status {
    ffi_boundary!({
        let r = arg_ref!(request);
        let Some(c) = &r.call else {
            return answered();
        };
        unsafe { super::write_text(c.peer_addr(), buf, len, out_len) }
    })
}

/// Writes into `*tls` whether the request came over TLS. Returns OK, ALREADY_ANSWERED or
/// INVALID_ARGUMENT (NULL `request` or `tls`). Any thread.
#[no_mangle]
pub extern "C" fn fastrpc_request_is_tls(
    request: *const fastrpc_request,
    tls: *mut bool,
) -> fastrpc_status {
    ffi_boundary!({
        let r = arg_ref!(request);
        arg_out!(tls);
        let Some(c) = &r.call else {
            return answered();
        };
        unsafe { *tls = c.is_tls() };
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Points `*data`/`*len` at the client's certificate (DER), which the server verified
/// against its client CAs (mutual TLS); `(NULL, 0)` when the client presented none (plaintext,
/// or TLS without client certificates). Valid until the request is answered or freed.
/// Returns OK, ALREADY_ANSWERED or INVALID_ARGUMENT (NULL arguments). Any thread.
#[no_mangle]
pub extern "C" fn fastrpc_request_peer_certificate(
    request: *const fastrpc_request,
    data: *mut *const u8,
    len: *mut usize,
) -> fastrpc_status {
    ffi_boundary!({
        let r = arg_ref!(request);
        arg_out!(data);
        arg_out!(len);
        let Some(c) = &r.call else {
            return answered();
        };
        let cert = c.peer_certificate();
        unsafe {
            *data = cert.map_or(std::ptr::null(), |d| d.as_ptr());
            *len = cert.map_or(0, |d| d.len());
        }
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Writes the client certificate's subject as text (`CN=client,O=Example`; CN, C, L, ST, O,
/// OU and serialNumber, in certificate order) into `buf`, as `fastrpc_status_message` does;
/// empty without a client certificate. Returns OK, BUFFER_TOO_SMALL, ALREADY_ANSWERED or
/// INVALID_ARGUMENT. `(NULL, 0)` measures. Any thread.
#[no_mangle]
pub extern "C" fn fastrpc_request_peer_subject(
    request: *const fastrpc_request,
    buf: *mut std::ffi::c_char,
    len: usize,
    out_len: *mut usize,
) -> fastrpc_status {
    ffi_boundary!({
        let r = arg_ref!(request);
        let Some(c) = &r.call else {
            return answered();
        };
        let text = c.peer_subject().unwrap_or_default();
        unsafe { super::write_text(&text, buf, len, out_len) }
    })
}

/// Writes the client certificate's subject alternative names as text
/// (`DNS:host,IP:10.0.0.1,email:a@b,URI:spiffe://...`) into `buf`, as
/// `fastrpc_status_message` does; empty without a client certificate or without SANs.
/// Returns OK, BUFFER_TOO_SMALL, ALREADY_ANSWERED or INVALID_ARGUMENT. `(NULL, 0)`
/// measures. Any thread.
#[no_mangle]
pub extern "C" fn fastrpc_request_peer_subject_alt_names(
    request: *const fastrpc_request,
    buf: *mut std::ffi::c_char,
    len: usize,
    out_len: *mut usize,
) -> fastrpc_status {
    ffi_boundary!({
        let r = arg_ref!(request);
        let Some(c) = &r.call else {
            return answered();
        };
        let text = c.peer_subject_alt_names().unwrap_or_default();
        unsafe { super::write_text(&text, buf, len, out_len) }
    })
}
