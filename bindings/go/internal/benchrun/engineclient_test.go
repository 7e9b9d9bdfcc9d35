package benchrun

// The engine's Rust client and the raw client as benchmark rows: one measurement each
// against the engine's own server, all real programs (the CLI from FASTRPC_CLI, else
// target/release/fastrpc, else target/debug/fastrpc of this checkout; scripts/test-go.sh
// builds the debug one).

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testCLI(t *testing.T) string {
	if p := EngineCLI(); p != "" {
		return p
	}
	dir, _ := os.Getwd()
	for {
		p := filepath.Join(dir, "target", "debug", "fastrpc")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no fastrpc CLI: cargo build -p fastrpc-cli, or set FASTRPC_CLI")
		}
		dir = parent
	}
}

// measureOne starts the engine's server without compression, makes the impl mk gives for
// its address (named want), checks one measurement of 4 callers, and returns the impl and
// a stop for the server (also deferred).
func measureOne(t *testing.T, mk func(addr string) (Impl, error), want string) (Impl, func()) {
	t.Helper()
	t.Setenv("FASTRPC_CLI", testCLI(t))
	addr, pid, stop, err := StartEngine(Variant{Name: "engine"}, "none")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	impl, err := mk(addr)
	if err != nil {
		t.Fatal(err)
	}
	if impl.Name != want || impl.NewCaller != nil {
		t.Fatalf("impl %+v", impl)
	}
	s := measure(impl, 4, 200*time.Millisecond, pid)
	if s.err != nil {
		t.Fatal(s.err)
	}
	if s.callsPerSec <= 0 || s.p50 <= 0 || s.cpuPerCall <= 0 || s.srvPerCall <= 0 {
		t.Fatalf("sample %+v", s)
	}
	return impl, stop
}

func TestEngineClient(t *testing.T) {
	mk := func(addr string) (Impl, error) { return EngineClient(addr, "none") }
	impl, stop := measureOne(t, mk, "engine's Rust client")
	// A server that is not there: the run fails.
	stop()
	if _, err := impl.External(1, 100*time.Millisecond); err == nil {
		t.Fatal("a run against a stopped server succeeded")
	}
}

func TestRawClient(t *testing.T) {
	measureOne(t, RawClient, "raw client (no machinery)")
	measureOne(t, RawTasksClient, "raw client, a task per call")
	// A server that compresses its responses cannot be read raw: the run says so.
	saddr, _, sstop, err := StartEngine(Variant{Name: "engine"}, "snappy")
	if err != nil {
		t.Fatal(err)
	}
	defer sstop()
	simpl, err := RawClient(saddr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = simpl.External(1, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "the server compresses its responses (code 2)") {
		t.Fatalf("raw run against a snappy server: %v", err)
	}
}
