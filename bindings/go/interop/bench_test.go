package interop

// BenchmarkCall in the shape of the binding's own (../bench_test.go): one client, one
// server, one loopback connection, no compression, name "foo", value "foobar", an echo of
// the value; G goroutines share b.N calls; calls/s reported. Run here for every pairing, in
// one process and one run, so the ratio between ours and the reference shows:
//
//	impl=ours          our client -> our server (the binding on both sides)
//	impl=reference     reference client -> reference server (pure Go)
//	impl=ref-to-ours   reference client -> our server
//	impl=ours-to-ref   our client -> reference server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ours "github.com/fastrpc-rs/fastrpc/bindings/go"
	ref "github.com/valyala/fastrpc"
	"github.com/valyala/fastrpc/tlv"
)

func BenchmarkCall(b *testing.B) {
	w := wire{clientComp: ours.CompressNone, serverComp: ours.CompressNone}
	impls := []struct {
		name  string
		setup func(b *testing.B) func() func() error // per benchmark: a factory of per-goroutine callers
	}{
		{"ours", func(b *testing.B) func() func() error {
			s := startOurServer(b, w, func(_ context.Context, req *ours.Request) ([]byte, error) { return req.Value(), nil })
			return ourLoop(newOurClient(b, s.Addr(), w), "foobar")
		}},
		{"reference", func(b *testing.B) func() func() error {
			addr, _ := startRefServer(b, w, func(ctx *tlv.RequestCtx) { ctx.Response.Append(ctx.Request.Value()) })
			return refLoop(newRefClient(addr, w), "foobar")
		}},
		{"ref-to-ours", func(b *testing.B) func() func() error {
			s := startOurServer(b, w, func(_ context.Context, req *ours.Request) ([]byte, error) { return req.Value(), nil })
			return refLoop(newRefClient(s.Addr(), w), "foobar")
		}},
		{"ours-to-ref", func(b *testing.B) func() func() error {
			addr, _ := startRefServer(b, w, func(ctx *tlv.RequestCtx) { ctx.Response.Append(ctx.Request.Value()) })
			return ourLoop(newOurClient(b, addr, w), "foobar")
		}},
	}
	for _, impl := range impls {
		for _, g := range []int{1, 16, 256, 1024} {
			b.Run(fmt.Sprintf("impl=%s/goroutines=%d", impl.name, g), func(b *testing.B) {
				newCaller := impl.setup(b)
				if err := newCaller()(); err != nil { // connect and warm up
					b.Fatal(err)
				}
				b.ResetTimer()
				start := time.Now()
				var next atomic.Int64
				var wg sync.WaitGroup
				for i := 0; i < g; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						call := newCaller()
						for next.Add(1) <= int64(b.N) {
							if err := call(); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				el := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/el.Seconds(), "calls/s")
			})
		}
	}
}

// ourLoop and refLoop: each goroutine calls "foo"/"foobar" and checks the response is want.
// Ours appends each response to the goroutine's one buffer (CallAppend), as the reference's
// loop reuses its Response: neither allocates per call.
func ourLoop(c *ours.Client, want string) func() func() error {
	return func() func() error {
		name, value := []byte("foo"), []byte("foobar")
		ctx := context.Background()
		var buf []byte
		return func() error {
			var err error
			buf, err = c.CallAppend(ctx, buf[:0], name, value)
			if err == nil && string(buf) != want {
				err = fmt.Errorf("wrong response %q", buf)
			}
			return err
		}
	}
}

// refLoop calls as the reference's own benchmarks do: one request and response per
// goroutine, reused.
func refLoop(c *ref.Client, want string) func() func() error {
	return func() func() error {
		req := &tlv.Request{}
		resp := &tlv.Response{}
		value := []byte("foobar")
		return func() error {
			req.Reset()
			req.SetName("foo")
			req.Append(value)
			err := c.DoDeadline(req, resp, time.Now().Add(10*time.Second))
			if err == nil && string(resp.Value()) != want {
				err = fmt.Errorf("wrong response %q", resp.Value())
			}
			return err
		}
	}
}
