package fastrpc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/fastrpc-rs/fastrpc/bindings/go/internal/park"
)

// TestDirectWaits: calls whose context never ends wait in their waiter's slot (direct
// parking, where supported) or on its channel (FASTRPC_GO_DIRECT=0), and both deliver every
// outcome exactly: lone calls (the leader takes its own), 300 concurrent callers (the
// hand-off: the role holder delivers), and Close of calls the server holds (ErrClosed
// delivered to waiters in the table and to handed ones).
func TestDirectWaits(t *testing.T) {
	if directFromEnv != park.Supported {
		t.Fatalf("direct parking %v by default, want %v", directFromEnv, park.Supported)
	}
	prev := directFromEnv
	t.Cleanup(func() { directFromEnv = prev })
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			if direct && !park.Supported {
				t.Skip("direct parking is not supported here")
			}
			directFromEnv = direct
			s := startServer(t, echo)
			c := newClient(t, s.Addr())
			ctx := context.Background()
			for i := 0; i < 50; i++ {
				v := strconv.Itoa(i)
				resp, err := c.Call(ctx, []byte("l"), []byte(v))
				if err != nil {
					t.Fatal(err)
				}
				mustEqual(t, resp, []byte("l"+v))
			}
			if c.c.led.Load() == 0 {
				t.Fatal("no lone call led")
			}
			const g, per = 300, 20
			errs := make(chan error, g)
			var wg sync.WaitGroup
			for k := 0; k < g; k++ {
				wg.Add(1)
				go func(k int) {
					defer wg.Done()
					buf := make([]byte, 0, 16)
					for i := 0; i < per; i++ {
						v := strconv.Itoa(k*per + i)
						var err error
						buf, err = c.CallAppend(ctx, buf[:0], []byte("c"), []byte(v))
						if err != nil || string(buf) != "c"+v {
							errs <- fmt.Errorf("call %s: %q, %v", v, buf, err)
							return
						}
					}
				}(k)
			}
			within(t, 60*time.Second, "the concurrent calls", wg.Wait)
			failOnAny(t, errs)
			if c.c.handed.Load() == 0 {
				t.Fatal("no call handed over")
			}

			// Held by the server, most handed over (heldCalls), then closed.
			const n = 100
			hs, held := holdServer(t, n)
			closeSubmittedHanded(t, hs, held, n)
		})
	}
}

// TestWaiterSize: a waiter is two cache lines (its size class is 128 bytes, so it starts
// on a line): every handed call moves each of its lines between CPUs, both ways.
func TestWaiterSize(t *testing.T) {
	if n := unsafe.Sizeof(waiter{}); n > 128 {
		t.Fatalf("waiter is %d bytes, want at most 128", n)
	}
}

// deadlineOnly is a context that overrides Deadline alone: it never ends (Done is nil), but
// its deadline is the call's.
type deadlineOnly struct {
	context.Context
	dl time.Time
}

func (c deadlineOnly) Deadline() (time.Time, bool) { return c.dl, true }

// TestDirectKeepsDeadline: with the hand-off on, a call whose context never ends but has a
// deadline does not take handDirect's path (which has no deadline): it ends at its deadline
// with ErrTimeout and context.DeadlineExceeded (found by a review: it waited for the server).
func TestDirectKeepsDeadline(t *testing.T) {
	const n = 64
	s, held := holdServer(t, n+1)
	c := newClient(t, s.Addr())
	for i := 0; i < n; i++ {
		go func() { _, _ = c.Call(context.Background(), []byte("hold"), nil) }()
	}
	within(t, 10*time.Second, "the calls held", func() {
		for i := 0; i < n; i++ {
			<-held
		}
	})
	within(t, 10*time.Second, "the hand-off on", func() {
		for !c.c.ho.busy.Load() {
			c.c.wakeRoleHolder()
			time.Sleep(time.Millisecond)
		}
	})
	ctx := deadlineOnly{context.Background(), time.Now().Add(100 * time.Millisecond)}
	if c.c.handsDirect(ctx) {
		t.Fatal("a call with a deadline takes handDirect's path")
	}
	if !c.c.handsDirect(context.Background()) && park.Supported {
		t.Fatal("a call without a deadline does not take handDirect's path with the hand-off on")
	}
	start := time.Now()
	var err error
	within(t, 10*time.Second, "the call with a deadline", func() {
		_, err = c.Call(ctx, []byte("hold"), nil)
	})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("after %v: %v, want ErrTimeout and context.DeadlineExceeded", time.Since(start), err)
	}
}
