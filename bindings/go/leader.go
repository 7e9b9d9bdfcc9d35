package fastrpc

// The client's leader mode (the default): a call that is the only one in flight
// waits in Go's netpoller on the completion queue's descriptor itself and takes its own
// completion, instead of the poller goroutine being woken and handing it over through a
// channel. That hand-over readies a second goroutine per call, and readying a goroutine
// wakes another OS thread for an idle P (wakep); the lone caller woken by the netpoller is
// run by the thread that polled. Whoever holds client.role waits on the descriptor and
// takes completions: a lone call (TryLock), else the poller goroutine, which waits for a
// kick while nothing is in flight. Every submit either leads or kicks the poller, and the
// poller gives the role back only when the queue is empty and no call is pending, so no
// completion is left untaken.

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strconv"
	"time"
)

// leadOrKick is the wait of a call in leader mode after its submit: a lone call (lone: it
// was the only one pending when submitted) that gets the role waits for its own outcome and
// returns it (true); otherwise, or when it gave up (ctx done, queue closed), the poller is
// kicked and the caller waits on its channel as in netpoll mode (false).
func (c *client) leadOrKick(ctx context.Context, w *waiter, lone bool, id uint64) (result, bool) {
	if lone && c.role.TryLock() {
		if c.queueGone {
			c.role.Unlock()
		} else {
			var stop func() bool
			var res result
			var ok bool
			if c.readFd {
				if ctx.Done() != nil {
					// Wakes the leader when ctx ends: the call cancelled in the library
					// completes into the queue, whose descriptor is in the one it waits on
					// (the caller turns that outcome into ctx's error).
					stop = context.AfterFunc(ctx, func() { c.cancel(id) })
				}
				res, ok = c.leadBlocking(w)
			} else {
				if ctx.Done() != nil {
					// Wakes the leader out of the netpoller when ctx ends: a deadline in the
					// past on the descriptor (whoever holds the role next clears a late one).
					f := c.qw.f
					stop = context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Unix(1, 0)) })
				}
				res, ok = c.lead(w, ctx.Done())
			}
			if stop != nil {
				stop()
			}
			c.role.Unlock()
			if ok {
				c.led.Add(1)
				if c.hot.pending.Load() > 0 {
					c.kickPoller()
				}
				return res, true
			}
		}
	}
	c.kickPoller()
	return result{}, false
}

func (c *client) kickPoller() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// leadBlocking is lead for a client that waits on its read descriptor: the lone caller's
// thread waits for it in C (poll), not in Go's netpoller, and reads as soon as it returns.
// The netpoller's wake goes through Go's scheduler (the polling M takes an idle P, then runs
// the goroutine); a thread blocked in poll returns straight into the goroutine (measured:
// README.md, "The lone leader's wait"). It serves every completion meanwhile, as lead
// does, until w has its outcome (true) or the queue is closed (false); the call's context
// ending cancels the call (leadOrKick), which completes it. Only a lone call waits so: its
// thread keeps its P while blocked, which Go's sysmon hands to another thread if others need
// it. The 100 ms timeout is a safety net only. The descriptor is level-triggered: readable
// with nothing this thread can take (the library's reader holding its state for a moment),
// it would return at once, so after two turns that found it readable already and took
// nothing, the leader sleeps briefly instead of spinning.
func (c *client) leadBlocking(w *waiter) (result, bool) {
	idle := 0
	for {
		n, open := c.readPoll()
		if res, ok := w.tryRecv(); ok {
			c.collected(1)
			return res, true
		}
		if !open {
			return result{}, false
		}
		if n > 0 {
			idle = 0
			continue
		}
		if c.handoff && !c.park() {
			continue
		}
		if idle >= 2 {
			time.Sleep(50 * time.Microsecond)
		}
		if c.qw.waitReadable(100) {
			idle++
		} else {
			idle = 0
		}
	}
}

// lead waits on the descriptor (the caller holds role) and takes completions, handing each
// to its waiter, until w has its outcome (returned, true), done is closed or the queue is
// closed (false).
func (c *client) lead(w *waiter, done <-chan struct{}) (result, bool) {
	ls := &c.ls
	ls.w, ls.done = w, done
	for {
		err := c.qw.rc.Read(c.leadFn)
		if err == nil || !c.clearDeadline(err) {
			res, got := ls.res, ls.got
			*ls = leadState{}
			return res, got
		}
	}
}

// leadState is the wait of the call in lead, under role. The function lead passes to the
// descriptor's Read (leadPass) reads it from here: that method value is made once per client,
// where a closure over lead's variables would be allocated for every lone call.
type leadState struct {
	w    *waiter
	done <-chan struct{}
	res  result
	got  bool
}

