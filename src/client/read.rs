//! The client's read side: the reader task, which reads responses and completes their calls
//! a whole read at a time, and the caller's read pass ([`Inner::read_now`]), on which a
//! thread outside the runtime that waits for the socket itself (through the descriptor of
//! [`Inner::read_fd`]) reads and completes what has arrived, instead of waiting for the
//! reader task to be woken and hand the responses over.
//!
//! Why: a caller outside the runtime (the Go binding's lone call) waiting for its response
//! waits for two wakeups in a row, the runtime's worker from epoll, then the caller from the
//! completion queue's descriptor; on a VM each can take tens of microseconds. A caller that
//! waits for the socket is woken once, and completes its own call.
//!
//! The connection's [`FrameReader`] and the reader's scratch vectors live in [`Reading`],
//! behind `Inner::reading`: whoever holds that lock reads. The reader task tries it for each
//! pass and each poll, and never waits for a caller: finding it taken, it leaves a flag, and
//! the caller wakes it on release (`Held`). A caller's pass only tries it too, reads the
//! socket directly (a `recv`, which registers nothing with the runtime: the reader task stays
//! registered for the socket's readiness from its own last poll, so what arrives next wakes
//! it), and wakes the task when it stops with bytes left or the connection ending. The
//! reader task stays responsible for every byte: a caller's pass is only ever a head start.
//!
//! Caller reads (`ClientConfig::caller_reads`): the program promises to read while its calls
//! are in flight, so the runtime watches the socket for writing only
//! (`transport::RawStream::Direct`) and the reader task is woken by no arrival, only by the
//! program's passes (bytes they left, a partial frame's read timeout, the connection's end).
//! That saves a worker thread's wakeup per arrival, which on a VM costs as much as the
//! program's own. Nobody reads while no call is in flight, so before a call is queued then,
//! `idle_pass` reads what came meanwhile (waiting for another reader when the socket holds
//! something): a late response is dropped, and a connection the server closed is ended
//! before the call could be written to it. A program's pass that finds the state taken
//! leaves `reader_deferred`, as the reader task does, so that whoever lets go has the task
//! read again: a waiter that is only told of new arrivals (Go's netpoller is edge-triggered)
//! would otherwise miss what came while the holder was letting go. The peer's close alone
//! wakes the reader task (`hang_up_watch`), which then reads to the end and ends the
//! connection: else a server's close while no call is in flight would go unanswered.

use std::future::{poll_fn, Future};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::{pin, Pin};
use std::sync::atomic::fence;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::unix::AsyncFd;

use crate::error::{Error, ErrorKind};
use crate::guard::{guarded_sync, Task};
use crate::protocol::frame::{parse_response, Parse};
use crate::wire::{spin_then, FrameReader, SpinGate, SPIN_MAX_IN_FLIGHT};

use super::table::IN_BURST;
use super::Inner;

/// Most socket reads in one caller's pass: a caller is not kept reading a flood that is not
/// its own (the reader task, woken, takes over).
const PASS_READS: usize = 8;

/// How long a caller about to write to a connection whose peer has closed waits for another
/// reader's verdict (`Inner::idle_pass`). Readers hold the state only while they read and
/// run completion sinks, never across a wait for I/O; the bound is for a sink that blocks on
/// something the caller holds.
const IDLE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a caller in a runtime's task (an async call) waits instead: the worker's other
/// tasks (reader tasks, the timekeeper) wait with it.
const IDLE_WAIT_ON_RUNTIME: std::time::Duration = std::time::Duration::from_millis(10);

thread_local! {
    /// Its address names this thread (`Inner::reading_holder`).
    static THREAD_MARK: u8 = const { 0 };
}

fn this_thread() -> usize {
    THREAD_MARK.with(|m| m as *const u8 as usize)
}

/// Marks this thread as the holder of `inner`'s reader state while it lives (the mark it
/// replaced, this thread's own when nested, is restored). Made and dropped under the lock.
struct Marked<'a>(&'a Inner, usize);

impl Marked<'_> {
    fn new(inner: &Inner) -> Marked<'_> {
        Marked(inner, inner.reading_holder.swap(this_thread(), Relaxed))
    }
}

impl Drop for Marked<'_> {
    fn drop(&mut self) {
        self.0.reading_holder.store(self.1, Relaxed);
    }
}

