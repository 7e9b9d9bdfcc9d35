//! The client's write side: the writer task, which writes queued requests in batches, and the
//! lone-call path, on which a call that finds nothing else to write and the writer parked
//! writes its own request, on the caller's thread, instead of waking the writer.
//!
//! Why: a call made from a thread outside the runtime (C, Go, the blocking facade) wakes the
//! writer through a futex to a worker thread, whose CPU has often halted while it waited: on
//! a VM that wakeup is tens of microseconds, on every call of a caller that waits for each
//! response before the next. The lone path takes it off the round trip. It is taken only when
//! batching has nothing to gain: no other call waiting (`Table::pending` is 1), nothing else
//! queued, the writer idle and parked, no `max_batch_delay`, and the reader's last read
//! completed one call (after a read that completed several, their callers may all call again
//! at once: `Inner::many_done`). With more calls in flight the writer task batches as before.
//!
//! The connection's [`FrameWriter`] and the batch it writes live in [`Out`], behind
//! `Inner::out`: whoever holds that lock may take the queue and write (the writer task, or a
//! lone caller that took the writer's waker from the connection's state, so that nobody else
//! wakes the writer meanwhile). A batch the socket does not take at once stays started in `Out`
//! (`Inner::writing`), and the writer task finishes it under `write_timeout`. Lock order:
//! `out`, then `sub`, then a queue shard; none is held across an await.

use std::future::poll_fn;
use std::sync::atomic::fence;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::config::limit;
use crate::delay::DelayTimer;
use crate::error::{Error, ErrorKind};
use crate::guard::{guarded_sync, Task};
use crate::wire::{write_timeout, FrameWriter};

use super::queue::Spare;
use super::table::{mark_batch, Entry};
use super::Inner;

/// A connection's write side and the batch it is writing.
pub(crate) struct Out {
    w: FrameWriter,
    /// The batch taken from the queue (its bytes, and its frames' ids and ends).
    batch: Vec<u8>,
    entries: Vec<Entry>,
    spare: Spare,
}

