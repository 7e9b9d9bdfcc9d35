package fastrpc

// The client: every call is submitted to the library with a tag
// (fastrpc_client_call_queued_id) and completes into the client's one completion queue; one
// poller goroutine per client waits in Go's netpoller on the queue's eventfd (poller.go),
// takes finished calls in batches (one cgo call per batch) and hands each to the goroutine
// waiting for it through a channel; a call that is the only one in flight waits there itself
// and takes its own completion (leader.go). No OS thread waits per call: a waiting call is a
// parked goroutine. With more than 32 calls in flight, a one-server client's callers hand
// their submits to whoever reads the responses (handoff.go); with 2 to 32, the poller yields
// briefly before it parks or gives its role up (spin.go). One-server and balanced clients
// share this code (ptr or bal is set). A call whose context ends is cancelled in the library
// (fastrpc_client_cancel), which frees its pending slot at once.

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/fastrpc-rs/fastrpc/bindings/go/internal/park"
)

const pollBatch = 256 // completions or requests taken per cgo call

// Client calls one server over one connection (connected lazily on the first call,
// reconnected after failures). Every method may be called from many goroutines at once.
// Close it when done; a finalizer closes a Client that became unreachable, as a safety net.
type Client struct {
	c *client
}

// client is what the poller goroutine references, so that an unreachable *Client can be
// finalized while its poller still runs.
type client struct {
	// Read by every call and written only while the client starts or closes; kept off the
	// lines that calls write (hot below, mu), so that reading them costs no line transfer.
	ptr      *C.fastrpc_client
	bal      *C.fastrpc_balanced_client // instead of ptr for NewBalancedClient
	queue    *C.fastrpc_completion_queue
	leading  bool        // leader mode, with a descriptor (leader.go)
	bursts   bool        // bursts (burst.go): on for a one-server client (ptr), unless FASTRPC_GO_BURST=0
	draining atomic.Bool // Shutdown started: new calls fail with ErrClosed
	// readFd: qw is the client's read descriptor (fastrpc_client_read_fd), to which the
	// queue's descriptor was added: readable when responses arrive on the socket too, which
	// the waiting leader then reads itself (readPoll).
	readFd bool
	// callerReads: the library was told the program reads the connection (caller_reads),
	// so readFd must hold and every wait reads (readPoll).
	callerReads bool
	kick        chan struct{} // (1) wakes the poller: a call was submitted that no leader serves
	closing     chan struct{} // closed by close(): the poller serves until the queue is closed
	leadFn      func(uintptr) bool
	serveFn     func(uintptr) bool

	// Written by every call (and by every poll): one line of their own, so that a call moves
	// one line between CPUs for them, not three (measured: README.md, "Threading model").
	hot hotCounters

	mu     sync.RWMutex // read-held during each C call on ptr but submits (waiters.go); write-held to close
	closed bool

	waiters waiterTable // waiters.go; its shards also guard submits against close

	closeOnce   sync.Once
	closeErr    error
	pollerDone  chan struct{}
	pollScratch unsafe.Pointer // C memory: see scratch
	qw          *queueWaiter   // the queue's eventfd in the netpoller; nil: blocking polls (fallback)
	readHere    atomic.Uint64  // calls whose responses a Go goroutine read (for tests)

	// Leader mode (leader.go): whoever holds role waits on the queue's descriptor and takes
	// its completions (sharing pollScratch): the poller goroutine, or a call that is the only
	// one in flight.
	role      sync.Mutex
	queueGone bool          // under role: close freed the queue
	ls        leadState     // under role: the lone call's wait (lead)
	serveExit bool          // under role: serve's outcome
	led       atomic.Uint64 // calls that got their outcome as leader (for tests)

	flushes atomic.Uint64

	handoff bool // hand-off (handoff.go): a one-server client in leader mode that reads itself
	// emptyYields: while the hand-off is on, the role holder's passes that found nothing
	// before it waits (leader.go).
	emptyYields int
	handed      atomic.Uint64 // calls the role holder submitted for their callers (for tests)
	directHand  bool          // handoff, and calls whose context never ends park directly (handsDirect)
	// Under role: the role holder's short waits (spin.go) for responses, with calls pending,
	// and for the next call, with none.
	spinResp, spinIdle spinState
	fixedBatch         bool // FASTRPC_GO_READ_BATCH=fixed: every read pass takes up to pollBatch (readBatch)
	ho                 handoffState
}

