package fastrpc

// How the client's and the server's poller goroutines wait for their queue: in Go's
// netpoller, on the queue's eventfd (fastrpc_completion_queue_fd, fastrpc_server_queue_fd),
// so that an idle poller holds no OS thread and no P and is woken by the same epoll_wait
// that wakes Go's network connections. The blocking poll (fastrpc_*_queue_poll with a
// timeout) is the fallback when the descriptor cannot be had.

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

// pollerMode is how pollers wait. FASTRPC_GO_POLLER (read when a client or server starts)
// chooses one, for the benchmark's comparisons only: "leader" (the default: netpoll, and a
// call that is the client's only one in flight waits on the queue's descriptor itself; see
// leader.go), "netpoll" (the poller goroutine alone waits in the netpoller and hands every
// outcome over), "netpoll-spin" (netpoll, polling a few more times before parking),
// "blocking" (the blocking poll with the pacer, as before the eventfd existed) or
// "callback" (a client's calls complete through callbacks into Go on the library's threads).
// Servers use netpoll in every mode but blocking.
type pollerMode int

const (
	modeLeader pollerMode = iota // netpoll, and a lone call waits on the queue's descriptor itself (leader.go)
	modeNetpoll
	modeNetpollSpin
	modeBlocking
	modeCallback // the client's calls complete through callbacks (callback.go); servers: netpoll
)

func pollerModeFromEnv() pollerMode {
	switch os.Getenv("FASTRPC_GO_POLLER") {
	case "netpoll":
		return modeNetpoll
	case "blocking":
		return modeBlocking
	case "netpoll-spin":
		return modeNetpollSpin
	case "callback":
		return modeCallback
	}
	return modeLeader
}

// idleSpins is how many empty non-blocking polls (with a runtime.Gosched between) a
// netpoll poller makes before parking in the netpoller.
func (m pollerMode) idleSpins() int {
	if m == modeNetpollSpin {
		return spinPolls
	}
	return 0
}

// queueWaiter is a queue's eventfd in Go's netpoller: a duplicate of the descriptor (the
// queue owns the original and closes it when freed), so that closing ours leaves the
// queue's intact.
type queueWaiter struct {
	f  *os.File
	rc syscall.RawConn
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
	return &queueWaiter{f: f, rc: rc}, nil
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

func (w *queueWaiter) close() {
	if w != nil {
		w.f.Close()
	}
}

// spinner counts empty polls: after work, and for the first idleSpins empty polls, the poller
// yields (runtime.Gosched: the goroutines it woke run, and may submit more work) and polls
// again; then it parks.
type spinner struct {
	idle, max int
}

// again reports whether to poll again now.
func (s *spinner) again(gotWork bool) bool {
	if gotWork {
		s.idle = 0
		runtime.Gosched()
		return true
	}
	if s.idle < s.max {
		s.idle++
		runtime.Gosched()
		return true
	}
	s.idle = 0
	return false
}
