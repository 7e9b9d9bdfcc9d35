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

// A value delivered before the wait is taken without parking, and the slot is empty after.
func TestDeliverFirst(t *testing.T) {
	skipUnsupported(t)
	var s Slot[int]
	if s.Ready() {
		t.Fatal("a new slot is ready")
	}
	s.Deliver(7)
	if !s.Ready() {
		t.Fatal("not ready after Deliver")
	}
	if v := s.Wait(); v != 7 {
		t.Fatalf("Wait: %d, want 7", v)
	}
	if s.Ready() || s.c.state.Load() != empty {
		t.Fatalf("state %d after Wait, want empty", s.c.state.Load())
	}
}

// A waiter that parked is readied by Deliver with the value; the slot is reusable.
func TestWaitParks(t *testing.T) {
	skipUnsupported(t)
	var s Slot[string]
	for round := 0; round < 100; round++ {
		got := make(chan string)
		go func() { got <- s.Wait() }()
		within(t, 5*time.Second, "the waiter parks", func() {
			for s.c.state.Load() != parked {
				runtime.Gosched()
			}
		})
		s.Deliver("v")
		within(t, 5*time.Second, "the parked waiter gets its value", func() {
			if v := <-got; v != "v" {
				t.Errorf("Wait: %q, want v", v)
			}
		})
		if s.c.state.Load() != empty {
			t.Fatalf("round %d: state %d after Wait, want empty", round, s.c.state.Load())
		}
	}
}

// Many goroutines, each waiting on its own slot in turn while others deliver in any order
// (before or after the wait parks): every value arrives exactly once, nothing hangs. Run
// with -race, and with one P.
func TestManyHandOvers(t *testing.T) {
	skipUnsupported(t)
	for _, procs := range []int{1, runtime.GOMAXPROCS(0)} {
		prev := runtime.GOMAXPROCS(procs)
		const waiters, rounds = 64, 2000
		slots := make([]Slot[int], waiters)
		turn := make(chan int, waiters)
		sums := make([]int, waiters)
		var wg sync.WaitGroup
		for i := range slots {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				for r := 1; r <= rounds; r++ {
					turn <- i
					sums[i] += slots[i].Wait()
				}
			}(i)
		}
		// Deliverers: take a waiter's turn and deliver its round's value.
		var dwg sync.WaitGroup
		for d := 0; d < 4; d++ {
			dwg.Add(1)
			go func() {
				defer dwg.Done()
				for i := range turn {
					if i%3 == 0 {
						runtime.Gosched() // let some park first
					}
					slots[i].Deliver(i + 1)
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