/// A connection's read side and the reader's scratch space.
pub(crate) struct Reading {
    r: FrameReader,
    /// Bytes [`FrameReader::data`] must hold before the next frame can be parsed.
    need: usize,
    /// A caller's pass found the connection's end: the reader task ends it with this.
    ended: Option<Error>,
    wakers: Vec<Waker>,
    sinks: Vec<(Arc<dyn super::Completion>, u128, usize, usize)>,
    /// Claimed calls with a waiting caller: (cell index, id, value start, value end).
    claimed: Vec<(usize, u32, usize, usize)>,
}

/// The descriptor of [`Inner::read_fd`] and the socket it watches now.
pub(crate) struct ReadEpoll {
    ep: Option<OwnedFd>,
    /// The connection's socket while its reader runs, else -1.
    sock: RawFd,
}

impl Default for ReadEpoll {
    fn default() -> ReadEpoll {
        ReadEpoll { ep: None, sock: -1 }
    }
}

/// The reading lock held by anyone but the reader task. Released, it wakes the reader task
/// if the task found the lock taken meanwhile (`Inner::reader_deferred`): the task does not
/// wait for a caller, it leaves the flag and goes back to its worker.
struct Held<'a> {
    g: Option<MutexGuard<'a, Option<Reading>>>,
    inner: &'a Inner,
    /// The holder mark this thread replaced (see [`Marked`]), restored before the unlock.
    prev: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Unmarked while the lock is still held.
        self.inner.reading_holder.store(self.prev, Relaxed);
        drop(self.g.take());
        // Against the task's store-then-try_lock: one of the two sees the other.
        fence(SeqCst);
        if self.inner.reader_deferred.swap(false, SeqCst) {
            self.inner.wake_reader();
        }
    }
}

impl Inner {
    #[inline]
    pub(crate) fn reading(&self) -> MutexGuard<'_, Option<Reading>> {
        self.reading.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reader_waker(&self) -> MutexGuard<'_, Option<Waker>> {
        self.reader_waker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the reader task (if one runs).
    fn wake_reader(&self) {
        let w = self.reader_waker().clone();
        if let Some(w) = w {
            w.wake();
        }
    }

    fn read_epoll(&self) -> MutexGuard<'_, ReadEpoll> {
        self.read_epoll.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A descriptor that is readable while the connection's socket holds bytes to read (a
    /// non-blocking epoll instance watching the socket of each connection in turn,
    /// level-triggered), created on first use and kept for the client's life; the caller may
    /// add descriptors of its own to it (`epoll_ctl`). Wait on it, then call
    /// [`Inner::read_now`]. Takes only the descriptor's own lock (a completion sink may call
    /// it while the reading lock is held).
    pub(crate) fn read_fd(&self) -> std::io::Result<RawFd> {
        let mut re = self.read_epoll();
        if let Some(fd) = re.ep.as_ref() {
            return Ok(fd.as_raw_fd());
        }
        // SAFETY: plain syscall; the descriptor is owned below.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: just created, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Non-blocking, as event loops expect of what they watch (Go's os.NewFile only puts a
        // non-blocking descriptor in its netpoller).
        // SAFETY: plain fcntl on our descriptor.
        if unsafe { libc::fcntl(raw, libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if re.sock >= 0 {
            watch(raw, re.sock)?;
        }
        re.ep = Some(fd);
        Ok(raw)
    }

    /// Closes the descriptor of [`Inner::read_fd`] (the client is freed).
    pub(crate) fn close_read_fd(&self) {
        let fd = self.read_epoll().ep.take();
        drop(fd);
    }

    /// Reads and completes, on the calling thread, the responses that have arrived, unless
    /// the reader task is reading now or the client is not connected: one non-blocking pass
    /// of the reader (at most [`PASS_READS`] socket reads). Completion sinks run on this
    /// thread. Returns the number of calls it completed.
    pub(crate) fn read_now(&self) -> usize {
        self.read_pass(false).unwrap_or(0)
    }

    /// Caller-reads mode (`ClientConfig::caller_reads`), before a call is queued while none
    /// is in flight: nobody has read the connection since its last call, so read what
    /// arrived meanwhile now (late responses of calls that gave up, the server's close, a
    /// TLS alert). If the connection has ended, end it here, before the call can be written
    /// to it: the call stays queued and goes out on the next connection.
    ///
    /// When another holds the reader's state (a caller that went idle at the same time, the
    /// reader task, a program's pass running a completion sink), this call must not be
    /// written before that reader's verdict if the server has closed: so if a pass already
    /// found the connection's end, or the socket holds anything or reports its peer's close
    /// (`poll`, no read), the holder is waited for (yielding, then sleeping, so that it runs)
    /// and the pass made after it, at most [`IDLE_WAIT`] ([`IDLE_WAIT_ON_RUNTIME`] in a
    /// runtime's task). A quiet connection is not waited for. A completion sink of this
    /// client's on this thread calls without waiting: this thread is the reader.
    pub(crate) fn idle_pass(&self) {
        if self.reading_holder.load(Relaxed) == this_thread() {
            return;
        }
        let mut start = None;
        let mut turn = 0u32;
        while self.read_pass(true).is_none() {
            let t0 = *start.get_or_insert_with(std::time::Instant::now);
            if turn == 0 && !self.read_ended.load(SeqCst) && !self.peer_spoke() {
                return;
            }
            let bound = if tokio::task::try_id().is_some() {
                IDLE_WAIT_ON_RUNTIME
            } else {
                IDLE_WAIT
            };
            if t0.elapsed() >= bound {
                return;
            }
            if turn < 8 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(20 << (turn - 8).min(5)));
            }
            turn += 1;
        }
    }

