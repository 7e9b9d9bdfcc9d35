// An echo server and a client in a few lines: go run ./example
package main

import (
	"context"
	"fmt"
	"log"

	fastrpc "github.com/fastrpc-rs/fastrpc/bindings/go"
)

func main() {
	// The server answers each request with its name and value.
	srv, err := fastrpc.NewServer(func(ctx context.Context, req *fastrpc.Request) ([]byte, error) {
		return append(append([]byte{}, req.Name()...), req.Value()...), nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Serve("127.0.0.1:0"); err != nil { // returns once listening
		log.Fatal(err)
	}
	defer srv.Close()

	client, err := fastrpc.NewClient(srv.Addr(), fastrpc.WithCompression(fastrpc.CompressSnappy))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	resp, err := client.Call(context.Background(), []byte("echo:"), []byte("hello"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (library %s, server on %s)\n", resp, fastrpc.Version(), srv.Addr())
}
