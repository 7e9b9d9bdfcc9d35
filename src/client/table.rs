//! The client's shared state behind one mutex: the pending-call table, the queue of encoded
//! requests the writer has not taken yet, and the connection's state.
//!
//! The table is indexed by `request id & mask`: ids are handed out 1, 2, 3, ... (wrapping,
//! skipping 0) but an id whose cell is busy is skipped, so matching a response to its call is
//! one index, and the table (at least twice `pending`) always has a free cell near. Cells and
//! their response buffers are reused: a warm client allocates nothing per call.

use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use crate::error::Error;
use crate::protocol::frame;

/// Where a finished call's outcome goes.
pub(crate) enum Notify {
    /// Nobody yet (a just-enqueued future that has not been polled).
    None,
    /// An async or blocking caller: the outcome stays in the cell until it collects it.
    Waker(Waker),
    /// A completion sink (callback or queue): it gets the outcome at once, the cell is freed.
    Sink(Arc<dyn super::Completion>, u128),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum CellState {
    Free,
    /// Encoded in the queue, not yet taken by the writer.
    Queued,
    /// Taken by the writer: on the wire or about to be.
    Sent,
    /// The outcome is in the cell, waiting for its caller.
    Done,
}

pub(crate) struct Cell {
    pub id: u32,
    pub state: CellState,
    /// Woken by the reader with others in one burst and not yet collected (see `burst`).
    pub in_burst: bool,
    pub deadline: Instant,
    pub notify: Notify,
    pub resp: Vec<u8>,
    pub err: Option<Error>,
}

impl Cell {
    fn empty() -> Cell {
        Cell {
            id: 0,
            state: CellState::Free,
            in_burst: false,
            deadline: Instant::now(),
            notify: Notify::None,
            resp: Vec::new(),
            err: None,
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

/// An outcome to deliver after the lock is released.
pub(crate) enum Wake {
    Waker(Waker),
    Sink(Arc<dyn super::Completion>, u128, Error),
}

pub(crate) struct State {
    pub cells: Vec<Cell>,
    pub mask: u32,
    pub next_id: u32,
    /// Cells in use (queued, sent, or done and not collected).
    pub pending: usize,
    pub queue: Vec<u8>,
    pub entries: Vec<Entry>,
    pub queued_nowait: usize,
    pub conn: Conn,
    /// Set by the reader when the connection failed, for the writer to stop.
    pub conn_error: Option<Error>,
    pub writer_waker: Option<Waker>,
    pub started: bool,
    /// No new calls: `close` was called (waiting calls may still finish when draining).
    pub closed: bool,
    /// Tear down now: waiting calls were failed and the connection ends.
    pub shutdown: bool,
    /// Callers the reader woke with their responses that have not collected them yet. While
    /// some have not, a new request does not wake the writer: those callers are about to run
    /// and queue their next requests, and all of them should share one write. (Without this,
    /// the runtime runs the just-woken writer first and each write carries one frame.) The last
    /// one to collect wakes the writer.
    pub burst: usize,
    /// The earliest deadline the timekeeper sleeps towards (None: it waits to be woken).
    pub timer_next: Option<Instant>,
    pub timer_waker: Option<Waker>,
}

impl State {
    pub(crate) fn new(max_pending: usize, queue_capacity: usize) -> State {
        // Start small; grow by doubling up to twice max_pending.
        let n = (2 * max_pending).next_power_of_two().min(64);
        let mut cells = Vec::with_capacity(n);
        cells.resize_with(n, Cell::empty);
        State {
            cells,
            mask: (n - 1) as u32,
            next_id: 1,
            pending: 0,
            queue: Vec::with_capacity(queue_capacity),
            entries: Vec::with_capacity(64),
            queued_nowait: 0,
            conn: Conn::Idle,
            conn_error: None,
            writer_waker: None,
            started: false,
            closed: false,
            shutdown: false,
            burst: 0,
            timer_next: None,
            timer_waker: None,
        }
    }

    #[inline]
    pub(crate) fn cell(&mut self, id: u32) -> Option<&mut Cell> {
        let c = &mut self.cells[(id & self.mask) as usize];
        if c.id == id && id != 0 {
            Some(c)
        } else {
            None
        }
    }

    fn grow(&mut self) {
        let n = self.cells.len() * 2;
        let mut cells: Vec<Cell> = Vec::with_capacity(n);
        cells.resize_with(n, Cell::empty);
        let mask = (n - 1) as u32;
        let mut spare = Vec::new();
        for c in self.cells.drain(..) {
            if c.id != 0 {
                let i = (c.id & mask) as usize;
                cells[i] = c;
            } else {
                spare.push(c.resp);
            }
        }
        // Keep the old free cells' buffers.
        for c in cells.iter_mut().filter(|c| c.id == 0) {
            match spare.pop() {
                Some(b) => c.resp = b,
                None => break,
            }
        }
        self.cells = cells;
        self.mask = mask;
    }

    /// Takes a free cell for a new call and returns its id.
    pub(crate) fn alloc(&mut self, deadline: Instant, notify: Notify) -> u32 {
        if 2 * (self.pending + 1) > self.cells.len() {
            self.grow();
        }
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id == 0 {
                self.next_id = 1;
            }
            let c = &mut self.cells[(id & self.mask) as usize];
            if c.id == 0 {
                c.id = id;
                c.state = CellState::Queued;
                c.deadline = deadline;
                c.notify = notify;
                c.err = None;
                self.pending += 1;
                return id;
            }
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

    /// Frees a cell (its buffer stays for reuse).
    #[inline]
    pub(crate) fn free(&mut self, id: u32) {
        if let Some(c) = self.cell(id) {
            c.id = 0;
            c.state = CellState::Free;
            c.notify = Notify::None;
            c.err = None;
            let was_in_burst = std::mem::take(&mut c.in_burst);
            self.pending -= 1;
            if was_in_burst {
                self.burst -= 1;
                if self.burst == 0 && !self.entries.is_empty() {
                    if let Some(w) = self.writer_waker.take() {
                        w.wake();
                    }
                }
            }
        }
    }

    /// Completes a waiting call with an error. Returns what to wake once unlocked.
    pub(crate) fn fail(&mut self, id: u32, err: &Error) -> Option<Wake> {
        let c = self.cell(id)?;
        if c.state == CellState::Done {
            return None;
        }
        match std::mem::replace(&mut c.notify, Notify::None) {
            Notify::Sink(s, tag) => {
                self.free(id);
                Some(Wake::Sink(s, tag, err.clone()))
            }
            Notify::Waker(w) => {
                c.state = CellState::Done;
                c.err = Some(err.clone());
                Some(Wake::Waker(w))
            }
            Notify::None => {
                c.state = CellState::Done;
                c.err = Some(err.clone());
                None
            }
        }
    }

    /// Fails every call in the given states. Returns how many failed.
    pub(crate) fn fail_all(
        &mut self,
        states: &[CellState],
        err: &Error,
        wakes: &mut Vec<Wake>,
    ) -> usize {
        let mut n = 0;
        for i in 0..self.cells.len() {
            let (id, st) = (self.cells[i].id, self.cells[i].state);
            if id != 0 && states.contains(&st) {
                n += 1;
                if let Some(w) = self.fail(id, err) {
                    wakes.push(w);
                }
            }
        }
        n
    }

    /// Drops the queued bytes (after failing their calls).
    pub(crate) fn clear_queue(&mut self) {
        self.queue.clear();
        self.entries.clear();
        self.queued_nowait = 0;
    }

    /// The oldest call still queued, if any (for `prioritize_new_requests`).
    pub(crate) fn oldest_queued(&mut self) -> Option<u32> {
        let mut found = None;
        for e in &self.entries {
            if e.id == 0 {
                continue;
            }
            let c = &self.cells[(e.id & self.mask) as usize];
            if c.id == e.id && c.state == CellState::Queued {
                found = Some(e.id);
                break;
            }
        }
        found
    }

    /// Moves the queue into `batch` for the writer: live frames only, their calls marked
    /// sent. Returns the number of frames. Whatever `batch` held before is discarded (the
    /// unsent rest of a write that failed must not reach the next connection).
    pub(crate) fn take_batch(&mut self, batch: &mut Vec<u8>) -> usize {
        batch.clear();
        std::mem::swap(&mut self.queue, batch);
        let mut start = 0;
        let mut write_at = 0;
        let mut frames = 0;
        let mut compacting = false;
        for i in 0..self.entries.len() {
            let e = self.entries[i];
            let live = if e.id == 0 {
                true
            } else {
                let mask = self.mask;
                let c = &mut self.cells[(e.id & mask) as usize];
                if c.id == e.id && c.state == CellState::Queued {
                    c.state = CellState::Sent;
                    true
                } else {
                    false
                }
            };
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
        self.entries.clear();
        self.queued_nowait = 0;
        frames
    }

    /// The earliest deadline of a call still waiting, and fails those already past.
    pub(crate) fn expire(&mut self, now: Instant, wakes: &mut Vec<Wake>) -> (Option<Instant>, u64) {
        let mut next: Option<Instant> = None;
        let mut expired = 0;
        let err = Error::timeout();
        for i in 0..self.cells.len() {
            let c = &self.cells[i];
            if c.id == 0 || c.state == CellState::Done {
                continue;
            }
            if c.deadline <= now {
                let id = c.id;
                expired += 1;
                if let Some(w) = self.fail(id, &err) {
                    wakes.push(w);
                }
            } else {
                next = Some(next.map_or(c.deadline, |n| n.min(c.deadline)));
            }
        }
        (next, expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn ids_count_up_and_skip_busy_cells_and_zero() {
        let mut s = State::new(4, 0);
        let a = s.alloc(far(), Notify::None);
        let b = s.alloc(far(), Notify::None);
        assert_eq!((a, b), (1, 2));
        s.next_id = u32::MAX;
        let c = s.alloc(far(), Notify::None);
        let d = s.alloc(far(), Notify::None);
        assert_eq!(c, u32::MAX);
        // 0 is skipped, and 1 and 2 are busy.
        assert_eq!(d, 3);
        s.free(a);
        assert!(s.cell(a).is_none());
        assert_eq!(s.pending, 3);
    }

    #[test]
    fn growth_keeps_every_pending_call_findable() {
        let mut s = State::new(1000, 0);
        let ids: Vec<u32> = (0..900).map(|_| s.alloc(far(), Notify::None)).collect();
        assert!(s.cells.len() >= 1800);
        for id in ids {
            assert_eq!(s.cell(id).unwrap().id, id);
        }
    }

    #[test]
    fn take_batch_skips_calls_that_ended_while_queued() {
        let mut s = State::new(8, 0);
        let a = s.alloc(far(), Notify::None);
        s.push_frame(a, b"a", b"1");
        s.push_frame(0, b"n", b"");
        let b = s.alloc(far(), Notify::None);
        s.push_frame(b, b"b", b"22");
        let c = s.alloc(far(), Notify::None);
        s.push_frame(c, b"c", b"333");
        s.free(b);
        let mut batch = Vec::new();
        assert_eq!(s.take_batch(&mut batch), 3);
        let mut want = Vec::new();
        frame::encode_request(&mut want, a, b"a", b"1");
        frame::encode_request(&mut want, 0, b"n", b"");
        frame::encode_request(&mut want, c, b"c", b"333");
        assert_eq!(batch, want);
        assert_eq!(s.cell(a).unwrap().state, CellState::Sent);
        assert!(s.queue.is_empty() && s.entries.is_empty());
    }

    #[test]
    fn take_batch_discards_the_bytes_of_a_failed_write() {
        let mut s = State::new(8, 0);
        // A batch whose write failed: its bytes are still in the writer's buffer.
        let mut batch = Vec::new();
        frame::encode_request(&mut batch, 7, b"doomed", b"x");
        let a = s.alloc(far(), Notify::None);
        s.push_frame(a, b"fresh", b"1");
        assert_eq!(s.take_batch(&mut batch), 1);
        let mut want = Vec::new();
        frame::encode_request(&mut want, a, b"fresh", b"1");
        assert_eq!(batch, want);
        // And the queue the next requests go into starts empty.
        assert!(s.queue.is_empty());
        let b = s.alloc(far(), Notify::None);
        s.push_frame(b, b"next", b"2");
        assert_eq!(s.take_batch(&mut batch), 1);
        want.clear();
        frame::encode_request(&mut want, b, b"next", b"2");
        assert_eq!(batch, want);
    }
}
