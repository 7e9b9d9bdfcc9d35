#!/usr/bin/env bash
# The Go binding's checks: builds libfastrpc (cargo build --release --lib), then runs go vet
# and go test -race in bindings/go, in bindings/go/codec (our streams against Go's
# compress/flate and github.com/golang/snappy, the reference's codecs; no reference needed)
# and in bindings/go/interop (the live interop suite against the reference,
# github.com/valyala/fastrpc, when it can be had; see bindings/go/INTEROP.md), and the example.
# Every step is bounded in time.
#
# Its last line says whether the live interop suite ran: `interop: ran` or
# `interop: SKIPPED (reason)`. If FASTRPC_SUMMARY names a file, one line is appended to it:
# `go-interop: passed`, `go-interop: failed` or `go-interop: skipped: <reason>`.
#
#   ./scripts/test-go.sh
#   FASTRPC_REFERENCE_DIR=/path/to/valyala/fastrpc ./scripts/test-go.sh   # reference from a checkout
#   FASTRPC_REQUIRE_INTEROP=1 ./scripts/test-go.sh    # fail (not skip) when the reference is unavailable
#   GO_TEST_FLAGS='-count=3' ./scripts/test-go.sh     # extra flags for both go test runs
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n### %s\n' "$*"; }

export CGO_ENABLED=1
export GOFLAGS="${GOFLAGS:-} -mod=mod"
extra=(${GO_TEST_FLAGS:-})

tmp=""
on_exit() {
  [ -z "$tmp" ] || rm -rf "$tmp"
  if [ -z "$status_done" ]; then
    echo "interop: SKIPPED (an earlier step of scripts/test-go.sh failed)"
    [ -z "${FASTRPC_SUMMARY:-}" ] || echo "go-interop: skipped: an earlier step of scripts/test-go.sh failed" >> "$FASTRPC_SUMMARY"
  fi
}
status_done=""
trap on_exit EXIT
command -v go >/dev/null || { echo "go is not installed" >&2; exit 1; }

step "building libfastrpc (cargo build --release --lib) and the CLI (cargo build -p fastrpc-cli, for the benchmark driver's test)"
timeout 900 cargo build --release --lib
timeout 900 cargo build -p fastrpc-cli

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

step "bindings/go/codec: our streams against Go's compress/flate and golang/snappy (go vet, go test -race)"
(cd bindings/go/codec && timeout 300 go vet ./... && timeout 400 go test -race -timeout 5m -count=1 "${extra[@]}" ./...)

# The live interop suite's outcome: the line printed last, and the summary file's line.
# Written once; if the script stops before (an earlier step failed), the EXIT trap says so.
interop_status() { # passed | failed:<reason> | skipped:<reason>
  case "$1" in
    passed) echo "interop: ran" ;;
    failed:*) echo "interop: FAILED (${1#failed:})" ;;
    skipped:*) echo "interop: SKIPPED (${1#skipped:})" ;;
  esac
  if [ -n "${FASTRPC_SUMMARY:-}" ]; then
    case "$1" in
      passed) echo "go-interop: passed" >> "$FASTRPC_SUMMARY" ;;
      failed:*) echo "go-interop: failed: ${1#failed:}" >> "$FASTRPC_SUMMARY" ;;
      skipped:*) echo "go-interop: skipped: ${1#skipped:}" >> "$FASTRPC_SUMMARY" ;;
    esac
  fi
  status_done=1
}

step "bindings/go/interop: against the reference (github.com/valyala/fastrpc)"
tmp=$(mktemp -d)
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
  if [ -n "${FASTRPC_REQUIRE_INTEROP:-}" ]; then
    interop_status "failed:FASTRPC_REQUIRE_INTEROP is set and the reference is not available"
    exit 1
  fi
  interop_status "skipped:FASTRPC_REFERENCE_DIR is not set and the module proxy does not serve github.com/valyala/fastrpc (the recorded conversations are replayed instead: cargo test reference)"
  exit 0
fi
echo "reference: $ref"
# The recorder of tests/data/reference builds only with the reference: check it still does.
vet_recorder() {
  [ -n "${FASTRPC_REFERENCE_DIR:-}" ] || return 0
  cp tests/reference/recorder/go.mod "$tmp/recorder.mod" && cp tests/reference/recorder/go.sum "$tmp/recorder.sum" \
    && (cd tests/reference/recorder && go mod edit -modfile="$tmp/recorder.mod" \
      -require=github.com/valyala/fastrpc@v0.0.0-00010101000000-000000000000 \
      -replace=github.com/valyala/fastrpc="$dir" \
      && timeout 300 go vet -modfile="$tmp/recorder.mod" ./...)
}
if (cd bindings/go/interop \
  && timeout 300 go vet "${modfile[@]}" ./... \
  && timeout 400 go test "${modfile[@]}" -race -timeout 5m -count=1 "${extra[@]}" ./...) \
  && vet_recorder; then
  interop_status passed
else
  interop_status "failed:the interop suite against $ref failed"
  exit 1
fi
