//! The client: many concurrent calls over one connection, matched to out-of-order responses
//! by request id, batched by one writer, with deadlines that hold whether a call is queued or
//! sent.
//!
//! Calls enter through [`Client::call`] (async), [`Client::call_into`] (async, reusing the
//! caller's buffer: no allocation per call), [`Client::submit`] (a completion sink gets the
//! outcome: the base of callbacks and completion queues), or [`Client::send`]
//! (fire-and-forget). The connection tasks live in `conn.rs`; the blocking facade in
//! `blocking.rs`.

mod atomic_waker;
mod blocking;
mod conn;
mod queue;
mod read;
pub(crate) mod table;
mod write;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{
    AtomicBool, AtomicIsize, AtomicU64,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::Notify as TokioNotify;

pub use blocking::BlockingClient;
use queue::{Pushed, Refused, SubQueue};

use crate::config::ClientConfig;
use crate::error::{Error, ErrorKind};
use crate::stats::{ErrorCounters, ErrorCounts, IoCounters, IoStats};
use crate::transport::Addr;
use table::{
    word_id, word_state, Cell, Conn, Padded, Sink, SinkErr, Submit, Table, DONE, IN_BURST, QUEUED,
    SENT,
};

/// Receives the outcome of calls made with [`Client::submit`]: exactly once per accepted
/// call, on a library thread, possibly concurrently with other completions. `result` is the
/// response value (borrowed for the duration of the call) or the error.
pub trait Completion: Send + Sync + 'static {
    /// Called once for each submitted call.
    fn complete(&self, tag: u128, result: Result<&[u8], &Error>);
}

/// The identity of a call made with [`Client::submit_with_id`], for [`Client::cancel`]: its
/// request id, unique among the calls of its client until the id wraps after 2^32 - 1
/// calls (a completed call's id is never confused with a live call's before that).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallId(u32);

impl CallId {
    /// The id as a number (never 0), for C and other bindings.
    pub fn as_u64(self) -> u64 {
        self.0 as u64
    }

    /// The id from [`CallId::as_u64`]; a number that is no call's id gives an id that
    /// cancels nothing.
    pub fn from_u64(v: u64) -> CallId {
        CallId(u32::try_from(v).unwrap_or(0))
    }
}

/// How [`Client::close`] treats calls still waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseMode {
    /// Refuse new calls, wait up to this long for the waiting ones, then fail the rest with
    /// [`ErrorKind::Closed`].
    Drain(Duration),
    /// Fail every waiting call at once with [`ErrorKind::Closed`].
    Cancel,
}

/// A snapshot of a client's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Calls accepted (excluding fire-and-forget sends).
    pub calls: u64,
    /// Calls that got their response.
    pub responses: u64,
    /// Fire-and-forget sends accepted.
    pub sends: u64,
    /// Calls that failed, by kind (including those refused at once, like overflow).
    pub errors: ErrorCounts,
    /// Responses that arrived for no waiting call (late, duplicate or unknown id): dropped.
    pub unexpected_responses: u64,
    /// Connections established.
    pub connects: u64,
    /// Connections established after an earlier one (`connects - 1` at most).
    pub reconnects: u64,
    /// Connect attempts that failed.
    pub connect_failures: u64,
    /// Calls waiting now.
    pub pending_requests: u64,
    /// Batches a lone call wrote itself, on its caller's thread, instead of waking the writer
    /// (a call with nothing else waiting or queued; README, "How it works").
    pub lone_writes: u64,
    /// Bytes, flushes and frames.
    pub io: IoStats,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub responses: AtomicU64,
    pub lone_writes: AtomicU64,
    pub sends: AtomicU64,
    pub errors: ErrorCounters,
    pub unexpected: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub io: Arc<IoCounters>,
}

/// The states a call can be failed from (a bit set for [`Cell::claim`]).
pub(crate) const WAITING: u32 = 1 << QUEUED | 1 << SENT;

