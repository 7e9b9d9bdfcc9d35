module github.com/fastrpc-rs/fastrpc/bindings/go/codec

go 1.24

require (
	github.com/fastrpc-rs/fastrpc/bindings/go v0.0.0-00010101000000-000000000000
	// The snappy package the reference uses, at the version the interop suite tests.
	github.com/golang/snappy v1.0.0
)

// The binding under test, from this repository.
replace github.com/fastrpc-rs/fastrpc/bindings/go => ../