// hotCounters are the client's counters that every call writes, on a cache line of their own
// (padding on both sides: the struct's own alignment is 8).
type hotCounters struct {
	_ [64]byte
	// Calls submitted whose completion is not yet taken from the queue (leader mode).
	pending atomic.Int64
	// Bursts (burst.go): callers handed their outcomes together by one poll defer their
	// next requests, and the last of them to collect writes them all on its thread. burst
	// counts the outcomes handed to callers that have not collected them yet; deferred is
	// set while a deferred request may wait for a flush.
	burst    atomic.Int64
	deferred atomic.Bool
	_        [64 - 17]byte
}

// result is one finished call as the poller hands it to its caller.
type result struct {
	data []byte
	err  error
}

// waiter is where one call waits; channels are reused through a pool. 128 bytes, two cache
// lines (TestWaiterSize): the caller writes it and the role holder reads and writes it back
// for every handed call, so each line is a transfer between CPUs each way.
type waiter struct {
	ch chan result
	// CallAppend's buffer (app): the poller appends the response to dst, in place of a new
	// slice. The caller is parked meanwhile, and one that gave up had taken the waiter
	// back from the table first, so the poller never writes to a buffer its caller uses.
	// A direct call's outcome is dst (the response, appended or new) and err (park.go).
	dst []byte
	err error
	pk  park.Parker
	// Hand-off (handoff.go): the request the role holder submits for the caller (name and
	// value: where their bytes are, and how many; kept reachable through these pointers).
	name, value       unsafe.Pointer
	nameLen, valueLen int
	id                uint64
	next              *waiter
	timeoutMs         uint32
	state             atomic.Uint32
	app               bool
	// direct: the caller's context never ends, so it waits on pk for its outcome
	// (park.go), not on ch.
	direct bool
}

// release gives w back to the pool (empty: its outcome was received).
func (w *waiter) release() {
	w.dst, w.app, w.direct = nil, false, false
	w.name, w.value = nil, nil
	waiterPool.Put(w)
}

var waiterPool = sync.Pool{New: func() any { return &waiter{ch: make(chan result, 1)} }}

// NewClient creates a client of the server at addr ("host:port" or "unix:/path"). Nothing
// connects until the first call. Options not given keep the reference's defaults.
func NewClient(addr string, opts ...ClientOption) (*Client, error) {
	return newClientOf([]string{addr}, false, opts)
}

