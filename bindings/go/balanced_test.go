package fastrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Three servers, two connections each: 300 concurrent calls all answered, every server used,
// the per-server stats add up.
func TestBalancedClientSpreads(t *testing.T) {
	var addrs []string
	for i := 0; i < 3; i++ {
		addrs = append(addrs, startServer(t, echo).Addr())
	}
	c, err := NewBalancedClient(addrs, WithConnectionsPerServer(2), WithResolveInterval(0))
	if err != nil {
		t.Fatalf("NewBalancedClient: %v", err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 300)
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			v := fmt.Sprint(i)
			resp, err := c.Call(ctx, []byte("n"), []byte(v))
			if err == nil && string(resp) != "n"+v {
				err = fmt.Errorf("call %d: got %q", i, resp)
			}
			if err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	failOnAny(t, errs)
	per := c.ServerStats()
	if len(per) != 3 {
		t.Fatalf("ServerStats: %d servers, want 3", len(per))
	}
	var sum uint64
	for i, s := range per {
		if s.Addr != addrs[i] || !s.Up || s.Connections != 2 || s.Stats.Calls == 0 {
			t.Errorf("server %d: %+v", i, s)
		}
		sum += s.Stats.Calls
	}
	if sum != 300 || c.Stats().Calls != 300 {
		t.Errorf("calls: per server %d, total %d, want 300", sum, c.Stats().Calls)
	}
	if newClient(t, addrs[0]).ServerStats() != nil {
		t.Error("a one-server Client has no per-server stats")
	}
}

// Every server down: ErrConnect naming each.
func TestBalancedClientAllDown(t *testing.T) {
	var addrs []string
	for i := 0; i < 2; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		l.Close()
	}
	c, err := NewBalancedClient(addrs, WithReconnectBackoff(5*time.Second, 10*time.Second))
	if err != nil {
		t.Fatalf("NewBalancedClient: %v", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Call(ctx, []byte("a"), nil)
	if !errors.Is(err, ErrConnect) {
		t.Fatalf("got %v, want ErrConnect", err)
	}
	for _, a := range addrs {
		if !strings.Contains(err.Error(), a) {
			t.Errorf("%q does not name %s", err, a)
		}
	}
	for _, s := range c.ServerStats() {
		if s.Up {
			t.Errorf("%s is up", s.Addr)
		}
	}
	if _, err := NewBalancedClient(nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("no address: %v", err)
	}
}

// TestBalancedCancelFreesSlots: the balanced client cancels the same way as the one-server
// client (fastrpc_balanced_client_cancel): 10,000 cancelled calls in a row over two servers
// never overflow (each connection allows the default 1000 pending calls).
func TestBalancedCancelFreesSlots(t *testing.T) {
	const n = 10000
	s1, held := holdServer(t, n)
	s2 := startServer(t, func(ctx context.Context, req *Request) ([]byte, error) {
		return s1.handler(ctx, req) // the same holding handler
	}, WithConcurrency(2*n))
	c, err := NewBalancedClient([]string{s1.Addr(), s2.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	cancelInARow(t, c, held, n)
}
