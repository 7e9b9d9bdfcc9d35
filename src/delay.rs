//! The batch delay's timer: a connection writer waits up to `max_batch_delay` for more frames
//! to share a write. tokio's timer wheel has 1 ms granularity and rounds every sleep up to the
//! next tick, so a 100 µs delay took about 1.1 ms per side. On Linux this timer is a `timerfd`
//! (one per connection writer, only when a delay is configured) polled through tokio's
//! reactor: it fires within microseconds of the deadline. Elsewhere, or if the timerfd cannot
//! be made, it falls back to tokio's sleep.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A reusable one-shot timer for batch delays.
pub(crate) struct DelayTimer {
    inner: Inner,
}

enum Inner {
    #[cfg(target_os = "linux")]
    Fd(linux::TimerFd),
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

impl DelayTimer {
    /// A timer for delays; must be created inside the runtime that polls it.
    pub(crate) fn new() -> DelayTimer {
        #[cfg(target_os = "linux")]
        if let Ok(fd) = linux::TimerFd::new() {
            return DelayTimer {
                inner: Inner::Fd(fd),
            };
        }
        DelayTimer {
            inner: Inner::Tokio(Box::pin(tokio::time::sleep(Duration::ZERO))),
        }
    }

    /// Starts a delay of `d` from now, replacing any earlier one.
    pub(crate) fn start(&mut self, d: Duration) {
        match &mut self.inner {
            #[cfg(target_os = "linux")]
            Inner::Fd(fd) => fd.arm(d),
            Inner::Tokio(s) => s.as_mut().reset(tokio::time::Instant::now() + d),
        }
    }

    /// Ready once the delay started last has passed.
    pub(crate) fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.inner {
            #[cfg(target_os = "linux")]
            Inner::Fd(fd) => fd.poll_expired(cx),
            Inner::Tokio(s) => s.as_mut().poll(cx),
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::task::{ready, Context, Poll};
    use std::time::Duration;

    use tokio::io::unix::AsyncFd;

    pub(super) struct TimerFd {
        fd: AsyncFd<OwnedFd>,
        /// Armed and not yet seen to expire.
        armed: bool,
    }

    impl TimerFd {
        pub(super) fn new() -> io::Result<TimerFd> {
            // SAFETY: plain syscall; the result is checked and owned below.
            let raw = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a new descriptor nobody else owns.
            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: the OwnedFd stays open, and is the same descriptor, for the AsyncFd's
            // whole life (the AsyncFd owns it and nothing takes it out).
            let fd =
                unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)?;
            Ok(TimerFd { fd, armed: false })
        }

        /// Reads the expiration count, if any: true when the timer had expired.
        fn consume(&self) -> bool {
            let mut n = [0u8; 8];
            // SAFETY: reads at most 8 bytes into `n`.
            let r = unsafe { libc::read(self.fd.as_raw_fd(), n.as_mut_ptr().cast(), 8) };
            r == 8
        }

        pub(super) fn arm(&mut self, d: Duration) {
            // A delay that ended early (the batch filled up) may have expired since, unread:
            // timerfd_settime resets the expiration count, so it cannot end this one at once
            // (and a stale readiness is cleared when `consume` finds nothing).
            // A zero it_value would disarm: at least 1 ns.
            let d = d.max(Duration::from_nanos(1));
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: d.as_secs() as libc::time_t,
                    tv_nsec: d.subsec_nanos() as libc::c_long,
                },
            };
            // SAFETY: valid descriptor and itimerspec; the old value is not wanted.
            let r = unsafe {
                libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut())
            };
            // settime on our own valid timerfd with a valid spec does not fail; if it ever
            // did, the delay ends at once rather than never.
            self.armed = r == 0;
        }

        pub(super) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
            if !self.armed {
                return Poll::Ready(());
            }
            loop {
                let mut guard = match ready!(self.fd.poll_read_ready(cx)) {
                    Ok(g) => g,
                    Err(_) => {
                        self.armed = false;
                        return Poll::Ready(());
                    }
                };
                if self.consume() {
                    self.armed = false;
                    return Poll::Ready(());
                }
                guard.clear_ready();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Instant;

    /// On Linux the timer is a timerfd (its precision is measured in docs/BENCHMARKS.md, not
    /// here); a delay never ends before its deadline, and a delay that ended early leaves
    /// nothing behind that would cut the next one short.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delays_never_end_early() {
        let mut t = DelayTimer::new();
        #[cfg(target_os = "linux")]
        assert!(matches!(t.inner, Inner::Fd(_)));
        for us in [1, 50, 200, 1500] {
            let d = Duration::from_micros(us);
            let t0 = Instant::now();
            t.start(d);
            poll_fn(|cx| t.poll_elapsed(cx)).await;
            assert!(t0.elapsed() >= d, "{d:?} ended after {:?}", t0.elapsed());
        }
        // A short delay expires unseen (the batch filled up first); then a longer one: the
        // old expiration must not end it at once.
        t.start(Duration::from_micros(100));
        std::thread::sleep(Duration::from_millis(2));
        let t0 = Instant::now();
        t.start(Duration::from_millis(5));
        poll_fn(|cx| t.poll_elapsed(cx)).await;
        assert!(
            t0.elapsed() >= Duration::from_millis(5),
            "{:?}",
            t0.elapsed()
        );
    }
}
