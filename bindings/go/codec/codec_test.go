// Package codec checks our compressed streams against the codecs the reference itself uses:
// Go's compress/flate and github.com/golang/snappy. It needs no copy of the reference: a raw
// TCP peer written here speaks the protocol with those libraries, and our library (through
// this binding) is the other side.
//
//   - TestGoCodecsAgainstOurServer: a Go peer writes requests with flate.NewWriter (default
//     level, Flush after each batch) or snappy.NewBufferedWriter (Flush after each batch),
//     as the reference's client does, and reads our server's responses with flate.NewReader
//     or snappy.NewReader.
//   - TestGoCodecsAgainstOurClient: the same Go codecs play the server: they read our client's
//     requests and write the responses.
//
// Every direction must decode to exactly the frames sent, and a batch must be readable as soon
// as it is flushed (the sync flush of flate, whole chunks of snappy): a reader that needed more
// bytes would block, and the test's deadlines would fail it.
package codec

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	ours "github.com/fastrpc-rs/fastrpc/bindings/go"
	"github.com/golang/snappy"
)

const wait = 30 * time.Second

// payload is n deterministic bytes: a pattern (compresses well) or xorshift output (does not).
func payload(n int, seed uint32, random bool) []byte {
	b := make([]byte, n)
	x := seed*2654435761 + 1
	for i := range b {
		if random {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			b[i] = byte(x)
		} else {
			b[i] = byte((uint32(i)*7 + seed*13) % 251)
		}
	}
	return b
}

type call struct{ name, value []byte }

// batches: the frames of each batch. Sizes cross the 64 KiB chunk of snappy and of the
// write buffers, up to the 1 MiB limit; incompressible data makes stored / uncompressed
// blocks.
func batches() [][]call {
	var out [][]call
	seed := uint32(1)
	mk := func(n, v int, random bool) call {
		seed++
		return call{payload(n, seed, false), payload(v, seed+1000, random)}
	}
	out = append(out, []call{mk(3, 0, false)})
	out = append(out, []call{mk(0, 0, false), mk(5, 1, false), mk(5, 255, true)})
	out = append(out, []call{mk(8, 4096, true), mk(8, 65535, false), mk(8, 65536, true), mk(8, 65537, false)})
	out = append(out, []call{mk(8, 70000, true)})
	out = append(out, []call{mk(8, 300000, false), mk(8, 100, false)})
	out = append(out, []call{mk(16, 1<<20-16, false)})
	small := make([]call, 0, 200)
	for i := 0; i < 200; i++ {
		small = append(small, mk(6, 50+i, i%2 == 0))
	}
	out = append(out, small)
	out = append(out, []call{mk(4, 10, false)})
	return out
}

// reply is what the server side answers: the name, then the value.
func reply(name, value []byte) []byte {
	return append(append([]byte{}, name...), value...)
}

// goWriter is the Go codec writing one direction, flushed per batch as the reference does.
type goWriter struct {
	bw    *bufio.Writer
	flush func() error
}

func newGoWriter(t *testing.T, conn net.Conn, c ours.Compression) *goWriter {
	switch c {
	case ours.CompressFlate:
		zw, err := flate.NewWriter(conn, flate.DefaultCompression)
		if err != nil {
			t.Fatal(err)
		}
		bw := bufio.NewWriterSize(zw, 64*1024)
		return &goWriter{bw, func() error {
			if err := bw.Flush(); err != nil {
				return err
			}
			return zw.Flush()
		}}
	case ours.CompressSnappy:
		sw := snappy.NewBufferedWriter(conn)
		bw := bufio.NewWriterSize(sw, 64*1024)
		return &goWriter{bw, func() error {
			if err := bw.Flush(); err != nil {
				return err
			}
			return sw.Flush()
		}}
	}
	t.Fatalf("no Go codec for %v", c)
	return nil
}

// endOfStream is what the Go reader returns when the peer closes between batches. Neither
// side ever ends its DEFLATE stream with a final block (the reference never closes its flate
// writer), so compress/flate reports the end of the connection as an unexpected EOF.
func endOfStream(c ours.Compression) error {
	if c == ours.CompressFlate {
		return io.ErrUnexpectedEOF
	}
	return io.EOF
}

