package analyzer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/firefly"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
)

// tagKey identifies what traffic is attributed to: a tag by ids (names are rendered late, since
// the registry renames activities), or unknown (0). Tagged keys are 1 + experiment<<6 | activity,
// a small integer, so per-tag state is an array index rather than a map lookup.
type tagKey uint16

const unknownTag tagKey = 0

// numTagKeys covers every experiment (9 bits) and activity (6 bits), plus unknown.
const numTagKeys = 1 + (scitag.MaxExperimentID+1)<<6

func newTagKey(exp, act int) tagKey { return tagKey(1 + (exp<<6 | act)) }

func (k tagKey) tagged() bool { return k != unknownTag }

// ids returns the experiment and activity ids (0, 0 for unknown).
func (k tagKey) ids() (exp, act int) {
	if k == unknownTag {
		return 0, 0
	}
	return int(k-1) >> 6, int(k-1) & 0x3F
}

// attribute decides the tag of a sampled packet. A flow label that decodes to a tag is not
// enough: Linux gives unmarked sockets random labels, and about 0.35% of them decode to a
// registered tag. So the tag must also be one the operator assigned to this pod, or the flow
// must have been announced with that tag by a firefly. Everything else is unknown.
func (a *Analyzer) attribute(p *sflow.Packet, ok bool, now time.Time) (tagKey, uint32) {
	if !ok || !p.IPv6 {
		return unknownTag, 0
	}
	masked := p.FlowLabel & scitag.Mask
	if masked == 0 {
		return unknownTag, 0
	}
	exp, act := scitag.Split(masked)
	k := newTagKey(exp, act)
	if a.assigned[k] {
		return k, masked
	}
	if a.fireflies.announced(p, k, now) {
		return k, masked
	}
	return unknownTag, masked
}

// fireflyKey is a flow's 5-tuple as announced.
type fireflyKey struct {
	proto    uint8
	src, dst netip.AddrPort
}

type fireflyEntry struct {
	tag tagKey
	// until is when the announcement stops counting: zero while the flow is running; a
	// window after its end, so the flow's last samples are still attributed.
	until   time.Time
	updated time.Time
}

// Limits of the firefly table, so a flood of announcements cannot exhaust memory.
const (
	maxFireflies = 100_000
	// fireflyIdle drops flows that never announced their end.
	fireflyIdle = 24 * time.Hour
)

// fireflyTable remembers announced flows, in both directions (data may flow either way on an
// announced connection, and with flow-label reflection both directions carry the label).
type fireflyTable struct {
	flows  map[fireflyKey]fireflyEntry
	linger time.Duration
}

func (t *fireflyTable) announced(p *sflow.Packet, k tagKey, now time.Time) bool {
	if len(t.flows) == 0 || !p.HasPorts {
		return false
	}
	e, ok := t.flows[fireflyKey{p.Protocol, netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort)}]
	return ok && e.tag == k && (e.until.IsZero() || now.Before(e.until))
}

func (t *fireflyTable) record(m *firefly.Message, now time.Time) error {
	if m.Version != 1 {
		return fmt.Errorf("firefly version %d, want 1", m.Version)
	}
	var proto uint8
	switch m.FlowID.Protocol {
	case "tcp":
		proto = 6
	case "udp":
		proto = 17
	default:
		return fmt.Errorf("firefly protocol %q", m.FlowID.Protocol)
	}
	src, err1 := netip.ParseAddr(m.FlowID.SrcIP)
	dst, err2 := netip.ParseAddr(m.FlowID.DstIP)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	if _, err := scitag.Label(m.Context.ExperimentID, m.Context.ActivityID); err != nil {
		return err
	}
	e := fireflyEntry{tag: newTagKey(m.Context.ExperimentID, m.Context.ActivityID), updated: now}
	switch m.Lifecycle.State {
	case "start", "ongoing":
	case "end":
		e.until = now.Add(t.linger)
	default:
		return fmt.Errorf("firefly state %q", m.Lifecycle.State)
	}
	a := netip.AddrPortFrom(src.Unmap(), m.FlowID.SrcPort)
	b := netip.AddrPortFrom(dst.Unmap(), m.FlowID.DstPort)
	if t.flows == nil {
		t.flows = map[fireflyKey]fireflyEntry{}
	}
	if _, known := t.flows[fireflyKey{proto, a, b}]; !known && len(t.flows) >= maxFireflies {
		return errors.New("firefly table full")
	}
	t.flows[fireflyKey{proto, a, b}] = e
	t.flows[fireflyKey{proto, b, a}] = e
	return nil
}

func (t *fireflyTable) expire(now time.Time) {
	for k, e := range t.flows {
		if (!e.until.IsZero() && now.After(e.until)) || now.Sub(e.updated) > fireflyIdle {
			delete(t.flows, k)
		}
	}
}

// parseFirefly reads a firefly: an RFC 5424 syslog header, then the JSON document. Like the
// reference collector, it refuses messages without the syslog header.
func parseFirefly(b []byte) (*firefly.Message, error) {
	if len(b) == 0 || b[0] != '<' {
		return nil, errors.New("firefly without syslog header")
	}
	i := bytes.IndexByte(b, '{')
	if i < 0 {
		return nil, errors.New("firefly without JSON body")
	}
	var m firefly.Message
	if err := json.Unmarshal(b[i:], &m); err != nil {
		return nil, fmt.Errorf("firefly JSON: %w", err)
	}
	return &m, nil
}