    /// Whether the socket of the connection the reader reads now holds anything (bytes: a
    /// late response, a TLS close_notify or alert, which may come ahead of the TCP close) or
    /// reports its peer's close, a reset or an error; nothing is read. False without a
    /// reader.
    fn peer_spoke(&self) -> bool {
        // Held across the poll: the reader's end clears `sock` under it before the socket
        // can close, so the number is the socket's.
        let re = self.read_epoll();
        if re.sock < 0 {
            return false;
        }
        let mut p = libc::pollfd {
            fd: re.sock,
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one pollfd on the stack, no wait, on an open socket (above).
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents != 0
    }

    /// [`Inner::read_now`]: None when another holds the reader's state. With `end`
    /// (`idle_pass`), a connection found ended is ended here (the writer then writes nothing
    /// more to it), before the state is let go: later, it could be a newer connection's.
    fn read_pass(&self, end: bool) -> Option<usize> {
        let g = match self.reading.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => {
                // A panic left the reader's state half-done: the reader task ends the
                // connection (and a new one clears the mark). Released through `Held`, as
                // the task may have found it taken.
                drop(Held {
                    g: Some(e.into_inner()),
                    inner: self,
                    prev: self.reading_holder.swap(this_thread(), Relaxed),
                });
                return Some(0);
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                if !self.cfg.caller_reads || end {
                    // The reader task is reading, or will: it is registered for what comes.
                    // (`idle_pass` waits for the holder instead.)
                    return None;
                }
                // Nothing else will read what arrives while the holder lets go after its
                // last read: ask the holder to have the reader task look again (`Held`,
                // `wait`). Flag set, then tried again, with a fence between, as the holder
                // unlocks, fences and then looks: one sees the other.
                self.reader_deferred.store(true, SeqCst);
                fence(SeqCst);
                match self.reading.try_lock() {
                    Ok(g) => g,
                    Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => return None,
                }
            }
        };
        let mut held = Held {
            g: Some(g),
            inner: self,
            prev: self.reading_holder.swap(this_thread(), Relaxed),
        };
        let Some(rs) = held.g.as_mut().and_then(|g| g.as_mut()) else {
            return Some(0);
        };
        if let Some(e) = &rs.ended {
            if end {
                super::conn::end_connection(self, e.clone());
            }
            return Some(0);
        }
        // A read timeout's timer needs the runtime's context.
        let _rt = self.rt.enter();
        let task = self.reader_waker().clone();
        let r = guarded_sync(Task::ClientReadNow, || pass(self, rs, task.as_ref()));
        let done = match r {
            Ok(done) => done,
            Err(e) => {
                rs.ended = Some(e);
                0
            }
        };
        let ended = rs.ended.is_some();
        if ended {
            self.read_ended.store(true, SeqCst);
        }
        if ended && end {
            super::conn::end_connection(self, rs.ended.clone().expect("ended"));
        }
        drop(held);
        if ended {
            // The reader task ends the connection (again, with `end`: harmless).
            self.wake_reader();
        }
        Some(done)
    }
}

