package fastrpc

// Hand-off: with many calls in flight (more than handoffMin), a caller does not submit its
// request itself. It pushes its waiter on the client's hand-off stack and parks, and
// whoever holds the role (leader.go: the poller goroutine, or a lone leader) submits the
// stack's requests at the start of its next read pass, on its own thread, and flushes them
// in one write. So the library's submit path (its call table, queues and writer state) and
// the tags of handed calls are touched by one thread at a time, the one that also reads the
// responses: on 2 cores, the cache lines that each call moved between the CPUs were about
// 40% of the client's CPU per call (README.md, "Hand-off").
//
// A handed call's tag names a slot of the role holder's own table (hoTable: no lock, as
// only the role holder uses it), with the top bit set; a waiter's state says who owns it:
//
//	queued -> submitting -> submitted -> done       (the role holder hands the outcome over)
//	queued -> cancelled                              (the caller gave up before the submit)
//	submitted -> cancelled                           (the caller gave up; cancelled in the library)
//	submitting -> done                               (the submit failed)
//
// A waiter whose caller gave up belongs to the role holder, which puts it back in the pool
// once it is off the stack and out of the table. Close seals the stack (handoffSealed) and
// fails what it still holds.

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// handoffMin is the number of calls in flight above which a call hands its submit over.
// Below it, a call submits on its own thread (and one alone leads, leader.go).
const handoffMin = 32

// handoffOff is the number of calls in flight at which the hand-off, once on, goes off again.
const handoffOff = 8

const (
	hoQueued uint32 = iota
	hoSubmitting
	hoSubmitted
	hoDone
	hoCancelled
)

// hoTagBit marks the tags of handed calls (hoTable's; the others are waiterTable's).
const hoTagBit = 1 << 63

// handoffFromEnv reports whether a new client hands its submits over when many calls are
// in flight (the default); FASTRPC_GO_HANDOFF=0 turns it off (read when a client starts; the
// benchmark's "before" arm).
func handoffFromEnv() bool { return os.Getenv("FASTRPC_GO_HANDOFF") != "0" }

// handoffSealed is the stack's head once Close sealed it.
var handoffSealed = &waiter{}

// handoffState is the client's hand-off stack, the wake of its role holder and the role
// holder's table.
type handoffState struct {
	_ [64]byte
	// Read by every call, written rarely: a line of their own.
	// Set by the role holder while more than handoffMin calls are in flight: calls hand
	// their submits over. Written when it changes only, so callers read it from their cache.
	busy    atomic.Bool
	closing atomic.Bool // Close started: the role holder no longer submits, so it may wait
	// Tests only: the role holder leaves the stack alone (so that calls stay queued).
	paused atomic.Bool
	_      [64]byte
	// Written by callers: the stack (a Treiber stack of waiters) and the flags of the wake.
	head atomic.Pointer[waiter]
	// Calls pushed and not yet taken off the stack and counted in pending (Shutdown's
	// count, waiting): on head's line, which the push has just written.
	queued atomic.Int64
	parked atomic.Bool // the role holder waits, or is about to
	kicked atomic.Bool // the eventfd was written
	_      [64]byte
	// The role holder's.
	efd   int // an eventfd in the read descriptor's epoll set: a push wakes the role holder
	batch []*waiter
	table hoTable
}

// hoTable is the role holder's table of handed calls in flight: slots and a free list, no
// lock. A tag holds the slot's index (low 32 bits) and its generation (bits 32-62).
type hoTable struct {
	slots []hoSlot
	free  []uint32
}

type hoSlot struct {
	w   *waiter
	gen uint32
}

func (t *hoTable) put(w *waiter) uint64 {
	var idx uint32
	if n := len(t.free); n > 0 {
		idx = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		idx = uint32(len(t.slots))
		t.slots = append(t.slots, hoSlot{})
	}
	s := &t.slots[idx]
	s.w = w
	return hoTagBit | uint64(s.gen&0x7fffffff)<<32 | uint64(idx)
}

// take removes and returns the waiter of tag (nil for a stale tag).
func (t *hoTable) take(tag uint64) *waiter {
	idx := uint32(tag)
	if int(idx) >= len(t.slots) {
		return nil
	}
	s := &t.slots[idx]
	if s.w == nil || s.gen&0x7fffffff != uint32(tag>>32)&0x7fffffff {
		return nil
	}
	w := s.w
	s.w = nil
	s.gen++
	t.free = append(t.free, idx)
	return w
}

// newHandoff makes the eventfd that wakes a parked role holder and adds it to the epoll set
// the role holder waits on (the read descriptor, rfd). False when it cannot.
func (c *client) newHandoff(rfd int) bool {
	fd, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, uintptr(syscall.O_NONBLOCK|syscall.O_CLOEXEC), 0)
	if errno != 0 {
		return false
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
	if err := syscall.EpollCtl(rfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
		syscall.Close(int(fd))
		return false
	}
	c.ho.efd = int(fd)
	return true
}

