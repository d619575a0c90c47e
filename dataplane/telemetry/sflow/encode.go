package sflow

import "net/netip"

// MaxDatagramSize keeps a datagram within one unfragmented packet on a 1500-byte path (IPv6
// and UDP headers included), as agents conventionally do.
const MaxDatagramSize = 1400

// Writer builds datagrams into a reusable buffer: Begin, then Add* while they fit, then Bytes.
// The zero value is ready; Max defaults to MaxDatagramSize.
type Writer struct {
	// Max is the largest datagram Add* will build.
	Max int

	buf     []byte
	n       uint32 // samples added
	countAt int    // offset of the sample count in buf
}

// Begin starts a datagram. An agent address that is neither IPv4 nor IPv6 is written as the
// IPv4 unspecified address.
func (w *Writer) Begin(agent netip.Addr, subAgentID, sequence, uptimeMillis uint32) {
	w.buf = w.buf[:0]
	w.n = 0
	w.buf = be.AppendUint32(w.buf, Version)
	switch {
	case agent.Is4() || agent.Is4In6():
		a := agent.Unmap().As4()
		w.buf = be.AppendUint32(w.buf, AddressIPv4)
		w.buf = append(w.buf, a[:]...)
	case agent.Is6():
		a := agent.As16()
		w.buf = be.AppendUint32(w.buf, AddressIPv6)
		w.buf = append(w.buf, a[:]...)
	default:
		w.buf = be.AppendUint32(w.buf, AddressIPv4)
		w.buf = append(w.buf, 0, 0, 0, 0)
	}
	w.buf = be.AppendUint32(w.buf, subAgentID)
	w.buf = be.AppendUint32(w.buf, sequence)
	w.buf = be.AppendUint32(w.buf, uptimeMillis)
	w.countAt = len(w.buf)
	w.buf = be.AppendUint32(w.buf, 0) // sample count, filled in by Bytes
}

// NumSamples is the number of samples added since Begin.
func (w *Writer) NumSamples() int { return int(w.n) }

// Len is the size of the datagram so far.
func (w *Writer) Len() int { return len(w.buf) }

// Bytes returns the datagram; it aliases the Writer until the next Begin.
func (w *Writer) Bytes() []byte {
	if len(w.buf) > w.countAt {
		be.PutUint32(w.buf[w.countAt:], w.n)
	}
	return w.buf
}

func (w *Writer) max() int {
	if w.Max > 0 {
		return w.Max
	}
	return MaxDatagramSize
}

// FlowSampleLen is the encoded size of a flow sample, sample header included.
func FlowSampleLen(s *FlowSample) int {
	n := 8 + 32
	if needsExpanded(s) {
		n = 8 + 44
	}
	for _, h := range s.Headers {
		n += 8 + 16 + pad4(len(h.Header))
	}
	return n
}

// CounterSampleLen is the encoded size of a counter sample, sample header included.
func CounterSampleLen(s *CounterSample) int {
	n := 8 + 12
	if needsExpandedCounters(s) {
		n = 8 + 16
	}
	if s.HasInterface {
		n += 8 + ifCountersLen
	}
	return n
}

// AddFlowSample appends s (with its Headers; other records are not written) if it fits in Max;
// it reports whether it did. The compact form is used unless s.Expanded is set or a field does
// not fit it.
func (w *Writer) AddFlowSample(s *FlowSample) bool {
	if len(w.buf)+FlowSampleLen(s) > w.max() {
		return false
	}
	w.buf = AppendFlowSample(w.buf, s)
	w.n++
	return true
}

// AddCounterSample appends s if it fits in Max and reports whether it did.
func (w *Writer) AddCounterSample(s *CounterSample) bool {
	if len(w.buf)+CounterSampleLen(s) > w.max() {
		return false
	}
	w.buf = AppendCounterSample(w.buf, s)
	w.n++
	return true
}

// AppendDatagram encodes a whole datagram, flow samples first, for tests and tools. Records
// other than sampled headers and interface counters are not written, so NumRecords is
// recomputed.
func AppendDatagram(b []byte, d *Datagram) []byte {
	w := Writer{Max: 1 << 30}
	w.Begin(d.AgentAddress, d.SubAgentID, d.SequenceNumber, d.Uptime)
	for i := range d.FlowSamples {
		w.AddFlowSample(&d.FlowSamples[i])
	}
	for i := range d.CounterSamples {
		w.AddCounterSample(&d.CounterSamples[i])
	}
	return append(b, w.Bytes()...)
}

