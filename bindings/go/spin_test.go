package fastrpc

// Tests of the role holder's short waits (spin.go): the back-off policy on a clock of the
// test's own, and calls through a real server with the waits on, long and off.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSpinPolicy(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := &spinState{window: 100 * time.Microsecond}
	if s.waiting() {
		t.Fatal("waiting before any wait")
	}
	if !s.begin(t0) || !s.waiting() {
		t.Fatal("the first wait is not a short one")
	}
	if !s.more(t0.Add(99 * time.Microsecond)) {
		t.Fatal("the window ended early")
	}
	s.hit()
	if s.hits.Load() != 1 || s.misses.Load() != 0 || s.waiting() {
		t.Fatalf("after a hit: hits %d, misses %d, waiting %v", s.hits.Load(), s.misses.Load(), s.waiting())
	}
	s.hit() // no wait under way: not counted
	if s.hits.Load() != 1 {
		t.Fatalf("a hit without a wait counted: %d", s.hits.Load())
	}

	// Windows that all run out: after each, the next 1, 2, 4, ... 64, 64 waits park at once.
	now := t0
	for i, want := range []int{1, 2, 4, 8, 16, 32, 64, 64, 64} {
		if !s.begin(now) {
			t.Fatalf("miss %d: the wait after the back-off is not a short one", i)
		}
		if s.more(now.Add(100 * time.Microsecond)) {
			t.Fatalf("miss %d: the window did not run out at 100 µs", i)
		}
		if s.waiting() || s.misses.Load() != uint64(i+1) {
			t.Fatalf("miss %d: waiting %v, misses %d", i, s.waiting(), s.misses.Load())
		}
		for k := 0; k < want; k++ {
			if s.begin(now) {
				t.Fatalf("miss %d: wait %d of the back-off of %d was a short one", i, k, want)
			}
		}
		now = now.Add(time.Millisecond)
	}
	// A hit halves the back-off (64 now): one hit, then a miss backs off for 64 waits again;
	// seven hits in a row, then a miss backs off for one.
	missThenSkips := func(what string, want int) {
		t.Helper()
		if !s.begin(now) || s.more(now.Add(time.Second)) {
			t.Fatalf("%s: the window did not run out", what)
		}
		for k := 0; k < want; k++ {
			if s.begin(now) {
				t.Fatalf("%s: wait %d of the back-off of %d was a short one", what, k, want)
			}
		}
		if !s.begin(now) {
			t.Fatalf("%s: the back-off was longer than %d waits", what, want)
		}
		s.cancel()
	}
	if !s.begin(now) {
		t.Fatal("no short wait after the back-off")
	}
	s.hit()
	missThenSkips("one hit", 64)
	for i := 0; i < 7; i++ {
		if !s.begin(now) {
			t.Fatalf("wait %d after a hit was not a short one", i)
		}
		s.hit()
	}
	missThenSkips("seven hits", 1)
	// cancel ends a wait uncounted.
	h, m := s.hits.Load(), s.misses.Load()
	s.cancel()
	if s.waiting() || s.hits.Load() != h || s.misses.Load() != m {
		t.Fatal("cancel counted or left the wait under way")
	}
	// Off: never a short wait.
	off := &spinState{}
	for i := 0; i < 3; i++ {
		if off.begin(t0) {
			t.Fatal("a short wait with the window 0")
		}
	}
}

func TestSpinWindowFromEnv(t *testing.T) {
	for v, want := range map[string]time.Duration{"": spinWindow, "0": 0, "250": 250 * time.Microsecond,
		"10000": 10 * time.Millisecond, "10001": spinWindow, "-1": spinWindow, "x": spinWindow} {
		t.Setenv("FASTRPC_GO_SPIN_US", v)
		got, chosen := spinWindowFromEnv()
		// Chosen: a valid value, else the default.
		wantChosen := v == "0" || v == "250" || v == "10000"
		if got != want || chosen != wantChosen {
			t.Errorf("FASTRPC_GO_SPIN_US=%q: %v (chosen %v), want %v (chosen %v)", v, got, chosen, want, wantChosen)
		}
	}
}