pub(crate) struct Inner {
    pub cfg: ClientConfig,
    pub addr: Addr,
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// The calls: completed without a lock.
    pub table: Table,
    /// The encoded requests the writer has not taken yet, sharded by thread.
    pub queue: SubQueue,
    /// The connection's state: the slow paths only (see `Submit`).
    pub sub: Mutex<Submit>,
    /// Hints of `sub`'s state that a call reads without the lock, each written under it:
    /// the writer's waker is in `sub` (so a new request must wake it), ...
    pub writer_parked: AtomicBool,
    /// ... `sub.timer_next` (`u64::MAX` when None): a call with an earlier deadline tells
    /// the timekeeper, ...
    pub timer_hint: AtomicU64,
    /// ... `sub.conn` is `Backoff`, ...
    pub backoff: AtomicBool,
    /// ... and the connection's tasks were started.
    pub started: AtomicBool,
    /// The writer holds a batch it took and has not finished writing (a draining close
    /// waits for it: fire-and-forget requests have no call to wait for).
    pub writing: AtomicBool,
    /// The connection's write side while connected (see `write.rs`): the writer task's, and
    /// a lone call's that writes its own request. Taken before `sub` when both are.
    pub out: Mutex<Option<write::Out>>,
    /// The connection's read side while connected (see `read.rs`): the reader task's, and a
    /// caller's that reads on its own thread.
    pub reading: Mutex<Option<read::Reading>>,
    /// The reader task found a caller reading (`read.rs`): the caller wakes it when done.
    pub reader_deferred: AtomicBool,
    /// A caller's pass found the connection's end, which the reader task has yet to act on
    /// (`read.rs`: a caller about to call waits for it). Cleared for each connection.
    pub read_ended: AtomicBool,
    /// The thread that holds `reading` now (`read.rs`: its completion sinks may call again,
    /// and must not wait for themselves), or 0.
    pub reading_holder: std::sync::atomic::AtomicUsize,
    /// The reader task's waker while it runs, for callers.
    pub reader_waker: Mutex<Option<Waker>>,
    /// The descriptor of `Client::read_fd` (closed when the last handle goes) and the socket
    /// it watches.
    pub read_epoll: Mutex<read::ReadEpoll>,
    /// Callers the reader woke with their responses that have not collected them yet. While
    /// some have not, a new request does not wake the writer: those callers are about to run
    /// and queue their next requests, and all of them should share one write. (Without this,
    /// the runtime runs the just-woken writer first and each write carries one frame.) Whoever
    /// brings it back to 0 wakes the writer. Signed: a caller may collect before the reader
    /// has counted its burst.
    /// On its own cache lines: every collected call of a burst writes it.
    pub burst: Padded<AtomicIsize>,
    /// The reader's last read completed more than one call: a burst of new calls (from
    /// callers outside the runtime, which `burst` does not count) may follow, which the
    /// writer should batch; a lone write is only for a call made after a read that completed
    /// one. Written by the reader only when it changes.
    pub many_done: AtomicBool,
    /// Early flushes: a shard holding this many bytes wakes the writer even while a burst's
    /// callers are still queueing (the server starts on what is queued while the rest come,
    /// instead of both sides taking turns on one batch). A 16th of `write_buffer_size` (at
    /// least 1 KiB); off (`usize::MAX`) with a `max_batch_delay`.
    pub early_flush: usize,
    /// A shard reached [`Inner::early_flush`] bytes: the writer writes although a burst's
    /// callers are still queueing (see `write::ready_to_write`). Set before the writer is
    /// woken, cleared by the writer when it takes the queue.
    pub flush_asked: AtomicBool,
    /// A deferred request (`Client::submit_deferred`) is queued: a request queued after it
    /// wakes the writer although its shard was not empty, so that a caller that never
    /// flushes holds back no one else's request. Cleared when the writer takes the queue.
    pub held: AtomicBool,
    /// No new calls: `close` was called (waiting calls may still finish when draining).
    /// Written under the `sub` lock, then every queue shard is locked (so a push sees it or
    /// is seen). Read by every call and every freed cell: on its own cache lines (with
    /// `shutdown`), away from what calls write.
    pub closed: Padded<AtomicBool>,
    /// Tear down now: waiting calls were failed and the connection ends.
    pub shutdown: AtomicBool,
    pub counters: Counters,
    pub drained: TokioNotify,
    pub rt: tokio::runtime::Handle,
}

