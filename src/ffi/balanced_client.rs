//! `fastrpc_balanced_client`: one client over many servers (the Rust `BalancedClient`), with
//! the same three ways to call as `fastrpc_client` (blocking, callback, completion queue),
//! fire-and-forget, stats in total and per server, close and free.

use std::ffi::{c_char, c_void};
use std::future::Future;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::client::{fastrpc_call_callback, fastrpc_client_stats, Callbacks};
use super::client_config::fastrpc_client_config_builder;
use super::completion_queue::{self, fastrpc_completion_queue};
use super::response::fastrpc_response;
use super::{
    arg_mut, arg_out, arg_ref, arg_try, fastrpc_status, ffi_boundary, not_forked, Castable,
};
use crate::balance::{BackendState, BalancedCallId, BalancedClient, BalancedConfig};
use crate::client::CloseMode;
use crate::error::{Error, ErrorKind};

/// A client over several servers: each call goes to the server with fewer calls in flight of
/// two picked at random; a server whose connect fails is skipped until its backoff passes (the
/// call is tried on another: it never reached the first); calls in flight on a server whose
/// connection fails end with CONNECTION and are not re-sent; when every server is down calls
/// fail at once with CONNECT naming them. Host names are resolved again every
/// `fastrpc_client_config_builder_set_resolve_interval_ms`. Every function may be called from
/// many threads at once. Created by `fastrpc_balanced_client_new`, freed by
/// `fastrpc_balanced_client_free`. Functions: `fastrpc_balanced_client_call`,
/// `fastrpc_balanced_client_call_async`, `fastrpc_balanced_client_call_queued`,
/// `fastrpc_balanced_client_call_async_id`, `fastrpc_balanced_client_call_queued_id`,
/// `fastrpc_balanced_client_cancel`, `fastrpc_balanced_client_send`, `fastrpc_balanced_client_pending_requests`,
/// `fastrpc_balanced_client_get_stats`, `fastrpc_balanced_client_server_count`,
/// `fastrpc_balanced_client_get_server_stats`, `fastrpc_balanced_client_close`.
pub struct fastrpc_balanced_client {
    _private: [u8; 0],
}

pub(crate) struct BalancedHandle {
    client: BalancedClient,
    callbacks: Arc<Callbacks>,
    rt: tokio::runtime::Handle,
}

impl Castable for fastrpc_balanced_client {
    type Rust = BalancedHandle;
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    static WAKER: Waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
}

/// Runs `fut` to completion on this (non-runtime) thread, parking between polls.
fn block_on<F: Future>(fut: F) -> Result<F::Output, Error> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "a blocking call was made from a thread of a tokio runtime (or from inside a \
             library callback); use the async or callback API there",
        ));
    }
    let mut fut = std::pin::pin!(fut);
    WAKER.with(|w| {
        let mut cx = Context::from_waker(w);
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return Ok(v);
            }
            std::thread::park();
        }
    })
}

fn timeout(c: &BalancedClient, timeout_ms: u32) -> Duration {
    if timeout_ms == 0 {
        c.config().client.request_timeout
    } else {
        Duration::from_millis(timeout_ms as u64)
    }
}

/// Creates a balanced client from `builder` (copied; it may be freed after): the servers are
/// those added with `fastrpc_client_config_builder_add_addr` plus the one of
/// `fastrpc_client_config_builder_set_addr` if set; every other option applies to each
/// connection. Host names are resolved here (this may block on DNS). Nothing connects until
/// the first call. `*out` receives a new client the caller owns (free with
/// `fastrpc_balanced_client_free`). Any thread.
///
/// Returns OK, INVALID_ARGUMENT (NULL arguments, no server, bad options), CONNECT (a host
/// name does not resolve) or TLS; details in `fastrpc_last_error_message`.
#[no_mangle]
pub extern "C" fn fastrpc_balanced_client_new(
    builder: *const fastrpc_client_config_builder,
    out: *mut *mut fastrpc_balanced_client,
) -> fastrpc_status {
    ffi_boundary!({
        not_forked!();
        let b = arg_ref!(builder);
        arg_out!(out);
        let mut addrs = b.addrs.clone();
        if !b.cfg.addr.is_empty() && !addrs.contains(&b.cfg.addr) {
            addrs.insert(0, b.cfg.addr.clone());
        }
        let mut cfg = BalancedConfig::new(addrs);
        cfg.client = b.cfg.clone();
        cfg.connections_per_server = b.connections_per_server;
        cfg.resolve_interval = b.resolve_interval;
        let opening = super::global::Opening::new();
        let rt = crate::runtime::global().handle().clone();
        // Made inside the library's runtime so that its connections and refresh task live
        // there whatever thread the C caller is on.
        let made = {
            let _g = rt.enter();
            BalancedClient::new(cfg)
        };
        match made {
            Ok(client) => {
                let callbacks = Callbacks::new();
                unsafe {
                    *out = super::into_raw(BalancedHandle {
                        client,
                        callbacks,
                        rt,
                    })
                };
                opening.keep();
                fastrpc_status::FASTRPC_STATUS_OK
            }
            Err(e) => super::fail(&e),
        }
    })
}

