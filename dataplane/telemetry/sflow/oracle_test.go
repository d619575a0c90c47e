package sflow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	gfsflow "github.com/netsampler/goflow2/v2/decoders/sflow"
)

// This file holds the differential test machinery: goflow2's sFlow decoder is the oracle our
// decoder is compared with (see the package comment for why we have our own).

// normal is the decoding both decoders must agree on.
type normal struct {
	Agent                          netip.Addr
	SubAgent, Seq, Uptime, Samples uint32
	Skipped                        int
	Flows                          []normalFlow
	Counters                       []normalCounter
}

type normalFlow struct {
	Expanded                                 bool
	Seq, Class, Index, Rate, Pool, Drops     uint32
	InFormat, In, OutFormat, Out, NumRecords uint32
	Headers                                  []normalHeader
	Skipped                                  int
}

type normalHeader struct {
	Protocol, FrameLength, Stripped uint32
	Header                          string
}

type normalCounter struct {
	Expanded                     bool
	Seq, Class, Index, NumRecord uint32
	If                           *IfCounters
	Skipped                      int
}

func normalizeOurs(dg *Datagram) normal {
	n := normal{Agent: dg.AgentAddress, SubAgent: dg.SubAgentID, Seq: dg.SequenceNumber, Uptime: dg.Uptime,
		Samples: dg.NumSamples, Skipped: dg.SkippedSamples}
	for _, s := range dg.FlowSamples {
		f := normalFlow{Expanded: s.Expanded, Seq: s.SequenceNumber, Class: s.SourceIDClass, Index: s.SourceIDIndex,
			Rate: s.SamplingRate, Pool: s.SamplePool, Drops: s.Drops, InFormat: s.InputFormat, In: s.Input,
			OutFormat: s.OutputFormat, Out: s.Output, NumRecords: s.NumRecords, Skipped: s.SkippedRecords}
		for _, h := range s.Headers {
			f.Headers = append(f.Headers, normalHeader{h.Protocol, h.FrameLength, h.Stripped, string(h.Header)})
		}
		n.Flows = append(n.Flows, f)
	}
	for _, s := range dg.CounterSamples {
		c := normalCounter{Expanded: s.Expanded, Seq: s.SequenceNumber, Class: s.SourceIDClass, Index: s.SourceIDIndex,
			NumRecord: s.NumRecords, Skipped: s.SkippedRecords}
		if s.HasInterface {
			ifc := s.Interface
			c.If = &ifc
		}
		n.Counters = append(n.Counters, c)
	}
	return n
}

func normalizeGoflow(p *gfsflow.Packet) normal {
	agent, _ := netip.AddrFromSlice(p.AgentIP)
	n := normal{Agent: agent, SubAgent: p.SubAgentId, Seq: p.SequenceNumber, Uptime: p.Uptime, Samples: p.SamplesCount}
	flowRecords := func(f *normalFlow, records []gfsflow.FlowRecord) {
		for _, r := range records {
			if h, ok := r.Data.(gfsflow.SampledHeader); ok {
				// goflow2 keeps the header length in OriginalLength and the XDR padding in HeaderData.
				f.Headers = append(f.Headers, normalHeader{h.Protocol, h.FrameLength, h.Stripped, string(h.HeaderData[:h.OriginalLength])})
			} else {
				f.Skipped++
			}
		}
	}
	for _, s := range p.Samples {
		switch s := s.(type) {
		case gfsflow.FlowSample:
			f := normalFlow{Seq: s.Header.SampleSequenceNumber, Class: s.Header.SourceIdType, Index: s.Header.SourceIdValue,
				Rate: s.SamplingRate, Pool: s.SamplePool, Drops: s.Drops,
				InFormat: s.Input >> 30, In: s.Input & 0x3FFFFFFF, OutFormat: s.Output >> 30, Out: s.Output & 0x3FFFFFFF,
				NumRecords: s.FlowRecordsCount}
			flowRecords(&f, s.Records)
			n.Flows = append(n.Flows, f)
		case gfsflow.ExpandedFlowSample:
			f := normalFlow{Expanded: true, Seq: s.Header.SampleSequenceNumber, Class: s.Header.SourceIdType, Index: s.Header.SourceIdValue,
				Rate: s.SamplingRate, Pool: s.SamplePool, Drops: s.Drops,
				InFormat: s.InputIfFormat, In: s.InputIfValue, OutFormat: s.OutputIfFormat, Out: s.OutputIfValue,
				NumRecords: s.FlowRecordsCount}
			flowRecords(&f, s.Records)
			n.Flows = append(n.Flows, f)
		case gfsflow.CounterSample:
			c := normalCounter{Expanded: s.Header.Format == SampleExpandedCounters, Seq: s.Header.SampleSequenceNumber,
				Class: s.Header.SourceIdType, Index: s.Header.SourceIdValue, NumRecord: s.CounterRecordsCount}
			for _, r := range s.Records {
				if ifc, ok := r.Data.(gfsflow.IfCounters); ok && c.If == nil {
					c.If = &IfCounters{ifc.IfIndex, ifc.IfType, ifc.IfSpeed, ifc.IfDirection, ifc.IfStatus,
						ifc.IfInOctets, ifc.IfInUcastPkts, ifc.IfInMulticastPkts, ifc.IfInBroadcastPkts, ifc.IfInDiscards, ifc.IfInErrors, ifc.IfInUnknownProtos,
						ifc.IfOutOctets, ifc.IfOutUcastPkts, ifc.IfOutMulticastPkts, ifc.IfOutBroadcastPkts, ifc.IfOutDiscards, ifc.IfOutErrors, ifc.IfPromiscuousMode}
				} else {
					c.Skipped++
				}
			}
			n.Counters = append(n.Counters, c)
		default:
			// Drop samples (format 5): goflow2 decodes them, we skip them.
			n.Skipped++
		}
	}
	return n
}

