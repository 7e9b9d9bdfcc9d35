package fastrpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCall(t *testing.T) {
	s := startServer(t, echo)
	c := newClient(t, s.Addr())
	mustEqual(t, call(t, c, "foo", "bar"), []byte("foobar"))
	mustEqual(t, call(t, c, "", ""), []byte{})
	mustEqual(t, call(t, c, "name-only", ""), []byte("name-only"))

	// The caller may reuse its buffers at once, and owns the response.
	name, value := []byte("n"), []byte("v1")
	r1, err := c.Call(context.Background(), name, value)
	if err != nil {
		t.Fatal(err)
	}
	value[1] = '2'
	r2, err := c.Call(context.Background(), name, value)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, r1, []byte("nv1"))
	mustEqual(t, r2, []byte("nv2"))

	st := c.Stats()
	if st.Calls < 5 || st.Responses < 5 || st.Connects != 1 {
		t.Fatalf("unexpected client stats: %+v", st)
	}
	if ss := s.Stats(); ss.Requests < 5 || ss.ConnectionsAccepted != 1 {
		t.Fatalf("unexpected server stats: %+v", ss)
	}
	if c.PendingRequests() != 0 {
		t.Fatalf("pending requests: %d", c.PendingRequests())
	}
}

// CallAppend appends the response to the caller's buffer: after a prefix, into the same
// array when it has room, dst unchanged on an error, and one allocation per call fewer than
// Call (the response's; measured against an in-process server, whose own allocations are
// the same for both).
func TestCallAppend(t *testing.T) {
	s := startServer(t, echo)
	c := newClient(t, s.Addr())
	ctx := context.Background()
	buf := make([]byte, 0, 64)
	out, err := c.CallAppend(ctx, append(buf, "pre:"...), []byte("foo"), []byte("bar"))
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, out, []byte("pre:foobar"))
	if &out[0] != &buf[:1][0] {
		t.Fatal("the response did not go into dst's array, which had room")
	}
	out, err = c.CallAppend(ctx, out[:0], []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, out, []byte("x"))
	out, err = c.CallAppend(ctx, nil, nil, nil)
	if err != nil || len(out) != 0 {
		t.Fatalf("empty response: %q, %v", out, err)
	}
	big := bytes.Repeat([]byte("z"), 1000) // more than dst's capacity: a new array
	out, err = c.CallAppend(ctx, buf[:0], big, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, out, big)

	name, value := []byte("foo"), []byte("foobar")
	allocsCall := testing.AllocsPerRun(500, func() {
		if _, err := c.Call(ctx, name, value); err != nil {
			t.Fatal(err)
		}
	})
	dst := make([]byte, 0, 64)
	allocsAppend := testing.AllocsPerRun(500, func() {
		var err error
		if dst, err = c.CallAppend(ctx, dst[:0], name, value); err != nil {
			t.Fatal(err)
		}
	})
	if allocsCall-allocsAppend < 0.9 {
		t.Fatalf("allocations per call: Call %.2f, CallAppend %.2f; want one fewer", allocsCall, allocsAppend)
	}
	t.Logf("allocations per call (client and in-process server): Call %.2f, CallAppend %.2f", allocsCall, allocsAppend)

	kept := []byte("kept")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	out, err = c.CallAppend(ctx, kept, name, value)
	if !errors.Is(err, ErrClosed) || string(out) != "kept" || len(out) != 4 {
		t.Fatalf("CallAppend on a closed client: %q, %v; want dst unchanged and ErrClosed", out, err)
	}
}

func TestLargeValues(t *testing.T) {
	s := startServer(t, func(_ context.Context, req *Request) ([]byte, error) {
		return req.Value(), nil
	})
	c := newClient(t, s.Addr(), WithCompression(CompressSnappy))
	for _, n := range []int{0, 1, 1000, 65535, 65536, 65537, 1 << 20} {
		v := bytes.Repeat([]byte{byte(n)}, n)
		for i := range v {
			v[i] ^= byte(i * 7)
		}
		got, err := c.Call(context.Background(), []byte("big"), v)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		mustEqual(t, got, v)
	}
	// Over the 1 MiB limit: refused at once, the connection is unharmed.
	_, err := c.Call(context.Background(), []byte("big"), make([]byte, 1<<20+1))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("want ErrTooLarge, got %v", err)
	}
	_, err = c.Call(context.Background(), make([]byte, 1<<20+1), nil)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("want ErrTooLarge for the name, got %v", err)
	}
	mustEqual(t, call(t, c, "x", "still works"), []byte("still works"))
}

