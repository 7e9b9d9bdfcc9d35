//! Client and server configuration: plain structs with `Default`, the reference's option
//! names and defaults (valyala/fastrpc `Client` and `Server`), plus what we add on top.

use std::time::Duration;

use crate::compress::Compression;
use crate::error::Error;
use crate::protocol::DEFAULT_MAX_FRAME_SIZE;
use crate::tls::{TlsClientConfig, TlsServerConfig};

/// The reference's `DefaultMaxPendingRequests`.
pub const DEFAULT_MAX_PENDING_REQUESTS: usize = 1000;
/// Default `max_queued_bytes` of a client: 32 MiB.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 32 << 20;
/// The reference's `DefaultConcurrency`.
pub const DEFAULT_CONCURRENCY: usize = 10_000;
/// The reference's `DefaultReadBufferSize` and `DefaultWriteBufferSize`.
pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;
/// The reference's handshake deadline.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default `read_spin` of clients and servers: 50 µs, spent only while a lone call waits
/// (docs/BENCHMARKS.md: 20 µs was too short to catch the answer on a quiet 2-CPU VM).
pub const DEFAULT_READ_SPIN: Duration = Duration::from_micros(50);

/// How a [`crate::Client`] connects and behaves. Every field has the reference's default.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The server: `host:port` or `unix:/path`.
    pub addr: String,
    /// Written first on each connection; the server must answer with the same. Empty by default.
    pub sniff_header: Vec<u8>,
    /// The protocol version byte both sides must agree on. 0 by default.
    pub protocol_version: u8,
    /// Compression of requests (the server picks the compression of responses). Flate by default.
    pub compress_type: Compression,
    /// DEFLATE level 0-9 when `compress_type` is flate (6, what the reference uses).
    pub flate_level: u32,
    /// TLS; `None` (the default) is plaintext.
    pub tls: Option<TlsClientConfig>,
    /// Calls that may wait for responses at once (queued or sent). 1000 by default. One more
    /// fails at once with [`crate::ErrorKind::Overflow`].
    pub max_pending_requests: usize,
    /// When `max_pending_requests` is reached, fail the oldest call still queued (not yet
    /// sent) instead of the new one.
    pub prioritize_new_requests: bool,
    /// Bound on the bytes of encoded requests waiting for the writer (not counting the one
    /// batch being written). A call or send that would pass it fails at once with
    /// [`crate::ErrorKind::Overflow`]; a request alone in the queue is always taken. 32 MiB
    /// by default. With a server that stops reading, the client holds at most this plus the
    /// batch being written (itself at most this), whatever the calls' deadlines.
    pub max_queued_bytes: usize,
    /// Longest time a queued request waits for others to share its write. 0 (the default):
    /// send as soon as the writer is free. Kept to within microseconds on Linux (a timerfd
    /// per connection while a delay is set), not rounded up to tokio's 1 ms timer tick.
    pub max_batch_delay: Duration,
    /// The deadline of calls that do not give their own. 10 s by default (the reference has
    /// no default: each call gives one). Timeouts (this one, and those given to
    /// `call_timeout` and `submit`) are counted from the monotonic clock read when the call
    /// starts: a call never times out early.
    pub request_timeout: Duration,
    /// Longest time to read one whole response frame; also how long an idle connection
    /// lives. Zero (the default) is unlimited.
    pub read_timeout: Duration,
    /// Longest time to write one batch. Zero (the default) is unlimited.
    pub write_timeout: Duration,
    /// Size of the socket read buffer. 64 KiB by default.
    pub read_buffer_size: usize,
    /// Size of the write buffer: batches start with this capacity, and a delayed batch is
    /// flushed early when it reaches it. 64 KiB by default.
    pub write_buffer_size: usize,
    /// Largest name or value of a frame, in either direction. 1 MiB by default.
    pub max_frame_size: usize,
    /// Bound on the whole connection handshake, TLS included. 3 s by default.
    pub handshake_timeout: Duration,
    /// First wait before reconnecting after a failed connect; doubles (with jitter) up to
    /// `reconnect_backoff_max`. 20 ms by default.
    pub reconnect_backoff_min: Duration,
    /// Longest wait between connect attempts. 1 s by default (the reference always waits 1 s).
    pub reconnect_backoff_max: Duration,
    /// Low-latency option: while a lone call waits (one call in flight), the reader keeps its
    /// task runnable for up to this long waiting for its response instead of letting its
    /// runtime worker park (a parked CPU may halt, and waking a halted CPU of a VM takes tens
    /// of µs). With more calls in flight it never spins (there the reader rarely waits, and a
    /// spinning thread would take the CPU its peer needs). It spends CPU only while a lone call
    /// waits, none when idle; after spins that caught nothing, and while parking is not slower
    /// than spinning (busy cores), it stops spinning for a while.
    /// [`DEFAULT_READ_SPIN`] (50 µs) by default; zero is off. On an otherwise idle 2-CPU VM it
    /// took ping-pong p50 from ~60 µs to ~11-24 µs, at up to a core per side while the calls
    /// ran; on busy cores it stays out of the way (docs/BENCHMARKS.md).
    pub read_spin: Duration,
    /// The program reads the connection itself (false by default): while calls are in flight
    /// the library does not wait for the socket's bytes, so no library thread is woken by
    /// them. The program must then wait on [`Client::read_fd`](crate::Client::read_fd) and
    /// call [`Client::read_now`](crate::Client::read_now) whenever it is readable, for as
    /// long as any of its calls is in flight; a call no one reads for completes at its
    /// deadline. Before a call goes out on a connection with none in flight, the library
    /// reads what arrived meanwhile itself (late responses, the server's close), so that a
    /// connection the server closed while idle is replaced before the call is written, not
    /// after; and it watches for the server's close alone (not for each arrival) and closes
    /// its side then, so an idle client does not keep a server's graceful stop waiting. A
    /// call from a completion sink run by the program's read is not kept waiting for that
    /// read. Made for event loops and bindings whose own thread waits on the socket (the Go
    /// binding's leader); not for a balanced client.
    pub caller_reads: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            addr: String::new(),
            sniff_header: Vec::new(),
            protocol_version: 0,
            compress_type: Compression::Flate,
            flate_level: 6,
            tls: None,
            max_pending_requests: DEFAULT_MAX_PENDING_REQUESTS,
            prioritize_new_requests: false,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_batch_delay: Duration::ZERO,
            request_timeout: Duration::from_secs(10),
            read_timeout: Duration::ZERO,
            write_timeout: Duration::ZERO,
            read_buffer_size: DEFAULT_BUFFER_SIZE,
            write_buffer_size: DEFAULT_BUFFER_SIZE,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            reconnect_backoff_min: Duration::from_millis(20),
            reconnect_backoff_max: Duration::from_secs(1),
            read_spin: DEFAULT_READ_SPIN,
            caller_reads: false,
        }
    }
}