impl Inner {
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, Submit> {
        // A panic while holding the lock cannot leave the queue half-updated in a way that
        // matters more than refusing every later call, so keep going.
        self.sub.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers sink outcomes (on a library thread).
    pub(crate) fn deliver(&self, sinks: &mut Vec<SinkErr>) {
        for (s, tag, e) in sinks.drain(..) {
            self.counters.errors.add(e.kind(), 1);
            complete_sink(&*s, tag, Err(&e));
        }
    }

    /// Like [`Inner::deliver`] for paths that run on a caller's thread (a new call
    /// displacing a queued one, close): completion sinks run on a library thread instead,
    /// never inside the caller's own call.
    pub(crate) fn deliver_from_caller(&self, sinks: &mut Vec<SinkErr>) {
        if sinks.is_empty() {
            return;
        }
        let sinks = std::mem::take(sinks);
        for (_, _, e) in &sinks {
            self.counters.errors.add(e.kind(), 1);
        }
        self.rt.spawn(async move {
            for (s, tag, e) in sinks {
                complete_sink(&*s, tag, Err(&e));
            }
        });
    }

    /// Frees a call's cell; the last one wakes a draining `close`.
    ///
    /// # Safety
    /// The caller holds the call (claimed it, or collected its outcome).
    pub(crate) unsafe fn free(&self, c: &Cell) {
        c.free();
        self.table.release();
        // The count of calls in use only when closing: it reads the line every new call
        // writes. (`SeqCst`, as `close`'s store of `closed` and its read of the count: one
        // of the two sees the other.)
        if self.closed.load(SeqCst) && self.table.pending() == 0 {
            self.drained.notify_waiters();
        }
    }

    /// Wakes a draining `close` when no call is left.
    pub(crate) fn check_drained(&self) {
        if self.closed.load(SeqCst) && self.table.pending() == 0 {
            self.drained.notify_waiters();
        }
    }

    /// Adds to [`Inner::burst`]; whoever brings it to 0 wakes the writer for what was queued.
    pub(crate) fn burst_add(&self, n: isize) {
        // `SeqCst`, as a push's add to the shard mask and its load of `burst` after it.
        if self.burst.fetch_add(n, SeqCst) + n == 0 && self.queue.maybe_nonempty() {
            self.wake_writer();
        }
    }

    /// Completes a call we claimed with an error: a waiting caller finds it in its cell and is
    /// woken; a sink's outcome goes to `sinks` (and the cell is freed).
    pub(crate) fn fail_claimed(&self, c: &Cell, id: u32, err: &Error, sinks: &mut Vec<SinkErr>) {
        // SAFETY (all three blocks): claimed by us.
        match unsafe { c.take_sink() } {
            Some((s, tag)) => {
                unsafe { self.free(c) };
                sinks.push((s, tag, err.clone()));
            }
            None => {
                unsafe { *c.err() = Some(err.clone()) };
                if let Ok(w) = c.publish(id, 0) {
                    if let Some(w) = w {
                        w.wake();
                    }
                } else {
                    unsafe { self.free(c) };
                }
            }
        }
    }

    /// Fails every call in `states` (a bit set). Returns how many failed.
    pub(crate) fn fail_all(&self, states: u32, err: &Error, sinks: &mut Vec<SinkErr>) -> usize {
        let mut n = 0;
        for i in 0..self.table.len() {
            let c = self.table.at(i);
            let w = c.load();
            let id = word_id(w);
            if id != 0 && states & (1 << word_state(w)) != 0 && c.claim(id, states) {
                self.fail_claimed(c, id, err, sinks);
                n += 1;
            }
        }
        n
    }

    /// Fails the waiting calls whose deadline (table ns) is at or before `now`. Returns the
    /// earliest deadline of the others.
    pub(crate) fn expire(&self, now: u64, sinks: &mut Vec<SinkErr>) -> Option<u64> {
        let mut next: Option<u64> = None;
        let err = Error::timeout();
        for i in 0..self.table.len() {
            let c = self.table.at(i);
            let w = c.load();
            let id = word_id(w);
            if id == 0 || WAITING & (1 << word_state(w)) == 0 {
                continue;
            }
            let d = c.deadline();
            if d <= now {
                if c.claim(id, WAITING) {
                    self.fail_claimed(c, id, &err, sinks);
                }
            } else {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        next
    }

    fn check_sizes(&self, name: &[u8], value: &[u8]) -> Result<(), Error> {
        let max = self.cfg.max_frame_size;
        if name.len() > max || value.len() > max {
            let (what, n) = if name.len() > max {
                ("name", name.len())
            } else {
                ("value", value.len())
            };
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("request {what} of {n} bytes exceeds max_frame_size {max}"),
            ));
        }
        Ok(())
    }

    /// Queues a call; returns its id and cell. Fails at once on closed, backoff, overflow,
    /// too large.
    ///
    /// No lock shared with other callers: the checks read atomics, one compare-and-swap reserves
    /// the call and its id, the cell is taken with a compare-and-swap, the request is encoded
    /// into this thread's queue shard, under whose lock the call reads the hints that a
    /// close, a failed connect or the timekeeper write before they lock every shard.
    pub(crate) fn enqueue<'a>(
        self: &'a Arc<Self>,
        name: &[u8],
        value: &[u8],
        dl: u64,
        sink: Option<Sink>,
        waker: Option<&Waker>,
        deferred: bool,
    ) -> Result<(u32, &'a Cell), Error> {
        self.check_sizes(name, value)?;
        self.admit()?;
        if self.cfg.caller_reads && self.table.pending() == 0 {
            // Nobody read the connection while no call was in flight (read.rs).
            self.idle_pass();
        }
        let first = match self.table.reserve(self.cfg.max_pending_requests) {
            Some(first) => first,
            None => {
                // With prioritize_new_requests the oldest queued call makes room. Its cell
                // may stay taken until its caller collects the error, so pending can pass
                // the limit by the number of such callers for a moment.
                let displaced = if self.cfg.prioritize_new_requests {
                    self.queue.claim_queued(&self.table)
                } else {
                    None
                };
                let Some((c, old)) = displaced else {
                    return Err(Error::overflow());
                };
                let mut sinks = Vec::new();
                self.fail_claimed(c, old, &Error::overflow_displaced(), &mut sinks);
                self.deliver_from_caller(&mut sinks);
                self.table.reserve_past_limit()
            }
        };
        let (id, cell) = self.table.alloc(first, dl, sink, waker);
        // Under the shard's lock, `closed` and `backoff` (a close or a failed connect sets
        // its flag, then locks every shard, then fails the calls it finds) and the
        // timekeeper's hint (it sets it, then locks every shard, then scans).
        let (pushed, hint) = loop {
            let check = || {
                (!self.closed.load(Relaxed) && !self.backoff.load(Relaxed))
                    .then(|| self.timer_hint.load(Relaxed))
            };
            let refused = match self.queue.push(id, id, name, value, check) {
                Ok(r) => break r,
                Err(Refused::Check) => self.admit_locked().err(),
                Err(Refused::Full(queued)) => Some(self.queue_full(queued)),
            };
            if let Some(e) = refused {
                // Unless a close (or a failed connect) already failed the call, it fails
                // here.
                if cell.claim(id, 1 << QUEUED) {
                    // SAFETY: claimed by us; the caller never sees this id.
                    unsafe { self.free(cell) };
                    return Err(e);
                }
                return Ok((id, cell));
            }
            // The backoff was over: push again.
        };
        // A lone call (nothing else waiting or queued, the writer parked, no batch delay)
        // writes its request itself: taking the writer's waker keeps the writer parked. A
        // deferred one leaves it queued for the caller's `flush`.
        let lone = !deferred
            && pushed.alone
            && self.writer_parked.load(SeqCst)
            && self.table.pending() == 1
            && self.queue.nowait() == 0
            && !self.writing.load(Relaxed)
            && self.cfg.max_batch_delay.is_zero()
            && self.burst.load(Relaxed) <= 0
            && !self.many_done.load(Relaxed);
        match lone.then(|| self.take_writer(&mut self.lock())).flatten() {
            Some(w) => write::write_lone(self, w),
            None => self.after_push(&pushed, deferred),
        }
        if dl < hint {
            self.tell_timekeeper(dl);
        }
        Ok((id, cell))
    }