func needsExpanded(s *FlowSample) bool {
	return s.Expanded || s.SourceIDClass > 0xFF || s.SourceIDIndex > 0xFFFFFF ||
		s.InputFormat > 3 || s.Input > 0x3FFFFFFF || s.OutputFormat > 3 || s.Output > 0x3FFFFFFF
}

func needsExpandedCounters(s *CounterSample) bool {
	return s.Expanded || s.SourceIDClass > 0xFF || s.SourceIDIndex > 0xFFFFFF
}

// AppendFlowSample encodes one flow sample with its sampled-header records.
func AppendFlowSample(b []byte, s *FlowSample) []byte {
	expanded := needsExpanded(s)
	typ := uint32(SampleFlow)
	if expanded {
		typ = SampleExpandedFlow
	}
	b = be.AppendUint32(b, typ)
	lenAt := len(b)
	b = be.AppendUint32(b, 0)
	b = be.AppendUint32(b, s.SequenceNumber)
	if expanded {
		b = be.AppendUint32(b, s.SourceIDClass)
		b = be.AppendUint32(b, s.SourceIDIndex)
	} else {
		b = be.AppendUint32(b, s.SourceIDClass<<24|s.SourceIDIndex)
	}
	b = be.AppendUint32(b, s.SamplingRate)
	b = be.AppendUint32(b, s.SamplePool)
	b = be.AppendUint32(b, s.Drops)
	if expanded {
		b = be.AppendUint32(b, s.InputFormat)
		b = be.AppendUint32(b, s.Input)
		b = be.AppendUint32(b, s.OutputFormat)
		b = be.AppendUint32(b, s.Output)
	} else {
		b = be.AppendUint32(b, s.InputFormat<<30|s.Input)
		b = be.AppendUint32(b, s.OutputFormat<<30|s.Output)
	}
	b = be.AppendUint32(b, uint32(len(s.Headers)))
	for _, h := range s.Headers {
		b = be.AppendUint32(b, RecordSampledHeader)
		b = be.AppendUint32(b, uint32(16+pad4(len(h.Header))))
		b = be.AppendUint32(b, h.Protocol)
		b = be.AppendUint32(b, h.FrameLength)
		b = be.AppendUint32(b, h.Stripped)
		b = be.AppendUint32(b, uint32(len(h.Header)))
		b = appendPadded(b, h.Header)
	}
	be.PutUint32(b[lenAt:], uint32(len(b)-lenAt-4))
	return b
}

// AppendCounterSample encodes one counter sample with its interface counters, if any.
func AppendCounterSample(b []byte, s *CounterSample) []byte {
	expanded := needsExpandedCounters(s)
	typ := uint32(SampleCounters)
	if expanded {
		typ = SampleExpandedCounters
	}
	b = be.AppendUint32(b, typ)
	lenAt := len(b)
	b = be.AppendUint32(b, 0)
	b = be.AppendUint32(b, s.SequenceNumber)
	if expanded {
		b = be.AppendUint32(b, s.SourceIDClass)
		b = be.AppendUint32(b, s.SourceIDIndex)
	} else {
		b = be.AppendUint32(b, s.SourceIDClass<<24|s.SourceIDIndex)
	}
	if !s.HasInterface {
		b = be.AppendUint32(b, 0)
	} else {
		c := &s.Interface
		b = be.AppendUint32(b, 1)
		b = be.AppendUint32(b, RecordIfCounters)
		b = be.AppendUint32(b, ifCountersLen)
		b = be.AppendUint32(b, c.Index)
		b = be.AppendUint32(b, c.Type)
		b = be.AppendUint64(b, c.Speed)
		b = be.AppendUint32(b, c.Direction)
		b = be.AppendUint32(b, c.Status)
		b = be.AppendUint64(b, c.InOctets)
		for _, v := range [...]uint32{c.InUcastPkts, c.InMulticastPkts, c.InBroadcastPkts, c.InDiscards, c.InErrors, c.InUnknownProtos} {
			b = be.AppendUint32(b, v)
		}
		b = be.AppendUint64(b, c.OutOctets)
		for _, v := range [...]uint32{c.OutUcastPkts, c.OutMulticastPkts, c.OutBroadcastPkts, c.OutDiscards, c.OutErrors, c.Promiscuous} {
			b = be.AppendUint32(b, v)
		}
	}
	be.PutUint32(b[lenAt:], uint32(len(b)-lenAt-4))
	return b
}

func pad4(n int) int { return (n + 3) &^ 3 }

func appendPadded(b, data []byte) []byte {
	b = append(b, data...)
	for i := len(data); i%4 != 0; i++ {
		b = append(b, 0)
	}
	return b
}
