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
//! Ids come from one atomic counter and a cell is taken with a compare-and-swap, so callers
//! on several threads allocate at once. The encoded requests wait in the sharded submission
//! queue (`queue.rs`); the connection's state (`Submit`, behind a mutex) is for the slow
//! paths: connecting, backing off, parking and waking the writer and the timekeeper.

use std::cell::UnsafeCell;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use super::atomic_waker::AtomicWaker;
use crate::error::Error;

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

    /// The claimer publishes the outcome written into the cell, and gets the waiter's waker
    /// to wake. `Err` if the caller went away meanwhile: then the cell must be freed by the
    /// claimer. The waker is taken *before* the outcome shows: from then on the caller may
    /// free the cell and a new call reuse it, so the claimer must not touch it afterwards.
    #[inline]
    pub(crate) fn publish(&self, id: u32, flags: u64) -> Result<Option<Waker>, ()> {
        let w = self.waker.take();
        match self.word.compare_exchange(
            word(id, CLAIMED),
            word(id, DONE | flags),
            Release,
            Relaxed,
        ) {
            Ok(_) => Ok(w),
            Err(_) => Err(()),
        }
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

    /// See [`AtomicWaker::register`]: false if `w` was woken at once and not kept.
    #[inline]
    pub(crate) fn register(&self, w: &Waker) -> bool {
        self.waker.register(w)
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

/// 1 in the id half of `Table::ids`.
const ONE_ID: u64 = 1 << 32;

/// Segments of the table: the first of `n0` cells, then each as large as all before.
const MAX_SEGS: usize = 28;

pub(crate) struct Table {
    segs: [AtomicPtr<Cell>; MAX_SEGS],
    n0: usize,
    /// `len - 1`; only grows.
    mask: AtomicU32,
    /// The next id to try (1, 2, 3, ..., wrapping, skipping 0; high 32 bits) and the cells
    /// in use (queued, sent, claimed, or done and not collected; low 32 bits), in one word
    /// so that a call takes both with one compare-and-swap. A call's cell is freed by its
    /// caller (or, for a sink, by the reader that runs it), mostly just before the same
    /// thread makes its next call: one line, which that thread's next call then finds in
    /// its own cache, instead of a count of cells freed on a line of its own (which every
    /// call read and every free wrote: two lines moving between cores per call).
    ids: Padded<AtomicU64>,
    /// Held while adding a segment.
    growing: std::sync::Mutex<()>,
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
            ids: Padded(AtomicU64::new(ONE_ID)),
            growing: std::sync::Mutex::new(()),
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

    /// Whether call `id` is in a cell other than `c`.
    fn lookup_other(&self, id: u32, c: &Cell) -> bool {
        let mut m = self.mask.load(Acquire);
        let mut last = usize::MAX;
        loop {
            let i = (id & m) as usize;
            if i != last {
                let o = self.at(i);
                if !std::ptr::eq(o, c) && word_id(o.load()) == id {
                    return true;
                }
                last = i;
            }
            if (m as usize) < self.n0 {
                return false;
            }
            m >>= 1;
        }
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

    /// Adds a segment, doubling the table, if it is less than twice the calls in use.
    fn grow(&self) {
        let _one = self.growing.lock().unwrap_or_else(|e| e.into_inner());
        let len = self.len();
        if 2 * self.pending() <= len {
            return;
        }
        let k = (len / self.n0).trailing_zeros() as usize + 1;
        if k >= MAX_SEGS {
            return;
        }
        self.segs[k].store(Self::segment(len), Release);
        self.mask.store((2 * len - 1) as u32, Release);
    }

    /// Counts a call about to be allocated, if fewer than `max` are in use, and hands out
    /// the first id to try for it (pass it to [`Table::alloc`]): one compare-and-swap for
    /// both, which checks before it counts, so a refused caller is never counted (and never
    /// makes another one refused). The call is counted in [`Table::pending`] from now on.
    #[inline]
    pub(crate) fn reserve(&self, max: usize) -> Option<u32> {
        let mut v = self.ids.0.load(SeqCst);
        loop {
            if (v as u32) as usize >= max {
                return None;
            }
            match self
                .ids
                .0
                .compare_exchange_weak(v, v.wrapping_add(ONE_ID | 1), SeqCst, SeqCst)
            {
                Ok(_) => return Some((v >> 32) as u32),
                Err(now) => v = now,
            }
        }
    }

    /// Counts a call beyond the limit (a new call that displaced a queued one) and hands out
    /// its first id.
    #[inline]
    pub(crate) fn reserve_past_limit(&self) -> u32 {
        (self.ids.0.fetch_add(ONE_ID | 1, SeqCst) >> 32) as u32
    }

    /// A place in the order of submission for a request that has no id (fire-and-forget):
    /// the id the next call will get, without taking it (so call ids stay 1, 2, 3, ...).
    /// Fire-and-forget requests go before calls of the same place.
    #[inline]
    pub(crate) fn ticket(&self) -> u32 {
        (self.ids.0.load(SeqCst) >> 32) as u32
    }

    /// Takes a free cell for a call reserved with [`Table::reserve`], trying `first` (the id
    /// it gave) first, and returns the call's id and cell. Any number of threads may
    /// allocate at once: ids come from one counter, and a cell is reserved (`CLAIMED` with
    /// the new id) by a compare-and-swap before its fields are written, then published
    /// `QUEUED`, before the caller takes its queue shard's lock (see `Inner::enqueue`).
    pub(crate) fn alloc(
        &self,
        first: u32,
        deadline: u64,
        sink: Option<Sink>,
        waker: Option<&Waker>,
    ) -> (u32, &Cell) {
        if 2 * self.pending() > self.len() {
            self.grow();
        }
        let mask = self.mask.load(Acquire);
        let several = mask as usize >= 2 * self.n0;
        let mut id = first;
        loop {
            if id != 0 {
                let c = self.at((id & mask) as usize);
                // The compare-and-swap alone (no load first): one trip for the cell's line.
                if c.word
                    .compare_exchange(FREE, word(id, CLAIMED), Acquire, Relaxed)
                    .is_ok()
                {
                    if several && self.lookup_other(id, c) {
                        // The same id is still in use under an older mask.
                        c.word.store(FREE, Release);
                        id = (self.ids.0.fetch_add(ONE_ID, Relaxed) >> 32) as u32;
                        continue;
                    }
                    c.deadline.store(deadline, Relaxed);
                    // SAFETY: the cell is reserved for us (CLAIMED with our id): nobody else
                    // writes its fields, nor registers or takes a waker before it is QUEUED.
                    unsafe { *c.sink.get() = sink };
                    if let Some(w) = waker {
                        // SAFETY: as above.
                        unsafe { c.waker.set(w.clone()) };
                    }
                    c.word.store(word(id, QUEUED), Release);
                    return (id, c);
                }
            }
            // Busy (or 0): the next id.
            id = (self.ids.0.fetch_add(ONE_ID, Relaxed) >> 32) as u32;
        }
    }

    /// Calls in use now.
    #[inline]
    pub(crate) fn pending(&self) -> usize {
        (self.ids.0.load(SeqCst) as u32) as usize
    }

    /// Counts a freed cell (never more than were counted in: no borrow from the ids).
    #[inline]
    pub(crate) fn release(&self) {
        self.ids.0.fetch_sub(1, SeqCst);
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

/// One queued request frame: the call's id (0 for fire-and-forget), its place in the order
/// of submission (the id; for fire-and-forget the next id, see [`Table::ticket`]) and where
/// its bytes end.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    pub id: u32,
    pub seq: u32,
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

/// The connection's state, behind the client's mutex: taken on the slow paths only
/// (connecting, backing off, parking and waking the writer and the timekeeper); each field a
/// caller checks on every call has an atomic hint in `Inner`.
pub(crate) struct Submit {
    pub conn: Conn,
    /// Set by the reader when the connection failed, for the writer to stop.
    pub conn_error: Option<Error>,
    /// The writer task, parked (`Inner::writer_parked` says whether it is here).
    pub writer_waker: Option<Waker>,
    pub started: bool,
    /// The earliest deadline (table ns) the timekeeper sleeps towards (None: it waits to
    /// be woken). Mirrored in `Inner::timer_hint`.
    pub timer_next: Option<u64>,
    pub timer_waker: Option<Waker>,
}

impl Submit {
    pub(crate) fn new() -> Submit {
        Submit {
            conn: Conn::Idle,
            conn_error: None,
            writer_waker: None,
            started: false,
            timer_next: None,
            timer_waker: None,
        }
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
    use crate::protocol::frame;

    fn alloc(t: &Table) -> u32 {
        let first = t.reserve(usize::MAX).unwrap();
        t.alloc(first, u64::MAX, None, None).0
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
        let a = alloc(&t);
        let b = alloc(&t);
        assert_eq!((a, b), (1, 2));
        t.ids.0.store((u32::MAX as u64) << 32 | 2, Relaxed);
        let c = alloc(&t);
        let d = alloc(&t);
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
        let mut ids = Vec::new();
        for i in 0..900 {
            ids.push(alloc(&t));
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
        let first = t.reserve(1).unwrap();
        let (a, c) = t.alloc(first, 0, None, None);
        assert!(!c.claim_sent(a), "still queued");
        assert!(!c.claim(a + 1, 1 << QUEUED), "wrong id");
        assert!(c.mark_sent(a));
        assert!(!c.mark_sent(a));
        assert!(c.claim_sent(a));
        assert!(!c.claim(a, 1 << QUEUED | 1 << SENT), "claimed twice");
        assert!(c.publish(a, 0).is_ok());
        assert_eq!(word_state(c.load()), DONE);
        // Abandoning a done call leaves freeing to the caller.
        assert_eq!(c.abandon(a), Some(0));
    }

    /// A completer preempted right after publishing an outcome must be done with the cell:
    /// its caller frees it at once and a new call moves in with its own waker. Each call's
    /// waker is woken once, by its own completer (CI once saw a task's header corrupted when
    /// the completer took the waker after publishing, racing the caller's free).
    #[test]
    fn a_completer_is_done_with_the_cell_once_the_outcome_shows() {
        use std::sync::atomic::{AtomicU32, AtomicUsize};
        use std::sync::Arc;
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Relaxed);
            }
        }
        const ROUNDS: u32 = if cfg!(miri) { 300 } else { 20_000 };
        let counts: Vec<Arc<Count>> = (0..ROUNDS)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let cell = Arc::new(Cell::empty());
        let next = Arc::new(AtomicU32::new(0));
        let completer = {
            let (cell, next) = (cell.clone(), next.clone());
            std::thread::spawn(move || {
                for id in 1..=ROUNDS {
                    while next.load(Acquire) != id || !cell.claim_sent(id) {
                        std::hint::spin_loop();
                    }
                    let w = cell.publish(id, 0).expect("the caller waits");
                    if id % 3 == 0 {
                        std::thread::yield_now();
                    }
                    w.expect("a registered waker").wake();
                }
            })
        };
        for id in 1..=ROUNDS {
            // As `Table::alloc`, then the writer's `mark_sent`.
            assert!(cell
                .word
                .compare_exchange(FREE, word(id, CLAIMED), Acquire, Relaxed)
                .is_ok());
            unsafe { cell.waker.set(Waker::from(counts[id as usize - 1].clone())) };
            cell.word.store(word(id, QUEUED), Release);
            assert!(cell.mark_sent(id));
            next.store(id, Release);
            // The caller sees the outcome (woken by anything) and frees the cell.
            while word_state(cell.load()) != DONE {
                std::hint::spin_loop();
            }
            unsafe { cell.free() };
        }
        completer.join().unwrap();
        for (i, c) in counts.iter().enumerate() {
            assert_eq!(c.0.load(Relaxed), 1, "call {} woken", i + 1);
            assert_eq!(Arc::strong_count(c), 1, "call {}'s waker kept", i + 1);
        }
    }

    #[test]
    fn abandoning_a_claimed_call_leaves_the_free_to_the_claimer() {
        let t = Table::new(8);
        let first = t.reserve(1).unwrap();
        let (a, c) = t.alloc(first, 0, None, None);
        assert!(c.claim(a, 1 << QUEUED));
        assert_eq!(c.abandon(a), None);
        assert!(c.publish(a, 0).is_err(), "the caller is gone");
        assert_eq!(word_state(c.load()), ABANDONED);
    }

    #[test]
    fn mark_batch_skips_calls_that_ended_while_queued() {
        let t = Table::new(8);
        let q = super::super::queue::SubQueue::new(0, 1 << 20);
        let a = alloc(&t);
        let ok = || Some(());
        q.push(a, a, b"a", b"1", ok).unwrap();
        assert!(q.reserve_nowait(1));
        q.push(0, t.ticket(), b"n", b"", ok).unwrap();
        let b = alloc(&t);
        q.push(b, b, b"b", b"22", ok).unwrap();
        let c = alloc(&t);
        q.push(c, c, b"c", b"333", ok).unwrap();
        free(&t, b);
        let (mut batch, mut entries) = (Vec::new(), Vec::new());
        let mut spare = Default::default();
        assert_eq!(q.take(&mut batch, &mut entries, &mut spare), 4);
        assert_eq!(mark_batch(&t, &mut batch, &entries), 3);
        let mut want = Vec::new();
        frame::encode_request(&mut want, a, b"a", b"1");
        frame::encode_request(&mut want, 0, b"n", b"");
        frame::encode_request(&mut want, c, b"c", b"333");
        assert_eq!(batch, want);
        assert_eq!(word_state(t.lookup(a).unwrap().load()), SENT);
    }

    #[test]
    fn a_refused_reservation_is_not_counted() {
        let t = Table::new(8);
        let ids: Vec<u32> = (0..4)
            .map(|_| {
                let first = t.reserve(4).unwrap();
                t.alloc(first, u64::MAX, None, None).0
            })
            .collect();
        for _ in 0..3 {
            assert_eq!(t.reserve(4), None);
        }
        assert_eq!(t.pending(), 4);
        free(&t, ids[0]);
        assert_eq!(t.pending(), 3);
        assert!(t.reserve(4).is_some(), "room for one after a free");
        assert_eq!(t.reserve(4), None);
        // Past the limit (a call that displaced another): counted all the same.
        t.reserve_past_limit();
        assert_eq!(t.pending(), 5);
    }

    #[test]
    fn threads_allocating_at_once_get_distinct_ids_and_cells() {
        let t = std::sync::Arc::new(Table::new(4096));
        let ids: Vec<Vec<u32>> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..1000).map(|_| alloc(&t)).collect::<Vec<_>>())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let all: std::collections::HashSet<u32> = ids.iter().flatten().copied().collect();
        assert_eq!(all.len(), 4000);
        assert_eq!(t.pending(), 4000);
        for id in all {
            let c = t.lookup(id).unwrap();
            assert_eq!(c.load(), word(id, QUEUED));
        }
    }
}
