package fastrpc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkCall: one client, one server, one loopback connection, no compression, name
// "foo", value "foobar", echo handler; G goroutines share b.N calls. The same shape runs
// against the reference (valyala/fastrpc) in ../interop, so the ratio shows.
func BenchmarkCall(b *testing.B) {
	for _, g := range []int{1, 16, 256, 1024} {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			s := startServer(b, func(_ context.Context, req *Request) ([]byte, error) {
				return req.Value(), nil
			}, WithServerCompression(CompressNone))
			c := newClient(b, s.Addr(), WithCompression(CompressNone), WithMaxPendingRequests(4096))
			name, value := []byte("foo"), []byte("foobar")
			call(b, c, "warm", "up")
			b.ResetTimer()
			start := time.Now()
			var next atomic.Int64
			var wg sync.WaitGroup
			for i := 0; i < g; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx := context.Background()
					for next.Add(1) <= int64(b.N) {
						if _, err := c.Call(ctx, name, value); err != nil {
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