/// Watches `sock` in `ep` (level-triggered: readable while it holds bytes).
fn watch(ep: RawFd, sock: RawFd) -> std::io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: sock as u64,
    };
    // SAFETY: both descriptors are open; `ev` outlives the call.
    if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, sock, &mut ev) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    Err(e)
}

/// A caller's pass: reads what the socket holds (directly: see
/// `transport::reading_directly`) and completes it. Ends with the socket empty, the
/// connection's end recorded, or bytes left and the task woken to take them. The reader
/// task stays registered with the runtime for the socket's readiness (its last poll of the
/// socket registered it; a direct read registers nothing), so it is woken by what comes next
/// whether or not a caller reads it; in caller-reads mode it is not, and what comes next is
/// the program's to read.
fn pass(inner: &Inner, rs: &mut Reading, task: Option<&Waker>) -> usize {
    // The task's waker: a read timeout's timer set by this pass wakes the task.
    let mut cx = Context::from_waker(task.unwrap_or(Waker::noop()));
    let mut done = 0;
    for _ in 0..PASS_READS {
        match complete(inner, rs) {
            Ok(n) => done += n,
            Err(e) => {
                rs.ended = Some(e);
                return done;
            }
        }
        match crate::transport::reading_directly(|| poll_fill(rs, &mut cx)) {
            Poll::Ready(Ok(true)) => {}
            Poll::Ready(Ok(false)) => {
                rs.ended = Some(closed_by_server());
                return done;
            }
            Poll::Ready(Err(e)) => {
                rs.ended = Some(e);
                return done;
            }
            Poll::Pending => {
                if inner.cfg.caller_reads && rs.r.deadline().is_some() {
                    // Part of a frame is in hand and its read timeout runs: the task, which
                    // no arrival wakes in this mode, arms its timer (`wait`).
                    inner.wake_reader();
                }
                return done;
            }
        }
    }
    // Bytes are in hand and the pass is over: the reader task takes them.
    inner.wake_reader();
    done
}

fn closed_by_server() -> Error {
    Error::fixed(ErrorKind::Connection, "the server closed the connection")
}

/// Polls the reader for the bytes the next frame needs (a fresh `fill` future each time:
/// `fill` is cancel-safe, and its state lives in the reader).
fn poll_fill(rs: &mut Reading, cx: &mut Context<'_>) -> Poll<Result<bool, Error>> {
    let need = rs.need;
    let fut = pin!(rs.r.fill(need));
    fut.poll(cx)
}

/// The reader task of one connection: until the connection ends, completes the responses
/// in hand, then waits for more. Ends the connection with the cause.
pub(super) async fn read_loop(inner: Arc<Inner>, r: FrameReader, fd: RawFd) {
    // The task's waker, for callers (a task's waker stays the same while it runs).
    let me = poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
    *inner.reader_waker() = Some(me);
    // A panic while an earlier connection's reader held the lock marked it poisoned, which
    // would keep callers out for good: this is a new connection's state.
    inner.reading.clear_poison();
    inner.read_ended.store(false, SeqCst);
    *inner.reading() = Some(Reading {
        r,
        need: 8,
        ended: None,
        wakers: Vec::with_capacity(64),
        sinks: Vec::with_capacity(64),
        claimed: Vec::with_capacity(256),
    });
    {
        let mut re = inner.read_epoll();
        re.sock = fd;
        if let Some(ep) = re.ep.as_ref() {
            // Best effort: without it a caller's wait is woken by completions only.
            let _ = watch(ep.as_raw_fd(), fd);
        }
    }
    // However this ends (also aborted), the read side goes with it.
    let _gone = TakeOnDrop(&inner);
    // In caller-reads mode the program reads: a spinning reader task would only compete.
    let spin_for = if inner.cfg.caller_reads {
        std::time::Duration::ZERO
    } else {
        inner.cfg.read_spin
    };
    // In caller-reads mode nothing wakes the task on arrivals, so a peer's close while no
    // call is in flight would go unread (and the socket unclosed, a server's graceful stop
    // waiting for it) until the next call: watch for the close alone.
    let hup = if inner.cfg.caller_reads {
        match hang_up_watch(fd) {
            Ok(h) => Some(h),
            Err(e) => {
                if crate::log::enabled(crate::log::Level::Warn) {
                    crate::log::emit(
                        crate::log::Level::Warn,
                        &format!(
                            "fastrpc client: no watch for the server's close ({e}): it is \
                             noticed at the next call"
                        ),
                    );
                }
                None
            }
        }
    } else {
        None
    };
    let mut gate = SpinGate::new();
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let cause = loop {
        // A caller reading now completes what is in hand (and wakes us if we wait).
        if let Ok(mut g) = inner.reading.try_lock() {
            crate::guard::panic_point(Task::ClientReaderLocked);
            let rs = g.as_mut().expect("the reader's own");
            if let Some(e) = rs.ended.take() {
                break e;
            }
            if let Err(e) = complete(&inner, rs) {
                break e;
            }
        }
        // With `read_spin` and a lone call in flight: its response comes within a round trip,
        // so spin for it rather than let the worker park (see `spin_then`).
        let spin = (!spin_for.is_zero())
            .then(|| inner.table.pending())
            .filter(|p| (1..=SPIN_MAX_IN_FLIGHT).contains(p))
            .map(|_| spin_for);
        let wait = poll_fn(|cx| wait(&inner, cx, &mut timer, hup.as_ref()));
        match spin_then(wait, spin, &mut gate).await {
            Ok(true) => {}
            Ok(false) => break closed_by_server(),
            Err(e) => break e,
        }
    };
    super::conn::end_connection(&inner, cause);
}

