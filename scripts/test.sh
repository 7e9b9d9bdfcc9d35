#!/usr/bin/env bash
# Runs every test of the project, building what it needs. Used by CI (.ci/run) and README.
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/tls_interop.rs runs OpenSSL (`openssl s_server`/`s_client`) and builds a Go peer
# (the Go toolchain is needed anyway, for the Go binding below).
if ! command -v openssl >/dev/null; then
    echo "== installing openssl (Debian package), for tests/tls_interop.rs"
    SUDO=
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends openssl
fi

echo "== cargo test (unit, integration, doc tests; examples are built)"
cargo test --all-targets
cargo test --doc

echo "== the fastrpc command-line tool"
cargo test -p fastrpc-cli

echo "== allocation test in release mode (zero allocations per call)"
cargo test --release --test alloc

echo "== C ABI: C11, C++17, static and shared linking, ASan+UBSan, valgrind"
./scripts/test-c.sh

echo "== Go binding (go vet, go test -race); interop with the reference where it can be had"
./scripts/test-go.sh

echo "== robustness: fuzz replay, bad-input catalogue and faults (release), C ABI soak under ASan"
SOAK_SECONDS=${SOAK_SECONDS:-60} ./scripts/test-robustness.sh
