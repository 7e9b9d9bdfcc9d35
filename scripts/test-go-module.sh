#!/usr/bin/env bash
# Tests the Go binding as a program in ANOTHER module uses it (bindings/go/README.md,
# "Install"): installs the library with scripts/install.sh into a private prefix, makes a
# throwaway module outside the tree whose go.mod has only a replace to this checkout's
# bindings/go, builds it with `-tags fastrpc_pkgconfig` and PKG_CONFIG_PATH (no other flag),
# checks the binary needs the SONAME and resolves it in the prefix (readelf, ldd), runs it
# with no LD_LIBRARY_PATH: an echo server and a client in one process, one call over
# 127.0.0.1:0 whose exact response is checked, and the path of the libfastrpc the process
# mapped (/proc/self/maps) must be the installed one. Then the same program against a
# vendored copy (`go mod vendor`, built from vendor/ with its own build cache): without the
# tag it must fail with the header's hint, with it build and run the same way; and a plain
# copy of bindings/go in the module's third_party/ through a replace. Also
# `go vet -tags fastrpc_pkgconfig` of the binding itself (its tests compile that way too).
#
# Offline: GOPROXY=off (the module needs nothing but the replace). Each build uses a build
# cache under the temporary directory, since Go's cache does not see pkg-config's output
# (golang/go#24544) and the prefix is new on every run. Every step is bounded in time;
# everything is removed at the end. Last line: `N passed, M failed` (scripts/test.sh counts it).
#
#   ./scripts/test-go-module.sh
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fastrpc-go-module.XXXXXX")
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
passed=0
failed=0
check() { # description command...
  local what=$1
  shift
  if "$@" >"$tmp/out" 2>&1; then
    passed=$((passed + 1))
    echo "ok   $what"
  else
    failed=$((failed + 1))
    echo "FAIL $what"
    sed 's/^/       /' "$tmp/out" | tail -20
  fi
}
give_up() { # what: a step the others need failed
  failed=$((failed + 1))
  echo "FAIL $1"
  echo "$passed passed, $failed failed"
  exit 1
}

for tool in go cc pkg-config readelf ldd; do
  command -v $tool >/dev/null || give_up "$tool is needed"
done