func TestConcurrentCallers(t *testing.T) {
	s := startServer(t, echo, WithServerCompression(CompressSnappy))
	c := newClient(t, s.Addr(), WithCompression(CompressFlate))
	const callers, each = 500, 20
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for g := 0; g < callers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				name := fmt.Sprintf("caller-%d/", g)
				value := fmt.Sprintf("call-%d", i)
				resp, err := c.Call(context.Background(), []byte(name), []byte(value))
				if err != nil {
					errs <- err
					return
				}
				if string(resp) != name+value {
					errs <- fmt.Errorf("caller %d call %d: got %q", g, i, resp)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	failOnAny(t, errs)
	if st := c.Stats(); st.Responses != callers*each {
		t.Fatalf("responses %d, want %d", st.Responses, callers*each)
	}
}

// slowHandler sleeps d (or until the server closes) before echoing.
func slowHandler(d time.Duration) Handler {
	return func(ctx context.Context, req *Request) ([]byte, error) {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
		return echo(ctx, req)
	}
}

func TestDeadline(t *testing.T) {
	s := startServer(t, slowHandler(2*time.Second))
	c := newClient(t, s.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Call(ctx, []byte("slow"), nil)
	el := time.Since(start)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want ErrTimeout and context.DeadlineExceeded, got %v", err)
	}
	var fe *Error
	if !errors.As(err, &fe) || fe.Kind != ErrTimeout {
		t.Fatalf("want an *Error of kind ErrTimeout, got %#v", err)
	}
	if el < 90*time.Millisecond || el > time.Second {
		t.Fatalf("the call returned after %v, want about 100ms", el)
	}

	// An expired context fails before anything is sent.
	_, err = c.Call(ctx, []byte("slow"), nil)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("expired context: got %v", err)
	}

	// Without a context deadline, the client's request timeout applies: ErrTimeout only.
	c2 := newClient(t, s.Addr(), WithRequestTimeout(100*time.Millisecond))
	start = time.Now()
	_, err = c2.Call(context.Background(), []byte("slow"), nil)
	if !errors.Is(err, ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request timeout: want ErrTimeout only, got %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("request timeout took %v", el)
	}
	t.Logf("timeout message: %v", err)
}

func TestCancel(t *testing.T) {
	s := startServer(t, slowHandler(300*time.Millisecond))
	c := newClient(t, s.Addr())
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	start := time.Now()
	_, err := c.Call(ctx, []byte("slow"), nil)
	if !errors.Is(err, context.Canceled) || err != context.Canceled {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	if el := time.Since(start); el > 200*time.Millisecond {
		t.Fatalf("cancel took %v to return", el)
	}
	// A cancelled context fails at once.
	if _, err := c.Call(ctx, []byte("x"), nil); err != context.Canceled {
		t.Fatalf("cancelled context: got %v", err)
	}
	// Many cancelled calls: their late completions are discarded; the client still works.
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
			defer cancel()
			_, _ = c.Call(ctx, []byte("slow"), nil)
		}()
	}
	wg.Wait()
	time.Sleep(400 * time.Millisecond) // the late responses arrive and are dropped
	mustEqual(t, call(t, c, "after", "-cancel"), []byte("after-cancel"))
}

