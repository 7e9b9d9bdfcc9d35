// Package benchrun is the Go binding's benchmark driver (scripts/bench-go.sh): it runs
// clients in interleaved rounds, G goroutines each making calls back to back for a fixed
// time, and prints calls/s, the median latency and the ratio to a baseline (the reference
// client) per cell. It also runs a benchmark server as a child process, so that the client
// under test has the process to itself. Used by the binding's tests and by the interop
// module's (which adds the reference client); not part of the binding's API.
package benchrun

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Caller makes one call (and checks its response).
type Caller func() error

// Impl is one client of a cell: NewCaller gives each goroutine its own caller (one shared
// client underneath).
type Impl struct {
	Name      string
	NewCaller func() Caller
	// External, when set, replaces NewCaller: another program measures itself with g calls
	// in flight for d (the engine's own client, EngineClient; the raw clients, RawClient and
	// RawTasksClient) and reports what it did.
	External func(g int, d time.Duration) (External, error)
}

// External is what an external client reports for one measurement.
type External struct {
	Calls       int64
	CallsPerSec float64
	P50         time.Duration
	CPU         time.Duration // the client process's, user + system
}

// Cell is one line group of the table: G goroutines, each impl in turn; the last impl is
// the baseline of the ratios when Baseline is set.
type Cell struct {
	Label    string // e.g. "none, another process"
	G        int
	Impls    []Impl
	Baseline bool
	// ServerPID, when set, is the server's process: its CPU per call is measured too
	// (10 ms resolution), which tells how much of the machine the server takes: on a small
	// machine a client that makes the server work harder per call leaves less for itself.
	ServerPID int
}

// Config is what Run measures.
type Config struct {
	Cells  []Cell
	Rounds int           // rounds; each runs every cell's impls once, in turn
	Each   time.Duration // measured time of one impl in one round
}

type sample struct {
	callsPerSec float64
	p50         time.Duration
	switches    float64 // context switches of this process's threads per call
	libSwitches float64 // of which the library's threads
	cpuPerCall  float64 // this process's CPU time (user + system) per call, in µs
	srvPerCall  float64 // the server process's, when it is another process (else 0)
	err         error
}

// CPUTime is the CPU time (user + system) this process has used so far.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// contextSwitchesByKind: of the library's threads (named fastrpc-*), and of the others.
func contextSwitchesByKind() (lib, other int64) {
	dirs, _ := os.ReadDir("/proc/self/task")
	for _, d := range dirs {
		comm, _ := os.ReadFile("/proc/self/task/" + d.Name() + "/comm")
		n := threadSwitches(d.Name())
		if strings.HasPrefix(string(comm), "fastrpc-") {
			lib += n
		} else {
			other += n
		}
	}
	return lib, other
}

// threadSwitches is one thread's voluntary and involuntary context switches.
func threadSwitches(tid string) int64 {
	b, err := os.ReadFile("/proc/self/task/" + tid + "/status")
	if err != nil {
		return 0
	}
	var n int64
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
			n += atoi(v)
		} else if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
			n += atoi(v)
		}
	}
	return n
}

