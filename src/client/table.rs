//! The client's call table and submission queue.
//!
//! The **call table** is lock-free: each cell has one atomic word holding its call's id and
//! state, and whoever moves a call out of `QUEUED` or `SENT` into `CLAIMED` with a
//! compare-and-swap (the reader with the response, the timekeeper at the deadline, a failing
//! connection, `close`, a newer call displacing a queued one, the caller abandoning it) is the
//! one that completes it: it writes the outcome into the cell and publishes `DONE` (or hands
//! it to the completion sink and frees the cell). The id is part of the word, so a stale id
//! never claims a reused cell. Cells never move (the table grows by adding segments), so a
//! caller keeps a plain reference to its cell.
//!
//! Ids are handed out 1, 2, 3, ... (wrapping, skipping 0), but an id whose cell is busy is
//! skipped, so matching a response to its call is one index, `id & mask`, and the table (at
//! least twice `pending`) always has a free cell near. After the table grew, calls made
//! before sit at their id under an older, smaller mask: lookups try the older masks too.
//! Cells and their response buffers are reused: a warm client allocates nothing per call.
//!
//! The **submission queue** (`Submit`, behind the client's one mutex) holds the encoded
//! requests the writer has not taken yet and the connection's state. Callers and the writer
//! take that mutex; the reader and the collection of outcomes never do.

use std::cell::UnsafeCell;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use super::atomic_waker::AtomicWaker;
use crate::error::Error;
use crate::protocol::frame;

/// A cell's state: the low bits of its word.
pub(crate) const FREE: u64 = 0;
/// Encoded in the queue, not yet taken by the writer.
pub(crate) const QUEUED: u64 = 1;
/// Taken by the writer: on the wire or about to be.
pub(crate) const SENT: u64 = 2;
/// Being completed by whoever claimed it.
pub(crate) const CLAIMED: u64 = 3;
/// The outcome is in the cell, waiting for its caller.
pub(crate) const DONE: u64 = 4;
/// Claimed, and meanwhile its caller went away: the claimer frees the cell.
pub(crate) const ABANDONED: u64 = 5;
const STATE: u64 = 0b111;
/// Set with `DONE` by the reader: the caller was woken in a burst (see `Inner::burst`).
pub(crate) const IN_BURST: u64 = 0b1000;

#[inline]
pub(crate) fn word(id: u32, state: u64) -> u64 {
    ((id as u64) << 32) | state
}

#[inline]
pub(crate) fn word_id(w: u64) -> u32 {
    (w >> 32) as u32
}

#[inline]
pub(crate) fn word_state(w: u64) -> u64 {
    w & STATE
}

/// A completion sink and its tag.
pub(crate) type Sink = (Arc<dyn super::Completion>, u128);

/// The largest response buffer a call cell keeps for reuse (64 KiB): responses up to this
/// size need no allocation once warm; a larger one's buffer is freed with its call.
pub(crate) const RESP_KEEP: usize = 64 * 1024;

/// One call's state. The plain fields belong to whoever holds the call: the allocator while
/// the word is `FREE`, the claimer while `CLAIMED`, the caller once `DONE`.
#[repr(align(64))]
pub(crate) struct Cell {
    word: AtomicU64,
    /// Nanoseconds since the table's epoch.
    deadline: AtomicU64,
    waker: AtomicWaker,
    sink: UnsafeCell<Option<Sink>>,
    resp: UnsafeCell<Vec<u8>>,
    err: UnsafeCell<Option<Error>>,
}

// The plain fields are handed over through `word` (see the type's comment).
unsafe impl Sync for Cell {}
unsafe impl Send for Cell {}

impl Cell {
    fn empty() -> Cell {
        Cell {
            word: AtomicU64::new(FREE),
            deadline: AtomicU64::new(0),
            waker: AtomicWaker::new(),
            sink: UnsafeCell::new(None),
            resp: UnsafeCell::new(Vec::new()),
            err: UnsafeCell::new(None),
        }
    }

