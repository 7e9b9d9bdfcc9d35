//go:build !amd64 && !arm64

package park

// Supported: Deliver and Wait work on this platform (not here: see runtime.go).
const Supported = false

func wait(*core) { panic("park: not supported on this platform") }

func ready(uintptr) { panic("park: not supported on this platform") }
