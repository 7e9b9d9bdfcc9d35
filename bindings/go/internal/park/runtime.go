//go:build amd64 || arm64

package park

// The runtime's entry points. gopark and goready are kept linkable by the Go runtime for
// the packages that use them ("do not remove or change the type signature",
// runtime/proc.go); their reason arguments are given as 0 (no reason: "waiting" in a
// goroutine dump), the only value that means the same in every Go release.

import "unsafe"

// Supported: Done and Wait work on this platform.
const Supported = true

//go:linkname gopark runtime.gopark
func gopark(unlockf func(gp, arg unsafe.Pointer) bool, lock unsafe.Pointer, reason uint8, traceReason uint8, traceskip int)

//go:linkname goready runtime.goready
func goready(gp unsafe.Pointer, traceskip int)

// cas is a compare-and-swap that may run on the runtime's stack (cas_*.s), where the race
// detector's sync/atomic cannot.
//
//go:noescape
func cas(addr *uint32, old, new uint32) bool

// wait is kept out of line, so that Parker.Wait inlines into its callers.
//
//go:noinline
func wait(p *Parker) { gopark(commit, unsafe.Pointer(p), 0, 0, 2) }

func ready(g uintptr) {
	// The value is a goroutine the runtime keeps (see Parker.g).
	goready(*(*unsafe.Pointer)(unsafe.Pointer(&g)), 2)
}

// commit runs on the runtime's stack after the waiting goroutine stopped: it parks it
// (true) unless the value came first (false: it runs on). Nothing instrumented by the race
// detector may run here, nor anything that grows the stack.
//
//go:norace
//go:nosplit
func commit(gp, arg unsafe.Pointer) bool {
	p := (*Parker)(arg)
	p.g = uintptr(gp)
	return cas((*uint32)(unsafe.Pointer(&p.state)), empty, parked)
}
