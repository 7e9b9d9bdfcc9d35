package fastrpc

// The role holder's short waits (leader mode, the hand-off off: 2 to 32 calls in flight).
// When a read pass finds nothing, the role holder (the poller goroutine) does not park in the
// netpoller at once: with calls pending it yields and reads again for up to a window (100
// µs), and with nothing pending it keeps the role for up to a window, yielding, until a
// caller submits again. Parking costs the round trip through Go's scheduler (an idle P's
// thread blocks in epoll_wait, is woken by the kernel, then readies the poller) and giving
// the role up costs the next call a kick of the poller (or a lone leader's blocking poll);
// at 16 goroutines that latency, not CPU, bounds the calls/s (README.md, "Short waits").
// A window that runs out costs up to 100 µs of a CPU, so the role holder backs off: after a
// window that ran out it parks at once for the next 1, then 2, 4, ... 64 waits, and each
// window that ends in time halves that. So the short waits go on while most windows end in
// time, and fade out when most run out: a slow server, or one in the same process that the
// spinning delays (Go polls the network when a P runs out of work), costs about one window
// per 65 waits.
// WithPollerSpin sets the window; without it, FASTRPC_GO_SPIN_US does (read when a client
// starts; 0: off, the benchmark's "before" arm). With neither, the default window applies
// only while GOMAXPROCS is more than 1 (allowed).

import (
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"
)

const (
	spinWindow     = 100 * time.Microsecond
	spinWindowMax  = 10 * time.Millisecond
	spinBackoffMax = 64
)

// spinWindowFromEnv is the window FASTRPC_GO_SPIN_US sets, and whether it was set (else
// the default).
func spinWindowFromEnv() (time.Duration, bool) {
	if n, err := strconv.Atoi(os.Getenv("FASTRPC_GO_SPIN_US")); err == nil && n >= 0 && n <= int(spinWindowMax/time.Microsecond) {
		return time.Duration(n) * time.Microsecond, true
	}
	return spinWindow, false
}

// allowed reports whether a short wait may begin now: always with a window the program
// chose (WithPollerSpin, FASTRPC_GO_SPIN_US), and with the default only while GOMAXPROCS is
// more than 1. With one P, the yielding poller keeps that P from ever running out of work,
// and Go polls the network for the program's other goroutines only when a P does (or every
// 10 ms from its monitor thread): a program with other network I/O would see it delayed.
// Read at the start of each wait (GOMAXPROCS may change while the program runs).
func (s *spinState) allowed() bool {
	return s.chosen || runtime.GOMAXPROCS(0) > 1
}

// spinState is the role holder's policy for one kind of short wait (for responses, or for
// the next call), used under client.role.
type spinState struct {
	window  time.Duration // 0: off
	chosen  bool          // window set by the program (WithPollerSpin, FASTRPC_GO_SPIN_US): see allowed
	since   time.Time     // start of the current short wait (zero: none)
	skip    int           // waits left that park at once
	backoff int           // the skip after the next window that runs out
	// For tests and the benchmark's notes: windows that ended in time, and that ran out.
	hits, misses atomic.Uint64
}

// begin starts a wait at now and reports whether it may be a short one (else: park).
func (s *spinState) begin(now time.Time) bool {
	if s.window == 0 {
		return false
	}
	if s.skip > 0 {
		s.skip--
		return false
	}
	s.since = now
	return true
}

// more reports whether the short wait begun may go on at now; false once its window ran out,
// which is counted and backs off.
func (s *spinState) more(now time.Time) bool {
	if now.Sub(s.since) < s.window {
		return true
	}
	s.since = time.Time{}
	s.misses.Add(1)
	s.backoff = min(max(2*s.backoff, 1), spinBackoffMax)
	s.skip = s.backoff
	return false
}

// hit ends the short wait begun (if any) in time: what it waited for came.
func (s *spinState) hit() {
	if s.since.IsZero() {
		return
	}
	s.since = time.Time{}
	s.hits.Add(1)
	s.backoff /= 2
}

// cancel ends the short wait begun, uncounted (the client closes).
func (s *spinState) cancel() { s.since = time.Time{} }

// waiting reports whether a short wait is under way.
func (s *spinState) waiting() bool { return !s.since.IsZero() }
