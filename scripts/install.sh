#!/usr/bin/env bash
# Builds the release library and installs it: the shared library with its SONAME and
# symlinks, the static library (both stripped), include/fastrpc.h and a pkg-config file
# fastrpc.pc.
#   PREFIX=/usr/local ./scripts/install.sh      (default PREFIX: /usr/local; DESTDIR honoured)
#   STRIP=/path/to/strip                         (default: strip; none found: installed as built)
#
# Run time: a program linked with -lfastrpc must find the SONAME (libfastrpc.so.0.MINOR while
# the major version is 0) when it starts. The loader looks in the system's library
# directories (/usr/lib, and /usr/local/lib on most distributions once `ldconfig` has run) and
# in the program's rpath. For any other prefix the pkg-config file adds `-Wl,-rpath,$LIBDIR`
# to `pkg-config --libs fastrpc`, and this script says what to do for programs built without
# pkg-config. scripts/test-install.sh tests this; scripts/test-go-module.sh tests the Go
# binding built against such an installation (-tags fastrpc_pkgconfig, bindings/go/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
LIBDIR=${LIBDIR:-$PREFIX/lib}
DESTDIR=${DESTDIR:-}
STRIP=${STRIP:-strip}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
MAJOR=${VERSION%%.*}
MINOR=$(echo "$VERSION" | cut -d. -f2)
if [ "$MAJOR" = 0 ]; then SONAME=libfastrpc.so.0.$MINOR; else SONAME=libfastrpc.so.$MAJOR; fi

# The directories the loader searches without being told (ldconfig's configuration and the
# trusted defaults); a LIBDIR among them needs no rpath.
system_dirs() {
  echo /lib /usr/lib /lib64 /usr/lib64
  local m
  m=$(gcc -print-multiarch 2>/dev/null || true)
  [ -n "$m" ] && echo "/lib/$m /usr/lib/$m"
  cat /etc/ld.so.conf /etc/ld.so.conf.d/*.conf 2>/dev/null | grep -v '^\s*\(#\|include\|$\)' || true
}
in_system_dirs=0
for d in $(system_dirs); do
  [ "$d" = "$LIBDIR" ] && in_system_dirs=1
done
RPATH=
[ "$in_system_dirs" = 1 ] || RPATH="-Wl,-rpath,\${libdir} "

cargo build --release --lib
install -d "$DESTDIR$LIBDIR/pkgconfig" "$DESTDIR$PREFIX/include"
install -m 0755 target/release/libfastrpc.so "$DESTDIR$LIBDIR/libfastrpc.so.$VERSION"
ln -sf "libfastrpc.so.$VERSION" "$DESTDIR$LIBDIR/$SONAME"
ln -sf "$SONAME" "$DESTDIR$LIBDIR/libfastrpc.so"
install -m 0644 target/release/libfastrpc.a "$DESTDIR$LIBDIR/libfastrpc.a"
# The release profile has no debug info already; strip the symbol table too (the shared
# library keeps its dynamic symbols, the static one what linking needs).
if command -v "$STRIP" >/dev/null; then
  "$STRIP" --strip-unneeded "$DESTDIR$LIBDIR/libfastrpc.so.$VERSION"
  "$STRIP" --strip-debug "$DESTDIR$LIBDIR/libfastrpc.a"
else
  echo "note: no $STRIP: the libraries are installed as built (without debug info)"
fi
install -m 0644 include/fastrpc.h "$DESTDIR$PREFIX/include/fastrpc.h"
sed -e "s|@PREFIX@|$PREFIX|" -e "s|@LIBDIR@|$LIBDIR|" -e "s|@VERSION@|$VERSION|" \
  -e "s|@RPATH@|$RPATH|" pkgconfig/fastrpc.pc.in > "$DESTDIR$LIBDIR/pkgconfig/fastrpc.pc"
echo "installed fastrpc $VERSION into $DESTDIR$PREFIX (soname $SONAME)"

if [ "$in_system_dirs" = 1 ]; then
  if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then
    ldconfig # the loader's cache learns the new SONAME
  elif [ -z "$DESTDIR" ]; then
    echo "run 'sudo ldconfig' so that the loader finds $SONAME"
  fi
else
  cat <<MSG
$LIBDIR is not a directory the loader searches: programs linked with -lfastrpc will not
start ("$SONAME: cannot open shared object file") unless they are told where it is:
  - build with pkg-config:  cc prog.c \$(pkg-config --cflags --libs fastrpc)
    with PKG_CONFIG_PATH=$LIBDIR/pkgconfig; its flags carry -Wl,-rpath,$LIBDIR;
  - or link with -L$LIBDIR -Wl,-rpath,$LIBDIR -lfastrpc;
  - or add the directory to the loader's search path (for every program):
      echo $LIBDIR | sudo tee /etc/ld.so.conf.d/fastrpc.conf && sudo ldconfig
  - or, for one shell, export LD_LIBRARY_PATH=$LIBDIR.
MSG
fi
