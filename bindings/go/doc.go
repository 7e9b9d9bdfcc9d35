// Package fastrpc is the Go binding of the fastrpc engine: fast RPC over one connection,
// batched, compressed (flate or snappy) and optionally encrypted (TLS), wire-compatible with
// github.com/valyala/fastrpc and its tlv messages.
//
// A Server answers each request with a Handler running in a goroutine of its own; a Client
// calls with Call (the context's deadline is the call's deadline) or sends fire-and-forget
// requests with Send. Failures are *Error values matching one of the sentinel errors
// (ErrTimeout, ErrClosed, ...) with errors.Is.
//
// The engine is the C library libfastrpc (a Rust library with a C ABI), linked with cgo. No
// OS thread waits per call or per request: calls complete into one completion queue per
// client and requests arrive in one queue per server, each drained in batches by a poller
// goroutine. See README.md for installation, options, errors and the threading model.
package fastrpc