    #[inline]
    pub(crate) fn load(&self) -> u64 {
        self.word.load(Acquire)
    }

    /// Claims call `id` if it is in one of `states` (a bit set of `1 << state`).
    #[inline]
    pub(crate) fn claim(&self, id: u32, states: u32) -> bool {
        let mut w = self.word.load(Acquire);
        loop {
            if word_id(w) != id || id == 0 || states & (1 << word_state(w)) == 0 {
                return false;
            }
            match self
                .word
                .compare_exchange_weak(w, word(id, CLAIMED), Acquire, Acquire)
            {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
    }

    /// Claims call `id` if it was sent (the reader's one compare-and-swap per response).
    #[inline]
    pub(crate) fn claim_sent(&self, id: u32) -> bool {
        self.word
            .compare_exchange(word(id, SENT), word(id, CLAIMED), Acquire, Relaxed)
            .is_ok()
    }

    /// Marks a queued call sent (the writer). False if it ended while queued.
    #[inline]
    pub(crate) fn mark_sent(&self, id: u32) -> bool {
        self.word
            .compare_exchange(word(id, QUEUED), word(id, SENT), AcqRel, Relaxed)
            .is_ok()
    }

    /// The claimer publishes the outcome written into the cell. False if the caller went
    /// away meanwhile: then the cell must be freed by the claimer.
    #[inline]
    pub(crate) fn publish(&self, id: u32, flags: u64) -> bool {
        self.word
            .compare_exchange(word(id, CLAIMED), word(id, DONE | flags), Release, Relaxed)
            .is_ok()
    }

    /// The caller gives up on call `id`. Returns true if the caller must free the cell now
    /// (it claimed it, or the outcome was already there), with the word's `IN_BURST` flag.
    pub(crate) fn abandon(&self, id: u32) -> Option<u64> {
        let mut w = self.word.load(Acquire);
        loop {
            if word_id(w) != id {
                return None;
            }
            let next = match word_state(w) {
                QUEUED | SENT => word(id, CLAIMED),
                CLAIMED => word(id, ABANDONED),
                DONE => return Some(w & IN_BURST),
                _ => return None,
            };
            match self.word.compare_exchange_weak(w, next, AcqRel, Acquire) {
                Ok(_) if word_state(next) == CLAIMED => return Some(0),
                Ok(_) => return None,
                Err(now) => w = now,
            }
        }
    }

    #[inline]
    pub(crate) fn deadline(&self) -> u64 {
        self.deadline.load(Relaxed)
    }

    #[inline]
    pub(crate) fn register(&self, w: &Waker) {
        self.waker.register(w)
    }

    #[inline]
    pub(crate) fn take_waker(&self) -> Option<Waker> {
        self.waker.take()
    }

    /// # Safety
    /// The caller holds the call (claimed it, or it is `DONE` and the caller is its owner).
    #[inline]
    pub(crate) unsafe fn take_sink(&self) -> Option<Sink> {
        (*self.sink.get()).take()
    }

    /// # Safety
    /// As [`Cell::take_sink`].
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn resp(&self) -> &mut Vec<u8> {
        &mut *self.resp.get()
    }

    /// # Safety
    /// As [`Cell::take_sink`].
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn err(&self) -> &mut Option<Error> {
        &mut *self.err.get()
    }

    /// Empties the cell (its response buffer stays for reuse, up to [`RESP_KEEP`] bytes of
    /// capacity) and marks it free.
    ///
    /// # Safety
    /// As [`Cell::take_sink`]; nobody else may touch the call afterwards.
    pub(crate) unsafe fn free(&self) {
        *self.sink.get() = None;
        *self.err.get() = None;
        let resp = &mut *self.resp.get();
        if resp.capacity() > RESP_KEEP {
            // A large response's buffer is not kept: a burst of them must not pin memory.
            *resp = Vec::new();
        }
        resp.clear();
        self.waker.clear();
        self.word.store(FREE, Release);
    }
}

/// A value on its own cache lines (128 bytes: a line and its adjacent-line prefetch), so that
/// writes to its neighbours do not evict it from other cores' caches, nor its writes theirs.
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Segments of the table: the first of `n0` cells, then each as large as all before.
const MAX_SEGS: usize = 28;

pub(crate) struct Table {
    segs: [AtomicPtr<Cell>; MAX_SEGS],
    n0: usize,
    /// `len - 1`; only grows.
    mask: AtomicU32,
    /// Cells taken, ever (written by the allocator only) and cells freed (by whoever frees):
    /// their difference is the cells in use (queued, sent, claimed, or done and not
    /// collected). Two counters on their own cache lines instead of one that every call
    /// increments on one core and decrements on another.
    allocated: Padded<AtomicUsize>,
    freed: Padded<AtomicUsize>,
    epoch: Instant,
}

impl Table {
    pub(crate) fn new(max_pending: usize) -> Table {
        // Start small; grow by doubling up to twice max_pending.
        let n0 = (2 * max_pending).next_power_of_two().min(64);
        let segs: [AtomicPtr<Cell>; MAX_SEGS] =
            std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut()));
        segs[0].store(Self::segment(n0), Release);
        Table {
            segs,
            n0,
            mask: AtomicU32::new((n0 - 1) as u32),
            allocated: Padded(AtomicUsize::new(0)),
            freed: Padded(AtomicUsize::new(0)),
            epoch: Instant::now(),
        }
    }

