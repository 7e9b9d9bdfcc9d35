//! Counters both sides keep, cheap enough to leave on: relaxed atomics bumped once per call
//! or once per flush, read into plain snapshot structs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::ErrorKind;

/// Byte and flush counters of one side's connections (all connections, summed).
#[derive(Default)]
pub(crate) struct IoCounters {
    pub sent_plain: AtomicU64,
    pub sent_wire: AtomicU64,
    pub received_plain: AtomicU64,
    pub received_wire: AtomicU64,
    pub flushes: AtomicU64,
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
}

/// Bytes before and after compression in each direction, flushes and frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Frame bytes sent, before compression.
    pub bytes_sent_plain: u64,
    /// Bytes written to the socket (after compression; before TLS).
    pub bytes_sent_wire: u64,
    /// Frame bytes received, after decompression.
    pub bytes_received_plain: u64,
    /// Bytes read from the socket (before decompression; after TLS).
    pub bytes_received_wire: u64,
    /// Flushes: each is one compressed batch written with one write call sequence.
    pub flushes: u64,
    /// Frames sent; `frames_sent / flushes` is the mean batch size.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
}

impl IoStats {
    /// Mean frames per flush (0 when nothing was flushed).
    pub fn frames_per_flush(&self) -> f64 {
        if self.flushes == 0 {
            0.0
        } else {
            self.frames_sent as f64 / self.flushes as f64
        }
    }
}

impl IoCounters {
    pub(crate) fn snapshot(&self) -> IoStats {
        IoStats {
            bytes_sent_plain: self.sent_plain.load(Relaxed),
            bytes_sent_wire: self.sent_wire.load(Relaxed),
            bytes_received_plain: self.received_plain.load(Relaxed),
            bytes_received_wire: self.received_wire.load(Relaxed),
            flushes: self.flushes.load(Relaxed),
            frames_sent: self.frames_sent.load(Relaxed),
            frames_received: self.frames_received.load(Relaxed),
        }
    }
}

/// Errors counted by kind.
#[derive(Default)]
pub(crate) struct ErrorCounters([AtomicU64; ErrorKind::ALL.len()]);

impl ErrorCounters {
    #[inline]
    pub(crate) fn add(&self, k: ErrorKind, n: u64) {
        self.0[k.index()].fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ErrorCounts {
        let g = |k: ErrorKind| self.0[k.index()].load(Relaxed);
        ErrorCounts {
            timeout: g(ErrorKind::Timeout),
            overflow: g(ErrorKind::Overflow),
            connect: g(ErrorKind::Connect),
            connection: g(ErrorKind::Connection),
            closed: g(ErrorKind::Closed),
            protocol: g(ErrorKind::Protocol),
            tls: g(ErrorKind::Tls),
            too_large: g(ErrorKind::TooLarge),
            invalid_argument: g(ErrorKind::InvalidArgument),
            io: g(ErrorKind::Io),
            cancelled: g(ErrorKind::Cancelled),
        }
    }
}

/// Failures counted by [`ErrorKind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ErrorCounts {
    pub timeout: u64,
    pub overflow: u64,
    pub connect: u64,
    pub connection: u64,
    pub closed: u64,
    pub protocol: u64,
    pub tls: u64,
    pub too_large: u64,
    pub invalid_argument: u64,
    pub io: u64,
    /// Calls cancelled by their caller.
    pub cancelled: u64,
}

impl ErrorCounts {
    /// The sum over all kinds.
    pub fn total(&self) -> u64 {
        self.timeout
            + self.overflow
            + self.connect
            + self.connection
            + self.closed
            + self.protocol
            + self.tls
            + self.too_large
            + self.invalid_argument
            + self.io
            + self.cancelled
    }
}
