package fastrpc

// Options for clients and servers: Go-style functional options, one per engine option, with
// the reference's names and defaults. They are collected in Go, then applied to a C config
// builder when the client or server is created; a refused value makes NewClient/NewServer
// fail with ErrInvalidArgument (or ErrTLS for unusable certificates) naming the option.

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"math"
	"runtime"
	"time"
	"unsafe"
)

// Compression is how one side compresses what it sends (the wire codes of the protocol).
type Compression uint32

const (
	// CompressFlate is raw DEFLATE, sync-flushed per batch: the default, as in the reference.
	CompressFlate Compression = 0
	// CompressNone sends plain bytes.
	CompressNone Compression = 1
	// CompressSnappy is the snappy framing format.
	CompressSnappy Compression = 2
)

func (c Compression) String() string {
	switch c {
	case CompressFlate:
		return "flate"
	case CompressNone:
		return "none"
	case CompressSnappy:
		return "snappy"
	}
	return fmt.Sprintf("Compression(%d)", uint32(c))
}

// setter is one option applied to a C builder; name is the Go option, for error messages.
type setter struct {
	name  string
	apply func() C.fastrpc_status
}

// durationMs converts d to whole milliseconds, rounding up (so 1ns is 1ms, not "none").
// durationMs rounds d up to whole milliseconds; every C duration is a uint32_t, so d must
// be between 0 and about 49 days.
func durationMs(d time.Duration) (uint32, bool) {
	if d < 0 {
		return 0, false
	}
	ms := uint64((d + time.Millisecond - 1) / time.Millisecond)
	if ms > math.MaxUint32 {
		return 0, false
	}
	return uint32(ms), true
}

// durationUs rounds d up to whole microseconds, at most about 71 minutes (uint32_t).
func durationUs(d time.Duration) (uint32, bool) {
	if d < 0 {
		return 0, false
	}
	us := uint64((d + time.Microsecond - 1) / time.Microsecond)
	if us > math.MaxUint32 {
		return 0, false
	}
	return uint32(us), true
}

func sizeArg(n int) (C.size_t, bool) {
	if n < 0 {
		return 0, false
	}
	return C.size_t(n), true
}

// goInvalidValue is what a setter returns for a value refused on the Go side (negative
// sizes and durations, out-of-range levels): no library message describes it.
const goInvalidValue C.fastrpc_status = 0xFFFFFFFF

// applySetters runs each setter with the goroutine locked to its thread, so that a refusal's
// fastrpc_last_error_message is this one's.
func applySetters(ss []setter) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, s := range ss {
		st := s.apply()
		if st == goInvalidValue {
			return invalid(s.name + ": the value is out of range (negative or too large)")
		}
		if st != C.FASTRPC_STATUS_OK {
			err := cStatusErr(st).(*Error)
			err.Message = fmt.Sprintf("fastrpc: %s: %s", s.name, err.Message)
			return err
		}
	}
	return nil
}

// msSetter, usSetter and sizeSetter adapt a builder's setter of milliseconds, microseconds
// or a size to a Go duration or int: a negative or too large one is refused on the Go side.
// B is the builder's pointer type (a C struct pointed to is incomplete in Go).
func msSetter[B any](d time.Duration, f func(B, C.uint32_t) C.fastrpc_status) func(B) C.fastrpc_status {
	return func(b B) C.fastrpc_status {
		ms, ok := durationMs(d)
		if !ok {
			return goInvalidValue
		}
		return f(b, C.uint32_t(ms))
	}
}

func usSetter[B any](d time.Duration, f func(B, C.uint32_t) C.fastrpc_status) func(B) C.fastrpc_status {
	return func(b B) C.fastrpc_status {
		us, ok := durationUs(d)
		if !ok {
			return goInvalidValue
		}
		return f(b, C.uint32_t(us))
	}
}

func sizeSetter[B any](n int, f func(B, C.size_t) C.fastrpc_status) func(B) C.fastrpc_status {
	return func(b B) C.fastrpc_status {
		s, ok := sizeArg(n)
		if !ok {
			return goInvalidValue
		}
		return f(b, s)
	}
}

// ---- client options ----

// ClientOption configures a Client (see NewClient).
type ClientOption func(*clientConfig)

type clientConfig struct {
	setters []setter
	b       *C.fastrpc_client_config_builder
	// WithPollerSpin (Go only): the window of the poller's short waits, if given.
	pollerSpin    time.Duration
	pollerSpinSet bool
}