// TestShortWaits runs rounds of concurrent callers (below the hand-off, so the poller serves them)
// with the short waits on (a 10 ms window, so that they end in time on a loaded machine) and
// off (WithPollerSpin(0)): every response is its own; on, the waits were made and ended in time.
func TestShortWaits(t *testing.T) {
	s := startServer(t, echo)
	for _, tc := range []struct {
		window time.Duration
		on     bool
	}{{10 * time.Millisecond, true}, {0, false}} {
		t.Run(fmt.Sprintf("WithPollerSpin(%v)", tc.window), func(t *testing.T) {
			c := newClient(t, s.Addr(), WithPollerSpin(tc.window))
			// Rounds of concurrent calls: between rounds nothing is pending, and the role
			// holder waits for the next round's calls.
			const callers, rounds = 8, 200
			errs := make(chan error, callers*rounds)
			within(t, 60*time.Second, "the calls", func() {
				for r := 0; r < rounds; r++ {
					var wg sync.WaitGroup
					for g := 0; g < callers; g++ {
						wg.Add(1)
						go func(g int) {
							defer wg.Done()
							name, value := fmt.Sprintf("c%d/", g), fmt.Sprintf("v%d", r)
							got, err := c.Call(context.Background(), []byte(name), []byte(value))
							if err != nil || string(got) != name+value {
								errs <- fmt.Errorf("caller %d round %d: %q, %v", g, r, got, err)
							}
						}(g)
					}
					wg.Wait()
				}
			})
			failOnAny(t, errs)
			cc := c.c
			resp, idle := cc.spinResp.hits.Load()+cc.spinResp.misses.Load(), cc.spinIdle.hits.Load()+cc.spinIdle.misses.Load()
			// Stats sums both kinds (the poller may still count a wait meanwhile: between two
			// readings of the counters).
			sum := func() (uint64, uint64) {
				return cc.spinResp.hits.Load() + cc.spinIdle.hits.Load(), cc.spinResp.misses.Load() + cc.spinIdle.misses.Load()
			}
			h0, m0 := sum()
			st := c.Stats()
			h1, m1 := sum()
			if st.PollerSpinHits < h0 || st.PollerSpinHits > h1 || st.PollerSpinMisses < m0 || st.PollerSpinMisses > m1 {
				t.Fatalf("Stats: %d hits, %d misses; the counters: %d-%d hits, %d-%d misses", st.PollerSpinHits, st.PollerSpinMisses, h0, h1, m0, m1)
			}
			if !tc.on {
				if resp != 0 || idle != 0 {
					t.Fatalf("short waits with the window 0: %d for responses, %d for calls", resp, idle)
				}
				return
			}
			if runtime.GOMAXPROCS(0) == 1 {
				// With one P the yielding poller keeps it from polling the network, so the
				// server in this process waits out the windows (see allowed): made, but not
				// necessarily in time.
				if resp == 0 || idle == 0 {
					t.Fatalf("short waits not made: %d for responses, %d for calls", resp, idle)
				}
			} else if cc.spinResp.hits.Load() == 0 || cc.spinIdle.hits.Load() == 0 {
				t.Fatalf("no short wait ended in time: for responses %d of %d, for calls %d of %d",
					cc.spinResp.hits.Load(), resp, cc.spinIdle.hits.Load(), idle)
			}
			t.Logf("short waits ended in time: for responses %d of %d, for calls %d of %d",
				cc.spinResp.hits.Load(), resp, cc.spinIdle.hits.Load(), idle)
		})
	}
}

