//! `fastrpc_server_queue`: the polled way to serve. A server made with
//! `fastrpc_server_new_queued` puts each request into the queue, and a caller takes them in
//! batches with `fastrpc_server_queue_poll` and answers them by handle: the mode for Go and
//! other runtimes, with no callback into them.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use super::blocking_poll::{self, PollState};
use super::pollfd::ReadyFd;
use super::request::{self, fastrpc_request, RequestHandle};
use super::{arg_out, arg_ref, fastrpc_status, ffi_boundary, Castable};
use crate::error::Error;

/// A queue of requests waiting to be served. Created by `fastrpc_server_queue_new`, fed by
/// servers made with `fastrpc_server_new_queued`, drained by `fastrpc_server_queue_poll`;
/// `fastrpc_server_queue_shutdown` wakes pollers; freed by `fastrpc_server_queue_free`. Any
/// thread, several at once.
pub struct fastrpc_server_queue {
    _private: [u8; 0],
}

pub(crate) struct ServerQueue {
    state: Mutex<State>,
    ready: Condvar,
}

struct State {
    items: VecDeque<Box<RequestHandle>>,
    shut: bool,
    /// Pollers blocked in `wait_timeout`: a request wakes one only when some wait and the
    /// queue was empty, so a busy queue costs no futex syscall per request (the woken poller
    /// passes the wakeup on when it leaves requests behind).
    waiters: usize,
    /// `fastrpc_server_queue_fd`: readable while `items` is non-empty or `shut`.
    ready_fd: ReadyFd,
}

impl PollState for State {
    fn has_items(&self) -> bool {
        !self.items.is_empty()
    }
    fn is_shut(&self) -> bool {
        self.shut
    }
    fn waiters(&mut self) -> &mut usize {
        &mut self.waiters
    }
}

impl ServerQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a request; after shutdown the request is answered with the error reply.
    pub(crate) fn push(&self, h: Box<RequestHandle>) {
        let mut st = self.lock();
        if st.shut {
            drop(st);
            request::release(h);
            return;
        }
        let was_empty = st.items.is_empty();
        if was_empty {
            st.ready_fd.set();
        }
        st.items.push_back(h);
        let wake = was_empty && st.waiters > 0;
        drop(st);
        if wake {
            self.ready.notify_one();
        }
    }
}

pub(crate) struct ServerQueueHandle {
    pub queue: Arc<ServerQueue>,
}

impl Castable for fastrpc_server_queue {
    type Rust = ServerQueueHandle;
}

impl Drop for ServerQueueHandle {
    fn drop(&mut self) {
        let mut st = self.queue.lock();
        st.shut = true;
        let items: Vec<_> = st.items.drain(..).collect();
        st.ready_fd = ReadyFd::default();
        drop(st);
        self.queue.ready.notify_all();
        for h in items {
            request::release(h);
        }
    }
}

/// Creates a server queue. `*out` receives a new queue the caller owns (free with
/// `fastrpc_server_queue_free`, after the servers feeding it). Returns OK or
/// INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_server_queue_new(out: *mut *mut fastrpc_server_queue) -> fastrpc_status {
    ffi_boundary!({
        arg_out!(out);
        let queue = Arc::new(ServerQueue {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(1024),
                shut: false,
                waiters: 0,
                ready_fd: ReadyFd::default(),
            }),
            ready: Condvar::new(),
        });
        unsafe { *out = super::into_raw(ServerQueueHandle { queue }) };
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Waits up to `timeout_ms` (0: do not wait) for requests and writes up to `max` of them
/// into `out[0..max]`; `*n` receives how many (0 on timeout). Each request is then owned by
/// the caller: answer it with `fastrpc_request_reply` and free it with
/// `fastrpc_request_free`. Any thread, several at once. Not from inside a library callback.
///
/// Returns OK (also with `*n` 0 on timeout), CLOSED when the queue was shut down and is
/// empty, or INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_server_queue_poll(
    queue: *const fastrpc_server_queue,
    out: *mut *mut fastrpc_request,
    max: usize,
    timeout_ms: u32,
    n: *mut usize,
) -> fastrpc_status {
    ffi_boundary!({
        let q = &arg_ref!(queue).queue;
        arg_out!(out);
        arg_out!(n);
        if max == 0 {
            return super::invalid("`max` is 0");
        }
        let st = q.lock();
        let mut st = match blocking_poll::wait_for_items(
            st,
            &q.ready,
            timeout_ms,
            n,
            "the server queue was shut down",
        ) {
            Ok(st) => st,
            Err(status) => return status,
        };
        let k = st.items.len().min(max);
        for i in 0..k {
            let h = st.items.pop_front().expect("counted");
            unsafe { out.add(i).write(super::box_into_raw(h)) };
        }
        if st.items.is_empty() && !st.shut {
            st.ready_fd.clear();
        }
        blocking_poll::hand_on(st, &q.ready);
        unsafe { *n = k };
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Writes into `*fd` a file descriptor that is readable exactly while requests wait in the
/// queue or it is shut down, for the caller's own epoll, poll, select, libuv, asyncio or Go
/// netpoller: no thread needs to block in `fastrpc_server_queue_poll`. It is an eventfd
/// (non-blocking, close-on-exec) owned by the queue: never read, write or close it; it stays
/// valid until `fastrpc_server_queue_free`. Every call returns the same descriptor.
///
/// Level-triggered, as `fastrpc_completion_queue_fd`: readable from the moment the queue
/// goes from empty to non-empty (or is shut down) until a poll takes the last request.
/// Drain pattern: when it is readable, `fastrpc_server_queue_poll(q, out, max, 0, &n)` with
/// timeout 0 until `n == 0` (or CLOSED after shutdown); with level-triggered epoll one
/// batch per wakeup is also correct. No syscall per request while the queue stays
/// non-empty.
///
/// Returns OK, INVALID_ARGUMENT (NULL `queue` or `fd`), or IO when the eventfd cannot be
/// created. Any thread.
#[no_mangle]
pub extern "C" fn fastrpc_server_queue_fd(
    queue: *const fastrpc_server_queue,
    fd: *mut std::ffi::c_int,
) -> fastrpc_status {
    ffi_boundary!({
        let q = &arg_ref!(queue).queue;
        arg_out!(fd);
        let mut st = q.lock();
        let ready = !st.items.is_empty() || st.shut;
        match st.ready_fd.get(ready) {
            Ok(raw) => {
                unsafe { *fd = raw };
                fastrpc_status::FASTRPC_STATUS_OK
            }
            Err(e) => super::fail(&Error::new(
                crate::ErrorKind::Io,
                format!("cannot create the server queue's eventfd: {e}"),
            )),
        }
    })
}

/// Shuts the queue down: pollers wake; requests already queued can still be polled, new ones
/// are answered with the error reply; once empty, poll returns CLOSED. Any thread.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `queue`).
#[no_mangle]
pub extern "C" fn fastrpc_server_queue_shutdown(
    queue: *const fastrpc_server_queue,
) -> fastrpc_status {
    ffi_boundary!({
        let q = &arg_ref!(queue).queue;
        let mut st = q.lock();
        st.shut = true;
        st.ready_fd.set();
        drop(st);
        q.ready.notify_all();
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Frees the queue (NULL is allowed); requests still in it get the error reply. No thread
/// may be polling it.
#[no_mangle]
pub extern "C" fn fastrpc_server_queue_free(queue: *mut fastrpc_server_queue) {
    super::boundary_or((), || drop(unsafe { super::from_raw(queue) }))
}
