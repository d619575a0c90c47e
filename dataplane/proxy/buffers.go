package proxy

import "sync"

// Buffers that follow the traffic. A tunnel end may hold thousands of mostly idle connections
// next to a few bulk streams, and the proxy pod's memory limit is finite (1 GiB by default).
// So each direction of a connection reads into a small buffer of its own, takes a large one from
// a shared pool while its reads keep filling the small one, and gives the large one back once
// the traffic has been quiet for a few reads: idle connections cost tens of kilobytes, bulk
// ones get the large buffers that keep system calls and TLS records per call high.
const (
	smallBuffer = 32 << 10
	largeBuffer = 512 << 10
	// quietReads is how many reads in a row that would have fit the small buffer hand the
	// large one back. Bulk streams see the odd short read; this keeps them from flapping.
	quietReads = 8
)

var largePool = sync.Pool{New: func() any { b := make([]byte, largeBuffer); return &b }}

// adaptiveBuffer is one direction's read buffer. Not safe for concurrent use.
type adaptiveBuffer struct {
	small []byte
	large *[]byte
	quiet int
}

// get returns the buffer to read into next.
func (a *adaptiveBuffer) get() []byte {
	if a.large != nil {
		return *a.large
	}
	if a.small == nil {
		a.small = make([]byte, smallBuffer)
	}
	return a.small
}

// used reports how many bytes the last read into get's buffer brought, once they have been
// consumed: the next get may return another buffer.
func (a *adaptiveBuffer) used(n int) {
	switch {
	case a.large == nil && n >= smallBuffer:
		a.large = largePool.Get().(*[]byte)
		a.quiet = 0
	case a.large != nil && n < smallBuffer:
		if a.quiet++; a.quiet >= quietReads {
			a.release()
		}
	default:
		a.quiet = 0
	}
}

// release gives a large buffer back to the pool.
func (a *adaptiveBuffer) release() {
	if a.large != nil {
		largePool.Put(a.large)
		a.large = nil
	}
	a.quiet = 0
}