// hand is a call's submit handed over: w (out of the pool) is pushed on the stack and the
// caller waits for its outcome. ErrClosed when Close sealed the stack.
func (c *client) hand(ctx context.Context, w *waiter, name, value []byte, timeoutMs uint32) ([]byte, error) {
	if !c.push(w, name, value, timeoutMs) {
		w.release()
		return nil, errClosed("client")
	}

	outcome := func(res result) ([]byte, error) {
		w.release()
		if res.err != nil && timeoutMs != 0 && isTimeout(res.err) {
			return nil, deadlineError(res.err.Error())
		}
		return res.data, res.err
	}
	done := ctx.Done()
	if done == nil {
		return outcome(w.recv())
	}
	select {
	case res := <-w.ch:
		return outcome(res)
	case <-done:
	}
	for {
		switch w.state.Load() {
		case hoQueued:
			if w.state.CompareAndSwap(hoQueued, hoCancelled) {
				// Never submitted (nor counted in pending): no completion will come. The role
				// holder takes w off the stack and puts it back in the pool.
				return nil, ctxError(ctx.Err())
			}
		case hoSubmitting:
			runtime.Gosched() // the role holder is submitting it: a moment
		case hoSubmitted:
			// The id first: once cancelled, w belongs to the role holder, which may put it
			// back in the pool for another call before this caller reads it.
			id := w.id
			if w.state.CompareAndSwap(hoSubmitted, hoCancelled) {
				// Its completion (CANCELLED, or one that was on its way) goes to the role
				// holder, which discards it and puts w back in the pool.
				c.cancel(id)
				return nil, ctxError(ctx.Err())
			}
		default: // hoDone: the outcome is on its way; w is ours again once received
			<-w.ch
			w.release()
			return nil, ctxError(ctx.Err())
		}
	}
}

// push puts w (out of the pool; the role holder counts it in pending when it submits it) on
// the stack with its request and wakes the role holder; false when Close sealed the stack.
func (c *client) push(w *waiter, name, value []byte, timeoutMs uint32) bool {
	w.name, w.nameLen = unsafe.Pointer(bytesPtr(name)), len(name)
	w.value, w.valueLen = unsafe.Pointer(bytesPtr(value)), len(value)
	w.timeoutMs, w.id = timeoutMs, 0
	w.state.Store(hoQueued)
	h := &c.ho
	h.queued.Add(1)
	for {
		old := h.head.Load()
		if old == handoffSealed {
			h.queued.Add(-1)
			return false
		}
		w.next = old
		if h.head.CompareAndSwap(old, w) {
			break
		}
	}
	c.wakeRoleHolder()
	return true
}

// handDirect is the whole of a call whose context never ends (no deadline, no cancel) while
// the hand-off is on and calls park directly (park.go): the common case at high
// concurrency, kept apart from call's other cases so that the frames a parked caller
// returns through are few and small (its stack is out of the CPU's caches when it resumes).
func (c *client) handDirect(dst []byte, app bool, name, value []byte) ([]byte, error) {
	w := waiterPool.Get().(*waiter)
	w.dst, w.app, w.direct = dst, app, true
	if !c.push(w, name, value, 0) {
		w.release()
		return nil, errClosed("client")
	}
	w.pk.Wait()
	out, err := w.dst, w.err
	w.err = nil
	w.release()
	return out, err
}

// handsDirect reports whether a call with ctx is handDirect's case: a context that never
// ends and has no deadline (one may override Deadline alone: its deadline still applies,
// through call).
func (c *client) handsDirect(ctx context.Context) bool {
	if !c.directHand || ctx.Done() != nil || !c.ho.busy.Load() || c.draining.Load() {
		return false
	}
	_, dl := ctx.Deadline()
	return !dl
}

// setBusy updates busy from the calls in flight (the role holder, each pass).
func (c *client) setBusy() {
	p := c.hot.pending.Load()
	if busy := c.ho.busy.Load(); !busy && p > handoffMin {
		c.ho.busy.Store(true)
	} else if busy && p <= handoffOff {
		c.ho.busy.Store(false)
	}
}

// wakeRoleHolder follows a push: it wakes the role holder if it waits (or is about to, and
// checks the stack after saying so: park), and the poller if nobody holds the role
// (leader.go).
func (c *client) wakeRoleHolder() {
	h := &c.ho
	if h.parked.Load() && h.parked.CompareAndSwap(true, false) {
		// Under the read lock, and not once Close began: Close closes the eventfd (after the
		// poller ended), and its number could by then be another file's. Written, then
		// marked: the role holder's next pass reads it (wakeFrom), so it never stays
		// readable with no mark.
		c.mu.RLock()
		if !c.closed {
			one := uint64(1)
			_, _ = syscall.Write(h.efd, (*[8]byte)(unsafe.Pointer(&one))[:])
			h.kicked.Store(true)
		}
		c.mu.RUnlock()
	}
	c.kickPoller()
}