/// As `fastrpc_client_call`, on the chosen server.
///
/// Returns OK, TIMEOUT, OVERFLOW, CONNECT, CONNECTION, CLOSED, PROTOCOL, TLS, TOO_LARGE or
/// INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_balanced_client_call(
    client: *const fastrpc_balanced_client,
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
        let deadline = Instant::now() + timeout(c, timeout_ms);
        let res =
            block_on(c.call_deadline_into(name, value, deadline, &mut r.value)).and_then(|r| r);
        match res {
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

/// As `fastrpc_client_call_async`, on the chosen server (see `fastrpc_call_callback` for the
/// callback's rules).
///
/// Returns OK (the callback will run exactly once), or OVERFLOW, CONNECT, CLOSED, TOO_LARGE,
/// INVALID_ARGUMENT — then the callback never runs.
#[no_mangle]
pub extern "C" fn fastrpc_balanced_client_call_async(
    client: *const fastrpc_balanced_client,
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
        (callback, userdata),
        std::ptr::null_mut(),
    )
}

/// `fastrpc_balanced_client_call_async` that also writes the call's id to `*call_id` (on OK
/// only; `call_id` may be NULL), for `fastrpc_balanced_client_cancel`. The id is never 0 and
/// follows the call when a failed connect moves it to another server. Any thread, including
/// inside callbacks (the callback may even run before this returns: the id is still
/// written).
///
/// Returns as `fastrpc_balanced_client_call_async`.
#[no_mangle]
pub extern "C" fn fastrpc_balanced_client_call_async_id(
    client: *const fastrpc_balanced_client,
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
        (callback, userdata),
        call_id,
    )
}

/// The async calls; `call_id` NULL: without an id (no cancel entry is kept).
fn call_async(
    client: *const fastrpc_balanced_client,
    (name, name_len): (*const u8, usize),
    (value, value_len): (*const u8, usize),
    timeout_ms: u32,
    (callback, userdata): (fastrpc_call_callback, *mut c_void),
    call_id: *mut u64,
) -> fastrpc_status {
    ffi_boundary!({
        not_forked!();
        let h = arg_ref!(client);
        let Some(f) = callback else {
            return super::invalid("`callback` is NULL");
        };
        let name = arg_try!(unsafe { super::bytes(name, name_len, "name") });
        let value = arg_try!(unsafe { super::bytes(value, value_len, "value") });
        let tag = ((f as usize as u128) << 64) | (userdata as usize as u64 as u128);
        let t = timeout(&h.client, timeout_ms);
        h.callbacks.live.fetch_add(1, SeqCst);
        let r = if call_id.is_null() {
            h.client
                .submit(name, value, t, h.callbacks.clone(), tag)
                .map(|()| None)
        } else {
            h.client
                .submit_with_id(name, value, t, h.callbacks.clone(), tag)
                .map(Some)
        };
        match r {
            Ok(id) => {
                write_id(call_id, id);
                fastrpc_status::FASTRPC_STATUS_OK
            }
            Err(e) => {
                h.callbacks.finished();
                super::fail(&e)
            }
        }
    })
}

/// Writes a call's id for the caller (`call_id` non-NULL exactly when `id` is Some).
fn write_id(call_id: *mut u64, id: Option<BalancedCallId>) {
    if let Some(id) = id {
        // SAFETY: the caller passes a writable u64 (call_id is non-NULL whenever id is Some).
        unsafe { call_id.write(id.as_u64()) };
    }
}

/// As `fastrpc_client_call_queued`, on the chosen server.
///
/// Returns OK (exactly one completion will arrive), or OVERFLOW, CONNECT, CLOSED, TOO_LARGE,
/// INVALID_ARGUMENT — then none will.
#[no_mangle]
pub extern "C" fn fastrpc_balanced_client_call_queued(
    client: *const fastrpc_balanced_client,
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
    )
}

