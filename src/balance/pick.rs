//! Choosing a connection: power of two choices on the balancer's own in-flight counts, with
//! a per-thread xorshift generator (no lock, no allocation), skipping connections marked down.
//!
//! What is not here: the server list and its refresh (`mod.rs`), name resolution
//! (`resolver.rs`).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use crate::client::Client;
use crate::error::Error;

/// One connection of a server as the balancer sees it.
pub(crate) struct Conn {
    pub client: Client,
    /// Calls made through the balancer and not finished: the load the choice compares.
    /// Kept here (one atomic) rather than read from the client, which takes its lock.
    pub in_flight: AtomicUsize,
    /// Nanoseconds since the balancer's base instant until which the connection is skipped;
    /// 0 when it is up.
    pub down_until: AtomicU64,
    /// The current backoff in nanoseconds (0: not backing off): doubles per failed connect
    /// from `reconnect_backoff_min` to `reconnect_backoff_max`, like the client's own.
    pub backoff: AtomicU64,
    /// Why it went down last (only touched on failure and for error messages).
    pub last_error: Mutex<Option<Error>>,
}

impl Conn {
    pub fn new(client: Client) -> Conn {
        Conn {
            client,
            in_flight: AtomicUsize::new(0),
            down_until: AtomicU64::new(0),
            backoff: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Up (not skipped) at `now`; the clock is read only for a connection that went down.
    #[inline]
    pub fn is_up(&self, now: &Now) -> bool {
        let d = self.down_until.load(Relaxed);
        d == 0 || d <= now.get()
    }

    /// After a connect failure: skip this connection for its next backoff.
    pub fn mark_down(&self, now: u64, err: &Error) {
        let cfg = self.client.config();
        let min = cfg.reconnect_backoff_min.as_nanos() as u64;
        let max = cfg.reconnect_backoff_max.as_nanos() as u64;
        let prev = self.backoff.load(Relaxed);
        let next = if prev == 0 {
            min.max(1)
        } else {
            prev.saturating_mul(2).min(max.max(1))
        };
        self.backoff.store(next, Relaxed);
        self.down_until
            .store(now.saturating_add(next).max(1), Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(err.clone());
    }

    /// After a call that reached the server: the connection is up again.
    #[inline]
    pub fn mark_up(&self) {
        // Read first so that the common case (already up) writes nothing shared.
        if self.backoff.load(Relaxed) != 0 {
            self.backoff.store(0, Relaxed);
            self.down_until.store(0, Relaxed);
        }
    }
}

/// Nanoseconds since `base`.
#[inline]
pub(crate) fn now_ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// The time of one choice, read from the clock at most once and only when needed.
pub(crate) struct Now {
    base: Instant,
    ns: Cell<u64>,
}

impl Now {
    #[inline]
    pub fn new(base: Instant) -> Now {
        Now {
            base,
            ns: Cell::new(0),
        }
    }

    #[inline]
    fn get(&self) -> u64 {
        if self.ns.get() == 0 {
            self.ns.set(now_ns(self.base).max(1));
        }
        self.ns.get()
    }
}

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// A cheap per-thread pseudo-random number (xorshift64*), seeded from the thread's stack
/// address and the clock on first use. Good enough to break ties; not for anything else.
#[inline]
pub(crate) fn rand() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        if x == 0 {
            let local = 0u8;
            x = (&local as *const u8 as u64)
                ^ (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x9E37_79B9_7F4A_7C15))
                | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

thread_local! {
    /// The connection whose response this thread collected last (its address and index in
    /// the set), the first of the two choices of the next call made on this thread.
    static LAST: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Remembers that the task running on this thread just got a response from `conns[idx]`.
#[inline]
pub(crate) fn note_done(conns: &Conn, idx: usize) {
    LAST.with(|l| l.set((conns as *const Conn as usize, idx)));
}

/// Picks a connection among `conns` that is up at `now`: two choices, the one with fewer
/// calls in flight; if only one of the two is up, that one; if neither, the least loaded of
/// the others that are up. `None` when none is up.
///
/// The first choice is the connection whose response this thread collected last, if it is in
/// the set and has other calls in flight (else a random one), and it is kept unless the
/// random second has an eighth fewer calls in flight. Why: a client's reader wakes all the callers of one read at once and holds
/// its writer until they have queued their next requests, so that these share one write; a
/// caller that sends its next request to another connection wakes that writer for a write of
/// its own. With a purely random pair, 4 connections under 1024 callers carried about 8
/// frames per write instead of about 250, and made half the calls per second.
pub(crate) fn pick(conns: &[std::sync::Arc<Conn>], now: &Now) -> Option<usize> {
    let n = conns.len();
    match n {
        0 => return None,
        1 => return conns[0].is_up(now).then_some(0),
        _ => {}
    }
    let r = rand();
    let (last, li) = LAST.with(|l| l.get());
    // Only a busy connection is kept: an idle one has no burst to join, and keeping it would
    // leave a lone sequential caller on one server for ever.
    let sticky = li < n
        && std::sync::Arc::as_ptr(&conns[li]) as usize == last
        && conns[li].in_flight.load(Relaxed) > 0;
    let i = if sticky { li } else { (r % n as u64) as usize };
    let mut j = ((r >> 32) % (n as u64 - 1)) as usize;
    if j >= i {
        j += 1;
    }
    let (a, b) = (&conns[i], &conns[j]);
    match (a.is_up(now), b.is_up(now)) {
        (true, true) => {
            let (la, lb) = (a.in_flight.load(Relaxed), b.in_flight.load(Relaxed));
            let slack = if sticky { la / 8 } else { 0 };
            if lb + slack < la {
                Some(j)
            } else {
                Some(i)
            }
        }
        (true, false) => Some(i),
        (false, true) => Some(j),
        (false, false) => {
            let mut best: Option<(usize, usize)> = None;
            for k in 0..n {
                let idx = (i + k) % n;
                let c = &conns[idx];
                if c.is_up(now) {
                    let load = c.in_flight.load(Relaxed);
                    if best.is_none_or(|(_, l)| load < l) {
                        best = Some((idx, load));
                    }
                }
            }
            best.map(|(idx, _)| idx)
        }
    }
}
