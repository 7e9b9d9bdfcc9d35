//! A server connection's write side: the writer task, which writes every ready response as
//! one batch per flush, and the lone-reply path, on which a reply made from a thread outside
//! the runtime (a C or Go handler answering later) that finds nothing else outstanding, the
//! output empty and the writer parked writes itself, on the replying thread, instead of
//! waking the writer: that wake is a futex to a worker whose CPU has often halted, tens of
//! microseconds on a VM, on every round trip of a client that waits for each answer (the
//! client's side of the same idea is `src/client/write.rs`).
//!
//! Replies made on the runtime (inline handlers, handlers answering from tasks) never take
//! it: the writer batches them, as it does every reply while others are outstanding.
//!
//! The connection's [`FrameWriter`] and its batch live in [`Wr`], behind `ConnShared::wr`:
//! whoever holds that lock may take the output and write. A batch the socket does not take at
//! once stays started (`Out::writing`) and the writer task finishes it under
//! `write_timeout`; a lone write that fails leaves its error in `Out::write_error` for the
//! writer, which ends the connection as after its own failed write. Lock order: `wr`, then
//! `out`; neither is held across an await.

use std::future::poll_fn;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio_util::sync::CancellationToken;

use crate::config::limit;
use crate::delay::DelayTimer;
use crate::error::Error;
use crate::guard::{guarded_sync, Task};
use crate::log::{self, Level};
use crate::wire::{write_timeout, FrameWriter, IDLE_RELEASE};

use super::conn::ConnShared;

/// A connection's write side and the batch it is writing.
pub(crate) struct Wr {
    w: FrameWriter,
    batch: Vec<u8>,
}

impl Wr {
    pub(crate) fn new(w: FrameWriter, batch_capacity: usize) -> Wr {
        Wr {
            w,
            batch: Vec::with_capacity(batch_capacity),
        }
    }
}