// newClientOf makes a one-server client of addrs[0] or, when balanced, a balanced client
// of addrs (NewBalancedClient), and starts it.
func newClientOf(addrs []string, balanced bool, opts []ClientOption) (*Client, error) {
	cfg := &clientConfig{}
	// The engine spins for a lone call's response by default; a spinning library thread
	// takes the CPU the Go callers need (README.md, Threading model): off unless asked for.
	WithReadSpin(0)(cfg)
	for _, o := range opts {
		o(cfg)
	}
	spin, spinChosen := spinWindowFromEnv()
	if cfg.pollerSpinSet {
		if cfg.pollerSpin < 0 || cfg.pollerSpin > spinWindowMax {
			return nil, invalid("WithPollerSpin: from 0 to 10ms")
		}
		spin, spinChosen = cfg.pollerSpin, true
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	var b *C.fastrpc_client_config_builder
	if st := C.fastrpc_client_config_builder_new(&b); st != C.FASTRPC_STATUS_OK {
		return nil, cStatusErr(st)
	}
	defer C.fastrpc_client_config_builder_free(b)
	for _, a := range addrs {
		caddr := C.CString(a)
		var st C.fastrpc_status
		if balanced {
			st = C.fastrpc_client_config_builder_add_addr(b, caddr)
		} else {
			st = C.fastrpc_client_config_builder_set_addr(b, caddr)
		}
		C.free(unsafe.Pointer(caddr))
		if st != C.FASTRPC_STATUS_OK {
			return nil, cStatusErr(st)
		}
	}
	cfg.b = b
	if err := applySetters(cfg.setters); err != nil {
		return nil, err
	}
	// A one-server client in leader mode reads its connection itself (readFd): the library
	// then leaves the socket's arrivals to it (no library thread woken per arrival).
	callerReads := !balanced && !noQueueFd && leaderFromEnv() && readFdFromEnv() && callerReadsFromEnv()
	if callerReads {
		if st := C.fastrpc_client_config_builder_set_caller_reads(b, true); st != C.FASTRPC_STATUS_OK {
			return nil, cStatusErr(st)
		}
	}

	c := &client{pollerDone: make(chan struct{}), callerReads: callerReads}
	c.spinResp.window, c.spinIdle.window = spin, spin
	c.spinResp.chosen, c.spinIdle.chosen = spinChosen, spinChosen
	c.fixedBatch = os.Getenv("FASTRPC_GO_READ_BATCH") == "fixed"
	var err error
	if balanced {
		err = retErr(C.gofrpc_bal_new(b, &c.bal))
	} else {
		err = retErr(C.gofrpc_client_new(b, &c.ptr))
	}
	if err != nil {
		return nil, err
	}
	if err := c.start(); err != nil {
		c.freeHandle()
		return nil, err
	}
	pub := &Client{c: c}
	runtime.SetFinalizer(pub, func(p *Client) { _ = p.c.close() })
	return pub, nil
}

// freeHandle frees the library's client (ptr or bal): calls still waiting complete with
// CLOSED into the queue.
func (c *client) freeHandle() {
	if c.bal != nil {
		C.fastrpc_balanced_client_free(c.bal)
		c.bal = nil
	} else {
		C.fastrpc_client_free(c.ptr)
		c.ptr = nil
	}
}

// start makes the completion queue, the poller's scratch memory and its netpoller
// registration, and starts the poller goroutine. On failure it frees what it made (the
// caller frees the client handle). Called with the goroutine locked to its OS thread.
func (c *client) start() error {
	if st := C.fastrpc_completion_queue_new(&c.queue); st != C.FASTRPC_STATUS_OK {
		return cStatusErr(st)
	}
	c.pollScratch = C.calloc(1, C.size_t(scratchSize))
	if c.pollScratch == nil {
		C.fastrpc_completion_queue_free(c.queue)
		return invalid("out of memory")
	}
	var fd C.int
	if !noQueueFd && C.fastrpc_completion_queue_fd(c.queue, &fd) == C.FASTRPC_STATUS_OK {
		if c.ptr != nil && leaderFromEnv() && readFdFromEnv() {
			c.qw = newReadWaiter(c.ptr, fd)
			c.readFd = c.qw != nil
		}
		if c.qw == nil {
			c.qw, _ = newQueueWaiter(fd, "fastrpc-completion-queue")
		}
	}
	if c.callerReads && !c.readFd {
		// Nobody would read the connection (out of descriptors, say).
		c.qw.close()
		C.free(c.pollScratch)
		C.fastrpc_completion_queue_free(c.queue)
		return invalid("cannot wait for the connection: no read descriptor")
	}
	// Without a descriptor (out of descriptors), the poller blocks in C instead.
	if c.qw != nil && leaderFromEnv() {
		c.leading = true
		c.kick = make(chan struct{}, 1)
		c.closing = make(chan struct{})
		c.leadFn, c.serveFn = c.leadPass, c.servePass
	}
	c.bursts = c.ptr != nil && burstsFromEnv()
	if c.leading && c.readFd && handoffFromEnv() {
		c.handoff = c.newHandoff(c.qw.fd)
		c.emptyYields = emptyYieldsFromEnv()
		c.directHand = c.handoff && directFromEnv
	}
	go c.poll()
	return nil
}

// Call sends name and value and waits for the response value, which belongs to the caller.
//
// The context's deadline is the call's deadline (without one, the client's request timeout
// applies); when it passes, Call returns an *Error matching both ErrTimeout and
// context.DeadlineExceeded. Cancelling the context makes Call return ctx.Err() at once and
// cancels the call in the library: its pending slot (WithMaxPendingRequests) is free at
// once, a request not yet written is never sent, and a response that still arrives is
// dropped.
// Other failures are *Error values matching ErrOverflow, ErrConnect, ErrConnection,
// ErrClosed, ErrTooLarge, ErrTLS, ErrProtocol or ErrInvalidArgument.
//
// name and value are copied before the library returns; the caller may reuse them at once.
func (cl *Client) Call(ctx context.Context, name, value []byte) ([]byte, error) {
	if c := cl.c; c.handsDirect(ctx) {
		out, err := c.handDirect(nil, false, name, value)
		runtime.KeepAlive(cl)
		return out, err
	}
	return cl.call(ctx, nil, false, name, value)
}

// CallAppend is Call that appends the response value to dst and returns the extended slice
// (as strconv.AppendInt does), instead of allocating it: a caller that passes the same
// buffer again (dst[:0]) makes calls that allocate nothing in Go, as the reference's callers
// do by reusing their Response. On an error it returns dst unchanged; the bytes between
// len(dst) and cap(dst) may have been written either way.
func (cl *Client) CallAppend(ctx context.Context, dst, name, value []byte) ([]byte, error) {
	var out []byte
	var err error
	if c := cl.c; c.handsDirect(ctx) {
		out, err = c.handDirect(dst, true, name, value)
		runtime.KeepAlive(cl)
	} else {
		out, err = cl.call(ctx, dst, true, name, value)
	}
	if err != nil {
		return dst, err
	}
	return out, nil
}

// call is Call (app false) or CallAppend (app true: the response is appended to dst).
// Call and CallAppend take handDirect's case themselves (handoff.go), so that a parked
// caller returns through as few frames as possible.
func (cl *Client) call(ctx context.Context, dst []byte, app bool, name, value []byte) ([]byte, error) {
	// cl stays reachable until the call returns: its finalizer closes the client, and a
	// program may hold it only through this call (NewClient(...).Call(...)).
	defer runtime.KeepAlive(cl)
	c := cl.c
	timeoutMs := uint32(0)
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return nil, deadlineError("")
		}
		ms := (left + time.Millisecond - 1) / time.Millisecond
		if ms > math.MaxUint32 {
			ms = math.MaxUint32
		}
		timeoutMs = uint32(ms)
	}
	if err := ctx.Err(); err != nil {
		return nil, ctxError(err)
	}

	w := waiterPool.Get().(*waiter)
	w.dst, w.app = dst, app
	w.direct = ctx.Done() == nil && directFromEnv
	// With many in flight, the submit is handed over (handoff.go).
	if c.handoff && c.ho.busy.Load() && !c.draining.Load() {
		return c.hand(ctx, w, name, value, timeoutMs)
	}
	lone := false
	if c.leading {
		lone = c.hot.pending.Add(1) == 1
	}
	// The shard stays locked through the submit: Close waits for it (waiters.go).
	shard, tag, ok := c.waiters.lockedPut(w)
	if !ok || c.draining.Load() {
		if ok {
			shard.takeLocked(tag)
			shard.mu.Unlock()
		}
		if c.leading {
			c.hot.pending.Add(-1)
		}
		w.release()
		return nil, errClosed("client")
	}
	// Deferred in a burst (its last caller flushes), or with few calls in flight (this
	// caller flushes at once, on its own thread): burst.go.
	deferred := c.bursts && (c.hot.burst.Load() > 0 || c.leading && c.hot.pending.Load() <= ownFlushMax)
	r := C.gofrpc_call_queued_id(c.ptr, c.bal, bytesPtr(name), C.size_t(len(name)), bytesPtr(value),
		C.size_t(len(value)), C.uint32_t(timeoutMs), c.queue, C.uint64_t(tag), cBool(deferred))
	if r.status != C.FASTRPC_STATUS_OK {
		// No completion will come for this tag.
		shard.takeLocked(tag)
	}
	shard.mu.Unlock()
	if deferred && r.status == C.FASTRPC_STATUS_OK {
		c.deferredQueued()
	}
	runtime.KeepAlive(name)
	runtime.KeepAlive(value)
	runtime.KeepAlive(cl)
	if r.status != C.FASTRPC_STATUS_OK {
		if c.leading {
			c.hot.pending.Add(-1)
		}
		w.release()
		return nil, retErr(C.gofrpc_ret{status: r.status, msg: r.msg})
	}

	// The outcome; when the library's timer was the context's deadline, the error says so.
	outcome := func(res result) ([]byte, error) {
		w.release()
		if res.err != nil && timeoutMs != 0 && isTimeout(res.err) {
			return nil, deadlineError(res.err.Error())
		}
		return res.data, res.err
	}
	if c.leading {
		if res, ok := c.leadOrKick(ctx, w, lone, uint64(r.id)); ok {
			if res.err != nil && errors.Is(res.err, ErrCancelled) && ctx.Err() != nil {
				// Cancelled by the leader's context (leadOrKick).
				w.release()
				return nil, ctxError(ctx.Err())
			}
			return outcome(res)
		}
	}
	done := ctx.Done()
	if done == nil {
		res := w.recv()
		c.collected(1)
		return outcome(res)
	}
	select {
	case res := <-w.ch:
		c.collected(1)
		return outcome(res)
	case <-done:
		if c.waiters.take(tag) != nil {
			// Ours to end: the library completes the call with CANCELLED at once (or it has
			// just completed otherwise); either way the poller finds no waiter and discards
			// the completion, so w is clean.
			c.cancel(uint64(r.id))
		} else {
			// The poller took w first and is handing it the outcome: wait for that (it
			// never blocks), so that w can be reused.
			<-w.ch
			c.collected(1)
		}
		w.release()
		return nil, ctxError(ctx.Err())
	}
}

