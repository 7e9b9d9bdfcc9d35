//! `fastrpc_completion_queue`: calls submitted with a tag complete into a queue, and one
//! `fastrpc_completion_queue_poll` takes a whole batch of completions: the mode for Go and
//! other runtimes (one foreign call per batch, no thread per call in flight).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};

use super::blocking_poll::{self, PollState};
use super::pollfd::ReadyFd;
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
    /// Set by shutdown (and free): `fastrpc_client_call_queued` then refuses new calls.
    shut: AtomicBool,
}

struct QueueState {
    items: VecDeque<(u64, Box<Response>)>,
    shut: bool,
    /// Pollers blocked in `wait_timeout`: a completion wakes one only when some wait, so a
    /// busy queue costs no futex syscall per completion.
    waiters: usize,
    /// `fastrpc_completion_queue_fd`: readable while `items` is non-empty or `shut`, except
    /// while `reading` is above 0.
    ready_fd: ReadyFd,
    /// `fastrpc_completion_queue_read_poll` calls under way: a completion pushed meanwhile
    /// leaves the descriptor alone, and the last of them to end makes it readable if
    /// completions are left (most are its own, which it takes itself: two syscalls and a
    /// spurious wakeup of the descriptor's waiter saved per pass).
    reading: usize,
}

impl PollState for QueueState {
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

impl QueueState {
    /// Ends one `fastrpc_completion_queue_read_poll`'s hold: the last one makes the
    /// descriptor readable if completions are left (or the queue is shut down).
    fn end_reading(&mut self) {
        self.reading -= 1;
        if self.reading == 0 && (!self.items.is_empty() || self.shut) {
            self.ready_fd.set();
        }
    }
}

impl Queue {
    /// Shut down: it takes no new calls.
    pub(crate) fn is_shut(&self) -> bool {
        self.shut.load(Relaxed)
    }