    /// The error for a request that would take the bytes queued for the writer past
    /// `max_queued_bytes` (a request alone in the queue is always taken): calls that expire
    /// while queued free their pending slot, but not their bytes until the writer moves on,
    /// so without this bound a server that stops reading would grow the client's memory.
    fn queue_full(&self, queued: usize) -> Error {
        Error::new(
            ErrorKind::Overflow,
            format!(
                "{queued} bytes of requests wait to be written to {} (max_queued_bytes {}): \
                 the server is not reading fast enough",
                self.addr, self.cfg.max_queued_bytes
            ),
        )
    }

    /// Refuses calls on a closed client or one backing off after a failed connect.
    #[inline]
    fn admit(&self) -> Result<(), Error> {
        if self.closed.load(Relaxed) {
            return Err(Error::closed());
        }
        if self.backoff.load(Relaxed) {
            return self.admit_locked();
        }
        Ok(())
    }

    /// [`Inner::admit`] under the lock: a backoff that is over ends here.
    fn admit_locked(&self) -> Result<(), Error> {
        let mut sub = self.lock();
        if self.closed.load(Relaxed) {
            return Err(Error::closed());
        }
        if let Conn::Backoff { until, err } = &sub.conn {
            if Instant::now() < *until {
                return Err(err.clone());
            }
            sub.conn = Conn::Idle;
            self.backoff.store(false, Relaxed);
        }
        Ok(())
    }

    /// After a frame was queued: wake the writer if the frame made its shard non-empty
    /// (`first`), unless a burst of callers is still to queue theirs (the last of them wakes
    /// it, see `burst_add`); or if a batch delay waits for the buffer to fill and it did; or
    /// if the shard holds [`Inner::early_flush`] bytes; start the connection's tasks on the
    /// first call.
    fn after_push(self: &Arc<Self>, pushed: &Pushed, deferred: bool) {
        if deferred {
            // The caller writes it with `flush` (or a later call wakes the writer).
            if !self.held.load(Relaxed) {
                self.held.store(true, Relaxed);
            }
        } else if pushed.first || self.held.load(Relaxed) {
            // `SeqCst`, after the push's `SeqCst` add to the shard mask: the writer (or a
            // burst's last caller) stores, then loads the mask, also `SeqCst`.
            if self.burst.load(SeqCst) <= 0 {
                self.wake_writer();
            }
        } else if !self.cfg.max_batch_delay.is_zero()
            && pushed.shard_bytes >= self.cfg.write_buffer_size
        {
            self.wake_writer();
        } else if pushed.shard_bytes >= self.early_flush {
            // An early flush: a burst's callers are still queueing theirs, but what is queued
            // is worth a write now, so that the server starts on it while the rest come.
            // `SeqCst`, before the load of the writer's parked flag in `wake_writer`.
            self.flush_asked.store(true, SeqCst);
            self.wake_writer();
        }
        if !self.started.load(Acquire) {
            let mut sub = self.lock();
            if !sub.started {
                sub.started = true;
                self.started.store(true, Release);
                conn::start(self.clone());
            }
        }
    }

    /// Writes what is queued now: on this thread, with one non-blocking write as a lone
    /// call's, when the writer task is parked and no batch is being written (what the socket
    /// does not take at once the writer finishes); else the writer is woken (a running writer
    /// takes the queue on its own). Nothing when nothing is queued.
    pub(crate) fn flush_now(self: &Arc<Self>) {
        // `SeqCst`: a request pushed before this (on any thread, ordered by the caller) is
        // seen.
        if !self.queue.maybe_nonempty() {
            return;
        }
        let here = self.writer_parked.load(SeqCst)
            && !self.writing.load(Relaxed)
            && self.cfg.max_batch_delay.is_zero();
        match here.then(|| self.take_writer(&mut self.lock())).flatten() {
            Some(w) => write::write_lone(self, w),
            None => self.wake_writer(),
        }
    }

