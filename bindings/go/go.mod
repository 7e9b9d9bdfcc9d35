module github.com/fastrpc-rs/fastrpc/bindings/go

go 1.24
