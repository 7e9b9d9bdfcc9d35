//! The client's background tasks: the connection manager (lazy connect, handshake, backoff,
//! reconnect), which runs its connection's writer (`write.rs`) and reader (`read.rs`), and
//! the timekeeper that enforces call deadlines.
//!
//! Every path that ends a connection fails the calls sent on it with an error naming the
//! peer and the cause, so no call waits past its deadline or forever. Each task runs under
//! [`guarded`]: a panic in one fails the calls it had (and ends the connection), then the
//! task starts again, so a client object always reconnects.

use std::future::{poll_fn, Future};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::config::limit;
use crate::error::{Error, ErrorKind};
use crate::guard::{guarded, AbortOnDrop, Task};
use crate::protocol::handshake;
use crate::transport;
use crate::wire::{FrameReader, FrameWriter};

use super::table::Conn;
use super::Inner;

/// Starts the manager and timekeeper tasks (once, on the first call).
pub(super) fn start(inner: Arc<Inner>) {
    let rt = inner.rt.clone();
    let tk = inner.clone();
    rt.spawn(async move {
        // The timekeeper keeps no state of its own worth failing calls for: it starts again.
        while guarded(Task::ClientTimekeeper, timekeeper(tk.clone()))
            .await
            .is_err()
        {}
    });
    rt.spawn(async move {
        while let Err(e) = guarded(Task::ClientManager, manager(inner.clone())).await {
            // As after a failed connect: the calls it had fail with the panic, the next call
            // after the backoff connects again (its reader was aborted with it).
            let mut sinks = Vec::new();
            // The connection's write side went with it (a lone caller must not find it).
            inner.out().take();
            let mut st = inner.lock();
            inner.writing.store(false, SeqCst);
            st.conn_error = None;
            st.conn = Conn::Backoff {
                until: Instant::now() + inner.cfg.reconnect_backoff_min,
                err: e.clone(),
            };
            inner.backoff.store(true, Relaxed);
            // After the flag, with every shard locked: a call queued later sees the backoff;
            // one queued before is failed below.
            inner.queue.clear();
            drop(st);
            let mask = (1 << super::table::QUEUED) | (1 << super::table::SENT);
            inner.fail_all(mask, &e, &mut sinks);
            inner.check_drained();
            inner.deliver(&mut sinks);
        }
    });
}

/// Connects when there is work, writes batches while connected, and reconnects.
async fn manager(inner: Arc<Inner>) {
    let mut backoff = inner.cfg.reconnect_backoff_min;
    let mut seed = jitter_seed();
    loop {
        // Wait for queued work (lazy connect) or close.
        let closed = poll_fn(|cx| {
            inner.poll_writer(cx, |st| {
                let mut queued = inner.queue.maybe_nonempty();
                if queued {
                    if let Conn::Backoff { until, .. } = &st.conn {
                        if Instant::now() < *until {
                            // Only dead frames can be queued while backing off: calls that
                            // were queued as the connect failed, and failed with it.
                            inner.queue.clear();
                            queued = false;
                        }
                    }
                }
                if inner.shutdown.load(Relaxed) || (inner.closed.load(Relaxed) && !queued) {
                    return Some(true);
                }
                queued.then_some(false)
            })
        })
        .await;
        if closed {
            return;
        }
        {
            let mut st = inner.lock();
            st.conn = Conn::Up;
            inner.backoff.store(false, Relaxed);
        }
        match connect(&inner).await {
            Err(e) => {
                inner.counters.connect_failures.fetch_add(1, Relaxed);
                let wait = jittered(backoff, &mut seed).min(inner.cfg.reconnect_backoff_max);
                backoff = (backoff * 2).min(inner.cfg.reconnect_backoff_max);
                let mut sinks = Vec::new();
                let mut st = inner.lock();
                st.conn = Conn::Backoff {
                    until: Instant::now() + wait,
                    err: e.clone(),
                };
                inner.backoff.store(true, Relaxed);
                // After the flag, with every shard locked: a call queued later sees the
                // backoff; one queued before is failed below.
                inner.queue.clear();
                drop(st);
                inner.fail_all(1 << super::table::QUEUED, &e, &mut sinks);
                inner.check_drained();
                inner.deliver(&mut sinks);
            }
            Ok((stream, server_compression)) => {
                backoff = inner.cfg.reconnect_backoff_min;
                inner.counters.connects.fetch_add(1, Relaxed);
                let fd = stream.raw_fd();
                let (rd, wr) = stream.split();
                let cfg = &inner.cfg;
                let reader = FrameReader::new(
                    rd,
                    server_compression,
                    cfg.read_buffer_size,
                    limit(cfg.read_timeout),
                    inner.counters.io.clone(),
                );
                let writer = FrameWriter::new(
                    wr,
                    cfg.compress_type,
                    cfg.flate_level,
                    cfg.write_buffer_size,
                    inner.counters.io.clone(),
                );
                let ri = inner.clone();
                let mut reader_task = AbortOnDrop(inner.rt.spawn(async move {
                    if let Err(e) = guarded(
                        Task::ClientReader,
                        super::read::read_loop(ri.clone(), reader, fd),
                    )
                    .await
                    {
                        end_connection(&ri, e);
                    }
                }));
                let cause = super::write::write_loop(&inner, writer).await;
                reader_task.0.abort();
                let _ = (&mut reader_task.0).await;
                let err = cause.rewrap(
                    cause.kind(),
                    format!("connection to {} failed: {}", inner.addr, cause.message()),
                );
                let mut sinks = Vec::new();
                let mut st = inner.lock();
                st.conn_error = None;
                inner.writing.store(false, SeqCst);
                st.conn = Conn::Idle;
                drop(st);
                inner.fail_all(1 << super::table::SENT, &err, &mut sinks);
                inner.check_drained();
                inner.deliver(&mut sinks);
            }
        }
    }
}

