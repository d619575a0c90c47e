package proxy

import (
	"net/netip"
	"sync"

	"github.com/scitunnel/scitunnel/dataplane/config"
)

// What a flood of UDP may take from a listener. Any address can send a datagram, and each new
// source address starts a session (two goroutines, a socket, a reply buffer, a queue), so the
// sessions of a listener, those of one source IP, and the bytes each session queues are capped
// (config.Limits); what exceeds a cap is dropped and counted, as a congested router would.

// udpSessions are one listener's sessions, by source address, within the limits.
type udpSessions struct {
	mu       sync.Mutex
	bySource map[netip.AddrPort]*udpSession
	perIP    map[netip.Addr]int
}

func newUDPSessions() *udpSessions {
	return &udpSessions{bySource: map[netip.AddrPort]*udpSession{}, perIP: map[netip.Addr]int{}}
}

// Reasons a datagram of a new source is dropped (scitunnel_proxy_udp_dropped_total).
const (
	dropSessionLimit       = "session_limit"
	dropSourceSessionLimit = "source_session_limit"
	dropDraining           = "draining"
)

// admission says whether a new source may start a session.
type admission struct {
	limits    config.Limits
	perSource bool // the per-source limit applies (the Outbound end: sources are consumers)
	draining  bool
}

// get returns src's session, or starts one with start when adm allows it; otherwise the reason
// the datagram is dropped. start runs with the table locked: it must not call back into it.
func (t *udpSessions) get(src netip.AddrPort, adm admission, start func() *udpSession) (*udpSession, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.bySource[src]; ok {
		return s, ""
	}
	ip := src.Addr().Unmap()
	switch {
	case adm.draining:
		return nil, dropDraining
	case len(t.bySource) >= adm.limits.MaxUDPSessions:
		return nil, dropSessionLimit
	case adm.perSource && t.perIP[ip] >= adm.limits.MaxUDPSessionsPerSource:
		return nil, dropSourceSessionLimit
	}
	s := start()
	if s == nil {
		return nil, ""
	}
	t.bySource[src] = s
	t.perIP[ip]++
	return s, ""
}

// remove forgets an ended session (unless src has a newer one).
func (t *udpSessions) remove(src netip.AddrPort, s *udpSession) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bySource[src] != s {
		return
	}
	delete(t.bySource, src)
	ip := src.Addr().Unmap()
	if t.perIP[ip]--; t.perIP[ip] <= 0 {
		delete(t.perIP, ip)
	}
}

// closeAll ends every session (the listener closed).
func (t *udpSessions) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.bySource {
		s.close()
	}
}

// queuedDatagramOverhead is what one queued datagram costs besides its payload (its slice
// header and allocation rounding), counted so a flood of empty datagrams is bounded too.
const queuedDatagramOverhead = 64

// datagramQueue holds a session's datagrams toward its target, bounded in bytes: a source
// that sends faster than the path takes (or while the path is being set up) fills it, and
// what does not fit is dropped. A count of datagrams would let large ones hold 64 KiB each.
type datagramQueue struct {
	limit int
	ready chan struct{} // holds a token while the queue is not empty

	mu    sync.Mutex
	items [][]byte
	bytes int
}

func newDatagramQueue(limit int) *datagramQueue {
	return &datagramQueue{limit: limit, ready: make(chan struct{}, 1)}
}

// push queues a copy of b, or reports that it does not fit.
func (q *datagramQueue) push(b []byte) bool {
	cost := len(b) + queuedDatagramOverhead
	q.mu.Lock()
	if q.bytes+cost > q.limit {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, append([]byte(nil), b...))
	q.bytes += cost
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default: // already signalled
	}
	return true
}

// pop takes the oldest datagram, if any.
func (q *datagramQueue) pop() ([]byte, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil, false
	}
	b := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	if len(q.items) == 0 {
		q.items = nil // let the backing array go once drained
	}
	q.bytes -= len(b) + queuedDatagramOverhead
	return b, true
}
