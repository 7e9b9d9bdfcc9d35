package fastrpc

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// echo answers name + value.
func echo(_ context.Context, req *Request) ([]byte, error) {
	out := make([]byte, 0, len(req.Name())+len(req.Value()))
	out = append(out, req.Name()...)
	return append(out, req.Value()...), nil
}

// startServer starts a server on a free loopback port; it is closed when the test ends.
func startServer(t testing.TB, h Handler, opts ...ServerOption) *Server {
	t.Helper()
	s, err := NewServer(h, opts...)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	if err := s.Serve("127.0.0.1:0"); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newClient(t testing.TB, addr string, opts ...ClientOption) *Client {
	t.Helper()
	c, err := NewClient(addr, opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// call makes one call with a generous deadline, so that a bug fails the test, not hangs it.
func call(t testing.TB, c *Client, name, value string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Call(ctx, []byte(name), []byte(value))
	if err != nil {
		t.Fatalf("Call(%q): %v", name, err)
	}
	return resp
}

func mustEqual(t testing.TB, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		if len(got) > 64 || len(want) > 64 {
			t.Fatalf("response of %d bytes differs from the expected %d bytes", len(got), len(want))
		}
		t.Fatalf("got %q, want %q", got, want)
	}
}

// threadCount reads the process's OS thread count from /proc/self/status.
func threadCount(t testing.TB) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("bad Threads line %q", sc.Text())
			}
			return n
		}
	}
	t.Skip("no Threads: line in /proc/self/status")
	return 0
}

// within fails the test if f does not return within d.
func within(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not finish within %v", what, d)
	}
}

// failOnAny closes errs, where concurrent callers sent what went wrong, and fails the test on
// the first error in it.
func failOnAny(t testing.TB, errs chan error) {
	t.Helper()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
