//go:build !fastrpc_pkgconfig

package fastrpc

// The default cgo flags: the header and the library of the repository this package sits in
// (../../include, ../../target/release after `cargo build --release --lib`), so that the
// package builds in its checkout with no setup. A program loads the library through the
// rpath: first bindings/go/lib, whose libfastrpc.so.0.MINOR is a relative link to
// target/release/libfastrpc.so (the name the program asks for is the library's SONAME).
// Outside the repository (another module's replace, a vendored copy, the module cache),
// build with -tags fastrpc_pkgconfig instead (cgo_pkgconfig.go, README "Install").

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -L${SRCDIR}/../../target/release -lfastrpc -Wl,-rpath,${SRCDIR}/lib -Wl,-rpath,${SRCDIR}/../../target/release
*/
import "C"
