//! The library's own tokio runtime, created lazily on first use, for callers that are not
//! inside a runtime (the blocking facades, the C ABI). Its size can be set before first use.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use once_cell::sync::OnceCell;
use tokio::runtime::{Handle, Runtime};

static WORKERS: AtomicUsize = AtomicUsize::new(0);
static RUNTIME: OnceCell<Runtime> = OnceCell::new();
/// Set in a child process created by `fork` after the library's runtime had started: the
/// child has none of the runtime's threads, so nothing that needs them can work there.
static FORKED: AtomicBool = AtomicBool::new(false);

extern "C" fn forked_child() {
    FORKED.store(true, Ordering::SeqCst);
}

/// True in a child process forked after the library's runtime started (its threads did not
/// survive the fork).
pub(crate) fn forked() -> bool {
    FORKED.load(Ordering::Relaxed)
}

/// Sets the number of worker threads of the library's runtime. Returns false when the
/// runtime already runs (the call then changes nothing). 0 means the default: the number of
/// CPUs, at most 4.
pub fn set_worker_threads(n: usize) -> bool {
    if RUNTIME.get().is_some() {
        return false;
    }
    WORKERS.store(n, Ordering::SeqCst);
    true
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4)
}

/// The library's runtime, started on first use.
pub fn global() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        let n = match WORKERS.load(Ordering::SeqCst) {
            0 => default_workers(),
            n => n,
        };
        // SAFETY: registers a handler that only stores to an atomic (async-signal-safe).
        unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .thread_name("fastrpc-worker")
            .enable_all()
            .build()
            .expect("cannot start the fastrpc runtime")
    })
}

/// The runtime of the caller when there is one, else the library's.
pub fn handle() -> Handle {
    Handle::try_current().unwrap_or_else(|_| global().handle().clone())
}

/// Runs `fut` on `rt` and waits for it from a plain thread. Refuses on a runtime thread,
/// where waiting could stall the runtime.
pub(crate) fn run_blocking<F>(rt: &Runtime, fut: F) -> Result<F::Output, crate::Error>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    if Handle::try_current().is_ok() {
        return Err(crate::Error::new(
            crate::ErrorKind::InvalidArgument,
            "a blocking call was made from a thread of a tokio runtime (or from inside a \
             library callback); use the async API there",
        ));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| crate::Error::new(crate::ErrorKind::Io, "the runtime dropped the task"))
}
