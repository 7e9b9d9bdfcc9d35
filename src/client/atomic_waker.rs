//! A waker slot that one waiter registers into and one completer takes from, concurrently,
//! without a lock: the classic three-state protocol (as `futures::task::AtomicWaker`). The
//! waiter registers, then re-checks its condition; the completer publishes the outcome first,
//! then takes the waker. Whichever order they run in, the waiter is woken or sees the outcome.

use std::cell::UnsafeCell;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::task::Waker;

/// Nobody is in the slot.
const WAITING: usize = 0;
/// The waiter is writing the slot.
const REGISTERING: usize = 0b01;
/// A completer is taking the slot (or asked the registering waiter to wake itself).
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

    /// Stores `waker` to be woken by the next [`AtomicWaker::take`]. One registering thread at
    /// a time (the call's own future). If a completer runs meanwhile, `waker` is woken at once.
    pub(crate) fn register(&self, waker: &Waker) {
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
                    .is_err()
                {
                    // A completer came while we wrote (state is REGISTERING | WAKING): it
                    // left the waker to us.
                    // SAFETY: still ours until the swap below.
                    let w = unsafe { (*self.waker.get()).take() };
                    self.state.swap(WAITING, AcqRel);
                    if let Some(w) = w {
                        w.wake();
                    }
                }
            }
            WAKING => {
                // A completer is taking the old waker right now: wake this one ourselves.
                waker.wake_by_ref();
            }
            _ => {
                // REGISTERING from another registrant: cannot happen with one waiter; the
                // waiter re-checks its condition after this call anyway.
            }
        }
    }

    /// Takes the registered waker, if any (the completer, after publishing the outcome).
    pub(crate) fn take(&self) -> Option<Waker> {
        match self.state.fetch_or(WAKING, AcqRel) {
            WAITING => {
                // SAFETY: WAKING excludes the waiter's writes until we clear it.
                let w = unsafe { (*self.waker.get()).take() };
                self.state.fetch_and(!WAKING, Release);
                w
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

    /// Drops a registered waker.
    ///
    /// # Safety
    /// No register or take may run concurrently (the cell is being freed by its owner).
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
    fn take_returns_the_registered_waker_once() {
        let n = Arc::new(Count(AtomicUsize::new(0)));
        let w = Waker::from(n.clone());
        let a = AtomicWaker::new();
        assert!(a.take().is_none());
        a.register(&w);
        a.register(&w);
        a.take().unwrap().wake();
        assert!(a.take().is_none());
        assert_eq!(n.0.load(SeqCst), 1);
    }

    /// Many rounds of a waiter (register, then check the flag) racing a completer (set the
    /// flag, then take and wake): the waiter always sees the flag or gets woken.
    #[test]
    fn a_waiter_racing_a_completer_is_never_lost() {
        for _ in 0..2000 {
            let n = Arc::new(Count(AtomicUsize::new(0)));
            let w = Waker::from(n.clone());
            let a = Arc::new(AtomicWaker::new());
            let flag = Arc::new(AtomicBool::new(false));
            let (a2, f2) = (a.clone(), flag.clone());
            let t = std::thread::spawn(move || {
                f2.store(true, SeqCst);
                if let Some(w) = a2.take() {
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