func TestSend(t *testing.T) {
	var mu sync.Mutex
	got := map[string]bool{}
	var nowait atomic.Int64
	s := startServer(t, func(_ context.Context, req *Request) ([]byte, error) {
		if req.IsNowait() {
			if req.ID() != 0 {
				t.Errorf("nowait request with id %d", req.ID())
			}
			mu.Lock()
			got[string(req.Value())] = true
			mu.Unlock()
			// After the value is recorded: the wait below ends once all are (counting first
			// let it end while handlers still waited for mu; handlers run in goroutines of
			// their own, so the call after the sends may be answered before them).
			nowait.Add(1)
		}
		return []byte("ignored"), nil
	})
	c := newClient(t, s.Addr())
	const n = 200
	for i := 0; i < n; i++ {
		if err := c.Send([]byte("log"), []byte(fmt.Sprint(i))); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	// A call after the sends: the server got the sends before it (same connection, in order).
	mustEqual(t, call(t, c, "x", ""), []byte("ignored"))
	deadline := time.Now().Add(5 * time.Second)
	for nowait.Load() < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != n {
		t.Fatalf("server got %d distinct fire-and-forget requests, want %d", len(got), n)
	}
	if st := c.Stats(); st.Sends != n || st.UnexpectedResponses != 0 {
		t.Fatalf("client stats: %+v", st)
	}
	if st := s.Stats(); st.NowaitRequests != n {
		t.Fatalf("server stats: nowait %d, want %d", st.NowaitRequests, n)
	}
}

func TestCompressionPairs(t *testing.T) {
	all := []Compression{CompressNone, CompressFlate, CompressSnappy}
	value := bytes.Repeat([]byte("compressible "), 500)
	for _, sc := range all {
		s := startServer(t, echo, WithServerCompression(sc))
		for _, cc := range all {
			t.Run(fmt.Sprintf("client=%v/server=%v", cc, sc), func(t *testing.T) {
				c := newClient(t, s.Addr(), WithCompression(cc))
				var wg sync.WaitGroup
				for g := 0; g < 8; g++ {
					wg.Add(1)
					go func(g int) {
						defer wg.Done()
						for i := 0; i < 20; i++ {
							v := append([]byte(fmt.Sprintf("%d-%d:", g, i)), value...)
							resp, err := c.Call(context.Background(), []byte("n"), v)
							if err != nil {
								t.Error(err)
								return
							}
							if !bytes.Equal(resp, append([]byte("n"), v...)) {
								t.Errorf("wrong response of %d bytes", len(resp))
								return
							}
						}
					}(g)
				}
				wg.Wait()
				io := c.Stats().IO
				if cc != CompressNone && io.BytesSentWire >= io.BytesSentPlain {
					t.Errorf("%v: %d wire bytes for %d plain", cc, io.BytesSentWire, io.BytesSentPlain)
				}
			})
		}
	}
}

func TestOptionsEndToEnd(t *testing.T) {
	// Every option at once, with values that still let calls succeed.
	s := startServer(t, echo,
		WithServerSniffHeader("sniff!"), WithServerProtocolVersion(7),
		WithServerCompression(CompressSnappy), WithServerFlateLevel(1),
		WithConcurrency(100), WithConcurrencyLimitReply([]byte("busy")), WithErrorReply([]byte("err")),
		WithPipelineRequests(true), WithServerMaxBatchDelay(200*time.Microsecond),
		WithServerReadTimeout(10*time.Second), WithServerWriteTimeout(10*time.Second),
		WithServerReadBufferSize(4096), WithServerWriteBufferSize(4096),
		WithServerMaxFrameSize(1<<16), WithServerHandshakeTimeout(2*time.Second), WithPollers(3))
	c := newClient(t, s.Addr(),
		WithSniffHeader("sniff!"), WithProtocolVersion(7), WithCompression(CompressFlate),
		WithFlateLevel(9), WithMaxPendingRequests(50), WithPrioritizeNewRequests(true),
		WithMaxBatchDelay(300*time.Microsecond), WithRequestTimeout(5*time.Second),
		WithReadTimeout(10*time.Second), WithWriteTimeout(10*time.Second),
		WithReadBufferSize(4096), WithWriteBufferSize(4096), WithMaxFrameSize(1<<16),
		WithHandshakeTimeout(2*time.Second), WithReconnectBackoff(10*time.Millisecond, 100*time.Millisecond))
	var wg sync.WaitGroup
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				v := fmt.Sprintf("%d/%d", g, i)
				resp, err := c.Call(context.Background(), []byte("o:"), []byte(v))
				if err != nil || string(resp) != "o:"+v {
					t.Errorf("got %q, %v", resp, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()

	// A mismatched sniff header or protocol version cannot connect.
	for _, opt := range []ClientOption{WithSniffHeader("other!"), WithProtocolVersion(8)} {
		bad := newClient(t, s.Addr(), WithSniffHeader("sniff!"), WithProtocolVersion(7), opt,
			WithRequestTimeout(2*time.Second))
		_, err := bad.Call(context.Background(), []byte("x"), nil)
		if err == nil {
			t.Fatalf("a mismatched handshake succeeded")
		}
		t.Logf("mismatched handshake: %v", err)
	}
}

// TestReadSpin: WithReadSpin and WithServerReadSpin take 0 to 10ms and refuse more (the
// error names the option and the bound); with 50µs on both sides, calls one at a time and 16
// at once get their own responses.
func TestReadSpin(t *testing.T) {
	for _, d := range []time.Duration{11 * time.Millisecond, time.Hour, -time.Microsecond} {
		_, err := NewClient("127.0.0.1:1", WithReadSpin(d))
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "WithReadSpin") {
			t.Errorf("WithReadSpin(%v): got %v", d, err)
		}
		_, err = NewServer(echo, WithServerReadSpin(d))
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "WithServerReadSpin") {
			t.Errorf("WithServerReadSpin(%v): got %v", d, err)
		}
	}
	if _, err := NewClient("127.0.0.1:1", WithReadSpin(11*time.Millisecond)); err == nil ||
		!strings.Contains(err.Error(), "at most 10000") {
		t.Errorf("the refusal does not say the bound: %v", err)
	}
	for _, d := range []time.Duration{0, time.Nanosecond, 10 * time.Millisecond} {
		c, err := NewClient("127.0.0.1:1", WithReadSpin(d))
		if err != nil {
			t.Errorf("WithReadSpin(%v): %v", d, err)
		} else {
			c.Close()
		}
	}
	s := startServer(t, echo, WithServerReadSpin(50*time.Microsecond))
	c := newClient(t, s.Addr(), WithReadSpin(50*time.Microsecond))
	for i := 0; i < 200; i++ {
		v := strconv.Itoa(i)
		mustEqual(t, call(t, c, "spin:", v), []byte("spin:"+v))
	}
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				v := fmt.Sprintf("%d.%d", g, i)
				resp, err := c.Call(context.Background(), []byte("s:"), []byte(v))
				if err != nil || string(resp) != "s:"+v {
					t.Errorf("got %q, %v", resp, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}

// TestLeader: with the default poller mode a lone call waits on the completion queue itself
// (leader.go) and gets its outcome there; lone calls whose cancel races their completion end
// with their response or context.Canceled and leave the client working (a late wake-up of
// the descriptor is cleared); a lone call leading when the client closes ends with
// ErrClosed.
func TestLeader(t *testing.T) {
	if !leaderFromEnv() {
		t.Skip("FASTRPC_GO_POLLER=netpoll chooses the other mode")
	}
	s := startServer(t, echo)
	c := newClient(t, s.Addr())
	for i := 0; i < 100; i++ {
		v := strconv.Itoa(i)
		resp, err := c.Call(context.Background(), []byte("l:"), []byte(v))
		if err != nil || string(resp) != "l:"+v {
			t.Fatalf("call %d: %q, %v", i, resp, err)
		}
	}
	if n := c.c.led.Load(); n != 100 {
		t.Fatalf("%d of 100 lone calls led", n)
	}
	for i := 0; i < 2000; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		go cancel()
		v := strconv.Itoa(i)
		resp, err := c.Call(ctx, []byte("r:"), []byte(v))
		if err != context.Canceled && (err != nil || string(resp) != "r:"+v) {
			t.Fatalf("racing cancel %d: %q, %v", i, resp, err)
		}
		cancel()
		mustEqual(t, call(t, c, "after:", v), []byte("after:"+v))
	}

	s2 := startServer(t, slowHandler(5*time.Second))
	c2, err := NewClient(s2.Addr())
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c2.Call(context.Background(), []byte("slow"), nil)
		errc <- err
	}()
	within(t, 2*time.Second, "the lone call leading", func() {
		for c2.PendingRequests() != 1 || c2.c.role.TryLock() && func() bool { c2.c.role.Unlock(); return true }() {
			time.Sleep(time.Millisecond)
		}
	})
	within(t, 2*time.Second, "Close", func() { _ = c2.Close() })
	within(t, 2*time.Second, "the call", func() {
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Errorf("want ErrClosed, got %v", err)
		}
	})
}

