//! `fastrpc_client`: one connection's worth of concurrent calls, three ways to call:
//! blocking (`fastrpc_client_call`), callback (`fastrpc_client_call_async`) and completion
//! queue (`fastrpc_client_call_queued`), plus fire-and-forget, stats, close and free.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::client_config::fastrpc_client_config_builder;
use super::completion_queue::{self, fastrpc_completion_queue};
use super::response::{self, fastrpc_response};
use super::{
    arg_mut, arg_out, arg_ref, arg_try, fastrpc_status, ffi_boundary, not_forked, Castable,
};
use crate::client::{BlockingClient, CloseMode, Completion};
use crate::error::Error;
use crate::stats::{ErrorCounts, IoStats};

/// A client: many concurrent calls over one connection to one server, connected lazily on
/// the first call and reconnected after failures. Every function may be called from many
/// threads at once on one client. Created by `fastrpc_client_new`, freed by
/// `fastrpc_client_free`. Functions: `fastrpc_client_call`, `fastrpc_client_call_async`,
/// `fastrpc_client_call_queued`, `fastrpc_client_send`, `fastrpc_client_pending_requests`,
/// `fastrpc_client_get_stats`, `fastrpc_client_close`.
pub struct fastrpc_client {
    _private: [u8; 0],
}

pub(crate) struct ClientHandle {
    client: BlockingClient,
    callbacks: Arc<Callbacks>,
}

impl Castable for fastrpc_client {
    type Rust = ClientHandle;
}

/// Called once when a call made with `fastrpc_client_call_async` finishes.
///
/// - `userdata`: what was given with the call.
/// - `status`: OK or why the call failed.
/// - `response`: the outcome (value, or error message); owned by the callback, which must
///   free it with `fastrpc_response_free` now or later, from any thread.
///
/// Rules: it runs on a library thread, possibly concurrently with other callbacks; keep it
/// short (it delays other responses of the connection); it must not block, and must not make
/// a blocking call (`fastrpc_client_call`, `fastrpc_completion_queue_poll`,
/// `fastrpc_server_queue_poll`): such a call returns INVALID_ARGUMENT there. It may start new
/// async or queued calls, and may close or free the client. It must not throw or longjmp.
pub type fastrpc_call_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        status: fastrpc_status,
        response: *mut fastrpc_response,
    ),
>;

/// Runs one client's C callbacks (the tag carries the function pointer and the userdata),
/// and counts the calls whose callback has not yet returned, so that `fastrpc_client_free`
/// can wait for them: after it returns, no callback of that client runs.
pub(super) struct Callbacks {
    /// Calls submitted with a callback whose callback has not returned yet.
    pub(super) live: AtomicUsize,
    /// Someone waits in `wait_idle` (so a completion that brings `live` to its mark takes the
    /// lock and notifies; otherwise completions touch no lock).
    waiting: AtomicBool,
    lock: Mutex<()>,
    idle: Condvar,
}

thread_local! {
    /// The `Callbacks` whose callback runs on this thread now (its address), if any.
    static RUNNING: Cell<usize> = const { Cell::new(0) };
}

impl Callbacks {
    pub(super) fn new() -> Arc<Callbacks> {
        Arc::new(Callbacks {
            live: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            lock: Mutex::new(()),
            idle: Condvar::new(),
        })
    }

    pub(super) fn finished(&self) {
        let left = self.live.fetch_sub(1, SeqCst) - 1;
        if left <= 1 && self.waiting.load(SeqCst) {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.idle.notify_all();
        }
    }

