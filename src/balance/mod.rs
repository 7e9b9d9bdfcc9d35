//! The balancing client: one [`BalancedClient`] over many servers, each reached through
//! `connections_per_server` ordinary [`Client`]s, choosing per call the connection with the
//! fewest calls in flight between two picked at random (power of two choices), skipping
//! servers whose connect failed until their backoff passes, and re-resolving the server set
//! every `resolve_interval`.
//!
//! It is a layer on the public [`Client`] API: every connection is a plain client with the
//! template's options. The server list sits behind a `std::sync::RwLock` whose read side a
//! call holds only to pick (no await under it) and to clone the chosen connection's `Arc`;
//! the refresh task is the only writer, once per `resolve_interval`. The choice itself reads
//! two atomics; the random numbers come from a per-thread xorshift (`pick.rs`).
//!
//! A call is never re-sent after it may have reached a server: only a call that failed with
//! [`ErrorKind::Connect`] (the connect or handshake failed, or the client is backing off
//! after such a failure: the request was never written) is tried on another connection.
//! Name resolution lives in `resolver.rs`.

mod pick;
mod resolver;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::client::{CallId, Client, ClientStats, CloseMode, Completion};
use crate::config::ClientConfig;
use crate::error::{Error, ErrorKind};
use crate::stats::{ErrorCounts, IoStats};
use pick::{note_done, now_ns, pick, Conn, Now};
pub use resolver::{Endpoint, Resolve};

/// How a [`BalancedClient`] finds its servers and connects to them.
#[derive(Clone)]
#[non_exhaustive]
pub struct BalancedConfig {
    /// The options of every connection (its `addr` is ignored: each connection gets its
    /// server's). Every option applies per connection: `max_pending_requests`, for one, bounds
    /// each connection, so the whole client accepts up to servers × connections × that.
    pub client: ClientConfig,
    /// The servers: `ip:port`, `unix:/path`, or `host:port` for every address the host name
    /// resolves to. Ignored when `resolver` is set.
    pub addrs: Vec<String>,
    /// Connections (clients) per server, 1 by default: more lets one client use several
    /// writers and readers against one large server. 1..=1024.
    pub connections_per_server: usize,
    /// How often the server set is resolved again (servers added and removed are taken up
    /// then). 30 s by default; zero: never again after the first time.
    pub resolve_interval: Duration,
    /// Replaces the system resolver (for service discovery, or a test).
    pub resolver: Option<Arc<dyn Resolve>>,
}

impl BalancedConfig {
    /// The default configuration for these addresses.
    pub fn new<S: Into<String>>(addrs: impl IntoIterator<Item = S>) -> BalancedConfig {
        BalancedConfig {
            client: ClientConfig::default(),
            addrs: addrs.into_iter().map(Into::into).collect(),
            connections_per_server: 1,
            resolve_interval: Duration::from_secs(30),
            resolver: None,
        }
    }

    /// The default configuration with servers from `resolver`.
    pub fn with_resolver(resolver: impl Resolve) -> BalancedConfig {
        let mut c = BalancedConfig::new(Vec::<String>::new());
        c.resolver = Some(Arc::new(resolver));
        c
    }
}

/// Whether the balancer sends new calls to a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendState {
    /// At least one of its connections is used (connected, or not tried yet).
    Up,
    /// Every connection failed to connect and is skipped until its backoff passes.
    Down,
}

/// One server's share of a [`BalancedStats`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStats {
    /// Its address as resolved.
    pub addr: String,
    /// Whether new calls go to it.
    pub state: BackendState,
    /// Its connections.
    pub connections: usize,
    /// The counters of its connections, summed (`pending_requests`, `calls`, `errors`...).
    pub stats: ClientStats,
}

/// A snapshot of a [`BalancedClient`]'s counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalancedStats {
    /// The counters of every connection of the current server set, summed (servers removed
    /// by a re-resolution are no longer counted). `errors.connect` counts each failed
    /// attempt, including those tried again elsewhere (see `connect_retries`).
    pub total: ClientStats,
    /// Per server, in the order of the resolved set.
    pub servers: Vec<BackendStats>,
    /// Calls that failed to connect on one server and were tried on another.
    pub connect_retries: u64,
    /// Resolutions applied (the first one included).
    pub resolutions: u64,
    /// Resolutions that failed (the previous set was kept).
    pub resolve_errors: u64,
}