// wakeFrom clears the wake of a role holder at the start of its pass.
func (c *client) wakeFrom() {
	h := &c.ho
	if h.parked.Load() {
		h.parked.Store(false)
	}
	if h.kicked.Load() && h.kicked.Swap(false) {
		var b [8]byte
		_, _ = syscall.Read(h.efd, b[:])
	}
}

// park tells callers that the role holder is about to wait: false when the stack is not
// empty (then it passes again instead). Either a push sees parked and wakes it, or park
// sees the push (both are sequentially consistent).
func (c *client) park() bool {
	h := &c.ho
	h.parked.Store(true)
	if h.head.Load() != nil && !h.paused.Load() && !h.closing.Load() {
		h.parked.Store(false)
		return false
	}
	return true
}

// submitHanded submits the handed requests, oldest first, deferred, then flushes them in
// one write on this thread. Called by the role holder with c.mu read-held and c.closed false.
func (c *client) submitHanded() {
	h := &c.ho
	if h.head.Load() == nil || h.paused.Load() {
		return
	}
	top := h.head.Swap(nil)
	if h.paused.Load() {
		// Tests only: paused while this pass took the stack; calls pushed after the pause
		// are in it, so it goes back whole.
		tail := top
		for tail.next != nil {
			tail = tail.next
		}
		for {
			old := h.head.Load()
			tail.next = old
			if h.head.CompareAndSwap(old, top) {
				return
			}
		}
	}
	b := h.batch[:0]
	for w := top; w != nil; w = w.next {
		b = append(b, w)
	}
	taken := len(b)
	sent := 0
	for i := len(b) - 1; i >= 0; i-- {
		w := b[i]
		w.next = nil
		if !w.state.CompareAndSwap(hoQueued, hoSubmitting) {
			w.release() // cancelled: its caller left it to us
			continue
		}
		tag := h.table.put(w)
		r := C.gofrpc_call_queued_id(c.ptr, nil, (*C.uint8_t)(w.name), C.size_t(w.nameLen), (*C.uint8_t)(w.value),
			C.size_t(w.valueLen), C.uint32_t(w.timeoutMs), c.queue, C.uint64_t(tag), 1)
		if r.status != C.FASTRPC_STATUS_OK {
			h.table.take(tag)
			err := retErr(C.gofrpc_ret{status: r.status, msg: r.msg})
			w.state.Store(hoDone)
			w.deliver(result{err: err})
			continue
		}
		w.id = uint64(r.id)
		w.state.Store(hoSubmitted)
		sent++
	}
	clear(b)
	h.batch = b[:0]
	if sent > 0 {
		c.hot.pending.Add(int64(sent))
		c.handed.Add(uint64(sent))
	}
	h.queued.Add(-int64(taken)) // after pending: waiting() reads queued first
	if sent > 0 {
		C.fastrpc_client_flush(c.ptr)
	}
	runtime.KeepAlive(c)
}

// takeHanded is the waiter of a handed call's completion, now done (nil: its caller gave
// up, and w went back to the pool).
func (c *client) takeHanded(tag uint64) *waiter {
	w := c.ho.table.take(tag)
	if w == nil {
		return nil
	}
	if !w.state.CompareAndSwap(hoSubmitted, hoDone) {
		w.release() // cancelled: its caller left it to us
		return nil
	}
	return w
}

// sealHanded fails the calls still on the stack, and any left in the table, with ErrClosed
// (Close, holding the role, after the poller ended).
func (c *client) sealHanded() {
	h := &c.ho
	top := h.head.Swap(handoffSealed)
	fail := func(w *waiter, from uint32) {
		if !w.state.CompareAndSwap(from, hoDone) {
			w.release()
			return
		}
		w.deliver(result{err: errClosed("client")})
	}
	for w := top; w != nil && w != handoffSealed; {
		next := w.next
		w.next = nil
		fail(w, hoQueued)
		w = next
	}
	for i := range h.table.slots {
		if w := h.table.slots[i].w; w != nil {
			h.table.slots[i].w = nil
			fail(w, hoSubmitted)
		}
	}
	h.queued.Store(0)
	if h.efd >= 0 {
		syscall.Close(h.efd)
		h.efd = -1
	}
}

// handedWaiting reports whether callers have handed requests over that the role holder may
// take now.
func (c *client) handedWaiting() bool {
	if !c.handoff {
		return false
	}
	h := c.ho.head.Load()
	return h != nil && h != handoffSealed && !c.ho.paused.Load()
}
