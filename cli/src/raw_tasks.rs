//! The raw ceiling with a task per call (`fastrpc bench --raw --raw-tasks`): the raw client's
//! frames and socket handling (`raw.rs`), but each of the C calls in flight is its own tokio
//! task, woken by the reader when its response arrives, that then hands its next request to
//! the writer: the shape of the engine's callers, with no call table, deadlines or
//! compression. It shows what waking one task per response costs tokio's scheduler by
//! itself, for instance as worker threads are added (`--threads`).
//!
//! Shared state is the least such a client needs: a bitmap of the callers whose request waits
//! for the writer (one `fetch_or` per call), a flag that says whether the writer sleeps (read
//! by every call, written only when the writer parks or is woken), and per caller a `Notify`.

use std::io;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use crate::bench::Budget;
use crate::raw::{connect, finish, read_responses, request_tail, RawJob, RawResult, BUF_SIZE};

/// One call in this many has its latency measured (the engine's callers sample as often).
const LATENCY_SAMPLE: u64 = 16;

/// State shared by a connection's callers, writer and reader.
struct Shared {
    /// One bit per caller whose request waits for the writer.
    want: Vec<AtomicU64>,
    /// The writer sleeps (or is about to) and must be woken for a new request.
    writer_idle: AtomicBool,
    writer: Notify,
    /// Wakes each caller when its response has arrived.
    done: Vec<Notify>,
    /// Send time of each caller's sampled request (nanoseconds since `base`, 0: not sampled).
    sent_at: Vec<AtomicU64>,
    base: Instant,
    /// Callers still running; the last one to stop wakes the writer to end the stream.
    live: AtomicUsize,
    /// The reader has ended (the peer closed, or sent what it should not): nothing more will
    /// be answered, so every caller stops.
    reader_done: AtomicBool,
}

impl Shared {
    /// Wakes the writer if it sleeps.
    fn kick_writer(&self) {
        if self.writer_idle.load(SeqCst) && self.writer_idle.swap(false, SeqCst) {
            self.writer.notify_one();
        }
    }
}

/// Runs one raw connection with a caller task per call in flight.
pub async fn raw_client_tasks(job: RawJob) -> io::Result<RawResult> {
    let (rd, wr) = connect(&job.addr, job.handshake.as_ref()).await?;
    let c = job.concurrency.max(1);
    let shared = Arc::new(Shared {
        want: (0..c.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        writer_idle: AtomicBool::new(false),
        writer: Notify::new(),
        done: (0..c).map(|_| Notify::new()).collect(),
        sent_at: (0..c).map(|_| AtomicU64::new(0)).collect(),
        base: Instant::now(),
        live: AtomicUsize::new(c),
        reader_done: AtomicBool::new(false),
    });
    let reader = {
        let (sh, p) = (shared.clone(), job.progress.clone());
        tokio::spawn(async move {
            // The send time first: once woken, the caller may stamp its next request.
            let wake = |id: usize| {
                let sent = sh.sent_at[id - 1].load(Relaxed);
                sh.done[id - 1].notify_one();
                sent
            };
            let r = read_responses(rd, c, sh.base, &p, wake, |_| {}).await;
            // Normally every caller has stopped by now; if the peer ended first, stop them.
            sh.reader_done.store(true, SeqCst);
            for d in &sh.done {
                d.notify_one();
            }
            r
        })
    };
    let callers: Vec<_> = (0..c)
        .map(|i| tokio::spawn(caller(i, shared.clone(), job.budget.clone())))
        .collect();

    let tail = request_tail(&job.name, &job.value);
    let frame_len = 4 + tail.len() as u64;

    let (frames_out, flushes) = match writer(wr, &shared, &tail).await {
        Ok(v) => v,
        Err(e) => {
            for t in &callers {
                t.abort();
            }
            if !reader.is_finished() {
                reader.abort();
                return Err(e);
            }
            // The reader ended first: its error, if it has one, says more.
            finish(reader, 0, frame_len, 0, false).await?;
            return Err(e);
        }
    };
    for t in callers {
        t.await
            .map_err(|e| io::Error::other(format!("raw caller task: {e}")))?;
    }
    finish(reader, frames_out, frame_len, flushes, true).await
}

/// Writes the requests that callers hand over, one flush per scan of the bitmap, until every
/// caller has stopped; then ends the stream. Returns frames written and flushes.
async fn writer(wr: OwnedWriteHalf, shared: &Shared, tail: &[u8]) -> io::Result<(u64, u64)> {
    let mut w = BufWriter::with_capacity(BUF_SIZE, wr);
    let (mut frames, mut flushes) = (0u64, 0u64);
    loop {
        let mut n = 0u64;
        for (k, word) in shared.want.iter().enumerate() {
            let mut bits = word.swap(0, SeqCst);
            while bits != 0 {
                let id = (k * 64 + bits.trailing_zeros() as usize + 1) as u32;
                bits &= bits - 1;
                w.write_all(&id.to_le_bytes()).await?;
                w.write_all(tail).await?;
                n += 1;
            }
        }
        if n > 0 {
            frames += n;
            w.flush().await?;
            flushes += 1;
            continue;
        }
        if shared.live.load(SeqCst) == 0 {
            break;
        }
        // Park: say so first, then look once more, so that a request handed over meanwhile
        // is either seen here or kicks the writer (both sides are sequentially consistent).
        shared.writer_idle.store(true, SeqCst);
        if shared.want.iter().any(|w| w.load(SeqCst) != 0) || shared.live.load(SeqCst) == 0 {
            shared.writer_idle.store(false, SeqCst);
            continue;
        }
        shared.writer.notified().await;
        // Woken by the first of a burst of callers (tokio runs a woken task next, in its
        // LIFO slot): let the rest of the burst run first, so that one flush takes them all.
        tokio::task::yield_now().await;
    }
    w.shutdown().await?;
    Ok((frames, flushes))
}

/// One caller: hand a request to the writer, wait for its response, again, until the budget
/// ends.
async fn caller(i: usize, shared: Arc<Shared>, budget: Arc<Budget>) {
    let (word, bit) = (&shared.want[i / 64], 1u64 << (i % 64));
    let mut n = 0u64;
    while budget.take(1) == 1 {
        let at = if n.is_multiple_of(LATENCY_SAMPLE) {
            shared.base.elapsed().as_nanos() as u64
        } else {
            0
        };
        n += 1;
        shared.sent_at[i].store(at, Relaxed);
        word.fetch_or(bit, SeqCst);
        shared.kick_writer();
        shared.done[i].notified().await;
        if shared.reader_done.load(SeqCst) {
            break;
        }
    }
    if shared.live.fetch_sub(1, SeqCst) == 1 {
        shared.writer_idle.store(false, SeqCst);
        shared.writer.notify_one();
    }
}
