package fastrpc

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
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

// BenchmarkHandOverCeiling is Go's own floor for a blocking call made by one goroutine per
// call, with no I/O, no cgo and no server: G goroutines each put themselves on a list (one
// mutex) and park on their own channel; one dispatcher goroutine takes the list whole and
// readies each caller with a channel send, as the binding's poller does with a poll's
// completions. It reports calls/s and the process's CPU time per call: what any Go client
// of this shape pays per call before it does any work of its own.
func BenchmarkHandOverCeiling(b *testing.B) {
	for _, g := range []int{16, 256, 1024} {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			var (
				mu      sync.Mutex
				waiting []chan struct{}
				kick    = make(chan struct{}, 1)
				stop    = make(chan struct{})
				wg      sync.WaitGroup
			)
			go func() {
				var batch []chan struct{}
				for {
					mu.Lock()
					batch, waiting = waiting, batch[:0]
					mu.Unlock()
					for _, ch := range batch {
						ch <- struct{}{}
					}
					if len(batch) > 0 {
						// As the binding's poller does after work: the callers it readied run
						// and come back, so the next batch is taken whole.
						runtime.Gosched()
					} else {
						select {
						case <-kick:
						case <-stop:
							return
						}
					}
				}
			}()
			cpu0 := processCPU()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < g; i++ {
				wg.Add(1)
				go func(n int) {
					defer wg.Done()
					ch := make(chan struct{}, 1)
					for ; n > 0; n-- {
						mu.Lock()
						waiting = append(waiting, ch)
						first := len(waiting) == 1
						mu.Unlock()
						if first {
							select {
							case kick <- struct{}{}:
							default:
							}
						}
						<-ch
					}
				}(b.N/g + boolInt(i < b.N%g))
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			close(stop)
			b.ReportMetric(float64(b.N)/el.Seconds(), "calls/s")
			b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/call")
		})
	}
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}

// processCPU is the process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