    fn shut_down(&self) {
        self.shut.store(true, Relaxed);
        let mut st = self.lock();
        st.shut = true;
        st.ready_fd.set();
        drop(st);
        self.ready.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, tag: u64, r: Box<Response>) {
        let mut st = self.lock();
        let was_empty = st.items.is_empty();
        st.items.push_back((tag, r));
        if was_empty && st.reading == 0 {
            st.ready_fd.set();
        }
        // Pollers wait only while the queue is empty; the one this wakes passes the wakeup
        // on when it leaves completions behind (see poll).
        let wake = was_empty && st.waiters > 0;
        drop(st);
        if wake {
            self.ready.notify_one();
        }
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
        self.queue.shut.store(true, Relaxed);
        let mut st = self.queue.lock();
        st.shut = true;
        for (_, r) in st.items.drain(..) {
            response::give_back(r);
        }
        // Closes the descriptor now, not when the last call in flight lets go of the queue.
        st.ready_fd = ReadyFd::default();
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
                waiters: 0,
                ready_fd: ReadyFd::default(),
                reading: 0,
            }),
            ready: Condvar::new(),
            shut: AtomicBool::new(false),
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
        let st = q.lock();
        let mut st = match blocking_poll::wait_for_items(
            st,
            &q.ready,
            timeout_ms,
            n,
            "the completion queue was shut down",
        ) {
            Ok(st) => st,
            Err(status) => return status,
        };
        let k = take_batch(&mut st, out, max);
        blocking_poll::hand_on(st, &q.ready);
        unsafe { *n = k };
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Moves up to `max` completions from the queue into `out` (valid for `max` writes) and
/// returns how many; clears the descriptor when that empties the queue.
fn take_batch(st: &mut QueueState, out: *mut fastrpc_completion, max: usize) -> usize {
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
    if st.items.is_empty() && !st.shut {
        st.ready_fd.clear();
    }
    k
}

/// `fastrpc_client_read_now(reader)` then `fastrpc_completion_queue_poll(queue, out, max, 0,
/// n)` in one call, for a program that waits on the client's read descriptor with the
/// queue's descriptor added to it (`fastrpc_client_read_fd`) and takes its completions on
/// the same thread: the completions this call reads go into the queue without making the
/// queue's descriptor readable, since this call takes them itself. The descriptor keeps its
/// meaning outside the call: when it returns, the descriptor is readable if completions are
/// left in the queue (more than `max`, or completed meanwhile by another thread; those also
/// wake a blocking poller at once, as always) or the queue was shut down.
///
/// `*read` receives how many calls the read completed (into any queue, or their callbacks);
/// `*n` how many completions were taken, each then owned by the caller. `reader` NULL only
/// polls. Never blocks. Not from inside a library callback.
///
/// Returns OK, CLOSED when the queue was shut down and is empty, or INVALID_ARGUMENT (NULL
/// `queue`, `out`, `n` or `read`, or `max` 0).
#[no_mangle]
pub extern "C" fn fastrpc_completion_queue_read_poll(
    queue: *const fastrpc_completion_queue,
    reader: *const super::client::fastrpc_client,
    out: *mut fastrpc_completion,
    max: usize,
    n: *mut usize,
    read: *mut usize,
) -> fastrpc_status {
    ffi_boundary!({
        let q = &arg_ref!(queue).queue;
        arg_out!(out);
        arg_out!(n);
        arg_out!(read);
        if max == 0 {
            return super::invalid("`max` is 0");
        }
        unsafe {
            *n = 0;
            *read = 0;
        }
        /// Ends the call's hold on the descriptor, also when the read panics.
        struct Reading<'a>(&'a Queue);
        impl Drop for Reading<'_> {
            fn drop(&mut self) {
                self.0.lock().end_reading();
            }
        }
        q.lock().reading += 1;
        let hold = Reading(q);
        let got = super::client::read_now_of(reader);
        unsafe { *read = got };
        let mut st = q.lock();
        if st.items.is_empty() && st.shut {
            drop(st);
            drop(hold);
            return super::fail(&Error::fixed(
                crate::ErrorKind::Closed,
                "the completion queue was shut down",
            ));
        }
        let k = take_batch(&mut st, out, max);
        st.end_reading();
        std::mem::forget(hold); // ended just above
        blocking_poll::hand_on(st, &q.ready);
        unsafe { *n = k };
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Writes into `*fd` a file descriptor that is readable exactly while the queue holds
/// completions or is shut down, for the caller's own epoll, poll, select, libuv, asyncio
/// (`loop.add_reader`) or Go netpoller: no thread needs to block in
/// `fastrpc_completion_queue_poll`. It is an eventfd (non-blocking, close-on-exec) owned by
/// the queue: never read, write or close it; it stays valid until
/// `fastrpc_completion_queue_free`. Every call returns the same descriptor (made on the
/// first call, so queues that are never watched hold no descriptor).
///
/// Semantics are level-triggered: the descriptor becomes readable when the queue goes from
/// empty to non-empty (or is shut down) and stops being readable when a poll takes the last
/// completion. Drain pattern, when the descriptor is reported readable:
/// `fastrpc_completion_queue_poll(q, out, max, 0, &n)` with timeout 0 until it returns
/// `n == 0` (or CLOSED after shutdown). With level-triggered epoll taking one batch per
/// wakeup is also correct: the descriptor stays readable while completions remain. With
/// `EPOLLET` the drain loop is required. Cost: one eventfd write when the queue becomes
/// non-empty and one read when a poll empties it; nothing per completion in between.
///
/// Returns OK, INVALID_ARGUMENT (NULL `queue` or `fd`), or IO when the eventfd cannot be
/// created (the process is out of descriptors). Any thread.
#[no_mangle]
pub extern "C" fn fastrpc_completion_queue_fd(
    queue: *const fastrpc_completion_queue,
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
                format!("cannot create the completion queue's eventfd: {e}"),
            )),
        }
    })
}

