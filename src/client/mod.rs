//! The client: many concurrent calls over one connection, matched to out-of-order responses
//! by request id, batched by one writer, with deadlines that hold whether a call is queued or
//! sent.
//!
//! Calls enter through [`Client::call`] (async), [`Client::call_into`] (async, reusing the
//! caller's buffer: no allocation per call), [`Client::submit`] (a completion sink gets the
//! outcome: the base of callbacks and completion queues), or [`Client::send`]
//! (fire-and-forget). The connection tasks live in `conn.rs`; the blocking facade in
//! `blocking.rs`.

mod blocking;
mod conn;
pub(crate) mod table;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::Notify as TokioNotify;

pub use blocking::BlockingClient;

use crate::config::ClientConfig;
use crate::error::{Error, ErrorKind};
use crate::stats::{ErrorCounters, ErrorCounts, IoCounters, IoStats};
use crate::transport::Addr;
use table::{CellState, Conn, Notify, State, Wake};

/// Receives the outcome of calls made with [`Client::submit`]: exactly once per accepted
/// call, on a library thread, possibly concurrently with other completions. `result` is the
/// response value (borrowed for the duration of the call) or the error.
pub trait Completion: Send + Sync + 'static {
    /// Called once for each submitted call.
    fn complete(&self, tag: u128, result: Result<&[u8], &Error>);
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
    /// Bytes, flushes and frames.
    pub io: IoStats,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub calls: AtomicU64,
    pub responses: AtomicU64,
    pub sends: AtomicU64,
    pub errors: ErrorCounters,
    pub unexpected: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub io: Arc<IoCounters>,
}

pub(crate) struct Inner {
    pub cfg: ClientConfig,
    pub addr: Addr,
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    pub state: Mutex<State>,
    pub counters: Counters,
    pub drained: TokioNotify,
    pub rt: tokio::runtime::Handle,
}

impl Inner {
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the table half-updated in a way that
        // matters more than refusing every later call, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers outcomes collected under the lock.
    pub(crate) fn deliver(&self, wakes: &mut Vec<Wake>) {
        for w in wakes.drain(..) {
            match w {
                Wake::Waker(w) => w.wake(),
                Wake::Sink(s, tag, e) => {
                    self.counters.errors.add(e.kind(), 1);
                    s.complete(tag, Err(&e));
                }
            }
        }
    }

    /// Like [`Inner::deliver`] for paths that run on a caller's thread (a new call
    /// displacing a queued one, close): completion sinks run on a library thread instead,
    /// never inside the caller's own call.
    pub(crate) fn deliver_from_caller(&self, wakes: &mut Vec<Wake>) {
        let mut sinks = Vec::new();
        for w in wakes.drain(..) {
            match w {
                Wake::Waker(w) => w.wake(),
                Wake::Sink(s, tag, e) => {
                    self.counters.errors.add(e.kind(), 1);
                    sinks.push((s, tag, e));
                }
            }
        }
        if sinks.is_empty() {
            return;
        }
        self.rt.spawn(async move {
            for (s, tag, e) in sinks {
                s.complete(tag, Err(&e));
            }
        });
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

    /// Queues a call; returns its id. Fails at once on closed, backoff, overflow, too large.
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        name: &[u8],
        value: &[u8],
        deadline: Instant,
        notify: Notify,
    ) -> Result<u32, Error> {
        self.check_sizes(name, value)?;
        let mut wakes = Vec::new();
        let mut st = self.lock();
        self.admit(&mut st)?;
        if st.pending >= self.cfg.max_pending_requests {
            // With prioritize_new_requests the oldest queued call makes room. Its cell may
            // stay taken until its caller collects the error, so pending can pass the limit
            // by the number of such callers for a moment.
            let oldest = if self.cfg.prioritize_new_requests {
                st.oldest_queued()
            } else {
                None
            };
            let Some(old) = oldest else {
                return Err(Error::overflow());
            };
            if let Some(w) = st.fail(old, &Error::overflow_displaced()) {
                wakes.push(w);
            }
        }
        let id = st.alloc(deadline, notify);
        st.push_frame(id, name, value);
        self.after_push(&mut st, Some(deadline));
        drop(st);
        self.counters.calls.fetch_add(1, Relaxed);
        if !wakes.is_empty() {
            self.deliver_from_caller(&mut wakes);
        }
        Ok(id)
    }

    /// Refuses calls on a closed client or one backing off after a failed connect.
    fn admit(&self, st: &mut State) -> Result<(), Error> {
        if st.closed {
            return Err(Error::closed());
        }
        if let Conn::Backoff { until, err } = &st.conn {
            if Instant::now() < *until {
                return Err(err.clone());
            }
            st.conn = Conn::Idle;
        }
        Ok(())
    }

