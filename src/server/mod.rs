//! The server: accepts TCP or Unix connections, runs a [`Handler`] per request, and stops
//! gracefully (stop accepting, let running handlers answer and their responses flush, then
//! close, bounded by a timeout).

mod call;
mod conn;
mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

pub use call::{Call, Handler};

use crate::config::ServerConfig;
use crate::error::{Error, ErrorKind};
use crate::guard::{guarded, Task};
use crate::log::{self, Level};
use crate::stats::{ErrorCounters, ErrorCounts, IoCounters, IoStats};
use crate::transport::{Addr, Listener};

/// A snapshot of a server's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Requests that want a response.
    pub requests: u64,
    /// Fire-and-forget requests.
    pub nowait_requests: u64,
    /// Responses queued for sending (handler replies and error replies; not replies dropped
    /// because their connection had closed).
    pub responses: u64,
    /// Requests answered with `concurrency_limit_reply` instead of running the handler.
    pub concurrency_limit_replies: u64,
    /// Handlers that panicked (each such request got `error_reply`).
    pub handler_panics: u64,
    /// Calls dropped unanswered (each got `error_reply`); fire-and-forget requests, which
    /// want no answer, are not counted.
    pub unanswered: u64,
    /// Handlers running now (started and not yet answered).
    pub running: u64,
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections that failed their handshake.
    pub handshake_failures: u64,
    /// Connection-level failures by kind (protocol errors, timeouts, TLS, ...).
    pub errors: ErrorCounts,
    /// Batches a lone reply wrote itself, on the replying thread (a reply from outside the
    /// runtime with nothing else outstanding on its connection; README, "How it works").
    pub lone_writes: u64,
    /// Bytes, flushes and frames.
    pub io: IoStats,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub nowait_requests: AtomicU64,
    pub responses: AtomicU64,
    pub concurrency_limit_replies: AtomicU64,
    pub handler_panics: AtomicU64,
    pub unanswered: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub lone_writes: AtomicU64,
    pub errors: ErrorCounters,
    pub io: Arc<IoCounters>,
}

pub(crate) struct ServerInner {
    pub cfg: ServerConfig,
    pub handler: Box<dyn Handler>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub running: AtomicUsize,
    pub counters: Counters,
    conns: Mutex<Conns>,
    all_closed: tokio::sync::Notify,
}

#[derive(Default)]
struct Conns {
    next: u64,
    open: HashMap<u64, AbortHandle>,
}