    fn segment(n: usize) -> *mut Cell {
        let cells: Box<[Cell]> = (0..n).map(|_| Cell::empty()).collect();
        Box::into_raw(cells) as *mut Cell
    }

    fn seg_len(&self, k: usize) -> usize {
        if k == 0 {
            self.n0
        } else {
            self.n0 << (k - 1)
        }
    }

    /// Cells in the table now.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.mask.load(Acquire) as usize + 1
    }

    /// Cell `i`, which must be below [`Table::len`].
    #[inline]
    pub(crate) fn at(&self, i: usize) -> &Cell {
        let (k, off) = if i < self.n0 {
            (0, i)
        } else {
            let q = i / self.n0;
            let k = (usize::BITS - q.leading_zeros()) as usize;
            (k, i - (self.n0 << (k - 1)))
        };
        let p = self.segs[k].load(Acquire);
        debug_assert!(!p.is_null() && off < self.seg_len(k));
        // SAFETY: segments below `len` are allocated before `mask` says so, never freed
        // before the table, and `off` is within segment `k`.
        unsafe { &*p.add(off) }
    }

    /// The cell of call `id`, in whatever state, if the call is in the table.
    #[inline]
    pub(crate) fn lookup(&self, id: u32) -> Option<&Cell> {
        self.find(id).map(|(_, c)| c)
    }

    /// Like [`Table::lookup`], with the cell's index (for [`Table::at`]).
    #[inline]
    pub(crate) fn find(&self, id: u32) -> Option<(usize, &Cell)> {
        if id == 0 {
            return None;
        }
        let mut m = self.mask.load(Acquire);
        let mut last = usize::MAX;
        loop {
            let i = (id & m) as usize;
            if i != last {
                let c = self.at(i);
                if word_id(c.load()) == id {
                    return Some((i, c));
                }
                last = i;
            }
            // The previous, half-size mask.
            if (m as usize) < self.n0 {
                return None;
            }
            m >>= 1;
        }
    }

    /// Nanoseconds since the table's epoch (0 for earlier instants).
    #[inline]
    pub(crate) fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// The deadline `timeout` from now, in table ns. From the precise clock: the kernel's
    /// coarse clock (~17 ns cheaper a read) lags it by more than its stated tick on a VM
    /// (up to 12 ms measured against a 4 ms tick), which made deadlines early.
    #[inline]
    pub(crate) fn deadline_after(&self, timeout: Duration) -> u64 {
        self.ns(Instant::now())
            .saturating_add(timeout.as_nanos().min(u64::MAX as u128) as u64)
    }

    #[inline]
    pub(crate) fn instant(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }

    /// Adds a segment, doubling the table (only the allocator, under the submit lock).
    fn grow(&self) {
        let len = self.len();
        let k = (len / self.n0).trailing_zeros() as usize + 1;
        if k >= MAX_SEGS {
            return;
        }
        self.segs[k].store(Self::segment(len), Release);
        self.mask.store((2 * len - 1) as u32, Release);
    }

    /// Takes a free cell for a new call and returns its id and cell. Only one allocator at
    /// a time (the caller holds the submit lock, which owns `next_id`).
    pub(crate) fn alloc(
        &self,
        next_id: &mut u32,
        deadline: u64,
        sink: Option<Sink>,
        waker: Option<&Waker>,
    ) -> (u32, &Cell) {
        let pending = self.pending();
        let a = self.allocated.0.load(Relaxed);
        self.allocated.0.store(a + 1, Release);
        if 2 * (pending + 1) > self.len() {
            self.grow();
        }
        let mask = self.mask.load(Acquire);
        let several = mask as usize >= 2 * self.n0;
        loop {
            let id = *next_id;
            *next_id = next_id.wrapping_add(1);
            if *next_id == 0 {
                *next_id = 1;
            }
            let c = self.at((id & mask) as usize);
            if c.load() != FREE || (several && self.lookup(id).is_some()) {
                continue;
            }
            c.deadline.store(deadline, Relaxed);
            // SAFETY: the cell is free and only the allocator takes free cells.
            unsafe { *c.sink.get() = sink };
            if let Some(w) = waker {
                // SAFETY: as above; nobody registers or takes before the word is published.
                unsafe { c.waker.set(w.clone()) };
            }
            c.word.store(word(id, QUEUED), Release);
            return (id, c);
        }
    }

    /// Calls in use now.
    #[inline]
    pub(crate) fn pending(&self) -> usize {
        // `freed` first: it never passes `allocated`, which only grows.
        let f = self.freed.0.load(SeqCst);
        self.allocated.0.load(SeqCst) - f
    }

    /// Counts a freed cell; returns the cells still in use.
    #[inline]
    pub(crate) fn release(&self) -> usize {
        let f = self.freed.0.fetch_add(1, SeqCst) + 1;
        self.allocated.0.load(SeqCst) - f
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        for k in 0..MAX_SEGS {
            let p = *self.segs[k].get_mut();
            if !p.is_null() {
                let n = self.seg_len(k);
                // SAFETY: made by `segment(n)` and not freed before.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n)) });
            }
        }
    }
}