// cancel cancels call id in the library (nothing when it already completed, or the client
// is closed: Close completes every call).
func (c *client) cancel(id uint64) {
	c.mu.RLock()
	if !c.closed {
		if c.bal != nil {
			C.fastrpc_balanced_client_cancel(c.bal, C.uint64_t(id))
		} else {
			C.fastrpc_client_cancel(c.ptr, C.uint64_t(id))
		}
	}
	c.mu.RUnlock()
}

func isTimeout(err error) bool {
	e, ok := err.(*Error)
	return ok && e.Kind == ErrTimeout
}

// ctxError is the error for a call ended by its context: ctx.Err() itself when cancelled,
// an *Error matching ErrTimeout and context.DeadlineExceeded when the deadline passed.
func ctxError(err error) error {
	if err == context.DeadlineExceeded {
		return deadlineError("")
	}
	return err
}

// Send sends a request that wants no response (request id 0, the reference's SendNowait)
// and returns once it is queued; it goes out with the next batch unless the connection
// fails first. Errors: ErrOverflow, ErrConnect, ErrClosed, ErrTooLarge, ErrInvalidArgument.
func (cl *Client) Send(name, value []byte) error {
	c := cl.c
	c.mu.RLock()
	if c.closed || c.draining.Load() {
		c.mu.RUnlock()
		return errClosed("client")
	}
	r := C.gofrpc_send(c.ptr, c.bal, bytesPtr(name), C.size_t(len(name)), bytesPtr(value), C.size_t(len(value)))
	c.mu.RUnlock()
	runtime.KeepAlive(name)
	runtime.KeepAlive(value)
	runtime.KeepAlive(cl)
	return retErr(r)
}

