#!/usr/bin/env bash
# The Go binding's checks: builds libfastrpc (cargo build --release --lib), then runs go vet
# and go test -race in bindings/go and in bindings/go/interop (the interop suite against the
# reference, github.com/valyala/fastrpc; see bindings/go/INTEROP.md), and the example.
# Every step is bounded in time.
#
#   ./scripts/test-go.sh
#   FASTRPC_REFERENCE_DIR=/path/to/valyala/fastrpc ./scripts/test-go.sh   # reference from a checkout
#   FASTRPC_REQUIRE_INTEROP=1 ./scripts/test-go.sh    # fail (not skip) when the reference is unavailable
#   GO_TEST_FLAGS='-count=3' ./scripts/test-go.sh     # extra flags for both go test runs
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n### %s\n' "$*"; }

command -v go >/dev/null || { echo "go is not installed" >&2; exit 1; }
export CGO_ENABLED=1
export GOFLAGS="${GOFLAGS:-} -mod=mod"
extra=(${GO_TEST_FLAGS:-})

step "building libfastrpc (cargo build --release --lib)"
timeout 900 cargo build --release --lib

# Programs linked against target/release/libfastrpc.so ask for its SONAME; the binding ships a
# relative link of that name in bindings/go/lib (first in its rpath). Check they agree.
soname=$(objdump -p target/release/libfastrpc.so 2>/dev/null | awk '$1 == "SONAME" { print $2 }')
if [ -n "$soname" ] && [ ! -e "bindings/go/lib/$soname" ]; then
  echo "bindings/go/lib/$soname is missing: the library's SONAME changed." >&2
  echo "Fix: (cd bindings/go/lib && rm -f libfastrpc.so.* && ln -s ../../../target/release/libfastrpc.so $soname)" >&2
  exit 1
fi

step "bindings/go: go vet, go test -race"
(cd bindings/go && timeout 300 go vet ./... && timeout 400 go test -race -timeout 5m -count=1 "${extra[@]}" ./...)

step "bindings/go: the example (go run ./example)"
(cd bindings/go && timeout 120 go run ./example)

step "bindings/go/interop: against the reference (github.com/valyala/fastrpc)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp bindings/go/interop/go.mod "$tmp/go.mod"
cp bindings/go/interop/go.sum "$tmp/go.sum"
modfile=(-modfile="$tmp/go.mod")
ref=""
if [ -n "${FASTRPC_REFERENCE_DIR:-}" ]; then
  dir=$(cd "$FASTRPC_REFERENCE_DIR" && pwd)
  if [ ! -f "$dir/go.mod" ]; then
    # The reference's repository may have no go.mod: use a copy with one.
    mkdir -p "$tmp/reference" && cp -R "$dir/." "$tmp/reference/"
    printf 'module github.com/valyala/fastrpc\n\ngo 1.21\n' > "$tmp/reference/go.mod"
    dir="$tmp/reference"
  fi
  (cd bindings/go/interop && go mod edit "${modfile[@]}" \
    -require=github.com/valyala/fastrpc@v0.0.0-00010101000000-000000000000 \
    -replace=github.com/valyala/fastrpc="$dir")
  ref="the checkout in $FASTRPC_REFERENCE_DIR"
elif out=$(cd bindings/go/interop && timeout 120 go get "${modfile[@]}" github.com/valyala/fastrpc@latest 2>&1); then
  ref="the module proxy ($(cd bindings/go/interop && go list "${modfile[@]}" -m -f '{{.Version}}' github.com/valyala/fastrpc))"
else
  echo "SKIPPED: the reference module is not available here:" >&2
  echo "$out" | sed 's/^/    /' >&2
  echo "    Set FASTRPC_REFERENCE_DIR to a checkout of github.com/valyala/fastrpc (see bindings/go/INTEROP.md)." >&2
  if [ -n "${FASTRPC_REQUIRE_INTEROP:-}" ]; then exit 1; fi
  exit 0
fi
echo "reference: $ref"
(cd bindings/go/interop \
  && timeout 300 go vet "${modfile[@]}" ./... \
  && timeout 400 go test "${modfile[@]}" -race -timeout 5m -count=1 "${extra[@]}" ./...)