# The documented path, step 1: the library, installed.
timeout 900 env PREFIX="$prefix" ./scripts/install.sh >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; give_up "PREFIX=$prefix scripts/install.sh"; }
echo "ok   PREFIX=\$TMPDIR/.../prefix scripts/install.sh"
passed=$((passed + 1))
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
soname=$(readelf -d "$prefix/lib/libfastrpc.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
real_lib=$(readlink -f "$prefix/lib/libfastrpc.so")

# Only the Go toolchain on this machine, no network, no setting from the caller's go env
# that would change the build; build caches of our own (see above).
export CGO_ENABLED=1 GOPROXY=off GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=mod
export GOCACHE=$tmp/gocache PKG_CONFIG_PATH=$prefix/lib/pkgconfig
# cgo leaves its input file in TMPDIR when the C compiler fails (the build without the tag).
mkdir -p "$tmp/gotmp"
export TMPDIR=$tmp/gotmp
unset LD_LIBRARY_PATH CGO_CFLAGS CGO_CPPFLAGS CGO_LDFLAGS
export GOENV=off

# The program: another module, outside the tree.
app=$tmp/app
mkdir -p "$app"
cat >"$app/go.mod" <<'EOF'
module example.com/fastrpcapp

go 1.24
EOF
cat >"$app/main.go" <<'EOF'
// A program in another module using the fastrpc Go binding: an echo server and a client,
// one call; prints the response, the library's version and the libfastrpc file it mapped.
package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	fastrpc "github.com/fastrpc-rs/fastrpc/bindings/go"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	srv, err := fastrpc.NewServer(func(ctx context.Context, req *fastrpc.Request) ([]byte, error) {
		return bytes.Join([][]byte{[]byte("echo"), req.Name(), req.Value()}, []byte(":")), nil
	}, fastrpc.WithServerCompression(fastrpc.CompressSnappy))
	if err != nil {
		fail("NewServer: %v", err)
	}
	if err := srv.Serve("127.0.0.1:0"); err != nil {
		fail("Serve: %v", err)
	}
	defer srv.Close()
	c, err := fastrpc.NewClient(srv.Addr(), fastrpc.WithCompression(fastrpc.CompressSnappy))
	if err != nil {
		fail("NewClient: %v", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := c.Call(ctx, []byte("hello"), []byte("from another module"))
	if err != nil {
		fail("Call: %v", err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		fail("reading /proc/self/maps: %v", err)
	}
	loaded := ""
	for _, l := range strings.Split(string(maps), "\n") {
		if f := strings.Fields(l); len(f) == 6 && strings.Contains(f[5], "libfastrpc") {
			loaded = f[5]
		}
	}
	fmt.Printf("response %q\n", resp)
	fmt.Printf("version %s header %s\n", fastrpc.Version(), fastrpc.HeaderVersion)
	fmt.Printf("loaded %s\n", loaded)
}
EOF
want="response \"echo:hello:from another module\"
version $version header $version
loaded $real_lib"

# The documented path, step 2: a replace to the checkout; go mod tidy adds the require.
check "go mod edit -replace + go mod tidy, offline" bash -c "cd '$app' \
  && timeout 120 go mod edit -replace=github.com/fastrpc-rs/fastrpc/bindings/go='$ROOT/bindings/go' \
  && timeout 120 go mod tidy \
  && grep -qx 'require github.com/fastrpc-rs/fastrpc/bindings/go v0.0.0-00010101000000-000000000000' go.mod"

# Step 3: build with the tag; pkg-config supplies -I, -L and the rpath.
check "go build -tags fastrpc_pkgconfig (PKG_CONFIG_PATH=\$prefix/lib/pkgconfig)" \
  bash -c "cd '$app' && timeout 300 go build -tags fastrpc_pkgconfig -o '$tmp/app.bin' ."

# binary_checks NAME BINARY: it links the installed library and nothing in the checkout.
binary_checks() {
  local name=$1 bin=$2
  check "$name: needs $soname" bash -c "readelf -d '$bin' | grep -q 'NEEDED.*\[$soname\]'"
  check "$name: its only RUNPATH is \$prefix/lib" \
    bash -c "[ \"\$(readelf -d '$bin' | sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]/\2/p')\" = '$prefix/lib' ]"
  check "$name: ldd resolves $soname in \$prefix/lib" \
    bash -c "ldd '$bin' | grep -q '$soname => $prefix/lib/$soname '"
  check "$name: runs (no LD_LIBRARY_PATH): exact response, installed library mapped" \
    bash -c "out=\$(timeout 60 '$bin') || exit 1; [ \"\$out\" = '$want' ] || { echo \"got:\"; echo \"\$out\"; echo \"want:\"; echo '$want'; exit 1; }"
}
binary_checks "replace" "$tmp/app.bin"

# A vendored copy: go mod vendor copies bindings/go (no ../../include, no target/ near it).
check "go mod vendor" bash -c "cd '$app' && timeout 120 go mod vendor && test -f vendor/github.com/fastrpc-rs/fastrpc/bindings/go/shim.h"
check "vendored copy without the tag: fails with the header's hint" \
  bash -c "cd '$app' && ! timeout 300 go build -mod=vendor -o '$tmp/untagged.bin' . >'$tmp/untagged.log' 2>&1 \
    && grep -q 'fastrpc.h not found.*-tags fastrpc_pkgconfig' '$tmp/untagged.log' || { cat '$tmp/untagged.log'; exit 1; }"
check "vendored copy: go build -mod=vendor -tags fastrpc_pkgconfig (its own build cache)" \
  bash -c "cd '$app' && GOCACHE='$tmp/gocache-vendor' timeout 300 go build -mod=vendor -tags fastrpc_pkgconfig -o '$tmp/vendored.bin' ."
binary_checks "vendored" "$tmp/vendored.bin"

# A plain copy of bindings/go in another module's tree (third_party/), through a replace.
app2=$tmp/app2
mkdir -p "$app2/third_party"
cp -R bindings/go "$app2/third_party/fastrpc-go"
cp "$app/main.go" "$app2/main.go"
sed 's/^module .*/module example.com\/fastrpcapp2/' "$app/go.mod" | grep -v '^replace ' >"$app2/go.mod"
check "plain copy in third_party/: go mod edit -replace=./third_party/fastrpc-go, go build -tags fastrpc_pkgconfig" \
  bash -c "cd '$app2' && timeout 120 go mod edit -replace=github.com/fastrpc-rs/fastrpc/bindings/go=./third_party/fastrpc-go \
    && GOCACHE='$tmp/gocache-vendor' timeout 300 go build -tags fastrpc_pkgconfig -o '$tmp/copy.bin' ."
binary_checks "plain copy" "$tmp/copy.bin"

# The binding's own package and tests compile with the tag.
check "bindings/go: go vet -tags fastrpc_pkgconfig ./..." \
  bash -c "cd bindings/go && timeout 300 go vet -tags fastrpc_pkgconfig ./..."

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