// TestPollModes: the client's other ways to wait give the same outcomes as leader mode:
// "netpoll" (FASTRPC_GO_POLLER=netpoll, the benchmark's "before" arm: no call leads) and
// the fallback when the queues' descriptors cannot be had (blocking polls, client and
// server): lone calls, 200 concurrent ones, a deadline that passes, and Close with a call
// waiting.
func TestPollModes(t *testing.T) {
	check := func(t *testing.T, c *Client) {
		for i := 0; i < 50; i++ {
			v := strconv.Itoa(i)
			mustEqual(t, call(t, c, "m:", v), []byte("m:"+v))
		}
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for g := 0; g < 200; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				v := strconv.Itoa(g)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				resp, err := c.Call(ctx, []byte("c:"), []byte(v))
				if err == nil && string(resp) != "c:"+v {
					err = fmt.Errorf("call %d: got %q", g, resp)
				}
				if err != nil {
					errs <- err
				}
			}(g)
		}
		wg.Wait()
		failOnAny(t, errs)
	}
	checkSlow := func(t *testing.T, c *Client) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := c.Call(ctx, []byte("slow"), nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("want DeadlineExceeded, got %v", err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := c.Call(context.Background(), []byte("slow"), nil)
			errc <- err
		}()
		within(t, 2*time.Second, "the call pending", func() {
			for c.PendingRequests() != 1 {
				time.Sleep(time.Millisecond)
			}
		})
		within(t, 2*time.Second, "Close", func() { _ = c.Close() })
		within(t, 2*time.Second, "the call", func() {
			if err := <-errc; !errors.Is(err, ErrClosed) {
				t.Errorf("want ErrClosed, got %v", err)
			}
		})
	}

	t.Run("netpoll", func(t *testing.T) {
		t.Setenv("FASTRPC_GO_POLLER", "netpoll")
		s := startServer(t, echo)
		c := newClient(t, s.Addr())
		if c.c.leading || c.c.qw == nil {
			t.Fatalf("leading %v, descriptor %v: want the poller alone in the netpoller", c.c.leading, c.c.qw != nil)
		}
		check(t, c)
		if n := c.c.led.Load(); n != 0 {
			t.Fatalf("%d calls led in netpoll mode", n)
		}
		s2 := startServer(t, slowHandler(5*time.Second))
		checkSlow(t, newClient(t, s2.Addr()))
	})
	t.Run("leader-noread", func(t *testing.T) {
		t.Setenv("FASTRPC_GO_POLLER", "leader-noread")
		s := startServer(t, echo)
		c := newClient(t, s.Addr())
		if !c.c.leading || c.c.readFd {
			t.Fatalf("leading %v, read descriptor %v: want a leader on the queue's descriptor", c.c.leading, c.c.readFd)
		}
		check(t, c)
		if n := c.c.readHere.Load(); n != 0 {
			t.Fatalf("%d responses read by Go without the read descriptor", n)
		}
		s2 := startServer(t, slowHandler(5*time.Second))
		checkSlow(t, newClient(t, s2.Addr()))
	})
	t.Run("leader", func(t *testing.T) {
		s := startServer(t, echo)
		c := newClient(t, s.Addr())
		if !c.c.leading || !c.c.readFd || !c.c.callerReads {
			t.Fatalf("leading %v, read descriptor %v, caller reads %v: want a leader reading the connection", c.c.leading, c.c.readFd, c.c.callerReads)
		}
		// Warms up: the library's reader may see the first response as the connection starts.
		if _, err := c.Call(context.Background(), []byte("w"), nil); err != nil {
			t.Fatal(err)
		}
		// The library reads nothing while calls are in flight (caller_reads): Go reads every
		// response (one at a time here; with many at once a pass may leave a flood's tail
		// to the library's reader, which it wakes).
		before := c.c.readHere.Load()
		for i := 0; i < 50; i++ {
			mustEqual(t, call(t, c, "one:", "x"), []byte("one:x"))
		}
		if got := c.c.readHere.Load() - before; got != 50 {
			t.Fatalf("%d of 50 responses read by Go goroutines, want all", got)
		}
		check(t, c)
		s2 := startServer(t, slowHandler(5*time.Second))
		checkSlow(t, newClient(t, s2.Addr()))
	})
	t.Run("fallback", func(t *testing.T) {
		noQueueFd = true
		s := startServer(t, echo)
		c := newClient(t, s.Addr())
		s2 := startServer(t, slowHandler(5*time.Second))
		c2 := newClient(t, s2.Addr())
		noQueueFd = false
		if c.c.leading || c.c.qw != nil {
			t.Fatalf("leading %v, descriptor %v: want blocking polls", c.c.leading, c.c.qw != nil)
		}
		for _, w := range s.pollFds {
			if w != nil {
				t.Fatal("a server poller has a descriptor: want blocking polls")
			}
		}
		check(t, c)
		checkSlow(t, c2)
	})
}