impl Inner {
    #[inline]
    pub(crate) fn out(&self) -> MutexGuard<'_, Option<Out>> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Takes the queue into `o` and starts writing it. False (and nothing taken) when the queue
/// is empty or the connection is ending.
fn start(inner: &Inner, o: &mut Out) -> Result<bool, Error> {
    if !inner.queue.maybe_nonempty()
        || inner.shutdown.load(Relaxed)
        || inner.lock().conn_error.is_some()
    {
        return Ok(false);
    }
    inner.writing.store(true, SeqCst);
    if inner.held.load(Relaxed) {
        inner.held.store(false, Relaxed);
    }
    if inner.queue.take(&mut o.batch, &mut o.entries, &mut o.spare) == 0 {
        inner.writing.store(false, SeqCst);
        return Ok(false);
    }
    // Mark the calls sent, cut out those that ended while queued.
    let frames = mark_batch(&inner.table, &mut o.batch, &o.entries);
    o.w.start_batch(&o.batch, frames)?;
    Ok(true)
}

/// The batch in `o` is out (or failed).
fn finish(inner: &Inner, o: &mut Out) {
    o.batch.clear();
    if o.batch.capacity() > 8 * inner.cfg.write_buffer_size {
        // A burst of large requests does not pin its batch buffer.
        o.batch = Vec::with_capacity(inner.cfg.write_buffer_size);
    }
    inner.writing.store(false, SeqCst);
    if inner.closed.load(SeqCst) {
        // A draining close waits for the last batch to be written.
        inner.drained.notify_waiters();
    }
}

/// Writes what a lone call queued, on the caller's thread. `writer` is the writer task's
/// waker, which the caller took from the queue's state under its lock (so that the writer
/// stays parked): it is either used to wake the writer, when there is something left for it
/// (a batch the socket did not take at once, a failure, frames queued meanwhile, a close), or
/// put back.
pub(crate) fn write_lone(inner: &Inner, writer: Waker) {
    // A panic here must not unwind into the caller: it ends the connection, as the writer
    // task's would (the calls sent on it fail with it, the client connects again).
    let wake = match guarded_sync(Task::ClientLoneWrite, || lone(inner, &writer)) {
        Ok(wake) => wake,
        Err(e) => {
            fail_connection(inner, e);
            true
        }
    };
    let mut st = inner.lock();
    if wake || st.conn_error.is_some() || has_work(inner) {
        drop(st);
        writer.wake();
        return;
    }
    if st.writer_waker.is_none() {
        inner.park_writer(&mut st, &writer);
    }
    drop(st);
    // A request pushed while the waker was ours found no writer to wake: look again.
    fence(SeqCst);
    if has_work(inner) {
        inner.wake_writer();
    }
}

/// Whether the writer task has something to do besides waiting for requests: queued
/// frames, an unfinished batch, a close.
fn has_work(inner: &Inner) -> bool {
    inner.queue.maybe_nonempty()
        || inner.writing.load(SeqCst)
        || inner.closed.load(SeqCst)
        || inner.shutdown.load(SeqCst)
}

/// The lone write itself; true when the writer task has something left to do.
fn lone(inner: &Inner, writer: &Waker) -> bool {
    let mut g = inner.out();
    let Some(o) = g.as_mut() else {
        // Not connected (or the connection just ended): the writer task deals with it.
        return true;
    };
    if o.w.is_writing() {
        return true;
    }
    match start(inner, o) {
        Ok(false) => false,
        Ok(true) => {
            inner.counters.lone_writes.fetch_add(1, Relaxed);
            // The socket's readiness wakes the writer if this does not finish.
            let mut cx = Context::from_waker(writer);
            match o.w.poll_batch(&mut cx, &o.batch) {
                Poll::Ready(Ok(())) => {
                    finish(inner, o);
                    false
                }
                Poll::Ready(Err(e)) => {
                    finish(inner, o);
                    fail_connection(inner, e);
                    true
                }
                Poll::Pending => true,
            }
        }
        Err(e) => {
            finish(inner, o);
            fail_connection(inner, e);
            true
        }
    }
}

/// Ends the connection with `e` (the writer task returns it), unless it already ends.
fn fail_connection(inner: &Inner, e: Error) {
    let mut st = inner.lock();
    if st.conn_error.is_none() {
        st.conn_error = Some(e);
    }
}

/// The writer task of one connection: writes batches until the connection fails or the
/// client closes. Returns the cause.
pub(super) async fn write_loop(inner: &Arc<Inner>, w: FrameWriter) -> Error {
    *inner.out() = Some(Out {
        w,
        batch: Vec::with_capacity(inner.cfg.write_buffer_size),
        entries: Vec::with_capacity(64),
        spare: Spare::default(),
    });
    // However this ends (also dropped with its runtime), the write side goes with it.
    let _gone = TakeOnDrop(inner);
    writes(inner).await
}

/// Takes the write side out of the client when dropped.
struct TakeOnDrop<'a>(&'a Inner);

impl Drop for TakeOnDrop<'_> {
    fn drop(&mut self) {
        let out = self.0.out().take();
        drop(out);
    }
}

async fn writes(inner: &Arc<Inner>) -> Error {
    let delay = inner.cfg.max_batch_delay;
    let mut timer = (!delay.is_zero()).then(DelayTimer::new);
    let limit = limit(inner.cfg.write_timeout);
    loop {
        // Wait for queued requests, or a batch a lone caller started and left unfinished.
        let ready = poll_fn(|cx| {
            inner.poll_writer(cx, |st| {
                if let Some(e) = st.conn_error.take() {
                    return Some(Err(e));
                }
                if inner.shutdown.load(Relaxed) {
                    return Some(Err(Error::closed()));
                }
                if inner.writing.load(SeqCst) || ready_to_write(inner, !delay.is_zero()) {
                    return Some(Ok(()));
                }
                if inner.closed.load(Relaxed) && inner.table.pending() == 0 {
                    // Drained: nothing left to wait for on this connection.
                    return Some(Err(Error::closed()));
                }
                None
            })
        })
        .await;
        if let Err(e) = ready {
            if e.kind() == ErrorKind::Closed {
                // Between batches: close the write direction cleanly (TLS close_notify, FIN).
                let out = inner.out().take();
                if let Some(mut o) = out {
                    o.w.shutdown().await;
                }
            }
            return e;
        }
        if let Some(t) = timer.as_mut() {
            batch_delay(inner, t, delay).await;
        }
        {
            let mut g = inner.out();
            let Some(o) = g.as_mut() else {
                return Error::closed();
            };
            if !o.w.is_writing() {
                match start(inner, o) {
                    Ok(_) => {}
                    Err(e) => {
                        finish(inner, o);
                        return e;
                    }
                }
            }
        }
        let write = poll_fn(|cx| match inner.out().as_mut() {
            Some(o) => {
                let r = o.w.poll_batch(cx, &o.batch);
                if r.is_ready() {
                    finish(inner, o);
                }
                r
            }
            None => Poll::Ready(Err(Error::closed())),
        });
        let write = async {
            match limit {
                None => write.await,
                Some(t) => tokio::time::timeout(t, write)
                    .await
                    .unwrap_or_else(|_| Err(write_timeout())),
            }
        };
        // A client closed at once (close(Cancel), the last handle dropped) must not stay held
        // by a write the server never takes: the write is dropped with the connection.
        let closed = poll_fn(|cx| {
            if inner.shutdown.load(Relaxed) {
                return Poll::Ready(());
            }
            inner.park_writer(&mut inner.lock(), cx.waker());
            if inner.shutdown.load(Relaxed) {
                return Poll::Ready(());
            }
            Poll::Pending
        });
        let r = tokio::select! {
            biased;
            r = write => r,
            _ = closed => Err(Error::closed()),
        };
        if let Err(e) = r {
            if let Some(o) = inner.out().as_mut() {
                if o.w.is_writing() {
                    // Timed out or closed mid-batch: the connection ends with it.
                    o.w.abandon();
                    finish(inner, o);
                }
            }
            return e;
        }
    }
}

