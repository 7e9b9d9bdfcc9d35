// cas for the commit (runtime.go), which runs on the runtime's stack, where the race
// detector's sync/atomic cannot: an exclusive load-acquire and store-release, as Go's
// runtime does without LSE.

#include "textflag.h"

// func cas(addr *uint32, old, new uint32) bool
TEXT ·cas(SB), NOSPLIT, $0-17
	MOVD addr+0(FP), R0
	MOVW old+8(FP), R1
	MOVW new+12(FP), R2
again:
	LDAXRW (R0), R3
	CMPW R1, R3
	BNE fail
	STLXRW R2, (R0), R4
	CBNZ R4, again
	MOVD $1, R5
	MOVB R5, ret+16(FP)
	RET
fail:
	CLREX
	MOVB ZR, ret+16(FP)
	RET
