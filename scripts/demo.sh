#!/usr/bin/env bash
# The main demo: a server and 256 concurrent callers on one loopback connection, in each
# compression, printing calls/s, frames per flush and wire bytes per call. Builds first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example throughput
for c in none snappy flate; do
  ./target/release/examples/throughput 256 3 "$c"
done
