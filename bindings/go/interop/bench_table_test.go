package interop

// TestBenchTable is the binding's benchmark against the reference client (run by
// scripts/bench-go.sh with FASTRPC_BENCH=1; skipped otherwise): for G = 1, 16, 256, 1024
// goroutines and compression none and snappy, our client and the reference client, in
// interleaved rounds, call the same server in another process (a child: this test binary
// again, serving with the reference server, or ours with FASTRPC_BENCH_SERVER=ours); one
// connection per client, name "foo", value "foobar", the value echoed. A last cell runs
// client and server in one process (ours with ours, the reference with the reference).
// FASTRPC_BENCH_MODES lists our client's poller modes to compare (see ../poller.go:
// netpoll, netpoll-spin, blocking); FASTRPC_BENCH_ROUNDS and FASTRPC_BENCH_MS size the run;
// FASTRPC_BENCH_G (e.g. "1,16") picks goroutine counts; FASTRPC_BENCH_WORKERS sets the
// library's worker threads (ours.SetWorkerThreads) for the run.

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	ours "github.com/fastrpc-rs/fastrpc/bindings/go"
	"github.com/fastrpc-rs/fastrpc/bindings/go/internal/benchrun"
	"github.com/valyala/fastrpc/tlv"
)

func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func benchComp(name string) ours.Compression {
	if name == "snappy" {
		return ours.CompressSnappy
	}
	return ours.CompressNone
}

// benchServe is the child's side: serve with kind ("reference" or "ours") and compression.
func benchServe(t *testing.T, what string) {
	kind, comp, _ := strings.Cut(what, ":")
	w := wire{clientComp: benchComp(comp), serverComp: benchComp(comp)}
	var addr string
	if kind == "ours" {
		addr = startOurServer(t, w, func(_ context.Context, req *ours.Request) ([]byte, error) { return req.Value(), nil }).Addr()
	} else {
		addr, _ = startRefServer(t, w, func(ctx *tlv.RequestCtx) { ctx.Response.Append(ctx.Request.Value()) })
	}
	benchrun.Serve(addr)
}

func TestBenchTable(t *testing.T) {
	if what := os.Getenv(benchrun.ChildEnv); what != "" {
		benchServe(t, what)
		return
	}
	if os.Getenv("FASTRPC_BENCH") == "" {
		t.Skip("the benchmark table: run scripts/bench-go.sh")
	}
	server := os.Getenv("FASTRPC_BENCH_SERVER")
	if server == "" {
		server = "reference"
	}
	modes := strings.Split(os.Getenv("FASTRPC_BENCH_MODES"), ",")
	if os.Getenv("FASTRPC_BENCH_MODES") == "" {
		modes = []string{"netpoll"}
	}
	defer os.Unsetenv("FASTRPC_GO_POLLER")
	gs := []int{1, 16, 256, 1024}
	if v := os.Getenv("FASTRPC_BENCH_G"); v != "" { // a subset, for quick comparisons
		gs = nil
		for _, f := range strings.Split(v, ",") {
			if g, err := strconv.Atoi(f); err == nil && g > 0 {
				gs = append(gs, g)
			}
		}
	}
	if n := benchEnvInt("FASTRPC_BENCH_WORKERS", 0); n > 0 {
		if err := ours.SetWorkerThreads(n); err != nil {
			t.Fatal(err)
		}
	}
	var cells []benchrun.Cell
	for _, comp := range []string{"none", "snappy"} {
		addr, stop, err := benchrun.StartChild("TestBenchTable", server+":"+comp)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		w := wire{clientComp: benchComp(comp), serverComp: benchComp(comp)}
		var impls []benchrun.Impl
		for _, m := range modes {
			os.Setenv("FASTRPC_GO_POLLER", m) // read by NewClient
			impls = append(impls, benchImpl("ours ("+m+")", ourLoop(newOurClient(t, addr, w))))
		}
		impls = append(impls, benchImpl("reference", refLoop(newRefClient(addr, w))))
		for _, g := range gs {
			cells = append(cells, benchrun.Cell{Label: comp + ", " + server + " server in another process", G: g, Impls: impls, Baseline: true})
		}
	}
	// One process: client and server side by side.
	w := wire{clientComp: ours.CompressNone, serverComp: ours.CompressNone}
	var impls []benchrun.Impl
	for _, m := range modes {
		os.Setenv("FASTRPC_GO_POLLER", m)
		s := startOurServer(t, w, func(_ context.Context, req *ours.Request) ([]byte, error) { return req.Value(), nil })
		impls = append(impls, benchImpl("ours+our server ("+m+")", ourLoop(newOurClient(t, s.Addr(), w))))
	}
	raddr, _ := startRefServer(t, w, func(ctx *tlv.RequestCtx) { ctx.Response.Append(ctx.Request.Value()) })
	impls = append(impls, benchImpl("reference+reference server", refLoop(newRefClient(raddr, w))))
	cells = append(cells, benchrun.Cell{Label: "none, one process", G: 1, Impls: impls, Baseline: true})

	cfg := benchrun.Config{
		Cells:  cells,
		Rounds: benchEnvInt("FASTRPC_BENCH_ROUNDS", 3),
		Each:   time.Duration(benchEnvInt("FASTRPC_BENCH_MS", 400)) * time.Millisecond,
	}
	fmt.Printf("GOMAXPROCS=%d, %d rounds of %v per client and cell\n", runtimeProcs(), cfg.Rounds, cfg.Each)
	if err := benchrun.Run(os.Stdout, os.Stderr, cfg); err != nil {
		t.Fatal(err)
	}
}

func benchImpl(name string, f func() func() error) benchrun.Impl {
	return benchrun.Impl{Name: name, NewCaller: func() benchrun.Caller { return f() }}
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
