package fastrpc

// How the client's and the server's poller goroutines wait for their queue: in Go's
// netpoller, on the queue's eventfd (fastrpc_completion_queue_fd, fastrpc_server_queue_fd),
// so that an idle poller holds no OS thread and no P and is woken by the same epoll_wait
// that wakes Go's network connections. The blocking poll (fastrpc_*_queue_poll with a
// timeout) is only the fallback when the descriptor cannot be had.

/*
#include "shim.h"
*/
import "C"

import (
	"os"
	"runtime"
	"syscall"
)

// The library's worker threads, unless SetWorkerThreads says otherwise: half the CPUs (at
// least 1, at most 4) rather than the library's own default (every CPU, at most 4). In a Go
// program the goroutines (callers, handlers) run on Go's own threads, one per CPU, and the
// library's threads only do the connections' I/O; measured on 2 cores, one worker instead of
// two halves the context switches per call (8.9 to 5.3 for one goroutine, 1.0 to 0.5 for 16;
// see README.md "Threading model"). Set here, at package initialization, so that a
// SetWorkerThreads call before the first client or server still decides.
func init() {
	n := runtime.NumCPU() / 2
	if n < 1 {
		n = 1
	}
	if n > 4 {
		n = 4
	}
	C.fastrpc_set_worker_threads(C.size_t(n))
}

// leaderFromEnv reports whether a new client uses leader mode (leader.go; the default), or,
// with FASTRPC_GO_POLLER=netpoll (read when a client starts; kept as the benchmark's
// "before" arm), only its poller goroutine waits on the queue and hands every outcome over.
// Servers have one mode.
func leaderFromEnv() bool {
	return os.Getenv("FASTRPC_GO_POLLER") != "netpoll"
}

// readFdFromEnv reports whether a new one-server client in leader mode waits on its read
// descriptor, reading the responses itself (the default), or, with FASTRPC_GO_READ=off or
// FASTRPC_GO_POLLER=leader-noread (read when a client starts; the benchmark's "before"
// arm), on its queue's only.
func readFdFromEnv() bool {
	return os.Getenv("FASTRPC_GO_READ") != "off" && os.Getenv("FASTRPC_GO_POLLER") != "leader-noread"
}

// callerReadsFromEnv reports whether a new one-server client that waits on its read
// descriptor also tells the library that it reads the connection (caller_reads; the
// default), or, with FASTRPC_GO_CALLER_READS=0 (read when a client starts; for A/B), lets the
// library's reader read too, as before.
func callerReadsFromEnv() bool {
	return os.Getenv("FASTRPC_GO_CALLER_READS") != "0"
}

// newReadWaiter waits on the client's read descriptor (readable while its socket has bytes
// to read) with the queue's descriptor qfd added to it, so that one wait covers both: a
// response is read by the waiting goroutine as soon as it arrives, and whatever the library's
// own reader completed first shows in the queue. Nil when it cannot be had (the caller then
// waits on the queue's).
func newReadWaiter(ptr *C.fastrpc_client, qfd C.int) *queueWaiter {
	var rfd C.int
	if C.fastrpc_client_read_fd(ptr, &rfd) != C.FASTRPC_STATUS_OK {
		return nil
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(qfd)}
	if err := syscall.EpollCtl(int(rfd), syscall.EPOLL_CTL_ADD, int(qfd), &ev); err != nil && err != syscall.EEXIST {
		return nil
	}
	w, err := newQueueWaiter(rfd, "fastrpc-client-read")
	if err != nil {
		return nil
	}
	return w
}

// noQueueFd makes new clients and servers wait as when their queue's descriptor cannot be
// had (blocking polls): for the tests of that fallback only.
var noQueueFd bool

// queueWaiter is a queue's eventfd in Go's netpoller: a duplicate of the descriptor (the
// queue owns the original and closes it when freed), so that closing ours leaves the
// queue's intact.
type queueWaiter struct {
	f  *os.File
	rc syscall.RawConn
	fd int // f's descriptor, for waits in C (waitReadable); f.Fd() would make it blocking
}

// newQueueWaiter wraps fd (the queue's level-triggered eventfd, non-blocking).
func newQueueWaiter(fd C.int, name string) (*queueWaiter, error) {
	nfd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return nil, errno
	}
	// The descriptor is non-blocking (O_NONBLOCK is shared by the duplicate), so os.NewFile
	// registers it with the netpoller.
	f := os.NewFile(nfd, name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &queueWaiter{f: f, rc: rc, fd: int(nfd)}, nil
}

// run calls drain until it reports the queue closed. drain polls without blocking until the
// queue is empty (then returns false) or closed (true). Go's epoll is edge-triggered: an
// empty-to-non-empty transition after drain saw the queue empty writes the eventfd, which
// marks the descriptor ready, and the wait that follows returns at once; readiness before
// drain ran is covered by drain itself. It returns an error when the descriptor is not
// pollable (the caller then falls back to blocking polls).
func (w *queueWaiter) run(drain func() bool) error {
	return w.rc.Read(func(uintptr) bool { return drain() })
}

// waitReadable blocks this goroutine's thread, in C, until w's descriptor is readable or ms
// have passed (see leadBlocking). It reports whether the descriptor was readable already.
func (w *queueWaiter) waitReadable(ms int) (already bool) {
	return C.gofrpc_wait_readable(C.int(w.fd), C.int(ms)) == 2
}

func (w *queueWaiter) close() {
	if w != nil {
		w.f.Close()
	}
}

// pollLoop runs pollOnce (take up to pollBatch items, waiting up to timeoutMs for the first;
// how many, and false once the queue is shut down and empty) until the queue is closed. It
// waits in the netpoller on w; when w is nil or not pollable after all, in blocking polls.
// After work it yields (runtime.Gosched: the goroutines it woke run, and may submit more)
// and polls again; it parks once the queue is empty.
func pollLoop(w *queueWaiter, pollOnce func(timeoutMs C.uint32_t) (int, bool)) {
	if w != nil {
		err := w.run(func() bool {
			for {
				n, open := pollOnce(0)
				if !open {
					return true
				}
				if n == 0 {
					return false
				}
				runtime.Gosched()
			}
		})
		if err == nil {
			return
		}
	}
	pollBlocking(pollOnce)
}

const (
	pollTimeoutMs = 100 // how long one blocking poll may block in C (the fallback only)
	spinPolls     = 50  // the fallback's polls without blocking (with a yield between) before one that blocks
)

// pollBlocking is the fallback when the queue's descriptor cannot be had (out of
// descriptors): blocking polls in C until the queue is closed. While a cgo call blocks, its
// goroutine keeps its P (Go's scheduler slot) until sysmon takes it back, which can take up
// to 10ms on a quiet process; goroutines made runnable on that P (a woken caller, a new
// handler) would wait as long. So after work the poller yields, and it polls without
// blocking (yielding in between) spinPolls times before a poll that blocks. Measured on 2
// cores: spinning on a clock instead (20-200us) costs throughput, as the spinning pollers
// take CPU from the library's threads.
func pollBlocking(pollOnce func(timeoutMs C.uint32_t) (int, bool)) {
	idle := 0
	timeout := C.uint32_t(0)
	for {
		n, open := pollOnce(timeout)
		if !open {
			return
		}
		if n > 0 {
			idle = 0
		} else {
			idle++
		}
		if idle > spinPolls {
			timeout = pollTimeoutMs // until work comes
			continue
		}
		timeout = 0
		runtime.Gosched()
	}
}
