//! `fastrpc_response`: a call's outcome as C sees it: the response value, or the status and
//! message of the failure. Blocking callers reuse one; callbacks and completion queues hand
//! out objects from a pool, which `fastrpc_response_free` refills, so steady traffic
//! allocates nothing.

use super::pool::{Local, Pool};
use super::{arg_out, arg_ref, fastrpc_status, ffi_boundary, Castable};
use crate::error::Error;
use std::ffi::c_char;

/// A call's outcome: the response value on success, else the status and message of the
/// failure. Created by `fastrpc_response_new` (for blocking calls, reusable) or handed to
/// you by a callback or completion queue (yours to free). Freed by `fastrpc_response_free`.
/// Functions: `fastrpc_response_data`, `fastrpc_response_len`, `fastrpc_response_status`,
/// `fastrpc_response_error_message`.
pub struct fastrpc_response {
    _private: [u8; 0],
}

pub(crate) struct Response {
    pub status: fastrpc_status,
    pub value: Vec<u8>,
    pub error: Option<Error>,
}

impl Castable for fastrpc_response {
    type Rust = Response;
}

impl Response {
    pub(crate) fn new() -> Response {
        Response {
            status: fastrpc_status::FASTRPC_STATUS_OK,
            value: Vec::new(),
            error: None,
        }
    }

    pub(crate) fn set_ok(&mut self) {
        self.status = fastrpc_status::FASTRPC_STATUS_OK;
        self.error = None;
    }

    pub(crate) fn set_error(&mut self, e: &Error) {
        self.status = fastrpc_status::from_kind(e.kind());
        self.value.clear();
        self.error = Some(e.clone());
    }
}

const POOL_MAX: usize = 4096;
/// Keep pooled buffers small enough that the pool never pins much memory.
const POOL_KEEP_CAPACITY: usize = 64 * 1024;
/// Each thread keeps up to this many objects of its own in front of the shared pool, each
/// with at most [`LOCAL_KEEP_CAPACITY`] bytes of buffer (so at most 1 MiB per thread): a
/// callback that frees its response and starts the next call, on the library thread that
/// delivers the next one, takes no lock that other threads take.
const LOCAL_MAX: usize = 64;
const LOCAL_KEEP_CAPACITY: usize = 16 * 1024;

std::thread_local! {
    static LOCAL: Local<Response> = const { std::cell::RefCell::new(Vec::new()) };
}

static POOL: Pool<Response> = Pool::new(&LOCAL, POOL_MAX, LOCAL_MAX);

/// A response object from the pool (or a new one).
pub(crate) fn take() -> Box<Response> {
    POOL.take().unwrap_or_else(|| Box::new(Response::new()))
}

/// Returns a response object to the pool.
pub(crate) fn give_back(mut r: Box<Response>) {
    if r.value.capacity() > POOL_KEEP_CAPACITY {
        r.value = Vec::new();
    }
    r.value.clear();
    r.error = None;
    let small = r.value.capacity() <= LOCAL_KEEP_CAPACITY;
    POOL.put(r, small);
}

