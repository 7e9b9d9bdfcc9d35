//! One server connection: handshake, the reader that parses requests and runs the handler
//! inline (or answers at once with the concurrency-limit reply), and the one writer that
//! drains every ready response into a batch before each flush.
//!
//! Replies from any thread append their frame to the shared output buffer under one lock and
//! wake the writer (`write.rs`; a lone reply from outside the runtime writes itself). While
//! a read that brought many requests is handled, the reader writes the replies ready so far
//! itself a few times (early flushes, [`early_flush_at`]), so that the client starts on
//! them. The reader stops on a protocol error (the connection closes), on the peer's EOF
//! (responses still pending are flushed first), or on a graceful stop.

use std::future::poll_fn;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use tokio_util::sync::CancellationToken;

use crate::config::limit;
use crate::error::{Error, ErrorKind};
use crate::guard::{guarded, Task};
use crate::log::{self, Level};
use crate::protocol::frame::{encode_response, parse_request, Parse};
use crate::protocol::handshake;
use crate::transport::RawStream;
use crate::wire::{spin_then, Fill, FrameReader, FrameWriter, SpinGate, SPIN_MAX_IN_FLIGHT};

use super::call::{Call, Slot};
use super::ServerInner;

pub(crate) struct Out {
    pub buf: Vec<u8>,
    pub frames: usize,
    pub writer_waker: Option<Waker>,
    pub reader_waker: Option<Waker>,
    /// Replies are dropped: the connection is gone.
    pub closed: bool,
    /// A batch was taken from `buf` and is not written yet (a lone reply may leave one for
    /// the writer to finish: `write.rs`).
    pub writing: bool,
    /// A lone reply's write failed: the writer ends the connection with it.
    pub write_error: Option<Error>,
    /// The reader is done: the writer ends once nothing is outstanding.
    pub reading_done: bool,
    /// Handlers started and not yet answered on this connection.
    pub outstanding: usize,
    pub pipeline: bool,
    /// When the last handler answered (kept only with an idle timeout).
    pub last_answer: Option<tokio::time::Instant>,
    pub pool: Vec<Slot>,
    /// While `buf` holds this many bytes of responses the writer has not taken, the reader
    /// reads no more requests: a client that never reads cannot make the server buffer
    /// without bound. It is [`out_high_water`] of the configuration.
    pub high_water: usize,
}

/// How many bytes of unwritten responses pause a connection's reader: eight write buffers,
/// at least 1 MiB. (A handler's reply is checked before the next request is read, so `buf`
/// may exceed it by one reply, plus replies from handlers still running elsewhere.)
pub(crate) fn out_high_water(write_buffer_size: usize) -> usize {
    write_buffer_size.saturating_mul(8).max(1 << 20)
}

pub(crate) struct ConnShared {
    pub out: Mutex<Out>,
    /// The write side while the writer runs (`write.rs`). Taken before `out` when both are.
    pub wr: Mutex<Option<super::write::Wr>>,
    pub server: Arc<ServerInner>,
    pub peer: String,
    /// `Some` on a TLS connection, holding the client's verified certificate (DER) if any.
    pub tls_peer: Option<Option<Arc<[u8]>>>,
}