func TestInvalidOptions(t *testing.T) {
	cases := []ClientOption{
		WithMaxPendingRequests(-1), WithMaxPendingRequests(0), WithCompression(Compression(9)),
		WithRequestTimeout(-time.Second), WithFlateLevel(10), WithHandshakeTimeout(0),
	}
	for i, o := range cases {
		_, err := NewClient("127.0.0.1:1", o)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("case %d: want ErrInvalidArgument, got %v", i, err)
		} else {
			t.Logf("case %d: %v", i, err)
		}
	}
	if _, err := NewClient(""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("empty address: got %v", err)
	}
	if _, err := NewServer(echo, WithConcurrency(0)); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("concurrency 0: got %v", err)
	}
	if _, err := NewServer(nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("nil handler: got %v", err)
	}
	// Garbage certificates: refused when the server is built or started.
	s, err := NewServer(echo, WithServerTLS([]byte("not a cert"), []byte("not a key")))
	if err == nil {
		err = s.Serve("127.0.0.1:0")
		s.Close()
	}
	if !errors.Is(err, ErrTLS) && !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("bad certificate: got %v", err)
	}
	// Cannot listen: ErrIO.
	s1 := startServer(t, echo)
	s2, err := NewServer(echo)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Serve(s1.Addr()); !errors.Is(err, ErrIO) {
		t.Errorf("address in use: want ErrIO, got %v", err)
	}
}

func TestOverflow(t *testing.T) {
	s := startServer(t, slowHandler(300*time.Millisecond))
	c := newClient(t, s.Addr(), WithMaxPendingRequests(2))
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Call(context.Background(), []byte("slow"), nil); err != nil {
				t.Error(err)
			}
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	for c.PendingRequests() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	_, err := c.Call(context.Background(), []byte("third"), nil)
	if !errors.Is(err, ErrOverflow) {
		t.Fatalf("want ErrOverflow, got %v", err)
	}
	wg.Wait()
}

func TestConnectError(t *testing.T) {
	s := startServer(t, echo)
	addr := s.Addr()
	s.Close() // nothing listens there now
	c := newClient(t, addr)
	_, err := c.Call(context.Background(), []byte("x"), nil)
	if !errors.Is(err, ErrConnect) {
		t.Fatalf("want ErrConnect, got %v", err)
	}
	t.Logf("connect error: %v", err)
	if err := c.Send([]byte("x"), nil); err != nil && !errors.Is(err, ErrConnect) {
		t.Fatalf("Send: want nil or ErrConnect, got %v", err)
	}
}

func TestUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fastrpc.sock")
	s, err := NewServer(echo)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Serve("unix:" + path); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != "unix:"+path {
		t.Fatalf("Addr() = %q", s.Addr())
	}
	c := newClient(t, s.Addr())
	mustEqual(t, call(t, c, "unix", "!"), []byte("unix!"))
}

