package sflow

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Decode errors. They are sentinels, so counting malformed datagrams by kind allocates nothing.
var (
	// ErrVersion: the datagram is not sFlow version 5.
	ErrVersion = errors.New("sflow: not a version 5 datagram")
	// ErrAddressType: the agent address type is neither IPv4 nor IPv6.
	ErrAddressType = errors.New("sflow: unknown agent address type")
	// ErrShort: a structure of fixed size is cut short by the datagram, sample or record that
	// holds it.
	ErrShort = errors.New("sflow: structure cut short by its container")
	// ErrOverrun: a declared length or count reaches past the end of its container (a sample
	// longer than the rest of the datagram, more records than the sample holds, a header longer
	// than its record).
	ErrOverrun = errors.New("sflow: declared length or count overruns its container")
)

var be = binary.BigEndian

// Decoder decodes datagrams without allocating once its slices have grown to the largest
// datagram seen. It is not safe for concurrent use; use one per goroutine.
type Decoder struct {
	dg      Datagram
	headers []SampledHeader
	// first header index of each flow sample, fixed up into FlowSample.Headers at the end
	// (the headers slice may grow, and move, while later samples are decoded).
	headerStart []int
}

// Decode parses one datagram. The result aliases b and the Decoder and is valid until the next
// call. A datagram is decoded whole or not at all: on error the result is nil, so a malformed
// datagram contributes nothing.
func (d *Decoder) Decode(b []byte) (*Datagram, error) {
	dg := &d.dg
	*dg = Datagram{FlowSamples: dg.FlowSamples[:0], CounterSamples: dg.CounterSamples[:0]}
	d.headers = d.headers[:0]
	d.headerStart = d.headerStart[:0]

	if len(b) < 8 {
		return nil, ErrShort
	}
	if be.Uint32(b) != Version {
		return nil, ErrVersion
	}
	var off int
	switch be.Uint32(b[4:]) {
	case AddressIPv4:
		if len(b) < 8+4+16 {
			return nil, ErrShort
		}
		dg.AgentAddress = netip.AddrFrom4([4]byte(b[8:12]))
		off = 12
	case AddressIPv6:
		if len(b) < 8+16+16 {
			return nil, ErrShort
		}
		dg.AgentAddress = netip.AddrFrom16([16]byte(b[8:24]))
		off = 24
	default:
		return nil, ErrAddressType
	}
	dg.SubAgentID = be.Uint32(b[off:])
	dg.SequenceNumber = be.Uint32(b[off+4:])
	dg.Uptime = be.Uint32(b[off+8:])
	dg.NumSamples = be.Uint32(b[off+12:])
	rest := b[off+16:]

	for i := uint32(0); i < dg.NumSamples; i++ {
		if len(rest) < 8 {
			return nil, ErrOverrun
		}
		typ, n := be.Uint32(rest), be.Uint32(rest[4:])
		if uint64(n) > uint64(len(rest)-8) {
			return nil, ErrOverrun
		}
		body := rest[8 : 8+n]
		rest = rest[8+n:]
		var err error
		switch typ {
		case SampleFlow, SampleExpandedFlow:
			err = d.flowSample(body, typ == SampleExpandedFlow)
		case SampleCounters, SampleExpandedCounters:
			err = d.counterSample(body, typ == SampleExpandedCounters)
		default:
			dg.SkippedSamples++
		}
		if err != nil {
			return nil, err
		}
	}
	// Bytes after the declared samples are ignored, as other collectors do.

	for i := range dg.FlowSamples {
		end := len(d.headers)
		if i+1 < len(d.headerStart) {
			end = d.headerStart[i+1]
		}
		dg.FlowSamples[i].Headers = d.headers[d.headerStart[i]:end:end]
	}
	return dg, nil
}

