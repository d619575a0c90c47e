package analyzer

import (
	"cmp"
	"encoding/binary"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/report"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

// UnknownTag names traffic without a tag, or with a label that lacks the second signal.
const UnknownTag = report.UnknownTag

// FlowRate is one (source, destination, tag) estimate, the body of GET /v1/flows.
type FlowRate struct {
	Src          string `json:"src"`
	Dst          string `json:"dst"`
	Tag          string `json:"tag"`
	ExperimentID int    `json:"experimentId"`
	ActivityID   int    `json:"activityId"`
	// Label is the last flow label seen, masked to its tag bits (0x3FEFC), in hex.
	Label         string  `json:"label,omitempty"`
	BitsPerSecond float64 `json:"bitsPerSecond"`
	// ErrorPercent is the 95% error bound of BitsPerSecond.
	ErrorPercent float64 `json:"errorPercent"`
	// Samples behind the estimate, in the window.
	Samples uint64 `json:"samples"`
	// Bytes is the estimated total since the flow was first seen.
	Bytes uint64 `json:"bytes"`
}

// FlowReport is the body of GET /v1/flows.
type FlowReport struct {
	WindowSeconds float64    `json:"windowSeconds"`
	Flows         []FlowRate `json:"flows"`
	Updated       time.Time  `json:"updated"`
}

// AgentStatus describes one sFlow agent (agent address and sub-agent) the analyzer hears.
type AgentStatus struct {
	Address      string    `json:"address"`
	SubAgentID   uint32    `json:"subAgentId"`
	Datagrams    uint64    `json:"datagrams"`
	SequenceGaps uint64    `json:"sequenceGaps"`
	OutOfOrder   uint64    `json:"outOfOrder"`
	Restarts     uint64    `json:"restarts"`
	LastSeen     time.Time `json:"lastSeen"`
}

func (a *Analyzer) tagName(k tagKey) string {
	if !k.tagged() {
		return UnknownTag
	}
	exp, act := k.ids()
	if t, ok := a.registry.Lookup(exp, act); ok {
		return t.String()
	}
	return scitag.Tag{ExperimentID: exp, ActivityID: act}.String()
}

// Tags returns the per-tag rates of the window and totals since start: the contract the
// controller reads. A tag seen once stays listed, at 0 bit/s while idle, so its total bytes do
// not vanish from the tunnel's status when its traffic pauses.
func (a *Analyzer) Tags() report.TagTotals {
	now := a.opt.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	epoch, span := a.clock.epoch(now), a.clock.span(now).Seconds()
	flows := map[tagKey]int{}
	a.flows.each(func(f *flow) {
		if _, _, c := f.sum(epoch); c > 0 {
			flows[f.key.tag]++
		}
	})
	out := report.TagTotals{WindowSeconds: a.opt.Window.Seconds(), Tags: []report.TagRate{}, Updated: a.updated}
	for i, t := range a.tags {
		if t == nil {
			continue
		}
		bytes, sq, c := t.sum(epoch)
		k := tagKey(i)
		exp, act := k.ids()
		out.Tags = append(out.Tags, report.TagRate{
			Tag: a.tagName(k), ExperimentID: exp, ActivityID: act,
			BitsPerSecond: 8 * bytes / span, ErrorPercent: errorPercent(bytes, sq),
			Bytes: uint64(t.bytes), Samples: c, Flows: flows[k],
		})
	}
	slices.SortFunc(out.Tags, func(x, y report.TagRate) int {
		return cmp.Or(cmp.Compare(y.BitsPerSecond, x.BitsPerSecond), cmp.Compare(x.Tag, y.Tag))
	})
	return out
}

// TagTotal is a tag's estimate since the analyzer started, for tests and tools.
type TagTotal struct {
	Bytes   float64
	Samples uint64
	// ErrorPercent is the 95% error bound of Bytes.
	ErrorPercent float64
}

// Totals returns every tag's cumulative estimate by name, window or not.
func (a *Analyzer) Totals() map[string]TagTotal {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]TagTotal{}
	for i, t := range a.tags {
		if t != nil {
			out[a.tagName(tagKey(i))] = TagTotal{Bytes: t.bytes, Samples: t.samples, ErrorPercent: errorPercent(t.bytes, t.sq)}
		}
	}
	return out
}

// Flows returns the (source, destination, tag) estimates of the window, fastest first, at most
// limit of them (0: all).
func (a *Analyzer) Flows(limit int) FlowReport {
	now := a.opt.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	epoch, span := a.clock.epoch(now), a.clock.span(now).Seconds()
	out := FlowReport{WindowSeconds: a.opt.Window.Seconds(), Flows: []FlowRate{}, Updated: a.updated}
	a.flows.each(func(f *flow) {
		k := f.key
		bytes, sq, c := f.sum(epoch)
		if c == 0 {
			return
		}
		exp, act := k.tag.ids()
		r := FlowRate{Src: addrString(k.src), Dst: addrString(k.dst), Tag: a.tagName(k.tag),
			ExperimentID: exp, ActivityID: act,
			BitsPerSecond: 8 * bytes / span, ErrorPercent: errorPercent(bytes, sq), Samples: c, Bytes: uint64(f.bytes)}
		if f.label != 0 {
			r.Label = scitag.FormatLabel(f.label)
		}
		out.Flows = append(out.Flows, r)
	})
	slices.SortFunc(out.Flows, func(x, y FlowRate) int {
		return cmp.Or(cmp.Compare(y.BitsPerSecond, x.BitsPerSecond), cmp.Compare(x.Src, y.Src), cmp.Compare(x.Dst, y.Dst), cmp.Compare(x.Tag, y.Tag))
	})
	if limit > 0 && len(out.Flows) > limit {
		out.Flows = out.Flows[:limit]
	}
	return out
}

func addrString(k [2]uint64) string {
	if k == ([2]uint64{}) {
		return ""
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], k[0])
	binary.BigEndian.PutUint64(b[8:], k[1])
	return netip.AddrFrom16(b).Unmap().String()
}

// Agents lists the agents heard from.
func (a *Analyzer) Agents() []AgentStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]AgentStatus, 0, a.agents.len())
	a.agents.each(func(ag *agent) {
		out = append(out, AgentStatus{Address: ag.key.addr.String(), SubAgentID: ag.key.subAgent, Datagrams: ag.datagrams,
			SequenceGaps: ag.gaps, OutOfOrder: ag.outOfOrder, Restarts: ag.restarts, LastSeen: ag.lastSeen})
	})
	slices.SortFunc(out, func(x, y AgentStatus) int {
		return cmp.Or(cmp.Compare(x.Address, y.Address), cmp.Compare(x.SubAgentID, y.SubAgentID))
	})
	return out
}

// Health returns a copy of the analyzer's counters.
func (a *Analyzer) Health() Health {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.health
	h.MalformedByReason = maps.Clone(a.health.MalformedByReason)
	return h
}