func TestWithPollerSpin(t *testing.T) {
	for _, d := range []time.Duration{-time.Nanosecond, 10*time.Millisecond + time.Nanosecond, time.Hour} {
		c, err := NewClient("127.0.0.1:1", WithPollerSpin(d))
		if err == nil {
			c.Close()
			t.Fatalf("WithPollerSpin(%v) accepted", d)
		}
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "WithPollerSpin: from 0 to 10ms") {
			t.Fatalf("WithPollerSpin(%v): %v", d, err)
		}
	}
	for _, tc := range []struct {
		env    string
		opts   []ClientOption
		want   time.Duration
		chosen bool
	}{
		{"", nil, spinWindow, false},           // the default
		{"7", nil, 7 * time.Microsecond, true}, // the environment, without the option
		{"7", []ClientOption{WithPollerSpin(0)}, 0, true},
		{"7", []ClientOption{WithPollerSpin(250 * time.Microsecond)}, 250 * time.Microsecond, true},
		{"", []ClientOption{WithPollerSpin(10 * time.Millisecond)}, 10 * time.Millisecond, true},
	} {
		t.Setenv("FASTRPC_GO_SPIN_US", tc.env)
		c := newClient(t, "127.0.0.1:1", tc.opts...)
		r, i := &c.c.spinResp, &c.c.spinIdle
		if r.window != tc.want || i.window != tc.want || r.chosen != tc.chosen || i.chosen != tc.chosen {
			t.Fatalf("env %q: window %v and %v (chosen %v, %v), want %v (chosen %v)",
				tc.env, r.window, i.window, r.chosen, i.chosen, tc.want, tc.chosen)
		}
	}
}

// TestShortWaitsOneP checks that with GOMAXPROCS 1 the default window makes no short wait
// (see allowed) and a window the program chose does.
func TestShortWaitsOneP(t *testing.T) {
	s := startServer(t, echo)
	t.Setenv("FASTRPC_GO_SPIN_US", "")
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for _, tc := range []struct {
		opts []ClientOption
		made bool
	}{{nil, false}, {[]ClientOption{WithPollerSpin(100 * time.Microsecond)}, true}} {
		c := newClient(t, s.Addr(), tc.opts...)
		within(t, 60*time.Second, "the calls", func() {
			for r := 0; r < 100; r++ {
				var wg sync.WaitGroup
				for g := 0; g < 8; g++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if got, err := c.Call(context.Background(), []byte("a"), []byte("b")); err != nil || string(got) != "ab" {
							t.Errorf("call: %q, %v", got, err)
						}
					}()
				}
				wg.Wait()
			}
		})
		st := c.Stats()
		if made := st.PollerSpinHits+st.PollerSpinMisses > 0; made != tc.made {
			t.Fatalf("options %d: short waits made %v (%d hits, %d misses), want %v",
				len(tc.opts), made, st.PollerSpinHits, st.PollerSpinMisses, tc.made)
		}
	}
}

// TestShortWaitEndsWithItsBranch checks that a short wait for responses does not outlive the
// calls it waited for: begun with a call pending whose submit then failed (the caller counts
// it, then takes it back), the next pass finds nothing pending and ends it, uncounted, so
// the next wait neither counts a miss nor backs off at once.
func TestShortWaitEndsWithItsBranch(t *testing.T) {
	s := startServer(t, echo)
	c := newClient(t, s.Addr(), WithPollerSpin(time.Millisecond))
	mustEqual(t, call(t, c, "a", "b"), []byte("ab")) // connected; a lone call gives the role back
	cc := c.c
	cc.role.Lock()
	defer cc.role.Unlock()
	cc.hot.pending.Add(1)
	if !cc.shortWait() || !cc.spinResp.waiting() {
		t.Fatal("no short wait began")
	}
	cc.hot.pending.Add(-1)
	if !cc.servePass(0) { // nothing pending: lingers (1 ms), then gives the role up
		t.Fatal("servePass kept waiting with nothing pending")
	}
	if cc.spinResp.waiting() || cc.spinResp.hits.Load() != 0 || cc.spinResp.misses.Load() != 0 {
		t.Fatalf("the wait for responses: under way %v, %d hits, %d misses",
			cc.spinResp.waiting(), cc.spinResp.hits.Load(), cc.spinResp.misses.Load())
	}
}