/// One poll of the reader task's wait for bytes: Ready when the next frame's bytes are in
/// hand (also when a caller's pass read them), the peer closed, or the connection ends.
fn wait(
    inner: &Inner,
    cx: &mut Context<'_>,
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    hup: Option<&AsyncFd<OwnedFd>>,
) -> Poll<Result<bool, Error>> {
    let mut g = match inner.reading.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            // A caller is reading (often the bytes that woke us): do not wait for it. It
            // wakes us when it lets go (`Held`). Flag set, then tried again, with a fence
            // between, as the caller unlocks, fences and then looks: one sees the other.
            inner.reader_deferred.store(true, SeqCst);
            fence(SeqCst);
            match inner.reading.try_lock() {
                Ok(g) => {
                    inner.reader_deferred.store(false, SeqCst);
                    g
                }
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Poll::Pending,
            }
        }
    };
    let rs = g.as_mut().expect("the reader's own");
    if let Some(e) = rs.ended.take() {
        return Poll::Ready(Err(e));
    }
    // Registers the task for the peer's close (caller reads; a read of the socket here is
    // direct and registers nothing). Once closed, the socket reads to its end, never empty.
    let hung_up = hup.is_some_and(|h| h.poll_read_ready(cx).is_ready());
    let p = poll_fill(rs, cx);
    if p.is_pending() && hung_up {
        // All the peer sent before its close is in the socket, which then reads to its end
        // (0, or an error), never empty: nothing more can come.
        return Poll::Ready(Err(closed_by_server()));
    }
    if p.is_pending() {
        if let Some(d) = rs.r.deadline() {
            // `fill` times out only when polled: wake at the deadline to poll it then. Allocated
            // once per connection, and only with a read timeout.
            let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(d)));
            if t.deadline() != d {
                t.as_mut().reset(d);
            }
            if t.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        drop(g);
        // In caller-reads mode a caller that found the state taken meanwhile left the flag
        // (`Inner::read_pass`): what arrived after our last read is ours to read.
        fence(SeqCst);
        if inner.reader_deferred.swap(false, SeqCst) {
            cx.waker().wake_by_ref();
        }
    }
    p
}

/// Caller-reads mode: a descriptor, registered with the runtime, that is readable once the
/// socket's peer has closed its side or reset the connection (or the socket has an error),
/// and not on arrivals: an epoll instance watching the socket for `EPOLLRDHUP` alone (the
/// kernel adds hang-ups and errors). One per connection; closed with the reader task.
fn hang_up_watch(sock: RawFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: plain syscall; the descriptor is owned below.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nobody else.
    let ep = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLRDHUP as u32,
        u64: 0,
    };
    // SAFETY: both descriptors are open; `ev` outlives the call.
    if unsafe { libc::epoll_ctl(raw, libc::EPOLL_CTL_ADD, sock, &mut ev) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: an OwnedFd stays open, the same descriptor, for as long as it is owned.
    let a = unsafe { AsyncFd::register_with_interest(ep, tokio::io::Interest::READABLE) }?;
    Ok(a)
}

/// Takes the read side out of the client when dropped.
struct TakeOnDrop<'a>(&'a Inner);