func (d *Decoder) flowSample(b []byte, expanded bool) error {
	var s FlowSample
	s.Expanded = expanded
	var rest []byte
	if expanded {
		if len(b) < 44 {
			return ErrShort
		}
		s.SequenceNumber = be.Uint32(b)
		s.SourceIDClass = be.Uint32(b[4:])
		s.SourceIDIndex = be.Uint32(b[8:])
		s.SamplingRate = be.Uint32(b[12:])
		s.SamplePool = be.Uint32(b[16:])
		s.Drops = be.Uint32(b[20:])
		s.InputFormat = be.Uint32(b[24:])
		s.Input = be.Uint32(b[28:])
		s.OutputFormat = be.Uint32(b[32:])
		s.Output = be.Uint32(b[36:])
		s.NumRecords = be.Uint32(b[40:])
		rest = b[44:]
	} else {
		if len(b) < 32 {
			return ErrShort
		}
		s.SequenceNumber = be.Uint32(b)
		src := be.Uint32(b[4:])
		s.SourceIDClass, s.SourceIDIndex = src>>24, src&0xFFFFFF
		s.SamplingRate = be.Uint32(b[8:])
		s.SamplePool = be.Uint32(b[12:])
		s.Drops = be.Uint32(b[16:])
		in, out := be.Uint32(b[20:]), be.Uint32(b[24:])
		s.InputFormat, s.Input = in>>30, in&0x3FFFFFFF
		s.OutputFormat, s.Output = out>>30, out&0x3FFFFFFF
		s.NumRecords = be.Uint32(b[28:])
		rest = b[32:]
	}
	d.headerStart = append(d.headerStart, len(d.headers))
	for i := uint32(0); i < s.NumRecords; i++ {
		if len(rest) < 8 {
			return ErrOverrun
		}
		typ, n := be.Uint32(rest), be.Uint32(rest[4:])
		if uint64(n) > uint64(len(rest)-8) {
			return ErrOverrun
		}
		rec := rest[8 : 8+n]
		rest = rest[8+n:]
		if typ != RecordSampledHeader {
			s.SkippedRecords++
			continue
		}
		if len(rec) < 16 {
			return ErrShort
		}
		h := SampledHeader{
			Protocol:    be.Uint32(rec),
			FrameLength: be.Uint32(rec[4:]),
			Stripped:    be.Uint32(rec[8:]),
		}
		hl := be.Uint32(rec[12:])
		if uint64(hl) > uint64(len(rec)-16) {
			return ErrOverrun
		}
		h.Header = rec[16 : 16+hl : 16+hl]
		d.headers = append(d.headers, h)
	}
	d.dg.FlowSamples = append(d.dg.FlowSamples, s)
	return nil
}

func (d *Decoder) counterSample(b []byte, expanded bool) error {
	var s CounterSample
	s.Expanded = expanded
	var rest []byte
	if expanded {
		if len(b) < 16 {
			return ErrShort
		}
		s.SequenceNumber = be.Uint32(b)
		s.SourceIDClass = be.Uint32(b[4:])
		s.SourceIDIndex = be.Uint32(b[8:])
		s.NumRecords = be.Uint32(b[12:])
		rest = b[16:]
	} else {
		if len(b) < 12 {
			return ErrShort
		}
		s.SequenceNumber = be.Uint32(b)
		src := be.Uint32(b[4:])
		s.SourceIDClass, s.SourceIDIndex = src>>24, src&0xFFFFFF
		s.NumRecords = be.Uint32(b[8:])
		rest = b[12:]
	}
	for i := uint32(0); i < s.NumRecords; i++ {
		if len(rest) < 8 {
			return ErrOverrun
		}
		typ, n := be.Uint32(rest), be.Uint32(rest[4:])
		if uint64(n) > uint64(len(rest)-8) {
			return ErrOverrun
		}
		rec := rest[8 : 8+n]
		rest = rest[8+n:]
		if typ != RecordIfCounters {
			s.SkippedRecords++
			continue
		}
		if len(rec) < ifCountersLen {
			return ErrShort
		}
		if s.HasInterface {
			s.SkippedRecords++
			continue
		}
		s.Interface = decodeIfCounters(rec)
		s.HasInterface = true
	}
	d.dg.CounterSamples = append(d.dg.CounterSamples, s)
	return nil
}

func decodeIfCounters(b []byte) IfCounters {
	return IfCounters{
		Index:            be.Uint32(b),
		Type:             be.Uint32(b[4:]),
		Speed:            be.Uint64(b[8:]),
		Direction:        be.Uint32(b[16:]),
		Status:           be.Uint32(b[20:]),
		InOctets:         be.Uint64(b[24:]),
		InUcastPkts:      be.Uint32(b[32:]),
		InMulticastPkts:  be.Uint32(b[36:]),
		InBroadcastPkts:  be.Uint32(b[40:]),
		InDiscards:       be.Uint32(b[44:]),
		InErrors:         be.Uint32(b[48:]),
		InUnknownProtos:  be.Uint32(b[52:]),
		OutOctets:        be.Uint64(b[56:]),
		OutUcastPkts:     be.Uint32(b[64:]),
		OutMulticastPkts: be.Uint32(b[68:]),
		OutBroadcastPkts: be.Uint32(b[72:]),
		OutDiscards:      be.Uint32(b[76:]),
		OutErrors:        be.Uint32(b[80:]),
		Promiscuous:      be.Uint32(b[84:]),
	}
}