// goflowDecode runs goflow2 on b. run is false when goflow2 cannot be run safely on b: it
// allocates an expanded flow sample's declared record count unchecked (v2.2.6), so a fuzzed
// count of 2^32-1 would exhaust memory rather than fail.
func goflowDecode(b []byte) (p gfsflow.Packet, err error, run bool) {
	if !goflowSafe(b) {
		return p, nil, false
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("goflow2 panicked: %v", r)
		}
	}()
	err = gfsflow.DecodeMessageVersion(bytes.NewBuffer(b), &p)
	return p, err, true
}

// goflowSafe walks the samples as goflow2 does, looking for expanded flow samples with more than
// 1000 records (goflow2's own cap on the other sample types).
func goflowSafe(b []byte) bool {
	u32 := binary.BigEndian.Uint32
	if len(b) < 8 {
		return true
	}
	off := 12
	if u32(b[4:]) == AddressIPv6 {
		off = 24
	}
	if len(b) < off+16 {
		return true
	}
	count := u32(b[off+12:])
	rest := b[off+16:]
	for i := uint32(0); i < count && i <= 1000 && len(rest) >= 8; i++ {
		typ, n := u32(rest), u32(rest[4:])
		if uint64(n) > uint64(len(rest)-8) {
			break
		}
		body := rest[8 : 8+n]
		if typ == SampleExpandedFlow && len(body) >= 44 && u32(body[40:]) > 1000 {
			return false
		}
		rest = rest[8+n:]
	}
	return true
}

// checkOracle compares our decoder with goflow2 on b, failing t on a divergence that is not one
// of the documented differences:
//   - we skip unknown sample types (and drop samples) by length, goflow2 fails on unknown ones;
//   - we skip record types we do not interpret, goflow2 fails when their contents are short;
//   - goflow2 caps sample and record counts at 1000;
//   - where a declared length or count overruns its container we fail (ErrOverrun) and count
//     the datagram malformed, goflow2 stops quietly and returns what it decoded before.
func checkOracle(t testing.TB, b []byte) {
	t.Helper()
	var d Decoder
	dg, err := d.Decode(b)
	gp, gerr, run := goflowDecode(b)
	if !run {
		return
	}
	if gerr != nil && strings.Contains(gerr.Error(), "panicked") {
		t.Logf("goflow2 panics on %x: %v", b, gerr)
		gerr = errors.New("goflow2 panic")
	}
	switch {
	case err == nil && gerr == nil:
		ours, theirs := normalizeOurs(dg), normalizeGoflow(&gp)
		if !reflect.DeepEqual(ours, theirs) {
			t.Fatalf("decoders disagree on %x:\nours:    %+v\ngoflow2: %+v", b, ours, theirs)
		}
	case err == nil && gerr != nil:
		if !explainedGoflowFailure(gerr, dg) {
			t.Fatalf("goflow2 fails (%v) where we decode %+v; input %x", gerr, normalizeOurs(dg), b)
		}
	case err != nil && gerr == nil:
		if !errors.Is(err, ErrOverrun) {
			t.Fatalf("we fail (%v) where goflow2 decodes %+v; input %x", err, normalizeGoflow(&gp), b)
		}
	}
}

func explainedGoflowFailure(gerr error, dg *Datagram) bool {
	if strings.Contains(gerr.Error(), "too many") {
		return true
	}
	// goflow2 reads a sample's sequence number before looking at its type, so an unknown sample
	// shorter than 4 bytes fails there.
	if strings.Contains(gerr.Error(), "header seq") && dg.SkippedSamples > 0 {
		return true
	}
	var fe *gfsflow.FlowError
	if errors.As(gerr, &fe) {
		known := fe.Format >= SampleFlow && fe.Format <= SampleExpandedCounters
		if !known {
			return dg.SkippedSamples > 0
		}
	}
	var re *gfsflow.RecordError
	if errors.As(gerr, &re) {
		// Record 1 is the one record type we decode in both flow and counter samples.
		return re.DataFormat != RecordSampledHeader
	}
	return false
}
