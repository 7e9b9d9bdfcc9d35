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
	"syscall"
	"testing"
	"time"
	"unsafe"
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
	failOnAny(t, errs)
	if st := c.Stats(); st.Responses != callers*each {
		t.Fatalf("responses %d, want %d", st.Responses, callers*each)
	}
	if c.c.handed.Load() == 0 {
		t.Fatal("no call was handed over (300 callers)")
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
		burst(t, c, 100, 20)
		if c.c.handoff || c.c.handed.Load() != 0 {
			t.Fatalf("FASTRPC_GO_HANDOFF=0: handoff %v, %d handed", c.c.handoff, c.c.handed.Load())
		}
	})
}

// burst makes each calls from g goroutines at once and waits for them.
func burst(t *testing.T, c *Client, g, each int) {
	var wg sync.WaitGroup
	for k := 0; k < g; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := c.Call(context.Background(), []byte("x"), nil); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
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

// closeEndsAll closes c, and each of the n outcomes on out must be ErrClosed.
func closeEndsAll(t *testing.T, c *Client, out <-chan error, n int) {
	t.Helper()
	within(t, 5*time.Second, "Close", func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	within(t, 5*time.Second, "the calls", func() {
		for i := 0; i < n; i++ {
			if err := <-out; !errors.Is(err, ErrClosed) {
				t.Errorf("want ErrClosed, got %v", err)
			}
		}
	})
}

// closeSubmittedHanded makes n calls of "hold" (context.Background) on a new client of s,
// most of them handed over and submitted (heldCalls, then resume) until the server holds them
// all, then closes the client: each ends with ErrClosed.
func closeSubmittedHanded(t *testing.T, s *Server, held <-chan struct{}, n int) {
	t.Helper()
	c, err := NewClient(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	out, _ := heldCalls(t, c, held, n, func(int) (context.Context, context.CancelFunc) {
		return context.Background(), func() {}
	})
	resume(t, c)
	within(t, 5*time.Second, "the handed calls held", func() {
		for i := heldDirect; i < n; i++ {
			<-held
		}
	})
	if h := c.c.handed.Load(); h < uint64(n-heldDirect) {
		t.Fatalf("%d calls handed, want at least %d", h, n-heldDirect)
	}
	closeEndsAll(t, c, out, n)
}

// TestHandoffClose: Close ends handed calls, queued and submitted, with ErrClosed; Shutdown
// waits for handed calls to finish.
func TestHandoffClose(t *testing.T) {
	const n = 100
	s, held := holdServer(t, 3*n)
	c, err := NewClient(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	out, _ := heldCalls(t, c, held, n, func(int) (context.Context, context.CancelFunc) {
		return context.Background(), func() {}
	})
	// Shutdown's count: the calls in flight and those still on the stack, exactly.
	if w := c.c.waiting(); w != n {
		t.Fatalf("waiting() %d with %d calls held or queued, want %d", w, n, n)
	}
	closeEndsAll(t, c, out, n)
	if _, err := c.Call(context.Background(), []byte("x"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Call after Close: %v", err)
	}

	t.Run("submitted", func(t *testing.T) {
		// Handed calls that the role holder submitted, held by the server: Close ends them
		// with ErrClosed too.
		closeSubmittedHanded(t, s, held, n)
	})

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

// TestHandoffWakeDrained: after bursts of handed calls, the eventfd that wakes a parked role
// holder is never left readable (a lone call's wait in poll would then return at once and
// spin): whoever writes it marks it after writing, and the next pass reads it. The race it
// guards against (a mark taken by the role holder between another's mark and write) is
// rare: a review saw it in 0-2 of 150 bursts; 600 bursts take about a second.
func TestHandoffWakeDrained(t *testing.T) {
	s := startServer(t, echo)
	c := newClient(t, s.Addr())
	for b := 0; b < 600; b++ {
		burst(t, c, 100, 5)
		mustEqual(t, call(t, c, "lone", ""), []byte("lone")) // a pass after every push
		if readableNow(c.c.ho.efd) {
			t.Fatalf("burst %d: the wake eventfd is left readable", b)
		}
	}
	if c.c.handed.Load() == 0 {
		t.Fatal("no call was handed over")
	}
}

// readableNow reports whether fd is readable (poll without waiting).
func readableNow(fd int) bool {
	p := struct {
		fd             int32
		events, revent int16
	}{fd: int32(fd), events: 1} // POLLIN
	n, _, errno := syscall.Syscall(syscall.SYS_POLL, uintptr(unsafe.Pointer(&p)), 1, 0)
	return errno == 0 && n == 1
}

// TestWornSlotTags: a waiter slot reused 2^31 times still gives tags without the hand-off's
// top bit, so its completions reach their callers (with the hand-off on or off), and a lone
// call's deadline still ends it.
func TestWornSlotTags(t *testing.T) {
	for _, handoff := range []string{"1", "0"} {
		t.Run("handoff="+handoff, func(t *testing.T) {
			t.Setenv("FASTRPC_GO_HANDOFF", handoff)
			s, held := holdServer(t, 8)
			c := newClient(t, s.Addr())
			for i := range c.c.waiters.shards {
				sh := &c.c.waiters.shards[i]
				sh.mu.Lock()
				sh.slots = []waiterSlot{{gen: 1<<31 - 1}}
				sh.free = []uint32{0}
				sh.mu.Unlock()
			}
			within(t, 10*time.Second, "calls on worn slots", func() {
				for i := 0; i < 200; i++ { // every shard's one slot, across the wrap of bit 31
					mustEqual(t, call(t, c, "worn", fmt.Sprint(i)), []byte("worn"+fmt.Sprint(i)))
				}
			})
			go func() { <-held }()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			within(t, 5*time.Second, "a lone call past its deadline", func() {
				if _, err := c.Call(ctx, []byte("hold"), nil); !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("want DeadlineExceeded, got %v", err)
				}
			})
		})
	}
}
