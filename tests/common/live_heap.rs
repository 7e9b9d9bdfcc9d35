//! A global allocator that counts the heap bytes live in the test process. A test binary
//! installs it with `#[global_allocator] static GLOBAL: LiveHeap = LiveHeap;` and reads
//! [`live_bytes`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

/// The counting allocator (the system allocator underneath).
pub struct LiveHeap;

static LIVE: AtomicI64 = AtomicI64::new(0);

/// Heap bytes allocated and not yet freed in this process.
pub fn live_bytes() -> i64 {
    LIVE.load(Relaxed)
}

unsafe impl GlobalAlloc for LiveHeap {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Relaxed);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as i64 - l.size() as i64, Relaxed);
        System.realloc(p, l, new)
    }
}