    /// A call's deadline `dl` is earlier than the timekeeper's: tell it.
    fn tell_timekeeper(&self, dl: u64) {
        let mut sub = self.lock();
        if sub.timer_next.is_none_or(|t| dl < t) {
            sub.timer_next = Some(dl);
            self.timer_hint.store(dl, Relaxed);
            if let Some(w) = sub.timer_waker.take() {
                drop(sub);
                w.wake();
            }
        }
    }

    /// Parks the writer: its waker goes into `sub`. The writer then looks at the queue
    /// again (`SeqCst`, as this store): a request pushed meanwhile may have missed the waker.
    pub(crate) fn park_writer(&self, sub: &mut Submit, w: &Waker) {
        match &sub.writer_waker {
            Some(old) if old.will_wake(w) => {}
            _ => sub.writer_waker = Some(w.clone()),
        }
        self.writer_parked.store(true, SeqCst);
    }

    /// The writer task's wait: `ready` looks at the state under the `sub` lock; when it has
    /// nothing, the writer parks and looks once more (`SeqCst`, after its parked flag: a
    /// request pushed before the park may have found no waker to wake). Ready takes the
    /// waker back.
    pub(crate) fn poll_writer<R>(
        &self,
        cx: &mut Context<'_>,
        mut ready: impl FnMut(&mut Submit) -> Option<R>,
    ) -> Poll<R> {
        let mut parked = false;
        loop {
            let mut st = self.lock();
            if let Some(r) = ready(&mut st) {
                if parked {
                    self.take_writer(&mut st);
                }
                return Poll::Ready(r);
            }
            if parked {
                return Poll::Pending;
            }
            self.park_writer(&mut st, cx.waker());
            parked = true;
        }
    }

    /// Takes the parked writer's waker (under the lock).
    pub(crate) fn take_writer(&self, sub: &mut Submit) -> Option<Waker> {
        self.writer_parked.store(false, Relaxed);
        sub.writer_waker.take()
    }

    /// Wakes the writer if it is parked. The caller changed what the writer looks at with a
    /// `SeqCst` write first.
    pub(crate) fn wake_writer(&self) {
        if self.writer_parked.load(SeqCst) {
            let w = self.take_writer(&mut self.lock());
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    fn send_nowait(self: &Arc<Self>, name: &[u8], value: &[u8]) -> Result<(), Error> {
        self.check_sizes(name, value)?;
        self.admit()?;
        if !self.queue.reserve_nowait(self.cfg.max_pending_requests) {
            return Err(Error::overflow());
        }
        let pushed = loop {
            let check =
                || (!self.closed.load(Relaxed) && !self.backoff.load(Relaxed)).then_some(());
            let refused = match self.queue.push(0, self.table.ticket(), name, value, check) {
                Ok((p, ())) => break p,
                Err(Refused::Check) => self.admit_locked().err(),
                Err(Refused::Full(queued)) => Some(self.queue_full(queued)),
            };
            if let Some(e) = refused {
                self.queue.unreserve_nowait();
                return Err(e);
            }
        };
        self.after_push(&pushed, false);
        self.counters.sends.fetch_add(1, Relaxed);
        Ok(())
    }

    pub(crate) fn close_now(&self) {
        let (writer, timer) = {
            let mut sub = self.lock();
            self.closed.store(true, SeqCst);
            self.shutdown.store(true, SeqCst);
            self.queue.clear();
            (self.take_writer(&mut sub), sub.timer_waker.take())
        };
        // (`queue.clear` locked every shard: a call queued after it saw `closed`; one
        // queued before is failed here.)
        let mut sinks = Vec::new();
        self.fail_all(WAITING, &Error::closed(), &mut sinks);
        for w in [writer, timer].into_iter().flatten() {
            w.wake();
        }
        self.deliver_from_caller(&mut sinks);
        self.drained.notify_waiters();
    }
}

/// A handle to a client. Cloning shares the client; when the last handle is dropped the client
/// closes (cancelling waiting calls) and its connection ends.
#[derive(Clone)]
pub struct Client {
    owner: Arc<Owner>,
}

struct Owner {
    inner: Arc<Inner>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.inner.close_read_fd();
        self.inner.close_now();
    }
}

impl Client {
    /// Creates a client for `config.addr`. Nothing connects until the first call. Tasks run
    /// on the caller's tokio runtime if there is one, else on the library's own.
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        Self::with_runtime(config, crate::runtime::handle())
    }

