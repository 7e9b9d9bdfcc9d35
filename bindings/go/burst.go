package fastrpc

// Bursts: callers whose outcomes one poll of the completion queue handed over together
// usually call again at once. Each of them submits its next request deferred (queued, the
// library's writer not woken: fastrpc_client_call_queued_deferred), and the last of them to
// collect its outcome flushes (fastrpc_client_flush): their requests share one write, made
// in that caller's cgo call, instead of the first submit waking a library thread through a
// futex (often to a halted CPU) and the rest following in writes of a few frames.
//
// burst counts outcomes handed over and not yet collected: pollOnce adds a poll's outcomes
// before handing any over, and every receive of an outcome (and every discarded one)
// subtracts one. A submit defers while burst is above 0. No deferred request is left behind:
// a deferring caller stores deferred after its submit, then loads burst; a collector
// subtracts from burst, then swaps deferred; both are sequentially consistent, so either the
// collector sees deferred (and flushes) or the submitter sees the burst over (and flushes).
// A burst whose caller never collects (a goroutine that does not run again for long)
// delays the burst's requests, never loses them, and each still ends at its deadline.
//
// Outside a burst, a call made while few are in flight (ownFlushMax, in leader mode) is
// submitted deferred too and flushed at once by its own caller: the write happens in that
// cgo call when the library's writer is idle, instead of waking the writer's thread. With
// more in flight the writer's batches are worth the wakeup (measured: see README.md,
// "Bursts").

/*
#include "shim.h"
*/
import "C"

import (
	"os"
	"runtime"
)

// ownFlushMax is the most calls in flight at which a call outside a burst flushes its own
// request (see above).
const ownFlushMax = 64

// burstsFromEnv reports whether a new one-server client defers its bursts' requests (the
// default); FASTRPC_GO_BURST=0 turns it off (read when a client starts; the benchmark's
// "before" arm).
func burstsFromEnv() bool {
	return os.Getenv("FASTRPC_GO_BURST") != "0"
}

// deferredQueued follows a deferred submit that the library took.
func (c *client) deferredQueued() {
	c.hot.deferred.Store(true)
	if c.hot.burst.Load() <= 0 {
		c.flushDeferred()
	}
}

// collected counts n outcomes collected (or discarded); whoever ends the burst flushes.
func (c *client) collected(n int) {
	if !c.bursts {
		return
	}
	if c.hot.burst.Add(-int64(n)) <= 0 {
		c.flushDeferred()
	}
}

// flushDeferred writes the deferred requests, if any wait.
func (c *client) flushDeferred() {
	if !c.hot.deferred.Load() || !c.hot.deferred.Swap(false) {
		return
	}
	c.mu.RLock()
	if !c.closed {
		C.fastrpc_client_flush(c.ptr)
		c.flushes.Add(1)
	}
	c.mu.RUnlock()
	runtime.KeepAlive(c)
}

// cBool is b as a C int.
func cBool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
