package fastrpc

// This file holds the link flags and the plumbing shared by every cgo call: turning Go
// slices into C buffers and fastrpc statuses into Go errors. The C helpers live in shim.h.

/*
// Where the header and the library are found: cgo_repo.go (this repository, the default) or
// cgo_pkgconfig.go (an installed library, -tags fastrpc_pkgconfig).

// The library copies names and values before returning and keeps no pointer: tell cgo,
// so that passing a Go slice does not force it onto the heap. (Not `nocallback`: these
// write on the caller's thread (the lone write and reply), and a library panic caught there
// is logged through the log handler, which calls into Go; under `nocallback` the Go runtime
// would abort the process.)
#cgo noescape gofrpc_call_queued_id
#cgo noescape gofrpc_send
#cgo noescape gofrpc_request_finish

#include "shim.h"
*/
import "C"

import (
	"unsafe"
)

// The status constants of errors.go are the header's: a mismatch fails to compile.
var _ = [1]struct{}{}[statusCancelled-C.FASTRPC_STATUS_CANCELLED]
var _ = [1]struct{}{}[C.FASTRPC_STATUS_CANCELLED-statusCancelled]

// bytesPtr is b's first byte for the duration of one cgo call (NULL for an empty slice:
// the C API takes (NULL, 0) as an empty buffer). The C side copies before returning.
func bytesPtr(b []byte) *C.uint8_t {
	if len(b) == 0 {
		return nil
	}
	return (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(b)))
}

// takeMsg turns a malloc'd message from shim.h into a Go string and frees it.
func takeMsg(m *C.char) string {
	if m == nil {
		return ""
	}
	s := C.GoString(m)
	C.free(unsafe.Pointer(m))
	return s
}

// retErr turns a gofrpc_ret into nil or an *Error carrying the library's message.
func retErr(r C.gofrpc_ret) error {
	if r.status == C.FASTRPC_STATUS_OK {
		return nil
	}
	return newError(uint32(r.status), takeMsg(r.msg))
}

// statusText is the library's fixed message for a status.
func statusText(st uint32) string {
	return takeMsg(C.gofrpc_status_text(C.uint32_t(st)))
}

// cStatusErr is for calls made while the goroutine is locked to its OS thread, so that
// fastrpc_last_error_message describes this very failure.
func cStatusErr(st C.fastrpc_status) error {
	if st == C.FASTRPC_STATUS_OK {
		return nil
	}
	return newError(uint32(st), takeMsg(C.gofrpc_dup_last_error()))
}