    pub(crate) fn with_runtime(
        config: ClientConfig,
        rt: tokio::runtime::Handle,
    ) -> Result<Client, Error> {
        config.validate()?;
        let addr = Addr::parse(&config.addr)?;
        let tls = match &config.tls {
            None => None,
            Some(t) => Some((
                crate::tls::client_config(t)?,
                crate::tls::server_name(t, addr.host())?,
            )),
        };
        let inner = Arc::new(Inner {
            table: Table::new(config.max_pending_requests),
            queue: SubQueue::new(config.write_buffer_size, config.max_queued_bytes),
            sub: Mutex::new(Submit::new()),
            writer_parked: AtomicBool::new(false),
            timer_hint: AtomicU64::new(u64::MAX),
            backoff: AtomicBool::new(false),
            started: AtomicBool::new(false),
            writing: AtomicBool::new(false),
            out: Mutex::new(None),
            reading: Mutex::new(None),
            reader_deferred: AtomicBool::new(false),
            read_ended: AtomicBool::new(false),
            reading_holder: std::sync::atomic::AtomicUsize::new(0),
            reader_waker: Mutex::new(None),
            read_epoll: Mutex::new(read::ReadEpoll::default()),
            burst: Padded(AtomicIsize::new(0)),
            many_done: AtomicBool::new(false),
            early_flush: early_flush_at(&config),
            flush_asked: AtomicBool::new(false),
            held: AtomicBool::new(false),
            closed: Padded(AtomicBool::new(false)),
            shutdown: AtomicBool::new(false),
            addr,
            tls,
            counters: Counters::default(),
            drained: TokioNotify::new(),
            rt,
            cfg: config,
        });
        Ok(Client {
            owner: Arc::new(Owner { inner }),
        })
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.owner.inner
    }