impl ConnShared {
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves one accepted socket to the end.
pub(crate) async fn serve(
    server: Arc<ServerInner>,
    raw: RawStream,
    peer: String,
    stop: CancellationToken,
) {
    let cfg = &server.cfg;
    let p = handshake::Params {
        sniff_header: &cfg.sniff_header,
        version: cfg.protocol_version,
        compression: cfg.compress_type,
        timeout: cfg.handshake_timeout,
    };
    let tls = handshake::ServerTls {
        config: server.tls.as_ref(),
        refuse_plaintext: cfg.tls.as_ref().and_then(|t| t.plaintext_refusal()),
    };
    let (stream, client_compression) = tokio::select! {
        r = handshake::server(raw, p, tls) => match r {
            Ok(v) => v,
            Err(e) => {
                server.counters.errors.add(e.kind(), 1);
                server.counters.handshake_failures.fetch_add(1, Relaxed);
                if log::enabled(Level::Warn) {
                    log::emit(Level::Warn, &format!("fastrpc server: handshake with {peer} failed: {e}"));
                }
                return;
            }
        },
        _ = stop.cancelled() => return,
    };
    let tls_peer = stream.tls_peer().map(|c| c.map(Arc::from));
    let (rd, wr) = stream.split();
    let mut reader = FrameReader::new(
        rd,
        client_compression,
        cfg.read_buffer_size,
        limit(cfg.read_timeout),
        server.counters.io.clone(),
    );
    let writer = FrameWriter::new(
        wr,
        cfg.compress_type,
        cfg.flate_level,
        cfg.write_buffer_size,
        server.counters.io.clone(),
    );
    let conn = Arc::new(ConnShared {
        out: Mutex::new(Out {
            buf: Vec::with_capacity(cfg.write_buffer_size),
            frames: 0,
            writer_waker: None,
            reader_waker: None,
            closed: false,
            writing: false,
            write_error: None,
            reading_done: false,
            outstanding: 0,
            pipeline: cfg.pipeline_requests,
            last_answer: None,
            pool: Vec::new(),
            high_water: out_high_water(cfg.write_buffer_size),
        }),
        // In place before the writer task first runs: the reader's early flushes may come
        // first (a new task waits in its spawner's LIFO slot until the reader yields).
        wr: Mutex::new(Some(super::write::Wr::new(writer, cfg.write_buffer_size))),
        server: server.clone(),
        peer,
        tls_peer,
    });
    // The connection's own token: the server's stop cancels it, and so does a failed write,
    // which must end the reader too (replies can no longer be delivered).
    let conn_stop = stop.child_token();
    // Aborted with this task (server stop timeout, server drop): the writer holds the socket.
    // However this task ends (also aborted), later replies are dropped and say CLOSED, and
    // the socket closes.
    let _closed_on_exit = CloseOnDrop(conn.clone());
    let (wc, ws) = (conn.clone(), conn_stop.clone());
    let mut writer_task = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = guarded(
            Task::ServerWriter,
            super::write::write_loop(wc.clone(), ws.clone()),
        )
        .await
        {
            // Replies can no longer be delivered: the connection ends.
            wc.server.counters.errors.add(e.kind(), 1);
            wc.wr().take();
            wc.lock().closed = true;
            ws.cancel();
        }
    }));
    let read_result = read_loop(&conn, &mut reader, &conn_stop).await;
    let fatal = match &read_result {
        Ok(_) => false,
        Err(e) => {
            server.counters.errors.add(e.kind(), 1);
            if log::enabled(Level::Warn) {
                log::emit(
                    Level::Warn,
                    &format!("fastrpc server: connection from {}: {e}", conn.peer),
                );
            }
            true
        }
    };
    {
        let mut out = conn.lock();
        out.reading_done = true;
        if fatal {
            out.closed = true;
        }
        if let Some(w) = out.writer_waker.take() {
            w.wake();
        }
    }
    let _ = (&mut writer_task.0).await;
    // Later replies from handlers still holding calls are dropped.
    let write_failed = std::mem::replace(&mut conn.lock().closed, true);
    if matches!(read_result, Ok(ReadEnd::Stopped)) && !write_failed {
        // A graceful stop: the writer has flushed every answered response and half-closed
        // the connection. Closing a socket that still holds unread requests would reset it,
        // and the client's kernel would drop the responses it has not read yet; so keep
        // reading, and discarding, until the client closes its side. Bounded by the stop
        // timeout, which aborts this task.
        reader.discard_to_eof().await;
    }
}

/// Why the reader stopped without an error.
enum ReadEnd {
    /// The peer closed its side.
    Eof,
    /// The server is stopping, or the writer failed.
    Stopped,
}

