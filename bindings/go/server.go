package fastrpc

// The server: the library listens and reads; each request goes into the server's queue
// (fastrpc_server_new_queued), a few poller goroutines, waiting in Go's netpoller on the
// queue's eventfd (poller.go), take requests in batches (one cgo call per batch), and each
// request's handler runs in a goroutine of its own, which answers with fastrpc_request_reply
// and frees the request. A slow handler costs a parked goroutine, not an
// OS thread.

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Handler serves one request and returns the response value. It runs in a goroutine of its
// own, concurrently with other handlers (one after another per connection with
// WithPipelineRequests). An error or a panic sends the server's error reply (see
// WithErrorReply; the protocol has no error frame) and is reported to WithErrorHandler; the
// server keeps serving. ctx is cancelled when the server is closed (or its Shutdown's ctx is
// done). For a fire-and-forget request (req.IsNowait()) the response is discarded.
type Handler func(ctx context.Context, req *Request) ([]byte, error)

// Request is one request being served. Its name and value are copies owned by Go: the
// handler may keep them after it returns.
type Request struct {
	name  []byte
	value []byte
	id    uint32

	// The C request, for the peer accessors, while the handler runs; nil once it returned
	// (the request is then answered and freed).
	mu sync.Mutex
	c  *C.fastrpc_request
}

// Name is the request's name (often a method name).
func (r *Request) Name() []byte { return r.name }

// Value is the request's value.
func (r *Request) Value() []byte { return r.value }

// ID is the request id on its connection (0 for a fire-and-forget request).
func (r *Request) ID() uint32 { return r.id }

// IsNowait reports whether the client wants no response (request id 0).
func (r *Request) IsNowait() bool { return r.id == 0 }

// PeerAddr is the client's address ("127.0.0.1:50123", or "unix:..." for a Unix socket).
// Like the other peer accessors it answers while the handler runs; after the handler
// returned it gives the zero value.
func (r *Request) PeerAddr() string {
	return r.text(func(c *C.fastrpc_request, buf *C.char, n C.size_t, out *C.size_t) C.fastrpc_status {
		return C.fastrpc_request_peer_addr(c, buf, n, out)
	})
}

// IsTLS reports whether the request came over TLS.
func (r *Request) IsTLS() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c == nil {
		return false
	}
	var tls C.bool
	if C.fastrpc_request_is_tls(r.c, &tls) != C.FASTRPC_STATUS_OK {
		return false
	}
	return bool(tls)
}

// PeerCertificate is the client's certificate (DER, a copy), verified by the server against
// its client CAs: present with mutual TLS (WithClientCA), nil otherwise.
func (r *Request) PeerCertificate() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c == nil {
		return nil
	}
	var data *C.uint8_t
	var n C.size_t
	if C.fastrpc_request_peer_certificate(r.c, &data, &n) != C.FASTRPC_STATUS_OK || n == 0 {
		return nil
	}
	return C.GoBytes(unsafe.Pointer(data), C.int(n))
}

// PeerSubject is the client certificate's subject as text ("CN=client,O=Example"), or ""
// without a client certificate.
func (r *Request) PeerSubject() string {
	return r.text(func(c *C.fastrpc_request, buf *C.char, n C.size_t, out *C.size_t) C.fastrpc_status {
		return C.fastrpc_request_peer_subject(c, buf, n, out)
	})
}

// PeerSubjectAltNames is the client certificate's subject alternative names as text
// ("DNS:host,IP:10.0.0.1"), or "" without a client certificate or SANs.
func (r *Request) PeerSubjectAltNames() string {
	return r.text(func(c *C.fastrpc_request, buf *C.char, n C.size_t, out *C.size_t) C.fastrpc_status {
		return C.fastrpc_request_peer_subject_alt_names(c, buf, n, out)
	})
}

// text measures a text accessor with (NULL, 0), then fills a buffer of that size.
func (r *Request) text(f func(*C.fastrpc_request, *C.char, C.size_t, *C.size_t) C.fastrpc_status) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c == nil {
		return ""
	}
	var n C.size_t
	if f(r.c, nil, 0, &n) != C.FASTRPC_STATUS_OK || n == 0 {
		return ""
	}
	buf := make([]byte, int(n)+1)
	if f(r.c, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n) != C.FASTRPC_STATUS_OK {
		return ""
	}
	return string(buf[:n])
}