func (c *clientConfig) add(name string, f func(b *C.fastrpc_client_config_builder) C.fastrpc_status) {
	c.setters = append(c.setters, setter{name, func() C.fastrpc_status { return f(c.b) }})
}

func (c *clientConfig) ms(name string, d time.Duration, f func(*C.fastrpc_client_config_builder, C.uint32_t) C.fastrpc_status) {
	c.add(name, msSetter(d, f))
}

func (c *clientConfig) us(name string, d time.Duration, f func(*C.fastrpc_client_config_builder, C.uint32_t) C.fastrpc_status) {
	c.add(name, usSetter(d, f))
}

func (c *clientConfig) size(name string, n int, f func(*C.fastrpc_client_config_builder, C.size_t) C.fastrpc_status) {
	c.add(name, sizeSetter(n, f))
}

// WithCompression sets the compression of requests (default CompressFlate). The server
// chooses the compression of its responses.
func WithCompression(c Compression) ClientOption {
	return func(cfg *clientConfig) {
		cfg.add("WithCompression", func(b *C.fastrpc_client_config_builder) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_compression(b, C.fastrpc_compression(c))
		})
	}
}

// WithFlateLevel sets the DEFLATE level 0-9 used with CompressFlate (default 6).
func WithFlateLevel(level int) ClientOption {
	return func(cfg *clientConfig) {
		cfg.add("WithFlateLevel", func(b *C.fastrpc_client_config_builder) C.fastrpc_status {
			if level < 0 || level > math.MaxUint32 {
				return goInvalidValue
			}
			return C.fastrpc_client_config_builder_set_flate_level(b, C.uint32_t(level))
		})
	}
}

// WithSniffHeader sets the bytes written first on each connection; the server must be
// configured with the same (default: none).
func WithSniffHeader(h string) ClientOption {
	return func(cfg *clientConfig) {
		cfg.add("WithSniffHeader", func(b *C.fastrpc_client_config_builder) C.fastrpc_status {
			p := []byte(h)
			return C.fastrpc_client_config_builder_set_sniff_header(b, bytesPtr(p), C.size_t(len(p)))
		})
	}
}

// WithProtocolVersion sets the protocol version byte both sides must agree on (default 0).
func WithProtocolVersion(v byte) ClientOption {
	return func(cfg *clientConfig) {
		cfg.add("WithProtocolVersion", func(b *C.fastrpc_client_config_builder) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_protocol_version(b, C.uint8_t(v))
		})
	}
}

// WithMaxPendingRequests sets how many calls may wait at once (default 1000); one more
// fails at once with ErrOverflow.
func WithMaxPendingRequests(n int) ClientOption {
	return func(cfg *clientConfig) {
		cfg.size("WithMaxPendingRequests", n, func(b *C.fastrpc_client_config_builder, v C.size_t) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_max_pending_requests(b, v)
		})
	}
}

// WithMaxQueuedBytes bounds the bytes of requests waiting for the writer (default 32 MiB);
// a call or send that would pass it fails at once with ErrOverflow, so a server that stops
// reading cannot grow the client's memory.
func WithMaxQueuedBytes(n int) ClientOption {
	return func(cfg *clientConfig) {
		cfg.size("WithMaxQueuedBytes", n, func(b *C.fastrpc_client_config_builder, v C.size_t) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_max_queued_bytes(b, v)
		})
	}
}

// WithPrioritizeNewRequests makes a new call at the pending limit fail the oldest queued
// call (with ErrOverflow) instead of failing itself.
func WithPrioritizeNewRequests(on bool) ClientOption {
	return func(cfg *clientConfig) {
		cfg.add("WithPrioritizeNewRequests", func(b *C.fastrpc_client_config_builder) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_prioritize_new_requests(b, C.bool(on))
		})
	}
}

// WithMaxBatchDelay sets how long a ready request may wait for others to share its write
// (default 0: write at once when idle). Microsecond resolution.
func WithMaxBatchDelay(d time.Duration) ClientOption {
	return func(cfg *clientConfig) {
		cfg.us("WithMaxBatchDelay", d, func(b *C.fastrpc_client_config_builder, v C.uint32_t) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_max_batch_delay_us(b, v)
		})
	}
}

