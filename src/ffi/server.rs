//! `fastrpc_server`: listens on an address and serves each request with a C handler
//! callback, or puts it into a server queue for polling. Graceful stop with a timeout; free.

use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use super::client::{fastrpc_error_counts, fastrpc_io_stats};
use super::request::{self, fastrpc_request};
use super::server_config::fastrpc_server_config_builder;
use super::server_queue::fastrpc_server_queue;
use super::{arg_out, arg_ref, arg_try, fastrpc_status, ffi_boundary, not_forked, Castable};
use crate::server::{BlockingServer, Call, Handler};

/// A listening server. Created by `fastrpc_server_new` or `fastrpc_server_new_queued`;
/// `fastrpc_server_local_addr`, `fastrpc_server_get_stats`, `fastrpc_server_stop`;
/// freed by `fastrpc_server_free`.
pub struct fastrpc_server {
    _private: [u8; 0],
}

pub(crate) struct ServerHandle {
    server: BlockingServer,
    /// Handler callbacks running now: `fastrpc_server_free` waits for them to return, so the
    /// host may free the handler's userdata right after.
    active: Arc<Active>,
}

impl Castable for fastrpc_server {
    type Rust = ServerHandle;
}

/// Handles one request. `request` is owned by the handler: answer it with
/// `fastrpc_request_reply` (now, or later from any thread) and free it with
/// `fastrpc_request_free` (freeing it unanswered sends the error reply).
///
/// Rules: it runs on a library thread, inline on the connection's reader, possibly
/// concurrently for other connections: keep it short, or hand the request to another thread
/// and answer from there. It must not block on this server (no `fastrpc_server_stop`), must
/// not make blocking fastrpc calls (they return INVALID_ARGUMENT there), must not throw or
/// longjmp.
pub type fastrpc_handler =
    Option<unsafe extern "C" fn(userdata: *mut c_void, request: *mut fastrpc_request)>;

/// Handler callbacks of one server: how many run now, and whether the server was freed.
pub(crate) struct Active {
    running: AtomicUsize,
    freed: AtomicBool,
}

impl Active {
    fn new() -> Arc<Active> {
        Arc::new(Active {
            running: AtomicUsize::new(0),
            freed: AtomicBool::new(false),
        })
    }
}

thread_local! {
    /// The server whose handler this thread is running (its `Active` address), if any.
    static IN_HANDLER: Cell<usize> = const { Cell::new(0) };
}

struct CHandler {
    f: unsafe extern "C" fn(*mut c_void, *mut fastrpc_request),
    userdata: usize,
    active: Arc<Active>,
}

impl Handler for CHandler {
    fn handle(&self, call: Call) {
        // Counted before the freed check (and free sets freed before it counts), so a free
        // either sees this handler running or this handler sees the free.
        self.active.running.fetch_add(1, SeqCst);
        if self.active.freed.load(SeqCst) {
            self.active.running.fetch_sub(1, SeqCst);
            return; // `call` dropped: the error reply goes out.
        }
        let h = super::box_into_raw(request::wrap(call));
        let me = Arc::as_ptr(&self.active) as usize;
        let outer = IN_HANDLER.with(|c| c.replace(me));
        // SAFETY: the user promised `f` is a valid handler for `userdata`.
        unsafe { (self.f)(self.userdata as *mut c_void, h) }
        IN_HANDLER.with(|c| c.set(outer));
        self.active.running.fetch_sub(1, SeqCst);
    }
}

struct QueueHandler {
    queue: std::sync::Arc<super::server_queue::ServerQueue>,
}

impl Handler for QueueHandler {
    fn handle(&self, call: Call) {
        self.queue.push(request::wrap(call));
    }
}

fn start(
    builder: *const fastrpc_server_config_builder,
    addr: *const c_char,
    out: *mut *mut fastrpc_server,
    handler: impl Handler,
    active: Arc<Active>,
) -> fastrpc_status {
    let b = arg_ref!(builder);
    let addr = arg_try!(unsafe { super::c_str(addr, "addr") });
    arg_out!(out);
    let opening = super::global::Opening::new();
    match BlockingServer::bind(addr, b.cfg.clone(), handler) {
        Ok(server) => {
            unsafe { *out = super::into_raw(ServerHandle { server, active }) };
            opening.keep();
            fastrpc_status::FASTRPC_STATUS_OK
        }
        Err(e) => super::fail(&e),
    }
}

/// Listens on `addr` (`host:port`, port 0 for any free port, or `unix:/path`) with the
/// options in `builder` (copied) and serves every request with `handler(userdata,
/// request)`. `*out` receives the new server, owned by the caller (free with
/// `fastrpc_server_free`). Any thread but the library's own.
///
/// Returns OK, INVALID_ARGUMENT (NULL arguments, bad address or options, called from a
/// library thread), IO (cannot listen there) or TLS (unusable certificate or key).
#[no_mangle]
pub extern "C" fn fastrpc_server_new(
    builder: *const fastrpc_server_config_builder,
    addr: *const c_char,
    handler: fastrpc_handler,
    userdata: *mut c_void,
    out: *mut *mut fastrpc_server,
) -> fastrpc_status {
    ffi_boundary!({
        not_forked!();
        let Some(f) = handler else {
            return super::invalid("`handler` is NULL");
        };
        let active = Active::new();
        let handler = CHandler {
            f,
            userdata: userdata as usize,
            active: active.clone(),
        };
        start(builder, addr, out, handler, active)
    })
}

