// Package analyzer is the sFlow collector of the sidecar: it decodes sFlow v5 from the in-pod
// sampler and from switches and routers, attributes every sampled packet to a scitags tag (or
// to unknown), estimates bytes per second per (source, destination, tag) and per tag over a
// sliding window with the 95% error bound beside each figure, and serves the figures as JSON
// (/v1/flows, /v1/tags: report.TagTotals, which the controller reads) and Prometheus metrics
// (/metrics, with sFlow-RT's scitag_networks_bps).
package analyzer

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/scitag"
	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
)

// Options configure an Analyzer.
type Options struct {
	// Window is the smoothing window of the rates. Default 10s.
	Window time.Duration
	// Registry names tags; default scitag.Default().
	Registry *scitag.Registry
	// AssignedTags are tags the operator assigned to this pod: a flow label decoding to one of
	// them is attributed without a firefly.
	AssignedTags []scitag.Tag
	// MaxFlows bounds the (source, destination, tag) table; samples of further flows still
	// count in the per-tag totals. Default 100000.
	MaxFlows int
	// MaxAgents bounds the agents tracked (each with its data sources): a new agent beyond it
	// replaces the one heard from longest ago. Default 1024.
	MaxAgents int
	// AgentIdle is how long an agent is remembered after its last datagram. Default 10m.
	AgentIdle time.Duration
	// AllowedAgents are the external agents (switches, routers) whose datagrams ServeSFlow
	// takes, besides the pod's own sampler (which sends from loopback). Empty: none, so another
	// pod cannot feed forged samples into the tunnel's throughput.
	AllowedAgents []netip.Prefix
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Health is the analyzer's own account of what it received.
type Health struct {
	// Datagrams decoded, and malformed ones dropped (by decode error).
	Datagrams          uint64            `json:"datagrams"`
	Malformed          uint64            `json:"malformed"`
	MalformedByReason  map[string]uint64 `json:"malformedByReason"`
	SequenceGaps       uint64            `json:"sequenceGaps"` // datagrams missing from agents' sequence numbers
	OutOfOrder         uint64            `json:"outOfOrder"`   // duplicated or reordered datagrams
	AgentRestarts      uint64            `json:"agentRestarts"`
	FlowSamples        uint64            `json:"flowSamples"`
	CounterSamples     uint64            `json:"counterSamples"`
	SkippedSamples     uint64            `json:"skippedSamples"` // unknown sample types, skipped by length
	SkippedRecords     uint64            `json:"skippedRecords"`
	InvalidSamples     uint64            `json:"invalidSamples"`      // flow samples with sampling rate 0 or without a sampled header
	LostSamples        uint64            `json:"lostSamples"`         // gaps in data sources' sample sequence numbers
	AgentDroppedSample uint64            `json:"agentDroppedSamples"` // samples agents report they dropped (the drops field)
	ReceiveDropped     uint64            `json:"receiveDropped"`      // datagrams the kernel dropped on our socket (SO_RXQ_OVFL)
	FlowsOverflow      uint64            `json:"flowsOverflow"`       // samples of flows beyond MaxFlows (counted in tag totals only)
	AgentsEvicted      uint64            `json:"agentsEvicted"`       // agents forgotten to make room for new ones (MaxAgents)
	AgentsExpired      uint64            `json:"agentsExpired"`       // agents forgotten after AgentIdle without a datagram
	Refused            uint64            `json:"refused"`             // datagrams from sources not allowed to send sFlow (ServeSFlow)
	Fireflies          uint64            `json:"fireflies"`
	FirefliesMalformed uint64            `json:"firefliesMalformed"`
}

// Analyzer holds the estimates. Its methods are safe for concurrent use.
type Analyzer struct {
	mu       sync.Mutex
	opt      Options
	registry *scitag.Registry
	assigned []bool // by tagKey
	clock    clock
	dec      sflow.Decoder
	packet   sflow.Packet // scratch

	agents agentTable
	// lastSource caches the previous sample's source: a datagram's samples mostly share one.
	lastSourceAgent *agent
	lastSourceID    sourceID
	lastSource      *source
	// lastFlow caches the previous sample's flow: consecutive samples often share one.
	lastFlowKey flowKey
	lastFlow    *flow
	flows       flowTable
	tags        []*tagState // by tagKey
	fireflies   fireflyTable
	health      Health
	updated     time.Time
	swept       int64
}

// flowKey holds addresses as machine words, so comparing keys is a few word compares
// (IPv4 addresses are stored IPv4-mapped; a non-IP sample has all zeros).
type flowKey struct {
	src, dst [2]uint64
	tag      tagKey
}

type flow struct {
	key  flowKey
	next *flow // same hash in the flowTable
	series
	bytes, sq float64
	samples   uint64
	label     uint32 // the last masked label seen
}

type tagState struct {
	series
	bytes, sq float64
	samples   uint64
}

// maxCompensatedGap: a data source's sample sequence jumping further than this is taken for a
// restart or reordering, not for lost samples to compensate.
const maxCompensatedGap = 256

// New makes an analyzer.
func New(opt Options) *Analyzer {
	if opt.Window <= 0 {
		opt.Window = 10 * time.Second
	}
	if opt.Registry == nil {
		opt.Registry = scitag.Default()
	}
	if opt.MaxFlows <= 0 {
		opt.MaxFlows = 100_000
	}
	if opt.MaxAgents <= 0 {
		opt.MaxAgents = 1024
	}
	if opt.AgentIdle <= 0 {
		opt.AgentIdle = 10 * time.Minute
	}
	if opt.Now == nil {
		// Wall time at start plus monotonic time since: one clock read per call instead of
		// time.Now's two (which showed in the per-datagram cost), and immune to clock steps.
		start := time.Now()
		opt.Now = func() time.Time { return start.Add(time.Since(start)) }
	}
	a := &Analyzer{
		opt:       opt,
		registry:  opt.Registry,
		assigned:  make([]bool, numTagKeys),
		clock:     newClock(opt.Now(), opt.Window),
		agents:    newAgentTable(opt.MaxAgents, opt.AgentIdle),
		flows:     newFlowTable(),
		tags:      make([]*tagState, numTagKeys),
		fireflies: fireflyTable{linger: opt.Window},
	}
	a.health.MalformedByReason = map[string]uint64{}
	for _, t := range opt.AssignedTags {
		a.assigned[newTagKey(t.ExperimentID, t.ActivityID)] = true
	}
	return a
}

// Window is the smoothing window.
func (a *Analyzer) Window() time.Duration { return a.opt.Window }

// Ingest decodes one sFlow datagram and folds its samples into the estimates. A malformed
// datagram is counted and otherwise ignored; the error says why.
func (a *Analyzer) Ingest(b []byte) error {
	now := a.opt.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	dg, err := a.dec.Decode(b)
	if err != nil {
		a.health.Malformed++
		a.health.MalformedByReason[malformedReason(err)]++
		return err
	}
	a.health.Datagrams++
	ag := a.trackSequence(agentKey{dg.AgentAddress, dg.SubAgentID}, dg, now)
	a.health.SkippedSamples += uint64(dg.SkippedSamples)
	a.health.CounterSamples += uint64(len(dg.CounterSamples))
	for i := range dg.CounterSamples {
		a.health.SkippedRecords += uint64(dg.CounterSamples[i].SkippedRecords)
	}
	epoch := a.clock.epoch(now)
	if epoch != a.swept {
		a.sweep(epoch, now)
	}
	for i := range dg.FlowSamples {
		s := &dg.FlowSamples[i]
		a.health.FlowSamples++
		a.health.SkippedRecords += uint64(s.SkippedRecords)
		if s.SamplingRate == 0 || len(s.Headers) == 0 {
			a.health.InvalidSamples++
			continue
		}
		weight := a.weight(ag, sourceID{s.SourceIDClass, s.SourceIDIndex}, s)
		// Several header records in one sample describe the same packet: count the first.
		h := &s.Headers[0]
		p := &a.packet
		ok := p.Parse(h.Protocol, h.Header)
		tk, label := a.attribute(p, ok, now)
		src, dst := p.AddrWords()
		bytes := float64(h.FrameLength) * weight
		a.add(flowKey{src, dst, tk}, label, epoch, bytes, varianceTerm(weight, bytes))
	}
	a.updated = now
	return nil
}

func malformedReason(err error) string {
	switch {
	case errors.Is(err, sflow.ErrVersion):
		return "version"
	case errors.Is(err, sflow.ErrAddressType):
		return "address_type"
	case errors.Is(err, sflow.ErrShort):
		return "short"
	case errors.Is(err, sflow.ErrOverrun):
		return "overrun"
	}
	return "other"
}

func (a *Analyzer) trackSequence(k agentKey, dg *sflow.Datagram, now time.Time) *agent {
	ag := a.agents.get(k)
	if ag == nil {
		var evicted bool
		if ag, evicted = a.agents.add(k); evicted {
			a.health.AgentsEvicted++
			a.lastSourceAgent, a.lastSource = nil, nil
		}
	} else {
		a.agents.heard(ag)
		switch d := dg.SequenceNumber - ag.lastSeq; {
		case d == 1:
		case d == 0 || d > 1<<31: // backwards
			if dg.Uptime < ag.lastUptime {
				ag.restarts++
				a.health.AgentRestarts++
			} else {
				ag.outOfOrder++
				a.health.OutOfOrder++
				ag.datagrams++
				ag.lastSeen = now
				return ag
			}
		default:
			ag.gaps += uint64(d - 1)
			a.health.SequenceGaps += uint64(d - 1)
		}
	}
	ag.datagrams++
	ag.lastSeq, ag.lastUptime, ag.lastSeen = dg.SequenceNumber, dg.Uptime, now
	return ag
}

// weight is how many bytes-worth of packets one sample stands for, per byte of its frame: the
// sampling rate, plus what the data source's sequence numbers and drop counter say was lost on
// the way (lost datagrams, samples the agent dropped). Charging the loss to the next sample of
// the same source keeps the estimate unbiased, since which flow a lost sample belonged to is
// independent of which flow the next one does.
func (a *Analyzer) weight(ag *agent, id sourceID, s *sflow.FlowSample) float64 {
	rate := float64(s.SamplingRate)
	src := a.lastSource
	if src == nil || a.lastSourceAgent != ag || a.lastSourceID != id {
		src = ag.sources[id]
		if src == nil {
			if a.agents.sources < 4*a.opt.MaxFlows {
				ag.sources[id] = &source{lastSeq: s.SequenceNumber, lastDrops: s.Drops}
				a.agents.sources++
			}
			return rate
		}
		a.lastSourceAgent, a.lastSourceID, a.lastSource = ag, id, src
	}
	w := rate
	if d := s.SequenceNumber - src.lastSeq; d > 1 && d <= maxCompensatedGap {
		a.health.LostSamples += uint64(d - 1)
		w = rate * float64(d)
	}
	if d := s.Drops - src.lastDrops; d > 0 && d <= maxCompensatedGap {
		a.health.AgentDroppedSample += uint64(d)
		w += rate * float64(d)
	}
	src.lastSeq, src.lastDrops = s.SequenceNumber, s.Drops
	return w
}

func (a *Analyzer) add(k flowKey, label uint32, epoch int64, bytes, sq float64) {
	t := a.tags[k.tag]
	if t == nil {
		t = &tagState{}
		a.tags[k.tag] = t
	}
	t.add(epoch, bytes, sq)
	t.bytes += bytes
	t.sq += sq
	t.samples++

	f := a.lastFlow
	if f == nil || a.lastFlowKey != k {
		var h uint64
		f, h = a.flows.get(&k)
		if f == nil {
			if a.flows.len() >= a.opt.MaxFlows {
				a.health.FlowsOverflow++
				return
			}
			f = a.flows.insert(&k, h)
		}
		a.lastFlowKey, a.lastFlow = k, f
	}
	f.add(epoch, bytes, sq)
	f.bytes += bytes
	f.sq += sq
	f.samples++
	f.label = label
}

// sweep forgets flows that left the window, expired fireflies, and idle agents.
func (a *Analyzer) sweep(epoch int64, now time.Time) {
	a.swept = epoch
	a.flows.deleteIf(func(f *flow) bool { return f.lastEpoch() <= epoch-buckets })
	a.lastFlow = nil
	a.fireflies.expire(now)
	if n := a.agents.expire(now); n > 0 {
		a.health.AgentsExpired += uint64(n)
		a.lastSourceAgent, a.lastSource = nil, nil
	}
}

// Firefly records a firefly datagram (syslog header + JSON). Malformed ones are counted.
func (a *Analyzer) Firefly(b []byte) error {
	now := a.opt.Now()
	m, err := parseFirefly(b)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		err = a.fireflies.record(m, now)
	}
	if err != nil {
		a.health.FirefliesMalformed++
		return err
	}
	a.health.Fireflies++
	return nil
}

// addReceiveDropped records datagrams the kernel dropped on the collector's socket.
func (a *Analyzer) addReceiveDropped(n uint64) {
	a.mu.Lock()
	a.health.ReceiveDropped += n
	a.mu.Unlock()
}

// SetRegistry replaces the registry that names tags (when the mounted copy changes).
func (a *Analyzer) SetRegistry(r *scitag.Registry) {
	a.mu.Lock()
	a.registry = r
	a.mu.Unlock()
}
