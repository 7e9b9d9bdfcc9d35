#!/usr/bin/env bash
# Builds the release library and installs it: the shared library with its SONAME and
# symlinks, the static library, include/fastrpc.h and a pkg-config file fastrpc.pc.
#   PREFIX=/usr/local ./scripts/install.sh      (default PREFIX: /usr/local; DESTDIR honoured)
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
LIBDIR=${LIBDIR:-$PREFIX/lib}
DESTDIR=${DESTDIR:-}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
MAJOR=${VERSION%%.*}
MINOR=$(echo "$VERSION" | cut -d. -f2)
if [ "$MAJOR" = 0 ]; then SONAME=libfastrpc.so.0.$MINOR; else SONAME=libfastrpc.so.$MAJOR; fi

cargo build --release --lib
install -d "$DESTDIR$LIBDIR/pkgconfig" "$DESTDIR$PREFIX/include"
install -m 0755 target/release/libfastrpc.so "$DESTDIR$LIBDIR/libfastrpc.so.$VERSION"
ln -sf "libfastrpc.so.$VERSION" "$DESTDIR$LIBDIR/$SONAME"
ln -sf "$SONAME" "$DESTDIR$LIBDIR/libfastrpc.so"
install -m 0644 target/release/libfastrpc.a "$DESTDIR$LIBDIR/libfastrpc.a"
install -m 0644 include/fastrpc.h "$DESTDIR$PREFIX/include/fastrpc.h"
sed -e "s|@PREFIX@|$PREFIX|" -e "s|@LIBDIR@|$LIBDIR|" -e "s|@VERSION@|$VERSION|" \
  pkgconfig/fastrpc.pc.in > "$DESTDIR$LIBDIR/pkgconfig/fastrpc.pc"
echo "installed fastrpc $VERSION into $DESTDIR$PREFIX (soname $SONAME)"