// PendingRequests is the number of calls waiting for their response now.
func (cl *Client) PendingRequests() int {
	c := cl.c
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return 0
	}
	var n int
	if c.bal != nil {
		n = int(C.fastrpc_balanced_client_pending_requests(c.bal))
	} else {
		n = int(C.fastrpc_client_pending_requests(c.ptr))
	}
	runtime.KeepAlive(cl)
	return n
}

// Stats is a snapshot of the client's counters (zero after Close).
func (cl *Client) Stats() ClientStats {
	c := cl.c
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return ClientStats{}
	}
	var s C.struct_fastrpc_client_stats
	s.struct_size = C.size_t(unsafe.Sizeof(s))
	if c.bal != nil {
		C.fastrpc_balanced_client_get_stats(c.bal, &s)
	} else {
		C.gofrpc_client_stats(c.ptr, &s)
	}
	runtime.KeepAlive(cl)
	st := clientStatsFrom(&s)
	st.PollerSpinHits = c.spinResp.hits.Load() + c.spinIdle.hits.Load()
	st.PollerSpinMisses = c.spinResp.misses.Load() + c.spinIdle.misses.Load()
	return st
}

// Close closes the client: new calls fail with ErrClosed and calls still waiting complete
// at once with ErrClosed. It waits for the poller goroutine and frees everything. Closing
// twice is fine (the second Close returns the first one's result).
func (cl *Client) Close() error {
	runtime.SetFinalizer(cl, nil)
	return cl.c.close()
}

// Shutdown closes the client gracefully: new calls fail with ErrClosed at once, calls
// already waiting may finish until ctx is done (deadline or cancel), then the client is
// closed as by Close (calls still waiting fail with ErrClosed). It returns ctx.Err() when
// ctx ended before every call had finished, else the result of Close.
func (cl *Client) Shutdown(ctx context.Context) error {
	runtime.SetFinalizer(cl, nil)
	c := cl.c
	c.draining.Store(true)
	var err error
	if c.waiting() > 0 {
		t := time.NewTicker(2 * time.Millisecond)
	wait:
		for c.waiting() > 0 {
			select {
			case <-ctx.Done():
				err = ctx.Err()
				break wait
			case <-t.C:
			}
		}
		t.Stop()
	}
	if cerr := c.close(); err == nil {
		err = cerr
	}
	return err
}

