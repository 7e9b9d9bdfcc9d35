#!/usr/bin/env bash
# Tests scripts/install.sh under a custom prefix, as a user would use it: installs into a
# temporary prefix, builds tests-c/header_check.c (every exported function referenced) with
# `pkg-config --cflags --libs fastrpc` alone and runs it with no LD_LIBRARY_PATH (the rpath
# from the pkg-config file must find the library), then the same program linked statically
# (`pkg-config --static`). Checks the installed libraries are stripped (no debug info, no
# symbol table in the shared one) and the SONAME links. Last line: `N passed, M failed`.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fastrpc-install-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
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

for tool in cc pkg-config readelf; do
  command -v $tool >/dev/null || { echo "$tool is needed"; echo "0 passed, 1 failed"; exit 1; }
done

if ! PREFIX=$prefix ./scripts/install.sh >"$tmp/install.log" 2>&1; then
  cat "$tmp/install.log"
  echo "0 passed, 1 failed"
  exit 1
fi
grep -q "is not a directory the loader searches" "$tmp/install.log" &&
  grep -q -- "-Wl,-rpath,$prefix/lib" "$tmp/install.log"
check "install.sh says what to do for a prefix outside the loader's path" test $? = 0

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
unset LD_LIBRARY_PATH
libs=$(pkg-config --libs fastrpc)
check "pkg-config --libs carries the rpath ($libs)" grep -q -- "-Wl,-rpath,$prefix/lib" <<<"$libs"

lib=$prefix/lib/libfastrpc.so
check "SONAME links: libfastrpc.so -> $(readlink "$lib")" test -e "$lib"
no_debug() { ! readelf -S --wide "$1" | grep -q ' \.debug_'; }
check "shared library without debug info" no_debug "$lib"
check "shared library without a symbol table (stripped)" bash -c "! readelf -S --wide '$lib' | grep -q ' \.symtab '"
check "static library without debug info" no_debug "$prefix/lib/libfastrpc.a"

# shellcheck disable=SC2046
check "build a C program with pkg-config --cflags --libs" \
  cc -std=c11 -Wall -Werror -o "$tmp/dyn" tests-c/header_check.c $(pkg-config --cflags --libs fastrpc)
check "it starts and passes without LD_LIBRARY_PATH" "$tmp/dyn"
check "it loads the installed library" bash -c "ldd '$tmp/dyn' | grep -q '=> $prefix/lib/libfastrpc.so'"
# shellcheck disable=SC2046
check "build it statically (pkg-config --static)" \
  cc -std=c11 -Wall -Werror -o "$tmp/static" tests-c/header_check.c \
  $(pkg-config --cflags fastrpc) "$prefix/lib/libfastrpc.a" $(pkg-config --static --libs-only-l fastrpc | sed 's/-lfastrpc//')
check "the static program runs" "$tmp/static"
check "the static program does not need the shared library" bash -c "! ldd '$tmp/static' | grep -q libfastrpc"
echo "sizes (bytes): $(stat -L -c '%n %s' "$lib" "$prefix/lib/libfastrpc.a" "$tmp/dyn" "$tmp/static" | sed "s|$tmp/||g" | tr '\n' ' ')"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
