package analyzer

import (
	"net/netip"
	"time"
)

// The agents the analyzer heard from, with their data sources. Every datagram names its agent,
// and anyone who can reach the socket can name a new one: the table is bounded (the agent heard
// from longest ago makes room) and agents silent for a while are forgotten, with their sources.

type agentKey struct {
	addr     netip.Addr
	subAgent uint32
}

type agent struct {
	key                                   agentKey
	datagrams, gaps, outOfOrder, restarts uint64
	lastSeq, lastUptime                   uint32
	lastSeen                              time.Time
	sources                               map[sourceID]*source
	// newer and older link the agents by when they were last heard from.
	newer, older *agent
}

// sourceID is an sFlow data source within its agent: an interface (or VLAN, or entity).
type sourceID struct{ class, index uint32 }

type source struct {
	lastSeq, lastDrops uint32
}

// agentTable holds the agents, most recently heard from first.
type agentTable struct {
	max            int
	idle           time.Duration
	byKey          map[agentKey]*agent
	newest, oldest *agent
	sources        int // data sources over all agents
}

func newAgentTable(maxAgents int, idle time.Duration) agentTable {
	return agentTable{max: maxAgents, idle: idle, byKey: map[agentKey]*agent{}}
}

func (t *agentTable) len() int { return len(t.byKey) }

func (t *agentTable) get(k agentKey) *agent { return t.byKey[k] }

// add makes a new agent, the newest; when the table is full it first drops the oldest, and says
// so.
func (t *agentTable) add(k agentKey) (ag *agent, evicted bool) {
	if len(t.byKey) >= t.max && t.oldest != nil {
		t.remove(t.oldest)
		evicted = true
	}
	ag = &agent{key: k, sources: map[sourceID]*source{}}
	t.byKey[k] = ag
	t.pushNewest(ag)
	return ag, evicted
}

// heard moves ag to the front: it was just heard from.
func (t *agentTable) heard(ag *agent) {
	if t.newest == ag {
		return
	}
	t.unlink(ag)
	t.pushNewest(ag)
}

// expire drops the agents not heard from since now-idle, and returns how many.
func (t *agentTable) expire(now time.Time) int {
	n := 0
	for t.oldest != nil && now.Sub(t.oldest.lastSeen) > t.idle {
		t.remove(t.oldest)
		n++
	}
	return n
}

// each calls f for every agent.
func (t *agentTable) each(f func(*agent)) {
	for ag := t.newest; ag != nil; ag = ag.older {
		f(ag)
	}
}

func (t *agentTable) remove(ag *agent) {
	delete(t.byKey, ag.key)
	t.unlink(ag)
	t.sources -= len(ag.sources)
}

func (t *agentTable) pushNewest(ag *agent) {
	ag.newer, ag.older = nil, t.newest
	if t.newest != nil {
		t.newest.newer = ag
	}
	t.newest = ag
	if t.oldest == nil {
		t.oldest = ag
	}
}

func (t *agentTable) unlink(ag *agent) {
	if ag.newer != nil {
		ag.newer.older = ag.older
	} else {
		t.newest = ag.older
	}
	if ag.older != nil {
		ag.older.newer = ag.newer
	} else {
		t.oldest = ag.newer
	}
	ag.newer, ag.older = nil, nil
}