/// `fastrpc_balanced_client_call_queued` that also writes the call's id to `*call_id` (on OK
/// only; `call_id` may be NULL), for `fastrpc_balanced_client_cancel`. The id is never 0 and
/// follows the call when a failed connect moves it to another server. Any thread.
///
/// Returns as `fastrpc_balanced_client_call_queued`.
#[no_mangle]
pub extern "C" fn fastrpc_balanced_client_call_queued_id(
    client: *const fastrpc_balanced_client,
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
    )
}

/// The queued calls; `call_id` NULL: without an id (no cancel entry is kept).
fn call_queued(
    client: *const fastrpc_balanced_client,
    (name, name_len): (*const u8, usize),
    (value, value_len): (*const u8, usize),
    timeout_ms: u32,
    (queue, tag): (*const fastrpc_completion_queue, u64),
    call_id: *mut u64,
) -> fastrpc_status {
    ffi_boundary!({
        not_forked!();
        let c = &arg_ref!(client).client;
        let q = arg_ref!(queue);
        if q.queue.is_shut() {
            return super::fail(&Error::fixed(
                ErrorKind::Closed,
                "the completion queue was shut down: it takes no new calls",
            ));
        }
        let name = arg_try!(unsafe { super::bytes(name, name_len, "name") });
        let value = arg_try!(unsafe { super::bytes(value, value_len, "value") });
        let t = timeout(c, timeout_ms);
        let sink = completion_queue::sink(q);
        let r = if call_id.is_null() {
            c.submit(name, value, t, sink, tag as u128).map(|()| None)
        } else {
            c.submit_with_id(name, value, t, sink, tag as u128)
                .map(Some)
        };
        match r {
            Ok(id) => {
                write_id(call_id, id);
                fastrpc_status::FASTRPC_STATUS_OK
            }
            Err(e) => super::fail(&e),
        }
    })
}

/// Cancels the call `call_id` (from `fastrpc_balanced_client_call_async_id` or
/// `fastrpc_balanced_client_call_queued_id`) if it still waits, queued, sent, or between two
/// servers after a failed connect: it completes at once with status CANCELLED, exactly once,
/// through its callback (on a library thread, soon after this returns, possibly before) or
/// its completion queue; its pending slot on its server is free at once; a request not yet
/// written is never sent; a response that still arrives is dropped. Racing the response, the
/// deadline or a close, exactly one outcome reaches the callback or queue: OK from here means
/// it is CANCELLED. Any thread, including inside callbacks.
///
/// Returns OK (the call was cancelled), CLOSED (no such call is waiting: it already
/// completed or was cancelled, or the id is none of this client's calls; nothing happened)
/// or INVALID_ARGUMENT (NULL `client`).
#[no_mangle]
pub extern "C" fn fastrpc_balanced_client_cancel(
    client: *const fastrpc_balanced_client,
    call_id: u64,
) -> fastrpc_status {
    ffi_boundary!({
        let c = &arg_ref!(client).client;
        if c.cancel(BalancedCallId::from_u64(call_id)) {
            fastrpc_status::FASTRPC_STATUS_OK
        } else {
            super::fail(&Error::fixed(
                ErrorKind::Closed,
                "no such call is waiting: it already completed (or the id is not one of this \
                 client's calls)",
            ))
        }
    })
}

/// As `fastrpc_client_send`, on the chosen server.
///
/// Returns OK, OVERFLOW, CONNECT, CLOSED, TOO_LARGE or INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_balanced_client_send(
    client: *const fastrpc_balanced_client,
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

/// Calls waiting for their response now, on every server (0 when `client` is NULL).
#[no_mangle]
pub extern "C" fn fastrpc_balanced_client_pending_requests(
    client: *const fastrpc_balanced_client,
) -> usize {
    super::boundary_or(0, || {
        unsafe { super::as_ref(client) }.map_or(0, |c| c.client.pending_requests())
    })
}

/// Writes the counters of every connection, summed, into `*out` (set `out->struct_size`
/// first, as for `fastrpc_client_get_stats`). Any thread. Returns OK or INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_balanced_client_get_stats(
    client: *const fastrpc_balanced_client,
    out: *mut fastrpc_client_stats,
) -> fastrpc_status {
    ffi_boundary!({
        let c = &arg_ref!(client).client;
        arg_out!(out);
        unsafe { super::write_sized(out, c.stats().total.into(), "fastrpc_client_stats") }
    })
}