/// Shuts the queue down: pollers wake, and once it is empty poll returns CLOSED. Calls still
/// in flight still complete into it; new calls for it are refused
/// (`fastrpc_client_call_queued` returns CLOSED). Any thread, including inside callbacks.
///
/// Returns OK, or INVALID_ARGUMENT (NULL `queue`).
#[no_mangle]
pub extern "C" fn fastrpc_completion_queue_shutdown(
    queue: *const fastrpc_completion_queue,
) -> fastrpc_status {
    ffi_boundary!({
        arg_ref!(queue).queue.shut_down();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::{Duration, Instant};

    fn readable(fd: i32) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    /// A new queue (through the C ABI) and its Rust side.
    fn new_queue() -> (*mut fastrpc_completion_queue, Arc<Queue>) {
        let mut q = std::ptr::null_mut();
        assert_eq!(
            fastrpc_completion_queue_new(&mut q),
            fastrpc_status::FASTRPC_STATUS_OK
        );
        let handle = unsafe { super::super::as_ref(q as *const fastrpc_completion_queue) }
            .unwrap()
            .queue
            .clone();
        (q, handle)
    }

    /// The descriptor is level-triggered: readable from the first completion until a poll
    /// takes the last one, also across partial takes; readable again on the next one; and
    /// readable after shutdown while empty.
    #[test]
    fn the_fd_is_readable_exactly_while_completions_wait() {
        let (q, handle) = new_queue();
        // Completions already waiting when the descriptor is first asked for.
        handle.push(1, response::take());
        let mut fd = -1;
        assert_eq!(
            fastrpc_completion_queue_fd(q, &mut fd),
            fastrpc_status::FASTRPC_STATUS_OK
        );
        assert!(readable(fd));
        handle.push(2, response::take());
        handle.push(3, response::take());
        let mut out: Vec<fastrpc_completion> = (0..3)
            .map(|_| fastrpc_completion {
                tag: 0,
                status: fastrpc_status::FASTRPC_STATUS_OK,
                response: std::ptr::null_mut(),
            })
            .collect();
        let mut tags = Vec::new();
        for left in [2, 1, 0] {
            let mut n = 0;
            let s = fastrpc_completion_queue_poll(q, out.as_mut_ptr(), 1, 0, &mut n);
            assert_eq!((s, n), (fastrpc_status::FASTRPC_STATUS_OK, 1));
            tags.push(out[0].tag);
            super::super::response::fastrpc_response_free(out[0].response);
            assert_eq!(readable(fd), left > 0, "{left} left");
        }
        assert_eq!(tags, [1, 2, 3]);
        let mut n = 9;
        let s = fastrpc_completion_queue_poll(q, out.as_mut_ptr(), 3, 0, &mut n);
        assert_eq!((s, n), (fastrpc_status::FASTRPC_STATUS_OK, 0));
        assert!(!readable(fd));
        handle.push(4, response::take());
        assert!(readable(fd));
        let s = fastrpc_completion_queue_poll(q, out.as_mut_ptr(), 3, 0, &mut n);
        assert_eq!(
            (s, n, out[0].tag),
            (fastrpc_status::FASTRPC_STATUS_OK, 1, 4)
        );
        super::super::response::fastrpc_response_free(out[0].response);
        assert!(!readable(fd));
        assert_eq!(
            fastrpc_completion_queue_shutdown(q),
            fastrpc_status::FASTRPC_STATUS_OK
        );
        assert!(readable(fd));
        let s = fastrpc_completion_queue_poll(q, out.as_mut_ptr(), 3, 0, &mut n);
        assert_eq!(s, fastrpc_status::FASTRPC_STATUS_CLOSED);
        assert!(readable(fd));
        fastrpc_completion_queue_free(q);
        drop(handle);
    }

    /// `fastrpc_completion_queue_read_poll` (here with no client: its poll and its hold on the
    /// descriptor): completions pushed while a read-poll is under way leave the descriptor
    /// alone (never signalled); the last read-poll to end makes it readable when completions
    /// are left, and leaves it alone when it took them all; outside a read-poll a push makes
    /// it readable as always. Refusals: NULL arguments and `max` 0; CLOSED once shut down
    /// and empty.
    #[test]
    fn a_read_poll_leaves_the_fd_alone_for_what_it_takes() {
        let (q, handle) = new_queue();
        let mut fd = -1;
        assert_eq!(
            fastrpc_completion_queue_fd(q, &mut fd),
            fastrpc_status::FASTRPC_STATUS_OK
        );
        let ok = fastrpc_status::FASTRPC_STATUS_OK;
        // One read-poll of up to `max`: its status and the tags it took (responses freed).
        let read_poll = |max: usize| {
            let mut out: Vec<fastrpc_completion> = (0..max.max(1))
                .map(|_| fastrpc_completion {
                    tag: 0,
                    status: ok,
                    response: std::ptr::null_mut(),
                })
                .collect();
            let (mut n, mut read) = (99, 99);
            let s = fastrpc_completion_queue_read_poll(
                q,
                std::ptr::null(),
                out.as_mut_ptr(),
                max,
                &mut n,
                &mut read,
            );
            if s == ok {
                assert_eq!(read, 0, "no client: nothing read");
            }
            let tags: Vec<u64> = out[..if s == ok { n } else { 0 }]
                .iter()
                .map(|c| {
                    super::super::response::fastrpc_response_free(c.response);
                    c.tag
                })
                .collect();
            (s, tags)
        };
        let signalled = || handle.lock().ready_fd.is_signalled();

        // Another read-poll under way (as a reading thread's would be): pushes leave the
        // descriptor alone; this one takes them, and the other's end finds none left.
        handle.lock().reading += 1;
        handle.push(1, response::take());
        handle.push(2, response::take());
        assert!(!signalled() && !readable(fd));
        assert_eq!(read_poll(4), (ok, vec![1, 2]));
        handle.lock().end_reading();
        assert!(!signalled() && !readable(fd));

        // Left in the queue when the last read-poll ends: readable.
        handle.lock().reading += 1;
        handle.push(3, response::take());
        handle.push(4, response::take());
        handle.push(5, response::take());
        assert_eq!(read_poll(1), (ok, vec![3]));
        assert!(!signalled(), "another read-poll is still under way");
        handle.lock().end_reading();
        assert!(signalled() && readable(fd));
        assert_eq!(read_poll(4), (ok, vec![4, 5]));
        assert!(!signalled() && !readable(fd));

        // Outside a read-poll, as always.
        handle.push(6, response::take());
        assert!(readable(fd));
        assert_eq!(read_poll(4), (ok, vec![6]));
        assert!(!readable(fd));
        assert_eq!(handle.lock().reading, 0);

        // Refusals, and the end.
        let invalid = fastrpc_status::FASTRPC_STATUS_INVALID_ARGUMENT;
        assert_eq!(read_poll(0).0, invalid);
        let mut one = [fastrpc_completion {
            tag: 0,
            status: ok,
            response: std::ptr::null_mut(),
        }];
        let (mut n, mut read) = (0usize, 0usize);
        let (o, pn, pr): (*mut fastrpc_completion, *mut usize, *mut usize) =
            (one.as_mut_ptr(), &mut n, &mut read);
        let nul = std::ptr::null();
        let bad =
            |queue, out, n, read| fastrpc_completion_queue_read_poll(queue, nul, out, 1, n, read);
        assert_eq!(bad(std::ptr::null(), o, pn, pr), invalid);
        assert_eq!(bad(q, std::ptr::null_mut(), pn, pr), invalid);
        assert_eq!(bad(q, o, std::ptr::null_mut(), pr), invalid);
        assert_eq!(bad(q, o, pn, std::ptr::null_mut()), invalid);
        assert_eq!(handle.lock().reading, 0);
        assert_eq!(fastrpc_completion_queue_shutdown(q), ok);
        assert_eq!(read_poll(4).0, fastrpc_status::FASTRPC_STATUS_CLOSED);
        assert!(readable(fd));
        assert_eq!(handle.lock().reading, 0);
        fastrpc_completion_queue_free(q);
        drop(handle);
    }

    /// Completions wake pollers only when some wait; the woken one passes the wakeup on.
    /// Bursts of 4 completions meet 4 pollers taking one each: every burst is taken well
    /// within the pollers' 5 s wait (a lost wakeup would leave one behind until then).
    #[test]
    fn every_completion_reaches_a_waiting_poller_promptly() {
        let (q, handle) = new_queue();
        const BURSTS: usize = 300;
        let taken = Arc::new(AtomicUsize::new(0));
        let qp = q as usize;
        let pollers: Vec<_> = (0..4)
            .map(|_| {
                let taken = taken.clone();
                std::thread::spawn(move || {
                    let q = qp as *const fastrpc_completion_queue;
                    let mut tags = Vec::new();
                    loop {
                        let mut out = [fastrpc_completion {
                            tag: 0,
                            status: fastrpc_status::FASTRPC_STATUS_OK,
                            response: std::ptr::null_mut(),
                        }];
                        let mut n = 0;
                        let s = fastrpc_completion_queue_poll(q, out.as_mut_ptr(), 1, 5000, &mut n);
                        if s == fastrpc_status::FASTRPC_STATUS_CLOSED {
                            return tags;
                        }
                        assert_eq!(s, fastrpc_status::FASTRPC_STATUS_OK);
                        for c in &out[..n] {
                            tags.push(c.tag);
                            super::super::response::fastrpc_response_free(c.response);
                            taken.fetch_add(1, SeqCst);
                        }
                    }
                })
            })
            .collect();
        let t0 = Instant::now();
        let mut slowest = Duration::ZERO;
        for b in 0..BURSTS {
            let start = Instant::now();
            for i in 0..4 {
                handle.push((b * 4 + i) as u64, response::take());
            }
            while taken.load(SeqCst) < (b + 1) * 4 {
                assert!(
                    start.elapsed() < Duration::from_secs(2),
                    "burst {b}: a completion was left in the queue with pollers waiting"
                );
                std::thread::yield_now();
            }
            slowest = slowest.max(start.elapsed());
        }
        assert_eq!(
            fastrpc_completion_queue_shutdown(q),
            fastrpc_status::FASTRPC_STATUS_OK
        );
        let mut all: Vec<u64> = pollers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..(BURSTS * 4) as u64).collect::<Vec<_>>());
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "slowest burst {slowest:?}"
        );
        fastrpc_completion_queue_free(q);
    }
}
