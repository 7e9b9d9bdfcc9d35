#!/usr/bin/env bash
# The Go binding's benchmark table (bindings/go/README.md, "Tests and benchmarks"): our client
# and the reference Go client (github.com/valyala/fastrpc, from FASTRPC_REFERENCE_DIR) in
# interleaved rounds against the same server in another process (the engine's own
# `fastrpc serve`, the reference server, the Go binding's server), for 1, 16, 256 and 1024
# goroutines and compression none and snappy; calls/s, p50, client CPU per call and
# ours/reference per cell (and, in the same rounds, the engine's own Rust client, `fastrpc
# bench --addr` with one worker thread: how far a client of this library gets against that
# server on this machine; without compression also the raw client, `fastrpc bench --raw
# --raw-handshake`, with and without a task per call: how far any client gets), plus one cell with client and server in one process and the idle
# CPU of every process. Without FASTRPC_REFERENCE_DIR it prints the binding's own figures
# (against the engine's and the Go binding's servers).
#
#   FASTRPC_REFERENCE_DIR=/path/to/valyala/fastrpc ./scripts/bench-go.sh
#   (on a shared machine: flock /work/bench.lock ./scripts/bench-go.sh, one benchmark at a time)
#
# Knobs: FASTRPC_BENCH_ROUNDS (3), FASTRPC_BENCH_MS (400 ms per client, cell and round),
# FASTRPC_BENCH_MODES (our client's variants, "mode[+spin=DURATION]": mode leader, the
# binding's default, or netpoll, the poller alone as before leader (FASTRPC_GO_POLLER of
# bindings/go/poller.go); +spin sets WithReadSpin; default leader; e.g. leader,netpoll,leader+spin=50us),
# FASTRPC_BENCH_SERVER (servers in another process, "kind[+spin=DURATION]", kind engine,
# reference or ours; default engine,reference,ours), FASTRPC_BENCH_G (e.g. 1,16),
# FASTRPC_BENCH_COMP (e.g. none), FASTRPC_BENCH_WORKERS, FASTRPC_BENCH_ENGINE_CLIENT=0 (no
# engine's Rust client row), FASTRPC_BENCH_RAW_CLIENT=0 (no raw client rows).
set -euo pipefail
cd "$(dirname "$0")/.."
export CGO_ENABLED=1
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export FASTRPC_BENCH=1
cargo build --release --lib >&2
cargo build --release -p fastrpc-cli >&2
export FASTRPC_CLI="$PWD/target/release/fastrpc"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC'); $(go version)"
if [ -z "${FASTRPC_REFERENCE_DIR:-}" ]; then
  echo "FASTRPC_REFERENCE_DIR is not set: the binding's own figures only (no reference client)."
  cd bindings/go
  exec go test -run '^TestBenchTable$' -count=1 -timeout 20m -v .
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp bindings/go/interop/go.mod bindings/go/interop/go.sum "$tmp/"
dir=$(cd "$FASTRPC_REFERENCE_DIR" && pwd)
if [ ! -f "$dir/go.mod" ]; then
  mkdir -p "$tmp/reference" && cp -R "$dir/." "$tmp/reference/"
  printf 'module github.com/valyala/fastrpc\n\ngo 1.21\n' > "$tmp/reference/go.mod"
  dir="$tmp/reference"
fi
cd bindings/go/interop
go mod edit -modfile="$tmp/go.mod" \
  -require=github.com/valyala/fastrpc@v0.0.0-00010101000000-000000000000 \
  -replace=github.com/valyala/fastrpc="$dir"
go test -modfile="$tmp/go.mod" -run '^TestBenchTable$' -count=1 -timeout 20m -v .
