module github.com/fastrpc-rs/fastrpc/bindings/go/interop

go 1.26.0

require github.com/fastrpc-rs/fastrpc/bindings/go v0.0.0-00010101000000-000000000000

// The reference's own dependencies, at the versions tested. The reference itself,
// github.com/valyala/fastrpc, is added by scripts/test-go.sh into a temporary copy of this
// file (used with -modfile): from FASTRPC_REFERENCE_DIR, or from the Go module proxy when it
// serves the module (the proxy reachable here refuses it). See ../INTEROP.md.
require (
	github.com/golang/snappy v1.0.0 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/molecule-man/go-brrr v1.3.1 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	github.com/valyala/fasthttp v1.78.0 // indirect
)

// The binding under test, from this repository.
replace github.com/fastrpc-rs/fastrpc/bindings/go => ../