    /// After a frame was queued: start the connection task, wake the writer and timekeeper.
    fn after_push(self: &Arc<Self>, st: &mut State, deadline: Option<Instant>) {
        if st.burst == 0 {
            if let Some(w) = st.writer_waker.take() {
                w.wake();
            }
        }
        if let Some(d) = deadline {
            if st.timer_next.is_none_or(|t| d < t) {
                st.timer_next = Some(d);
                if let Some(w) = st.timer_waker.take() {
                    w.wake();
                }
            }
        }
        if !st.started {
            st.started = true;
            conn::start(self.clone());
        }
    }

    fn send_nowait(self: &Arc<Self>, name: &[u8], value: &[u8]) -> Result<(), Error> {
        self.check_sizes(name, value)?;
        let mut st = self.lock();
        self.admit(&mut st)?;
        if st.queued_nowait >= self.cfg.max_pending_requests {
            return Err(Error::overflow());
        }
        st.push_frame(0, name, value);
        self.after_push(&mut st, None);
        drop(st);
        self.counters.sends.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Frees a finished or abandoned call's cell.
    fn release(&self, st: &mut State, id: u32) {
        st.free(id);
        self.check_drained(st);
    }

    /// Wakes a draining `close` when the last waiting call is gone.
    #[inline]
    pub(crate) fn check_drained(&self, st: &State) {
        if st.closed && st.pending == 0 {
            self.drained.notify_waiters();
        }
    }

    pub(crate) fn close_now(&self) {
        let mut wakes = Vec::new();
        let mut st = self.lock();
        st.closed = true;
        st.shutdown = true;
        let n = st.fail_all(
            &[CellState::Queued, CellState::Sent],
            &Error::closed(),
            &mut wakes,
        );
        st.clear_queue();
        if let Some(w) = st.writer_waker.take() {
            w.wake();
        }
        if let Some(w) = st.timer_waker.take() {
            w.wake();
        }
        drop(st);
        let _ = n;
        self.deliver_from_caller(&mut wakes);
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
            state: Mutex::new(State::new(
                config.max_pending_requests,
                config.write_buffer_size,
            )),
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
        self.call_deadline_into(name, value, Instant::now() + timeout, &mut out)
            .await?;
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
        let deadline = Instant::now() + self.inner().cfg.request_timeout;
        self.call_deadline_into(name, value, deadline, resp).await
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
        let inner = self.inner();
        let id = match inner.enqueue(name, value, deadline, Notify::None) {
            Ok(id) => id,
            Err(e) => {
                inner.counters.errors.add(e.kind(), 1);
                return Err(e);
            }
        };
        Wait {
            inner,
            id,
            resp,
            done: false,
        }
        .await
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
        // Our own reference: the sink may run (and the last handle be dropped, say from a C
        // callback freeing the client) before this returns.
        let inner = self.inner().clone();
        let r = inner.enqueue(
            name,
            value,
            Instant::now() + timeout,
            Notify::Sink(sink, tag),
        );
        if let Err(e) = &r {
            inner.counters.errors.add(e.kind(), 1);
        }
        r.map(|_| ())
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
        self.inner().lock().pending
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner().counters;
        let connects = c.connects.load(Relaxed);
        ClientStats {
            calls: c.calls.load(Relaxed),
            responses: c.responses.load(Relaxed),
            sends: c.sends.load(Relaxed),
            errors: c.errors.snapshot(),
            unexpected_responses: c.unexpected.load(Relaxed),
            connects,
            reconnects: connects.saturating_sub(1),
            connect_failures: c.connect_failures.load(Relaxed),
            pending_requests: self.pending_requests() as u64,
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
                    {
                        let mut st = inner.lock();
                        st.closed = true;
                        if let Some(w) = st.writer_waker.take() {
                            w.wake();
                        }
                    }
                    if inner.lock().pending == 0 {
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

/// Waits for one call's outcome; dropping it abandons the call (its response, if any comes,
/// is dropped).
struct Wait<'a> {
    inner: &'a Arc<Inner>,
    id: u32,
    resp: &'a mut Vec<u8>,
    done: bool,
}

impl Future for Wait<'_> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inner = this.inner;
        let mut st = inner.lock();
        let Some(c) = st.cell(this.id) else {
            // Only this future frees its cell: reaching here is a bug, not a hang.
            this.done = true;
            return Poll::Ready(Err(Error::new(
                ErrorKind::Io,
                "internal error: call cell lost",
            )));
        };
        if c.state != CellState::Done {
            match &mut c.notify {
                Notify::Waker(w) if w.will_wake(cx.waker()) => {}
                n => *n = Notify::Waker(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        let r = match c.err.take() {
            None => {
                std::mem::swap(&mut c.resp, this.resp);
                c.resp.clear();
                Ok(())
            }
            Some(e) => Err(e),
        };
        inner.release(&mut st, this.id);
        drop(st);
        this.done = true;
        match &r {
            Ok(()) => inner.counters.responses.fetch_add(1, Relaxed),
            Err(e) => {
                inner.counters.errors.add(e.kind(), 1);
                0
            }
        };
        Poll::Ready(r)
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut st = self.inner.lock();
            if st.cell(self.id).is_some() {
                self.inner.release(&mut st, self.id);
            }
        }
    }
}
