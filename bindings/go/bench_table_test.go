package fastrpc

// TestBenchTable is the binding's benchmark without the reference (scripts/bench-go.sh
// with FASTRPC_REFERENCE_DIR unset and FASTRPC_BENCH=1; skipped otherwise): our client
// against servers in another process (FASTRPC_BENCH_SERVER, default "engine,ours": the
// engine's `fastrpc serve` and the Go binding's server, a child running this test binary
// again), for G = 1, 16, 256, 1024 goroutines and compression none and snappy, plus client
// and server in one process; absolute figures. FASTRPC_BENCH_MODES and FASTRPC_BENCH_SERVER
// take "name[+spin=DURATION]" as in interop/bench_table_test.go. With the reference, interop/bench_table_test.go runs the same
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

// benchImpl: one client shared by every goroutine; each goroutine calls "foo"/"foobar",
// appending the response to its one buffer (CallAppend: no allocation per call), and checks
// the response is want.
func benchImpl(name string, c *Client, want string) benchrun.Impl {
	return benchrun.Impl{Name: name, NewCaller: func() benchrun.Caller {
		n, v := []byte("foo"), []byte("foobar")
		ctx := context.Background()
		var buf []byte
		return func() error {
			var err error
			buf, err = c.CallAppend(ctx, buf[:0], n, v)
			if err == nil && string(buf) != want {
				err = fmt.Errorf("wrong response %q", buf)
			}
			return err
		}
	}}
}

func benchClientOpts(v benchrun.Variant, comp string) []ClientOption {
	opts := []ClientOption{WithCompression(benchCompression(comp)), WithMaxPendingRequests(4096)}
	if v.SetSpin {
		opts = append(opts, WithReadSpin(v.Spin))
	}
	return opts
}

func TestBenchTable(t *testing.T) {
	if what := os.Getenv(benchrun.ChildEnv); what != "" {
		f := strings.Split(what, ":")
		opts := []ServerOption{WithServerCompression(benchCompression(f[1]))}
		if len(f) > 2 {
			us, _ := strconv.Atoi(f[2])
			opts = append(opts, WithServerReadSpin(time.Duration(us)*time.Microsecond))
		}
		s := startServer(t, benchValue, opts...)
		benchrun.Serve(s.Addr())
		return
	}
	if os.Getenv("FASTRPC_BENCH") == "" {
		t.Skip("the benchmark table: run scripts/bench-go.sh")
	}
	servers, err := benchrun.ParseVariants(os.Getenv("FASTRPC_BENCH_SERVER"), "engine,ours")
	if err != nil {
		t.Fatal(err)
	}
	clients, err := benchrun.ParseClients(os.Getenv("FASTRPC_BENCH_MODES"))
	if err != nil {
		t.Fatal(err)
	}
	defer os.Unsetenv("FASTRPC_GO_POLLER")
	var cells []benchrun.Cell
	for _, comp := range []string{"none", "snappy"} {
		for _, sv := range servers {
			var addr string
			var pid int
			var stop func()
			want, label := "foobar", "Go binding"
			switch sv.Name {
			case "engine":
				addr, pid, stop, err = benchrun.StartEngine(sv, comp)
				want, label = "foo:foobar", "engine"
			case "ours":
				what := "ours:" + comp
				if sv.SetSpin {
					what += ":" + strconv.FormatInt(sv.Spin.Microseconds(), 10)
				}
				addr, pid, stop, err = benchrun.StartChild("TestBenchTable", what)
			default:
				t.Fatalf("unknown benchmark server %q (engine, ours; the reference needs FASTRPC_REFERENCE_DIR)", sv.Name)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			if sv.SetSpin {
				label += fmt.Sprintf(", read_spin %v", sv.Spin)
			}
			var impls []benchrun.Impl
			for _, cv := range clients {
				os.Setenv("FASTRPC_GO_POLLER", cv.Name) // read by NewClient
				c := newClient(t, addr, benchClientOpts(cv, comp)...)
				impls = append(impls, benchImpl("ours ("+cv.String()+")", c, want))
			}
			for _, g := range []int{1, 16, 256, 1024} {
				cells = append(cells, benchrun.Cell{Label: comp + ", " + label + " server in another process", G: g, Impls: impls, ServerPID: pid})
			}
		}
	}
	var impls []benchrun.Impl
	for _, cv := range clients {
		os.Setenv("FASTRPC_GO_POLLER", cv.Name)
		sopts := []ServerOption{WithServerCompression(CompressNone)}
		if cv.SetSpin {
			sopts = append(sopts, WithServerReadSpin(cv.Spin))
		}
		s := startServer(t, benchValue, sopts...)
		c := newClient(t, s.Addr(), benchClientOpts(cv, "none")...)
		impls = append(impls, benchImpl("ours+our server ("+cv.String()+")", c, "foobar"))
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