struct Backend {
    endpoint: Endpoint,
    conns: Vec<Arc<Conn>>,
}

/// The current server set: the servers, and all their connections in one flat list (the
/// list the choice draws from).
struct Set {
    servers: Vec<Arc<Backend>>,
    conns: Vec<Arc<Conn>>,
}

struct Shared {
    cfg: BalancedConfig,
    resolver: Arc<dyn Resolve>,
    base: Instant,
    set: RwLock<Arc<Set>>,
    closed: AtomicBool,
    connect_retries: AtomicU64,
    resolve_errors: AtomicU64,
    resolved: watch::Sender<u64>,
    /// Serializes refreshes (the timer's and `resolve_now`).
    refreshing: tokio::sync::Mutex<()>,
    rt: tokio::runtime::Handle,
    /// The calls made with `submit_with_id` still waiting, by id, for `cancel` (sharded by
    /// id; an entry lives from the submit to the call's completion, so there are at most as
    /// many as calls in flight).
    calls: [Mutex<HashMap<u64, Weak<Submitted>>>; CALL_SHARDS],
    next_call_id: AtomicU64,
}

const CALL_SHARDS: usize = 16;

/// The identity of a call made with [`BalancedClient::submit_with_id`], for
/// [`BalancedClient::cancel`]: it follows the call when a failed connect moves it to another
/// server. Unique among a client's calls (a 64-bit counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BalancedCallId(u64);

impl BalancedCallId {
    /// The id as a number (never 0), for C and other bindings.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The id from [`BalancedCallId::as_u64`]; a number that is no call's id cancels nothing.
    pub fn from_u64(v: u64) -> BalancedCallId {
        BalancedCallId(v)
    }
}

/// A client over many servers. Cloning shares it; when the last handle is dropped every
/// connection closes (cancelling waiting calls) and re-resolution stops.
///
/// The calls are those of [`Client`], with one difference: a call whose connect fails is
/// tried on another server (it never reached the first). Calls in flight on a server whose
/// connection fails fail with [`ErrorKind::Connection`] as with one client; they are not
/// re-sent. When no server is up a call fails at once with [`ErrorKind::Connect`] naming
/// each server and why it is down.
#[derive(Clone)]
pub struct BalancedClient {
    shared: Arc<Shared>,
}