// WithReadSpin is a low-latency option (default 0: off, although the engine's own default
// is 50µs: on 2 cores a spinning library thread took the CPU the Go callers need): while a
// lone call waits, the library's connection reader keeps its thread busy for up to d waiting
// for its response instead of letting it sleep (waking a sleeping, halted CPU of a VM takes
// tens of µs). It costs CPU only while a lone call waits, none when idle or with more calls
// in flight. At most 10ms; microsecond resolution. See README.md "Threading model" for what
// it measured.
func WithReadSpin(d time.Duration) ClientOption {
	return func(cfg *clientConfig) {
		cfg.us("WithReadSpin", d, func(b *C.fastrpc_client_config_builder, v C.uint32_t) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_read_spin_us(b, v)
		})
	}
}

// WithPollerSpin sets how long the client's poller goroutine, serving 2 to 32 calls in
// flight, keeps reading (yielding to other goroutines between reads) before it parks in Go's
// netpoller, and keeps its role when no call is left before it gives it up (default 100µs;
// 0: off; at most 10ms). It trades CPU for latency: a parked poller is woken through Go's
// scheduler and, on a VM, a halted CPU. A window that runs out backs off (spin.go), so a slow
// server costs about one window per 65 waits. While it yields, the P it runs on does not
// poll the network for the program's other goroutines (other Ps do), so without this option
// the waits are made only while GOMAXPROCS is more than 1; given, they are made whatever
// GOMAXPROCS is. See README.md "Short waits" for what it measured. FASTRPC_GO_SPIN_US
// (microseconds) sets it when this option is not given.
func WithPollerSpin(d time.Duration) ClientOption {
	return func(cfg *clientConfig) { cfg.pollerSpin, cfg.pollerSpinSet = d, true }
}

// WithRequestTimeout sets the deadline of calls whose context has none (default 10s).
func WithRequestTimeout(d time.Duration) ClientOption {
	return func(cfg *clientConfig) {
		cfg.ms("WithRequestTimeout", d, func(b *C.fastrpc_client_config_builder, v C.uint32_t) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_request_timeout_ms(b, v)
		})
	}
}

// WithReadTimeout bounds reading one whole response frame, and so the idle lifetime of the
// connection (default 0: none).
func WithReadTimeout(d time.Duration) ClientOption {
	return func(cfg *clientConfig) {
		cfg.ms("WithReadTimeout", d, func(b *C.fastrpc_client_config_builder, v C.uint32_t) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_read_timeout_ms(b, v)
		})
	}
}

// WithWriteTimeout bounds writing one batch (default 0: none).
func WithWriteTimeout(d time.Duration) ClientOption {
	return func(cfg *clientConfig) {
		cfg.ms("WithWriteTimeout", d, func(b *C.fastrpc_client_config_builder, v C.uint32_t) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_write_timeout_ms(b, v)
		})
	}
}

// WithReadBufferSize sets the socket read size in bytes (default 64 KiB).
func WithReadBufferSize(n int) ClientOption {
	return func(cfg *clientConfig) {
		cfg.size("WithReadBufferSize", n, func(b *C.fastrpc_client_config_builder, v C.size_t) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_read_buffer_size(b, v)
		})
	}
}

// WithWriteBufferSize sets the batch buffer size in bytes (default 64 KiB); a delayed batch
// is flushed early when full.
func WithWriteBufferSize(n int) ClientOption {
	return func(cfg *clientConfig) {
		cfg.size("WithWriteBufferSize", n, func(b *C.fastrpc_client_config_builder, v C.size_t) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_write_buffer_size(b, v)
		})
	}
}

// WithMaxFrameSize sets the largest name or value in bytes, both directions (default 1 MiB,
// the reference's limit).
func WithMaxFrameSize(n int) ClientOption {
	return func(cfg *clientConfig) {
		cfg.size("WithMaxFrameSize", n, func(b *C.fastrpc_client_config_builder, v C.size_t) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_max_frame_size(b, v)
		})
	}
}

// WithHandshakeTimeout bounds the connection handshake, TLS included (default 3s).
func WithHandshakeTimeout(d time.Duration) ClientOption {
	return func(cfg *clientConfig) {
		cfg.ms("WithHandshakeTimeout", d, func(b *C.fastrpc_client_config_builder, v C.uint32_t) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_handshake_timeout_ms(b, v)
		})
	}
}