// leadPass is one readiness of lead's wait: it reads and takes completions until ls.w has
// its outcome, done is closed or the queue is closed (true: stop waiting), or there is
// nothing more to take (false: wait again).
func (c *client) leadPass(uintptr) bool {
	ls := &c.ls
	for {
		n, open := c.readPoll()
		if res, ok := ls.w.tryRecv(); ok {
			c.collected(1)
			ls.res, ls.got = res, true
			return true
		}
		if !open {
			return true
		}
		if ls.done != nil {
			select {
			case <-ls.done:
				return true
			default:
			}
		}
		if n == 0 {
			return false
		}
	}
}

// clearDeadline clears a deadline set to wake a leader (by its ctx's AfterFunc, possibly
// after it left) and reports whether err was that.
func (c *client) clearDeadline(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	_ = c.qw.f.SetReadDeadline(time.Time{})
	return true
}

// pollLeader is the poller goroutine in leader mode: kicked when a call is submitted that no
// leader serves, it takes the role and serves until the queue is empty with nothing
// pending; after close() it serves until the queue is closed, then returns.
func (c *client) pollLeader() {
	for {
		select {
		case <-c.kick:
		case <-c.closing:
		}
		c.role.Lock()
		exit := c.serve()
		c.role.Unlock()
		if exit {
			return
		}
	}
}

// serve takes completions, waiting on the descriptor, until the queue is empty and no call
// is pending (false) or the queue is shut down and empty (true). Called with role held.
func (c *client) serve() bool {
	c.serveExit = false
	for {
		err := c.qw.rc.Read(c.serveFn)
		if err == nil {
			return c.serveExit
		}
		if !c.clearDeadline(err) {
			// Not pollable after all: poll until the queue is closed, reading the connection
			// too when the library leaves that to us.
			if c.callerReads {
				pollBlocking(c.readPollSlow)
			} else {
				pollBlocking(c.pollOnce)
			}
			return true
		}
	}
}

// emptyYields is how many passes that found nothing the role holder yields for, instead of
// waiting in the netpoller, while the hand-off is on (handoff.go): callers run meanwhile and
// hand more over, and the server's next responses often arrive within those passes. Go
// polls the network only when a P runs out of work, so with every P busy a waiting role
// holder learns of the socket's readiness late. FASTRPC_GO_EMPTY_YIELDS sets it (read when a
// client starts; 0 is the benchmark's "before" arm). Measured: README.md, "Hand-off".
const emptyYields = 8

func emptyYieldsFromEnv() int {
	if n, err := strconv.Atoi(os.Getenv("FASTRPC_GO_EMPTY_YIELDS")); err == nil && n >= 0 {
		return n
	}
	return emptyYields
}

// servePass is one readiness of serve's wait (made once per client, as leadPass): true to
// stop waiting (serveExit: the queue is closed), false to wait again. A pass that finds
// nothing yields instead of waiting while the hand-off is on (emptyYields), or else makes
// one of the short waits of spin.go.
func (c *client) servePass(uintptr) bool {
	empty := 0
	for {
		n, open := c.readPoll()
		if !open {
			c.serveExit = true
			return true
		}
		if n > 0 {
			empty = 0
			c.spinResp.hit()
			runtime.Gosched() // let the woken callers run (and submit more)
			continue
		}
		if c.ho.busy.Load() {
			c.spinResp.cancel() // a short wait left unfinished does not carry over
			if empty < c.emptyYields {
				empty++
				runtime.Gosched()
				continue
			}
		} else if c.hot.pending.Load() > 0 {
			if c.shortWait() {
				runtime.Gosched()
				continue
			}
		} else {
			c.spinResp.cancel()
			if c.lingerRole() {
				continue
			}
		}
		if c.hot.pending.Load() > 0 {
			if c.handoff && !c.park() {
				continue
			}
			return false
		}
		select {
		case <-c.closing:
			return false
		default:
			return true
		}
	}
}

// shortWait reports whether the role holder, with calls pending and nothing read, yields and
// reads again rather than parking (spin.go).
func (c *client) shortWait() bool {
	s := &c.spinResp
	if !s.waiting() {
		return s.window > 0 && s.allowed() && s.begin(time.Now())
	}
	return s.more(time.Now())
}

// lingerRole keeps the role, with nothing pending and nothing read, for up to a window
// (spin.go), yielding to the callers: true once one of them submits (serve on), false when
// the window ran out, it backs off, or the client closes (give the role up).
func (c *client) lingerRole() bool {
	s := &c.spinIdle
	if s.window == 0 || !s.allowed() || !s.begin(time.Now()) {
		return false
	}
	for {
		runtime.Gosched()
		if c.hot.pending.Load() > 0 || c.handedWaiting() {
			s.hit()
			return true
		}
		select {
		case <-c.closing:
			s.cancel()
			return false
		default:
		}
		if !s.more(time.Now()) {
			return false
		}
	}
}
