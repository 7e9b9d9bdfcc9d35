//! A waker slot that one waiter registers into and one completer takes from, concurrently,
//! without a lock: the three-state protocol of `futures::task::AtomicWaker`, except that the
//! one take closes the slot. The completer takes the waker *before* it publishes the outcome
//! (once the outcome is visible the owner may free and reuse the slot at once, so the
//! completer must be done with it by then); a waiter registering after the take wakes itself
//! and re-checks, until the outcome shows. Whichever order they run in, the waiter is woken
//! or sees the outcome, and nobody touches the slot after the owner has seen the outcome.

use std::cell::UnsafeCell;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::task::Waker;

/// Nobody is in the slot.
const WAITING: usize = 0;
/// The waiter is writing the slot.
const REGISTERING: usize = 0b01;
/// A completer took the slot (or asked the registering waiter to wake itself); it stays set
/// until the owner clears the slot.
const WAKING: usize = 0b10;

pub(crate) struct AtomicWaker {
    state: AtomicUsize,
    waker: UnsafeCell<Option<Waker>>,
}

// The slot is only touched by whoever moved `state` out of WAITING (see the methods).
unsafe impl Send for AtomicWaker {}
unsafe impl Sync for AtomicWaker {}

impl AtomicWaker {
    pub(crate) const fn new() -> AtomicWaker {
        AtomicWaker {
            state: AtomicUsize::new(WAITING),
            waker: UnsafeCell::new(None),
        }
    }

    /// Stores `waker` to be woken by the [`AtomicWaker::take`]. One registering thread at a
    /// time (the call's own future). Returns false if the slot was taken already (or is being
    /// taken): then `waker` was woken at once, is not kept, and the waiter should register
    /// again on its next poll if the outcome is not there yet.
    pub(crate) fn register(&self, waker: &Waker) -> bool {
        match self
            .state
            .compare_exchange(WAITING, REGISTERING, Acquire, Acquire)
            .unwrap_or_else(|x| x)
        {
            WAITING => {
                // SAFETY: REGISTERING excludes every other access to the slot.
                unsafe {
                    let slot = &mut *self.waker.get();
                    match slot {
                        Some(old) if old.will_wake(waker) => {}
                        _ => *slot = Some(waker.clone()),
                    }
                }
                if self
                    .state
                    .compare_exchange(REGISTERING, WAITING, AcqRel, Acquire)
                    .is_ok()
                {
                    return true;
                }
                // A completer came while we wrote (state is REGISTERING | WAKING): it left
                // the waker to us.
                // SAFETY: still ours until the store below.
                let w = unsafe { (*self.waker.get()).take() };
                self.state.store(WAKING, Release);
                if let Some(w) = w {
                    w.wake();
                }
                false
            }
            _ => {
                // WAKING: the completer took the slot; the outcome is being published. (A
                // second registrant cannot exist: one waiter.)
                waker.wake_by_ref();
                false
            }
        }
    }

    /// Takes the registered waker, if any, and closes the slot: later registrations wake
    /// themselves. The completer, once, *before* publishing the outcome.
    pub(crate) fn take(&self) -> Option<Waker> {
        match self.state.fetch_or(WAKING, AcqRel) {
            WAITING => {
                // SAFETY: WAKING excludes the waiter's writes, for good.
                unsafe { (*self.waker.get()).take() }
            }
            _ => None,
        }
    }

    /// Stores the first waker before anyone else can see the slot.
    ///
    /// # Safety
    /// No register or take may run concurrently (the cell is not published yet).
    pub(crate) unsafe fn set(&self, waker: Waker) {
        *self.waker.get() = Some(waker);
    }

    /// Drops a registered waker and opens the slot again.
    ///
    /// # Safety
    /// No register or take may run concurrently, nor later by anyone who came before (the
    /// cell is being freed by its owner, after the completer's take).
    pub(crate) unsafe fn clear(&self) {
        *self.waker.get() = None;
        self.state.store(WAITING, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn take_returns_the_registered_waker_once_and_closes_the_slot() {
        let n = Arc::new(Count(AtomicUsize::new(0)));
        let w = Waker::from(n.clone());
        let a = AtomicWaker::new();
        assert!(a.register(&w));
        assert!(a.register(&w));
        a.take().unwrap().wake();
        assert!(a.take().is_none());
        assert_eq!(n.0.load(SeqCst), 1);
        // Registering after the take: woken at once, not kept.
        assert!(!a.register(&w));
        assert_eq!(n.0.load(SeqCst), 2);
        assert!(a.take().is_none());
        // The owner's clear opens it again.
        unsafe { a.clear() };
        assert!(a.register(&w));
        assert!(a.take().is_some());
        // Dropped wakers: only `n` and `w` hold the count.
        assert_eq!(Arc::strong_count(&n), 2);
    }

    /// Many rounds of a waiter (register, then check the flag) racing a completer (take, set
    /// the flag, then wake): the waiter always sees the flag or gets woken.
    #[test]
    fn a_waiter_racing_a_completer_is_never_lost() {
        for _ in 0..if cfg!(miri) { 200 } else { 2000 } {
            let n = Arc::new(Count(AtomicUsize::new(0)));
            let w = Waker::from(n.clone());
            let a = Arc::new(AtomicWaker::new());
            let flag = Arc::new(AtomicBool::new(false));
            let (a2, f2) = (a.clone(), flag.clone());
            let t = std::thread::spawn(move || {
                let w = a2.take();
                f2.store(true, SeqCst);
                if let Some(w) = w {
                    w.wake();
                }
            });
            a.register(&w);
            let seen = flag.load(SeqCst);
            t.join().unwrap();
            assert!(seen || n.0.load(SeqCst) == 1, "waiter lost");
        }
    }
}