// WithReconnectBackoff sets the wait between connect attempts: it starts at min and
// doubles, with jitter, up to max (default 20ms and 1s). Meanwhile calls fail fast with
// ErrConnect.
func WithReconnectBackoff(min, max time.Duration) ClientOption {
	return func(cfg *clientConfig) {
		cfg.add("WithReconnectBackoff", func(b *C.fastrpc_client_config_builder) C.fastrpc_status {
			lo, ok1 := durationMs(min)
			hi, ok2 := durationMs(max)
			if !ok1 || !ok2 {
				return goInvalidValue
			}
			return C.fastrpc_client_config_builder_set_reconnect_backoff_ms(b, C.uint32_t(lo), C.uint32_t(hi))
		})
	}
}

// WithTLS turns TLS on, trusting the CA certificates in caPEM to verify the server.
// serverName is the name the server's certificate must carry ("": the host of the address).
func WithTLS(caPEM []byte, serverName string) ClientOption {
	return func(cfg *clientConfig) {
		cfg.add("WithTLS", func(b *C.fastrpc_client_config_builder) C.fastrpc_status {
			st := C.fastrpc_client_config_builder_set_tls_ca_pem(b, bytesPtr(caPEM), C.size_t(len(caPEM)))
			runtime.KeepAlive(caPEM)
			if st != C.FASTRPC_STATUS_OK || serverName == "" {
				return st
			}
			cs := C.CString(serverName)
			defer C.free(unsafe.Pointer(cs))
			return C.fastrpc_client_config_builder_set_tls_server_name(b, cs)
		})
	}
}

// WithClientCertificate presents this certificate chain and private key (PEM) to servers
// that require mutual TLS.
func WithClientCertificate(certPEM, keyPEM []byte) ClientOption {
	return func(cfg *clientConfig) {
		cfg.add("WithClientCertificate", func(b *C.fastrpc_client_config_builder) C.fastrpc_status {
			st := C.fastrpc_client_config_builder_set_tls_client_cert_pem(b,
				bytesPtr(certPEM), C.size_t(len(certPEM)), bytesPtr(keyPEM), C.size_t(len(keyPEM)))
			runtime.KeepAlive(certPEM)
			runtime.KeepAlive(keyPEM)
			return st
		})
	}
}

// WithInsecureSkipVerifyForTestingOnly turns TLS on and accepts ANY server certificate: the
// connection is encrypted but the server is not authenticated. For tests only.
func WithInsecureSkipVerifyForTestingOnly() ClientOption {
	return func(cfg *clientConfig) {
		cfg.add("WithInsecureSkipVerifyForTestingOnly", func(b *C.fastrpc_client_config_builder) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_tls_insecure_skip_verify_for_testing_only(b, C.bool(true))
		})
	}
}

// ---- server options ----

// ServerOption configures a Server (see NewServer).
type ServerOption func(*serverConfig)

type serverConfig struct {
	setters      []setter
	b            *C.fastrpc_server_config_builder
	pollers      int
	errorHandler func(*Request, error)
}

func (c *serverConfig) add(name string, f func(b *C.fastrpc_server_config_builder) C.fastrpc_status) {
	c.setters = append(c.setters, setter{name, func() C.fastrpc_status { return f(c.b) }})
}

func (c *serverConfig) bytes(name string, data []byte, f func(*C.fastrpc_server_config_builder, *C.uint8_t, C.size_t) C.fastrpc_status) {
	c.add(name, func(b *C.fastrpc_server_config_builder) C.fastrpc_status {
		st := f(b, bytesPtr(data), C.size_t(len(data)))
		runtime.KeepAlive(data)
		return st
	})
}

func (c *serverConfig) ms(name string, d time.Duration, f func(*C.fastrpc_server_config_builder, C.uint32_t) C.fastrpc_status) {
	c.add(name, msSetter(d, f))
}

func (c *serverConfig) us(name string, d time.Duration, f func(*C.fastrpc_server_config_builder, C.uint32_t) C.fastrpc_status) {
	c.add(name, usSetter(d, f))
}

func (c *serverConfig) size(name string, n int, f func(*C.fastrpc_server_config_builder, C.size_t) C.fastrpc_status) {
	c.add(name, sizeSetter(n, f))
}

// WithServerCompression sets the compression of responses (default CompressFlate).
func WithServerCompression(c Compression) ServerOption {
	return func(cfg *serverConfig) {
		cfg.add("WithServerCompression", func(b *C.fastrpc_server_config_builder) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_compression(b, C.fastrpc_compression(c))
		})
	}
}