async fn connect(
    inner: &Inner,
) -> Result<(crate::transport::Stream, crate::compress::Compression), Error> {
    let cfg = &inner.cfg;
    let t = cfg.handshake_timeout;
    let raw = match tokio::time::timeout(t, transport::connect(&inner.addr)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Connect,
                format!("cannot connect to {}: no answer within {t:?}", inner.addr),
            ))
        }
    };
    let p = handshake::Params {
        sniff_header: &cfg.sniff_header,
        version: cfg.protocol_version,
        compression: cfg.compress_type,
        timeout: t,
    };
    let (stream, compression) =
        handshake::client(raw, p, inner.tls.clone())
            .await
            .map_err(|e| {
                let kind = match e.kind() {
                    ErrorKind::Tls | ErrorKind::Protocol | ErrorKind::Timeout => e.kind(),
                    _ => ErrorKind::Connect,
                };
                e.rewrap(
                    kind,
                    format!("handshake with {} failed: {}", inner.addr, e.message()),
                )
            })?;
    if !cfg.caller_reads {
        return Ok((stream, compression));
    }
    // The program reads: no worker is to be woken by what arrives (read.rs, "caller reads").
    let stream = stream.into_direct().map_err(|e| {
        Error::new(
            ErrorKind::Connect,
            format!("cannot watch the connection to {}: {e}", inner.addr),
        )
    })?;
    Ok((stream, compression))
}

/// The reader is done: the writer ends the connection with `cause`.
pub(super) fn end_connection(inner: &Inner, cause: Error) {
    let mut st = inner.lock();
    st.conn_error = Some(cause);
    if let Some(w) = inner.take_writer(&mut st) {
        drop(st);
        w.wake();
    }
}

/// Fails calls whose deadline passed. Sleeps until the earliest deadline of a waiting call;
/// a call with an earlier deadline than that wakes it. Scans the table only then, without
/// the lock (`timer_next` is None during the scan, so deadlines queued meanwhile are kept).
async fn timekeeper(inner: Arc<Inner>) {
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    let mut sinks = Vec::new();
    let mut armed: Option<u64> = None;
    loop {
        let done = poll_fn(|cx| {
            let mut st = inner.lock();
            if inner.closed.load(Relaxed) && inner.table.pending() == 0 {
                return Poll::Ready(true);
            }
            let now = inner.table.ns(Instant::now());
            if st.timer_next.is_some_and(|t| t <= now) {
                st.timer_next = None;
                inner.timer_hint.store(u64::MAX, Relaxed);
                drop(st);
                // A call queued after this sees the hint; one queued before, the scan sees.
                inner.queue.sync();
                let next = inner.expire(now, &mut sinks);
                inner.check_drained();
                st = inner.lock();
                if let Some(n) = next {
                    if st.timer_next.is_none_or(|t| n < t) {
                        st.timer_next = Some(n);
                        inner.timer_hint.store(n, Relaxed);
                    }
                }
                if !sinks.is_empty() {
                    return Poll::Ready(false);
                }
            }
            st.timer_waker = Some(cx.waker().clone());
            let next = st.timer_next;
            drop(st);
            if let Some(t) = next {
                if armed != Some(t) {
                    armed = Some(t);
                    sleep
                        .as_mut()
                        .reset(tokio::time::Instant::from_std(inner.table.instant(t)));
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    // Deadline reached while unlocked: go round again.
                    cx.waker().wake_by_ref();
                }
            }
            Poll::Pending
        })
        .await;
        inner.deliver(&mut sinks);
        if done {
            return;
        }
    }
}

fn jitter_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    t | 1
}

/// `d` scaled by a random factor in [0.5, 1.5) (xorshift; no need for a real RNG here).
fn jittered(d: Duration, seed: &mut u64) -> Duration {
    let mut x = *seed;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *seed = x;
    let f = 0.5 + (x % 1000) as f64 / 1000.0;
    d.mul_f64(f)
}
