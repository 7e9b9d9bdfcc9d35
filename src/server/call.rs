//! One request as the handler sees it: [`Call`] owns the request's name and value (in pooled
//! buffers) and is answered exactly once, at once or later from any thread or task, by
//! [`Call::reply`]. Dropping it unanswered (or a handler panic) sends the configured
//! `error_reply`, so no client call is left waiting.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::error::{Error, ErrorKind};
use crate::protocol::frame::encode_response;

use super::conn::ConnShared;

/// Runs requests. Called on a library thread, inline on the connection's reader: keep it
/// short, or move the [`Call`] to another thread or task and reply from there.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request. Answer it with [`Call::reply`] now or later.
    fn handle(&self, call: Call);
}

impl<F: Fn(Call) + Send + Sync + 'static> Handler for F {
    fn handle(&self, call: Call) {
        self(call)
    }
}

/// The pooled buffers of one request.
#[derive(Default)]
pub(crate) struct Slot {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// A request in progress. Answer it once with [`Call::reply`].
pub struct Call {
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) slot: Option<Slot>,
    pub(crate) id: u32,
}

impl Call {
    /// The request's name.
    pub fn name(&self) -> &[u8] {
        self.slot.as_ref().map_or(&[], |s| &s.name)
    }

    /// The request's value.
    pub fn value(&self) -> &[u8] {
        self.slot.as_ref().map_or(&[], |s| &s.value)
    }

    /// The request id; 0 for fire-and-forget requests, whose reply is not sent.
    pub fn request_id(&self) -> u32 {
        self.id
    }

    /// True for a fire-and-forget request: the reply is discarded.
    pub fn is_nowait(&self) -> bool {
        self.id == 0
    }

    /// The client's address.
    pub fn peer_addr(&self) -> &str {
        &self.conn.peer
    }

    /// Sends `value` as the response. Errors: [`ErrorKind::TooLarge`] when `value` exceeds
    /// `max_frame_size` (the configured `error_reply` is sent instead), and
    /// [`ErrorKind::Closed`] when the connection is gone (the reply is dropped). Either way the
    /// call is answered and over.
    pub fn reply(mut self, value: &[u8]) -> Result<(), Error> {
        self.finish(Some(value))
    }

    fn finish(&mut self, value: Option<&[u8]>) -> Result<(), Error> {
        let Some(slot) = self.slot.take() else {
            return Ok(());
        };
        let conn = self.conn.clone();
        let server = &conn.server;
        let max = server.cfg.max_frame_size;
        let mut result = Ok(());
        let value = match value {
            Some(v) if v.len() > max => {
                server.counters.errors.add(ErrorKind::TooLarge, 1);
                result = Err(Error::new(
                    ErrorKind::TooLarge,
                    format!(
                        "reply of {} bytes exceeds max_frame_size {max}; error_reply sent instead",
                        v.len()
                    ),
                ));
                &server.cfg.error_reply[..]
            }
            Some(v) => v,
            None => {
                server.counters.unanswered.fetch_add(1, Relaxed);
                &server.cfg.error_reply[..]
            }
        };
        let mut out = conn.lock();
        let mut writer = None;
        if self.id != 0 {
            if out.closed {
                if result.is_ok() {
                    result = Err(Error::fixed(
                        ErrorKind::Closed,
                        "the connection closed before the reply; it was dropped",
                    ));
                }
            } else {
                encode_response(&mut out.buf, self.id, value);
                out.frames += 1;
                writer = out.writer_waker.take();
            }
        }
        out.pool.push(slot);
        out.outstanding -= 1;
        let reader = if out.outstanding == 0 || !out.pipeline {
            out.reader_waker.take()
        } else {
            None
        };
        drop(out);
        server.running.fetch_sub(1, Relaxed);
        if self.id != 0 {
            server.counters.responses.fetch_add(1, Relaxed);
        }
        if let Some(w) = writer {
            w.wake();
        }
        if let Some(w) = reader {
            w.wake();
        }
        result
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.slot.is_some() {
            let _ = self.finish(None);
        }
    }
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("request_id", &self.id)
            .field("name_len", &self.name().len())
            .field("value_len", &self.value().len())
            .finish()
    }
}