/// One queued request frame: the call's id (0 for fire-and-forget) and where its bytes end.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    pub id: u32,
    pub end: usize,
}

/// The connection as the callers see it.
pub(crate) enum Conn {
    /// Not connected; the next call starts a connect.
    Idle,
    /// Connecting or connected.
    Up,
    /// A connect failed: calls fail at once with `err` until `until`.
    Backoff { until: Instant, err: Error },
}

/// An outcome to deliver to a completion sink.
pub(crate) type SinkErr = (Arc<dyn super::Completion>, u128, Error);

/// What callers and the writer share, behind the client's mutex.
pub(crate) struct Submit {
    pub next_id: u32,
    /// Calls accepted (excluding fire-and-forget sends).
    pub calls: u64,
    pub queue: Vec<u8>,
    pub entries: Vec<Entry>,
    pub queued_nowait: usize,
    pub conn: Conn,
    /// Set by the reader when the connection failed, for the writer to stop.
    pub conn_error: Option<Error>,
    pub writer_waker: Option<Waker>,
    pub started: bool,
    /// The earliest deadline (table ns) the timekeeper sleeps towards (None: it waits to
    /// be woken).
    pub timer_next: Option<u64>,
    pub timer_waker: Option<Waker>,
    /// The writer holds a batch it took and has not finished writing (a draining close
    /// waits for it: fire-and-forget requests have no call to wait for).
    pub writing: bool,
}

