// Package park lets one goroutine wait for one other to say "done", parked by the Go
// runtime's own gopark and readied with goready: the cheapest hand-over Go has, without a
// channel's lock, sudog and copy into the parked goroutine's stack (the binding's direct
// parking, ../../park.go: the value itself waits beside the Parker, where the waiter put
// it). Supported on amd64 and arm64 (Supported); elsewhere Done and Wait panic, and the
// binding uses its channels instead.
//
// A Parker's protocol: empty -> parked (the waiter's commit, which runs on the runtime's
// stack once the waiting goroutine has stopped) -> done (Done, which then readies the
// waiter); or empty -> done (Done first: the commit sees it and the waiter runs on without
// parking). One Done per wait; Wait empties the Parker when it returns.
package park

import "sync/atomic"

const (
	empty uint32 = iota
	parked
	done
)

// Parker is where one goroutine waits for another's Done; the zero value is empty.
type Parker struct {
	state atomic.Uint32
	// Written by the commit without a write barrier (it runs on the runtime's stack; the
	// runtime never frees a goroutine, so the garbage collector need not see it).
	g uintptr
}

// IsDone reports whether Done was called (the waiter then calls Reset, not Wait).
func (p *Parker) IsDone() bool { return p.state.Load() == done }

// Reset empties a Parker whose Done was seen (IsDone).
func (p *Parker) Reset() { p.state.Store(empty) }

// Done says done: what the waiter is to read must be written before, and the waiter is
// readied if it parked. Once per wait.
func (p *Parker) Done() {
	if p.state.Swap(done) == parked {
		ready(p.g)
	}
}

// Wait parks until Done (what was written before Done is then visible) and empties the
// Parker.
func (p *Parker) Wait() {
	if p.state.Load() != done {
		wait(p)
	}
	// Readied after Done's swap (or it was done already): this swap sees it, orders the
	// reads after it (for the race detector too) and empties the Parker.
	p.state.Swap(empty)
}