impl ClientConfig {
    /// The default configuration for `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        ClientConfig {
            addr: addr.into(),
            ..Default::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.max_pending_requests == 0 {
            return Err(Error::invalid("max_pending_requests must be at least 1"));
        }
        if self.max_pending_requests > 1 << 24 {
            return Err(Error::invalid(
                "max_pending_requests must be at most 16777216",
            ));
        }
        if self.max_queued_bytes == 0 {
            return Err(Error::invalid("max_queued_bytes must be at least 1"));
        }
        check_spin(self.read_spin)?;
        check_common(
            self.flate_level,
            self.max_frame_size,
            self.handshake_timeout,
        )?;
        if self.request_timeout.is_zero() {
            return Err(Error::invalid("request_timeout must be more than zero"));
        }
        if self.reconnect_backoff_min > self.reconnect_backoff_max {
            return Err(Error::invalid(
                "reconnect_backoff_min must not exceed reconnect_backoff_max",
            ));
        }
        Ok(())
    }
}

fn check_common(level: u32, max_frame: usize, handshake: Duration) -> Result<(), Error> {
    if level > 9 {
        return Err(Error::invalid(format!(
            "flate_level {level} is not between 0 and 9"
        )));
    }
    if max_frame == 0 || max_frame > u32::MAX as usize {
        return Err(Error::invalid(format!(
            "max_frame_size {max_frame} is not between 1 and 4294967295 bytes"
        )));
    }
    if handshake.is_zero() {
        return Err(Error::invalid("handshake_timeout must be more than zero"));
    }
    Ok(())
}