/// Marks the connection closed when its task ends, and drops the socket's write half if the
/// writer task has not (it takes it when it ends; aborted before its first turn, it never
/// ran): calls the handlers still hold keep the connection's shared state alive, and must not
/// keep the socket open with it.
struct CloseOnDrop(Arc<ConnShared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let wr = self.0.wr().take();
        drop(wr);
        self.0.lock().closed = true;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads requests and dispatches them until EOF, a failure, or a graceful stop.
async fn read_loop(
    conn: &Arc<ConnShared>,
    r: &mut FrameReader,
    stop: &CancellationToken,
) -> Result<ReadEnd, Error> {
    let server = &conn.server;
    let cfg = &server.cfg;
    let limit = cfg.max_frame_size;
    let mut local_pool: Vec<Slot> = Vec::new();
    let mut gate = SpinGate::new();
    let early_flush = early_flush_at(cfg);
    loop {
        let data = r.data();
        let mut off = 0;
        let mut frames = 0u64;
        let mut early = early_flush;
        let need = loop {
            // A graceful stop ends the read at the next frame; looked at every 32 frames (the
            // token's check takes a lock).
            if frames % 32 == 0 && stop.is_cancelled() {
                return Ok(ReadEnd::Stopped);
            }
            match parse_request(&data[off..], limit)? {
                Parse::Incomplete(k) => break off + k,
                Parse::Frame(p, n) => {
                    let mut slot = match local_pool.pop() {
                        Some(s) => s,
                        None => {
                            std::mem::swap(&mut local_pool, &mut conn.lock().pool);
                            local_pool.pop().unwrap_or_default()
                        }
                    };
                    slot.name.clear();
                    slot.name
                        .extend_from_slice(&data[off + p.name.start..off + p.name.end]);
                    slot.value.clear();
                    slot.value
                        .extend_from_slice(&data[off + p.value.start..off + p.value.end]);
                    off += n;
                    frames += 1;
                    let backlog = dispatch(conn, slot, p.id);
                    if frames % 32 == 0 && early > 0 && conn.lock().buf.len() >= early {
                        super::write::flush_early(conn);
                        early = early.saturating_mul(2);
                    }
                    if cfg.pipeline_requests {
                        wait_idle(conn).await;
                    }
                    if backlog {
                        tokio::select! {
                            biased;
                            _ = stop.cancelled() => return Ok(ReadEnd::Stopped),
                            _ = wait_backlog(conn) => {}
                        }
                    }
                }
            }
        };
        if frames > 0 {
            server
                .counters
                .io
                .frames_received
                .fetch_add(frames, Relaxed);
        }
        r.consume(off);
        let need = need - off;
        // Between requests, with idle_timeout set: the connection is closed when no request
        // starts by then and no handler runs.
        let mut idle_until = (!cfg.idle_timeout.is_zero() && r.data().is_empty())
            .then(|| tokio::time::Instant::now() + cfg.idle_timeout);
        // With `read_spin`, when a lone request just came: the client's next one may follow
        // within a round trip, so the reader spins for it a little before its worker may
        // park (see `spin_then`); a quiet connection does not spin, nor one bringing batches.
        let mut spin =
            (!cfg.read_spin.is_zero() && frames > 0 && frames <= SPIN_MAX_IN_FLIGHT as u64)
                .then_some(cfg.read_spin);
        loop {
            let idle = async move {
                match idle_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let fill = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(ReadEnd::Stopped),
                f = spin_then(r.fill_or_idle(need), spin.take(), &mut gate) => f?,
                _ = idle => {
                    let (busy, last) = {
                        let out = conn.lock();
                        (out.outstanding > 0, out.last_answer)
                    };
                    let now = tokio::time::Instant::now();
                    if busy {
                        // Not idle: a handler runs (and will answer). Look again later.
                        idle_until = Some(now + cfg.idle_timeout);
                        continue;
                    }
                    if let Some(t) = last.map(|l| l + cfg.idle_timeout).filter(|t| *t > now) {
                        // Idle only since the last answer.
                        idle_until = Some(t);
                        continue;
                    }
                    return Err(Error::fixed(
                        ErrorKind::Timeout,
                        "idle timeout: no request within idle_timeout",
                    ));
                }
            };
            match fill {
                Fill::Ready => break,
                Fill::Eof => return Ok(ReadEnd::Eof),
                Fill::Idle => {
                    // Quiet: the reader gave back its buffers; so do the request slots.
                    local_pool = Vec::new();
                    conn.lock().pool = Vec::new();
                }
            }
        }
    }
}

/// Early flushes: while the reader runs the handlers of a read that brought many requests,
/// the replies would otherwise go out as one batch when the read is done, and the client
/// would wait idle until then (and the server idle while the client works through it). So
/// the reader writes what is ready itself once it reaches this many bytes, then at twice as
/// many, and so on through the read: a few writes per read, and the client starts on the
/// first replies while the server handles the rest. A quarter of `write_buffer_size` (at
/// least 4 KiB); off (0) with a `max_batch_delay`, which asks for fuller batches instead.
/// Looked at every 32 requests.
pub(crate) fn early_flush_at(cfg: &crate::config::ServerConfig) -> usize {
    if cfg.max_batch_delay.is_zero() {
        (cfg.write_buffer_size / 4).max(4096)
    } else {
        0
    }
}

/// Runs the handler for one request, or answers at once when the concurrency limit is hit.
/// Returns true when the responses waiting for the writer had reached the high-water mark.
fn dispatch(conn: &Arc<ConnShared>, slot: Slot, id: u32) -> bool {
    let server = &conn.server;
    let c = &server.counters;
    if id == 0 {
        c.nowait_requests.fetch_add(1, Relaxed);
    } else {
        c.requests.fetch_add(1, Relaxed);
    }
    let running = server.running.fetch_add(1, Relaxed);
    if running >= server.cfg.concurrency {
        server.running.fetch_sub(1, Relaxed);
        c.concurrency_limit_replies.fetch_add(1, Relaxed);
        let mut out = conn.lock();
        if id != 0 {
            encode_response(&mut out.buf, id, &server.cfg.concurrency_limit_reply);
            out.frames += 1;
        }
        out.pool.push(slot);
        let backlog = out.buf.len() >= out.high_water;
        let w = out.writer_waker.take();
        drop(out);
        if let Some(w) = w {
            w.wake();
        }
        return backlog;
    }
    let backlog = {
        let mut out = conn.lock();
        out.outstanding += 1;
        out.buf.len() >= out.high_water
    };
    let call = Call {
        conn: conn.clone(),
        slot: Some(slot),
        id,
    };
    let handler = &server.handler;
    if catch_unwind(AssertUnwindSafe(|| handler.handle(call))).is_err() {
        // The call was dropped while unwinding and so answered with error_reply.
        c.handler_panics.fetch_add(1, Relaxed);
        if log::enabled(Level::Warn) {
            log::emit(
                Level::Warn,
                &format!(
                    "fastrpc server: the handler panicked on request {id} from {}; error_reply sent",
                    conn.peer
                ),
            );
        }
    }
    backlog
}

/// Waits until the writer has taken the responses waiting for it (or the connection ended):
/// the back-pressure that stops a client that never reads from growing the server's memory.
async fn wait_backlog(conn: &ConnShared) {
    poll_fn(|cx| {
        let mut out = conn.lock();
        if out.buf.len() < out.high_water || out.closed {
            return Poll::Ready(());
        }
        out.reader_waker = Some(cx.waker().clone());
        Poll::Pending
    })
    .await
}

/// Pipelined mode: waits until this connection's running call is answered.
async fn wait_idle(conn: &ConnShared) {
    poll_fn(|cx| {
        let mut out = conn.lock();
        if out.outstanding == 0 || out.closed {
            return Poll::Ready(());
        }
        out.reader_waker = Some(cx.waker().clone());
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;

    #[test]
    fn early_flushes_start_at_a_quarter_of_the_write_buffer_and_are_off_with_a_batch_delay() {
        let mut cfg = ServerConfig::default();
        assert_eq!(early_flush_at(&cfg), 16 * 1024);
        cfg.write_buffer_size = 1 << 20;
        assert_eq!(early_flush_at(&cfg), 256 * 1024);
        cfg.write_buffer_size = 100;
        assert_eq!(early_flush_at(&cfg), 4096);
        cfg.max_batch_delay = std::time::Duration::from_micros(1);
        assert_eq!(early_flush_at(&cfg), 0);
    }
}
