package proxy

import (
	"cmp"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// closedKept is how many ended connections /v1/connections still lists, so a test or an
// operator can read a short transfer's exact counts after it ended.
const closedKept = 1024

// ConnInfo is one connection as /v1/connections reports it: the exact byte counts the sFlow
// estimates are checked against.
type ConnInfo struct {
	ID       uint64 `json:"id"`
	Protocol string `json:"protocol"` // tcp, tls, udp
	Port     int    `json:"listenPort"`
	// Accepted is the connection from the consumer side (client -> this proxy).
	AcceptedRemote string `json:"acceptedRemote"`
	AcceptedLocal  string `json:"acceptedLocal"`
	// Dialed is the connection this proxy opened toward the producer side.
	DialedLocal  string `json:"dialedLocal,omitempty"`
	DialedRemote string `json:"dialedRemote,omitempty"`
	// PeerIdentity is the verified client certificate's first SAN (Inbound TLS).
	PeerIdentity string `json:"peerIdentity,omitempty"`
	Scitag       string `json:"scitag"`
	// FlowLabel is the label stamped on the dialed connection (entropy included); 0 if none.
	FlowLabel  uint32     `json:"flowLabel"`
	ToProducer uint64     `json:"bytesToProducer"`
	ToConsumer uint64     `json:"bytesToConsumer"`
	Started    time.Time  `json:"started"`
	Ended      *time.Time `json:"ended,omitempty"`
}

// TagBytes are the exact totals of one tag since the proxy started.
type TagBytes struct {
	ToProducer  uint64 `json:"bytesToProducer"`
	ToConsumer  uint64 `json:"bytesToConsumer"`
	Connections uint64 `json:"connections"`
}

// Connections is the body of GET /v1/connections.
type Connections struct {
	Tunnel      string              `json:"tunnel"`
	Tags        map[string]TagBytes `json:"tags"`
	Active      []ConnInfo          `json:"active"`
	RecentEnded []ConnInfo          `json:"recentEnded"`
}

// tracked is a live connection.
type tracked struct {
	info                   ConnInfo // fixed fields; counters live below
	toProducer, toConsumer byteCounter
	closers                []net.Conn
}

func (t *tracked) snapshot() ConnInfo {
	i := t.info
	i.ToProducer = t.toProducer.n.Load()
	i.ToConsumer = t.toConsumer.n.Load()
	return i
}

// tracker registers connections for drain, /v1/connections and the tag totals.
type tracker struct {
	nextID atomic.Uint64
	total  atomic.Uint64

	mu     sync.Mutex
	active map[uint64]*tracked
	ended  []ConnInfo
	tags   map[string]*tagTotals
	idle   *sync.Cond // signalled when active becomes empty
}

type tagTotals struct{ toProducer, toConsumer, conns atomic.Uint64 }

func newTracker() *tracker {
	t := &tracker{active: map[uint64]*tracked{}, tags: map[string]*tagTotals{}}
	t.idle = sync.NewCond(&t.mu)
	return t
}

func (t *tracker) tag(name string) *tagTotals {
	t.mu.Lock()
	defer t.mu.Unlock()
	tt, ok := t.tags[name]
	if !ok {
		tt = &tagTotals{}
		t.tags[name] = tt
	}
	return tt
}

// add registers a connection; closers are closed when the drain deadline passes.
func (t *tracker) add(info ConnInfo, onToProducer, onToConsumer func(int64), closers ...net.Conn) *tracked {
	info.ID = t.nextID.Add(1)
	info.Started = time.Now()
	tt := t.tag(info.Scitag)
	tt.conns.Add(1)
	t.total.Add(1)
	c := &tracked{info: info, closers: closers}
	c.toProducer.onBytes = func(n int64) { tt.toProducer.Add(uint64(n)); onToProducer(n) }
	c.toConsumer.onBytes = func(n int64) { tt.toConsumer.Add(uint64(n)); onToConsumer(n) }
	t.mu.Lock()
	t.active[info.ID] = c
	t.mu.Unlock()
	return c
}

func (t *tracker) remove(c *tracked) {
	end := time.Now()
	snap := c.snapshot()
	snap.Ended = &end
	t.mu.Lock()
	delete(t.active, c.info.ID)
	t.ended = append(t.ended, snap)
	if len(t.ended) > closedKept {
		t.ended = slices.Delete(t.ended, 0, len(t.ended)-closedKept)
	}
	if len(t.active) == 0 {
		t.idle.Broadcast()
	}
	t.mu.Unlock()
}

func (t *tracker) activeCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.active)
}

// waitIdle waits until no connection is active or the deadline passes, then closes whatever
// is left. It reports how many connections it had to cut.
func (t *tracker) waitIdle(deadline time.Time) int {
	timer := time.AfterFunc(time.Until(deadline), func() {
		t.mu.Lock()
		t.idle.Broadcast()
		t.mu.Unlock()
	})
	defer timer.Stop()
	t.mu.Lock()
	for len(t.active) > 0 && time.Now().Before(deadline) {
		t.idle.Wait()
	}
	cut := make([]*tracked, 0, len(t.active))
	for _, c := range t.active {
		cut = append(cut, c)
	}
	t.mu.Unlock()
	for _, c := range cut {
		for _, cl := range c.closers {
			cl.Close()
		}
	}
	return len(cut)
}

func (t *tracker) report(tunnel string) Connections {
	out := Connections{Tunnel: tunnel, Tags: map[string]TagBytes{}, Active: []ConnInfo{}, RecentEnded: []ConnInfo{}}
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, tt := range t.tags {
		out.Tags[name] = TagBytes{ToProducer: tt.toProducer.Load(), ToConsumer: tt.toConsumer.Load(), Connections: tt.conns.Load()}
	}
	for _, c := range t.active {
		out.Active = append(out.Active, c.snapshot())
	}
	slices.SortFunc(out.Active, func(a, b ConnInfo) int { return cmp.Compare(a.ID, b.ID) })
	out.RecentEnded = append(out.RecentEnded, t.ended...)
	return out
}
