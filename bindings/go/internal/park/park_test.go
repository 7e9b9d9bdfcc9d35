package park

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// within fails the test when f does not return within d.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: not done within %v", what, d)
	}
}

func skipUnsupported(t *testing.T) {
	if !Supported {
		t.Skip("park: not supported on " + runtime.GOARCH)
	}
}

// slot is a value and its Parker, as the binding's waiter holds them.
type slot[T any] struct {
	p Parker
	v T
}

func (s *slot[T]) deliver(v T) {
	s.v = v
	s.p.Done()
}

func (s *slot[T]) wait() T {
	s.p.Wait()
	v := s.v
	var zero T
	s.v = zero
	return v
}

// Done before the wait: the waiter does not park, and the Parker is empty after.
func TestDoneFirst(t *testing.T) {
	skipUnsupported(t)
	var s slot[int]
	if s.p.IsDone() {
		t.Fatal("a new Parker is done")
	}
	s.deliver(7)
	if !s.p.IsDone() {
		t.Fatal("not done after Done")
	}
	if v := s.wait(); v != 7 {
		t.Fatalf("Wait: %d, want 7", v)
	}
	if s.p.IsDone() || s.p.state.Load() != empty {
		t.Fatalf("state %d after Wait, want empty", s.p.state.Load())
	}
	s.deliver(8)
	if !s.p.IsDone() {
		t.Fatal("not done after the second Done")
	}
	s.p.Reset()
	if s.p.state.Load() != empty {
		t.Fatalf("state %d after Reset, want empty", s.p.state.Load())
	}
}

// A waiter that parked is readied by Done and sees the value; the Parker is reusable.
func TestWaitParks(t *testing.T) {
	skipUnsupported(t)
	var s slot[string]
	for round := 0; round < 100; round++ {
		got := make(chan string)
		go func() { got <- s.wait() }()
		within(t, 5*time.Second, "the waiter parks", func() {
			for s.p.state.Load() != parked {
				runtime.Gosched()
			}
		})
		s.deliver("v")
		within(t, 5*time.Second, "the parked waiter gets its value", func() {
			if v := <-got; v != "v" {
				t.Errorf("Wait: %q, want v", v)
			}
		})
		if s.p.state.Load() != empty {
			t.Fatalf("round %d: state %d after Wait, want empty", round, s.p.state.Load())
		}
	}
}

// Many goroutines, each waiting on its own Parker in turn while others say done in any
// order (before or after the wait parks): every value arrives exactly once, nothing hangs.
// Run with -race, and with one P.
func TestManyHandOvers(t *testing.T) {
	skipUnsupported(t)
	for _, procs := range []int{1, runtime.GOMAXPROCS(0)} {
		prev := runtime.GOMAXPROCS(procs)
		const waiters, rounds = 64, 2000
		slots := make([]slot[int], waiters)
		turn := make(chan int, waiters)
		sums := make([]int, waiters)
		var wg sync.WaitGroup
		for i := range slots {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				for r := 1; r <= rounds; r++ {
					turn <- i
					sums[i] += slots[i].wait()
				}
			}(i)
		}
		var dwg sync.WaitGroup
		for d := 0; d < 4; d++ {
			dwg.Add(1)
			go func() {
				defer dwg.Done()
				for i := range turn {
					if i%3 == 0 {
						runtime.Gosched() // let some park first
					}
					slots[i].deliver(i + 1)
				}
			}()
		}
		within(t, 60*time.Second, "every round", wg.Wait)
		close(turn)
		dwg.Wait()
		runtime.GOMAXPROCS(prev)
		for i, s := range sums {
			if s != (i+1)*rounds {
				t.Fatalf("GOMAXPROCS %d: waiter %d got %d, want %d", procs, i, s, (i+1)*rounds)
			}
		}
	}
}
