package fastrpc

// Tests of the hand-off (handoff.go): with more than handoffMin calls in flight, the role
// holder submits the callers' requests; every call still gets its own response exactly once,
// cancels and deadlines end handed calls (queued or submitted) at once and free their slots,
// and Close and Shutdown reach handed calls too.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hoIdle reports the role holder's table empty and nothing pending (read under the role, once
// the poller is done serving).
func hoIdle(c *Client) (int, int64) {
	c.c.role.Lock()
	defer c.c.role.Unlock()
	n := 0
	for _, s := range c.c.ho.table.slots {
		if s.w != nil {
			n++
		}
	}
	return n, c.c.hot.pending.Load()
}

func TestHandoffCalls(t *testing.T) {
	s := startServer(t, echo)
	c := newClient(t, s.Addr())
	if !c.c.handoff {
		t.Fatal("a one-server client does not hand off by default")
	}
	const callers, each = 300, 50
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	within(t, 60*time.Second, "the calls", func() {
		for g := 0; g < callers; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				buf := make([]byte, 0, 64)
				for i := 0; i < each; i++ {
					name, value := fmt.Sprintf("c%d/", g), fmt.Sprintf("v%d", i)
					if g%60 == 0 && i%5 == 0 {
						value += strings.Repeat("x", 70000) // larger than a read or write buffer
					} else if g%7 == 0 {
						value += strings.Repeat("y", 1000)
					}
					var err error
					// Call and CallAppend take the same path.
					if i%2 == 0 {
						buf, err = c.CallAppend(context.Background(), buf[:0], []byte(name), []byte(value))
					} else {
						buf, err = c.Call(context.Background(), []byte(name), []byte(value))
					}
					if err != nil || string(buf) != name+value {
						errs <- fmt.Errorf("caller %d call %d: %q, %v", g, i, buf, err)
						return
					}
				}
			}(g)
		}
		wg.Wait()
	})
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Responses != callers*each {
		t.Fatalf("responses %d, want %d", st.Responses, callers*each)
	}
	if h := c.c.handed.Load(); h == 0 || h >= callers*each {
		t.Fatalf("%d of %d calls handed over; want some (300 callers), not all", h, callers*each)
	}
	if n, p := hoIdle(c); n != 0 || p != 0 {
		t.Fatalf("after every call returned: %d handed calls in the table, %d pending", n, p)
	}

	if c.c.emptyYields != emptyYields {
		t.Fatalf("empty passes %d, want the default %d", c.c.emptyYields, emptyYields)
	}
	t.Run("empty passes", func(t *testing.T) {
		for v, want := range map[string]int{"0": 0, "3": 3, "-1": emptyYields, "x": emptyYields} {
			t.Setenv("FASTRPC_GO_EMPTY_YIELDS", v)
			if got := newClient(t, s.Addr()).c.emptyYields; got != want {
				t.Errorf("FASTRPC_GO_EMPTY_YIELDS=%s: %d, want %d", v, got, want)
			}
		}
	})
	t.Run("off", func(t *testing.T) {
		t.Setenv("FASTRPC_GO_HANDOFF", "0")
		c := newClient(t, s.Addr())
		var wg sync.WaitGroup
		for g := 0; g < 100; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					if _, err := c.Call(context.Background(), []byte("x"), nil); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if c.c.handoff || c.c.handed.Load() != 0 {
			t.Fatalf("FASTRPC_GO_HANDOFF=0: handoff %v, %d handed", c.c.handoff, c.c.handed.Load())
		}
	})
}

// heldDirect is how many calls heldCalls starts before the hand-off is on.
const heldDirect = handoffMin + 8

