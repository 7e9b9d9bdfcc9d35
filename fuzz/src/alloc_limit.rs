//! A global allocator that enforces the harness's bound on any single allocation.
//!
//! Every allocation (and reallocation) of the process goes through [`LimitAlloc`]. One larger
//! than the current limit is a finding: under libFuzzer the process aborts at once (libFuzzer
//! keeps the input as a crash); under `replay` the violation is recorded and the driver saves
//! the input and fails. Allocations the harness itself makes (building inputs, expected
//! outputs) run inside [`exempt`] on the harness thread and are not checked.
//!
//! Why the bounds (see docs/RELIABILITY.md): a reader needs at most one whole frame in its
//! buffer, plus one socket read or one decode step past it. With `L = max_frame_size` a request
//! frame is at most `12 + 2L` bytes (id, two lengths, a name and a value of `L` each) and a
//! response frame at most `8 + L`; a read or decode step adds at most
//! `read_buffer_size` (64 KiB). So:
//!
//! * server side: `2L + 12 + 64 KiB` (2,162,700 bytes for the default 1 MiB limit);
//! * client side: `L + 8 + 64 KiB` (1,114,120 bytes).
//!
//! Every other buffer of a connection (snappy chunk scratch: 76 KiB; zlib window and state;
//! runtime structures) is smaller than either bound. A length field over the limit must be
//! refused before anything is allocated for it, so a 4 GiB length field can never pass.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

/// The largest single allocation allowed now (bytes).
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The largest single checked allocation seen since the last [`take_max`].
static MAX_SEEN: AtomicUsize = AtomicUsize::new(0);
/// The size of the first allocation over the limit since the last [`take_violation`].
static VIOLATION: AtomicUsize = AtomicUsize::new(0);
/// Abort at once on a violation (libFuzzer mode).
static ABORT: AtomicBool = AtomicBool::new(false);
/// Print a backtrace of each violation (`FUZZ_ALLOC_BACKTRACE=1`).
static BACKTRACE: AtomicBool = AtomicBool::new(false);

thread_local! {
    static EXEMPT: Cell<u32> = const { Cell::new(0) };
}

/// The allocator; installed as `#[global_allocator]` in lib.rs.
pub struct LimitAlloc;

#[inline]
fn check(size: usize) {
    // `try_with`: during thread teardown the thread-local may be gone; count those.
    let skip = EXEMPT.try_with(|e| e.get() > 0).unwrap_or(false);
    // Reporting a panic (symbolizing a backtrace) allocates freely; the finding is the panic.
    if skip || std::thread::panicking() {
        return;
    }
    MAX_SEEN.fetch_max(size, Relaxed);
    if size > LIMIT.load(Relaxed) {
        let _ = VIOLATION.compare_exchange(0, size, Relaxed, Relaxed);
        if BACKTRACE.load(Relaxed) {
            exempt(|| {
                let bt = std::backtrace::Backtrace::force_capture();
                eprintln!("fastrpc-fuzz: allocation of {size} bytes over the bound:\n{bt}");
            });
        }
        if ABORT.load(Relaxed) {
            report_and_abort(size);
        }
    }
}

/// Writes a message without allocating, then aborts.
#[cold]
fn report_and_abort(size: usize) -> ! {
    let mut buf = [0u8; 160];
    let mut n = 0;
    let mut put = |b: &[u8]| {
        for &c in b {
            if n < buf.len() {
                buf[n] = c;
                n += 1;
            }
        }
    };
    put(b"\nfastrpc-fuzz: allocation of ");
    put(&digits(size));
    put(b" bytes exceeds the harness limit of ");
    put(&digits(LIMIT.load(Relaxed)));
    put(b" bytes\n");
    // SAFETY: writing a valid buffer to stderr.
    unsafe { libc::write(2, buf.as_ptr().cast(), n) };
    std::process::abort();
}

fn digits(mut v: usize) -> [u8; 20] {
    let mut out = [b' '; 20];
    let mut i = 20;
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    out
}

unsafe impl GlobalAlloc for LimitAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            check(new_size);
        }
        System.realloc(ptr, layout, new_size)
    }
}

/// Print a backtrace of every allocation over the bound.
pub fn backtrace_on_violation(on: bool) {
    BACKTRACE.store(on, Relaxed);
}

/// Sets the bound on a single allocation.
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Relaxed);
}

/// The current bound.
pub fn limit() -> usize {
    LIMIT.load(Relaxed)
}

/// Abort the process on the first violation (libFuzzer mode) instead of recording it.
pub fn abort_on_violation(on: bool) {
    ABORT.store(on, Relaxed);
}

/// The first allocation size over the limit since the last call, if any.
pub fn take_violation() -> Option<usize> {
    match VIOLATION.swap(0, Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// The largest checked allocation since the last call.
pub fn take_max() -> usize {
    MAX_SEEN.swap(0, Relaxed)
}

/// The largest checked allocation since the last [`take_max`], without resetting it.
pub fn max_seen() -> usize {
    MAX_SEEN.load(Relaxed)
}

/// Runs `f` with this thread's allocations unchecked (the harness's own buffers).
pub fn exempt<R>(f: impl FnOnce() -> R) -> R {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            EXEMPT.with(|e| e.set(e.get() - 1));
        }
    }
    EXEMPT.with(|e| e.set(e.get() + 1));
    let _g = Guard;
    f()
}