impl Drop for TakeOnDrop<'_> {
    fn drop(&mut self) {
        let mut re = self.0.read_epoll();
        if let (Some(ep), true) = (re.ep.as_ref(), re.sock >= 0) {
            // Out of the caller's descriptor now: the socket stays open until the writer lets
            // go of it too, and at its end it would keep the descriptor readable (a waiter
            // that polls it level-triggered would spin) with nothing left to read.
            // SAFETY: both descriptors are open (the socket until the halves are dropped).
            unsafe {
                libc::epoll_ctl(
                    ep.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    re.sock,
                    std::ptr::null_mut(),
                )
            };
        }
        re.sock = -1;
        drop(re);
        let r = self.0.reading().take();
        drop(r);
        *self.0.reader_waker() = None;
    }
}

/// Completes every whole response in hand, without a lock per call: first one
/// compare-and-swap per response claims its call (a completion sink gets its response at
/// once, from the read buffer), then the responses are copied into the claimed cells, then
/// published, then their callers woken. (Claiming and publishing are locked instructions:
/// interleaved with the copies, each would wait for the previous copy's cache misses.)
/// Returns the calls completed; Err when the bytes are not a response.
fn complete(inner: &Inner, rs: &mut Reading) -> Result<usize, Error> {
    // Completion sinks run on this thread under the state's lock (only a caller-reads
    // client looks: `idle_pass`).
    let _mark = inner.cfg.caller_reads.then(|| Marked::new(inner));
    let limit = inner.cfg.max_frame_size;
    let table = &inner.table;
    let Reading {
        r,
        need: rs_need,
        wakers,
        sinks,
        claimed,
        ..
    } = rs;
    // Empty unless a panic cut a pass short: its entries point into bytes that may be gone.
    claimed.clear();
    sinks.clear();
    wakers.clear();
    let data = r.data();
    let mut off = 0;
    let mut need = 0;
    let mut failed = None;
    let (mut matched, mut unexpected, mut burst) = (0u64, 0u64, 0isize);
    if !data.is_empty() {
        loop {
            match parse_response(&data[off..], limit) {
                Ok(Parse::Frame(p, n)) => {
                    let (vs, ve) = (off + p.value.start, off + p.value.end);
                    match table.find(p.id) {
                        Some((i, c)) if c.claim_sent(p.id) => {
                            matched += 1;
                            // SAFETY: claimed by us.
                            match unsafe { c.take_sink() } {
                                Some((s, tag)) => {
                                    unsafe { inner.free(c) };
                                    sinks.push((s, tag, vs, ve));
                                }
                                None => claimed.push((i, p.id, vs, ve)),
                            }
                        }
                        _ => unexpected += 1,
                    }
                    off += n;
                }
                Ok(Parse::Incomplete(k)) => {
                    need = off + k;
                    break;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
    } else {
        need = 8;
    }
    let c = &inner.counters;
    if matched > 0 {
        // Before the outcomes are visible: a caller that has its response sees it counted.
        c.responses.fetch_add(matched, Relaxed);
        // Several calls completed at once: their callers may all call again at once, and
        // the first of them must not write alone (see `Inner::enqueue`).
        if inner.many_done.load(Relaxed) != (matched > 1) {
            inner.many_done.store(matched > 1, Relaxed);
        }
    }
    for &(i, _, vs, ve) in claimed.iter() {
        // SAFETY: claimed by us.
        let resp = unsafe { table.at(i).resp() };
        resp.clear();
        resp.extend_from_slice(&data[vs..ve]);
    }
    for (i, id, _, _) in claimed.drain(..) {
        let cell = table.at(i);
        if let Ok(w) = cell.publish(id, IN_BURST) {
            burst += 1;
            if let Some(w) = w {
                wakers.push(w);
            }
        } else {
            // SAFETY: the caller went away; the cell is ours to free.
            unsafe { inner.free(cell) };
        }
    }
    if burst > 0 {
        inner.burst_add(burst);
    }
    c.io.frames_received
        .fetch_add(matched + unexpected, Relaxed);
    if unexpected > 0 {
        c.unexpected.fetch_add(unexpected, Relaxed);
    }
    for w in wakers.drain(..) {
        w.wake();
    }
    for (s, tag, vs, ve) in sinks.drain(..) {
        super::complete_sink(&*s, tag, Ok(&data[vs..ve]));
    }
    if let Some(e) = failed {
        return Err(e);
    }
    r.consume(off);
    *rs_need = need - off;
    Ok(matched as usize)
}
