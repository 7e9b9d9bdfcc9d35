//! Library-wide C functions: the version, the size of the library's runtime, and the log
//! hook that replaces writing to stderr.

use std::ffi::{c_char, c_void};

use super::{fastrpc_status, ffi_boundary};
use crate::log::{self, Level};

/// The library version, `MAJOR.MINOR.PATCH`, a static NUL-terminated string (never free it).
/// Compare with the header's `FASTRPC_VERSION` to detect a header/library mismatch.
#[no_mangle]
pub extern "C" fn fastrpc_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The library version as one integer, `MAJOR * 10000 + MINOR * 100 + PATCH` (0.2.0 is 200),
/// the same form as the header's `FASTRPC_VERSION_NUMBER`. A program checks at run time that
/// the library it loaded is the one its header describes:
/// `fastrpc_version_number() / 100 == FASTRPC_VERSION_NUMBER / 100` (same major and minor;
/// before 1.0 every minor version may change the ABI). Any thread, never fails.
#[no_mangle]
pub extern "C" fn fastrpc_version_number() -> u32 {
    const fn num(s: &str) -> u32 {
        let b = s.as_bytes();
        let mut i = 0;
        let mut n = 0;
        while i < b.len() {
            n = n * 10 + (b[i] - b'0') as u32;
            i += 1;
        }
        n
    }
    const V: u32 = num(env!("CARGO_PKG_VERSION_MAJOR")) * 10000
        + num(env!("CARGO_PKG_VERSION_MINOR")) * 100
        + num(env!("CARGO_PKG_VERSION_PATCH"));
    V
}

/// Sets the number of threads of the library's runtime (the threads that run connections,
/// handlers and callbacks). Call it before creating any client or server; 0 restores the
/// default (the number of CPUs, at most 4). Returns OK, or INVALID_ARGUMENT when the runtime
/// already runs (nothing changes).
#[no_mangle]
pub extern "C" fn fastrpc_set_worker_threads(n: usize) -> fastrpc_status {
    ffi_boundary!({
        if crate::runtime::set_worker_threads(n) {
            fastrpc_status::FASTRPC_STATUS_OK
        } else {
            super::invalid("the library's runtime already runs; set its size before first use")
        }
    })
}

/// How much a log message matters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum fastrpc_log_level {
    /// Something failed and was handled.
    FASTRPC_LOG_ERROR = 1,
    /// Something unusual.
    FASTRPC_LOG_WARN = 2,
    /// Connection events (for example a write to a peer that failed).
    FASTRPC_LOG_INFO = 3,
    /// Details.
    FASTRPC_LOG_DEBUG = 4,
}

/// Receives a log message: `message` is `len` bytes of UTF-8 (not NUL-terminated), valid
/// during the call. It may run on any library thread, concurrently; keep it short, do not
/// call back into fastrpc from it, do not throw.
pub type fastrpc_log_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        level: fastrpc_log_level,
        message: *const c_char,
        len: usize,
    ),
>;

/// Sends the library's log messages up to `max_level` (a `fastrpc_log_level`: 1 error ...
/// 4 debug) to `callback(userdata, ...)`; a NULL callback stops logging. Without a callback
/// the library prints nothing. Any thread. Returns OK or INVALID_ARGUMENT (unknown level).
#[no_mangle]
pub extern "C" fn fastrpc_set_log_callback(
    callback: fastrpc_log_callback,
    userdata: *mut c_void,
    max_level: super::client_config::fastrpc_log_level_arg,
) -> fastrpc_status {
    ffi_boundary!({
        let max = match max_level {
            1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            _ => return super::invalid("unknown log level (1 error, 2 warn, 3 info, 4 debug)"),
        };
        let Some(f) = callback else {
            log::set_hook(max, None);
            return fastrpc_status::FASTRPC_STATUS_OK;
        };
        let ud = userdata as usize;
        log::set_hook(
            max,
            Some(Box::new(move |level, msg| {
                let l = match level {
                    Level::Error => fastrpc_log_level::FASTRPC_LOG_ERROR,
                    Level::Warn => fastrpc_log_level::FASTRPC_LOG_WARN,
                    Level::Info => fastrpc_log_level::FASTRPC_LOG_INFO,
                    Level::Debug => fastrpc_log_level::FASTRPC_LOG_DEBUG,
                };
                // SAFETY: the host promised a valid callback for `ud`.
                unsafe { f(ud as *mut c_void, l, msg.as_ptr().cast(), msg.len()) }
            })),
        );
        fastrpc_status::FASTRPC_STATUS_OK
    })
}

/// Clients (plain and balanced) and servers created through the C ABI and not yet freed,
/// counting those being created: `fastrpc_shutdown` refuses while any is open.
pub(crate) static OPEN_OBJECTS: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// One object being created: counted in [`OPEN_OBJECTS`] *before* it touches the runtime
/// (a `fastrpc_shutdown` on another thread then either sees it and refuses, or took the
/// runtime first, and the object starts a new one). Dropped uncounted unless kept.
pub(crate) struct Opening(());

impl Opening {
    pub(crate) fn new() -> Opening {
        OPEN_OBJECTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Opening(())
    }

    /// The object was made: it stays counted until its `_free` calls [`closed`].
    pub(crate) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        closed();
    }
}

/// An object counted in [`OPEN_OBJECTS`] was freed.
pub(crate) fn closed() {
    OPEN_OBJECTS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
}

/// Stops the library's threads (its runtime), for `dlclose` and for leak checkers; the next
/// fastrpc call that needs them starts them again. Safe to call at any time from your own
/// thread, also when the library never started (then it does nothing) and twice.
///
/// While a client (plain or balanced) or server is still open (created and not yet freed,
/// or being created on another thread) it stops nothing and returns INVALID_ARGUMENT, saying
/// how many are open: free them first (freeing waits for
/// their callbacks). Queues, responses, requests and builders need no threads and may stay.
/// It waits up to 5 s for the library's threads to finish what they run, then returns.
///
/// Returns OK, or INVALID_ARGUMENT (clients or servers still open; called from a library
/// thread, inside a callback or handler; another thread inside a blocking call; or in a
/// child process after fork, where the threads do not exist).
#[no_mangle]
pub extern "C" fn fastrpc_shutdown() -> fastrpc_status {
    ffi_boundary!({
        super::not_forked!();
        // Checked with the runtime's lock held: an object being created is counted before
        // it takes the runtime.
        let busy = || {
            let open = OPEN_OBJECTS.load(std::sync::atomic::Ordering::SeqCst);
            (open > 0).then(|| {
                crate::Error::new(
                    crate::ErrorKind::InvalidArgument,
                    format!(
                        "{open} client(s) or server(s) are still open: free them before \
                         fastrpc_shutdown; nothing was stopped"
                    ),
                )
            })
        };
        match crate::runtime::shutdown_unless(std::time::Duration::from_secs(5), busy) {
            Ok(()) => fastrpc_status::FASTRPC_STATUS_OK,
            Err(e) => super::fail(&e),
        }
    })
}
