package fastrpc

// The client's table of waiting calls: the tag a call is submitted with names its slot, so
// that the poller finds the caller of a completion by index, not by hashing. 64 shards, each
// a slice of slots with a free list under one mutex; a call picks a shard at random, so that
// two goroutines rarely contend. A tag holds its shard (6 bits), its slot's index (26 bits)
// and the slot's generation (31 bits; the top bit is the hand-off's, handoff.go): taking a call's waiter moves its slot to the next
// generation, so a stale tag (a completion whose caller gave up and whose slot went to
// another call) finds nothing.
//
// A shard's mutex is also what keeps a submit from running into Close: a call submits while
// holding its shard (lockedPut to unlock), and Close seals every shard (each locked in turn)
// before it frees the library's client, so no submit is under way then and none starts
// after. That spares every call two atomic operations on a line all callers share (a
// read-locked RWMutex), one of the costs measured at 1024 goroutines (README.md, "What a
// call costs").

import (
	"math/rand/v2"
	"sync"
)

const (
	waiterShards    = 64
	waiterShardBits = 6
	waiterIndexBits = 26
	waiterIndexMask = 1<<waiterIndexBits - 1
	// A tag holds 31 bits of its slot's generation: the top bit marks the hand-off's tags
	// (hoTagBit, handoff.go).
	waiterGenMask = 1<<31 - 1
)

type waiterTable struct {
	shards [waiterShards]waiterShard
}

type waiterShard struct {
	mu     sync.Mutex
	slots  []waiterSlot
	free   []uint32 // indexes of empty slots
	used   int
	sealed bool     // Close ran: nothing is put any more
	_      [63]byte // 128 bytes: keep shards on separate cache lines
}

type waiterSlot struct {
	w   *waiter
	gen uint32
}

// lockedPut puts w in a shard chosen at random and returns the shard, still locked (the
// caller submits, then unlocks it), and w's tag. ok is false (nothing locked, nothing put)
// once the table is sealed.
func (t *waiterTable) lockedPut(w *waiter) (s *waiterShard, tag uint64, ok bool) {
	si := rand.Uint32() % waiterShards
	s = &t.shards[si]
	s.mu.Lock()
	if s.sealed {
		s.mu.Unlock()
		return nil, 0, false
	}
	var idx uint32
	if n := len(s.free); n > 0 {
		idx = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		if len(s.slots) > waiterIndexMask {
			// 64M calls waiting in one shard: not reachable in practice (each is a
			// goroutine); fail the call rather than alias a tag.
			s.mu.Unlock()
			return nil, 0, false
		}
		idx = uint32(len(s.slots))
		s.slots = append(s.slots, waiterSlot{})
	}
	slot := &s.slots[idx]
	slot.w = w
	s.used++
	return s, uint64(si) | uint64(idx)<<waiterShardBits | uint64(slot.gen&waiterGenMask)<<32, true
}

// take removes and returns the waiter of tag, or nil when there is none (taken already, or
// a stale tag).
func (t *waiterTable) take(tag uint64) *waiter {
	s := &t.shards[tag%waiterShards]
	s.mu.Lock()
	w := s.takeLocked(tag)
	s.mu.Unlock()
	return w
}

// takeLocked is take with s (tag's shard) locked.
func (s *waiterShard) takeLocked(tag uint64) *waiter {
	idx := uint32(tag>>waiterShardBits) & waiterIndexMask
	if int(idx) >= len(s.slots) {
		return nil
	}
	slot := &s.slots[idx]
	if slot.w == nil || slot.gen&waiterGenMask != uint32(tag>>32) {
		return nil
	}
	w := slot.w
	slot.w = nil
	slot.gen++
	s.free = append(s.free, idx)
	s.used--
	return w
}

// len counts the waiting calls (for Shutdown; not a hot path).
func (t *waiterTable) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += s.used
		s.mu.Unlock()
	}
	return n
}

// seal makes every later lockedPut fail, and returns once no shard is held by a submit.
func (t *waiterTable) seal() {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.sealed = true
		s.mu.Unlock()
	}
}

// drain takes every waiter left and passes it to f.
func (t *waiterTable) drain(f func(*waiter)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for j := range s.slots {
			if w := s.slots[j].w; w != nil {
				s.slots[j].w = nil
				s.slots[j].gen++
				s.free = append(s.free, uint32(j))
				s.used--
				f(w)
			}
		}
		s.mu.Unlock()
	}
}
