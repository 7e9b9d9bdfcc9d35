//go:build fastrpc_pkgconfig

package fastrpc

// The cgo flags with -tags fastrpc_pkgconfig: the header and the library installed by
// scripts/install.sh, found through its fastrpc.pc (set PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
// for a prefix pkg-config does not search). Nothing points into a checkout, so the package
// builds wherever its source is: another module's replace, a vendored copy, the module
// cache. Under a prefix the loader does not search, fastrpc.pc's Libs carry
// -Wl,-rpath,$PREFIX/lib, so a program finds the installed library with no
// LD_LIBRARY_PATH. scripts/test-go-module.sh tests this path.

// #cgo pkg-config: fastrpc
import "C"
