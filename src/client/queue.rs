//! The client's submission queue: encoded requests waiting for the writer, in shards.
//!
//! Each thread that makes calls encodes its requests into one of [`SHARDS`] shards (the
//! thread's own, picked once per thread), under that shard's lock: threads do not share a
//! lock, nor the cache lines a request is written to, so submitting scales with the threads
//! that submit. A bit per shard in `mask` says which shards hold frames.
//!
//! The writer takes the queue with every shard locked at once (for the time it takes to swap
//! each non-empty shard's buffers with spare ones, not to copy them), so a take is one point
//! in time: a request is in it or not. Then, outside the locks, it puts the frames of several
//! shards in the order of submission (`Entry::seq`: a call's id, from one counter before the
//! push). So a call submitted after another request was (on any thread) goes out after it;
//! so does a fire-and-forget request submitted after a call. (Two fire-and-forget requests
//! with no call between them, from different threads, may swap places.)
//!
//! Bounds: the bytes in all shards together stay under the client's `max_queued_bytes` (a
//! request alone is always taken), counted in `bytes` with room reserved ahead per shard
//! (see [`SubQueue::push`]: a request may be refused while up to 1 MiB of that room is
//! unused, never taken past the bound); the
//! fire-and-forget requests in `nowait` under `max_pending_requests` (exactly: each takes its
//! place with an atomic add before its push). A shard's buffers,
//! and the writer's spare ones, keep their capacity for reuse up to 8 write buffers' worth.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::{Mutex, MutexGuard};

use super::table::{Cell as CallCell, Entry, Padded, Table, QUEUED};

/// Buffers the writer swaps into the shards it takes, and its scratch for putting the
/// frames in order (kept between batches: a warm writer allocates nothing).
#[derive(Default)]
pub(crate) struct Spare {
    shards: Vec<Shard>,
    order: Vec<(i64, u32, u32)>,
}
use crate::protocol::frame;

/// Shards per client. A power of two, at most 32 (bits of `mask`).
pub(crate) const SHARDS: usize = 16;

/// One shard's frames: the bytes, and each frame's call id and end.
#[derive(Default)]
pub(crate) struct Shard {
    queue: Vec<u8>,
    entries: Vec<Entry>,
    /// Calls pushed here, ever (for the client's stats).
    calls: u64,
    /// Room reserved in `SubQueue::bytes` and not used yet (at most `chunk`).
    credit: usize,
}

pub(crate) struct SubQueue {
    shards: [Padded<Mutex<Shard>>; SHARDS],
    /// Bit `k`: shard `k` may hold frames (set by whoever makes it non-empty; cleared by the
    /// writer just before it takes the shard).
    mask: Padded<AtomicU32>,
    /// Bytes in all shards, plus the shards' credits (at most `SHARDS * chunk`).
    bytes: Padded<AtomicUsize>,
    /// `max_queued_bytes`.
    max: usize,
    /// The room a shard reserves at a time: 64 KiB, or less under a small `max`.
    chunk: usize,
    /// Fire-and-forget requests in all shards.
    nowait: AtomicUsize,
    /// Capacity a shard's buffer may keep between batches.
    keep: usize,
}

/// Why a push did not happen.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The caller's check said no.
    Check,
    /// No room: this many bytes are queued.
    Full(usize),
}

/// What a push found.
pub(crate) struct Pushed {
    /// Bytes in the shard now.
    pub shard_bytes: usize,
    /// The frame made its shard non-empty: waking the writer is the pusher's job (the
    /// writer takes non-empty shards; a push into one finds the writer about to take it or
    /// woken by whoever made it non-empty).
    pub first: bool,
    /// The frame is the only one in the queue (as far as the pushing thread can tell).
    pub alone: bool,
}

