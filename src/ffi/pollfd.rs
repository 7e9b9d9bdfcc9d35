//! The readiness file descriptor behind `fastrpc_completion_queue_fd` and
//! `fastrpc_server_queue_fd`: an eventfd (EFD_NONBLOCK | EFD_CLOEXEC) that is readable
//! exactly while its queue holds items or is shut down (level-triggered).
//!
//! It lives inside the queue's mutex and is told of every transition: `set` when the queue
//! goes from empty to non-empty (or is shut down), `clear` when a poll empties it. Between
//! those the eventfd is left alone, so a busy queue costs no syscall per item.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Default)]
pub(crate) struct ReadyFd {
    fd: Option<OwnedFd>,
    /// The eventfd's counter is non-zero (it is readable).
    signalled: bool,
}

impl ReadyFd {
    /// The descriptor, created on first use and made readable at once when `ready` (the
    /// queue holds items or is shut down).
    pub(crate) fn get(&mut self, ready: bool) -> std::io::Result<RawFd> {
        if self.fd.is_none() {
            let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if raw < 0 {
                return Err(std::io::Error::last_os_error());
            }
            self.fd = Some(unsafe { OwnedFd::from_raw_fd(raw) });
            self.signalled = false;
        }
        if ready {
            self.set();
        }
        Ok(self.fd.as_ref().map(|f| f.as_raw_fd()).expect("created"))
    }

    /// The queue became non-empty or was shut down: make the descriptor readable.
    pub(crate) fn set(&mut self) {
        if self.signalled {
            return;
        }
        if let Some(fd) = &self.fd {
            let one: u64 = 1;
            // Cannot fail for an eventfd whose counter is 0 (it is, when not signalled).
            unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            self.signalled = true;
        }
    }

    /// Whether the descriptor was made readable (and not drained since).
    #[cfg(test)]
    pub(crate) fn is_signalled(&self) -> bool {
        self.signalled
    }

    /// The queue is empty and not shut down: drain the descriptor.
    pub(crate) fn clear(&mut self) {
        if !self.signalled {
            return;
        }
        if let Some(fd) = &self.fd {
            let mut v: u64 = 0;
            // Reads the counter and resets it to 0 (non-blocking; it is non-zero here).
            unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        }
        self.signalled = false;
    }
}
