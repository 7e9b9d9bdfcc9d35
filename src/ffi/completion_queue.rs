//! `fastrpc_completion_queue`: calls submitted with a tag complete into a queue, and one
//! `fastrpc_completion_queue_poll` takes a whole batch of completions: the mode for Go and
//! other runtimes (one foreign call per batch, no thread per call in flight).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::response::{self, fastrpc_response, Response};
use super::{arg_out, arg_ref, fastrpc_status, ffi_boundary, Castable};
use crate::client::Completion;
use crate::error::Error;

/// A queue of finished calls. Created by `fastrpc_completion_queue_new`; calls are added with
/// `fastrpc_client_call_queued`; finished calls are taken in batches with
/// `fastrpc_completion_queue_poll`; `fastrpc_completion_queue_shutdown` wakes pollers;
/// `fastrpc_completion_queue_free` frees it. Any thread may use it, several at once.
pub struct fastrpc_completion_queue {
    _private: [u8; 0],
}

/// One finished call, as `fastrpc_completion_queue_poll` hands it out.
#[repr(C)]
pub struct fastrpc_completion {
    /// The tag given to `fastrpc_client_call_queued`.
    pub tag: u64,
    /// OK, or why the call failed (the same as `fastrpc_response_status(response)`).
    pub status: fastrpc_status,
    /// The outcome; owned by the caller of poll, who frees it with `fastrpc_response_free`.
    pub response: *mut fastrpc_response,
}

pub(crate) struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    items: VecDeque<(u64, Box<Response>)>,
    shut: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, tag: u64, r: Box<Response>) {
        let mut st = self.lock();
        st.items.push_back((tag, r));
        drop(st);
        self.ready.notify_one();
    }
}

impl Completion for Queue {
    fn complete(&self, tag: u128, result: Result<&[u8], &Error>) {
        let mut r = response::take();
        match result {
            Ok(v) => {
                r.value.clear();
                r.value.extend_from_slice(v);
                r.set_ok();
            }
            Err(e) => r.set_error(e),
        }
        self.push(tag as u64, r);
    }
}

pub(crate) struct QueueHandle {
    pub queue: Arc<Queue>,
}

impl Castable for fastrpc_completion_queue {
    type Rust = QueueHandle;
}

impl Drop for QueueHandle {
    fn drop(&mut self) {
        // Calls still in flight keep the queue alive and complete into it; their responses
        // are freed with it. Wake anyone still polling.
        let mut st = self.queue.lock();
        st.shut = true;
        for (_, r) in st.items.drain(..) {
            response::give_back(r);
        }
        drop(st);
        self.queue.ready.notify_all();
    }
}

/// Creates a completion queue. `*out` receives a new queue the caller owns (free with
/// `fastrpc_completion_queue_free`). Any thread. Returns OK or INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn fastrpc_completion_queue_new(
    out: *mut *mut fastrpc_completion_queue,
) -> fastrpc_status {
    ffi_boundary!({
        arg_out!(out);
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                items: VecDeque::with_capacity(1024),
                shut: false,
            }),
            ready: Condvar::new(),
        });
        unsafe { *out = super::into_raw(QueueHandle { queue }) };
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Waits up to `timeout_ms` (0: do not wait) for finished calls and writes up to `max` of
/// them into `out[0..max]`; `*n` receives how many (0 when the wait timed out). Each
/// completion's `response` is then owned by the caller. Any thread, several at once (each
/// completion goes to exactly one poller). Never call it from inside a library callback.
///
/// Returns OK (also with `*n` 0 on timeout), CLOSED when the queue was shut down and is
/// empty, or INVALID_ARGUMENT (NULL `queue`, `out` or `n`, or `max` 0).
#[no_mangle]
pub extern "C" fn fastrpc_completion_queue_poll(
    queue: *const fastrpc_completion_queue,
    out: *mut fastrpc_completion,
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
        if timeout_ms > 0 && tokio::runtime::Handle::try_current().is_ok() {
            return super::invalid(
                "a waiting poll from a library thread (inside a callback or handler) would \
                 block it; poll with timeout 0 there, or from your own thread",
            );
        }
        let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
        let mut st = q.lock();
        loop {
            if !st.items.is_empty() {
                break;
            }
            if st.shut {
                return super::fail(&Error::fixed(
                    crate::ErrorKind::Closed,
                    "the completion queue was shut down",
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                unsafe { *n = 0 };
                return fastrpc_status::FASTRPC_STATUS_OK;
            }
            st = q
                .ready
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let k = st.items.len().min(max);
        for i in 0..k {
            let (tag, r) = st.items.pop_front().expect("counted");
            let status = r.status;
            unsafe {
                out.add(i).write(fastrpc_completion {
                    tag,
                    status,
                    response: super::box_into_raw(r),
                });
            }
        }
        let more = !st.items.is_empty();
        drop(st);
        if more {
            q.ready.notify_one();
        }
        unsafe { *n = k };
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Shuts the queue down: pollers wake, and once it is empty poll returns CLOSED. Calls still
/// in flight still complete into it. Any thread, including inside callbacks.
#[no_mangle]
pub extern "C" fn fastrpc_completion_queue_shutdown(
    queue: *const fastrpc_completion_queue,
) -> fastrpc_status {
    ffi_boundary!({
        let q = &arg_ref!(queue).queue;
        q.lock().shut = true;
        q.ready.notify_all();
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Frees the queue (NULL is allowed). Completions not yet polled are freed with it; calls
/// still in flight complete into nothing. No thread may be polling it.
#[no_mangle]
pub extern "C" fn fastrpc_completion_queue_free(queue: *mut fastrpc_completion_queue) {
    super::boundary_or((), || drop(unsafe { super::from_raw(queue) }))
}

pub(crate) fn sink(h: &QueueHandle) -> Arc<dyn Completion> {
    h.queue.clone()
}
