// cas for the commit (runtime.go), which runs on the runtime's stack, where the race
// detector's sync/atomic cannot: a plain LOCK CMPXCHG, sequentially consistent.

#include "textflag.h"

// func cas(addr *uint32, old, new uint32) bool
TEXT ·cas(SB), NOSPLIT, $0-17
	MOVQ addr+0(FP), BX
	MOVL old+8(FP), AX
	MOVL new+12(FP), CX
	LOCK
	CMPXCHGL CX, 0(BX)
	SETEQ ret+16(FP)
	RET