// WithServerFlateLevel sets the DEFLATE level 0-9 used with CompressFlate (default 6).
func WithServerFlateLevel(level int) ServerOption {
	return func(cfg *serverConfig) {
		cfg.add("WithServerFlateLevel", func(b *C.fastrpc_server_config_builder) C.fastrpc_status {
			if level < 0 || level > math.MaxUint32 {
				return goInvalidValue
			}
			return C.fastrpc_server_config_builder_set_flate_level(b, C.uint32_t(level))
		})
	}
}

// WithServerSniffHeader sets the bytes expected first on each connection and written back
// (default: none).
func WithServerSniffHeader(h string) ServerOption {
	return func(cfg *serverConfig) {
		cfg.bytes("WithServerSniffHeader", []byte(h), func(b *C.fastrpc_server_config_builder, p *C.uint8_t, n C.size_t) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_sniff_header(b, p, n)
		})
	}
}

// WithServerProtocolVersion sets the protocol version byte (default 0).
func WithServerProtocolVersion(v byte) ServerOption {
	return func(cfg *serverConfig) {
		cfg.add("WithServerProtocolVersion", func(b *C.fastrpc_server_config_builder) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_protocol_version(b, C.uint8_t(v))
		})
	}
}

// WithConcurrency sets how many handlers may run at once over all connections (default
// 10000); over it a request is answered at once with the concurrency-limit reply.
func WithConcurrency(n int) ServerOption {
	return func(cfg *serverConfig) {
		cfg.size("WithConcurrency", n, func(b *C.fastrpc_server_config_builder, s C.size_t) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_concurrency(b, s)
		})
	}
}

// WithConcurrencyLimitReply sets the response value sent, instead of running the handler,
// when Concurrency handlers already run (default empty).
func WithConcurrencyLimitReply(v []byte) ServerOption {
	return func(cfg *serverConfig) {
		cfg.bytes("WithConcurrencyLimitReply", v, func(b *C.fastrpc_server_config_builder, p *C.uint8_t, n C.size_t) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_concurrency_limit_reply(b, p, n)
		})
	}
}

// WithErrorReply sets the response value sent when a handler returns an error or panics
// (default empty). The protocol has no error frame: the client receives this value as a
// normal response.
func WithErrorReply(v []byte) ServerOption {
	return func(cfg *serverConfig) {
		cfg.bytes("WithErrorReply", v, func(b *C.fastrpc_server_config_builder, p *C.uint8_t, n C.size_t) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_error_reply(b, p, n)
		})
	}
}

// WithPipelineRequests runs each connection's requests one after another, in order (the
// next handler starts when the previous one has answered).
func WithPipelineRequests(on bool) ServerOption {
	return func(cfg *serverConfig) {
		cfg.add("WithPipelineRequests", func(b *C.fastrpc_server_config_builder) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_pipeline_requests(b, C.bool(on))
		})
	}
}

// WithServerMaxBatchDelay sets how long a ready response may wait for others to share its
// write (default 0). Microsecond resolution.
func WithServerMaxBatchDelay(d time.Duration) ServerOption {
	return func(cfg *serverConfig) {
		cfg.us("WithServerMaxBatchDelay", d, func(b *C.fastrpc_server_config_builder, v C.uint32_t) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_max_batch_delay_us(b, v)
		})
	}
}

// WithServerReadSpin is the server's low-latency option, as WithReadSpin (default: the
// engine's, 50µs; 0 turns it off): after a read that brought a single request, a
// connection's reader keeps its library thread busy for up to d waiting for the next one.
// At most 10ms; microsecond resolution.
func WithServerReadSpin(d time.Duration) ServerOption {
	return func(cfg *serverConfig) {
		cfg.us("WithServerReadSpin", d, func(b *C.fastrpc_server_config_builder, v C.uint32_t) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_read_spin_us(b, v)
		})
	}
}

// WithServerReadTimeout bounds reading one whole request frame, and so the idle lifetime
// of a connection (default 0: none).
func WithServerReadTimeout(d time.Duration) ServerOption {
	return func(cfg *serverConfig) {
		cfg.ms("WithServerReadTimeout", d, func(b *C.fastrpc_server_config_builder, v C.uint32_t) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_read_timeout_ms(b, v)
		})
	}
}

