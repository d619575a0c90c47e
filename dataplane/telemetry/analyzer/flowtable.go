package analyzer

import (
	"crypto/rand"
	"encoding/binary"
	"math/bits"
)

// flowTable maps flow keys to flows. It is a Go map keyed by a 64-bit hash of the key, with
// collisions chained, rather than a map keyed by the 40-byte flowKey itself: Go hashes and
// compares such keys with its generic memory routines, which made the table the largest cost of
// attributing a sample. The hash is seeded at random per table, so senders of sFlow cannot
// choose addresses that collide.
type flowTable struct {
	m    map[uint64]*flow
	n    int
	seed [4]uint64
}

func newFlowTable() flowTable {
	var b [32]byte
	_, _ = rand.Read(b[:])
	t := flowTable{m: map[uint64]*flow{}}
	for i := range t.seed {
		t.seed[i] = binary.LittleEndian.Uint64(b[8*i:]) | 1
	}
	return t
}

// mix is the multiply-fold step of wyhash-style hashes.
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func (t *flowTable) hash(k *flowKey) uint64 {
	h := mix(k.src[0]^t.seed[0], k.src[1]^t.seed[1])
	h = mix(h^k.dst[0], k.dst[1]^t.seed[2])
	return mix(h^uint64(k.tag), t.seed[3])
}

// get returns the flow of k, or nil.
func (t *flowTable) get(k *flowKey) (*flow, uint64) {
	h := t.hash(k)
	for f := t.m[h]; f != nil; f = f.next {
		if f.key == *k {
			return f, h
		}
	}
	return nil, h
}

// insert adds a new flow for k (which get did not find) under hash h.
func (t *flowTable) insert(k *flowKey, h uint64) *flow {
	f := &flow{key: *k, next: t.m[h]}
	t.m[h] = f
	t.n++
	return f
}

func (t *flowTable) len() int { return t.n }

// each calls fn for every flow.
func (t *flowTable) each(fn func(*flow)) {
	for _, f := range t.m {
		for ; f != nil; f = f.next {
			fn(f)
		}
	}
}

// deleteIf removes the flows for which drop is true.
func (t *flowTable) deleteIf(drop func(*flow) bool) {
	for h, head := range t.m {
		var kept *flow
		for f := head; f != nil; {
			next := f.next
			if drop(f) {
				t.n--
			} else {
				f.next = kept
				kept = f
			}
			f = next
		}
		if kept == nil {
			delete(t.m, h)
		} else if kept != head {
			t.m[h] = kept
		}
	}
}
