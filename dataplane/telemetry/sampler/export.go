package sampler

// The export side of the sampler: Run's exporter turns the readers' samples and the interface
// counters into sFlow datagrams and sends them to the collectors. Apart from sampler.go (setup
// and the read side): the two sides run in different goroutines and meet at the samples channel.

import (
	"net"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
)

// export builds and sends datagrams until the readers are done: flow samples as they come (a
// datagram goes out when full, or FlushInterval after its first sample), counter samples every
// PollingInterval.
func (s *Sampler) export(readersDone <-chan struct{}, conn *net.UDPConn) {
	e := exporter{s: s, conn: conn}
	e.resolve()
	flush := time.NewTicker(s.cfg.FlushInterval)
	defer flush.Stop()
	poll := time.NewTicker(s.cfg.PollingInterval)
	defer poll.Stop()
	resolve := time.NewTicker(time.Minute)
	defer resolve.Stop()
	e.counters() // one at start, so a collector learns the interfaces at once
	for {
		select {
		case <-readersDone:
			// Take what the readers queued last, then send it.
			for {
				select {
				case smp := <-s.samples:
					e.flow(smp)
					continue
				default:
				}
				break
			}
			e.flush()
			return
		case smp := <-s.samples:
			e.flow(smp)
		case <-flush.C:
			e.flush()
		case <-poll.C:
			e.counters()
		case <-resolve.C:
			e.resolve()
		}
	}
}

// exporter builds one datagram at a time; only export's goroutine uses it.
type exporter struct {
	s       *Sampler
	conn    *net.UDPConn
	w       sflow.Writer
	open    bool
	seq     uint32
	targets []*net.UDPAddr
}

// resolve re-resolves the collectors' addresses; when none resolves it keeps the last ones.
func (e *exporter) resolve() {
	var targets []*net.UDPAddr
	for _, c := range e.s.cfg.Collectors {
		a, err := net.ResolveUDPAddr("udp", c)
		if err != nil {
			e.s.log.Warn("sampler: collector unresolvable; will retry", "collector", c, "err", err)
			continue
		}
		targets = append(targets, a)
	}
	if len(targets) > 0 || len(e.s.cfg.Collectors) == 0 {
		e.targets = targets
	}
}

// begin starts a datagram unless one is open.
func (e *exporter) begin() {
	if !e.open {
		e.seq++
		e.w.Begin(e.s.cfg.AgentAddress, e.s.cfg.SubAgentID, e.seq, uint32(time.Since(e.s.start).Milliseconds()))
		e.open = true
	}
}

// flow adds one flow sample, sending the open datagram first when it is full.
func (e *exporter) flow(smp sample) {
	src := smp.src
	ifindex := uint32(src.sock.iface.Index)
	header := smp.pkt.header
	if e.s.cfg.TransportHeadersOnly {
		header = header[:sflow.HeadersLength(smp.pkt.protocol, header)]
	}
	fs := sflow.FlowSample{
		SequenceNumber: src.flowSeq.Add(1),
		SourceIDIndex:  ifindex,
		SamplingRate:   e.s.cfg.SamplingRate,
		SamplePool:     e.pool(src, smp.pkt.pool),
		Drops:          smp.pkt.drops,
		Input:          ifindex,
		Output:         sflow.InterfaceInternal,
		Headers: []sflow.SampledHeader{{
			Protocol:    smp.pkt.protocol,
			FrameLength: smp.pkt.frameLength,
			Header:      header,
		}},
	}
	if smp.pkt.outgoing {
		fs.Input, fs.Output = sflow.InterfaceInternal, ifindex
	}
	src.sampled.Add(1)
	e.begin()
	if !e.w.AddFlowSample(&fs) {
		e.flush()
		e.begin()
		e.w.AddFlowSample(&fs)
	}
}

// pool is the sample pool a flow sample reports: the sample's own (stampPools), kept from going
// back (collectors take a smaller pool for a counter wrap).
func (e *exporter) pool(src *dataSource, pool uint64) uint32 {
	src.poolCurrent = max(src.poolCurrent, pool)
	return uint32(src.poolCurrent)
}

// counters adds a counter sample per interface and sends them.
func (e *exporter) counters() {
	for _, src := range e.s.sources {
		src.ctrSeq++
		cs := sflow.CounterSample{
			SequenceNumber: src.ctrSeq,
			SourceIDIndex:  uint32(src.sock.iface.Index),
			HasInterface:   true,
			Interface:      interfaceCounters(src.sock.iface.Name, src.sock.iface.Index),
		}
		e.begin()
		if !e.w.AddCounterSample(&cs) {
			e.flush()
			e.begin()
			e.w.AddCounterSample(&cs)
		}
	}
	e.flush()
}

// flush sends the open datagram, if it holds samples, to every collector.
func (e *exporter) flush() {
	if !e.open || e.w.NumSamples() == 0 {
		return
	}
	b := e.w.Bytes()
	for _, t := range e.targets {
		if _, err := e.conn.WriteToUDP(b, t); err != nil {
			if e.s.sendErrs.Add(1) == 1 {
				e.s.log.Warn("sampler: sending to a collector failed", "collector", t, "err", err)
			}
		}
	}
	e.s.datagrams.Add(1)
	e.open = false
}