    /// Waits until every callback has returned, except the one running on this thread when
    /// it is one of this client's.
    pub(super) fn wait_idle(&self) {
        let own = RUNNING.with(|r| r.get()) == self as *const Callbacks as usize;
        let mark = usize::from(own);
        let wait = || {
            self.waiting.store(true, SeqCst);
            let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            while self.live.load(SeqCst) > mark {
                g = self
                    .idle
                    .wait_timeout(g, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        if self.live.load(SeqCst) <= mark {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            // On a library thread (inside a callback): let the runtime move its other work
            // to another thread while this one waits, so the callbacks waited for can run.
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }
}

impl Completion for Callbacks {
    fn complete(&self, tag: u128, result: Result<&[u8], &Error>) {
        let f = (tag >> 64) as usize;
        let userdata = tag as u64 as usize as *mut c_void;
        let mut r = response::take();
        match result {
            Ok(v) => {
                r.value.clear();
                r.value.extend_from_slice(v);
                r.set_ok();
            }
            Err(e) => r.set_error(e),
        }
        let status = r.status;
        // SAFETY: `f` was a non-NULL fastrpc_call_callback when the call was submitted.
        let cb: unsafe extern "C" fn(*mut c_void, fastrpc_status, *mut fastrpc_response) =
            unsafe { std::mem::transmute(f) };
        let outer = RUNNING.with(|c| c.replace(self as *const Callbacks as usize));
        unsafe { cb(userdata, status, super::box_into_raw(r)) };
        RUNNING.with(|c| c.set(outer));
        self.finished();
    }
}

fn timeout(client: &BlockingClient, timeout_ms: u32) -> Duration {
    if timeout_ms == 0 {
        client.client().config().request_timeout
    } else {
        Duration::from_millis(timeout_ms as u64)
    }
}

/// Creates a client from the options in `builder` (copied; the builder may be freed after).
/// Nothing connects until the first call. `*out` receives a new client the caller owns (free
/// with `fastrpc_client_free`). Any thread.
///
/// Returns OK, or INVALID_ARGUMENT (NULL arguments, no or a bad address, bad options), or
/// TLS (unusable certificates); details in `fastrpc_last_error_message`.
#[no_mangle]
pub extern "C" fn fastrpc_client_new(
    builder: *const fastrpc_client_config_builder,
    out: *mut *mut fastrpc_client,
) -> fastrpc_status {
    ffi_boundary!({
        not_forked!();
        let b = arg_ref!(builder);
        arg_out!(out);
        let opening = super::global::Opening::new();
        match BlockingClient::new(b.cfg.clone()) {
            Ok(client) => {
                let callbacks = Callbacks::new();
                unsafe { *out = super::into_raw(ClientHandle { client, callbacks }) };
                opening.keep();
                fastrpc_status::FASTRPC_STATUS_OK
            }
            Err(e) => super::fail(&e),
        }
    })
}

/// Calls `name` with `value` and waits for the outcome, at most `timeout_ms` (0: the
/// configured request timeout). The outcome goes into `response` (from
/// `fastrpc_response_new`, owned by the caller, reused across calls: a warm caller allocates
/// nothing per call): on OK its data is the response value; otherwise it holds the status and
/// the error message. Name and value are only read during the call. Any thread except the
/// library's own (inside a callback it returns INVALID_ARGUMENT).
///
/// Returns OK, TIMEOUT, OVERFLOW, CONNECT, CONNECTION, CLOSED, PROTOCOL, TLS, TOO_LARGE or
/// INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_client_call(
    client: *const fastrpc_client,
    name: *const u8,
    name_len: usize,
    value: *const u8,
    value_len: usize,
    timeout_ms: u32,
    response: *mut fastrpc_response,
) -> fastrpc_status {
    ffi_boundary!({
        not_forked!();
        let c = &arg_ref!(client).client;
        let r = arg_mut!(response);
        let name = arg_try!(unsafe { super::bytes(name, name_len, "name") });
        let value = arg_try!(unsafe { super::bytes(value, value_len, "value") });
        let t = timeout(c, timeout_ms);
        match c.call_timeout_into(name, value, t, &mut r.value) {
            Ok(()) => {
                r.set_ok();
                fastrpc_status::FASTRPC_STATUS_OK
            }
            Err(e) => {
                r.set_error(&e);
                super::fail(&e)
            }
        }
    })
}

/// Starts a call and returns at once; when it finishes, `callback(userdata, status,
/// response)` runs once on a library thread (see `fastrpc_call_callback` for its rules).
/// `timeout_ms` 0 means the configured request timeout. Name and value are copied before this
/// returns. Any thread, including inside callbacks.
///
/// Returns OK (the callback will run exactly once), or OVERFLOW, CONNECT, CLOSED, TOO_LARGE,
/// INVALID_ARGUMENT (NULL callback) — then the callback never runs.
#[no_mangle]
pub extern "C" fn fastrpc_client_call_async(
    client: *const fastrpc_client,
    name: *const u8,
    name_len: usize,
    value: *const u8,
    value_len: usize,
    timeout_ms: u32,
    callback: fastrpc_call_callback,
    userdata: *mut c_void,
) -> fastrpc_status {
    call_async(
        client,
        (name, name_len),
        (value, value_len),
        timeout_ms,
        callback,
        userdata,
        std::ptr::null_mut(),
    )
}

/// `fastrpc_client_call_async` that also writes the call's id to `*call_id` (on OK only;
/// `call_id` may be NULL), for `fastrpc_client_cancel`. The id is never 0. Any thread,
/// including inside callbacks (the callback may even run before this returns: the id is
/// still written).
///
/// Returns as `fastrpc_client_call_async`.
#[no_mangle]
pub extern "C" fn fastrpc_client_call_async_id(
    client: *const fastrpc_client,
    name: *const u8,
    name_len: usize,
    value: *const u8,
    value_len: usize,
    timeout_ms: u32,
    callback: fastrpc_call_callback,
    userdata: *mut c_void,
    call_id: *mut u64,
) -> fastrpc_status {
    call_async(
        client,
        (name, name_len),
        (value, value_len),
        timeout_ms,
        callback,
        userdata,
        call_id,
    )
}

fn call_async(
    client: *const fastrpc_client,
    (name, name_len): (*const u8, usize),
    (value, value_len): (*const u8, usize),
    timeout_ms: u32,
    callback: fastrpc_call_callback,
    userdata: *mut c_void,
    call_id: *mut u64,
) -> fastrpc_status {
    ffi_boundary!({
        not_forked!();
        let h = arg_ref!(client);
        let c = &h.client;
        let Some(f) = callback else {
            return super::invalid("`callback` is NULL");
        };
        let name = arg_try!(unsafe { super::bytes(name, name_len, "name") });
        let value = arg_try!(unsafe { super::bytes(value, value_len, "value") });
        let tag = ((f as usize as u128) << 64) | (userdata as usize as u64 as u128);
        let t = timeout(c, timeout_ms);
        let callbacks = &h.callbacks;
        callbacks.live.fetch_add(1, SeqCst);
        match c
            .client()
            .submit_with_id(name, value, t, callbacks.clone(), tag)
        {
            Ok(id) => {
                if !call_id.is_null() {
                    // SAFETY: the caller passes a writable u64 or NULL.
                    unsafe { call_id.write(id.as_u64()) };
                }
                fastrpc_status::FASTRPC_STATUS_OK
            }
            Err(e) => {
                callbacks.finished();
                super::fail(&e)
            }
        }
    })
}

/// Starts a call and returns at once without blocking; when it finishes, a completion with
/// `tag` goes into `queue`, to be taken by `fastrpc_completion_queue_poll`. `timeout_ms` 0
/// means the configured request timeout. Name and value are copied before this returns. Any
/// thread, including inside callbacks.
///
/// Returns OK (exactly one completion will arrive), or OVERFLOW, CONNECT, CLOSED (the client
/// was closed, or the queue was shut down), TOO_LARGE, INVALID_ARGUMENT — then none will.
#[no_mangle]
pub extern "C" fn fastrpc_client_call_queued(
    client: *const fastrpc_client,
    name: *const u8,
    name_len: usize,
    value: *const u8,
    value_len: usize,
    timeout_ms: u32,
    queue: *const fastrpc_completion_queue,
    tag: u64,
) -> fastrpc_status {
    call_queued(
        client,
        (name, name_len),
        (value, value_len),
        timeout_ms,
        (queue, tag),
        std::ptr::null_mut(),
        false,
    )
}

/// `fastrpc_client_call_queued` that also writes the call's id to `*call_id` (on OK only;
/// `call_id` may be NULL), for `fastrpc_client_cancel`. The id is never 0. Any thread.
///
/// Returns as `fastrpc_client_call_queued`.
#[no_mangle]
pub extern "C" fn fastrpc_client_call_queued_id(
    client: *const fastrpc_client,
    name: *const u8,
    name_len: usize,
    value: *const u8,
    value_len: usize,
    timeout_ms: u32,
    queue: *const fastrpc_completion_queue,
    tag: u64,
    call_id: *mut u64,
) -> fastrpc_status {
    call_queued(
        client,
        (name, name_len),
        (value, value_len),
        timeout_ms,
        (queue, tag),
        call_id,
        false,
    )
}

/// `fastrpc_client_call_queued_id` that leaves the request queued without waking the
/// connection's writer: it is written by a later `fastrpc_client_flush` on this client (or
/// with the next request of a call made without deferring). For a caller that knows more
/// calls follow at once, from several threads: each defers, the last flushes, and they share
/// one write made on that thread, with no wakeup of a library thread. A request that is never
/// flushed still completes at its deadline (TIMEOUT). Any thread.
///
/// Returns as `fastrpc_client_call_queued`.
#[no_mangle]
pub extern "C" fn fastrpc_client_call_queued_deferred(
    client: *const fastrpc_client,
    name: *const u8,
    name_len: usize,
    value: *const u8,
    value_len: usize,
    timeout_ms: u32,
    queue: *const fastrpc_completion_queue,
    tag: u64,
    call_id: *mut u64,
) -> fastrpc_status {
    call_queued(
        client,
        (name, name_len),
        (value, value_len),
        timeout_ms,
        (queue, tag),
        call_id,
        true,
    )
}

/// Writes the requests queued on `client` now (see `fastrpc_client_call_queued_deferred`):
/// on the calling thread when the connection's writer is idle (one non-blocking write; what
/// the socket does not take at once a library thread finishes), else by waking the writer.
/// Does nothing when nothing is queued, or before the connection is up (its first write
/// takes them). Any thread, including inside callbacks.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `client`).
#[no_mangle]
pub extern "C" fn fastrpc_client_flush(client: *const fastrpc_client) -> fastrpc_status {
    ffi_boundary!({
        arg_ref!(client).client.client().flush();
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Cancels the call `call_id` (from `fastrpc_client_call_async_id` or
/// `fastrpc_client_call_queued_id`) if it still waits, queued or sent: it completes at once
/// with status CANCELLED, exactly once, through its callback (on a library thread, soon after
/// this returns, possibly before) or its completion queue; its pending slot is free at once;
/// a request not yet written is never sent; a response that still arrives is dropped and
/// counted in `unexpected_responses`. Racing the response, the deadline or a close, exactly
/// one outcome reaches the callback or queue: OK from here means it is CANCELLED. Ids are
/// unique among a client's calls until they wrap after 2^32 - 1 calls. Any thread, including
/// inside callbacks.
///
/// Returns OK (the call was cancelled), CLOSED (no such call is waiting: it already
/// completed, or the id is none of this client's calls; nothing happened) or
/// INVALID_ARGUMENT (NULL `client`).
#[no_mangle]
pub extern "C" fn fastrpc_client_cancel(
    client: *const fastrpc_client,
    call_id: u64,
) -> fastrpc_status {
    ffi_boundary!({
        let c = &arg_ref!(client).client;
        if c.client().cancel(crate::client::CallId::from_u64(call_id)) {
            fastrpc_status::FASTRPC_STATUS_OK
        } else {
            super::fail(&Error::fixed(
                crate::ErrorKind::Closed,
                "no such call is waiting: it already completed (or the id is not one of this \
                 client's calls)",
            ))
        }
    })
}

/// The queued call of the three `fastrpc_client_call_queued*` entry points.
fn call_queued(
    client: *const fastrpc_client,
    (name, name_len): (*const u8, usize),
    (value, value_len): (*const u8, usize),
    timeout_ms: u32,
    (queue, tag): (*const fastrpc_completion_queue, u64),
    call_id: *mut u64,
    deferred: bool,
) -> fastrpc_status {
    ffi_boundary!({
        not_forked!();
        let c = &arg_ref!(client).client;
        let q = arg_ref!(queue);
        if q.queue.is_shut() {
            return super::fail(&Error::fixed(
                crate::ErrorKind::Closed,
                "the completion queue was shut down: it takes no new calls",
            ));
        }
        let name = arg_try!(unsafe { super::bytes(name, name_len, "name") });
        let value = arg_try!(unsafe { super::bytes(value, value_len, "value") });
        let t = timeout(c, timeout_ms);
        let sink = completion_queue::sink(q);
        let r = if deferred {
            c.client()
                .submit_deferred(name, value, t, sink, tag as u128)
        } else {
            c.client().submit_with_id(name, value, t, sink, tag as u128)
        };
        match r {
            Ok(id) => {
                if !call_id.is_null() {
                    // SAFETY: the caller passes a writable u64 or NULL.
                    unsafe { call_id.write(id.as_u64()) };
                }
                fastrpc_status::FASTRPC_STATUS_OK
            }
            Err(e) => super::fail(&e),
        }
    })
}

/// Sends a request that wants no response (request id 0) and returns at once. OK means it
/// was queued; it goes out with the next batch unless the connection fails first. Any thread.
///
/// Returns OK, OVERFLOW, CONNECT, CLOSED, TOO_LARGE or INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_client_send(
    client: *const fastrpc_client,
    name: *const u8,
    name_len: usize,
    value: *const u8,
    value_len: usize,
) -> fastrpc_status {
    ffi_boundary!({
        not_forked!();
        let c = &arg_ref!(client).client;
        let name = arg_try!(unsafe { super::bytes(name, name_len, "name") });
        let value = arg_try!(unsafe { super::bytes(value, value_len, "value") });
        match c.send(name, value) {
            Ok(()) => fastrpc_status::FASTRPC_STATUS_OK,
            Err(e) => super::fail(&e),
        }
    })
}

/// Writes into `*fd` a descriptor that is readable while `client`'s connection has bytes
/// to read, for a caller that waits for its responses on its own thread (poll, epoll, libuv,
/// Go's netpoller) and then calls `fastrpc_client_read_now`, which reads and completes them
/// on that thread: one thread wakeup between a response and its caller instead of two (a
/// library thread's, then the completion queue's descriptor's). It is an epoll instance
/// (non-blocking, close-on-exec) watching the socket of each connection in turn, level-triggered; it is
/// owned by the client (never close it) and stays valid until `fastrpc_client_free`; every
/// call returns the same one. Add the completion queue's descriptor
/// (`fastrpc_completion_queue_fd`) to it with `epoll_ctl` so that one wait covers both: the
/// library's own reader still reads whatever no caller does, and completes it into the
/// queue. Not connected yet: nothing to watch until the first call connects.
///
/// Returns OK, INVALID_ARGUMENT (NULL `client` or `fd`), or IO when the descriptor cannot be
/// created. Any thread.
#[no_mangle]
pub extern "C" fn fastrpc_client_read_fd(
    client: *const fastrpc_client,
    fd: *mut std::ffi::c_int,
) -> fastrpc_status {
    ffi_boundary!({
        let c = arg_ref!(client).client.client();
        arg_out!(fd);
        match c.read_fd() {
            Ok(raw) => {
                unsafe { *fd = raw };
                fastrpc_status::FASTRPC_STATUS_OK
            }
            Err(e) => super::fail(&Error::new(
                crate::ErrorKind::Io,
                format!("cannot create the client's read descriptor: {e}"),
            )),
        }
    })
}

/// Reads and completes, on the calling thread, the responses that have arrived on
/// `client`'s connection (one non-blocking pass, a few socket reads at most), unless a
/// library thread is reading them now or no connection is up. Each call it completes
/// completes as usual: into its completion queue, or its callback runs on this thread
/// before this returns. Returns how many it completed (0 when `client` is NULL). Never
/// blocks; calling it when nothing has arrived costs one failed `recv`. Any thread,
/// including inside callbacks.
#[no_mangle]
pub extern "C" fn fastrpc_client_read_now(client: *const fastrpc_client) -> usize {
    super::boundary_or(0, || read_now_of(client))
}

/// `fastrpc_client_read_now`'s work, inside a boundary of the caller's.
pub(crate) fn read_now_of(client: *const fastrpc_client) -> usize {
    unsafe { super::as_ref(client) }.map_or(0, |c| c.client.client().read_now())
}

/// Calls waiting for their response now (0 when `client` is NULL). Any thread.
#[no_mangle]
pub extern "C" fn fastrpc_client_pending_requests(client: *const fastrpc_client) -> usize {
    super::boundary_or(0, || {
        unsafe { super::as_ref(client) }.map_or(0, |c| c.client.pending_requests())
    })
}

/// Failures counted by kind.
#[repr(C)]
#[derive(Clone, Copy, Default)]
#[allow(missing_docs)]
pub struct fastrpc_error_counts {
    pub timeout: u64,
    pub overflow: u64,
    pub connect: u64,
    pub connection: u64,
    pub closed: u64,
    pub protocol: u64,
    pub tls: u64,
    pub too_large: u64,
    pub invalid_argument: u64,
    pub io: u64,
}

impl From<ErrorCounts> for fastrpc_error_counts {
    fn from(e: ErrorCounts) -> Self {
        fastrpc_error_counts {
            timeout: e.timeout,
            overflow: e.overflow,
            connect: e.connect,
            connection: e.connection,
            closed: e.closed,
            protocol: e.protocol,
            tls: e.tls,
            too_large: e.too_large,
            invalid_argument: e.invalid_argument,
            io: e.io,
        }
    }
}

/// Bytes before and after compression in each direction, flushes and frames.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct fastrpc_io_stats {
    /// Frame bytes sent, before compression.
    pub bytes_sent_plain: u64,
    /// Bytes written to the socket after compression.
    pub bytes_sent_wire: u64,
    /// Frame bytes received, after decompression.
    pub bytes_received_plain: u64,
    /// Bytes read from the socket before decompression.
    pub bytes_received_wire: u64,
    /// Batches written, one flush each.
    pub flushes: u64,
    /// Frames sent (frames_sent / flushes = frames per flush).
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
}

impl From<crate::client::ClientStats> for fastrpc_client_stats {
    fn from(s: crate::client::ClientStats) -> Self {
        fastrpc_client_stats {
            struct_size: std::mem::size_of::<fastrpc_client_stats>(),
            calls: s.calls,
            responses: s.responses,
            sends: s.sends,
            unexpected_responses: s.unexpected_responses,
            connects: s.connects,
            reconnects: s.reconnects,
            connect_failures: s.connect_failures,
            pending_requests: s.pending_requests,
            errors: s.errors.into(),
            io: s.io.into(),
            cancelled: s.errors.cancelled,
            lone_writes: s.lone_writes,
        }
    }
}

impl From<IoStats> for fastrpc_io_stats {
    fn from(s: IoStats) -> Self {
        fastrpc_io_stats {
            bytes_sent_plain: s.bytes_sent_plain,
            bytes_sent_wire: s.bytes_sent_wire,
            bytes_received_plain: s.bytes_received_plain,
            bytes_received_wire: s.bytes_received_wire,
            flushes: s.flushes,
            frames_sent: s.frames_sent,
            frames_received: s.frames_received,
        }
    }
}

/// A client's counters, from `fastrpc_client_get_stats`. Set `struct_size` to
/// `sizeof(fastrpc_client_stats)` before the call: later versions append fields, and the
/// library fills only what both it and the caller's header know.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct fastrpc_client_stats {
    /// Set by the caller to `sizeof(fastrpc_client_stats)`; on return, the bytes written.
    pub struct_size: usize,
    /// Calls accepted (not counting fire-and-forget sends).
    pub calls: u64,
    /// Calls that got their response.
    pub responses: u64,
    /// Fire-and-forget sends accepted.
    pub sends: u64,
    /// Responses for no waiting call (late, duplicate, unknown id), dropped.
    pub unexpected_responses: u64,
    /// Connections established.
    pub connects: u64,
    /// Connections established after the first.
    pub reconnects: u64,
    /// Connect attempts that failed.
    pub connect_failures: u64,
    /// Calls waiting now.
    pub pending_requests: u64,
    /// Failed calls by kind.
    pub errors: fastrpc_error_counts,
    /// Traffic.
    pub io: fastrpc_io_stats,
    /// Calls cancelled with `fastrpc_client_cancel` (since 0.2; not in `errors`, whose
    /// layout is fixed).
    pub cancelled: u64,
    /// Batches a lone call wrote on the calling thread (a call started with no
    /// other call of its client waiting writes its own request instead of waking the
    /// library's writer).
    pub lone_writes: u64,
}

unsafe impl super::Sized_ for fastrpc_client_stats {
    fn set_size(&mut self, n: usize) {
        self.struct_size = n;
    }
}

/// Writes a snapshot of the client's counters into `*out`, whose `struct_size` the caller
/// set (see `fastrpc_client_stats`). Any thread. Returns OK or INVALID_ARGUMENT (NULL
/// `client` or `out`, `out->struct_size` not set).
#[no_mangle]
pub extern "C" fn fastrpc_client_get_stats(
    client: *const fastrpc_client,
    out: *mut fastrpc_client_stats,
) -> fastrpc_status {
    ffi_boundary!({
        let c = &arg_ref!(client).client;
        arg_out!(out);
        let v: fastrpc_client_stats = c.stats().into();
        unsafe { super::write_sized(out, v, "fastrpc_client_stats") }
    })
}

/// Closes the client: new calls fail with CLOSED. With `drain_timeout_ms` > 0 it waits up
/// to that long for waiting calls to finish, then fails the rest with CLOSED; with 0 it fails
/// them at once. Every outstanding call completes (callbacks run, completions are queued)
/// before or soon after this returns; it never hangs. Inside a library callback it does not
/// wait (as with 0). Closing twice is fine. Any thread.
///
/// Returns OK or INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_client_close(
    client: *const fastrpc_client,
    drain_timeout_ms: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let c = &arg_ref!(client).client;
        let mode = if drain_timeout_ms == 0 {
            CloseMode::Cancel
        } else {
            CloseMode::Drain(Duration::from_millis(drain_timeout_ms as u64))
        };
        c.close(mode);
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Closes the client (failing waiting calls with CLOSED at once) and frees it. NULL is
/// allowed. The pointer is invalid afterwards. Any thread, including inside this client's
/// own callbacks; no other thread may be using the handle at the same time.
///
/// It returns only after every callback of this client has run and returned (the CLOSED
/// callbacks of the calls it cancels included), so the callbacks' userdata may be freed
/// right after it. Called from inside one of this client's own callbacks, it waits for all
/// the others, and the calling callback is the last of the client to run. Completions of
/// queued calls go to their queue as usual (CLOSED), possibly after this returns.
#[no_mangle]
pub extern "C" fn fastrpc_client_free(client: *mut fastrpc_client) {
    super::boundary_or((), || {
        if let Some(h) = unsafe { super::from_raw(client) } {
            h.client.client().close_now_for_ffi();
            if !crate::runtime::forked() {
                h.callbacks.wait_idle();
            }
            drop(h);
            super::global::closed();
        }
    })
}