impl Submit {
    pub(crate) fn new(queue_capacity: usize) -> Submit {
        Submit {
            next_id: 1,
            calls: 0,
            queue: Vec::with_capacity(queue_capacity),
            entries: Vec::with_capacity(64),
            queued_nowait: 0,
            conn: Conn::Idle,
            conn_error: None,
            writer_waker: None,
            started: false,
            timer_next: None,
            timer_waker: None,
            writing: false,
        }
    }

    /// Appends a request frame to the queue.
    #[inline]
    pub(crate) fn push_frame(&mut self, id: u32, name: &[u8], value: &[u8]) {
        frame::encode_request(&mut self.queue, id, name, value);
        self.entries.push(Entry {
            id,
            end: self.queue.len(),
        });
        if id == 0 {
            self.queued_nowait += 1;
        }
    }

    /// Drops the queued bytes (their calls are failed by the caller).
    pub(crate) fn clear_queue(&mut self) {
        self.queue.clear();
        self.entries.clear();
        self.queued_nowait = 0;
    }

    /// Hands the queue to the writer: swaps it with `batch` and `entries` (which the writer
    /// emptied). Whatever `batch` held before is discarded (the unsent rest of a write that
    /// failed must not reach the next connection).
    pub(crate) fn take(&mut self, batch: &mut Vec<u8>, entries: &mut Vec<Entry>) {
        batch.clear();
        entries.clear();
        std::mem::swap(&mut self.queue, batch);
        std::mem::swap(&mut self.entries, entries);
        self.queued_nowait = 0;
        self.writing = true;
    }
}

