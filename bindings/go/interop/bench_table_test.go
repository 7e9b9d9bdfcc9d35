package interop

// TestBenchTable is the binding's benchmark against the reference client (run by
// scripts/bench-go.sh with FASTRPC_BENCH=1; skipped otherwise): for G = 1, 16, 256, 1024
// goroutines and compression none and snappy, our client and the reference client, in
// interleaved rounds, call the same server in another process; one connection per client,
// name "foo", value "foobar". The servers (FASTRPC_BENCH_SERVER, default
// "engine,reference,ours"): the engine's own (`fastrpc serve --reply echo`, answering
// "foo:foobar"; FASTRPC_CLI or target/release/fastrpc), the reference server and the Go
// binding's server (children: this test binary again, echoing the value). Each cell also
// runs the engine's own Rust client (`fastrpc bench --addr`, benchrun.EngineClient) in the
// same rounds, unless FASTRPC_BENCH_ENGINE_CLIENT=0: the cheapest client of this library, it
// shows how far a client can go against that server on this machine. Cells without
// compression also run the raw client (`fastrpc bench --raw --raw-handshake`,
// benchrun.RawClient) and the same with a task per call (benchrun.RawTasksClient), unless
// FASTRPC_BENCH_RAW_CLIENT=0: no machinery at all, they bound what any client (and any
// client whose callers each wait for their own call) reaches against that server on this
// machine. The last cells run client and server in one process (ours with ours, the
// reference with the reference; 1 goroutine, and 16 when 16 is measured); then the idle CPU
// of every process over 2 s.
// FASTRPC_BENCH_MODES lists our client's variants to compare, "mode[+spin=DURATION]" (mode
// "leader", the default, or "netpoll", the poller alone: FASTRPC_GO_POLLER of ../poller.go;
// +spin: WithReadSpin); servers take "+spin=" too (not the
// reference). FASTRPC_BENCH_ROUNDS and FASTRPC_BENCH_MS size the run; FASTRPC_BENCH_G (e.g.
// "1,16") and FASTRPC_BENCH_COMP ("none") pick cells; FASTRPC_BENCH_WORKERS sets the
// library's worker threads (ours.SetWorkerThreads) for the run.

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
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

// benchServe is the child's side: what is "kind:compression[:read spin in µs]", kind
// "reference" or "ours".
func benchServe(t *testing.T, what string) {
	f := strings.Split(what, ":")
	w := wire{clientComp: benchComp(f[1]), serverComp: benchComp(f[1])}
	var addr string
	if f[0] == "ours" {
		var extra []ours.ServerOption
		if len(f) > 2 {
			us, _ := strconv.Atoi(f[2])
			extra = append(extra, ours.WithServerReadSpin(time.Duration(us)*time.Microsecond))
		}
		addr = startOurServer(t, w, func(_ context.Context, req *ours.Request) ([]byte, error) { return req.Value(), nil }, extra...).Addr()
	} else {
		addr, _ = startRefServer(t, w, func(ctx *tlv.RequestCtx) { ctx.Response.Append(ctx.Request.Value()) })
	}
	benchrun.Serve(addr)
}

// clientOpts: read_spin for a client variant that sets it.
func clientOpts(v benchrun.Variant) []ours.ClientOption {
	if v.SetSpin {
		return []ours.ClientOption{ours.WithReadSpin(v.Spin)}
	}
	return nil
}

// server is one benchmark server in another process.
type server struct {
	addr  string
	label string
	pid   int
	want  string // the response to "foo"/"foobar"
}

// startServer starts variant v with compression comp in another process.
func startServer(t *testing.T, v benchrun.Variant, comp string) (server, func()) {
	var addr string
	var pid int
	var stop func()
	var err error
	want := "foobar"
	switch v.Name {
	case "engine":
		addr, pid, stop, err = benchrun.StartEngine(v, comp)
		want = "foo:foobar" // fastrpc serve --reply echo: name ':' value
	case "reference", "ours":
		what := v.Name + ":" + comp
		if v.SetSpin {
			if v.Name == "reference" {
				t.Fatalf("the reference server has no read_spin")
			}
			what += ":" + strconv.FormatInt(v.Spin.Microseconds(), 10)
		}
		addr, pid, stop, err = benchrun.StartChild("TestBenchTable", what)
	default:
		t.Fatalf("unknown benchmark server %q (engine, reference, ours)", v.Name)
	}
	if err != nil {
		t.Fatal(err)
	}
	name := v.Name
	if name == "ours" {
		name = "Go binding"
	}
	if v.SetSpin {
		name += fmt.Sprintf(", read_spin %v", v.Spin)
	}
	return server{addr: addr, label: fmt.Sprintf("%s, %s server", comp, name), pid: pid, want: want}, func() { stop() }
}