func newGoReader(c ours.Compression, conn net.Conn) *bufio.Reader {
	if c == ours.CompressFlate {
		return bufio.NewReaderSize(flate.NewReader(conn), 64*1024)
	}
	return bufio.NewReaderSize(snappy.NewReader(conn), 64*1024)
}

func u32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

func put32(w io.Writer, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	w.Write(b[:])
}

func readBytes(r io.Reader) ([]byte, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	if u32(l[:]) > 1<<20 {
		return nil, fmt.Errorf("length %d over 1 MiB", u32(l[:]))
	}
	b := make([]byte, u32(l[:]))
	_, err := io.ReadFull(r, b)
	return b, err
}

// handshake writes ours and checks the peer's: no sniff header, version 0, no TLS.
func handshake(t *testing.T, conn net.Conn, mine, theirs ours.Compression) {
	t.Helper()
	if _, err := conn.Write([]byte{0, byte(mine), 0}); err != nil {
		t.Fatal(err)
	}
	var h [3]byte
	if _, err := io.ReadFull(conn, h[:]); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if h != [3]byte{0, byte(theirs), 0} {
		t.Fatalf("peer handshake % x, want 00 %02x 00", h, byte(theirs))
	}
}

var codecs = []ours.Compression{ours.CompressFlate, ours.CompressSnappy}

func TestGoCodecsAgainstOurServer(t *testing.T) {
	for _, reqC := range codecs {
		for _, respC := range codecs {
			t.Run(fmt.Sprintf("requests=%v/responses=%v", reqC, respC), func(t *testing.T) {
				s, err := ours.NewServer(func(_ context.Context, r *ours.Request) ([]byte, error) {
					return reply(r.Name(), r.Value()), nil
				}, ours.WithServerCompression(respC))
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Serve("127.0.0.1:0"); err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				conn, err := net.Dial("tcp", s.Addr())
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(wait))
				// The client sends its header first; the server answers after reading it.
				handshake(t, conn, reqC, respC)
				w := newGoWriter(t, conn, reqC)
				r := newGoReader(respC, conn)
				id := uint32(0)
				for bi, batch := range batches() {
					want := map[uint32][]byte{}
					for _, c := range batch {
						id++
						put32(w.bw, id)
						put32(w.bw, uint32(len(c.name)))
						w.bw.Write(c.name)
						put32(w.bw, uint32(len(c.value)))
						w.bw.Write(c.value)
						want[id] = reply(c.name, c.value)
					}
					if err := w.flush(); err != nil {
						t.Fatal(err)
					}
					// Our server answers the batch, in any order; each response must be
					// readable without any further request bytes.
					for range batch {
						var h [4]byte
						if _, err := io.ReadFull(r, h[:]); err != nil {
							t.Fatalf("batch %d: reading a response id: %v", bi, err)
						}
						v, err := readBytes(r)
						if err != nil {
							t.Fatalf("batch %d: reading a response: %v", bi, err)
						}
						exp, ok := want[u32(h[:])]
						if !ok {
							t.Fatalf("batch %d: response for unknown or repeated id %d", bi, u32(h[:]))
						}
						if !bytes.Equal(v, exp) {
							t.Fatalf("batch %d, id %d: response of %d bytes differs from the %d expected", bi, u32(h[:]), len(v), len(exp))
						}
						delete(want, u32(h[:]))
					}
				}
				// The client is done: our server must have nothing more and close when we do.
				conn.(*net.TCPConn).CloseWrite()
				if n, err := r.Read(make([]byte, 1)); n != 0 || err != endOfStream(respC) {
					t.Fatalf("after the last batch: %d bytes, %v; want %v", n, err, endOfStream(respC))
				}
			})
		}
	}
}

