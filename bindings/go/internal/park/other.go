//go:build !amd64 && !arm64

package park

// Supported: Done and Wait work on this platform (not here: see runtime.go).
const Supported = false

func wait(*Parker) { panic("park: not supported on this platform") }

func ready(uintptr) { panic("park: not supported on this platform") }
