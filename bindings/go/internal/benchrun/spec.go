package benchrun

// What a benchmark run compares, from the environment: our client's variants
// (FASTRPC_BENCH_MODES) and the servers in another process (FASTRPC_BENCH_SERVER), each
// "name[+spin=DURATION]", where +spin sets read_spin (WithReadSpin, WithServerReadSpin,
// `fastrpc serve --read-spin`) and its absence leaves the default.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Variant is one client or server of a run: Name (a client mode, or a server kind) and
// read_spin when SetSpin.
type Variant struct {
	Name    string
	Spin    time.Duration
	SetSpin bool
}

func (v Variant) String() string {
	if !v.SetSpin {
		return v.Name
	}
	return fmt.Sprintf("%s, read_spin %v", v.Name, v.Spin)
}

// ParseVariants reads a comma-separated list of "name[+spin=DURATION]" (def when s is empty).
func ParseVariants(s, def string) ([]Variant, error) {
	if strings.TrimSpace(s) == "" {
		s = def
	}
	var out []Variant
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		name, spin, has := strings.Cut(f, "+spin=")
		v := Variant{Name: name}
		if has {
			d, err := time.ParseDuration(spin)
			if err != nil {
				return nil, fmt.Errorf("%q: %v", f, err)
			}
			v.Spin, v.SetSpin = d, true
		}
		out = append(out, v)
	}
	return out, nil
}

// ClientModes are our client's variants that a run may name: the binding's default
// ("leader"), leader without reading the socket itself ("leader-noread": it waits on the
// completion queue's descriptor only), and the poller it builds on ("netpoll"); each is
// the binding's FASTRPC_GO_POLLER.
var ClientModes = []string{"leader", "leader-noread", "netpoll"}

// ParseClients reads FASTRPC_BENCH_MODES (default "leader"): a comma-separated list of
// "mode[+spin=DURATION]", each mode one of ClientModes.
func ParseClients(s string) ([]Variant, error) {
	vs, err := ParseVariants(s, "leader")
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		if !slices.Contains(ClientModes, v.Name) {
			return nil, fmt.Errorf("FASTRPC_BENCH_MODES: unknown client mode %q (one of %s)", v.Name, strings.Join(ClientModes, ", "))
		}
	}
	return vs, nil
}

// EngineCLI is the engine's command-line program (`fastrpc`, whose `serve` is the engine's
// own server): FASTRPC_CLI, else target/release/fastrpc of the checkout this package is in
// (found from the working directory upwards), else "".
func EngineCLI() string {
	if p := os.Getenv("FASTRPC_CLI"); p != "" {
		return p
	}
	dir, err := os.Getwd()
	for err == nil {
		p := filepath.Join(dir, "target", "release", "fastrpc")
		if st, e := os.Stat(p); e == nil && !st.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return ""
}

// StartEngine starts `fastrpc serve` on 127.0.0.1:0 with compression comp ("none",
// "snappy"), echo replies (name ':' value) and read_spin v.Spin when v.SetSpin.
func StartEngine(v Variant, comp string) (addr string, pid int, stop func(), err error) {
	cli := EngineCLI()
	if cli == "" {
		return "", 0, nil, fmt.Errorf("no engine CLI: build it (cargo build --release -p fastrpc-cli) or set FASTRPC_CLI")
	}
	args := []string{"serve", "--listen", "127.0.0.1:0", "--compress", comp, "--reply", "echo"}
	if v.SetSpin {
		args = append(args, "--read-spin", fmt.Sprintf("%dus", v.Spin.Microseconds()))
	}
	return StartCommand(cli, args...)
}

// EngineClient is the engine's own client in Rust (`fastrpc bench --addr`, one worker
// thread, one connection, "foo"/"foobar"), measured in the same rounds as the Go clients: the
// cheapest client of this library, with no cgo and no goroutines, so what it reaches against
// a server on this machine is about as far as the binding's client can go there.
func EngineClient(addr, comp string) (Impl, error) {
	return cliClient("engine's Rust client", "bench", "--addr", addr, "--compress", comp)
}

// RawClient is the raw ceiling's client (`fastrpc bench --raw --raw-handshake --addr`, one
// worker thread, one connection, "foo"/"foobar"): the protocol's opening, then pre-built
// request frames written in big batches and responses read in big reads, with no call table,
// deadlines, compression or TLS. It is the least any client can spend per call, so what it
// reaches against a server on this machine bounds every client of that server there. The
// server must answer uncompressed (cells without compression only).
func RawClient(addr string) (Impl, error) {
	return cliClient("raw client (no machinery)", "bench", "--raw", "--raw-handshake", "--addr", addr)
}

// RawTasksClient is RawClient with a tokio task per call in flight (`--raw-tasks`), each
// woken by the reader when its response arrives and handing its next request to the writer:
// the shape of a client whose callers each wait for their own call (as a Go program's
// goroutines do in Call), with nothing else. What it reaches bounds every client of that
// shape against that server on this machine.
func RawTasksClient(addr string) (Impl, error) {
	return cliClient("raw client, a task per call", "bench", "--raw", "--raw-handshake", "--raw-tasks", "--addr", addr)
}

// cliClient is a client run by the engine's CLI with args, plus the concurrency and duration
// of each measurement; the CLI's JSON report gives calls, p50 and CPU.
func cliClient(name string, args ...string) (Impl, error) {
	cli := EngineCLI()
	if cli == "" {
		return Impl{}, fmt.Errorf("no engine CLI: build it (cargo build --release -p fastrpc-cli) or set FASTRPC_CLI")
	}
	run := func(g int, d time.Duration) (External, error) {
		a := append(slices.Clone(args), "--concurrency", strconv.Itoa(g),
			"--duration", fmt.Sprintf("%dms", d.Milliseconds()), "--threads", "1", "--json", "--no-progress")
		out, err := exec.Command(cli, a...).Output()
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
				err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
			}
			return External{}, fmt.Errorf("fastrpc %s: %w", strings.Join(args, " "), err)
		}
		var r struct {
			Calls       int64   `json:"calls"`
			CallsPerSec float64 `json:"calls_per_sec"`
			P50         float64 `json:"p50_us"`
			User        float64 `json:"cpu_user_s"`
			Sys         float64 `json:"cpu_sys_s"`
			Errors      int64   `json:"errors"`
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
			return External{}, fmt.Errorf("fastrpc bench: %w in %q", err, out)
		}
		if r.Errors != 0 {
			return External{}, fmt.Errorf("fastrpc bench: %d calls failed", r.Errors)
		}
		return External{Calls: r.Calls, CallsPerSec: r.CallsPerSec,
			P50: time.Duration(r.P50 * 1e3), CPU: time.Duration((r.User + r.Sys) * 1e9)}, nil
	}
	return Impl{Name: name, External: run}, nil
}