func TestGoCodecsAgainstOurClient(t *testing.T) {
	for _, reqC := range codecs {
		for _, respC := range codecs {
			t.Run(fmt.Sprintf("requests=%v/responses=%v", reqC, respC), func(t *testing.T) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				served := make(chan error, 1)
				go func() { served <- serveWithGoCodecs(t, ln, reqC, respC) }()

				c, err := ours.NewClient(ln.Addr().String(), ours.WithCompression(reqC))
				if err != nil {
					t.Fatal(err)
				}
				for bi, batch := range batches() {
					// One batch: concurrent calls, so that ours batches several frames in
					// a flush and the Go side answers several in one of its own.
					var wg sync.WaitGroup
					errs := make(chan error, len(batch))
					for _, cl := range batch {
						wg.Add(1)
						go func(cl call) {
							defer wg.Done()
							ctx, cancel := context.WithTimeout(context.Background(), wait)
							defer cancel()
							v, err := c.Call(ctx, cl.name, cl.value)
							if err == nil && !bytes.Equal(v, reply(cl.name, cl.value)) {
								err = fmt.Errorf("response of %d bytes differs from the %d expected", len(v), len(cl.name)+len(cl.value))
							}
							errs <- err
						}(cl)
					}
					wg.Wait()
					close(errs)
					for err := range errs {
						if err != nil {
							t.Fatalf("batch %d: %v", bi, err)
						}
					}
				}
				// A fire-and-forget request must reach the Go side too (id 0, no answer),
				// before the call made after it. (The call also makes sure the request went
				// out: a Shutdown right after Send may close before it is written.)
				if err := c.Send([]byte("nowait"), []byte("bye")); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				v, err := c.Call(ctx, []byte("last"), nil)
				cancel()
				if err != nil || string(v) != "last" {
					t.Fatalf("the call after the fire-and-forget request: %q, %v", v, err)
				}
				if err := c.Shutdown(context.Background()); err != nil {
					t.Fatal(err)
				}
				if err := <-served; err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// serveWithGoCodecs serves one connection: reads our client's requests with the Go reader of
// reqC, answers each with the Go writer of respC, flushing whenever no more request bytes are
// buffered (the reference's rule: flush when the queue is empty). It returns when our client
// closes the connection after its fire-and-forget request "nowait" and the call "last".
func serveWithGoCodecs(t *testing.T, ln net.Listener, reqC, respC ours.Compression) error {
	conn, err := ln.Accept()
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * wait))
	var h [3]byte
	if _, err := io.ReadFull(conn, h[:]); err != nil {
		return fmt.Errorf("server: handshake: %v", err)
	}
	if h != [3]byte{0, byte(reqC), 0} {
		return fmt.Errorf("server: client handshake % x", h)
	}
	if _, err := conn.Write([]byte{0, byte(respC), 0}); err != nil {
		return err
	}
	r := newGoReader(reqC, conn)
	w := newGoWriter(t, conn, respC)
	sawNowait, sawLast := false, false
	frames := 0
	for {
		var idb [4]byte
		if _, err := io.ReadFull(r, idb[:]); err != nil {
			if err == endOfStream(reqC) && sawLast {
				return nil
			}
			return fmt.Errorf("server: after %d requests: %v", frames, err)
		}
		name, err := readBytes(r)
		if err != nil {
			return fmt.Errorf("server: request name: %v", err)
		}
		value, err := readBytes(r)
		if err != nil {
			return fmt.Errorf("server: request value: %v", err)
		}
		frames++
		id := u32(idb[:])
		if id == 0 {
			if string(name) != "nowait" || string(value) != "bye" {
				return fmt.Errorf("server: unexpected request with id 0: %q", name)
			}
			sawNowait = true
			continue
		}
		if string(name) == "last" {
			if !sawNowait {
				return fmt.Errorf("server: the call after the fire-and-forget request came first")
			}
			sawLast = true
		}
		put32(w.bw, id)
		rv := reply(name, value)
		put32(w.bw, uint32(len(rv)))
		w.bw.Write(rv)
		if r.Buffered() == 0 {
			if err := w.flush(); err != nil {
				return err
			}
		}
	}
}