/// Whether the writer should take the queue now: it holds frames, and no burst of callers
/// the reader just woke is still queueing its next requests (the last of them wakes the
/// writer, see `Inner::burst`), unless a shard asked for an early flush. Without the burst
/// check a writer running on another worker thread than the callers writes whatever the
/// first of them queued while the rest are still coming: with 8 worker threads a write
/// carried 36 frames against 194 with one, and the client spent 0.59 against 0.41 us of CPU
/// per call (docs/BENCHMARKS.md). With a batch delay the delay does the batching.
fn ready_to_write(inner: &Inner, delayed: bool) -> bool {
    if !inner.queue.maybe_nonempty() {
        return false;
    }
    if delayed || inner.burst.load(SeqCst) <= 0 || inner.flush_asked.load(SeqCst) {
        inner.flush_asked.store(false, Relaxed);
        return true;
    }
    false
}

/// Waits up to `delay` for more frames to share the batch, less when the batch fills the
/// write buffer first.
async fn batch_delay(inner: &Inner, timer: &mut DelayTimer, delay: Duration) {
    let full = inner.cfg.write_buffer_size;
    timer.start(delay);
    poll_fn(|cx| {
        if timer.poll_elapsed(cx).is_ready() {
            return Poll::Ready(());
        }
        let mut st = inner.lock();
        if inner.queue.queued() >= full || inner.shutdown.load(Relaxed) || st.conn_error.is_some() {
            return Poll::Ready(());
        }
        inner.park_writer(&mut st, cx.waker());
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, Completion};
    use crate::config::{ClientConfig, ServerConfig};
    use crate::{Call, Compression, Server};

    /// Sends each outcome (tag, response or error kind) to a channel.
    struct Chan(std::sync::mpsc::Sender<(u128, Result<Vec<u8>, ErrorKind>)>);

    impl Completion for Chan {
        fn complete(&self, tag: u128, result: Result<&[u8], &Error>) {
            let _ = self
                .0
                .send((tag, result.map(|v| v.to_vec()).map_err(|e| e.kind())));
        }
    }

    /// Waits (bounded) until `f` holds.
    async fn until(what: &str, f: impl Fn() -> bool) {
        let t0 = std::time::Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(10), "timed out: {what}");
            tokio::task::yield_now().await;
        }
    }

    /// An echo server (compression none) and a client that made one call, its writer parked
    /// since (so nothing wakes it but what the test does).
    async fn connected_echo() -> (Server, Client) {
        let scfg = ServerConfig {
            compress_type: Compression::None,
            ..Default::default()
        };
        let server = Server::bind("127.0.0.1:0", scfg, |call: Call| {
            let v = call.value().to_vec();
            let _ = call.reply(&v);
        })
        .await
        .unwrap();
        let mut cfg = ClientConfig::new(server.local_addr());
        cfg.compress_type = Compression::None;
        let c = Client::new(cfg).unwrap();
        assert_eq!(c.call(b"n", b"first").await.unwrap(), b"first");
        let inner = c.inner().clone();
        until("the writer parks", || inner.writer_parked.load(SeqCst)).await;
        (server, c)
    }

    /// A deferred request stays queued with the writer parked until `flush`, which writes it
    /// on the calling thread; a request made without deferring after it wakes the writer for
    /// both, although its shard was not empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deferred_request_waits_for_a_flush_or_the_next_call() {
        let (server, c) = connected_echo().await;
        let inner = c.inner().clone();
        let sent = || c.stats().io.frames_sent;
        assert_eq!(sent(), 1);
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::new(Chan(tx));
        let t = Duration::from_secs(10);
        c.submit_deferred(b"n", b"two", t, sink.clone(), 2).unwrap();
        c.submit_deferred(b"n", b"three", t, sink.clone(), 3)
            .unwrap();
        // Nothing wakes the parked writer: both wait in the queue.
        assert!(inner.queue.maybe_nonempty());
        assert!(inner.writer_parked.load(SeqCst));
        assert_eq!(sent(), 1);
        let lone = c.stats().lone_writes;
        c.flush();
        // Written by this thread, in one write.
        assert_eq!(sent(), 3);
        assert_eq!(c.stats().lone_writes, lone + 1);
        let mut got: Vec<_> = (0..2).map(|_| rx.recv().unwrap()).collect();
        got.sort_by_key(|g| g.0);
        assert_eq!(
            got,
            vec![(2, Ok(b"two".to_vec())), (3, Ok(b"three".to_vec()))]
        );
        c.flush(); // nothing queued: nothing happens
        assert_eq!(sent(), 3);

        until("the writer parks again", || {
            inner.writer_parked.load(SeqCst)
        })
        .await;
        c.submit_deferred(b"n", b"four", t, sink.clone(), 4)
            .unwrap();
        assert_eq!(sent(), 3);
        // Not deferred, into a shard that is not empty: wakes the writer for both.
        assert_eq!(c.call(b"n", b"five").await.unwrap(), b"five");
        assert_eq!(rx.recv().unwrap(), (4, Ok(b"four".to_vec())));
        // The writer task counts its write after the write: the responses can come first.
        until("both counted", || sent() == 5).await;
        server.stop(Duration::from_secs(1)).await.unwrap();
    }

    /// A deferred request that is never flushed ends at its deadline (Timeout), like any call
    /// still queued, and is never sent: the next write cuts it out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deferred_request_never_flushed_times_out_unsent() {
        let (server, c) = connected_echo().await;
        let (tx, rx) = std::sync::mpsc::channel();
        let t0 = std::time::Instant::now();
        c.submit_deferred(
            b"n",
            b"late",
            Duration::from_millis(50),
            Arc::new(Chan(tx)),
            7,
        )
        .unwrap();
        let got = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("the deferred call ends");
        assert_eq!(got, (7, Err(ErrorKind::Timeout)));
        assert!(t0.elapsed() >= Duration::from_millis(50), "never early");
        assert_eq!(c.pending_requests(), 0);
        // The next call's write cuts the expired request out: the server sees one frame.
        assert_eq!(c.call(b"n", b"after").await.unwrap(), b"after");
        until("the call counted", || c.stats().io.frames_sent == 2).await;
        assert_eq!(server.stats().requests, 2);
        server.stop(Duration::from_secs(1)).await.unwrap();
    }

    /// The writer's gate: frames queued are written at once unless a burst of woken callers
    /// is still queueing (then at its end, or at an early flush); with a batch delay always.
    #[tokio::test]
    async fn a_writer_waits_for_the_end_of_a_burst_unless_a_flush_is_asked() {
        let c = Client::new(ClientConfig::new("127.0.0.1:9")).unwrap();
        let inner = c.inner();
        assert!(!ready_to_write(inner, false), "nothing queued");
        inner
            .queue
            .push(0, 0, b"n", b"v", || Some(()))
            .ok()
            .unwrap();
        assert!(ready_to_write(inner, false));
        inner.burst.store(3, SeqCst);
        assert!(
            !ready_to_write(inner, false),
            "3 callers of a burst still to queue"
        );
        assert!(ready_to_write(inner, true), "with a batch delay");
        inner.flush_asked.store(true, SeqCst);
        assert!(ready_to_write(inner, false), "an early flush");
        assert!(!inner.flush_asked.load(SeqCst), "taken by the writer");
        assert!(!ready_to_write(inner, false));
        inner.burst.store(0, SeqCst);
        assert!(ready_to_write(inner, false), "the burst is over");
        inner.burst.store(-2, SeqCst);
        assert!(
            ready_to_write(inner, false),
            "callers collected before the reader counted"
        );
    }
}
