//! The C ABI: shared plumbing for every exported function. One module per C object lives
//! beside this one (`client.rs`, `server.rs`, `response.rs`, ...).
//!
//! Every exported function runs its body inside [`ffi_boundary!`], which catches panics and
//! turns them into `FASTRPC_STATUS_PANIC`; pointer arguments are checked by [`arg_ref!`] and
//! friends, which return `FASTRPC_STATUS_INVALID_ARGUMENT` naming the argument. Each opaque C
//! type is tied to its Rust type by [`Castable`], so a wrong cast or a wrong free does not
//! compile.

#![allow(non_camel_case_types)]
// The exported functions take raw pointers from C by design; each is checked (NULL) before
// use and the header states what every pointer must be.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod balanced_client;
mod blocking_poll;
pub mod client;
pub mod client_config;
pub mod completion_queue;
pub mod global;
mod pollfd;
mod pool;
pub mod request;
pub mod response;
pub mod server;
pub mod server_config;
pub mod server_queue;
pub mod status;

use std::cell::RefCell;
use std::ffi::{c_char, CStr};

use crate::error::Error;
pub use status::fastrpc_status;

/// Ties an opaque C type to the Rust type behind it, always owned through a `Box`.
pub(crate) trait Castable {
    type Rust;
}

/// Moves `v` to the heap and hands the pointer to C.
pub(crate) fn into_raw<C: Castable>(v: C::Rust) -> *mut C {
    Box::into_raw(Box::new(v)).cast()
}

/// Moves a boxed `v` to C.
pub(crate) fn box_into_raw<C: Castable>(v: Box<C::Rust>) -> *mut C {
    Box::into_raw(v).cast()
}

/// Borrows the object behind a non-NULL pointer handed out by [`into_raw`].
///
/// # Safety
/// `p` must come from [`into_raw`] for the same `C` and not have been freed.
pub(crate) unsafe fn as_ref<'a, C: Castable>(p: *const C) -> Option<&'a C::Rust> {
    (p as *const C::Rust).as_ref()
}

/// Mutably borrows the object behind a non-NULL pointer.
///
/// # Safety
/// As [`as_ref`], and no other reference to it may be live.
pub(crate) unsafe fn as_mut<'a, C: Castable>(p: *mut C) -> Option<&'a mut C::Rust> {
    (p as *mut C::Rust).as_mut()
}

/// Takes back ownership of an object handed out by [`into_raw`]; NULL gives None.
///
/// # Safety
/// `p` must come from [`into_raw`] for the same `C` and not have been freed.
pub(crate) unsafe fn from_raw<C: Castable>(p: *mut C) -> Option<Box<C::Rust>> {
    if p.is_null() {
        None
    } else {
        Some(Box::from_raw(p.cast()))
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
    static LAST_TLS_DETAIL: std::cell::Cell<crate::error::TlsDetail> =
        const { std::cell::Cell::new(crate::error::TlsDetail::None) };
}

/// Records the details of the failure this thread just returned, for
/// `fastrpc_last_error_message`.
pub(crate) fn set_last_error(msg: &str) {
    LAST_TLS_DETAIL.with(|d| d.set(crate::error::TlsDetail::None));
    LAST_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.push_str(msg);
    });
}

pub(crate) fn with_last_error<R>(f: impl FnOnce(&str) -> R) -> R {
    LAST_ERROR.with(|e| f(&e.borrow()))
}

/// Records `e` as this thread's last error and returns its status.
pub(crate) fn fail(e: &Error) -> fastrpc_status {
    set_last_error(&e.to_string());
    LAST_TLS_DETAIL.with(|d| d.set(e.tls_detail()));
    fastrpc_status::from_kind(e.kind())
}

/// The TLS detail of this thread's last failure.
pub(crate) fn last_tls_detail() -> crate::error::TlsDetail {
    LAST_TLS_DETAIL.with(|d| d.get())
}

/// Largest `read_spin` the builders take, in microseconds (the engine's bound: 10 ms).
const MAX_READ_SPIN_US: u32 = 10_000;

/// Records an invalid-argument failure.
pub(crate) fn invalid(msg: &str) -> fastrpc_status {
    set_last_error(&format!("fastrpc invalid argument: {msg}"));
    fastrpc_status::FASTRPC_STATUS_INVALID_ARGUMENT
}