impl BalancedClient {
    /// Resolves the servers (on this thread: a host name may block on DNS) and makes the
    /// client. Nothing connects until the first call.
    pub fn new(config: BalancedConfig) -> Result<BalancedClient, Error> {
        if config.connections_per_server == 0 || config.connections_per_server > 1024 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "connections_per_server must be 1..=1024",
            ));
        }
        let mut probe = config.client.clone();
        probe.addr = "127.0.0.1:1".into();
        probe.validate()?;
        if config.client.caller_reads {
            // Its connections come and go: the program has no descriptor to wait on.
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "caller_reads is for one-server clients: a balanced client reads its connections itself",
            ));
        }
        let resolver: Arc<dyn Resolve> = match &config.resolver {
            Some(r) => r.clone(),
            None => {
                if config.addrs.is_empty() {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        "a balanced client needs at least one address or a resolver",
                    ));
                }
                Arc::new(resolver::SystemResolver {
                    addrs: config.addrs.clone(),
                })
            }
        };
        let endpoints = resolver.resolve()?;
        let rt = crate::runtime::handle();
        let (tx, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            resolver,
            base: Instant::now(),
            set: RwLock::new(Arc::new(Set {
                servers: Vec::new(),
                conns: Vec::new(),
            })),
            closed: AtomicBool::new(false),
            connect_retries: AtomicU64::new(0),
            resolve_errors: AtomicU64::new(0),
            resolved: tx,
            refreshing: tokio::sync::Mutex::new(()),
            rt: rt.clone(),
            calls: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            next_call_id: AtomicU64::new(1),
            cfg: config,
        });
        shared.apply(endpoints)?;
        if !shared.cfg.resolve_interval.is_zero() {
            rt.spawn(refresh_loop(
                Arc::downgrade(&shared),
                shared.cfg.resolve_interval,
            ));
        }
        Ok(BalancedClient { shared })
    }

    /// The configuration the client was made with.
    pub fn config(&self) -> &BalancedConfig {
        &self.shared.cfg
    }

    /// Resolves the server set now (as the timer does every `resolve_interval`) and applies
    /// it. An `Err` keeps the previous set.
    pub async fn resolve_now(&self) -> Result<(), Error> {
        self.shared.refresh().await
    }

    /// A receiver of the number of resolutions applied so far: it changes after each one.
    pub fn resolutions(&self) -> watch::Receiver<u64> {
        self.shared.resolved.subscribe()
    }

    /// The addresses of the current server set.
    pub fn servers(&self) -> Vec<String> {
        self.shared
            .current()
            .servers
            .iter()
            .map(|b| b.endpoint.addr.clone())
            .collect()
    }

    /// Calls `name` with `value` on the chosen server and returns the response value,
    /// within the configured `request_timeout`.
    pub async fn call(&self, name: &[u8], value: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.call_into(name, value, &mut out).await?;
        Ok(out)
    }

    /// Like [`BalancedClient::call`], with this call's own timeout.
    pub async fn call_timeout(
        &self,
        name: &[u8],
        value: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.call_deadline_into(name, value, Instant::now() + timeout, &mut out)
            .await?;
        Ok(out)
    }

    /// Like [`Client::call_into`]: no allocation per call once warm.
    pub async fn call_into(
        &self,
        name: &[u8],
        value: &[u8],
        resp: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + self.shared.cfg.client.request_timeout;
        self.call_deadline_into(name, value, deadline, resp).await
    }

    /// Like [`Client::call_deadline_into`], on the chosen server.
    pub async fn call_deadline_into(
        &self,
        name: &[u8],
        value: &[u8],
        deadline: Instant,
        resp: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let sh = &self.shared;
        let mut tries = 0;
        loop {
            let (idx, conn) = sh.choose()?;
            let r = {
                let _g = InFlight::enter(&conn);
                conn.client
                    .call_deadline_into(name, value, deadline, resp)
                    .await
            };
            match r {
                Ok(()) => {
                    conn.mark_up();
                    note_done(&conn, idx);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Connect => {
                    conn.mark_down(now_ns(sh.base), &e);
                    tries += 1;
                    if !sh.retry_allowed(tries, deadline) {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Like [`Client::submit`], on the chosen server. A call whose connect fails, refused at
    /// once or failed after it was accepted, is submitted to another server (from the library
    /// thread that saw the failure, in the second case); `sink` gets the outcome of the last
    /// try. Allocates per call a wrapper that keeps the in-flight count and a copy of `name`
    /// and `value` for such a retry.
    pub fn submit(
        &self,
        name: &[u8],
        value: &[u8],
        timeout: Duration,
        sink: Arc<dyn Completion>,
        tag: u128,
    ) -> Result<(), Error> {
        let call = Arc::new(Submitted {
            name: name.into(),
            value: value.into(),
            deadline: Instant::now() + timeout,
            sink,
            tag,
            track: None,
        });
        self.shared.submit(&call, 0)
    }

    /// [`BalancedClient::submit`], returning the call's identity for
    /// [`BalancedClient::cancel`] (which then keeps an entry per call in flight).
    pub fn submit_with_id(
        &self,
        name: &[u8],
        value: &[u8],
        timeout: Duration,
        sink: Arc<dyn Completion>,
        tag: u128,
    ) -> Result<BalancedCallId, Error> {
        let sh = &self.shared;
        let id = sh.next_call_id.fetch_add(1, Relaxed);
        let call = Arc::new(Submitted {
            name: name.into(),
            value: value.into(),
            deadline: Instant::now() + timeout,
            sink,
            tag,
            track: Some(Track {
                id,
                state: Mutex::new(TrackState::default()),
            }),
        });
        sh.call_shard(id).insert(id, Arc::downgrade(&call));
        match sh.submit(&call, 0) {
            Ok(()) => Ok(BalancedCallId(id)),
            Err(e) => {
                sh.forget_call(id);
                Err(e)
            }
        }
    }

    /// Cancels call `id` if it still waits (queued, sent, or between two servers after a
    /// failed connect): it completes at once, exactly once, with [`ErrorKind::Cancelled`]
    /// (its sink is told on a library thread, or on this one), its pending slot on its server
    /// is free at once, and a response that still comes is dropped. Returns false if the call
    /// had already completed, was already cancelled, or never existed: then nothing happens.
    pub fn cancel(&self, id: BalancedCallId) -> bool {
        let call = match self.shared.call_shard(id.0).get(&id.0) {
            Some(w) => w.upgrade(),
            None => None,
        };
        let Some(call) = call else {
            return false;
        };
        let Some(t) = &call.track else {
            return false;
        };
        let current = {
            let mut st = t.lock();
            if st.done || st.cancelled {
                return false;
            }
            st.cancelled = true;
            st.current.take()
        };
        // From here the call's outcome is CANCELLED (see Submitted::finish); cancelling the
        // try in its client frees the slot and completes it now. Without a try recorded (its
        // submit is just returning, or it is moving to another server), the try cancels itself
        // as soon as it is recorded (Track::started).
        if let Some((_, client, cid)) = current {
            client.cancel(cid);
        }
        true
    }

    /// Like [`Client::send`] (fire-and-forget), on the chosen server; tried on another when
    /// the chosen one is backing off.
    pub fn send(&self, name: &[u8], value: &[u8]) -> Result<(), Error> {
        let sh = &self.shared;
        let deadline = Instant::now() + sh.cfg.client.request_timeout;
        let mut tries = 0;
        loop {
            let (_, conn) = sh.choose()?;
            match conn.client.send(name, value) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Connect => {
                    conn.mark_down(now_ns(sh.base), &e);
                    tries += 1;
                    if !sh.retry_allowed(tries, deadline) {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Calls waiting for their response now, on every connection.
    pub fn pending_requests(&self) -> usize {
        self.shared
            .current()
            .conns
            .iter()
            .map(|c| c.client.pending_requests())
            .sum()
    }

    /// A snapshot of the counters: per server and summed.
    pub fn stats(&self) -> BalancedStats {
        let sh = &self.shared;
        let set = sh.current();
        let now = Now::new(sh.base);
        let mut total = ClientStats::default();
        let mut servers = Vec::with_capacity(set.servers.len());
        for b in &set.servers {
            let mut s = ClientStats::default();
            for c in &b.conns {
                add_stats(&mut s, &c.client.stats());
            }
            add_stats(&mut total, &s);
            servers.push(BackendStats {
                addr: b.endpoint.addr.clone(),
                state: if b.conns.iter().any(|c| c.is_up(&now)) {
                    BackendState::Up
                } else {
                    BackendState::Down
                },
                connections: b.conns.len(),
                stats: s,
            });
        }
        BalancedStats {
            total,
            servers,
            connect_retries: sh.connect_retries.load(Relaxed),
            resolutions: *sh.resolved.borrow(),
            resolve_errors: sh.resolve_errors.load(Relaxed),
        }
    }

    /// Stops re-resolving and closes every connection as [`Client::close`] does with `mode`
    /// (all at once, so a drain waits at most its timeout in all).
    pub async fn close(&self, mode: CloseMode) {
        let sh = &self.shared;
        sh.closed.store(true, Relaxed);
        let set = sh.current();
        let tasks: Vec<_> = set
            .conns
            .iter()
            .map(|c| {
                let client = c.client.clone();
                sh.rt.spawn(async move { client.close(mode).await })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl BalancedClient {
    /// Fails every waiting call of every connection with [`ErrorKind::Closed`] at once and
    /// refuses new calls, without waiting (the C ABI's close and free).
    pub(crate) fn close_now(&self) {
        let sh = &self.shared;
        sh.closed.store(true, Relaxed);
        for c in &sh.current().conns {
            c.client.close_now_for_ffi();
        }
    }
}

impl Shared {
    /// Submits `call` to a chosen connection; `tries` connect failures so far.
    fn submit(self: &Arc<Self>, call: &Arc<Submitted>, mut tries: usize) -> Result<(), Error> {
        loop {
            let (_, conn) = self.choose()?;
            let timeout = call.deadline.saturating_duration_since(Instant::now());
            if timeout.is_zero() {
                return Err(Error::timeout());
            }
            conn.in_flight.fetch_add(1, Relaxed);
            let tracked = Arc::new(Tracked {
                call: call.clone(),
                conn: conn.clone(),
                shared: Arc::downgrade(self),
                tries,
            });
            let r = match &call.track {
                None => conn
                    .client
                    .submit(&call.name, &call.value, timeout, tracked, call.tag),
                Some(t) => conn
                    .client
                    .submit_with_id(&call.name, &call.value, timeout, tracked, call.tag)
                    .map(|cid| t.started(&conn.client, cid, tries)),
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) => {
                    conn.in_flight.fetch_sub(1, Relaxed);
                    if e.kind() != ErrorKind::Connect {
                        return Err(e);
                    }
                    conn.mark_down(now_ns(self.base), &e);
                    tries += 1;
                    if !self.retry_allowed(tries, call.deadline) {
                        return Err(e);
                    }
                }
            }
        }
    }

    fn call_shard(&self, id: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Submitted>>> {
        self.calls[(id % CALL_SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn forget_call(&self, id: u64) {
        self.call_shard(id).remove(&id);
    }

    fn current(&self) -> Arc<Set> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The connection for the next call, or the error when none is up.
    #[inline]
    fn choose(&self) -> Result<(usize, Arc<Conn>), Error> {
        if self.closed.load(Relaxed) {
            return Err(Error::closed());
        }
        let now = Now::new(self.base);
        let set = self.set.read().unwrap_or_else(|e| e.into_inner());
        match pick(&set.conns, &now) {
            Some(i) => Ok((i, set.conns[i].clone())),
            None => Err(all_down(&set)),
        }
    }

    /// Whether a call whose connect failed may try another connection.
    fn retry_allowed(&self, tries: usize, deadline: Instant) -> bool {
        let n = self
            .set
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .conns
            .len();
        if tries > n || Instant::now() >= deadline {
            return false;
        }
        self.connect_retries.fetch_add(1, Relaxed);
        true
    }

    async fn refresh(self: &Arc<Self>) -> Result<(), Error> {
        let _one = self.refreshing.lock().await;
        if self.closed.load(Relaxed) {
            return Err(Error::closed());
        }
        let r = self.resolver.clone();
        let got = match tokio::task::spawn_blocking(move || r.resolve()).await {
            Ok(got) => got,
            Err(_) => Err(Error::new(ErrorKind::Io, "the resolver panicked")),
        };
        match got {
            Ok(endpoints) => self.apply(endpoints),
            Err(e) => {
                self.resolve_errors.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    /// Makes `endpoints` the server set: servers still there keep their connections (and
    /// their calls); new ones get new clients; removed ones drain their calls and close.
    fn apply(&self, endpoints: Vec<Endpoint>) -> Result<(), Error> {
        let old = self.current();
        let mut servers: Vec<Arc<Backend>> = Vec::with_capacity(endpoints.len());
        let mut first_err = None;
        for ep in endpoints {
            if servers.iter().any(|b| b.endpoint.addr == ep.addr) {
                continue;
            }
            if let Some(b) = old.servers.iter().find(|b| b.endpoint == ep) {
                servers.push(b.clone());
                continue;
            }
            match self.backend(ep) {
                Ok(b) => servers.push(Arc::new(b)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if servers.is_empty() {
            if let Some(e) = first_err {
                self.resolve_errors.fetch_add(1, Relaxed);
                return Err(e);
            }
        }
        let conns = servers
            .iter()
            .flat_map(|b| b.conns.iter().cloned())
            .collect();
        let new = Arc::new(Set { servers, conns });
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        // Removed servers: their calls in flight hold their clients; drain then close.
        let timeout = self.cfg.client.request_timeout;
        for b in &old.servers {
            if !new.servers.iter().any(|n| Arc::ptr_eq(n, b)) {
                for c in &b.conns {
                    let client = c.client.clone();
                    self.rt
                        .spawn(async move { client.close(CloseMode::Drain(timeout)).await });
                }
            }
        }
        self.resolved.send_modify(|n| *n += 1);
        Ok(())
    }

    fn backend(&self, ep: Endpoint) -> Result<Backend, Error> {
        let mut cfg = self.cfg.client.clone();
        cfg.addr = ep.addr.clone();
        if let (Some(tls), Some(name)) = (cfg.tls.as_mut(), &ep.tls_name) {
            if tls.server_name.is_none() {
                tls.server_name = Some(name.clone());
            }
        }
        let conns = (0..self.cfg.connections_per_server)
            .map(|_| Client::new(cfg.clone()).map(|c| Arc::new(Conn::new(c))))
            .collect::<Result<Vec<_>, Error>>()
            .map_err(|e| e.context(&ep.addr))?;
        Ok(Backend {
            endpoint: ep,
            conns,
        })
    }
}

async fn refresh_loop(shared: Weak<Shared>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(sh) = shared.upgrade() else { return };
        if sh.closed.load(Relaxed) {
            return;
        }
        // A failure keeps the previous set; it is counted in resolve_errors.
        let _ = sh.refresh().await;
    }
}

/// The error of a call when no server is up: each server and why it is down.
#[cold]
fn all_down(set: &Set) -> Error {
    if set.servers.is_empty() {
        return Error::new(
            ErrorKind::Connect,
            "no server to call: the resolved server set is empty",
        );
    }
    let mut msg = format!("all {} servers are down:", set.servers.len());
    for b in &set.servers {
        let why = b
            .conns
            .iter()
            .find_map(|c| {
                c.last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|e| e.message().to_string())
            })
            .unwrap_or_else(|| "backing off".into());
        msg.push_str(&format!(" {} ({why});", b.endpoint.addr));
    }
    msg.pop();
    Error::new(ErrorKind::Connect, msg)
}

/// Counts a call in flight on a connection for as long as it lives (a dropped call future
/// included).
struct InFlight<'a>(&'a Conn);

impl<'a> InFlight<'a> {
    #[inline]
    fn enter(c: &'a Conn) -> InFlight<'a> {
        c.in_flight.fetch_add(1, Relaxed);
        InFlight(c)
    }
}

impl Drop for InFlight<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A submitted call, kept for a retry on another server when its connect fails.
struct Submitted {
    name: Box<[u8]>,
    value: Box<[u8]>,
    deadline: Instant,
    sink: Arc<dyn Completion>,
    tag: u128,
    /// For calls made with `submit_with_id`: what `cancel` needs.
    track: Option<Track>,
}

/// A cancellable call's state: its id, whether it was cancelled or finished, and its current
/// try (the connection's client and the call's id there).
struct Track {
    id: u64,
    state: Mutex<TrackState>,
}

#[derive(Default)]
struct TrackState {
    cancelled: bool,
    done: bool,
    /// The latest try: its number (connect failures before it), client and id there.
    current: Option<(usize, Client, CallId)>,
}

impl Track {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Try number `tries` was submitted as `cid` on `client`: record it, or cancel it if the
    /// call was cancelled meanwhile. A try's submitter can record it late (preempted after
    /// its submit), after the try failed and the next one was recorded: an older try never
    /// replaces a newer one (a cancel would then miss the live try).
    fn started(&self, client: &Client, cid: CallId, tries: usize) {
        let mut st = self.lock();
        if st.cancelled {
            drop(st);
            client.cancel(cid);
        } else if !st.done && st.current.as_ref().is_none_or(|c| c.0 < tries) {
            st.current = Some((tries, client.clone(), cid));
        }
    }
}

impl Submitted {
    fn is_cancelled(&self) -> bool {
        self.track.as_ref().is_some_and(|t| t.lock().cancelled)
    }

    /// Hands the call's outcome to the caller's sink, once: CANCELLED if `cancel` won,
    /// whatever the try's result (a response racing the cancel is dropped).
    fn finish(&self, shared: &Weak<Shared>, tag: u128, result: Result<&[u8], &Error>) {
        if let Some(t) = &self.track {
            let cancelled = {
                let mut st = t.lock();
                st.done = true;
                st.current = None;
                st.cancelled
            };
            if let Some(sh) = shared.upgrade() {
                sh.forget_call(t.id);
            }
            if cancelled && !matches!(result, Err(e) if e.kind() == ErrorKind::Cancelled) {
                self.sink.complete(tag, Err(&Error::cancelled()));
                return;
            }
        }
        self.sink.complete(tag, result);
    }
}

/// The sink of one try of a submitted call: keeps the in-flight count and the server's
/// state; after a connect failure submits the call to another server, else hands the outcome
/// to the caller's sink.
struct Tracked {
    call: Arc<Submitted>,
    conn: Arc<Conn>,
    shared: Weak<Shared>,
    tries: usize,
}

impl Completion for Tracked {
    fn complete(&self, tag: u128, result: Result<&[u8], &Error>) {
        self.conn.in_flight.fetch_sub(1, Relaxed);
        match result {
            Ok(_) => self.conn.mark_up(),
            Err(e) if e.kind() == ErrorKind::Connect => {
                if let Some(sh) = self.shared.upgrade() {
                    self.conn.mark_down(now_ns(sh.base), e);
                    let tries = self.tries + 1;
                    if !self.call.is_cancelled() && sh.retry_allowed(tries, self.call.deadline) {
                        // The request never reached that server: try another.
                        if let Err(e2) = sh.submit(&self.call, tries) {
                            self.call.finish(&self.shared, tag, Err(&e2));
                        }
                        return;
                    }
                }
            }
            Err(_) => {}
        }
        self.call.finish(&self.shared, tag, result);
    }
}

fn add_stats(t: &mut ClientStats, s: &ClientStats) {
    t.calls += s.calls;
    t.responses += s.responses;
    t.sends += s.sends;
    add_errors(&mut t.errors, &s.errors);
    t.unexpected_responses += s.unexpected_responses;
    t.connects += s.connects;
    t.reconnects += s.reconnects;
    t.connect_failures += s.connect_failures;
    t.pending_requests += s.pending_requests;
    t.lone_writes += s.lone_writes;
    add_io(&mut t.io, &s.io);
}

fn add_errors(t: &mut ErrorCounts, s: &ErrorCounts) {
    t.timeout += s.timeout;
    t.overflow += s.overflow;
    t.connect += s.connect;
    t.connection += s.connection;
    t.closed += s.closed;
    t.protocol += s.protocol;
    t.tls += s.tls;
    t.too_large += s.too_large;
    t.invalid_argument += s.invalid_argument;
    t.io += s.io;
    t.cancelled += s.cancelled;
}

fn add_io(t: &mut IoStats, s: &IoStats) {
    t.bytes_sent_plain += s.bytes_sent_plain;
    t.bytes_sent_wire += s.bytes_sent_wire;
    t.bytes_received_plain += s.bytes_received_plain;
    t.bytes_received_wire += s.bytes_received_wire;
    t.flushes += s.flushes;
    t.frames_sent += s.frames_sent;
    t.frames_received += s.frames_received;
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ignore;
    impl Completion for Ignore {
        fn complete(&self, _: u128, _: Result<&[u8], &Error>) {}
    }

    /// A try whose submitter records it late (preempted after its submit, while the try
    /// failed and the next one was submitted and recorded) never replaces the newer try: a
    /// cancel must reach the live one.
    #[tokio::test]
    async fn an_older_try_recorded_late_does_not_replace_the_newer_one() {
        let client = Client::new(crate::ClientConfig::new("127.0.0.1:1")).unwrap();
        let sink: Arc<dyn Completion> = Arc::new(Ignore);
        let d = Duration::from_secs(5);
        let a = client
            .submit_with_id(b"n", b"", d, sink.clone(), 0)
            .unwrap();
        let b = client.submit_with_id(b"n", b"", d, sink, 1).unwrap();
        let track = |id| Track {
            id,
            state: Mutex::new(TrackState::default()),
        };
        let t = track(1);
        t.started(&client, b, 1);
        t.started(&client, a, 0);
        assert!(matches!(&t.lock().current, Some((1, _, id)) if *id == b));
        // In order, the newer one replaces the older.
        let t = track(2);
        t.started(&client, a, 0);
        t.started(&client, b, 1);
        assert!(matches!(&t.lock().current, Some((1, _, id)) if *id == b));
        client.close_now_for_ffi();
    }
}
