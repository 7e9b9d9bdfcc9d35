//! One request as the handler sees it: [`Call`] owns the request's name and value (in pooled
//! buffers) and is answered exactly once, at once or later from any thread or task, by
//! [`Call::reply`]. Dropping it unanswered (or a handler panic) sends the configured
//! `error_reply`, so no client call is left waiting.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::error::{Error, ErrorKind};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use crate::protocol::frame::{encode_response, RESPONSE_OVERHEAD};

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

    /// Whether the request came over TLS.
    pub fn is_tls(&self) -> bool {
        self.conn.tls_peer.is_some()
    }

    /// The client's certificate (DER), verified against the server's client CAs: present on
    /// mutual-TLS connections, `None` otherwise.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.conn.tls_peer.as_ref()?.as_deref()
    }

    /// The client certificate's subject as text (`CN=client,O=Example`), or `None` without
    /// a client certificate.
    pub fn peer_subject(&self) -> Option<String> {
        self.peer_certificate().map(crate::x509::subject)
    }

    /// The client certificate's subject alternative names as text
    /// (`DNS:host,IP:10.0.0.1`; empty when it has none), or `None` without a certificate.
    pub fn peer_subject_alt_names(&self) -> Option<String> {
        self.peer_certificate().map(crate::x509::subject_alt_names)
    }

    /// Sends `value` as the response. Errors: [`ErrorKind::TooLarge`] when `value` exceeds
    /// `max_frame_size` (the configured `error_reply` is sent instead), and
    /// [`ErrorKind::Closed`] when the connection is gone (the reply is dropped). Either way the
    /// call is answered and over.
    pub fn reply(mut self, value: &[u8]) -> Result<(), Error> {
        self.finish::<NoBuild>(Reply::Bytes(value))
    }

    /// Builds the response in place: `build(name, value, out)` appends the response value
    /// to `out`, which is the connection's output buffer itself, so the reply is neither
    /// copied nor allocated. `build` runs under the connection's output lock: keep it to
    /// appending bytes. It is not run when the reply would be discarded (fire-and-forget, or
    /// the connection is gone). Errors as [`Call::reply`]; if `build` panics, `error_reply`
    /// is sent and the panic goes on.
    pub fn reply_with<F>(mut self, build: F) -> Result<(), Error>
    where
        F: FnOnce(&[u8], &[u8], &mut Vec<u8>),
    {
        self.finish(Reply::With(build))
    }

    fn finish<F>(&mut self, reply: Reply<'_, F>) -> Result<(), Error>
    where
        F: FnOnce(&[u8], &[u8], &mut Vec<u8>),
    {
        let Some(slot) = self.slot.take() else {
            return Ok(());
        };
        let conn = &self.conn;
        let server = &conn.server;
        let max = server.cfg.max_frame_size;
        let too_large = |n: usize| {
            server.counters.errors.add(ErrorKind::TooLarge, 1);
            Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "reply of {n} bytes exceeds max_frame_size {max}; error_reply sent instead"
                ),
            ))
        };
        let mut result = Ok(());
        let mut panic = None;
        let mut out = conn.lock();
        let mut writer = None;
        // A response frame went into the output (not a fire-and-forget, not a closed
        // connection): what the `responses` counter counts.
        let queued = self.id != 0 && !out.closed;
        if self.id != 0 {
            if out.closed {
                result = Err(Error::fixed(
                    ErrorKind::Closed,
                    "the connection closed before the reply; it was dropped",
                ));
            } else {
                match reply {
                    Reply::Bytes(v) if v.len() > max => {
                        result = too_large(v.len());
                        encode_response(&mut out.buf, self.id, &server.cfg.error_reply);
                    }
                    Reply::Bytes(v) => encode_response(&mut out.buf, self.id, v),
                    Reply::Unanswered => {
                        encode_response(&mut out.buf, self.id, &server.cfg.error_reply)
                    }
                    Reply::With(build) => {
                        let start = out.buf.len();
                        out.buf.extend_from_slice(&self.id.to_le_bytes());
                        out.buf.extend_from_slice(&[0; 4]);
                        let built = catch_unwind(AssertUnwindSafe(|| {
                            build(&slot.name, &slot.value, &mut out.buf)
                        }));
                        let n = out.buf.len() - start - RESPONSE_OVERHEAD;
                        if let Err(p) = built {
                            out.buf.truncate(start);
                            encode_response(&mut out.buf, self.id, &server.cfg.error_reply);
                            panic = Some(p);
                        } else if n > max {
                            out.buf.truncate(start);
                            result = too_large(n);
                            encode_response(&mut out.buf, self.id, &server.cfg.error_reply);
                        } else {
                            out.buf[start + 4..start + 8]
                                .copy_from_slice(&(n as u32).to_le_bytes());
                        }
                    }
                }
                out.frames += 1;
                writer = out.writer_waker.take();
            }
        }
        out.pool.push(slot);
        out.outstanding -= 1;
        if !server.cfg.idle_timeout.is_zero() {
            out.last_answer = Some(tokio::time::Instant::now());
        }
        if writer.is_none() && out.reading_done && out.outstanding == 0 {
            // The last call of a connection whose reader is done: the writer may end now
            // (nothing else would wake it when this reply adds no frame).
            writer = out.writer_waker.take();
        }
        let reader = if out.outstanding == 0 || !out.pipeline {
            out.reader_waker.take()
        } else {
            None
        };
        // A lone reply (nothing else outstanding or waiting to be written, the writer
        // parked, no batch delay) from a thread outside the runtime writes itself
        // (`write.rs`): keeping the writer's waker keeps the writer parked.
        let lone = writer.is_some()
            && queued
            && out.frames == 1
            && out.outstanding == 0
            && !out.writing
            && !out.reading_done
            && server.cfg.max_batch_delay.is_zero()
            && tokio::runtime::Handle::try_current().is_err();
        drop(out);
        server.running.fetch_sub(1, Relaxed);
        if queued {
            server.counters.responses.fetch_add(1, Relaxed);
        }
        if let Some(w) = writer {
            if lone {
                super::write::write_lone(conn, w);
            } else {
                w.wake();
            }
        }
        if let Some(w) = reader {
            w.wake();
        }
        if let Some(p) = panic {
            resume_unwind(p);
        }
        result
    }
}

/// What a call is answered with.
enum Reply<'a, F> {
    Bytes(&'a [u8]),
    With(F),
    Unanswered,
}

type NoBuild = fn(&[u8], &[u8], &mut Vec<u8>);

impl Drop for Call {
    fn drop(&mut self) {
        if self.slot.is_some() {
            if self.id != 0 {
                // A fire-and-forget request wants no answer: dropping it is its normal end.
                self.conn.server.counters.unanswered.fetch_add(1, Relaxed);
            }
            let _ = self.finish::<NoBuild>(Reply::Unanswered);
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