/// Creates an empty response object, for `fastrpc_client_call`. Reuse it across calls: its
/// buffer keeps its capacity, so a warm caller allocates nothing per call. On success
/// `*out` receives a new object that the caller owns and frees with
/// `fastrpc_response_free`. Any thread. Returns OK or INVALID_ARGUMENT (`out` NULL).
#[no_mangle]
pub extern "C" fn fastrpc_response_new(out: *mut *mut fastrpc_response) -> fastrpc_status {
    ffi_boundary!({
        arg_out!(out);
        unsafe { *out = super::box_into_raw(take()) };
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Frees a response object (NULL is allowed and does nothing). After this the pointer and
/// any data pointer obtained from it are invalid. Any thread, including inside callbacks.
#[no_mangle]
pub extern "C" fn fastrpc_response_free(resp: *mut fastrpc_response) {
    super::boundary_or((), || {
        if let Some(r) = unsafe { super::from_raw(resp) } {
            give_back(r);
        }
    })
}

/// The response value's bytes, valid until the object is freed or reused by another call.
/// NULL when the value is empty or `resp` is NULL (see `fastrpc_response_len`).
#[no_mangle]
pub extern "C" fn fastrpc_response_data(resp: *const fastrpc_response) -> *const u8 {
    super::boundary_or(std::ptr::null(), || match unsafe { super::as_ref(resp) } {
        Some(r) if !r.value.is_empty() => r.value.as_ptr(),
        _ => std::ptr::null(),
    })
}

/// The response value's length in bytes (0 when `resp` is NULL or the call failed).
#[no_mangle]
pub extern "C" fn fastrpc_response_len(resp: *const fastrpc_response) -> usize {
    super::boundary_or(0, || {
        unsafe { super::as_ref(resp) }.map_or(0, |r| r.value.len())
    })
}

/// Returns the status of the call this object holds the outcome of: OK, or why it failed
/// (any status a call can end with: TIMEOUT, OVERFLOW, CONNECT, CONNECTION, CLOSED, PROTOCOL,
/// TLS, TOO_LARGE, INVALID_ARGUMENT, IO, PANIC); INVALID_ARGUMENT when `resp` is NULL.
#[no_mangle]
pub extern "C" fn fastrpc_response_status(resp: *const fastrpc_response) -> fastrpc_status {
    ffi_boundary!({
        let r = arg_ref!(resp);
        r.status
    })
}

/// The TLS detail of the failure this object holds (`FASTRPC_TLS_DETAIL_NONE` when the call
/// succeeded, failed for another reason, or `resp` is NULL). Any thread; never fails.
#[no_mangle]
pub extern "C" fn fastrpc_response_tls_detail(
    resp: *const fastrpc_response,
) -> super::status::fastrpc_tls_detail {
    super::boundary_or(
        super::status::fastrpc_tls_detail::FASTRPC_TLS_DETAIL_NONE,
        || {
            unsafe { super::as_ref(resp) }
                .and_then(|r| r.error.as_ref())
                .map_or(
                    super::status::fastrpc_tls_detail::FASTRPC_TLS_DETAIL_NONE,
                    |e| e.tls_detail().into(),
                )
        },
    )
}

/// Writes the message of the failure this object holds (which peer, which cause) into
/// `buf`, as `fastrpc_status_message` does; empty when the call succeeded.
///
/// Returns OK, BUFFER_TOO_SMALL (the text was cut; `*out_len` has its full length) or
/// INVALID_ARGUMENT (NULL `resp`, or NULL `buf` with `len` > 0). `(NULL, 0)` measures: OK
/// with the length in `*out_len`.
#[no_mangle]
pub extern "C" fn fastrpc_response_error_message(
    resp: *const fastrpc_response,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> fastrpc_status {
    ffi_boundary!({
        let r = arg_ref!(resp);
        let msg = r.error.as_ref().map(|e| e.to_string()).unwrap_or_default();
        unsafe { super::write_text(&msg, buf, len, out_len) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread gets back the objects it gave back (no lock, no allocation), at most
    /// LOCAL_MAX of them and none with a large buffer; the rest go to the shared pool.
    #[test]
    fn a_thread_reuses_its_own_objects_within_the_bounds() {
        std::thread::spawn(|| {
            let mut rs: Vec<Box<Response>> = (0..LOCAL_MAX + 8).map(|_| take()).collect();
            let addrs: Vec<usize> = rs
                .iter()
                .map(|r| &**r as *const Response as usize)
                .collect();
            for r in rs.iter_mut() {
                r.value.extend_from_slice(b"x");
            }
            for r in rs.drain(..) {
                give_back(r);
            }
            assert_eq!(POOL.local_len(), LOCAL_MAX);
            // Last in, first out: the thread's own, emptied.
            let again = take();
            assert_eq!(&*again as *const Response as usize, addrs[LOCAL_MAX - 1]);
            assert!(again.value.is_empty() && again.error.is_none());
            give_back(again);
            // A large buffer is not kept by the thread.
            let mut big = take();
            big.value.reserve(LOCAL_KEEP_CAPACITY + 1);
            let big_addr = &*big as *const Response as usize;
            give_back(big);
            LOCAL.with(|l| {
                let l = l.borrow();
                assert_eq!(l.len(), LOCAL_MAX - 1);
                assert!(l.iter().all(|r| r.value.capacity() <= LOCAL_KEEP_CAPACITY));
                assert!(l
                    .iter()
                    .all(|r| &**r as *const Response as usize != big_addr));
            });
        })
        .join()
        .unwrap();
    }
}
