//! Panic containment for the library's own tasks (client connection manager, reader,
//! timekeeper, a lone call's write; server accept loop, connection, writer, a lone reply's
//! write): [`guarded`] runs a task's future and
//! turns a panic while polling it into an error that names the task ("internal error (panic)
//! in the client reader: ..."), logged through the log hook at `Error`. The call sites then
//! treat it as any other failure of that connection: the calls on it fail with that error, the
//! client reconnects, the server closes that one connection and serves on.
//!
//! Whatever bytes a peer sends must never panic (rustls and our parsers return errors); this is
//! the net under that promise, so that a bug ends one connection, not a client object.
//!
//! Tests inject a panic into a named task with [`inject_panic`] (hidden; one atomic load per
//! poll when nothing is injected).

use std::any::Any;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;

use crate::error::{Error, ErrorKind};
use crate::log::{self, Level};

/// The library's tasks, as named in panic errors.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Task {
    /// Connects, handshakes (TLS included), writes batches, reconnects.
    ClientManager = 1,
    /// Reads responses and completes calls.
    ClientReader = 2,
    /// Fails calls whose deadline passed.
    ClientTimekeeper = 4,
    /// Accepts connections.
    ServerAccept = 8,
    /// One connection: handshake (TLS included), then reading requests.
    ServerConnection = 16,
    /// One connection's writer.
    ServerWriter = 32,
    /// A lone call writing its own request on the caller's thread (client `write.rs`).
    ClientLoneWrite = 64,
    /// A lone reply written on the replying thread (server `write.rs`).
    ServerLoneWrite = 128,
    /// A caller's read pass on its own thread (client `read.rs`).
    ClientReadNow = 256,
    /// The client reader while it holds its state's lock (an injection point for tests: a
    /// panic there marks the lock poisoned).
    ClientReaderLocked = 512,
}

impl Task {
    /// The task's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Task::ClientManager => "the client connection manager",
            Task::ClientReader => "the client reader",
            Task::ClientTimekeeper => "the client timekeeper",
            Task::ServerAccept => "the server accept loop",
            Task::ServerConnection => "a server connection",
            Task::ServerWriter => "a server connection's writer",
            Task::ClientLoneWrite => "a lone call's write",
            Task::ServerLoneWrite => "a lone reply's write",
            Task::ClientReadNow => "a caller's read pass",
            Task::ClientReaderLocked => "the client reader",
        }
    }
}

/// Tasks that panic at their next poll (bits of [`Task`]), for tests.
static INJECTED: AtomicU32 = AtomicU32::new(0);

/// For tests only: the next poll of `task` (in any client or server of the process) panics,
/// once.
#[doc(hidden)]
pub fn inject_panic(task: Task) {
    INJECTED.fetch_or(task as u32, Ordering::SeqCst);
}

/// For tests only: forgets the injected panics that have not happened yet.
#[doc(hidden)]
pub fn clear_injected() {
    INJECTED.store(0, Ordering::SeqCst);
}

/// Whether an injected panic of `task` is still waiting to happen, for tests.
#[doc(hidden)]
pub fn panic_pending(task: Task) -> bool {
    INJECTED.load(Ordering::SeqCst) & task as u32 != 0
}

/// For tests: panics here if a panic of `task` was injected (one atomic load otherwise).
#[inline]
pub(crate) fn panic_point(task: Task) {
    if take_injected(task) {
        panic!("injected by a test");
    }
}

fn take_injected(task: Task) -> bool {
    INJECTED.load(Ordering::Relaxed) & task as u32 != 0
        && INJECTED.fetch_and(!(task as u32), Ordering::SeqCst) & task as u32 != 0
}

/// Runs `fut`; a panic while polling it ends it (the future is dropped) and comes back as an
/// [`ErrorKind::Connection`] error naming `task`, logged at `Error`.
pub(crate) async fn guarded<F: Future>(task: Task, fut: F) -> Result<F::Output, Error> {
    let mut fut = pin!(fut);
    let r = poll_fn(|cx| {
        match catch_unwind(AssertUnwindSafe(|| {
            if take_injected(task) {
                panic!("injected by a test");
            }
            fut.as_mut().poll(cx)
        })) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    })
    .await;
    r.map_err(|payload| panic_error(task, &*payload))
}

/// Like [`guarded`] for work done synchronously on a caller's thread: a panic in `f` comes
/// back as the same error (and is logged), instead of unwinding into the caller.
pub(crate) fn guarded_sync<T>(task: Task, f: impl FnOnce() -> T) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(|| {
        if take_injected(task) {
            panic!("injected by a test");
        }
        f()
    }))
    .map_err(|payload| panic_error(task, &*payload))
}

fn panic_error(task: Task, payload: &(dyn Any + Send)) -> Error {
    let e = Error::new(
        ErrorKind::Connection,
        format!(
            "internal error (panic) in {}: {}",
            task.name(),
            panic_message(payload)
        ),
    );
    log::emit(Level::Error, &format!("fastrpc: {}", e.message()));
    e
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// Aborts a spawned task when dropped (also when the task that owns it is dropped after a
/// panic), so no task outlives its connection.
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