/// Marks the taken frames' calls sent and cuts out the frames of calls that ended while
/// queued. Returns the number of frames left in `batch`.
pub(crate) fn mark_batch(table: &Table, batch: &mut Vec<u8>, entries: &[Entry]) -> usize {
    let mut start = 0;
    let mut write_at = 0;
    let mut frames = 0;
    let mut compacting = false;
    for e in entries {
        let live = e.id == 0 || table.lookup(e.id).is_some_and(|c| c.mark_sent(e.id));
        if live {
            frames += 1;
            if compacting {
                batch.copy_within(start..e.end, write_at);
            }
            write_at += e.end - start;
        } else {
            compacting = true;
        }
        start = e.end;
    }
    batch.truncate(write_at);
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(t: &Table, next: &mut u32) -> u32 {
        t.alloc(next, u64::MAX, None, None).0
    }

    fn free(t: &Table, id: u32) {
        let c = t.lookup(id).unwrap();
        assert!(c.claim(id, 1 << QUEUED | 1 << SENT));
        unsafe { c.free() };
        t.release();
    }

    #[test]
    fn ids_count_up_and_skip_busy_cells_and_zero() {
        let t = Table::new(4);
        let mut next = 1;
        let a = alloc(&t, &mut next);
        let b = alloc(&t, &mut next);
        assert_eq!((a, b), (1, 2));
        next = u32::MAX;
        let c = alloc(&t, &mut next);
        let d = alloc(&t, &mut next);
        assert_eq!(c, u32::MAX);
        // 0 is skipped, and 1 and 2 are busy.
        assert_eq!(d, 3);
        free(&t, a);
        assert!(t.lookup(a).is_none());
        assert_eq!(t.pending(), 3);
    }

    #[test]
    fn growth_keeps_every_pending_call_findable() {
        let t = Table::new(1000);
        let mut next = 1;
        let mut ids = Vec::new();
        for i in 0..900 {
            ids.push(alloc(&t, &mut next));
            // Free some along the way, so that live calls sit under several masks.
            if i % 3 == 0 {
                free(&t, ids.remove(0));
            }
        }
        assert!(t.len() >= 2 * t.pending());
        for &id in &ids {
            let c = t.lookup(id).unwrap();
            assert_eq!(word_id(c.load()), id);
            assert_eq!(word_state(c.load()), QUEUED);
        }
        // Unknown ids are not found, whatever their bits.
        for id in [0, 5000, 1 << 20, u32::MAX] {
            assert!(t.lookup(id).is_none(), "{id}");
        }
    }

    #[test]
    fn deadlines_are_never_early() {
        let t = Table::new(8);
        for _ in 0..1000 {
            let before = t.ns(Instant::now());
            let d = t.deadline_after(Duration::from_millis(5));
            let after = t.ns(Instant::now());
            assert!(d >= before + 5_000_000, "early: {d} < {before} + 5ms");
            assert!(d <= after + 5_000_000, "late: {d} vs {after}");
        }
    }

    #[test]
    fn a_claim_needs_the_right_id_and_state() {
        let t = Table::new(8);
        let mut next = 1;
        let (a, c) = t.alloc(&mut next, 0, None, None);
        assert!(!c.claim_sent(a), "still queued");
        assert!(!c.claim(a + 1, 1 << QUEUED), "wrong id");
        assert!(c.mark_sent(a));
        assert!(!c.mark_sent(a));
        assert!(c.claim_sent(a));
        assert!(!c.claim(a, 1 << QUEUED | 1 << SENT), "claimed twice");
        assert!(c.publish(a, 0));
        assert_eq!(word_state(c.load()), DONE);
        // Abandoning a done call leaves freeing to the caller.
        assert_eq!(c.abandon(a), Some(0));
    }

    #[test]
    fn abandoning_a_claimed_call_leaves_the_free_to_the_claimer() {
        let t = Table::new(8);
        let mut next = 1;
        let (a, c) = t.alloc(&mut next, 0, None, None);
        assert!(c.claim(a, 1 << QUEUED));
        assert_eq!(c.abandon(a), None);
        assert!(!c.publish(a, 0), "the caller is gone");
        assert_eq!(word_state(c.load()), ABANDONED);
    }

    #[test]
    fn mark_batch_skips_calls_that_ended_while_queued() {
        let t = Table::new(8);
        let mut s = Submit::new(0);
        let a = alloc(&t, &mut s.next_id);
        s.push_frame(a, b"a", b"1");
        s.push_frame(0, b"n", b"");
        let b = alloc(&t, &mut s.next_id);
        s.push_frame(b, b"b", b"22");
        let c = alloc(&t, &mut s.next_id);
        s.push_frame(c, b"c", b"333");
        free(&t, b);
        let (mut batch, mut entries) = (Vec::new(), Vec::new());
        s.take(&mut batch, &mut entries);
        assert_eq!(mark_batch(&t, &mut batch, &entries), 3);
        let mut want = Vec::new();
        frame::encode_request(&mut want, a, b"a", b"1");
        frame::encode_request(&mut want, 0, b"n", b"");
        frame::encode_request(&mut want, c, b"c", b"333");
        assert_eq!(batch, want);
        assert_eq!(word_state(t.lookup(a).unwrap().load()), SENT);
        assert!(s.queue.is_empty() && s.entries.is_empty());
    }

    #[test]
    fn take_discards_the_bytes_of_a_failed_write() {
        let t = Table::new(8);
        let mut s = Submit::new(0);
        // A batch whose write failed: its bytes are still in the writer's buffer.
        let mut batch = Vec::new();
        let mut entries = vec![Entry { id: 7, end: 3 }];
        frame::encode_request(&mut batch, 7, b"doomed", b"x");
        let a = alloc(&t, &mut s.next_id);
        s.push_frame(a, b"fresh", b"1");
        s.take(&mut batch, &mut entries);
        assert_eq!(mark_batch(&t, &mut batch, &entries), 1);
        let mut want = Vec::new();
        frame::encode_request(&mut want, a, b"fresh", b"1");
        assert_eq!(batch, want);
        // And the queue the next requests go into starts empty.
        assert!(s.queue.is_empty());
        let b = alloc(&t, &mut s.next_id);
        s.push_frame(b, b"next", b"2");
        s.take(&mut batch, &mut entries);
        assert_eq!(mark_batch(&t, &mut batch, &entries), 1);
        want.clear();
        frame::encode_request(&mut want, b, b"next", b"2");
        assert_eq!(batch, want);
    }
}
