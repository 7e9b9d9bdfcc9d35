//! The blocking facade: the same client, called from plain threads. Each call parks the
//! calling thread until its outcome arrives; the thread's waker is made once per thread, so a
//! warm caller allocates nothing per call.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

use crate::config::ClientConfig;
use crate::error::{Error, ErrorKind};

use super::{Client, ClientStats, CloseMode};

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    static WAKER: Waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
}

/// Runs `fut` to completion on this thread, parking between polls. Refuses to run on a
/// thread of a tokio runtime, where parking would stall the runtime's other tasks.
pub(crate) fn block_on<F: Future>(fut: F) -> Result<F::Output, Error> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "a blocking call was made from a thread of a tokio runtime (or from inside a \
             library callback); use the async or callback API there",
        ));
    }
    let mut fut = std::pin::pin!(fut);
    WAKER.with(|w| {
        let mut cx = Context::from_waker(w);
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return Ok(v);
            }
            std::thread::park();
        }
    })
}

/// A [`Client`] for threads that do not run an async runtime. Cloning shares the client.
#[derive(Clone)]
pub struct BlockingClient {
    client: Client,
}

impl BlockingClient {
    /// Creates a client on the library's own runtime. Nothing connects until the first call.
    pub fn new(config: ClientConfig) -> Result<BlockingClient, Error> {
        let rt = crate::runtime::global().handle().clone();
        Ok(BlockingClient {
            client: Client::with_runtime(config, rt)?,
        })
    }

    /// The async client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Calls and returns the response value (see [`Client::call`]).
    pub fn call(&self, name: &[u8], value: &[u8]) -> Result<Vec<u8>, Error> {
        block_on(self.client.call(name, value))?
    }

    /// Calls and puts the response in `resp`, swapping buffers (see [`Client::call_into`]).
    pub fn call_into(&self, name: &[u8], value: &[u8], resp: &mut Vec<u8>) -> Result<(), Error> {
        block_on(self.client.call_into(name, value, resp))?
    }

    /// Like [`BlockingClient::call_into`] with this call's own timeout.
    pub fn call_timeout_into(
        &self,
        name: &[u8],
        value: &[u8],
        timeout: Duration,
        resp: &mut Vec<u8>,
    ) -> Result<(), Error> {
        block_on(self.client.call_timeout_into(name, value, timeout, resp))?
    }

    /// Fire-and-forget (see [`Client::send`]).
    pub fn send(&self, name: &[u8], value: &[u8]) -> Result<(), Error> {
        self.client.send(name, value)
    }

    /// Calls waiting now.
    pub fn pending_requests(&self) -> usize {
        self.client.pending_requests()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ClientStats {
        self.client.stats()
    }

    /// Closes (see [`Client::close`]).
    /// On a runtime thread (inside a callback) it cancels without waiting.
    pub fn close(&self, mode: CloseMode) {
        let inner = self.client.owner.inner.clone();
        if tokio::runtime::Handle::try_current().is_ok() {
            inner.close_now();
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let client = self.client.clone();
        inner.rt.spawn(async move {
            client.close(mode).await;
            let _ = tx.send(());
        });
        if rx.recv().is_err() {
            inner.close_now();
        }
    }
}
