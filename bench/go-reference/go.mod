module github.com/fastrpc-rs/fastrpc/bench/go-reference

go 1.26.0

// The reference's own dependencies, at the versions the interop suite tests. The reference
// itself, github.com/valyala/fastrpc, is not required here: scripts/bench.sh adds it to a
// temporary copy of this file (used with -modfile), replaced by the checkout named by
// FASTRPC_REFERENCE_DIR. Without it this module does not build, by design.
require (
	github.com/golang/snappy v1.0.0 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	github.com/valyala/fasthttp v1.78.0 // indirect
)