func TestClientClose(t *testing.T) {
	s := startServer(t, slowHandler(5*time.Second))
	c, err := NewClient(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	// Calls in flight when the client closes complete at once with ErrClosed.
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Call(context.Background(), []byte("slow"), nil)
			errs <- err
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	for c.PendingRequests() < 50 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	within(t, 2*time.Second, "Close with calls in flight", func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	within(t, 2*time.Second, "the calls", wg.Wait)
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("want ErrClosed, got %v", err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Call(context.Background(), []byte("x"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Call after Close: %v", err)
	}
	if err := c.Send([]byte("x"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if c.PendingRequests() != 0 || c.Stats() != (ClientStats{}) {
		t.Fatalf("a closed client reports activity")
	}
}

func TestClientShutdownDrains(t *testing.T) {
	s := startServer(t, slowHandler(200*time.Millisecond))
	c, err := NewClient(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
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
	deadline := time.Now().Add(2 * time.Second)
	for c.PendingRequests() < 20 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	wg.Wait()
}

func TestFinalizerClosesClient(t *testing.T) {
	s := startServer(t, echo)
	for i := 0; i < 20; i++ {
		c, err := NewClient(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, call(t, c, "f", ""), []byte("f"))
	}
	// The 20 clients are unreachable: the finalizers close them and their pollers end.
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		if s.Stats().ConnectionsOpen == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open: finalizers did not close the clients", s.Stats().ConnectionsOpen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The library's CANCELLED status maps to ErrCancelled (and to nothing else).
func TestCancelledStatusMapsToErrCancelled(t *testing.T) {
	err := error(newError(statusCancelled, "the call was cancelled"))
	if !errors.Is(err, ErrCancelled) {
		t.Fatalf("want ErrCancelled, got %v", err)
	}
	for _, other := range []error{ErrTimeout, ErrClosed, ErrInternal, ErrInvalidArgument} {
		if errors.Is(err, other) {
			t.Errorf("CANCELLED also matches %v", other)
		}
	}
	if got := statusText(statusCancelled); got != "the call was cancelled" {
		t.Errorf("status text: %q", got)
	}
}

// holdServer starts a server that holds every "hold" request until the test ends (and
// echoes anything else); each held request is announced on the returned channel.
func holdServer(t *testing.T, n int) (*Server, <-chan struct{}) {
	held := make(chan struct{})
	release := make(chan struct{})
	s := startServer(t, func(ctx context.Context, req *Request) ([]byte, error) {
		if string(req.Name()) != "hold" {
			return echo(ctx, req)
		}
		select {
		case held <- struct{}{}:
		case <-release:
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	}, WithConcurrency(2*n))
	t.Cleanup(func() { close(release) }) // runs before the server's Close
	return s, held
}

// cancelInARow makes n calls in a row that the server holds, cancelling each once the
// server has it: each must end with context.Canceled at once, and free its pending slot at
// once (the client's limit is the default 1000, far below n: a slot kept would end in
// ErrOverflow). Then deadlines: an *Error matching context.DeadlineExceeded and ErrTimeout.
func cancelInARow(t *testing.T, c *Client, held <-chan struct{}, n int) {
	var failure atomic.Value
	within(t, 120*time.Second, fmt.Sprintf("%d cancelled calls", n), func() {
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-held:
				case <-time.After(30 * time.Second):
				}
				cancel()
			}()
			_, err := c.Call(ctx, []byte("hold"), []byte(fmt.Sprint(i)))
			cancel()
			if !errors.Is(err, context.Canceled) {
				failure.Store(fmt.Sprintf("call %d: want context.Canceled, got %v (overflow: %v)", i, err, errors.Is(err, ErrOverflow)))
				return
			}
		}
	})
	if f := failure.Load(); f != nil {
		t.Fatal(f)
	}
	if p := c.PendingRequests(); p != 0 {
		t.Fatalf("%d calls still pending after every call was cancelled", p)
	}
	st := c.Stats()
	if st.Errors.Overflow != 0 || st.Calls < uint64(n) {
		t.Fatalf("stats after %d cancelled calls: %d calls, %d overflows", n, st.Calls, st.Errors.Overflow)
	}

	stop := make(chan struct{})
	defer close(stop)
	go func() { // the held requests of deadlines need no one to wait for them
		for {
			select {
			case <-held:
			case <-stop:
				return
			}
		}
	}()
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		_, err := c.Call(ctx, []byte("hold"), nil)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrTimeout) {
			t.Fatalf("deadline %d: want context.DeadlineExceeded and ErrTimeout, got %v", i, err)
		}
	}
	mustEqual(t, call(t, c, "after", "-cancel"), []byte("after-cancel"))
}

// TestCancelFreesSlots: 10,000 cancelled calls in a row never overflow the default 1000
// pending calls (fastrpc_client_cancel frees each slot at once).
func TestCancelFreesSlots(t *testing.T) {
	const n = 10000
	s, held := holdServer(t, n)
	c := newClient(t, s.Addr())
	cancelInARow(t, c, held, n)
}

// TestLoneWrites: a call alone in flight writes its request inside Call (no library thread
// woken to write it), and a Go handler's reply alone on its connection writes itself from
// the handler's goroutine; the stats count both. Once one of each has happened the writers
// stay parked, so each further sequential call is lone on both sides, exactly.
func TestLoneWrites(t *testing.T) {
	s := startServer(t, echo)
	c := newClient(t, s.Addr())
	i := 0
	for ; i < 200; i++ {
		mustEqual(t, call(t, c, "n", strconv.Itoa(i)), []byte("n"+strconv.Itoa(i)))
		if c.Stats().LoneWrites > 0 && s.Stats().LoneWrites > 0 {
			break
		}
	}
	c0, s0 := c.Stats().LoneWrites, s.Stats().LoneWrites
	if c0 == 0 || s0 == 0 {
		t.Fatalf("no lone write in 200 calls: client %d, server %d", c0, s0)
	}
	for k := 0; k < 20; k++ {
		mustEqual(t, call(t, c, "m", strconv.Itoa(k)), []byte("m"+strconv.Itoa(k)))
	}
	if got := c.Stats().LoneWrites; got != c0+20 {
		t.Errorf("client lone writes %d, want %d", got, c0+20)
	}
	if got := s.Stats().LoneWrites; got != s0+20 {
		t.Errorf("server lone writes %d, want %d", got, s0+20)
	}
}

// burstRounds runs rounds of n callers against a server that answers a round only once all
// of its n requests came, so that their responses arrive together and are handed over in few
// polls; each caller calls again at once (those calls defer while the round's burst lasts).
// It checks every response and returns the client's flushes of deferred requests.
func burstRounds(t *testing.T, c *Client, release chan struct{}, rounds, n int) uint64 {
	t.Helper()
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		errs := make(chan error, 2*n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				for k := 0; k < 2; k++ {
					v := fmt.Sprintf("%d.%d.%d", r, i, k)
					resp, err := c.Call(context.Background(), []byte("b:"), []byte(v))
					if err != nil || string(resp) != "b:"+v {
						errs <- fmt.Errorf("call %s: %q, %v", v, resp, err)
					}
				}
			}(i)
		}
		release <- struct{}{}
		wg.Wait()
		failOnAny(t, errs)
	}
	if b := c.c.hot.burst.Load(); b != 0 {
		t.Fatalf("burst count %d after the calls, want 0", b)
	}
	if c.c.hot.deferred.Load() {
		t.Fatal("a deferred request is left unflushed")
	}
	return c.c.flushes.Load()
}

// gatedEcho echoes; the first request of each round waits for release, and the round's
// others wait until all n came.
func gatedEcho(n int, release chan struct{}) Handler {
	var mu sync.Mutex
	arrived := 0
	cond := sync.NewCond(&mu)
	return func(ctx context.Context, req *Request) ([]byte, error) {
		if strings.HasSuffix(string(req.Value()), ".0") {
			mu.Lock()
			arrived++
			if arrived == n {
				arrived = 0
				mu.Unlock()
				<-release
				mu.Lock()
				cond.Broadcast()
			} else {
				cond.Wait()
			}
			mu.Unlock()
		}
		return echo(ctx, req)
	}
}

// TestBursts: callers handed their outcomes together defer their next requests and the last
// to collect flushes them (burst.go); every call gets its response, nothing is left
// deferred; with FASTRPC_GO_BURST=0 nothing is deferred.
func TestBursts(t *testing.T) {
	const n = 64
	t.Run("on", func(t *testing.T) {
		release := make(chan struct{})
		s := startServer(t, gatedEcho(n, release))
		c := newClient(t, s.Addr())
		var flushes uint64
		for tries := 0; tries < 20 && flushes == 0; tries++ {
			flushes = burstRounds(t, c, release, 1, n)
		}
		if flushes == 0 {
			t.Fatal("no burst was flushed in 20 rounds of 64 callers answered together")
		}
	})
	t.Run("off", func(t *testing.T) {
		t.Setenv("FASTRPC_GO_BURST", "0")
		release := make(chan struct{})
		s := startServer(t, gatedEcho(n, release))
		c := newClient(t, s.Addr())
		if f := burstRounds(t, c, release, 3, n); f != 0 {
			t.Fatalf("%d flushes with bursts off", f)
		}
	})
}

// The waiter table (waiters.go): a tag finds its waiter once; a stale tag (its slot taken
// and given to another call) finds nothing, not the other call's waiter; Close seals the
// table, so a call after it fails with ErrClosed without putting anything, and Close's
// drain still reaches a waiter left in the table.
func TestWaiterTable(t *testing.T) {
	var tab waiterTable
	a := &waiter{ch: make(chan result, 1)}
	s, tagA, ok := tab.lockedPut(a)
	if !ok {
		t.Fatal("lockedPut failed on an open table")
	}
	s.mu.Unlock()
	if got := tab.len(); got != 1 {
		t.Fatalf("len %d, want 1", got)
	}
	if tab.take(tagA) != a {
		t.Fatal("the tag did not find its waiter")
	}
	if tab.take(tagA) != nil {
		t.Fatal("a tag found its waiter twice")
	}
	// Fill a shard until a slot is reused: the old tag must not find the new waiter.
	reused := false
	var held []uint64
	for i := 0; i < 10000 && !reused; i++ {
		b := &waiter{ch: make(chan result, 1)}
		s, tagB, ok := tab.lockedPut(b)
		if !ok {
			t.Fatal("lockedPut failed on an open table")
		}
		s.mu.Unlock()
		if tagB&(1<<32-1) == tagA&(1<<32-1) { // same shard and slot, a later generation
			reused = true
			if tagB == tagA {
				t.Fatalf("a reused slot gave the same tag %#x", tagB)
			}
			if tab.take(tagA) != nil {
				t.Fatal("a stale tag found the waiter of the call that reused its slot")
			}
			if tab.take(tagB) != b {
				t.Fatal("the new tag did not find its waiter")
			}
		} else {
			held = append(held, tagB)
		}
	}
	if !reused {
		t.Fatal("no slot was reused in 10000 puts")
	}
	for _, tag := range held {
		if tab.take(tag) == nil {
			t.Fatalf("tag %#x lost its waiter", tag)
		}
	}
	left := &waiter{ch: make(chan result, 1)}
	s, _, _ = tab.lockedPut(left)
	s.mu.Unlock()
	tab.seal()
	if _, _, ok := tab.lockedPut(&waiter{}); ok {
		t.Fatal("lockedPut succeeded on a sealed table")
	}
	drained := 0
	tab.drain(func(w *waiter) {
		if w != left {
			t.Fatal("drain passed a waiter that was not left")
		}
		drained++
	})
	if drained != 1 || tab.len() != 0 {
		t.Fatalf("drain passed %d waiter(s), %d left; want 1 and 0", drained, tab.len())
	}

	srv := startServer(t, echo)
	cl, err := NewClient(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Call(context.Background(), []byte("x"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("a call after Close: %v, want ErrClosed", err)
	}
	if n := cl.c.waiters.len(); n != 0 {
		t.Fatalf("a call after Close left %d waiter(s) in the table", n)
	}
}

// A client that only a call in flight refers to is not finalized (closed) under that call:
// Call keeps it reachable until it returns.
func TestClientReferencedOnlyByItsCallIsNotFinalized(t *testing.T) {
	slow := startServer(t, func(ctx context.Context, req *Request) ([]byte, error) {
		time.Sleep(300 * time.Millisecond)
		return echo(ctx, req)
	})
	errc := make(chan error, 1)
	go func() { errc <- callOnFreshClient(slow.Addr()) }()
	// Collect garbage while the call waits: its client's finalizer would run if it could.
	for i := 0; i < 20; i++ {
		time.Sleep(10 * time.Millisecond)
		runtime.GC()
	}
	if err := <-errc; err != nil {
		t.Fatalf("the call failed: %v", err)
	}
}

// callOnFreshClient makes one call on a client nothing else refers to.
//
//go:noinline
func callOnFreshClient(addr string) error {
	cl, err := NewClient(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = cl.Call(ctx, []byte("x"), []byte("y"))
	return err
}

// TestReconnectReadsTheNewSocket: the client's read descriptor follows the connection. A
// leader reads the first connection's responses itself; the server goes away (the waiting
// call fails with a connection error, not a hang); a new server on the same address gets
// the next call on a new connection, whose responses the leader reads too.
func TestReconnectReadsTheNewSocket(t *testing.T) {
	s1 := startServer(t, echo)
	addr := s1.Addr()
	c := newClient(t, addr)
	if !c.c.readFd {
		t.Skip("the client does not wait on its read descriptor (FASTRPC_GO_POLLER)")
	}
	for i := 0; i < 50; i++ {
		v := strconv.Itoa(i)
		mustEqual(t, call(t, c, "a:", v), []byte("a:"+v))
	}
	_ = s1.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err := c.Call(ctx, []byte("gone"), nil)
	cancel()
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call with the server gone: want a connection error at once, got %v", err)
	}
	s2, err := NewServer(echo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	if err := s2.Serve(addr); err != nil {
		t.Skipf("the address cannot be listened on again: %v", err)
	}
	before := c.c.readHere.Load()
	within(t, 10*time.Second, "calls on the new connection", func() {
		for i := 0; i < 200; i++ {
			v := strconv.Itoa(i)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := c.Call(ctx, []byte("b:"), []byte(v))
			cancel()
			if err != nil {
				// The first call after the server came back may still meet the backoff.
				if i < 5 && (errors.Is(err, ErrConnect) || errors.Is(err, ErrConnection)) {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				t.Errorf("call %d on the new connection: %v", i, err)
				return
			}
			if string(resp) != "b:"+v {
				t.Errorf("call %d: got %q", i, resp)
				return
			}
		}
	})
	if st := c.Stats(); st.Reconnects < 1 {
		t.Fatalf("reconnects %d: want at least 1", st.Reconnects)
	}
	t.Logf("%d responses read by Go goroutines on the new connection", c.c.readHere.Load()-before)
}

// TestReadBatch checks how many completions a read pass takes: a quarter of the calls pending,
// from readBatchMin to pollBatch, or pollBatch with FASTRPC_GO_READ_BATCH=fixed.
func TestReadBatch(t *testing.T) {
	c := &client{}
	for pending, want := range map[int64]int{0: readBatchMin, 100: readBatchMin, 256: readBatchMin, 400: 100, 1000: 250, 1024: pollBatch, 5000: pollBatch} {
		c.hot.pending.Store(pending)
		if got := int(c.readBatch()); got != want {
			t.Errorf("%d pending: %d, want %d", pending, got, want)
		}
	}
	c.fixedBatch = true
	if got := int(c.readBatch()); got != pollBatch {
		t.Errorf("fixed: %d, want %d", got, pollBatch)
	}
	if newClient(t, "127.0.0.1:1").c.fixedBatch {
		t.Error("fixed by default")
	}
	t.Setenv("FASTRPC_GO_READ_BATCH", "fixed")
	if !newClient(t, "127.0.0.1:1").c.fixedBatch {
		t.Error("FASTRPC_GO_READ_BATCH=fixed not read")
	}
}

// TestReadBatchDrains holds 300 calls in the server, then answers them all at once: more
// completions arrive together than one read pass takes (a quarter of the pending calls, from
// 64), and every call must still end with its own response, with the hand-off on and off and
// with the poller's short waits off (so that it parks whenever a pass takes nothing).
func TestReadBatchDrains(t *testing.T) {
	for _, handoff := range []string{"1", "0"} {
		t.Run("FASTRPC_GO_HANDOFF="+handoff, func(t *testing.T) {
			t.Setenv("FASTRPC_GO_HANDOFF", handoff)
			const n = 300
			arrived := make(chan struct{}, n)
			release := make(chan struct{})
			s := startServer(t, func(ctx context.Context, req *Request) ([]byte, error) {
				arrived <- struct{}{}
				<-release
				return req.Value(), nil
			}, WithConcurrency(2*n))
			c := newClient(t, s.Addr(), WithPollerSpin(0))
			errs := make(chan error, n)
			var wg sync.WaitGroup
			within(t, 60*time.Second, "the held calls", func() {
				for i := 0; i < n; i++ {
					wg.Add(1)
					go func(i int) {
						defer wg.Done()
						v := fmt.Sprintf("v%d", i)
						got, err := c.Call(context.Background(), []byte("x"), []byte(v))
						if err != nil || string(got) != v {
							errs <- fmt.Errorf("call %d: %q, %v", i, got, err)
						}
					}(i)
				}
				for i := 0; i < n; i++ {
					<-arrived
				}
				close(release)
				wg.Wait()
			})
			failOnAny(t, errs)
			if p := c.c.hot.pending.Load(); p != 0 {
				t.Fatalf("%d calls still counted pending", p)
			}
		})
	}
}
