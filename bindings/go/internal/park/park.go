// Package park hands one value to one goroutine that waits for it, parked by the Go
// runtime's own gopark and readied with goready: the cheapest hand-over Go has, without a
// channel's lock, sudog and copy into the parked goroutine's stack (the binding's direct
// parking, ../../park.go). Supported on amd64 and arm64 (Supported); elsewhere Deliver and
// Wait panic, and the binding uses its channels instead.
//
// A Slot's protocol: empty -> parked (the waiter's commit, which runs on the runtime's stack
// once the waiting goroutine has stopped) -> full (Deliver, which then readies the waiter);
// or empty -> full (delivered first: the commit sees it and the waiter runs on without
// parking). One Deliver per wait; the waiter empties the slot when it takes the value.
package park

import "sync/atomic"

const (
	empty uint32 = iota
	parked
	full
)

// core is the part of a Slot the commit touches: its state and the parked goroutine.
type core struct {
	state atomic.Uint32
	// Written by the commit without a write barrier (it runs on the runtime's stack; the
	// runtime never frees a goroutine, so the garbage collector need not see it).
	g uintptr
}

// Slot is where one value waits for one goroutine; the zero value is empty.
type Slot[T any] struct {
	c core
	v T
}

// Ready reports whether the value is in (the waiter then takes it with Take).
func (s *Slot[T]) Ready() bool { return s.c.state.Load() == full }

// Take takes the value (Ready reported true) and empties the slot.
func (s *Slot[T]) Take() T {
	v := s.v
	var zero T
	s.v = zero
	s.c.state.Store(empty) // g is left: the next commit overwrites it
	return v
}

// Deliver stores the value and readies the waiter if it parked. Once per wait.
func (s *Slot[T]) Deliver(v T) {
	s.v = v
	if s.c.state.Swap(full) == parked {
		ready(s.c.g)
	}
}

// Wait parks until the value is in and takes it; the slot is empty again after.
func (s *Slot[T]) Wait() T {
	if s.c.state.Load() != full {
		wait(&s.c)
		// Readied after Deliver's swap: this load sees it, and orders the reads of the value
		// after it (for the race detector too).
		_ = s.c.state.Load()
	}
	return s.Take()
}