/// A listening server. Dropping it stops it at once (no draining); call [`Server::stop`]
/// to drain.
pub struct Server {
    inner: Arc<ServerInner>,
    local_addr: Addr,
    stop: CancellationToken,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Server {
    /// Listens on `addr` (`host:port`, port 0 allowed, or `unix:/path`) and serves with
    /// `handler`, on the caller's tokio runtime.
    pub async fn bind(
        addr: &str,
        config: ServerConfig,
        handler: impl Handler,
    ) -> Result<Server, Error> {
        config.validate()?;
        let addr = Addr::parse(addr)?;
        let tls = match &config.tls {
            Some(t) => Some(crate::tls::server_config(t)?),
            None => None,
        };
        let listener = Listener::bind(&addr).await?;
        let local_addr = listener.local_addr();
        let inner = Arc::new(ServerInner {
            cfg: config,
            handler: Box::new(handler),
            tls,
            running: AtomicUsize::new(0),
            counters: Counters::default(),
            conns: Mutex::new(Conns::default()),
            all_closed: tokio::sync::Notify::new(),
        });
        let stop = CancellationToken::new();
        let accept = tokio::spawn(accept_guarded(inner.clone(), listener, stop.clone()));
        Ok(Server {
            inner,
            local_addr,
            stop,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// The bound address, with the real port when port 0 was asked: `127.0.0.1:40123` or
    /// `unix:/path`.
    pub fn local_addr(&self) -> String {
        self.local_addr.to_string()
    }

    /// Stops gracefully: stops accepting and reading new requests, lets running handlers
    /// answer and their responses flush, then closes every connection. After `timeout`,
    /// connections still open are closed at once and [`ErrorKind::Timeout`] is returned.
    pub async fn stop(&self, timeout: Duration) -> Result<(), Error> {
        self.stop.cancel();
        let accept = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(a) = accept {
            let _ = a.await;
        }
        let inner = &self.inner;
        let wait = || async {
            loop {
                let n = inner.all_closed.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                if inner.open_connections() == 0 {
                    return;
                }
                n.await;
            }
        };
        if tokio::time::timeout(timeout, wait()).await.is_ok() {
            return Ok(());
        }
        let open: Vec<AbortHandle> = {
            let c = inner.conns.lock().unwrap_or_else(|e| e.into_inner());
            c.open.values().cloned().collect()
        };
        let n = open.len();
        for h in open {
            h.abort();
        }
        // An aborted task ends at its next turn on the runtime: wait for that, so that when
        // stop returns every connection is closed and later replies say CLOSED.
        let _ = tokio::time::timeout(Duration::from_secs(5), wait()).await;
        Err(Error::new(
            ErrorKind::Timeout,
            format!("stop: {n} connection(s) still busy after {timeout:?} were closed at once"),
        ))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        let c = &self.inner.counters;
        ServerStats {
            requests: c.requests.load(Relaxed),
            nowait_requests: c.nowait_requests.load(Relaxed),
            responses: c.responses.load(Relaxed),
            concurrency_limit_replies: c.concurrency_limit_replies.load(Relaxed),
            handler_panics: c.handler_panics.load(Relaxed),
            unanswered: c.unanswered.load(Relaxed),
            running: self.inner.running.load(Relaxed) as u64,
            connections_accepted: c.connections_accepted.load(Relaxed),
            connections_open: self.inner.open_connections() as u64,
            handshake_failures: c.handshake_failures.load(Relaxed),
            errors: c.errors.snapshot(),
            lone_writes: c.lone_writes.load(Relaxed),
            io: c.io.snapshot(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
        let c = self.inner.conns.lock().unwrap_or_else(|e| e.into_inner());
        for h in c.open.values() {
            h.abort();
        }
    }
}

impl ServerInner {
    fn open_connections(&self) -> usize {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .len()
    }
}

/// The accept loop, started again after a panic in it (logged by [`guarded`]).
async fn accept_guarded(inner: Arc<ServerInner>, listener: Listener, stop: CancellationToken) {
    while guarded(Task::ServerAccept, accept_loop(&inner, &listener, &stop))
        .await
        .is_err()
    {}
}

async fn accept_loop(inner: &Arc<ServerInner>, listener: &Listener, stop: &CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (raw, peer) = match accepted {
            Ok(v) => v,
            Err(e) => {
                // Out of descriptors and the like: wait a little instead of spinning.
                if log::enabled(Level::Error) {
                    log::emit(Level::Error, &format!("fastrpc server: accept failed: {e}"));
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        inner.counters.connections_accepted.fetch_add(1, Relaxed);
        let mut conns = inner.conns.lock().unwrap_or_else(|e| e.into_inner());
        let key = conns.next;
        conns.next += 1;
        let task_inner = inner.clone();
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            // Deregisters also when the task is aborted (stop timeout, drop).
            let _registered = Registered {
                inner: task_inner.clone(),
                key,
            };
            let counters = task_inner.clone();
            if let Err(e) = guarded(
                Task::ServerConnection,
                conn::serve(task_inner, raw, peer, token),
            )
            .await
            {
                counters.counters.errors.add(e.kind(), 1);
            }
        });
        // The task may already have finished and removed nothing: insert only if running.
        if !handle.is_finished() {
            conns.open.insert(key, handle.abort_handle());
        }
    }
}

/// Removes a connection from the open set when its task ends, however it ends.
struct Registered {
    inner: Arc<ServerInner>,
    key: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut c = self.inner.conns.lock().unwrap_or_else(|e| e.into_inner());
        c.open.remove(&self.key);
        if c.open.is_empty() {
            self.inner.all_closed.notify_waiters();
        }
    }
}

/// A [`Server`] for programs without an async runtime: it runs on the library's runtime.
/// After [`BlockingServer::stop`] its address and counters stay readable.
pub struct BlockingServer {
    server: Arc<Server>,
}

impl BlockingServer {
    /// Listens on `addr` and serves with `handler` (see [`Server::bind`]).
    pub fn bind(
        addr: &str,
        config: ServerConfig,
        handler: impl Handler,
    ) -> Result<BlockingServer, Error> {
        let rt = crate::runtime::global();
        let addr = addr.to_string();
        let server = crate::runtime::run_blocking(&rt, async move {
            Server::bind(&addr, config, handler).await
        })??;
        Ok(BlockingServer {
            server: Arc::new(server),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> String {
        self.server.local_addr()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        self.server.stats()
    }

    /// Stops gracefully (see [`Server::stop`]). Stopping again returns at once.
    pub fn stop(&self, timeout: Duration) -> Result<(), Error> {
        let rt = crate::runtime::global();
        let server = self.server.clone();
        crate::runtime::run_blocking(&rt, async move { server.stop(timeout).await })?
    }
}