std::thread_local! {
    static MY_SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// This thread's shard: threads take them round-robin on first use.
#[inline]
fn my_shard() -> usize {
    MY_SHARD.with(|s| {
        let k = s.get();
        if k != usize::MAX {
            return k;
        }
        let k = NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS;
        s.set(k);
        k
    })
}

impl SubQueue {
    pub(crate) fn new(write_buffer_size: usize, max_queued_bytes: usize) -> SubQueue {
        SubQueue {
            shards: std::array::from_fn(|_| Padded(Mutex::new(Shard::default()))),
            mask: Padded(AtomicU32::new(0)),
            bytes: Padded(AtomicUsize::new(0)),
            max: max_queued_bytes,
            chunk: (max_queued_bytes / (4 * SHARDS)).min(64 * 1024),
            nowait: AtomicUsize::new(0),
            keep: 8 * write_buffer_size,
        }
    }

    fn lock(&self, k: usize) -> MutexGuard<'_, Shard> {
        // Nothing panics while a shard is locked (a failed allocation aborts): keep going.
        self.shards[k].0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes queued now (every shard locked in turn).
    pub(crate) fn queued(&self) -> usize {
        (0..SHARDS).map(|k| self.lock(k).queue.len()).sum()
    }

    /// Bytes queued now and reserved ahead (test use).
    #[cfg(test)]
    fn counted(&self) -> usize {
        self.bytes.load(Acquire)
    }

    /// Calls queued, ever.
    pub(crate) fn calls(&self) -> u64 {
        (0..SHARDS).map(|k| self.lock(k).calls).sum()
    }

    /// Takes one of `max` places for a fire-and-forget request: never more than `max` at
    /// once, whatever the threads (one atomic add; one that went past gives its place back,
    /// so threads racing for the last places may all be refused for that moment). Every
    /// push of one (id 0) needs a place, which the writer's take (or a clear) gives back; a
    /// push that does not happen gives it back with [`SubQueue::unreserve_nowait`].
    pub(crate) fn reserve_nowait(&self, max: usize) -> bool {
        // A full queue is refused with a load: senders retrying on it do not write the line.
        if self.nowait.load(Acquire) >= max {
            return false;
        }
        if self.nowait.fetch_add(1, AcqRel) < max {
            return true;
        }
        self.nowait.fetch_sub(1, AcqRel);
        false
    }

    pub(crate) fn unreserve_nowait(&self) {
        self.nowait.fetch_sub(1, AcqRel);
    }

    /// Fire-and-forget requests queued now.
    #[inline]
    pub(crate) fn nowait(&self) -> usize {
        self.nowait.load(Acquire)
    }

    /// Whether some shard holds frames (a `SeqCst` load: a push that made its shard
    /// non-empty before it in the `SeqCst` order is seen).
    #[inline]
    pub(crate) fn maybe_nonempty(&self) -> bool {
        self.mask.load(SeqCst) != 0
    }

    /// Encodes a request for call `id` (0: fire-and-forget) with its place `seq` in the
    /// order of submission into this thread's shard, if `check` (run under the shard's lock,
    /// first) says so and the queue has room for it (`max_queued_bytes`; a request alone is
    /// always taken). What `check` reads under the lock is ordered with what
    /// [`SubQueue::sync`] and [`SubQueue::clear`] callers wrote before they lock the shards.
    /// A push that makes its shard non-empty sets the shard's bit with a `SeqCst` add (see
    /// `Pushed::first`).
    ///
    /// Room is counted in `bytes` in stretches of `chunk` bytes that a shard reserves ahead
    /// (its `credit`), so that most pushes do not touch the shared count. When a stretch
    /// does not fit, the exact count decides: every shard locked, the credits given back.
    pub(crate) fn push<T>(
        &self,
        id: u32,
        seq: u32,
        name: &[u8],
        value: &[u8],
        check: impl Fn() -> Option<T>,
    ) -> Result<(Pushed, T), Refused> {
        let k = my_shard();
        let n = frame::REQUEST_OVERHEAD + name.len() + value.len();
        let mut s = self.lock(k);
        let t = check().ok_or(Refused::Check)?;
        if s.credit < n {
            let need = n - s.credit + self.chunk;
            let g = self.bytes.fetch_add(need, AcqRel);
            if g + need > self.max {
                self.bytes.fetch_sub(need, AcqRel);
                drop(s);
                return self.push_exact(k, id, seq, name, value, check);
            }
            s.credit += need;
        }
        s.credit -= n;
        Ok((self.append(&mut s, k, id, seq, name, value), t))
    }

    /// [`SubQueue::push`] when its stretch did not fit: with every shard locked, the
    /// credits go back and the bytes queued decide.
    fn push_exact<T>(
        &self,
        k: usize,
        id: u32,
        seq: u32,
        name: &[u8],
        value: &[u8],
        check: impl Fn() -> Option<T>,
    ) -> Result<(Pushed, T), Refused> {
        let n = frame::REQUEST_OVERHEAD + name.len() + value.len();
        let mut all: [MutexGuard<'_, Shard>; SHARDS] = std::array::from_fn(|k| self.lock(k));
        let t = check().ok_or(Refused::Check)?;
        let credit: usize = all.iter_mut().map(|s| std::mem::take(&mut s.credit)).sum();
        let queued = self.bytes.fetch_sub(credit, AcqRel) - credit;
        if queued > 0 && queued + n > self.max {
            return Err(Refused::Full(queued));
        }
        self.bytes.fetch_add(n, AcqRel);
        Ok((self.append(&mut all[k], k, id, seq, name, value), t))
    }

    /// Appends the frame to shard `k` (locked, its room counted).
    fn append(
        &self,
        s: &mut Shard,
        k: usize,
        id: u32,
        seq: u32,
        name: &[u8],
        value: &[u8],
    ) -> Pushed {
        let was_empty = s.entries.is_empty();
        frame::encode_request(&mut s.queue, id, name, value);
        let end = s.queue.len();
        s.entries.push(Entry { id, seq, end });
        s.calls += (id != 0) as u64;
        let bit = 1u32 << k;
        let mask = if was_empty {
            self.mask.fetch_or(bit, SeqCst) | bit
        } else {
            self.mask.load(Acquire)
        };
        Pushed {
            first: was_empty,
            alone: was_empty && mask == bit,
            shard_bytes: end,
        }
    }

    /// Locks and unlocks every shard: a push that comes after this sees what the caller
    /// wrote before; one that came before is seen by what the caller reads after.
    pub(crate) fn sync(&self) {
        for k in 0..SHARDS {
            drop(self.lock(k));
        }
    }

    /// Takes every shard's frames into `batch` and `entries`, in the order of submission
    /// (emptied first: whatever `batch` held is discarded, so the unsent rest of a failed
    /// write never reaches the next connection). Returns the number of frames taken.
    pub(crate) fn take(
        &self,
        batch: &mut Vec<u8>,
        entries: &mut Vec<Entry>,
        spare: &mut Spare,
    ) -> usize {
        batch.clear();
        entries.clear();
        if self.mask.load(Acquire) == 0 {
            return 0;
        }
        spare.shards.resize_with(SHARDS, Shard::default);
        let mut taken = 0u32;
        {
            let mut all: [MutexGuard<'_, Shard>; SHARDS] = std::array::from_fn(|k| self.lock(k));
            let (mut bytes, mut nowait) = (0, 0);
            for (k, s) in all.iter_mut().enumerate() {
                if s.entries.is_empty() {
                    continue;
                }
                taken |= 1 << k;
                bytes += s.queue.len();
                nowait += s.entries.iter().filter(|e| e.id == 0).count();
                let sp = &mut spare.shards[k];
                std::mem::swap(&mut s.queue, &mut sp.queue);
                std::mem::swap(&mut s.entries, &mut sp.entries);
            }
            self.mask.store(0, Release);
            self.bytes.fetch_sub(bytes, AcqRel);
            if nowait > 0 {
                self.nowait.fetch_sub(nowait, AcqRel);
            }
        }
        if taken == 0 {
            // Emptied meanwhile (a close cleared the queue after the mask said otherwise).
            return 0;
        }
        if taken.count_ones() == 1 {
            // One shard: its frames are in its order already; its buffers become the batch.
            let sp = &mut spare.shards[taken.trailing_zeros() as usize];
            std::mem::swap(&mut sp.queue, batch);
            std::mem::swap(&mut sp.entries, entries);
        } else {
            merge(spare, taken, batch, entries);
        }
        for sp in &mut spare.shards {
            sp.queue.clear();
            sp.entries.clear();
            if sp.queue.capacity() > self.keep {
                sp.queue = Vec::new();
            }
            if sp.entries.capacity() > self.keep / 16 {
                sp.entries = Vec::new();
            }
        }
        entries.len()
    }

    /// Drops every queued frame (their calls are failed by the caller).
    pub(crate) fn clear(&self) {
        let mut all: [MutexGuard<'_, Shard>; SHARDS] = std::array::from_fn(|k| self.lock(k));
        let (mut bytes, mut nowait) = (0, 0);
        for s in all.iter_mut() {
            bytes += s.queue.len();
            nowait += s.entries.iter().filter(|e| e.id == 0).count();
            s.queue.clear();
            s.entries.clear();
            if s.queue.capacity() > self.keep {
                s.queue = Vec::new();
            }
        }
        self.mask.store(0, Release);
        self.bytes.fetch_sub(bytes, AcqRel);
        self.nowait.fetch_sub(nowait, AcqRel);
    }

    /// Claims the oldest call still queued (for `prioritize_new_requests`).
    pub(crate) fn claim_queued<'a>(&self, table: &'a Table) -> Option<(&'a CallCell, u32)> {
        loop {
            // The oldest queued call of each shard, then the oldest of those.
            let mut oldest: Option<(u32, u32)> = None;
            let mut base = None;
            for k in 0..SHARDS {
                let s = self.lock(k);
                let first = s.entries.iter().find(|e| {
                    e.id != 0
                        && table
                            .lookup(e.id)
                            .is_some_and(|c| super::table::word_state(c.load()) == QUEUED)
                });
                if let Some(e) = first {
                    let b = *base.get_or_insert(e.seq);
                    let older = oldest.is_none_or(|(seq, _)| {
                        (e.seq.wrapping_sub(b) as i32) < (seq.wrapping_sub(b) as i32)
                    });
                    if older {
                        oldest = Some((e.seq, e.id));
                    }
                }
            }
            let (_, id) = oldest?;
            if let Some(c) = table.lookup(id) {
                if c.claim(id, 1 << QUEUED) {
                    return Some((c, id));
                }
            }
            // It ended meanwhile: look again.
        }
    }
}

/// Puts the frames of the shards in `taken` (in `spare`) into `batch` in the order of
/// submission. Each shard's frames are in its lock's order, which is the order of submission
/// for the requests of one thread; when every shard's places are increasing (a shard per
/// thread), a merge of the runs does, copying each stretch that comes from one shard whole;
/// otherwise (threads sharing a shard) a sort by place.
fn merge(spare: &mut Spare, taken: u32, batch: &mut Vec<u8>, entries: &mut Vec<Entry>) {
    let base = spare.shards[taken.trailing_zeros() as usize].entries[0].seq;
    // Relative to the first: the queue never spans half the id space. A fire-and-forget
    // request goes before the call that has its place.
    let key = |e: &Entry| 2 * (e.seq.wrapping_sub(base) as i32 as i64) + (e.id != 0) as i64;
    let mut total = 0;
    let mut sorted = true;
    let mut m = taken;
    while m != 0 {
        let k = m.trailing_zeros() as usize;
        m &= m - 1;
        let sp = &spare.shards[k];
        total += sp.queue.len();
        // Equal places (fire-and-forget requests with no call between them) are in order.
        sorted &= sp.entries.windows(2).all(|w| key(&w[0]) <= key(&w[1]));
    }
    batch.reserve(total);
    if sorted {
        // Cursors into the taken shards (at most SHARDS).
        let mut at = [0usize; SHARDS];
        loop {
            // The shard with the smallest next place, and the next smallest place elsewhere.
            let (mut best, mut best_key, mut second) = (usize::MAX, i64::MAX, i64::MAX);
            let mut m = taken;
            while m != 0 {
                let k = m.trailing_zeros() as usize;
                m &= m - 1;
                if let Some(e) = spare.shards[k].entries.get(at[k]) {
                    let kk = key(e);
                    if kk < best_key {
                        second = best_key;
                        (best, best_key) = (k, kk);
                    } else if kk < second {
                        second = kk;
                    }
                }
            }
            if best == usize::MAX {
                break;
            }
            // Its stretch of frames before `second`, copied whole.
            let sp = &spare.shards[best];
            let from = at[best];
            let mut to = from + 1;
            // Up to the next shard's place (an equal one may go either side).
            while to < sp.entries.len() && key(&sp.entries[to]) <= second {
                to += 1;
            }
            let start = if from == 0 {
                0
            } else {
                sp.entries[from - 1].end
            };
            let off = batch.len() - start;
            batch.extend_from_slice(&sp.queue[start..sp.entries[to - 1].end]);
            entries.extend(sp.entries[from..to].iter().map(|e| Entry {
                id: e.id,
                seq: e.seq,
                end: e.end + off,
            }));
            at[best] = to;
        }
        return;
    }
    let order = &mut spare.order;
    order.clear();
    let mut m = taken;
    while m != 0 {
        let k = m.trailing_zeros() as usize;
        m &= m - 1;
        for (i, e) in spare.shards[k].entries.iter().enumerate() {
            order.push((key(e), k as u32, i as u32));
        }
    }
    order.sort_by_key(|o| o.0);
    for &(_, k, i) in order.iter() {
        let sp = &spare.shards[k as usize];
        let i = i as usize;
        let start = if i == 0 { 0 } else { sp.entries[i - 1].end };
        let e = sp.entries[i];
        batch.extend_from_slice(&sp.queue[start..e.end]);
        entries.push(Entry {
            id: e.id,
            seq: e.seq,
            end: batch.len(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::table::mark_batch;
    use crate::protocol::frame::REQUEST_OVERHEAD as REQ;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    fn ok() -> Option<()> {
        Some(())
    }

    fn take(q: &SubQueue, spare: &mut Spare) -> (Vec<u8>, Vec<Entry>) {
        let (mut batch, mut entries) = (Vec::new(), Vec::new());
        q.take(&mut batch, &mut entries, spare);
        (batch, entries)
    }

    /// Frames pushed from 8 threads (each on its own shard), with places from one counter:
    /// a take has them all, whole, in the order of their places, and the counts go to 0.
    #[test]
    fn frames_from_several_threads_come_out_whole_in_submission_order() {
        let q = Arc::new(SubQueue::new(1024, 1 << 20));
        let seq = Arc::new(AtomicU32::new(1));
        let threads: Vec<_> = (0..8u32)
            .map(|t| {
                let (q, seq) = (q.clone(), seq.clone());
                std::thread::spawn(move || {
                    for i in 0..100u32 {
                        // The id says who pushed which; the place is the submission order.
                        let s = seq.fetch_add(1, Relaxed);
                        q.push(t * 1000 + i + 1, s, b"name", &s.to_le_bytes(), || Some(()))
                            .unwrap();
                    }
                    assert!(q.reserve_nowait(8));
                    q.push(0, seq.fetch_add(1, Relaxed), b"nowait", b"", || Some(()))
                        .unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(q.nowait(), 8);
        let want_bytes = 8 * (100 * (12 + 4 + 4) + 12 + 6);
        assert_eq!(q.queued(), want_bytes);
        assert!(q.counted() >= want_bytes && q.counted() <= want_bytes + SHARDS * q.chunk);
        let mut spare = Spare::default();
        let (batch, entries) = take(&q, &mut spare);
        assert_eq!(entries.len(), 808);
        assert_eq!(batch.len(), want_bytes);
        assert_eq!((q.queued(), q.nowait()), (0, 0));
        assert!(q.counted() <= SHARDS * q.chunk);
        assert!(!q.maybe_nonempty());
        let mut start = 0;
        let mut prev_seq = 0;
        let mut last = std::collections::HashMap::new();
        for e in &entries {
            assert!(e.seq > prev_seq, "place {} after {prev_seq}", e.seq);
            prev_seq = e.seq;
            let f = &batch[start..e.end];
            assert_eq!(u32::from_le_bytes(f[0..4].try_into().unwrap()), e.id);
            if e.id != 0 {
                let (t, i) = (e.id / 1000, e.id % 1000);
                assert_eq!(f.len(), 20);
                assert_eq!(&f[8..12], b"name");
                assert_eq!(&f[16..20], &e.seq.to_le_bytes());
                let prev = last.insert(t, i).unwrap_or(0);
                assert!(i == prev + 1, "thread {t}: {i} after {prev}");
            } else {
                assert_eq!(&f[8..14], b"nowait");
            }
            start = e.end;
        }
        assert_eq!(start, batch.len());
        let (batch, entries) = take(&q, &mut spare);
        assert!(batch.is_empty() && entries.is_empty());
    }

    /// A request pushed on one thread after another thread's push (which it waited for)
    /// comes out after it, also when the writer takes in between.
    #[test]
    fn a_request_submitted_after_another_goes_after_it() {
        let q = Arc::new(SubQueue::new(1024, 1 << 20));
        let mut spare = Spare::default();
        let mut seq = 1u32;
        for round in 0..50 {
            let mut want = Vec::new();
            for t in 0..4u32 {
                let q = q.clone();
                let s = seq;
                seq += 1;
                // Each push on a new thread (a new shard), after the previous one ended.
                std::thread::spawn(move || {
                    q.push(s, s, b"x", &t.to_le_bytes(), ok).unwrap();
                })
                .join()
                .unwrap();
                want.push(s);
            }
            let (_, entries) = take(&q, &mut spare);
            let got: Vec<u32> = entries.iter().map(|e| e.id).collect();
            assert_eq!(got, want, "round {round}");
        }
    }

    #[test]
    fn take_discards_the_bytes_of_a_failed_write_and_clear_empties() {
        let t = Table::new(8);
        let q = SubQueue::new(0, 1 << 20);
        let mut spare = Spare::default();
        let mut batch = Vec::new();
        let mut entries = vec![Entry {
            id: 7,
            seq: 7,
            end: 3,
        }];
        frame::encode_request(&mut batch, 7, b"doomed", b"x");
        let first = t.reserve(8).unwrap();
        let (a, _) = t.alloc(first, u64::MAX, None, None);
        q.push(a, a, b"fresh", b"1", ok).unwrap();
        q.take(&mut batch, &mut entries, &mut spare);
        assert_eq!(mark_batch(&t, &mut batch, &entries), 1);
        let mut want = Vec::new();
        frame::encode_request(&mut want, a, b"fresh", b"1");
        assert_eq!(batch, want);
        let first = t.reserve(8).unwrap();
        let (b, _) = t.alloc(first, u64::MAX, None, None);
        q.push(b, b, b"x", b"y", ok).unwrap();
        assert!(q.reserve_nowait(1));
        assert!(!q.reserve_nowait(1), "one place");
        q.push(0, t.ticket(), b"z", b"", ok).unwrap();
        q.clear();
        assert_eq!((q.queued(), q.nowait()), (0, 0));
        assert!(q.counted() <= SHARDS * q.chunk);
        assert!(!q.maybe_nonempty());
        assert_eq!(q.take(&mut batch, &mut entries, &mut spare), 0);
        // The call is still in the table: failing it is the caller's job.
        assert!(q.claim_queued(&t).is_none(), "its frame is gone");
        assert!(t.lookup(b).unwrap().claim(b, 1 << QUEUED));
    }

    #[test]
    fn the_oldest_queued_call_is_claimed_first() {
        let t = Table::new(8);
        let q = Arc::new(SubQueue::new(0, 1 << 20));
        let mut ids = Vec::new();
        for _ in 0..3 {
            let first = t.reserve(8).unwrap();
            ids.push(t.alloc(first, u64::MAX, None, None).0);
        }
        // The newest on this thread, the two older ones on another (another shard).
        q.push(ids[2], ids[2], b"c", b"", ok).unwrap();
        let q2 = q.clone();
        let (a, b) = (ids[0], ids[1]);
        std::thread::spawn(move || {
            q2.push(b, b, b"b", b"", ok).unwrap();
            q2.push(a, a, b"a", b"", ok).unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(q.claim_queued(&t).map(|(_, id)| id), Some(ids[1]));
        assert_eq!(q.claim_queued(&t).map(|(_, id)| id), Some(ids[0]));
        assert_eq!(q.claim_queued(&t).map(|(_, id)| id), Some(ids[2]));
        assert!(q.claim_queued(&t).is_none());
    }

    /// The merge of runs and the sort give the same order; the sort is taken when a shard's
    /// places are not increasing (threads sharing a shard).
    #[test]
    fn merging_by_runs_and_by_sort_agree() {
        let shard = |frames: &[(u32, u32)]| {
            let mut sh = Shard::default();
            for &(id, seq) in frames {
                frame::encode_request(&mut sh.queue, id, b"n", &seq.to_le_bytes());
                sh.entries.push(Entry {
                    id,
                    seq,
                    end: sh.queue.len(),
                });
            }
            sh
        };
        let run = |shards: Vec<Shard>| {
            let taken = (1u32 << shards.len()) - 1;
            let mut spare = Spare {
                shards,
                order: Vec::new(),
            };
            let (mut batch, mut entries) = (Vec::new(), Vec::new());
            merge(&mut spare, taken, &mut batch, &mut entries);
            let mut start = 0;
            for e in &entries {
                let f = &batch[start..e.end];
                assert_eq!(u32::from_le_bytes(f[0..4].try_into().unwrap()), e.id);
                assert_eq!(&f[13..17], &e.seq.to_le_bytes());
                start = e.end;
            }
            assert_eq!(start, batch.len());
            entries.iter().map(|e| (e.id, e.seq)).collect::<Vec<_>>()
        };
        // Increasing runs, interleaved, with a fire-and-forget request (id 0) that has the
        // place of the call after it; and places that wrap around.
        let m = u32::MAX - 2;
        let got = run(vec![
            shard(&[(m, m), (0, 2), (3, 3), (7, 7)]),
            shard(&[(m + 1, m + 1), (1, 1), (2, 2), (5, 5)]),
            shard(&[(u32::MAX, u32::MAX), (4, 4)]),
        ]);
        let want = vec![
            (m, m),
            (m + 1, m + 1),
            (u32::MAX, u32::MAX),
            (1, 1),
            (0, 2),
            (2, 2),
            (3, 3),
            (4, 4),
            (5, 5),
            (7, 7),
        ];
        assert_eq!(got, want);
        // Fire-and-forget requests with the same place (no call between them) from several
        // shards: each shard's in its order, the shards' in any order, all of them whole.
        let got = run(vec![
            shard(&[(0, 5), (0, 5), (6, 6)]),
            shard(&[(0, 5), (0, 5)]),
        ]);
        assert_eq!(got, vec![(0, 5), (0, 5), (0, 5), (0, 5), (6, 6)]);
        // A shard whose places go down (two threads shared it): the sort.
        let got = run(vec![shard(&[(3, 3), (1, 1)]), shard(&[(2, 2), (4, 4)])]);
        assert_eq!(got, vec![(1, 1), (2, 2), (3, 3), (4, 4)]);
    }

    /// The queued bytes never pass `max_queued_bytes`, from several threads at once, though
    /// each shard reserves room ahead; a request alone is always taken.
    #[test]
    fn queued_bytes_stay_under_the_bound() {
        let max = 100_000;
        let q = Arc::new(SubQueue::new(1024, max));
        let frame = REQ + 1 + 1000;
        let accepted: usize = (0..4)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut n = 0;
                    for _ in 0..100 {
                        match q.push(1, 1, b"n", &[0u8; 1000], ok) {
                            Ok(_) => n += 1,
                            Err(Refused::Full(queued)) => assert!(queued + frame > max),
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    n
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(q.queued(), accepted * frame);
        assert!(accepted * frame <= max, "{accepted} frames");
        assert!(
            (max - accepted * frame) < frame + SHARDS * q.chunk,
            "{accepted} frames"
        );
        // Taken: room again. A request larger than the bound goes in alone, not beside one.
        let mut spare = Spare::default();
        let (mut batch, mut entries) = (Vec::new(), Vec::new());
        assert_eq!(q.take(&mut batch, &mut entries, &mut spare), accepted);
        let big = vec![0u8; 2 * max];
        assert!(q.push(2, 2, b"n", &big, ok).is_ok());
        assert_eq!(
            q.push(3, 3, b"n", b"x", ok).err(),
            Some(Refused::Full(REQ + 1 + 2 * max))
        );
    }

    /// A take that finds every shard emptied after the mask said otherwise (a close cleared
    /// the queue in between) takes nothing.
    #[test]
    fn a_take_after_a_clear_takes_nothing() {
        let q = SubQueue::new(0, 1 << 20);
        q.push(1, 1, b"a", b"", ok).unwrap();
        q.clear();
        // The mask as the writer read it before the clear.
        q.mask.fetch_or(1 << 3, SeqCst);
        let mut spare = Spare::default();
        let (mut batch, mut entries) = (vec![1, 2, 3], Vec::new());
        assert_eq!(q.take(&mut batch, &mut entries, &mut spare), 0);
        assert!(batch.is_empty() && entries.is_empty());
        assert!(!q.maybe_nonempty());
    }

    /// Places for fire-and-forget requests, taken from 8 threads at once: exactly the bound.
    #[test]
    fn fire_and_forget_places_are_exact_under_threads() {
        let q = Arc::new(SubQueue::new(0, 1 << 20));
        let got: usize = (0..8)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || (0..100).filter(|_| q.reserve_nowait(100)).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!((got, q.nowait()), (100, 100));
        q.unreserve_nowait();
        assert!(q.reserve_nowait(100));
        assert!(!q.reserve_nowait(100));
    }

    #[test]
    fn a_refused_check_pushes_nothing() {
        let q = SubQueue::new(0, 1 << 20);
        assert_eq!(
            q.push(1, 1, b"a", b"", || None::<()>).err(),
            Some(Refused::Check)
        );
        assert_eq!((q.queued(), q.calls()), (0, 0));
        assert!(!q.maybe_nonempty());
        let (p, v) = q.push(2, 2, b"a", b"", || Some(7)).unwrap();
        assert!(p.first && v == 7);
    }

    #[test]
    fn a_lone_push_says_so() {
        let q = SubQueue::new(0, 1 << 20);
        assert!(q.push(1, 1, b"a", b"", ok).unwrap().0.alone);
        assert!(!q.push(2, 2, b"a", b"", ok).unwrap().0.alone);
    }
}