impl ConnShared {
    #[inline]
    pub(crate) fn wr(&self) -> MutexGuard<'_, Option<Wr>> {
        self.wr.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Takes the output into `x` and starts writing it. False when there is nothing to write.
fn start(conn: &ConnShared, x: &mut Wr) -> Result<bool, Error> {
    let (frames, reader) = {
        let mut out = conn.lock();
        if out.buf.is_empty() || out.closed {
            return Ok(false);
        }
        std::mem::swap(&mut out.buf, &mut x.batch);
        out.writing = true;
        let reader = if x.batch.len() >= out.high_water {
            out.reader_waker.take()
        } else {
            None
        };
        (std::mem::take(&mut out.frames), reader)
    };
    if let Some(r) = reader {
        // The reader may be paused on the backlog just taken.
        r.wake();
    }
    x.w.start_batch(&x.batch, frames)?;
    Ok(true)
}

/// The batch in `x` is out (or failed).
fn finish(conn: &ConnShared, x: &mut Wr) {
    x.batch.clear();
    conn.lock().writing = false;
}

/// Writes a lone reply on the replying thread. `writer` is the writer task's waker, which
/// the reply took from the connection's state under its lock (so that the writer stays
/// parked): it wakes the writer when there is something left for it, or is put back.
pub(crate) fn write_lone(conn: &ConnShared, writer: Waker) {
    write_now(conn, writer, true)
}

/// [`write_lone`], also for an early flush (`lone` false: not counted as a lone write).
///
/// A lone reply holds the writer's waker until its write is done, so a reply made meanwhile
/// finds the writer "busy" and leaves its frame: with the client's next call made on this
/// reply's response, that is the next reply of a connection used one call at a time. A lone
/// reply writes such a frame too (a few times at most) when it is again alone, instead of
/// waking the writer for it.
fn write_now(conn: &ConnShared, writer: Waker, lone_reply: bool) {
    for round in 0..LONE_ROUNDS {
        let wake = match guarded_sync(Task::ServerLoneWrite, || lone(conn, &writer, lone_reply)) {
            Ok(wake) => wake,
            Err(e) => {
                conn.lock().write_error.get_or_insert(e);
                true
            }
        };
        let mut out = conn.lock();
        if !wake
            && !out.buf.is_empty()
            && lone_reply
            && round + 1 < LONE_ROUNDS
            && out.frames == 1
            && out.outstanding == 0
            && !out.writing
            && !out.closed
            && !out.reading_done
            && out.write_error.is_none()
        {
            continue;
        }
        if wake
            || !out.buf.is_empty()
            || out.writing
            || out.closed
            || out.reading_done
            || out.write_error.is_some()
        {
            drop(out);
            writer.wake();
        } else if out.writer_waker.is_none() {
            out.writer_waker = Some(writer);
        }
        return;
    }
}

/// How many replies a lone reply writes at most (its own, then any left while it wrote).
const LONE_ROUNDS: usize = 4;

/// An early flush (`conn.rs`, `early_flush_at`): the reader writes the replies ready so
/// far, on its own thread, instead of leaving them all to the writer task, which the reader's
/// wake put in its worker's LIFO slot (not stealable) and so runs only when the read is done.
pub(crate) fn flush_early(conn: &ConnShared) {
    let w = conn.lock().writer_waker.take();
    match w {
        Some(w) => write_now(conn, w, false),
        None => {
            // The writer was woken (or is writing): it runs and finishes what this leaves.
            if let Err(e) = guarded_sync(Task::ServerLoneWrite, || lone(conn, Waker::noop(), false))
            {
                conn.lock().write_error.get_or_insert(e);
            }
        }
    }
}

/// The lone write itself (or an early flush, `counted` false); true when the writer task has
/// something left to do.
fn lone(conn: &ConnShared, writer: &Waker, counted: bool) -> bool {
    let mut g = conn.wr();
    let Some(x) = g.as_mut() else {
        return true;
    };
    if x.w.is_writing() {
        return true;
    }
    let failed = |x: &mut Wr, e: Error| {
        x.batch.clear();
        let mut out = conn.lock();
        out.writing = false;
        out.write_error.get_or_insert(e);
        true
    };
    match start(conn, x) {
        Ok(false) => false,
        Ok(true) => {
            if counted {
                conn.server
                    .counters
                    .lone_writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // The socket's readiness wakes the writer if this does not finish.
            let mut cx = Context::from_waker(writer);
            match x.w.poll_batch(&mut cx, &x.batch) {
                Poll::Ready(Ok(())) => {
                    finish(conn, x);
                    false
                }
                Poll::Ready(Err(e)) => failed(x, e),
                Poll::Pending => true,
            }
        }
        Err(e) => failed(x, e),
    }
}

/// What the writer task waits for.
enum Work {
    /// Responses to write, or a batch a lone reply started and left unfinished.
    Go,
    /// The connection is done (closed, or read to the end with nothing outstanding).
    End,
    /// A lone reply's write failed.
    Failed(Error),
}

/// Writes every ready response as one batch per flush, until the connection ends.
/// The write side is in `conn.wr` from the start (`conn.rs`).
pub(super) async fn write_loop(conn: Arc<ConnShared>, stop: CancellationToken) {
    let cfg = &conn.server.cfg;
    let delay = cfg.max_batch_delay;
    let full = cfg.write_buffer_size;
    let limit = limit(cfg.write_timeout);
    // However this ends (also aborted, or panicking), the write side goes with it: nothing
    // writes to the connection after its writer is gone, and the socket closes.
    let _gone = TakeOnDrop(&conn);
    let mut timer = (!delay.is_zero()).then(DelayTimer::new);
    // Buffers and compressor state are held (since the last write) and not yet given back.
    let mut holding = false;
    loop {
        let work = poll_fn(|cx| {
            let mut out = conn.lock();
            if let Some(e) = out.write_error.take() {
                return Poll::Ready(Work::Failed(e));
            }
            if out.closed {
                return Poll::Ready(Work::End);
            }
            if !out.buf.is_empty() || out.writing {
                return Poll::Ready(Work::Go);
            }
            if out.reading_done && out.outstanding == 0 {
                return Poll::Ready(Work::End);
            }
            out.writer_waker = Some(cx.waker().clone());
            Poll::Pending
        });
        let work = if holding {
            tokio::select! {
                biased;
                work = work => work,
                _ = tokio::time::sleep(IDLE_RELEASE) => {
                    // Quiet for a while: give back what an idle connection can do without
                    // (lone replies since then bring them back at their next write).
                    holding = false;
                    if let Some(x) = conn.wr().as_mut() {
                        if !x.w.is_writing() {
                            x.w.release_idle();
                            x.batch = Vec::new();
                        }
                    }
                    let mut out = conn.lock();
                    if out.buf.is_empty() {
                        out.buf = Vec::new();
                    }
                    continue;
                }
            }
        } else {
            work.await
        };
        match work {
            Work::Go => {}
            Work::End => break,
            Work::Failed(e) => return failed(&conn, e, &stop),
        }
        holding = true;
        if let Some(timer) = timer.as_mut() {
            timer.start(delay);
            poll_fn(|cx| {
                if timer.poll_elapsed(cx).is_ready() {
                    return Poll::Ready(());
                }
                let mut out = conn.lock();
                if out.buf.len() >= full || out.closed || out.reading_done {
                    return Poll::Ready(());
                }
                out.writer_waker = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
        }
        {
            let mut g = conn.wr();
            let Some(x) = g.as_mut() else { break };
            if !x.w.is_writing() {
                if let Err(e) = start(&conn, x) {
                    finish(&conn, x);
                    drop(g);
                    return failed(&conn, e, &stop);
                }
            }
        }
        let write = poll_fn(|cx| match conn.wr().as_mut() {
            Some(x) => {
                let r = x.w.poll_batch(cx, &x.batch);
                if r.is_ready() {
                    finish(&conn, x);
                }
                r
            }
            None => Poll::Ready(Ok(())),
        });
        let r = match limit {
            None => write.await,
            Some(t) => tokio::time::timeout(t, write)
                .await
                .unwrap_or_else(|_| Err(write_timeout())),
        };
        if let Err(e) = r {
            if let Some(x) = conn.wr().as_mut() {
                if x.w.is_writing() {
                    // Timed out mid-batch: the connection ends with it.
                    x.w.abandon();
                    finish(&conn, x);
                }
            }
            return failed(&conn, e, &stop);
        }
    }
    let wr = conn.wr().take();
    if let Some(mut x) = wr {
        x.w.shutdown().await;
    }
}

/// A write failed: replies can no longer be delivered, the connection ends.
fn failed(conn: &ConnShared, e: Error, stop: &CancellationToken) {
    conn.wr().take();
    conn.server.counters.errors.add(e.kind(), 1);
    if log::enabled(Level::Info) {
        log::emit(
            Level::Info,
            &format!("fastrpc server: writing to {} failed: {e}", conn.peer),
        );
    }
    let mut out = conn.lock();
    out.closed = true;
    // Unblock a pipelined reader waiting for this connection, and stop reading.
    if let Some(r) = out.reader_waker.take() {
        r.wake();
    }
    drop(out);
    stop.cancel();
}

/// Takes the write side out of the connection when dropped.
struct TakeOnDrop<'a>(&'a ConnShared);

impl Drop for TakeOnDrop<'_> {
    fn drop(&mut self) {
        let wr = self.0.wr().take();
        drop(wr);
    }
}