/// How many servers the current (last resolved) set has (0 when `client` is NULL).
#[no_mangle]
pub extern "C" fn fastrpc_balanced_client_server_count(
    client: *const fastrpc_balanced_client,
) -> usize {
    super::boundary_or(0, || {
        unsafe { super::as_ref(client) }.map_or(0, |c| c.client.servers().len())
    })
}

/// One server's share of a balanced client, from `fastrpc_balanced_client_get_server_stats`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct fastrpc_balanced_server_stats {
    /// Set by the caller to `sizeof(fastrpc_balanced_server_stats)`; on return, the bytes
    /// written (see `fastrpc_client_stats`).
    pub struct_size: usize,
    /// 1 when new calls go to it; 0 when every connection to it failed to connect and is
    /// skipped until its backoff passes.
    pub up: u8,
    /// Its connections.
    pub connections: u32,
    /// Its connections' counters, summed.
    pub stats: fastrpc_client_stats,
}

// SAFETY: `struct_size` is the first field, a usize.
unsafe impl super::Sized_ for fastrpc_balanced_server_stats {
    fn set_size(&mut self, n: usize) {
        self.struct_size = n;
    }
}

/// Writes the counters of server `index` (0 <= index < `fastrpc_balanced_client_server_count`)
/// into `*out` and its address, NUL-terminated, into `(addr_buf, addr_buf_len)`
/// (`*addr_len`, when not NULL, receives the address's length). `(NULL, 0)` skips the address.
/// The set may change between calls (re-resolution). Any thread.
///
/// Returns OK; BUFFER_TOO_SMALL when the address was cut (`*out` is written); or
/// INVALID_ARGUMENT (NULL arguments, index out of range).
#[no_mangle]
pub extern "C" fn fastrpc_balanced_client_get_server_stats(
    client: *const fastrpc_balanced_client,
    index: usize,
    out: *mut fastrpc_balanced_server_stats,
    addr_buf: *mut c_char,
    addr_buf_len: usize,
    addr_len: *mut usize,
) -> fastrpc_status {
    ffi_boundary!({
        let c = &arg_ref!(client).client;
        arg_out!(out);
        let st = c.stats();
        let Some(s) = st.servers.get(index) else {
            return super::invalid(&format!(
                "server index {index} out of range (there are {})",
                st.servers.len()
            ));
        };
        let v = fastrpc_balanced_server_stats {
            struct_size: 0,
            up: u8::from(s.state == BackendState::Up),
            connections: s.connections as u32,
            stats: s.stats.into(),
        };
        let st = unsafe { super::write_sized(out, v, "fastrpc_balanced_server_stats") };
        if st != fastrpc_status::FASTRPC_STATUS_OK {
            return st;
        }
        if addr_buf.is_null() && addr_buf_len == 0 {
            if !addr_len.is_null() {
                unsafe { *addr_len = s.addr.len() };
            }
            return fastrpc_status::FASTRPC_STATUS_OK;
        }
        unsafe { super::write_text(&s.addr, addr_buf, addr_buf_len, addr_len) }
    })
}

/// As `fastrpc_client_close`: new calls fail with CLOSED; with `drain_timeout_ms` > 0 waiting
/// calls get up to that long to finish, then fail with CLOSED; with 0 (or inside a library
/// callback) they fail at once. Closing twice is fine. Any thread. Returns OK or
/// INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_balanced_client_close(
    client: *const fastrpc_balanced_client,
    drain_timeout_ms: u32,
) -> fastrpc_status {
    ffi_boundary!({
        let h = arg_ref!(client);
        if drain_timeout_ms == 0 || tokio::runtime::Handle::try_current().is_ok() {
            h.client.close_now();
        } else {
            let mode = CloseMode::Drain(Duration::from_millis(drain_timeout_ms as u64));
            let c = h.client.clone();
            // Spawned on the library's runtime (the drain needs its timer), waited for here.
            let task = h.rt.spawn(async move { c.close(mode).await });
            let _ = block_on(task);
        }
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// As `fastrpc_client_free`: closes (failing waiting calls with CLOSED at once) and frees;
/// NULL is allowed; it returns after every callback of this client has returned.
#[no_mangle]
pub extern "C" fn fastrpc_balanced_client_free(client: *mut fastrpc_balanced_client) {
    super::boundary_or((), || {
        if let Some(h) = unsafe { super::from_raw(client) } {
            h.client.close_now();
            if !crate::runtime::forked() {
                h.callbacks.wait_idle();
            }
            drop(h);
            super::global::closed();
        }
    })
}