// PanicError is what WithErrorHandler receives for a handler that panicked.
type PanicError struct {
	Value any    // what the handler panicked with
	Stack []byte // the handler goroutine's stack at the panic
}

func (e *PanicError) Error() string { return fmt.Sprintf("fastrpc: handler panicked: %v", e.Value) }

const (
	serverNew = iota
	serverServing
	serverClosed
)

// Server serves requests with a Handler. Create it with NewServer, start it with Serve,
// stop it with Shutdown (graceful) or Close (at once). Methods may be called from any
// goroutine. A serving Server stays alive until it is closed, even when unreferenced.
type Server struct {
	handler      Handler
	errorHandler func(*Request, error)
	pollers      int

	mu      sync.RWMutex // read-held during C calls on ptr; write-held to change state
	state   int
	b       *C.fastrpc_server_config_builder // until Serve succeeds
	ptr     *C.fastrpc_server
	queue   *C.fastrpc_server_queue
	addr    string
	scratch []unsafe.Pointer // C memory per poller
	pollFds []*queueWaiter   // per poller: its own duplicate of the queue's eventfd (nil: blocking polls)

	baseCtx context.Context
	cancel  context.CancelFunc
	closing atomic.Bool // pollers free new requests (error reply) instead of handling them
	pollWG  sync.WaitGroup

	stopDone chan struct{} // closed when fastrpc_server_stop (started by Shutdown) returned
	stopErr  error
	// closed when the first Close has freed everything (a concurrent Close waits for it)
	closeDone chan struct{}

	handlerErrors atomic.Uint64
	handlerPanics atomic.Uint64
}

// NewServer creates a server that answers each request with handler. The options are
// checked now (an invalid one is an error matching ErrInvalidArgument or ErrTLS); the
// server listens when Serve is called.
func NewServer(handler Handler, opts ...ServerOption) (*Server, error) {
	if handler == nil {
		return nil, invalid("NewServer: the handler is nil")
	}
	cfg := &serverConfig{pollers: 2}
	for _, o := range opts {
		o(cfg)
	}
	if cfg.pollers < 1 {
		return nil, invalid("WithPollers: at least 1 poller is needed")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var b *C.fastrpc_server_config_builder
	if st := C.fastrpc_server_config_builder_new(&b); st != C.FASTRPC_STATUS_OK {
		return nil, cStatusErr(st)
	}
	cfg.b = b
	if err := applySetters(cfg.setters); err != nil {
		C.fastrpc_server_config_builder_free(b)
		return nil, err
	}
	s := &Server{handler: handler, errorHandler: cfg.errorHandler, pollers: cfg.pollers, b: b}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	runtime.SetFinalizer(s, func(s *Server) { _ = s.Close() })
	return s, nil
}

// Serve starts listening on addr ("host:port", port 0 for any free port, or "unix:/path")
// and returns as soon as the server listens: requests are served in the background until
// Shutdown or Close. Addr then gives the bound address. A Server serves once.
// Errors: ErrIO (cannot listen there), ErrTLS, ErrInvalidArgument, ErrClosed.
func (s *Server) Serve(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case serverServing:
		return invalid("Serve: the server is already serving on " + s.addr)
	case serverClosed:
		return errClosed("server")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	var q *C.fastrpc_server_queue
	if st := C.fastrpc_server_queue_new(&q); st != C.FASTRPC_STATUS_OK {
		return cStatusErr(st)
	}
	caddr := C.CString(addr)
	var ptr *C.fastrpc_server
	err := retErr(C.gofrpc_server_new_queued(s.b, caddr, q, &ptr))
	C.free(unsafe.Pointer(caddr))
	if err != nil {
		C.fastrpc_server_queue_free(q)
		return err
	}
	var buf [512]C.char
	var n C.size_t
	C.fastrpc_server_local_addr(ptr, &buf[0], C.size_t(len(buf)), &n)
	s.addr = C.GoString(&buf[0])

	C.fastrpc_server_config_builder_free(s.b)
	s.b = nil
	s.ptr, s.queue, s.state = ptr, q, serverServing
	per := C.size_t(unsafe.Sizeof((*C.fastrpc_request)(nil)) + unsafe.Sizeof(C.gofrpc_req{}))
	var fd C.int
	haveFd := !noQueueFd && C.fastrpc_server_queue_fd(q, &fd) == C.FASTRPC_STATUS_OK
	for i := 0; i < s.pollers; i++ {
		mem := C.calloc(pollBatch+1, per) // the last entry's room holds pollOnce's count
		s.scratch = append(s.scratch, mem)
		// Each poller waits on a descriptor of its own: Go lets one goroutine at a time wait
		// to read a descriptor. Every duplicate is woken when the queue becomes non-empty.
		var w *queueWaiter
		if haveFd {
			w, _ = newQueueWaiter(fd, "fastrpc-server-queue")
		}
		s.pollFds = append(s.pollFds, w)
		s.pollWG.Add(1)
		go s.poll(mem, w)
	}
	return nil
}

// Addr is the address the server listens on ("127.0.0.1:40123" with the real port, or
// "unix:/path"); empty before Serve.
func (s *Server) Addr() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.addr
}