/// A `(pointer, length)` byte buffer from C; `(NULL, 0)` is empty.
///
/// # Safety
/// When `p` is not NULL it must point to `len` readable bytes for the returned lifetime.
pub(crate) unsafe fn bytes<'a>(
    p: *const u8,
    len: usize,
    what: &str,
) -> Result<&'a [u8], fastrpc_status> {
    if p.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(invalid(&format!("`{what}` is NULL with length {len}")));
    }
    Ok(std::slice::from_raw_parts(p, len))
}

/// A NUL-terminated UTF-8 string from C.
///
/// # Safety
/// When `p` is not NULL it must point to a NUL-terminated string.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, fastrpc_status> {
    if p.is_null() {
        return Err(invalid(&format!("`{what}` is NULL")));
    }
    CStr::from_ptr(p)
        .to_str()
        .map_err(|_| invalid(&format!("`{what}` is not valid UTF-8")))
}

/// Writes `text` NUL-terminated into `(buf, len)`. `*out_len` (when not NULL) receives the
/// text's full length without the NUL, also when it did not fit: then the text is cut, still
/// NUL-terminated, and `FASTRPC_STATUS_BUFFER_TOO_SMALL` is returned. `(NULL, 0)` measures:
/// OK with the length in `*out_len`.
///
/// # Safety
/// `buf` must point to `len` writable bytes when not NULL; `out_len` must be NULL or valid.
pub(crate) unsafe fn write_text(
    text: &str,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> fastrpc_status {
    if !out_len.is_null() {
        *out_len = text.len();
    }
    if buf.is_null() || len == 0 {
        return if buf.is_null() && len == 0 {
            fastrpc_status::FASTRPC_STATUS_OK
        } else if buf.is_null() {
            invalid("`buf` is NULL with a non-zero length")
        } else {
            fastrpc_status::FASTRPC_STATUS_BUFFER_TOO_SMALL
        };
    }
    let n = text.len().min(len - 1);
    std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
    *buf.add(n) = 0;
    if n < text.len() {
        fastrpc_status::FASTRPC_STATUS_BUFFER_TOO_SMALL
    } else {
        fastrpc_status::FASTRPC_STATUS_OK
    }
}

/// A stats struct whose first field is `struct_size` (see [`write_sized`]).
///
/// # Safety
/// Implementors are `#[repr(C)]` and start with a `size_t struct_size` field.
pub(crate) unsafe trait Sized_ {
    fn set_size(&mut self, n: usize);
}

/// Writes `value` into the caller's `*out` the way every sized struct is filled: the caller
/// set `out->struct_size` to `sizeof *out` (its header's size); the first
/// `min(struct_size, size_of::<T>())` bytes are written, so a program built against an older
/// (smaller) or newer (larger) header gets exactly the fields both know, and `struct_size`
/// then holds the number of bytes written. A `struct_size` that does not even cover
/// `struct_size` itself (0: not set) is INVALID_ARGUMENT.
///
/// # Safety
/// `out` must be non-NULL and point to at least `(*out).struct_size` writable bytes.
pub(crate) unsafe fn write_sized<T: Sized_>(
    out: *mut T,
    mut value: T,
    what: &str,
) -> fastrpc_status {
    let want = std::ptr::read_unaligned(out.cast::<usize>());
    if want < std::mem::size_of::<usize>() {
        return invalid(&format!(
            "`out->struct_size` is {want}: set it to sizeof({what}) before the call"
        ));
    }
    let n = want.min(std::mem::size_of::<T>());
    value.set_size(n);
    std::ptr::copy_nonoverlapping((&value as *const T).cast::<u8>(), out.cast::<u8>(), n);
    fastrpc_status::FASTRPC_STATUS_OK
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs `f` and turns a panic into `FASTRPC_STATUS_PANIC` (with the panic's message as the
/// thread's last error).
pub(crate) fn boundary(f: impl FnOnce() -> fastrpc_status) -> fastrpc_status {
    quiet_panics();
    let _inside = InBoundary::enter();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(s) => s,
        Err(p) => {
            set_last_error(&format!(
                "fastrpc panic: internal error (please report): {}",
                panic_message(&*p)
            ));
            fastrpc_status::FASTRPC_STATUS_PANIC
        }
    }
}

/// Like [`boundary`] for functions that return a value: `default` on panic.
pub(crate) fn boundary_or<T>(default: T, f: impl FnOnce() -> T) -> T {
    quiet_panics();
    let _inside = InBoundary::enter();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(default)
}

/// A C host gets no Rust panic text on stderr: panics inside the library (in a C ABI call or
/// on the library's own `fastrpc-worker` threads) go to the log hook (level error) instead,
/// and are still caught and reported as `FASTRPC_STATUS_PANIC` (or, inside a handler, as the
/// error reply). Every other panic of the process goes to the hook that was installed before,
/// so a Rust program that also uses the C ABI keeps its own panic messages.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = IN_BOUNDARY.with(|d| d.get() > 0)
                || std::thread::current().name() == Some("fastrpc-worker");
            if ours {
                crate::log::emit(crate::log::Level::Error, &format!("fastrpc panic: {info}"));
            } else {
                previous(info);
            }
        }));
    });
}