/// Like `fastrpc_server_new`, but each request goes into `queue`, to be taken with
/// `fastrpc_server_queue_poll`. The queue must outlive the server.
///
/// Returns OK, INVALID_ARGUMENT (NULL arguments, bad address or options, called from a
/// library thread), IO (cannot listen there) or TLS (unusable certificate or key).
#[no_mangle]
pub extern "C" fn fastrpc_server_new_queued(
    builder: *const fastrpc_server_config_builder,
    addr: *const c_char,
    queue: *const fastrpc_server_queue,
    out: *mut *mut fastrpc_server,
) -> fastrpc_status {
    ffi_boundary!({
        not_forked!();
        let q = arg_ref!(queue).queue.clone();
        start(builder, addr, out, QueueHandler { queue: q }, Active::new())
    })
}

/// Writes the bound address (`127.0.0.1:40123` with the real port, or `unix:/path`) into
/// `buf`, NUL-terminated; `*out_len` (when not NULL) receives its length. Returns OK,
/// BUFFER_TOO_SMALL (cut to fit) or INVALID_ARGUMENT (NULL `server`, NULL `buf` with `len`
/// > 0). `(NULL, 0)` measures: OK with the length in `*out_len`. Any thread.
#[no_mangle]
pub extern "C" fn fastrpc_server_local_addr(
    server: *const fastrpc_server,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> fastrpc_status {
    ffi_boundary!({
        let s = arg_ref!(server);
        unsafe { super::write_text(&s.server.local_addr(), buf, len, out_len) }
    })
}

/// A server's counters, from `fastrpc_server_get_stats`. Set `struct_size` to
/// `sizeof(fastrpc_server_stats)` before the call: later versions append fields, and the
/// library fills only what both it and the caller's header know.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct fastrpc_server_stats {
    /// Set by the caller to `sizeof(fastrpc_server_stats)`; on return, the bytes written.
    pub struct_size: usize,
    /// Requests that want a response.
    pub requests: u64,
    /// Fire-and-forget requests.
    pub nowait_requests: u64,
    /// Responses queued for sending.
    pub responses: u64,
    /// Requests answered with the concurrency-limit reply.
    pub concurrency_limit_replies: u64,
    /// Handlers that panicked (Rust handlers only).
    pub handler_panics: u64,
    /// Requests freed unanswered (each got the error reply).
    pub unanswered: u64,
    /// Handlers running now.
    pub running: u64,
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections that failed their handshake.
    pub handshake_failures: u64,
    /// Connection failures by kind.
    pub errors: fastrpc_error_counts,
    /// Traffic.
    pub io: fastrpc_io_stats,
    /// Batches a lone reply wrote on the replying thread (a reply made on a
    /// host thread with nothing else outstanding on its connection writes itself instead of
    /// waking the library's writer).
    pub lone_writes: u64,
}

unsafe impl super::Sized_ for fastrpc_server_stats {
    fn set_size(&mut self, n: usize) {
        self.struct_size = n;
    }
}

/// Writes a snapshot of the server's counters into `*out`, whose `struct_size` the caller
/// set (see `fastrpc_server_stats`). Any thread. Returns OK or INVALID_ARGUMENT (NULL
/// `server` or `out`, `out->struct_size` not set).
#[no_mangle]
pub extern "C" fn fastrpc_server_get_stats(
    server: *const fastrpc_server,
    out: *mut fastrpc_server_stats,
) -> fastrpc_status {
    ffi_boundary!({
        let s = arg_ref!(server).server.stats();
        arg_out!(out);
        let v = fastrpc_server_stats {
            struct_size: 0,
            requests: s.requests,
            nowait_requests: s.nowait_requests,
            responses: s.responses,
            concurrency_limit_replies: s.concurrency_limit_replies,
            handler_panics: s.handler_panics,
            unanswered: s.unanswered,
            running: s.running,
            connections_accepted: s.connections_accepted,
            connections_open: s.connections_open,
            handshake_failures: s.handshake_failures,
            errors: s.errors.into(),
            io: s.io.into(),
            lone_writes: s.lone_writes,
        };
        unsafe { super::write_sized(out, v, "fastrpc_server_stats") }
    })
}

/// Stops gracefully: stops accepting and reading requests, waits up to `timeout_ms` for
/// running handlers to answer and their responses to be flushed, then closes every
/// connection. Stopping twice is fine. Any thread but the library's own (not from a handler),
/// and not at the same time as `fastrpc_server_free`.
///
/// Returns OK, TIMEOUT (connections still busy after the timeout were closed at once), or
/// INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_server_stop(
    server: *mut fastrpc_server,
    timeout_ms: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let s = arg_ref!(server);
        match s.server.stop(Duration::from_millis(timeout_ms as u64)) {
            Ok(()) => fastrpc_status::FASTRPC_STATUS_OK,
            Err(e) => super::fail(&e),
        }
    })
}

/// Stops at once (no draining) and frees the server. NULL is allowed. It returns after every
/// handler callback of this server that was running has returned (later requests are not
/// handed to the handler), so the handler's userdata may be freed right after. Requests the
/// handlers kept stay valid; their replies are dropped (reply returns CLOSED). Any thread;
/// from inside one of this server's own handlers it does not wait for that handler.
/// Address and counters stay readable after `fastrpc_server_stop`, until this.
#[no_mangle]
pub extern "C" fn fastrpc_server_free(server: *mut fastrpc_server) {
    super::boundary_or((), || {
        let Some(h) = (unsafe { super::from_raw(server) }) else {
            return;
        };
        let active = h.active.clone();
        active.freed.store(true, SeqCst);
        drop(h);
        let me = Arc::as_ptr(&active) as usize;
        // Inside one of this server's handlers, that handler itself is still running.
        let own = usize::from(IN_HANDLER.with(|c| c.get()) == me);
        while active.running.load(SeqCst) > own {
            std::thread::sleep(Duration::from_millis(1));
        }
        super::global::closed();
    })
}