// waiting counts the calls still waiting (for Shutdown): in leader mode, those counted in
// pending, and the handed calls not yet submitted (handoff.go; read first: the role holder
// counts a submitted call in pending before it stops counting it as queued).
func (c *client) waiting() int {
	if c.leading {
		n := 0
		if c.handoff {
			n = int(c.ho.queued.Load())
		}
		return n + int(c.hot.pending.Load())
	}
	return c.waiters.len()
}

func (c *client) close() error {
	c.closeOnce.Do(func() {
		if c.handoff {
			c.ho.closing.Store(true) // the role holder no longer waits for the stack (park)
		}
		c.mu.Lock()
		c.closed = true // no C call on ptr runs now, and none will start
		c.mu.Unlock()
		c.waiters.seal() // nor a call's submit (waiters.go)
		c.freeHandle()   // fails waiting calls with CLOSED (their completions go to the queue)
		C.fastrpc_completion_queue_shutdown(c.queue)
		if c.leading {
			close(c.closing)
		}
		<-c.pollerDone
		c.role.Lock() // a leader still in the queue leaves first (it sees the queue closed)
		if c.handoff {
			c.sealHanded()
		}
		c.queueGone = true
		c.qw.close()
		c.qw = nil
		C.fastrpc_completion_queue_free(c.queue)
		c.queue = nil
		C.free(c.pollScratch)
		c.pollScratch = nil
		c.role.Unlock()
		// Safety net: nothing should be left, but no caller may wait forever.
		c.waiters.drain(func(w *waiter) { w.deliver(result{err: errClosed("client")}) })
	})
	return c.closeErr
}

// poll is the client's one poller goroutine: it takes finished calls in batches and hands
// each to its waiting caller, until the queue is shut down and empty (leader.go in leader
// mode; else pollLoop, in the netpoller when it can).
func (c *client) poll() {
	defer close(c.pollerDone)
	if c.leading {
		c.pollLeader()
		return
	}
	pollLoop(c.qw, c.pollOnce)
}

// pollOnce takes up to pollBatch finished calls (waiting up to timeoutMs for the first) and
// hands each to its caller. It returns how many, and false once the queue is shut down and
// empty. In leader mode its caller holds role.
func (c *client) pollOnce(timeoutMs C.uint32_t) (int, bool) {
	tmp, doneArr, np, _ := c.scratch()
	if st := C.gofrpc_cq_poll(c.queue, tmp, doneArr, pollBatch, timeoutMs, np); st != C.FASTRPC_STATUS_OK {
		// CLOSED: shut down and empty. Anything else (a panic caught in the library) took
		// nothing: the queue is still open.
		return 0, st != C.FASTRPC_STATUS_CLOSED
	}
	return c.handOver(doneArr, *np)
}

// The poller's scratch memory (pollScratch, C memory, used by whoever polls: the poller
// goroutine, or in leader mode whoever holds role): pollBatch fastrpc_completion, pollBatch
// gofrpc_done, and the two counts the C calls return. The counts live there rather than in
// Go variables, whose addresses passed to C would make them heap allocations, one per poll.
const (
	scratchDone   = pollBatch * unsafe.Sizeof(C.fastrpc_completion{})
	scratchCounts = scratchDone + pollBatch*unsafe.Sizeof(C.gofrpc_done{})
	scratchSize   = scratchCounts + 2*unsafe.Sizeof(C.size_t(0))
)

func (c *client) scratch() (tmp *C.fastrpc_completion, doneArr *C.gofrpc_done, n, read *C.size_t) {
	m := c.pollScratch
	return (*C.fastrpc_completion)(m), (*C.gofrpc_done)(unsafe.Add(m, scratchDone)),
		(*C.size_t)(unsafe.Add(m, scratchCounts)), (*C.size_t)(unsafe.Add(m, scratchCounts+unsafe.Sizeof(C.size_t(0))))
}