thread_local! {
    /// How many C ABI calls this thread is inside (a callback may call back in).
    static IN_BOUNDARY: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as inside a C ABI call while alive.
struct InBoundary;

impl InBoundary {
    fn enter() -> InBoundary {
        IN_BOUNDARY.with(|d| d.set(d.get() + 1));
        InBoundary
    }
}

impl Drop for InBoundary {
    fn drop(&mut self) {
        IN_BOUNDARY.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// The body of an exported function returning `fastrpc_status`: panics are caught.
macro_rules! ffi_boundary {
    ($body:block) => {
        $crate::ffi::boundary(|| $body)
    };
}

/// Returns INVALID_ARGUMENT at once in a child process forked after the library's threads
/// started: they did not survive the fork, and a call would wait for them forever.
macro_rules! not_forked {
    () => {
        if $crate::runtime::forked() {
            return $crate::ffi::invalid(
                "fastrpc cannot be used in a child process after fork(): the library's \
                 threads did not survive it (create fastrpc objects after fork, or exec)",
            );
        }
    };
}

/// Borrows the object behind a pointer argument, or returns INVALID_ARGUMENT naming it.
macro_rules! arg_ref {
    ($p:ident) => {
        match unsafe { $crate::ffi::as_ref($p) } {
            Some(r) => r,
            None => return $crate::ffi::invalid(concat!("`", stringify!($p), "` is NULL")),
        }
    };
}

/// Mutably borrows the object behind a pointer argument, or returns INVALID_ARGUMENT.
macro_rules! arg_mut {
    ($p:ident) => {
        match unsafe { $crate::ffi::as_mut($p) } {
            Some(r) => r,
            None => return $crate::ffi::invalid(concat!("`", stringify!($p), "` is NULL")),
        }
    };
}

/// Checks that an out-parameter is not NULL.
macro_rules! arg_out {
    ($p:ident) => {
        if $p.is_null() {
            return $crate::ffi::invalid(concat!("`", stringify!($p), "` is NULL"));
        }
    };
}

/// Unwraps a `Result<_, fastrpc_status>` from an argument helper.
macro_rules! arg_try {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(s) => return s,
        }
    };
}

pub(crate) use {arg_mut, arg_out, arg_ref, arg_try, ffi_boundary, not_forked};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_the_boundary_becomes_the_panic_status_with_its_message() {
        let s = boundary(|| panic!("boom in a test"));
        assert_eq!(s, fastrpc_status::FASTRPC_STATUS_PANIC);
        with_last_error(|m| {
            assert_eq!(
                m,
                "fastrpc panic: internal error (please report): boom in a test"
            )
        });
        assert_eq!(boundary_or(7u32, || panic!("again")), 7);
        // The process (and this thread) goes on: the next call works.
        assert_eq!(
            boundary(|| fastrpc_status::FASTRPC_STATUS_OK),
            fastrpc_status::FASTRPC_STATUS_OK
        );
    }

    #[test]
    fn text_is_cut_to_fit_and_nul_terminated() {
        let mut buf = [0x55 as c_char; 4];
        let mut n = 0usize;
        let s = unsafe { write_text("hello", buf.as_mut_ptr(), buf.len(), &mut n) };
        assert_eq!(s, fastrpc_status::FASTRPC_STATUS_BUFFER_TOO_SMALL);
        assert_eq!(n, 5);
        assert_eq!(buf.map(|c| c as u8), [b'h', b'e', b'l', 0]);
    }
}
