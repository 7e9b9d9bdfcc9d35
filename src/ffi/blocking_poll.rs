//! The blocking wait shared by `fastrpc_completion_queue_poll` and `fastrpc_server_queue_poll`
//! (and the hand-on of `fastrpc_completion_queue_read_poll`): a poller waits on the queue's
//! condvar, counted in its state's `waiters` so that a push wakes one only when some wait,
//! and a poller that leaves items behind wakes the next.

use std::sync::{Condvar, MutexGuard};
use std::time::{Duration, Instant};

use super::fastrpc_status;
use crate::error::{Error, ErrorKind};

/// A queue's state as the wait sees it.
pub(super) trait PollState {
    fn has_items(&self) -> bool;
    fn is_shut(&self) -> bool;
    /// Pollers blocked on the condvar now.
    fn waiters(&mut self) -> &mut usize;
}

/// The wait of a poll: up to `timeout_ms` (0: not at all) until the queue behind `st` holds
/// items, returned under its guard for the poll to take them (then `hand_on`). Otherwise the
/// poll's status: OK with `*n` 0 when the time ran out, CLOSED (`closed` is the message)
/// when the queue is shut down and empty, INVALID_ARGUMENT for a wait on a library thread
/// (inside a callback or handler, where the runtime is current), which it would block.
/// `n` must be valid for a write.
pub(super) fn wait_for_items<'a, T: PollState>(
    mut st: MutexGuard<'a, T>,
    ready: &Condvar,
    timeout_ms: u32,
    n: *mut usize,
    closed: &'static str,
) -> Result<MutexGuard<'a, T>, fastrpc_status> {
    if timeout_ms > 0 && tokio::runtime::Handle::try_current().is_ok() {
        return Err(super::invalid(
            "a waiting poll from a library thread (inside a callback or handler) would \
             block it; poll with timeout 0 there, or from your own thread",
        ));
    }
    let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
    loop {
        if st.has_items() {
            return Ok(st);
        }
        if st.is_shut() {
            return Err(super::fail(&Error::fixed(ErrorKind::Closed, closed)));
        }
        let now = Instant::now();
        if now >= deadline {
            unsafe { *n = 0 };
            return Err(fastrpc_status::FASTRPC_STATUS_OK);
        }
        *st.waiters() += 1;
        st = ready
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        *st.waiters() -= 1;
    }
}

/// Releases the queue after a poll took its batch, waking the next blocked poller when items
/// are left for it (a push woke only one).
pub(super) fn hand_on<T: PollState>(mut st: MutexGuard<'_, T>, ready: &Condvar) {
    let more = st.has_items() && *st.waiters() > 0;
    drop(st);
    if more {
        ready.notify_one();
    }
}
