package fastrpc

// Direct parking: a call whose context can never end (ctx.Done() is nil) waits for its
// outcome in its waiter's slot (internal/park: parked by the Go runtime's own gopark and
// readied with goready), in place of a channel receive and send. The channel costs every
// hand-over its lock, a sudog, and a copy of the result into the parked caller's stack (a
// cache miss on the role holder's CPU, on memory the caller's CPU wrote last); in the slot
// the result waits in the waiter and the caller reads it when it runs. A call whose context
// may end keeps the channel, which it selects on with ctx.Done(). Measured: README.md,
// "Direct parking".

import (
	"os"

	"github.com/fastrpc-rs/fastrpc/bindings/go/internal/park"
)

// directFromEnv: calls whose context never ends park directly where the platform allows it
// (amd64, arm64: the default); FASTRPC_GO_DIRECT=0 keeps them on the channel (the
// benchmark's "before" arm; read once, when the package loads).
var directFromEnv = park.Supported && os.Getenv("FASTRPC_GO_DIRECT") != "0"

// deliver hands w its outcome: through the slot for a direct call, else its channel.
func (w *waiter) deliver(res result) {
	if w.direct {
		w.sl.Deliver(res)
		return
	}
	w.ch <- res
}

// recv waits for w's outcome.
func (w *waiter) recv() result {
	if w.direct {
		return w.sl.Wait()
	}
	return <-w.ch
}

// tryRecv takes w's outcome if it is in.
func (w *waiter) tryRecv() (result, bool) {
	if w.direct {
		if w.sl.Ready() {
			return w.sl.Take(), true
		}
		return result{}, false
	}
	select {
	case res := <-w.ch:
		return res, true
	default:
		return result{}, false
	}
}