// Stats is a snapshot of the server's counters (zero before Serve and after Close, except
// the Go handler counters).
func (s *Server) Stats() ServerStats {
	s.mu.RLock()
	var st ServerStats
	if s.state == serverServing {
		var cs C.struct_fastrpc_server_stats
		cs.struct_size = C.size_t(unsafe.Sizeof(cs))
		C.gofrpc_server_stats(s.ptr, &cs)
		st = serverStatsFrom(&cs)
	}
	s.mu.RUnlock()
	st.HandlerErrors = s.handlerErrors.Load()
	st.HandlerPanics += s.handlerPanics.Load()
	return st
}

// Shutdown stops the server gracefully: it stops accepting connections and reading
// requests, lets running handlers answer and their responses flush, then closes every
// connection and frees the server (as Close). The drain is bounded by ctx's deadline (none:
// no bound); connections still busy then are closed at once and Shutdown returns an error
// matching ErrTimeout and context.DeadlineExceeded. If ctx is cancelled first, the handlers'
// context is cancelled and Shutdown returns ctx.Err() at once; the drain goes on in the
// background and Close waits for it.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	switch s.state {
	case serverNew:
		s.mu.Unlock()
		return s.Close()
	case serverClosed:
		s.mu.Unlock()
		return nil
	}
	if s.stopDone == nil {
		ms := uint32(math.MaxUint32)
		if dl, ok := ctx.Deadline(); ok {
			left := time.Until(dl)
			if v, ok := durationMs(left); ok {
				ms = v
			} else if left < 0 {
				ms = 0
			}
		}
		s.stopDone = make(chan struct{})
		ptr := s.ptr
		go func() {
			// Not under s.mu: Stats and Addr stay usable while draining; Close waits for
			// stopDone before freeing ptr.
			runtime.LockOSThread()
			st := C.fastrpc_server_stop(ptr, C.uint32_t(ms))
			if st == C.FASTRPC_STATUS_TIMEOUT {
				s.stopErr = deadlineError("fastrpc: server shutdown: connections still busy at the deadline were closed")
			} else if st != C.FASTRPC_STATUS_OK {
				s.stopErr = cStatusErr(st)
			}
			runtime.UnlockOSThread()
			close(s.stopDone)
		}()
	}
	stopDone := s.stopDone
	s.mu.Unlock()

	select {
	case <-stopDone:
	case <-ctx.Done():
		if ctx.Err() != context.DeadlineExceeded {
			s.cancel()
			return ctx.Err()
		}
		// The library's drain has the same deadline: it is closing the busy connections
		// now, so wait for it to say how it ended.
		<-stopDone
	}
	err := s.stopErr
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close stops the server at once: connections are closed, requests not yet handled get
// the error reply, answers of handlers still running are dropped, and the handlers' context
// is cancelled. It waits for the pollers (and for a drain started by Shutdown) and frees
// everything. Closing twice is fine; a Close running beside another returns once the first
// has freed everything.
func (s *Server) Close() error {
	s.mu.Lock()
	prev := s.state
	if prev == serverClosed {
		done := s.closeDone
		s.mu.Unlock()
		// Another Close runs or ran: return once it has freed everything.
		<-done
		return nil
	}
	s.state = serverClosed
	s.closeDone = make(chan struct{})
	defer close(s.closeDone)
	stopDone := s.stopDone
	s.mu.Unlock()
	runtime.SetFinalizer(s, nil)
	s.cancel()
	if prev == serverNew {
		C.fastrpc_server_config_builder_free(s.b)
		s.b = nil
		return nil
	}
	if stopDone != nil {
		<-stopDone // fastrpc_server_free must not run during fastrpc_server_stop
	}
	s.closing.Store(true)
	C.fastrpc_server_free(s.ptr)
	s.ptr = nil
	C.fastrpc_server_queue_shutdown(s.queue)
	s.pollWG.Wait()
	for _, w := range s.pollFds {
		w.close()
	}
	s.pollFds = nil
	C.fastrpc_server_queue_free(s.queue)
	s.queue = nil
	for _, m := range s.scratch {
		C.free(m)
	}
	s.scratch = nil
	return nil
}