/// How a [`crate::Server`] accepts and runs requests. Every field has the reference's default.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Expected first on each connection, and written back. Empty by default.
    pub sniff_header: Vec<u8>,
    /// The protocol version byte both sides must agree on. 0 by default.
    pub protocol_version: u8,
    /// Compression of responses (each client picks that of its requests). Flate by default.
    pub compress_type: Compression,
    /// DEFLATE level 0-9 when `compress_type` is flate (6, what the reference uses).
    pub flate_level: u32,
    /// TLS; `None` (the default) serves plaintext only and refuses clients asking for TLS.
    pub tls: Option<TlsServerConfig>,
    /// Handlers that may run at once, over all connections. 10000 by default. A request over
    /// the limit is answered at once with `concurrency_limit_reply`, without its handler.
    pub concurrency: usize,
    /// The response value sent instead of running a handler when `concurrency` is reached.
    /// Empty by default (as the reference's tlv server with no handler for it).
    pub concurrency_limit_reply: Vec<u8>,
    /// The response value sent when a handler panics or drops its call unanswered. Empty by
    /// default.
    pub error_reply: Vec<u8>,
    /// Run each connection's requests one after another, in order.
    pub pipeline_requests: bool,
    /// Longest time a ready response waits for others to share its write. 0 by default.
    /// Kept to within microseconds on Linux, as the client's.
    pub max_batch_delay: Duration,
    /// Longest time to read one whole request frame; also how long an idle connection
    /// lives. Zero (the default) is unlimited.
    pub read_timeout: Duration,
    /// Longest time to write one batch. Zero (the default) is unlimited.
    pub write_timeout: Duration,
    /// How long a connection may go without a request while none of its handlers runs
    /// before the server closes it. Zero (the default, as the reference) keeps idle
    /// connections (they hold little: see docs/RELIABILITY.md).
    pub idle_timeout: Duration,
    /// Size of the socket read buffer. 64 KiB by default.
    pub read_buffer_size: usize,
    /// Size of the write buffer. 64 KiB by default.
    pub write_buffer_size: usize,
    /// Largest name or value of a frame, in either direction. 1 MiB by default.
    pub max_frame_size: usize,
    /// Bound on the whole connection handshake, TLS included. 3 s by default.
    pub handshake_timeout: Duration,
    /// Low-latency option, as the client's: after a read that brought a single request, a
    /// connection's reader keeps its task runnable for up to this long waiting for the next
    /// one instead of letting its runtime worker park. [`DEFAULT_READ_SPIN`] (50 µs) by
    /// default; zero is off.
    pub read_spin: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            sniff_header: Vec::new(),
            protocol_version: 0,
            compress_type: Compression::Flate,
            flate_level: 6,
            tls: None,
            concurrency: DEFAULT_CONCURRENCY,
            concurrency_limit_reply: Vec::new(),
            error_reply: Vec::new(),
            pipeline_requests: false,
            max_batch_delay: Duration::ZERO,
            read_timeout: Duration::ZERO,
            write_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            read_buffer_size: DEFAULT_BUFFER_SIZE,
            write_buffer_size: DEFAULT_BUFFER_SIZE,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            read_spin: DEFAULT_READ_SPIN,
        }
    }
}

impl ServerConfig {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.concurrency == 0 {
            return Err(Error::invalid("concurrency must be at least 1"));
        }
        check_spin(self.read_spin)?;
        check_common(
            self.flate_level,
            self.max_frame_size,
            self.handshake_timeout,
        )?;
        if self.concurrency_limit_reply.len() > self.max_frame_size
            || self.error_reply.len() > self.max_frame_size
        {
            return Err(Error::invalid(
                "concurrency_limit_reply and error_reply must fit in max_frame_size",
            ));
        }
        Ok(())
    }
}

/// `Duration::ZERO` means "no limit".
pub(crate) fn limit(d: Duration) -> Option<Duration> {
    if d.is_zero() {
        None
    } else {
        Some(d)
    }
}

/// `read_spin` is a few round trips at most: a longer spin only burns CPU.
fn check_spin(d: Duration) -> Result<(), Error> {
    if d > Duration::from_millis(10) {
        return Err(Error::invalid("read_spin must be at most 10 ms"));
    }
    Ok(())
}
