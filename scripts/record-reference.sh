#!/usr/bin/env bash
# Re-records the reference's conversations into tests/data/reference/ (recordings and
# manifest.txt) with tests/reference/recorder: the reference client against the reference
# server through a relay. Needs a checkout of github.com/valyala/fastrpc (the Go module proxy
# refuses it); its dependencies come from the proxy. See tests/data/reference/README.md.
#
#   FASTRPC_REFERENCE_DIR=/path/to/valyala/fastrpc ./scripts/record-reference.sh [-only NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ -z "${FASTRPC_REFERENCE_DIR:-}" ]; then
  echo "FASTRPC_REFERENCE_DIR must name a checkout of github.com/valyala/fastrpc" >&2
  exit 2
fi
command -v go >/dev/null || { echo "go is not installed" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dir=$(cd "$FASTRPC_REFERENCE_DIR" && pwd)
if [ ! -f "$dir/go.mod" ]; then
  # The reference's repository has no go.mod: use a copy with one.
  mkdir -p "$tmp/reference" && cp -R "$dir/." "$tmp/reference/"
  printf 'module github.com/valyala/fastrpc\n\ngo 1.21\n' > "$tmp/reference/go.mod"
  dir="$tmp/reference"
fi
cp tests/reference/recorder/go.mod "$tmp/go.mod"
cp tests/reference/recorder/go.sum "$tmp/go.sum"
cd tests/reference/recorder
go mod edit -modfile="$tmp/go.mod" \
  -require=github.com/valyala/fastrpc@v0.0.0-00010101000000-000000000000 \
  -replace=github.com/valyala/fastrpc="$dir"
GOFLAGS=-mod=mod timeout 600 go run -modfile="$tmp/go.mod" . -out "$root/tests/data/reference" "$@"
echo "recorded into tests/data/reference (git diff --stat tests/data/reference shows what changed)"
