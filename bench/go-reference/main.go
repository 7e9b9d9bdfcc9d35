// Command go-reference is the Go reference (github.com/valyala/fastrpc, tlv messages) as a
// benchmark peer for scripts/bench.sh, shaped like `fastrpc serve` and `fastrpc bench`:
//
//	go-reference serve --listen 127.0.0.1:0 --compress none|snappy|flate [--tls-cert F --tls-key K] [--reply-size 255]
//	go-reference bench [--addr ADDR] --compress none --concurrency 1024 --duration 2s [--tls] [--json] [--idle 3s]
//
// `serve` prints "listening ADDR" on stdout, then answers every request with --reply-size
// bytes of 'x' (as `fastrpc serve --reply fixed:N`) until SIGTERM or SIGINT.
//
// `bench` is the reference client on one connection with --concurrency goroutines each
// looping DoDeadline("foo", "foobar") (request and response reused per goroutine, as the
// reference's own benchmarks do) and checking the response's size. Without --addr it starts
// `go-reference serve` as a child process (this executable) with the same --compress, TLS and
// --reply-size, so client and server are separate processes as with
// `fastrpc bench --spawn-server child`. --json prints one line with the keys of
// `fastrpc bench --json` that apply (calls_per_sec, p50_us, p99_us, cpu_user_s, ...).
// --idle D keeps the connection open and idle for D after the run and reports the CPU that
// client and server used meanwhile (idle_client_cpu_pct, idle_server_cpu_pct: percent of one
// core).
//
// It builds only when the reference is at hand: scripts/bench.sh builds it with
// FASTRPC_REFERENCE_DIR set (see docs/BENCHMARKS.md).
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	ref "github.com/valyala/fastrpc"
	"github.com/valyala/fastrpc/tlv"
)

// latencySample: one call in this many has its latency measured (and reads the clock), as in
// fastrpc bench (cli/src/bench.rs, LATENCY_SAMPLE).
const latencySample = 16

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "serve":
		os.Exit(serve(os.Args[2:]))
	case "bench":
		os.Exit(bench(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: go-reference serve|bench [flags] (go-reference CMD -h for the flags)")
	os.Exit(1)
}

func parseCompress(s string) (ref.CompressType, error) {
	switch s {
	case "none":
		return ref.CompressNone, nil
	case "flate":
		return ref.CompressFlate, nil
	case "snappy":
		return ref.CompressSnappy, nil
	}
	return 0, fmt.Errorf("--compress %q: want none, flate or snappy", s)
}

// quietLog drops the reference server's log lines (connection closed and the like).
type quietLog struct{}

func (quietLog) Printf(string, ...any) {}

func serve(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	compress := fs.String("compress", "none", "compression of responses: none, flate or snappy")
	cert := fs.String("tls-cert", "", "serve TLS with this certificate chain, PEM (needs --tls-key)")
	key := fs.String("tls-key", "", "the private key of --tls-cert, PEM")
	replySize := fs.Int("reply-size", 255, "reply size in bytes ('x' repeated)")
	_ = fs.Parse(args)
	ct, err := parseCompress(*compress)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-reference serve:", err)
		return 1
	}
	reply := []byte(strings.Repeat("x", *replySize))
	s := &ref.Server{
		CompressType:  ct,
		Logger:        quietLog{},
		NewHandlerCtx: func() ref.HandlerCtx { return &tlv.RequestCtx{} },
		Handler: func(hc ref.HandlerCtx) ref.HandlerCtx {
			hc.(*tlv.RequestCtx).Response.Append(reply)
			return hc
		},
	}
	if *cert != "" || *key != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			fmt.Fprintln(os.Stderr, "go-reference serve: tls:", err)
			return 1
		}
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-reference serve:", err)
		return 1
	}
	fmt.Printf("listening %s\n", ln.Addr())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() { _ = s.Serve(ln) }()
	<-stop
	_ = ln.Close()
	return 0
}

// child is a `go-reference serve` started by `bench`.
type child struct {
	cmd  *exec.Cmd
	addr string
}

func startChild(compress, cert, key string, replySize int) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	a := []string{"serve", "--listen", "127.0.0.1:0", "--compress", compress, "--reply-size", strconv.Itoa(replySize)}
	if cert != "" {
		a = append(a, "--tls-cert", cert, "--tls-key", key)
	}
	cmd := exec.Command(exe, a...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if !ok {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("child server did not start (got %q)", line)
	}
	return &child{cmd: cmd, addr: addr}, nil
}

