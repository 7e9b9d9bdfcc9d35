//! Object pools for the handles the C ABI hands out by pointer (responses, requests): boxed,
//! so that an object never moves while C holds it. Each thread keeps a few objects of its
//! own in front of a shared pool, so that the common cycle (a library thread hands out an
//! object, the callback running on it gives it back, the next one takes it again) takes no
//! lock that other threads take. Bounds: `local_max` objects per thread, `shared_max` in the
//! shared pool; the caller decides which objects are small enough to keep.

use std::cell::RefCell;
use std::sync::Mutex;
use std::thread::LocalKey;

/// A thread's own objects.
pub(crate) type Local<T> = RefCell<Vec<Box<T>>>;

pub(crate) struct Pool<T: 'static> {
    shared: Mutex<Vec<Box<T>>>,
    local: &'static LocalKey<Local<T>>,
    shared_max: usize,
    local_max: usize,
}

impl<T: 'static> Pool<T> {
    pub(crate) const fn new(
        local: &'static LocalKey<Local<T>>,
        shared_max: usize,
        local_max: usize,
    ) -> Pool<T> {
        Pool {
            shared: Mutex::new(Vec::new()),
            local,
            shared_max,
            local_max,
        }
    }

    /// An object from this thread's own, else from the shared pool.
    pub(crate) fn take(&self) -> Option<Box<T>> {
        let local = self
            .local
            .try_with(|l| l.try_borrow_mut().ok().and_then(|mut l| l.pop()))
            .ok()
            .flatten();
        local.or_else(|| self.shared.lock().unwrap_or_else(|e| e.into_inner()).pop())
    }

    /// Keeps `obj` for reuse: with this thread's own when `small` and there is room (not
    /// while the thread exits), else in the shared pool, else drops it.
    pub(crate) fn put(&self, obj: Box<T>, small: bool) {
        let mut slot = Some(obj);
        if small {
            let _ = self.local.try_with(|l| {
                if let Ok(mut l) = l.try_borrow_mut() {
                    if l.len() < self.local_max {
                        l.extend(slot.take());
                    }
                }
            });
        }
        if let Some(obj) = slot {
            let mut p = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            if p.len() < self.shared_max {
                p.push(obj);
            }
        }
    }

    /// Objects this thread keeps (tests).
    #[cfg(test)]
    pub(crate) fn local_len(&self) -> usize {
        self.local.with(|l| l.borrow().len())
    }
}
