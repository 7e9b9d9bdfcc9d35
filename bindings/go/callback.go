package fastrpc

// Completion callbacks (FASTRPC_GO_POLLER=callback; a benchmark candidate, not the default):
// calls are made with fastrpc_client_call_async_id, and the library's thread that finishes a
// call runs gofrpcCallDone, which hands the outcome to the waiting goroutine directly (no
// completion queue, no poller). Tags come from one process-wide counter and waiters live in
// one process-wide map, since the callback knows only the tag.

/*
#include "shim.h"
*/
import "C"

import (
	"sync/atomic"
	"unsafe"
)

var (
	cbNextTag atomic.Uint64
	cbWaiters waiterMap
)

func init() { cbWaiters.init() }

//export gofrpcCallDone
func gofrpcCallDone(tag C.uint64_t, status C.uint32_t, resp *C.fastrpc_response) {
	w := cbWaiters.take(uint64(tag))
	if w == nil {
		C.fastrpc_response_free(resp) // its caller gave up
		return
	}
	var data *C.uint8_t
	var n C.size_t
	var msg *C.char
	C.gofrpc_response_view(resp, status, &data, &n, &msg)
	var res result
	if status == C.FASTRPC_STATUS_OK {
		res.data = make([]byte, int(n))
		if n > 0 {
			copy(res.data, unsafe.Slice((*byte)(unsafe.Pointer(data)), int(n)))
		}
	} else {
		res.err = newError(uint32(status), takeMsg(msg))
	}
	C.fastrpc_response_free(resp)
	w.ch <- res
}
