package fastrpc

// Direct parking: a call whose context can never end (ctx.Done() is nil) waits for its
// outcome in its waiter (res, and the Parker pk of internal/park: parked by the Go runtime's
// own gopark and readied with goready), in place of a channel receive and send. The channel costs every
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

// deliver hands w its outcome: in w for a direct call, else through its channel.
func (w *waiter) deliver(res result) {
	if w.direct {
		w.dst, w.err = res.data, res.err
		w.pk.Done()
		return
	}
	w.ch <- res
}

// recv waits for w's outcome.
func (w *waiter) recv() result {
	if w.direct {
		w.pk.Wait()
		return w.takeRes()
	}
	return <-w.ch
}

// takeRes takes a direct call's outcome out of w (after its Parker said done).
func (w *waiter) takeRes() result {
	res := result{data: w.dst, err: w.err}
	w.dst, w.err = nil, nil
	return res
}

// tryRecv takes w's outcome if it is in.
func (w *waiter) tryRecv() (result, bool) {
	if w.direct {
		if w.pk.IsDone() {
			w.pk.Reset()
			return w.takeRes(), true
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