    /// The configuration the client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner().cfg
    }

    /// Calls `name` with `value` and returns the response value, within the configured
    /// `request_timeout`.
    pub async fn call(&self, name: &[u8], value: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.call_into(name, value, &mut out).await?;
        Ok(out)
    }

    /// Like [`Client::call`], with this call's own timeout.
    pub async fn call_timeout(
        &self,
        name: &[u8],
        value: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let deadline = self.inner().table.deadline_after(timeout);
        self.call_at(name, value, deadline, &mut out).await?;
        Ok(out)
    }

    /// Calls and puts the response value in `resp` (replacing its contents). The client
    /// swaps buffers with `resp` instead of copying, so a caller that reuses `resp` makes no
    /// allocation per call once warm.
    pub async fn call_into(
        &self,
        name: &[u8],
        value: &[u8],
        resp: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let inner = self.inner();
        let deadline = inner.table.deadline_after(inner.cfg.request_timeout);
        self.call_at(name, value, deadline, resp).await
    }

    /// Like [`Client::call_into`] with this call's own timeout.
    pub(crate) async fn call_timeout_into(
        &self,
        name: &[u8],
        value: &[u8],
        timeout: Duration,
        resp: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let deadline = self.inner().table.deadline_after(timeout);
        self.call_at(name, value, deadline, resp).await
    }

    /// Like [`Client::call_into`], ending with [`ErrorKind::Timeout`] at `deadline` whether
    /// the request is still queued or already sent.
    pub async fn call_deadline_into(
        &self,
        name: &[u8],
        value: &[u8],
        deadline: Instant,
        resp: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let deadline = self.inner().table.ns(deadline);
        self.call_at(name, value, deadline, resp).await
    }

    /// A call with its deadline in table ns.
    fn call_at<'a>(
        &'a self,
        name: &'a [u8],
        value: &'a [u8],
        deadline: u64,
        resp: &'a mut Vec<u8>,
    ) -> Wait<'a> {
        Wait {
            inner: self.inner(),
            req: Some((name, value, deadline)),
            cell: None,
            id: 0,
            resp,
            waker: (0, 0),
            done: false,
            immediate: None,
        }
    }

    /// Starts a call whose outcome goes to `sink` with `tag`, exactly once, on a library
    /// thread. An `Err` here means the call was not accepted and `sink` will not be called.
    pub fn submit(
        &self,
        name: &[u8],
        value: &[u8],
        timeout: Duration,
        sink: Arc<dyn Completion>,
        tag: u128,
    ) -> Result<(), Error> {
        self.submit_with_id(name, value, timeout, sink, tag)
            .map(|_| ())
    }

    /// [`Client::submit`], returning the call's identity for [`Client::cancel`].
    pub fn submit_with_id(
        &self,
        name: &[u8],
        value: &[u8],
        timeout: Duration,
        sink: Arc<dyn Completion>,
        tag: u128,
    ) -> Result<CallId, Error> {
        self.submit_inner(name, value, timeout, sink, tag, false)
    }

    /// [`Client::submit_with_id`] that leaves the request queued, without waking the
    /// connection's writer or writing it: a later [`Client::flush`] (or another call that
    /// wakes the writer) writes it. For callers that know more calls follow at once (a
    /// binding whose callers were just handed a batch of outcomes): the last of them flushes,
    /// and they share one write made on its thread, with no wakeup of a library thread. A
    /// request never flushed still fails at its deadline.
    pub fn submit_deferred(
        &self,
        name: &[u8],
        value: &[u8],
        timeout: Duration,
        sink: Arc<dyn Completion>,
        tag: u128,
    ) -> Result<CallId, Error> {
        self.submit_inner(name, value, timeout, sink, tag, true)
    }

    fn submit_inner(
        &self,
        name: &[u8],
        value: &[u8],
        timeout: Duration,
        sink: Arc<dyn Completion>,
        tag: u128,
        deferred: bool,
    ) -> Result<CallId, Error> {
        // Our own reference: the sink may run (and the last handle be dropped, say from a C
        // callback freeing the client) before this returns.
        let inner = self.inner().clone();
        let deadline = inner.table.deadline_after(timeout);
        let r = inner.enqueue(name, value, deadline, Some((sink, tag)), None, deferred);
        if let Err(e) = &r {
            inner.counters.errors.add(e.kind(), 1);
        }
        r.map(|(id, _)| CallId(id))
    }

    /// Writes the requests queued now (see [`Client::submit_deferred`]): on this thread
    /// when the connection's writer is idle (one non-blocking write; what the socket does not
    /// take at once the writer finishes), else by waking the writer. Nothing when nothing is
    /// queued or the client is not connected yet (the connection's first write takes them).
    pub fn flush(&self) {
        self.inner().flush_now();
    }

    /// Cancels call `id` if it still waits (queued or sent): it completes at once (its sink
    /// is told [`ErrorKind::Cancelled`] on a library thread), its pending slot is free, a
    /// request not yet written is never sent, and a response that still comes is dropped
    /// (counted in [`ClientStats::unexpected_responses`]). Returns false if the call had
    /// already completed (or never existed): then nothing happens. Racing the response, a
    /// deadline or `close`, exactly one of them completes the call.
    pub fn cancel(&self, id: CallId) -> bool {
        let inner = self.inner();
        let Some(c) = inner.table.lookup(id.0) else {
            return false;
        };
        if !c.claim(id.0, WAITING) {
            return false;
        }
        let mut sinks = Vec::new();
        inner.fail_claimed(c, id.0, &Error::cancelled(), &mut sinks);
        inner.deliver_from_caller(&mut sinks);
        true
    }

    /// A descriptor that is readable while the connection's socket holds bytes to read, for
    /// a thread outside the runtime that waits for its responses itself (poll, epoll, Go's
    /// netpoller) and then calls [`Client::read_now`]: one wakeup between a response and its
    /// caller instead of two (the runtime's worker, then the caller). It is an epoll
    /// instance (non-blocking, close-on-exec) that watches each connection's socket in turn
    /// (level-triggered), made on the first call and owned by the client: never close it. The
    /// caller may add descriptors of its own to it (`epoll_ctl`), e.g. its completion
    /// queue's, so that one wait covers both.
    pub fn read_fd(&self) -> std::io::Result<std::os::fd::RawFd> {
        self.inner().read_fd()
    }

    /// Reads and completes, on this thread, the responses that have arrived, unless the
    /// client's reader is reading now or no connection is up: one non-blocking pass of the
    /// reader (a few socket reads at most). The calls it completes are completed as the
    /// reader would (their sinks run on this thread). Returns how many. Without it the reader
    /// completes them all the same: this only saves the wakeup of the runtime's worker.
    pub fn read_now(&self) -> usize {
        // A sink run here may drop the last handle to the client.
        let inner = self.inner().clone();
        inner.read_now()
    }

    /// Sends a request that wants no response (request id 0). `Ok` means it was queued: it
    /// goes out with the next batch unless the connection fails first.
    pub fn send(&self, name: &[u8], value: &[u8]) -> Result<(), Error> {
        let inner = self.inner();
        let r = inner.send_nowait(name, value);
        if let Err(e) = &r {
            inner.counters.errors.add(e.kind(), 1);
        }
        r
    }

    /// Calls waiting for their response now (queued or sent).
    pub fn pending_requests(&self) -> usize {
        self.inner().table.pending()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner().counters;
        let connects = c.connects.load(Relaxed);
        ClientStats {
            calls: self.inner().queue.calls(),
            responses: c.responses.load(Relaxed),
            sends: c.sends.load(Relaxed),
            errors: c.errors.snapshot(),
            unexpected_responses: c.unexpected.load(Relaxed),
            connects,
            reconnects: connects.saturating_sub(1),
            connect_failures: c.connect_failures.load(Relaxed),
            pending_requests: self.pending_requests() as u64,
            lone_writes: c.lone_writes.load(Relaxed),
            io: c.io.snapshot(),
        }
    }

    /// Fails every waiting call with [`ErrorKind::Closed`] at once, without waiting.
    pub(crate) fn close_now_for_ffi(&self) {
        self.inner().close_now();
    }

    /// Stops new calls (they fail with [`ErrorKind::Closed`]) and ends the waiting ones as
    /// `mode` says; the connection then closes. Later calls to `close` return at once.
    pub async fn close(&self, mode: CloseMode) {
        let inner = self.inner();
        if let CloseMode::Drain(t) = mode {
            let wait = async {
                loop {
                    let notified = inner.drained.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    let written = {
                        let mut sub = inner.lock();
                        inner.closed.store(true, SeqCst);
                        // Every push that did not see `closed` is in the queue after this
                        // (the manager and writer read the queue under `sub`).
                        inner.queue.sync();
                        if let Some(w) = inner.take_writer(&mut sub) {
                            w.wake();
                        }
                        drop(sub);
                        // Fire-and-forget requests have no call: drained when written.
                        !inner.queue.maybe_nonempty() && !inner.writing.load(SeqCst)
                    };
                    if written && inner.table.pending() == 0 {
                        return;
                    }
                    notified.await;
                }
            };
            let _ = tokio::time::timeout(t, wait).await;
        }
        inner.close_now();
    }
}