func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

// procCPU is the user and system CPU seconds of process pid (/proc/PID/stat).
func procCPU(pid int) (float64, float64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0, 0, false
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0, 0, false
	}
	u, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	const clkTck = 100 // sysconf(_SC_CLK_TCK) on Linux
	return u / clkTck, st / clkTck, true
}

func selfCPU() (float64, float64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime), tv(ru.Stime)
}

func round(v float64, digits int) float64 {
	p, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'f', digits, 64), 64)
	return p
}

func bench(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	addr := fs.String("addr", "", "server address (default: start `go-reference serve` as a child process)")
	compress := fs.String("compress", "none", "compression: none, flate or snappy (client and child server)")
	concurrency := fs.Int("concurrency", 1024, "calls in flight (goroutines) on the one connection")
	duration := fs.Duration("duration", 2*time.Second, "how long to run")
	useTLS := fs.Bool("tls", false, "use TLS (the client skips verification, as the reference's TLS benchmarks)")
	cert := fs.String("server-tls-cert", "", "certificate of the child server, PEM (implies --tls)")
	key := fs.String("server-tls-key", "", "private key of the child server's certificate, PEM")
	replySize := fs.Int("reply-size", 255, "reply size of the child server; every response must have this size")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline of each call (counted from the last of its goroutine's clock reads, at most latencySample calls before)")
	asJSON := fs.Bool("json", false, "print one JSON line")
	idle := fs.Duration("idle", 0, "after the run, stay connected and idle this long and report the CPU used meanwhile")
	_ = fs.Parse(args)
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "go-reference bench:", err)
		return 1
	}
	ct, err := parseCompress(*compress)
	if err != nil {
		return fail(err)
	}
	if *concurrency < 1 {
		return fail(errors.New("--concurrency must be at least 1"))
	}
	if *cert != "" {
		*useTLS = true
	}
	serverPid := 0
	if *addr == "" {
		if *useTLS && *cert == "" {
			return fail(errors.New("TLS against a child server needs --server-tls-cert and --server-tls-key"))
		}
		c, err := startChild(*compress, *cert, *key, *replySize)
		if err != nil {
			return fail(err)
		}
		defer c.stop()
		*addr = c.addr
		serverPid = c.cmd.Process.Pid
	}
	// The reference refuses a call when the count of pending calls including itself reaches
	// MaxPendingRequests: leave room above --concurrency.
	maxPending := 2 * *concurrency
	if maxPending < ref.DefaultMaxPendingRequests {
		maxPending = ref.DefaultMaxPendingRequests
	}
	client := &ref.Client{
		Addr:               *addr,
		CompressType:       ct,
		MaxPendingRequests: maxPending,
		NewResponse:        func() ref.ResponseReader { return &tlv.Response{} },
	}
	if *useTLS {
		client.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	}
	// The reference client connects on its first call: one before the clock starts.
	{
		req, resp := &tlv.Request{}, &tlv.Response{}
		req.SetName("foo")
		req.Append([]byte("foobar"))
		if err := client.DoDeadline(req, resp, time.Now().Add(*timeout)); err != nil {
			return fail(fmt.Errorf("warm-up call to %s: %w", *addr, err))
		}
	}

	type result struct {
		calls, errors uint64
		lat           []uint32 // nanoseconds, saturated
	}
	results := make([]result, *concurrency)
	var stop atomic.Bool
	var wg sync.WaitGroup
	runtime.GC()
	u0, s0 := selfCPU()
	su0, ss0, _ := procCPU(serverPid)
	start := time.Now()
	for g := 0; g < *concurrency; g++ {
		wg.Add(1)
		go func(r *result) {
			defer wg.Done()
			req, resp := &tlv.Request{}, &tlv.Response{}
			value := []byte("foobar")
			r.lat = make([]uint32, 0, 1024)
			// As fastrpc bench: the latency of one call in latencySample is measured (each
			// goroutine's first, then every latencySample-th), and the deadline of the
			// others counts from the last clock read (a call's deadline is 10 s by default).
			var t0 time.Time
			for n := 0; !stop.Load(); n++ {
				req.Reset()
				req.SetName("foo")
				req.Append(value)
				sampled := n%latencySample == 0
				if sampled {
					t0 = time.Now()
				}
				err := client.DoDeadline(req, resp, t0.Add(*timeout))
				if err != nil || len(resp.Value()) != *replySize {
					r.errors++
					if err != nil && !errors.Is(err, ref.ErrTimeout) {
						time.Sleep(time.Millisecond)
					}
					n = -1 // the next call is sampled and reads the clock
					continue
				}
				r.calls++
				if !sampled {
					continue
				}
				ns := time.Since(t0).Nanoseconds()
				if ns > 1<<32-1 {
					ns = 1<<32 - 1
				}
				r.lat = append(r.lat, uint32(ns))
			}
		}(&results[g])
	}
	time.Sleep(*duration)
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	u1, s1 := selfCPU()
	su1, ss1, okServer := procCPU(serverPid)

	var calls, errs uint64
	n := 0
	for i := range results {
		calls += results[i].calls
		errs += results[i].errors
		n += len(results[i].lat)
	}
	all := make([]uint32, 0, n)
	for i := range results {
		all = append(all, results[i].lat...)
		results[i].lat = nil
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	q := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		i := int(p * float64(len(all)))
		if i >= len(all) {
			i = len(all) - 1
		}
		return round(float64(all[i])/1e3, 1)
	}
	var sum float64
	for _, v := range all {
		sum += float64(v)
	}
	mean := 0.0
	if len(all) > 0 {
		mean = sum / float64(len(all)) / 1e3
	}
	out := map[string]any{
		"mode":          "reference",
		"server":        "external",
		"compress":      *compress,
		"tls":           *useTLS,
		"connections":   1,
		"concurrency":   *concurrency,
		"threads":       runtime.GOMAXPROCS(0),
		"name_size":     3,
		"value_size":    6,
		"reply_size":    *replySize,
		"calls":         calls,
		"errors":        errs,
		"elapsed_s":     round(elapsed, 4),
		"calls_per_sec": round(float64(calls)/elapsed, 1),
		"p50_us":        q(0.5),
		"p90_us":        q(0.9),
		"p99_us":        q(0.99),
		"p999_us":       q(0.999),
		"max_us":        q(1),
		"mean_us":       round(mean, 1),
		"cpu_user_s":    round(u1-u0, 3),
		"cpu_sys_s":     round(s1-s0, 3),
	}
	if serverPid != 0 {
		out["server"] = fmt.Sprintf("child pid %d", serverPid)
		if okServer {
			out["server_cpu_user_s"] = round(su1-su0, 3)
			out["server_cpu_sys_s"] = round(ss1-ss0, 3)
		}
	}
	if *idle > 0 {
		// Connected (the reference client keeps its connection) and idle.
		u0, s0 := selfCPU()
		su0, ss0, _ := procCPU(serverPid)
		t0 := time.Now()
		time.Sleep(*idle)
		secs := time.Since(t0).Seconds()
		u1, s1 := selfCPU()
		out["idle_s"] = round(secs, 3)
		out["idle_client_cpu_pct"] = round(100*(u1-u0+s1-s0)/secs, 3)
		if su1, ss1, ok := procCPU(serverPid); ok && serverPid != 0 {
			out["idle_server_cpu_pct"] = round(100*(su1-su0+ss1-ss0)/secs, 3)
		}
	}
	if *asJSON {
		b, _ := json.Marshal(out) // keys sorted, as `fastrpc bench --json`
		fmt.Println(string(b))
	} else {
		fmt.Printf("reference calls: 1 connection x %d in flight, compress %s, tls %v\n", *concurrency, *compress, *useTLS)
		fmt.Printf("  calls/s   %.0f (%d calls, %d errors, %.2f s)\n", float64(calls)/elapsed, calls, errs, elapsed)
		fmt.Printf("  latency   p50 %.1f us  p99 %.1f us  max %.1f us\n", q(0.5), q(0.99), q(1))
		fmt.Printf("  cpu       client %.2f s", u1-u0+s1-s0)
		if okServer && serverPid != 0 {
			fmt.Printf(", server %.2f s", su1-su0+ss1-ss0)
		}
		fmt.Println()
		if v, ok := out["idle_client_cpu_pct"]; ok {
			fmt.Printf("  idle cpu  client %v%%, server %v%% of one core\n", v, out["idle_server_cpu_pct"])
		}
	}
	if calls == 0 || float64(errs) > 0.01*float64(calls+errs) {
		fmt.Fprintf(os.Stderr, "go-reference bench: %d of %d calls failed\n", errs, calls+errs)
		return 2
	}
	return 0
}
