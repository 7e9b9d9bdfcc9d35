//! The library's own tokio runtime, created lazily on first use, for callers that are not
//! inside a runtime (the blocking facades, the C ABI). Its size can be set before first use;
//! [`shutdown`] stops its threads (the next use starts a new one).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

static WORKERS: AtomicUsize = AtomicUsize::new(0);
static RUNTIME: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

fn slot() -> std::sync::MutexGuard<'static, Option<Arc<Runtime>>> {
    RUNTIME.lock().unwrap_or_else(|e| e.into_inner())
}
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
    let rt = slot();
    if rt.is_some() {
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

/// The library's runtime, started on first use (and again on the first use after
/// [`shutdown`]).
pub fn global() -> Arc<Runtime> {
    let mut rt = slot();
    if let Some(r) = &*rt {
        return r.clone();
    }
    let n = match WORKERS.load(Ordering::SeqCst) {
        0 => default_workers(),
        n => n,
    };
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a handler that only stores to an atomic (async-signal-safe).
    AT_FORK.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(forked_child));
    });
    let r = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .thread_name("fastrpc-worker")
            .enable_all()
            .build()
            .expect("cannot start the fastrpc runtime"),
    );
    *rt = Some(r.clone());
    r
}

/// Whether the library's runtime runs now.
pub fn is_running() -> bool {
    slot().is_some()
}

/// Stops the library's runtime: its worker threads exit (waiting up to `timeout` for tasks
/// still running to notice) and whatever tasks remain are dropped. Nothing happens when it
/// does not run. The caller makes sure nothing still needs it: clients and servers made on
/// it stop working. Refused (InvalidArgument) from a runtime thread, where it would stop
/// the very thread that runs it, and while another thread is inside a blocking call on it.
pub fn shutdown(timeout: Duration) -> Result<(), crate::Error> {
    shutdown_unless(timeout, || None)
}

/// [`shutdown`], unless `busy` (called with the runtime's lock held: nobody can start using
/// the runtime meanwhile through [`global`]) gives a reason not to.
pub(crate) fn shutdown_unless(
    timeout: Duration,
    busy: impl FnOnce() -> Option<crate::Error>,
) -> Result<(), crate::Error> {
    if Handle::try_current().is_ok() {
        return Err(crate::Error::new(
            crate::ErrorKind::InvalidArgument,
            "the runtime cannot be shut down from one of its own threads (inside a library \
             callback or handler); call it from your own thread",
        ));
    }
    let rt = {
        let mut s = slot();
        if let Some(e) = busy() {
            return Err(e);
        }
        let Some(rt) = s.take() else {
            return Ok(());
        };
        // Under the lock: a new runtime cannot be started in between and then replaced.
        match Arc::try_unwrap(rt) {
            Ok(rt) => rt,
            Err(rt) => {
                *s = Some(rt);
                return Err(crate::Error::new(
                    crate::ErrorKind::InvalidArgument,
                    "the runtime is in use by a blocking call on another thread; nothing was \
                     stopped",
                ));
            }
        }
    };
    rt.shutdown_timeout(timeout);
    Ok(())
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
