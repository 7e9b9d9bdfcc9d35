//! Helpers of the tests that complete calls through sinks and read on the caller's thread
//! (`read_now.rs`, `caller_reads.rs`).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use fastrpc::{Completion, Error, ErrorKind, TlsClientConfig, TlsServerConfig};

/// Runs `f` on a thread; fails the test if it takes more than `secs` seconds.
pub fn within(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => t.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p)
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("the test did not finish within {secs} s")
        }
    }
}

/// A multi-threaded runtime with `workers` worker threads and every driver.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// The echo handler of these tests: answers `name ":" value`.
pub fn echo(call: fastrpc::Call) {
    let mut v = call.name().to_vec();
    v.push(b':');
    v.extend_from_slice(call.value());
    let _ = call.reply(&v);
}

/// Waits up to `ms` for `fd` to be readable.
pub fn readable_within(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n == 1 && p.revents & libc::POLLIN != 0
}

/// A call's outcome: the response, or the error's kind and message.
pub type Outcome = Result<Vec<u8>, (ErrorKind, String)>;

/// Records every outcome by tag.
#[derive(Default)]
pub struct Sink {
    pub got: Mutex<Vec<(u128, Outcome)>>,
    pub n: AtomicUsize,
}

impl Completion for Sink {
    fn complete(&self, tag: u128, r: Result<&[u8], &Error>) {
        let r = r
            .map(|v| v.to_vec())
            .map_err(|e| (e.kind(), e.message().to_string()));
        self.got.lock().unwrap().push((tag, r));
        self.n.fetch_add(1, SeqCst);
    }
}

/// A server and a client TLS configuration of the test PKI.
pub fn pki_tls() -> (TlsServerConfig, TlsClientConfig) {
    let p = super::certs::test_pki();
    (
        TlsServerConfig {
            cert_pem: p.server_cert_pem.as_bytes().to_vec(),
            key_pem: p.server_key_pem.as_bytes().to_vec(),
            ..Default::default()
        },
        TlsClientConfig {
            ca_pem: Some(p.ca_pem.as_bytes().to_vec()),
            ..Default::default()
        },
    )
}

/// The test PKI's server and client TLS configurations when `tls`, else none.
pub fn tls_if(tls: bool) -> (Option<TlsServerConfig>, Option<TlsClientConfig>) {
    if tls {
        let (s, c) = pki_tls();
        (Some(s), Some(c))
    } else {
        (None, None)
    }
}