// WithServerIdleTimeout closes a connection with no request for d and none running
// (default 0: idle connections are kept).
func WithServerIdleTimeout(d time.Duration) ServerOption {
	return func(cfg *serverConfig) {
		cfg.ms("WithServerIdleTimeout", d, func(b *C.fastrpc_server_config_builder, v C.uint32_t) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_idle_timeout_ms(b, v)
		})
	}
}

// WithServerWriteTimeout bounds writing one batch (default 0: none).
func WithServerWriteTimeout(d time.Duration) ServerOption {
	return func(cfg *serverConfig) {
		cfg.ms("WithServerWriteTimeout", d, func(b *C.fastrpc_server_config_builder, v C.uint32_t) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_write_timeout_ms(b, v)
		})
	}
}

// WithServerHandshakeTimeout bounds the connection handshake, TLS included (default 3s).
func WithServerHandshakeTimeout(d time.Duration) ServerOption {
	return func(cfg *serverConfig) {
		cfg.ms("WithServerHandshakeTimeout", d, func(b *C.fastrpc_server_config_builder, v C.uint32_t) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_handshake_timeout_ms(b, v)
		})
	}
}

// WithServerReadBufferSize sets the socket read size in bytes (default 64 KiB).
func WithServerReadBufferSize(n int) ServerOption {
	return func(cfg *serverConfig) {
		cfg.size("WithServerReadBufferSize", n, func(b *C.fastrpc_server_config_builder, s C.size_t) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_read_buffer_size(b, s)
		})
	}
}

// WithServerWriteBufferSize sets the batch buffer size in bytes (default 64 KiB).
func WithServerWriteBufferSize(n int) ServerOption {
	return func(cfg *serverConfig) {
		cfg.size("WithServerWriteBufferSize", n, func(b *C.fastrpc_server_config_builder, s C.size_t) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_write_buffer_size(b, s)
		})
	}
}

// WithServerMaxFrameSize sets the largest name or value in bytes, both directions (default
// 1 MiB).
func WithServerMaxFrameSize(n int) ServerOption {
	return func(cfg *serverConfig) {
		cfg.size("WithServerMaxFrameSize", n, func(b *C.fastrpc_server_config_builder, s C.size_t) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_max_frame_size(b, s)
		})
	}
}

// WithServerTLS turns TLS on with this certificate chain and private key (PEM). Clients
// that do not ask for TLS are still served in plaintext unless WithRequireTLS or
// WithClientCA is given.
func WithServerTLS(certPEM, keyPEM []byte) ServerOption {
	return func(cfg *serverConfig) {
		cfg.add("WithServerTLS", func(b *C.fastrpc_server_config_builder) C.fastrpc_status {
			st := C.fastrpc_server_config_builder_set_tls_cert_pem(b,
				bytesPtr(certPEM), C.size_t(len(certPEM)), bytesPtr(keyPEM), C.size_t(len(keyPEM)))
			runtime.KeepAlive(certPEM)
			runtime.KeepAlive(keyPEM)
			return st
		})
	}
}

// WithClientCA requires mutual TLS: clients must present a certificate signed by one of the
// CAs in pem. It implies WithRequireTLS: a client that does not ask for TLS is refused, so
// no option combination serves plaintext while asking for client certificates.
func WithClientCA(pem []byte) ServerOption {
	return func(cfg *serverConfig) {
		cfg.bytes("WithClientCA", pem, func(b *C.fastrpc_server_config_builder, p *C.uint8_t, n C.size_t) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_tls_client_ca_pem(b, p, n)
		})
	}
}

// WithRequireTLS refuses plaintext clients (WithServerTLS is needed too).
func WithRequireTLS() ServerOption {
	return func(cfg *serverConfig) {
		cfg.add("WithRequireTLS", func(b *C.fastrpc_server_config_builder) C.fastrpc_status {
			return C.fastrpc_server_config_builder_set_require_tls(b, C.bool(true))
		})
	}
}

// WithPollers sets how many goroutines take requests from the library's queue (default 2).
// Each runs every request's handler in a goroutine of its own, so this bounds only the
// hand-over, not the handlers' concurrency.
func WithPollers(n int) ServerOption {
	return func(cfg *serverConfig) { cfg.pollers = n }
}

// WithErrorHandler is called (from the handler's goroutine) for each handler that returned
// an error or panicked (the error is then a *PanicError), and for each answer the library
// refused (for example ErrTooLarge). The client got the error reply in each case.
func WithErrorHandler(f func(req *Request, err error)) ServerOption {
	return func(cfg *serverConfig) { cfg.errorHandler = f }
}
