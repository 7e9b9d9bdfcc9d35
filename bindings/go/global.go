package fastrpc

// Process-wide settings of the library: version, runtime threads, log messages.

/*
#include "shim.h"
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// Version is the library's version (MAJOR.MINOR.PATCH).
func Version() string { return C.GoString(C.fastrpc_version()) }

// HeaderVersion is the version of the header this package was compiled against; it differs
// from Version when a different library is found at run time.
const HeaderVersion = C.FASTRPC_VERSION

// SetWorkerThreads sets how many threads the library's runtime uses (the threads that run
// connections; the binding's default: half the CPUs, at least 1, at most 4). It must be
// called before the first client or server is created; later it returns ErrInvalidArgument
// and changes nothing. 0 restores the library's own default (the number of CPUs, at most 4).
func SetWorkerThreads(n int) error {
	if n < 0 {
		return invalid("SetWorkerThreads: negative count")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cStatusErr(C.fastrpc_set_worker_threads(C.size_t(n)))
}

// LogLevel is how much a library log message matters.
type LogLevel uint32

const (
	LogError LogLevel = 1 // something failed and was handled
	LogWarn  LogLevel = 2 // something unusual
	LogInfo  LogLevel = 3 // connections opening and closing
	LogDebug LogLevel = 4 // details
)

var (
	logMu sync.RWMutex
	logFn func(LogLevel, string)
)

// SetLogHandler sends the library's log messages up to maxLevel to f (nil stops logging;
// by default the library logs nothing). f runs on the library's threads, possibly
// concurrently: keep it short and do not call this package from it.
func SetLogHandler(maxLevel LogLevel, f func(level LogLevel, msg string)) error {
	logMu.Lock()
	logFn = f
	logMu.Unlock()
	on := C.int(0)
	if f != nil {
		on = 1
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cStatusErr(C.gofrpc_set_log(C.uint32_t(maxLevel), on))
}

//export gofrpcLog
func gofrpcLog(level C.uint32_t, msg *C.char, n C.size_t) {
	logMu.RLock()
	f := logFn
	logMu.RUnlock()
	if f != nil {
		f(LogLevel(level), C.GoStringN(msg, C.int(n)))
	}
	_ = unsafe.Pointer(msg)
}