// heldCalls starts n calls of "hold" on c and returns their outcomes and a cancel for each:
// first heldDirect, held by the server, which turns the hand-off on (most are submitted by
// their callers; the last may be handed over as it turns on); then the rest, with the role
// holder paused, so that they stay on the hand-off stack. It returns once they are.
func heldCalls(t *testing.T, c *Client, held <-chan struct{}, n int, ctxOf func(i int) (context.Context, context.CancelFunc)) (<-chan error, []context.CancelFunc) {
	if c.c.ho.busy.Load() {
		t.Fatal("the hand-off is on before any call")
	}
	out := make(chan error, n)
	cancels := make([]context.CancelFunc, n)
	start := func(i int) {
		ctx, cancel := ctxOf(i)
		cancels[i] = cancel
		go func() {
			_, err := c.Call(ctx, []byte("hold"), []byte(fmt.Sprint(i)))
			out <- err
		}()
	}
	var got atomic.Int64
	defer func() {
		if t.Failed() {
			t.Logf("held %d, pending %d (library: %d), handed %d", got.Load(), c.c.hot.pending.Load(), c.PendingRequests(), c.c.handed.Load())
			for k := 0; k < 5; k++ {
				select {
				case err := <-out:
					t.Logf("a call ended: %v", err)
				default:
				}
			}
		}
	}()
	for i := 0; i < heldDirect; i++ {
		start(i)
	}
	within(t, 10*time.Second, "the direct calls held, and the hand-off on", func() {
		for ; got.Load() < heldDirect; got.Add(1) {
			<-held
		}
		for !c.c.ho.busy.Load() {
			c.c.wakeRoleHolder() // a pass of the role holder sees them in flight
			time.Sleep(time.Millisecond)
		}
	})
	c.c.ho.paused.Store(true)
	for i := heldDirect; i < n; i++ {
		start(i)
	}
	within(t, 10*time.Second, "the handed calls on the stack", func() {
		for {
			queued := 0
			for w := c.c.ho.head.Load(); w != nil; w = w.next {
				queued++
			}
			if queued == n-heldDirect {
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	return out, cancels
}

// resume lets the role holder take the stack again, wakes it and waits until it did.
func resume(t *testing.T, c *Client) {
	c.c.ho.paused.Store(false)
	c.c.wakeRoleHolder()
	within(t, 5*time.Second, "the role holder taking the stack", func() {
		for c.c.ho.head.Load() != nil {
			time.Sleep(time.Millisecond)
		}
	})
}

// TestHandoffCancel: handed calls cancelled while still on the stack and after their submit
// return context.Canceled at once and free their slots; so do their deadlines
// (DeadlineExceeded and ErrTimeout); many rounds never overflow the default 1000 pending.
func TestHandoffCancel(t *testing.T) {
	const n, rounds = 200, 25 // 5000 cancelled calls, 4000 or more of them handed
	s, held := holdServer(t, n*rounds)
	c := newClient(t, s.Addr())
	for r := 0; r < rounds; r++ {
		out, cancels := heldCalls(t, c, held, n, func(int) (context.Context, context.CancelFunc) {
			return context.WithCancel(context.Background())
		})
		if r%2 == 1 {
			// Submitted first: the role holder takes the stack, the server holds them all.
			resume(t, c)
			within(t, 10*time.Second, "the handed calls held", func() {
				for i := heldDirect; i < n; i++ {
					<-held
				}
			})
		}
		for _, cancel := range cancels {
			cancel()
		}
		within(t, 10*time.Second, "the cancelled calls", func() {
			for i := 0; i < n; i++ {
				if err := <-out; err != context.Canceled {
					t.Fatalf("round %d: want context.Canceled, got %v (overflow: %v)", r, err, errors.Is(err, ErrOverflow))
				}
			}
		})
		if p := c.PendingRequests(); p != 0 {
			t.Fatalf("round %d: %d calls still pending in the library after every call was cancelled", r, p)
		}
		resume(t, c)
		// The cancelled calls' completions reach the role holder after their callers left.
		within(t, 5*time.Second, "the role holder taking the completions", func() {
			for c.c.hot.pending.Load() != 0 || c.c.ho.busy.Load() {
				c.c.wakeRoleHolder()
				time.Sleep(time.Millisecond)
			}
		})
	}
	mustEqual(t, call(t, c, "after", "-cancel"), []byte("after-cancel"))
	within(t, 5*time.Second, "the role holder idle", func() {
		for {
			if tn, p := hoIdle(c); tn == 0 && p == 0 {
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	// The odd rounds' queued calls, and any of the first calls handed as it turned on.
	if h, want := c.c.handed.Load(), uint64(n-heldDirect)*(rounds/2); h < want || h > want+heldDirect*rounds {
		t.Fatalf("%d calls submitted by the role holder, want %d to %d", h, want, want+heldDirect*rounds)
	}
	if st := c.Stats(); st.Errors.Overflow != 0 {
		t.Fatalf("%d overflows", st.Errors.Overflow)
	}

	// Deadlines of queued calls.
	stop := make(chan struct{})
	defer close(stop)
	out, _ := heldCalls(t, c, held, n, func(int) (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 300*time.Millisecond)
	})
	go func() { // the late holds need no one
		for {
			select {
			case <-held:
			case <-stop:
				return
			}
		}
	}()
	within(t, 10*time.Second, "the calls past their deadline", func() {
		for i := 0; i < n; i++ {
			if err := <-out; !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrTimeout) {
				t.Fatalf("want DeadlineExceeded and ErrTimeout, got %v", err)
			}
		}
	})
	resume(t, c)
	mustEqual(t, call(t, c, "after", "-deadline"), []byte("after-deadline"))
}

// TestHandoffClose: Close ends handed calls, queued and submitted, with ErrClosed; Shutdown
// waits for handed calls to finish.
func TestHandoffClose(t *testing.T) {
	const n = 100
	s, held := holdServer(t, 2*n)
	c, err := NewClient(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	out, _ := heldCalls(t, c, held, n, func(int) (context.Context, context.CancelFunc) {
		return context.Background(), func() {}
	})
	within(t, 5*time.Second, "Close", func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	within(t, 5*time.Second, "the calls", func() {
		for i := 0; i < n; i++ {
			if err := <-out; !errors.Is(err, ErrClosed) {
				t.Fatalf("want ErrClosed, got %v", err)
			}
		}
	})
	if _, err := c.Call(context.Background(), []byte("x"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Call after Close: %v", err)
	}

	t.Run("shutdown", func(t *testing.T) {
		s := startServer(t, slowHandler(300*time.Millisecond))
		c, err := NewClient(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := func(from, to int) {
			for i := from; i < to; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					v := fmt.Sprint(i)
					resp, err := c.Call(context.Background(), []byte("d"), []byte(v))
					if err != nil || string(resp) != "d"+v {
						t.Errorf("drained call: %q, %v", resp, err)
					}
				}(i)
			}
		}
		start(0, heldDirect)
		within(t, 5*time.Second, "the hand-off on", func() {
			for !c.c.ho.busy.Load() {
				c.c.wakeRoleHolder()
				time.Sleep(time.Millisecond)
			}
		})
		start(heldDirect, n)
		within(t, 5*time.Second, "the calls in flight", func() {
			for c.c.hot.pending.Load() < n {
				time.Sleep(time.Millisecond)
			}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		wg.Wait()
		if c.c.handed.Load() == 0 {
			t.Fatal("no call was handed over")
		}
	})
}