// readPoll is pollOnce(0) after reading, on this thread, the responses that have arrived on
// the connection (fastrpc_client_read_now, in the same cgo call), when the client waits on
// its read descriptor (readFd).
func (c *client) readPoll() (int, bool) {
	if !c.readFd {
		return c.pollOnce(0)
	}
	tmp, doneArr, np, readp := c.scratch()
	if c.handoff {
		c.wakeFrom()
	}
	c.mu.RLock()
	var reader *C.fastrpc_client
	if !c.closed { // else freed, or about to be (and ptr is not to be read)
		reader = c.ptr
		if c.handoff {
			c.submitHanded()
		}
	}
	st := C.gofrpc_cq_read_poll(reader, c.queue, tmp, doneArr, c.readBatch(), np, readp)
	c.mu.RUnlock()
	if read := *readp; read > 0 {
		c.readHere.Add(uint64(read))
	}
	if st != C.FASTRPC_STATUS_OK {
		// CLOSED: shut down and empty. Anything else (a panic caught in the library) took
		// nothing: the queue is still open.
		return 0, st != C.FASTRPC_STATUS_CLOSED
	}
	n, open := c.handOver(doneArr, *np)
	if c.handoff {
		c.setBusy()
	}
	return n, open
}

// readBatch is how many completions a read pass takes at most: a quarter of the calls
// pending, from readBatchMin to pollBatch (pollBatch with FASTRPC_GO_READ_BATCH=fixed, the
// benchmark's "before" arm; read when a client starts). With a few hundred calls in flight,
// the role holder hands fewer over per pass and comes back sooner to submit the requests
// their callers handed it (handoff.go), so the server gets them in smaller, earlier writes
// and works while the callers run, instead of after them (measured: README.md, "Read
// batches").
func (c *client) readBatch() C.size_t {
	if c.fixedBatch {
		return pollBatch
	}
	return C.size_t(min(max(int(c.hot.pending.Load())/4, readBatchMin), pollBatch))
}

const readBatchMin = 64

// readPollSlow is readPoll for the fallback of blocking polls (a descriptor that turned out
// not pollable) when the program reads the connection: it cannot block in the queue, which
// only fills when someone reads, so it sleeps briefly when there was nothing.
func (c *client) readPollSlow(C.uint32_t) (int, bool) {
	n, open := c.readPoll()
	if n == 0 && open {
		time.Sleep(100 * time.Microsecond)
	}
	return n, open
}

// handOver hands the n completions polled into doneArr to their callers.
func (c *client) handOver(doneArr *C.gofrpc_done, n C.size_t) (int, bool) {
	k := int(n)
	if c.leading {
		c.hot.pending.Add(-int64(k))
	}
	done := unsafe.Slice(doneArr, pollBatch)
	if c.bursts && k > 0 {
		// Before any is handed over: their callers' next requests wait for the last of them
		// (burst.go). Those found gone are taken off below. Handed calls (handoff.go) are
		// not counted: their callers' next requests are handed over too, or submitted alone.
		direct := k
		if c.handoff {
			for i := 0; i < k; i++ {
				if uint64(done[i].tag)&hoTagBit != 0 {
					direct--
				}
			}
		}
		if direct > 0 {
			c.hot.burst.Add(int64(direct))
		}
	}
	gone := 0
	for i := 0; i < k; i++ {
		d := &done[i]
		var w *waiter
		if tag := uint64(d.tag); c.handoff && tag&hoTagBit != 0 {
			if w = c.takeHanded(tag); w == nil {
				continue
			}
		} else if w = c.waiters.take(tag); w == nil {
			gone++
			continue // its caller gave up (context ended, call cancelled): discard
		}
		var res result
		if d.status == C.FASTRPC_STATUS_OK {
			if w.app {
				res.data = append(w.dst, unsafe.Slice((*byte)(unsafe.Pointer(d.data)), int(d.len))...)
			} else {
				res.data = make([]byte, int(d.len))
				if d.len > 0 {
					copy(res.data, unsafe.Slice((*byte)(unsafe.Pointer(d.data)), int(d.len)))
				}
			}
		} else {
			msg := ""
			if d.msg != nil {
				msg = C.GoString(d.msg)
			}
			res.err = newError(uint32(d.status), msg)
		}
		w.deliver(res)
	}
	if k > 0 {
		C.gofrpc_cq_release(doneArr, n)
	}
	if gone > 0 {
		c.collected(gone)
	}
	return k, true
}