/// One call: its first poll queues the request with the caller's waker already in the call's
/// cell; later polls look at the cell's state word. No lock but the queue's; dropping it
/// abandons the call (its response, if any comes, is dropped).
struct Wait<'a> {
    inner: &'a Arc<Inner>,
    /// Name, value and deadline, until the first poll queues them.
    req: Option<(&'a [u8], &'a [u8], u64)>,
    cell: Option<&'a Cell>,
    id: u32,
    resp: &'a mut Vec<u8>,
    /// The waker the cell holds (its data and vtable addresses): registered again only when
    /// the future is polled with another.
    waker: (usize, usize),
    done: bool,
    /// An error found at once (closed, backing off, overflow): handed out on the next poll,
    /// after yielding once, so a caller retrying in a loop lets the runtime's other tasks
    /// (deadlines among them) run.
    immediate: Option<Error>,
}

fn waker_key(w: &Waker) -> (usize, usize) {
    (w.data() as usize, w.vtable() as *const _ as usize)
}

impl Future for Wait<'_> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inner = this.inner;
        if let Some(e) = this.immediate.take() {
            return Poll::Ready(Err(e));
        }
        if let Some((name, value, deadline)) = this.req.take() {
            return match inner.enqueue(name, value, deadline, None, Some(cx.waker()), false) {
                Ok((id, cell)) => {
                    this.id = id;
                    this.cell = Some(cell);
                    this.waker = waker_key(cx.waker());
                    // Whoever completes the call wakes that waker.
                    Poll::Pending
                }
                Err(e) => {
                    this.done = true;
                    inner.counters.errors.add(e.kind(), 1);
                    // Yield once before handing it out (see `immediate`).
                    this.immediate = Some(e);
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            };
        }
        let (Some(cell), false) = (this.cell, this.done) else {
            return Poll::Ready(Err(Error::new(
                ErrorKind::Io,
                "internal error: a call was polled after it ended",
            )));
        };
        let id = this.id;
        let mut w = cell.load();
        if word_id(w) == id && word_state(w) != DONE {
            let key = waker_key(cx.waker());
            if key == this.waker {
                // The cell holds this waker (or its completer took it and is waking it).
                return Poll::Pending;
            }
            // Not kept if the completer took the slot already: it is publishing the outcome,
            // and `register` woke us to look again.
            this.waker = if cell.register(cx.waker()) {
                key
            } else {
                (0, 0)
            };
            w = cell.load();
            if word_id(w) == id && word_state(w) != DONE {
                return Poll::Pending;
            }
        }
        this.done = true;
        if word_id(w) != id {
            // Only this future frees its cell: reaching here is a bug, not a hang.
            return Poll::Ready(Err(Error::new(
                ErrorKind::Io,
                "internal error: call cell lost",
            )));
        }
        // SAFETY: DONE: the outcome is ours to take, and the cell ours to free.
        let r = match unsafe { cell.err().take() } {
            None => {
                std::mem::swap(unsafe { cell.resp() }, this.resp);
                Ok(())
            }
            Some(e) => Err(e),
        };
        unsafe { inner.free(cell) };
        if w & IN_BURST != 0 {
            inner.burst_add(-1);
        }
        if let Err(e) = &r {
            inner.counters.errors.add(e.kind(), 1);
        }
        Poll::Ready(r)
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let (Some(cell), false) = (self.cell, self.done) {
            if let Some(flags) = cell.abandon(self.id) {
                // SAFETY: `abandon` gave the cell to us.
                unsafe { self.inner.free(cell) };
                if flags & IN_BURST != 0 {
                    self.inner.burst_add(-1);
                }
            }
        }
    }
}

/// Hands a call's outcome to its sink. A sink that panics must not cost the calls completed
/// with it theirs (their cells are freed already), nor end the task delivering them: the
/// panic is caught and logged, and the next sink runs.
pub(crate) fn complete_sink(s: &dyn Completion, tag: u128, r: Result<&[u8], &Error>) {
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.complete(tag, r)));
    if done.is_err() {
        crate::log::emit(
            crate::log::Level::Error,
            "fastrpc: a completion sink panicked; the other calls complete as usual",
        );
    }
}

/// [`Inner::early_flush`] of a configuration.
fn early_flush_at(cfg: &ClientConfig) -> usize {
    if cfg.max_batch_delay.is_zero() {
        (cfg.write_buffer_size / 16).max(1024)
    } else {
        usize::MAX
    }
}