func atoi(s string) int64 {
	var n int64
	for _, c := range strings.TrimSpace(s) {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// measure runs g goroutines calling for d (after one warm-up call each) and returns the
// calls/s and the median latency.
func measure(impl Impl, g int, d time.Duration, serverPID int) sample {
	if impl.External != nil {
		return measureExternal(impl, g, d, serverPID)
	}
	lat := make([][]time.Duration, g)
	callers := make([]Caller, g)
	for i := range callers {
		callers[i] = impl.NewCaller()
		if err := callers[i](); err != nil {
			return sample{err: err}
		}
	}
	var stop atomic.Bool
	var firstErr atomic.Value
	var wg sync.WaitGroup
	lib0, other0 := contextSwitchesByKind()
	cpu0 := CPUTime()
	var srv0 time.Duration
	if serverPID > 0 {
		srv0 = ProcessCPUTime(serverPID)
	}
	start := time.Now()
	for i := 0; i < g; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			call := callers[i]
			l := make([]time.Duration, 0, 4096)
			for !stop.Load() {
				t0 := time.Now()
				if err := call(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					break
				}
				l = append(l, time.Since(t0))
			}
			lat[i] = l
		}(i)
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	el := time.Since(start)
	cpu := CPUTime() - cpu0
	var srv time.Duration
	if serverPID > 0 {
		srv = ProcessCPUTime(serverPID) - srv0
	}
	lib1, other1 := contextSwitchesByKind()
	sw := lib1 - lib0 + other1 - other0
	if e := firstErr.Load(); e != nil {
		return sample{err: e.(error)}
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return sample{err: fmt.Errorf("no call finished in %v", d)}
	}
	slices.Sort(all)
	return sample{callsPerSec: float64(len(all)) / el.Seconds(), p50: all[len(all)/2],
		switches: float64(sw) / float64(len(all)), libSwitches: float64(lib1-lib0) / float64(len(all)),
		cpuPerCall: float64(cpu) / 1e3 / float64(len(all)), srvPerCall: float64(srv) / 1e3 / float64(len(all))}
}

// measureExternal measures an impl that is another program; its context switches are not
// counted (0 in the log).
func measureExternal(impl Impl, g int, d time.Duration, serverPID int) sample {
	var srv0 time.Duration
	if serverPID > 0 {
		srv0 = ProcessCPUTime(serverPID)
	}
	r, err := impl.External(g, d)
	if err != nil {
		return sample{err: err}
	}
	if r.Calls <= 0 {
		return sample{err: fmt.Errorf("no call finished in %v", d)}
	}
	var srv time.Duration
	if serverPID > 0 {
		srv = ProcessCPUTime(serverPID) - srv0
	}
	n := float64(r.Calls)
	return sample{callsPerSec: r.CallsPerSec, p50: r.P50,
		cpuPerCall: float64(r.CPU) / 1e3 / n, srvPerCall: float64(srv) / 1e3 / n}
}

// medianRatio is the median over rounds of a[r]/b[r].
func medianRatio(a, b []float64) float64 {
	r := make([]float64, len(a))
	for i := range a {
		r[i] = a[i] / b[i]
	}
	return median(r)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// Run measures every cell's impls in interleaved rounds and prints a Markdown table: per
// cell and impl, the median over rounds of calls/s, of p50 latency and of CPU per call, and
// the ratios to the baseline (calls/s: ours/reference; p50: ours/reference; the median of
// the rounds' ratios). Progress goes to log.
func Run(out, log io.Writer, cfg Config) error {
	type key struct{ cell, impl int }
	cps := map[key][]float64{}
	p50 := map[key][]float64{}
	cpu := map[key][]float64{}
	srv := map[key][]float64{}
	for r := 0; r < cfg.Rounds; r++ {
		for ci, c := range cfg.Cells {
			for ii, impl := range c.Impls {
				runtime.GC()
				s := measure(impl, c.G, cfg.Each, c.ServerPID)
				if s.err != nil {
					return fmt.Errorf("%s, %d goroutines, %s: %w", c.Label, c.G, impl.Name, s.err)
				}
				k := key{ci, ii}
				cps[k] = append(cps[k], s.callsPerSec)
				p50[k] = append(p50[k], float64(s.p50))
				cpu[k] = append(cpu[k], s.cpuPerCall)
				srv[k] = append(srv[k], s.srvPerCall)
				fmt.Fprintf(log, "round %d: %-28s G=%-5d %-22s %9.0f calls/s  p50 %7.1f µs  %.2f context switches/call (library threads %.2f)  CPU %.1f µs/call (server %.1f)\n",
					r+1, c.Label, c.G, impl.Name, s.callsPerSec, float64(s.p50)/1e3, s.switches, s.libSwitches, s.cpuPerCall, s.srvPerCall)
			}
		}
	}
	fmt.Fprintln(out, "| cell | goroutines | client | calls/s | p50 | calls/s vs baseline | p50 vs baseline | client CPU per call | server CPU per call |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|---|")
	for ci, c := range cfg.Cells {
		last := len(c.Impls) - 1
		for ii, impl := range c.Impls {
			k := key{ci, ii}
			cs, p := median(cps[k]), median(p50[k])
			ratio, pratio := "", ""
			if c.Baseline && ii != last {
				// The median of the rounds' ratios: each round measured both clients one
				// right after the other, so a burst of load elsewhere on the machine moves
				// one round's pair, not the median.
				b := key{ci, last}
				ratio = fmt.Sprintf("%.2fx", medianRatio(cps[k], cps[b]))
				pratio = fmt.Sprintf("%.2fx", medianRatio(p50[k], p50[b]))
			}
			sc := "" // in this process, or not measured
			if c.ServerPID > 0 {
				sc = fmt.Sprintf("%.1f µs", median(srv[k]))
			}
			fmt.Fprintf(out, "| %s | %d | %s | %.0f | %.1f µs | %s | %s | %.1f µs | %s |\n",
				c.Label, c.G, impl.Name, cs, p/1e3, ratio, pratio, median(cpu[k]), sc)
		}
	}
	return nil
}

// ChildEnv is the environment variable that makes a test binary a benchmark server child:
// its value is what to serve ("<kind>:<compression>"); see Serve.
const ChildEnv = "FASTRPC_BENCH_CHILD"

// StartChild runs the current test binary again as a server child (the test named
// testName must call Serve when ChildEnv is set) and returns the address it listens on and
// its process id. The
// child exits when its stdin closes (when the parent exits, or stop is called).
func StartChild(testName, what string) (addr string, pid int, stop func(), err error) {
	cmd := exec.Command(os.Args[0], "-test.run=^"+testName+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), ChildEnv+"="+what)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return "", 0, nil, err
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop = func() { in.Close(); _ = cmd.Wait() }
	sc := bufio.NewScanner(outp)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
			go func() { _, _ = io.Copy(io.Discard, outp) }()
			return a, cmd.Process.Pid, stop, nil
		}
	}
	stop()
	return "", 0, nil, fmt.Errorf("benchmark server child %q did not say where it listens", what)
}

// StartCommand runs a server program that prints "listening <addr>" on its stdout (the
// engine's `fastrpc serve`) and returns that address and its process id; stop ends it with
// SIGTERM and waits for it.
func StartCommand(path string, args ...string) (addr string, pid int, stop func(), err error) {
	cmd := exec.Command(path, args...)
	cmd.Stderr = os.Stderr
	outp, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop = func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }
	sc := bufio.NewScanner(outp)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
			go func() { _, _ = io.Copy(io.Discard, outp) }()
			return a, cmd.Process.Pid, stop, nil
		}
	}
	stop()
	return "", 0, nil, fmt.Errorf("%s did not say where it listens", path)
}

// ProcessCPUTime is the CPU time (user + system, 10 ms resolution) process pid has used.
func ProcessCPUTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) end with ')'; utime and stime are the
	// 14th and 15th fields of the whole line, in clock ticks (100 per second on Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	return time.Duration(atoi(f[11])+atoi(f[12])) * 10 * time.Millisecond
}

// Serve is the child's side: it prints "listening <addr>" and waits until stdin closes.
func Serve(addr string) {
	fmt.Printf("listening %s\n", addr)
	_, _ = io.Copy(io.Discard, os.Stdin)
}
