package fastrpc

// TestBenchTable is the binding's benchmark without the reference (scripts/bench-go.sh
// with FASTRPC_REFERENCE_DIR unset and FASTRPC_BENCH=1; skipped otherwise): our client
// against our server in another process (a child: this test binary again), for G = 1, 16,
// 256, 1024 goroutines and compression none and snappy, plus client and server in one
// process; absolute figures. With the reference, interop/bench_table_test.go runs the same
// cells with the reference client beside ours.

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastrpc-rs/fastrpc/bindings/go/internal/benchrun"
)

func benchCompression(name string) Compression {
	if name == "snappy" {
		return CompressSnappy
	}
	return CompressNone
}

func benchValue(_ context.Context, req *Request) ([]byte, error) { return req.Value(), nil }

// benchImpl: one client shared by every goroutine; each goroutine calls "foo"/"foobar".
func benchImpl(name string, c *Client) benchrun.Impl {
	return benchrun.Impl{Name: name, NewCaller: func() benchrun.Caller {
		n, v := []byte("foo"), []byte("foobar")
		ctx := context.Background()
		return func() error {
			resp, err := c.Call(ctx, n, v)
			if err == nil && string(resp) != "foobar" {
				err = fmt.Errorf("wrong response %q", resp)
			}
			return err
		}
	}}
}

func TestBenchTable(t *testing.T) {
	if what := os.Getenv(benchrun.ChildEnv); what != "" {
		_, comp, _ := strings.Cut(what, ":")
		s := startServer(t, benchValue, WithServerCompression(benchCompression(comp)))
		benchrun.Serve(s.Addr())
		return
	}
	if os.Getenv("FASTRPC_BENCH") == "" {
		t.Skip("the benchmark table: run scripts/bench-go.sh")
	}
	modes := strings.Split(os.Getenv("FASTRPC_BENCH_MODES"), ",")
	if os.Getenv("FASTRPC_BENCH_MODES") == "" {
		modes = []string{"netpoll"}
	}
	defer os.Unsetenv("FASTRPC_GO_POLLER")
	var cells []benchrun.Cell
	for _, comp := range []string{"none", "snappy"} {
		addr, stop, err := benchrun.StartChild("TestBenchTable", "ours:"+comp)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		var impls []benchrun.Impl
		for _, m := range modes {
			os.Setenv("FASTRPC_GO_POLLER", m) // read by NewClient
			c := newClient(t, addr, WithCompression(benchCompression(comp)), WithMaxPendingRequests(4096))
			impls = append(impls, benchImpl("ours ("+m+")", c))
		}
		for _, g := range []int{1, 16, 256, 1024} {
			cells = append(cells, benchrun.Cell{Label: comp + ", our server in another process", G: g, Impls: impls})
		}
	}
	var impls []benchrun.Impl
	for _, m := range modes {
		os.Setenv("FASTRPC_GO_POLLER", m)
		s := startServer(t, benchValue, WithServerCompression(CompressNone))
		c := newClient(t, s.Addr(), WithCompression(CompressNone), WithMaxPendingRequests(4096))
		impls = append(impls, benchImpl("ours+our server ("+m+")", c))
	}
	cells = append(cells, benchrun.Cell{Label: "none, one process", G: 1, Impls: impls})
	rounds, ms := 3, 400
	if v, err := strconv.Atoi(os.Getenv("FASTRPC_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	if v, err := strconv.Atoi(os.Getenv("FASTRPC_BENCH_MS")); err == nil && v > 0 {
		ms = v
	}
	cfg := benchrun.Config{Cells: cells, Rounds: rounds, Each: time.Duration(ms) * time.Millisecond}
	if err := benchrun.Run(os.Stdout, os.Stderr, cfg); err != nil {
		t.Fatal(err)
	}
}