// poll is one poller goroutine: it takes requests in batches and starts a goroutine per
// request, until the queue is shut down and empty. It waits in the netpoller on w when it
// can, else in blocking polls.
func (s *Server) poll(mem unsafe.Pointer, w *queueWaiter) {
	defer s.pollWG.Done()
	pollLoop(w, func(timeoutMs C.uint32_t) (int, bool) { return s.pollOnce(mem, timeoutMs) })
}

// pollOnce takes up to pollBatch requests (waiting up to timeoutMs for the first) and starts
// a goroutine for each. It returns how many, and false once the queue is shut down and empty.
func (s *Server) pollOnce(mem unsafe.Pointer, timeoutMs C.uint32_t) (int, bool) {
	tmp := (**C.fastrpc_request)(mem)
	reqArr := (*C.gofrpc_req)(unsafe.Add(mem, pollBatch*unsafe.Sizeof((*C.fastrpc_request)(nil))))
	// The count in C memory too: a Go variable whose address goes to C is allocated per poll.
	np := (*C.size_t)(unsafe.Add(mem, pollBatch*(unsafe.Sizeof((*C.fastrpc_request)(nil))+unsafe.Sizeof(C.gofrpc_req{}))))
	if st := C.gofrpc_sq_poll(s.queue, tmp, reqArr, pollBatch, timeoutMs, np); st != C.FASTRPC_STATUS_OK {
		return 0, false // CLOSED: shut down and empty
	}
	n := *np
	if s.closing.Load() {
		C.gofrpc_requests_free(reqArr, n)
		return int(n), true
	}
	reqs := unsafe.Slice(reqArr, pollBatch)
	for i := 0; i < int(n); i++ {
		go s.handle(reqs[i]) // a copy: the array is reused by the next poll
	}
	return int(n), true
}

// handle runs the handler for one request and answers it.
func (s *Server) handle(r C.gofrpc_req) {
	if s.closing.Load() {
		// Started by a poll just before Close: a request not yet handled when the server
		// closed is freed unanswered (the library's error reply, dropped with the connection),
		// as Close says; its handler never runs.
		C.gofrpc_request_finish(r.req, 0, nil, 0)
		return
	}
	nl, vl := int(r.name_len), int(r.value_len)
	buf := make([]byte, nl+vl)
	if nl > 0 {
		copy(buf, unsafe.Slice((*byte)(unsafe.Pointer(r.name)), nl))
	}
	if vl > 0 {
		copy(buf[nl:], unsafe.Slice((*byte)(unsafe.Pointer(r.value)), vl))
	}
	req := &Request{name: buf[:nl:nl], value: buf[nl:], id: uint32(r.id), c: r.req}

	resp, err := s.run(req)
	req.mu.Lock()
	req.c = nil // answered and freed below: the peer accessors stop here
	req.mu.Unlock()
	if err != nil {
		// Freed unanswered: the library sends the configured error reply.
		C.gofrpc_request_finish(r.req, 0, nil, 0)
		if s.errorHandler != nil {
			s.errorHandler(req, err)
		}
		return
	}
	ret := C.gofrpc_request_finish(r.req, 1, bytesPtr(resp), C.size_t(len(resp)))
	runtime.KeepAlive(resp)
	if ret.status != C.FASTRPC_STATUS_OK {
		rerr := retErr(ret)
		if s.errorHandler != nil {
			s.errorHandler(req, rerr)
		}
	}
}

// run calls the handler, turning a panic into a *PanicError (never unwinding into C).
func (s *Server) run(req *Request) (resp []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.handlerPanics.Add(1)
			resp, err = nil, &PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	resp, err = s.handler(s.baseCtx, req)
	if err != nil {
		s.handlerErrors.Add(1)
	}
	return resp, err
}
