#!/usr/bin/env bash
# The main demo, building what it needs: a C echo server and the C clients (blocking,
# callbacks, completion queue) and the C++ RAII example against it, then the Rust engine's
# throughput with 256 concurrent callers on one loopback connection in each compression.
# Ends with `demo: passed`, or `demo: FAILED (...)` and a non-zero exit status.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'rc=$?; echo; echo "demo: FAILED (exit status $rc in: $BASH_COMMAND)"; exit $rc' ERR
./scripts/demo-c.sh
echo
echo "== Rust engine: 256 concurrent callers, one connection, server in the same process"
cargo build --release --example throughput
for c in none snappy flate; do
  timeout 60 ./target/release/examples/throughput 256 3 "$c"
done
echo
echo "demo: passed"