func TestBenchTable(t *testing.T) {
	if what := os.Getenv(benchrun.ChildEnv); what != "" {
		benchServe(t, what)
		return
	}
	if os.Getenv("FASTRPC_BENCH") == "" {
		t.Skip("the benchmark table: run scripts/bench-go.sh")
	}
	servers, err := benchrun.ParseVariants(os.Getenv("FASTRPC_BENCH_SERVER"), "engine,reference,ours")
	if err != nil {
		t.Fatal(err)
	}
	clients, err := benchrun.ParseClients(os.Getenv("FASTRPC_BENCH_MODES"))
	if err != nil {
		t.Fatal(err)
	}
	comps := strings.Split(os.Getenv("FASTRPC_BENCH_COMP"), ",")
	if os.Getenv("FASTRPC_BENCH_COMP") == "" {
		comps = []string{"none", "snappy"}
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
	var children []server
	for _, comp := range comps {
		for _, sv := range servers {
			srv, stop := startServer(t, sv, comp)
			defer stop()
			children = append(children, srv)
			w := wire{clientComp: benchComp(comp), serverComp: benchComp(comp)}
			addr := srv.addr
			var impls []benchrun.Impl
			for _, cv := range clients {
				os.Setenv("FASTRPC_GO_POLLER", cv.Name) // read by NewClient
				impls = append(impls, benchImpl("ours ("+cv.String()+")", ourLoop(newOurClient(t, addr, w, clientOpts(cv)...), srv.want)))
			}
			if os.Getenv("FASTRPC_BENCH_ENGINE_CLIENT") != "0" {
				e, err := benchrun.EngineClient(addr, comp)
				if err != nil {
					t.Fatal(err)
				}
				impls = append(impls, e)
			}
			if comp == "none" && os.Getenv("FASTRPC_BENCH_RAW_CLIENT") != "0" {
				for _, mk := range []func(string) (benchrun.Impl, error){benchrun.RawClient, benchrun.RawTasksClient} {
					r, err := mk(addr)
					if err != nil {
						t.Fatal(err)
					}
					impls = append(impls, r)
				}
			}
			impls = append(impls, benchImpl("reference", refLoop(newRefClient(addr, w), srv.want)))
			for _, g := range gs {
				cells = append(cells, benchrun.Cell{Label: srv.label, G: g, Impls: impls, Baseline: true, ServerPID: srv.pid})
			}
		}
	}
	// One process: client and server side by side.
	w := wire{clientComp: ours.CompressNone, serverComp: ours.CompressNone}
	var impls []benchrun.Impl
	for _, cv := range clients {
		os.Setenv("FASTRPC_GO_POLLER", cv.Name)
		var sopts []ours.ServerOption
		if cv.SetSpin {
			sopts = append(sopts, ours.WithServerReadSpin(cv.Spin))
		}
		s := startOurServer(t, w, func(_ context.Context, req *ours.Request) ([]byte, error) { return req.Value(), nil }, sopts...)
		impls = append(impls, benchImpl("ours+our server ("+cv.String()+")", ourLoop(newOurClient(t, s.Addr(), w, clientOpts(cv)...), "foobar")))
	}
	raddr, _ := startRefServer(t, w, func(ctx *tlv.RequestCtx) { ctx.Response.Append(ctx.Request.Value()) })
	impls = append(impls, benchImpl("reference+reference server", refLoop(newRefClient(raddr, w), "foobar")))
	// One goroutine, and 16 when that is measured too (what the program's other goroutines,
	// here the server's, see of our client's short waits).
	for _, g := range []int{1, 16} {
		if g == 1 || slices.Contains(gs, g) {
			cells = append(cells, benchrun.Cell{Label: "none, one process", G: g, Impls: impls, Baseline: true})
		}
	}

	cfg := benchrun.Config{
		Cells:  cells,
		Rounds: benchEnvInt("FASTRPC_BENCH_ROUNDS", 3),
		Each:   time.Duration(benchEnvInt("FASTRPC_BENCH_MS", 400)) * time.Millisecond,
	}
	fmt.Printf("GOMAXPROCS=%d, %d rounds of %v per client and cell\n", runtimeProcs(), cfg.Rounds, cfg.Each)
	if err := benchrun.Run(os.Stdout, os.Stderr, cfg); err != nil {
		t.Fatal(err)
	}

	// Idle: every client connected, no call; CPU time of this process (all the clients, the
	// one-process servers) and of each server process over 2 s.
	time.Sleep(300 * time.Millisecond)
	const idle = 2 * time.Second
	own0 := benchrun.CPUTime()
	ch0 := make([]time.Duration, len(children))
	for i, c := range children {
		ch0[i] = benchrun.ProcessCPUTime(c.pid)
	}
	time.Sleep(idle)
	fmt.Printf("\nIdle for %v, every connection open: this process (clients) %v of CPU", idle, (benchrun.CPUTime() - own0).Round(time.Millisecond))
	for i, c := range children {
		fmt.Printf("; %s %v", c.label, benchrun.ProcessCPUTime(c.pid)-ch0[i])
	}
	fmt.Println(" (server processes: 10 ms resolution)")
}

func benchImpl(name string, f func() func() error) benchrun.Impl {
	return benchrun.Impl{Name: name, NewCaller: func() benchrun.Caller { return f() }}
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
