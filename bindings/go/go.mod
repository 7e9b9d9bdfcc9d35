// The Go binding of fastrpc. It is not on a module proxy: another module depends on it
// through a replace to a checkout (or a vendored copy), with the library installed by
// scripts/install.sh and the package built with -tags fastrpc_pkgconfig. See README.md,
// "Install"; scripts/test-go-module.sh tests exactly that.
module github.com/fastrpc-rs/fastrpc/bindings/go

go 1.24
