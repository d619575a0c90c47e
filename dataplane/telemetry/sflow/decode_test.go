package sflow

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// ipv6TCP builds an Ethernet frame header: [VLAN tags], IPv6 with label, TCP ports.
func ipv6TCP(label uint32, vlans ...uint16) []byte {
	b := []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1}
	for _, v := range vlans {
		b = append(b, 0x81, 0x00, byte(v>>8), byte(v))
	}
	b = append(b, 0x86, 0xDD)
	ip := make([]byte, 40+20)
	binary.BigEndian.PutUint32(ip, 6<<28|label)
	binary.BigEndian.PutUint16(ip[4:], 20)
	ip[6], ip[7] = 6, 64
	copy(ip[8:], netip.MustParseAddr("fd00::1").AsSlice())
	copy(ip[24:], netip.MustParseAddr("fd00::2").AsSlice())
	binary.BigEndian.PutUint16(ip[40:], 5201)
	binary.BigEndian.PutUint16(ip[42:], 40000)
	return append(b, ip...)
}

// sampleDatagrams are encoder-built datagrams covering both agent address types, both sample
// forms, several records, counters, and hand-inserted unknown sample and record types.
func sampleDatagrams() map[string][]byte {
	out := map[string][]byte{}
	flow := FlowSample{SequenceNumber: 11, SourceIDIndex: 2, SamplingRate: 100, SamplePool: 12345, Drops: 3,
		Input: InterfaceInternal, Output: 2, Headers: []SampledHeader{
			{Protocol: HeaderEthernet, FrameLength: 65226, Header: ipv6TCP(65572)},
			{Protocol: HeaderIPv6, FrameLength: 1500, Stripped: 4, Header: ipv6TCP(65600)[14:]},
		}}
	counters := CounterSample{SequenceNumber: 5, SourceIDIndex: 2, HasInterface: true, Interface: IfCounters{
		Index: 2, Type: 6, Speed: 10e9, Direction: 1, Status: 3, InOctets: 1 << 40, InUcastPkts: 7, InMulticastPkts: 8,
		InBroadcastPkts: Unknown32, InDiscards: 1, InErrors: 2, InUnknownProtos: Unknown32, OutOctets: 1<<41 + 5,
		OutUcastPkts: 9, OutMulticastPkts: Unknown32, OutBroadcastPkts: Unknown32, OutDiscards: 3, OutErrors: 4}}

	d := Datagram{AgentAddress: netip.MustParseAddr("2001:db8::a"), SubAgentID: 1, SequenceNumber: 99, Uptime: 5000,
		FlowSamples: []FlowSample{flow}, CounterSamples: []CounterSample{counters}}
	out["ipv6-agent"] = AppendDatagram(nil, &d)

	e := flow
	e.Expanded = true
	e.SourceIDIndex = 1 << 25
	ec := counters
	ec.Expanded = true
	d4 := Datagram{AgentAddress: netip.MustParseAddr("192.0.2.7"), SequenceNumber: 1, FlowSamples: []FlowSample{e, flow}, CounterSamples: []CounterSample{ec}}
	out["expanded"] = AppendDatagram(nil, &d4)

	ip4 := []byte{0x45, 0, 0, 40, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x18, 0xC7, 0, 20, 0, 0}
	f4 := FlowSample{SequenceNumber: 1, SamplingRate: 1, SamplePool: 1, Headers: []SampledHeader{{Protocol: HeaderIPv4, FrameLength: 40, Header: ip4}}}
	out["ipv4-header"] = AppendDatagram(nil, &Datagram{AgentAddress: netip.MustParseAddr("192.0.2.8"), FlowSamples: []FlowSample{f4}})

	// An unknown enterprise sample type between two known ones, and an extended-switch record
	// (type 1001) before the sampled header.
	base := AppendDatagram(nil, &Datagram{AgentAddress: netip.MustParseAddr("192.0.2.9"), FlowSamples: []FlowSample{flow}})
	unknownSample := be.AppendUint32(be.AppendUint32(nil, 4413<<12|7), 8)
	unknownSample = append(unknownSample, 1, 2, 3, 4, 5, 6, 7, 8)
	withUnknown := append(append([]byte{}, base...), unknownSample...)
	withUnknown = append(withUnknown, AppendCounterSample(nil, &counters)...)
	be.PutUint32(withUnknown[24:], 3)
	out["unknown-sample"] = withUnknown

	rec := be.AppendUint32(be.AppendUint32(nil, 1001), 16)
	rec = append(rec, make([]byte, 16)...)
	fs := AppendFlowSample(nil, &f4)
	// Insert the record after the 32-byte compact header, bump the record count and length.
	withRec := append(append(append([]byte{}, fs[:8+32]...), rec...), fs[8+32:]...)
	be.PutUint32(withRec[4:], be.Uint32(withRec[4:])+uint32(len(rec)))
	be.PutUint32(withRec[8+28:], 2)
	hdr := AppendDatagram(nil, &Datagram{AgentAddress: netip.MustParseAddr("192.0.2.10")})
	be.PutUint32(hdr[24:], 1)
	out["unknown-record"] = append(hdr, withRec...)

	// A counter sample whose record is the Ethernet counters (type 2), which we skip.
	eth := be.AppendUint32(be.AppendUint32(nil, 2), 52)
	eth = append(eth, make([]byte, 52)...)
	cs := be.AppendUint32(be.AppendUint32(nil, SampleCounters), uint32(12+len(eth)))
	cs = be.AppendUint32(be.AppendUint32(be.AppendUint32(cs, 3), 4), 1)
	cs = append(cs, eth...)
	hdr2 := AppendDatagram(nil, &Datagram{AgentAddress: netip.MustParseAddr("192.0.2.11")})
	be.PutUint32(hdr2[24:], 1)
	out["ethernet-counters"] = append(hdr2, cs...)
	return out
}

func TestDecodeSkipsUnknownTypes(t *testing.T) {
	var d Decoder
	dg, err := d.Decode(sampleDatagrams()["unknown-sample"])
	if err != nil {
		t.Fatal(err)
	}
	if dg.SkippedSamples != 1 || len(dg.FlowSamples) != 1 || len(dg.CounterSamples) != 1 {
		t.Errorf("skipped %d, flows %d, counters %d; want 1, 1, 1", dg.SkippedSamples, len(dg.FlowSamples), len(dg.CounterSamples))
	}
	dg, err = d.Decode(sampleDatagrams()["unknown-record"])
	if err != nil {
		t.Fatal(err)
	}
	if s := dg.FlowSamples[0]; s.SkippedRecords != 1 || len(s.Headers) != 1 || s.NumRecords != 2 {
		t.Errorf("record skipping: %+v", s)
	}
	dg, err = d.Decode(sampleDatagrams()["ethernet-counters"])
	if err != nil {
		t.Fatal(err)
	}
	if s := dg.CounterSamples[0]; s.HasInterface || s.SkippedRecords != 1 {
		t.Errorf("counter record skipping: %+v", s)
	}
}

// TestRoundTrip: what the encoder writes, the decoder reads back field for field.
func TestRoundTrip(t *testing.T) {
	var d Decoder
	for name, b := range sampleDatagrams() {
		dg, err := d.Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		first := roundTripView(normalizeOurs(dg))
		again, err := d.Decode(AppendDatagram(nil, dg))
		if err != nil {
			t.Fatalf("%s re-encoded: %v", name, err)
		}
		if second := roundTripView(normalizeOurs(again)); !reflect.DeepEqual(first, second) {
			t.Errorf("%s: round trip differs:\n%+v\n%+v", name, first, second)
		}
	}
}

// roundTripView drops what the encoder does not reproduce: skipped samples and records, and the
// declared counts that included them.
func roundTripView(n normal) normal {
	n.Skipped, n.Samples = 0, 0
	for i := range n.Flows {
		n.Flows[i].Skipped, n.Flows[i].NumRecords = 0, 0
	}
	for i := range n.Counters {
		n.Counters[i].Skipped, n.Counters[i].NumRecord = 0, 0
	}
	return n
}

func TestDifferentialWithGoflow2(t *testing.T) {
	inputs := sampleDatagrams()
	inputs["vector"] = readVector(t)
	for name, b := range inputs {
		t.Run(name, func(t *testing.T) {
			// Whole datagrams must decode identically, not just agree to fail.
			var d Decoder
			if _, err := d.Decode(b); err != nil {
				t.Fatal(err)
			}
			if _, gerr, _ := goflowDecode(b); gerr != nil && name != "unknown-sample" {
				t.Fatalf("goflow2: %v", gerr)
			}
			checkOracle(t, b)
			for n := 0; n < len(b); n++ {
				checkOracle(t, b[:n])
			}
		})
	}
	// The corpus too, so a fuzz-found case stays covered by plain `go test`.
	for _, b := range readCorpus(t) {
		checkOracle(t, b)
	}
}

// TestTruncationsFail: every proper prefix of a datagram that declares its samples is malformed.
func TestTruncationsFail(t *testing.T) {
	inputs := sampleDatagrams()
	inputs["vector"] = readVector(t)
	var d Decoder
	for name, b := range inputs {
		for n := 0; n < len(b); n++ {
			if _, err := d.Decode(b[:n]); err == nil {
				// Padding after the last header is the only part a decoder may do without.
				if n < len(b)-3 {
					t.Errorf("%s truncated to %d of %d bytes decodes", name, n, len(b))
				}
			}
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	vec := readVector(t)
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte{}, vec...)) }
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"version 4":        {mutate(func(b []byte) []byte { b[3] = 4; return b }), ErrVersion},
		"address type 3":   {mutate(func(b []byte) []byte { b[7] = 3; return b }), ErrAddressType},
		"too many samples": {mutate(func(b []byte) []byte { be.PutUint32(b[24:], 2); return b }), ErrOverrun},
		"sample too long":  {mutate(func(b []byte) []byte { be.PutUint32(b[32:], 200); return b }), ErrOverrun},
		"too many records": {mutate(func(b []byte) []byte { be.PutUint32(b[36+28:], 2); return b }), ErrOverrun},
		"header too long":  {mutate(func(b []byte) []byte { be.PutUint32(b[36+32+8+12:], 77); return b }), ErrOverrun},
		"record too short": {mutate(func(b []byte) []byte { be.PutUint32(b[36+32+4:], 12); return b }), ErrShort},
		"sample too short": {mutate(func(b []byte) []byte { be.PutUint32(b[32:], 20); return b }), ErrShort},
		"empty":            {nil, ErrShort},
	}
	var d Decoder
	for name, c := range cases {
		if dg, err := d.Decode(c.b); !errors.Is(err, c.want) || dg != nil {
			t.Errorf("%s: got %v (datagram %v), want %v", name, err, dg != nil, c.want)
		}
	}
}

func TestDecodeAllocatesNothing(t *testing.T) {
	b := sampleDatagrams()["expanded"]
	var d Decoder
	if _, err := d.Decode(b); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = d.Decode(b) }); n != 0 {
		t.Errorf("Decode allocates %v times per datagram", n)
	}
}

func TestParsePacket(t *testing.T) {
	p, ok := ParsePacket(HeaderEthernet, ipv6TCP(0xD0143, 100, 200))
	if !ok || p.VLAN != 200 || p.FlowLabel != 0xD0143 || p.SrcPort != 5201 || p.DstPort != 40000 || !p.IPv6 {
		t.Errorf("QinQ IPv6: %+v %v", p, ok)
	}
	// IPv6 with a hop-by-hop and a destination options header before TCP.
	raw := ipv6TCP(65572)[14:]
	ext := []byte{60, 0, 1, 4, 0, 0, 0, 0, 6, 0, 1, 4, 0, 0, 0, 0}
	withExt := append(append(append([]byte{}, raw[:40]...), ext...), raw[40:]...)
	withExt[6] = 0
	p, ok = ParsePacket(HeaderIPv6, withExt)
	if !ok || p.Protocol != 6 || p.DstPort != 40000 || p.FlowLabel != 65572 {
		t.Errorf("extension headers: %+v %v", p, ok)
	}
	// A non-first IPv6 fragment has no ports.
	frag := append(append(append([]byte{}, raw[:40]...), 6, 0, 0, 8, 0, 0, 0, 1), raw[40:]...)
	frag[6] = 44
	if p, ok = ParsePacket(HeaderIPv6, frag); !ok || p.HasPorts || p.Protocol != 6 {
		t.Errorf("fragment: %+v %v", p, ok)
	}
	ip4 := []byte{0x45, 0, 0, 40, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x18, 0xC7}
	if p, ok = ParsePacket(HeaderIPv4, ip4); !ok || p.IPv6 || p.Src != netip.MustParseAddr("10.0.0.1") || p.DstPort != 6343 {
		t.Errorf("IPv4: %+v %v", p, ok)
	}
	// AddrWords agree with the addresses.
	for _, c := range []struct {
		proto uint32
		h     []byte
	}{{HeaderEthernet, ipv6TCP(1)}, {HeaderIPv4, ip4}} {
		p, _ := ParsePacket(c.proto, c.h)
		s, d := p.AddrWords()
		for _, w := range []struct {
			words [2]uint64
			addr  netip.Addr
		}{{s, p.Src}, {d, p.Dst}} {
			b := w.addr.As16()
			if w.words != [2]uint64{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])} {
				t.Errorf("AddrWords %x for %v", w.words, w.addr)
			}
		}
	}
	arp := append([]byte{1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6, 0x08, 0x06}, make([]byte, 28)...)
	if _, ok = ParsePacket(HeaderEthernet, arp); ok {
		t.Error("ARP parsed as IP")
	}
	if _, ok = ParsePacket(HeaderIPv6, raw[:39]); ok {
		t.Error("truncated IPv6 parsed")
	}
}

// The fuzz corpus lives in testdata/fuzz/FuzzDecode in `go test fuzz v1` format; -update-corpus
// rewrites the seed files from the vector, the sample datagrams and their truncations.
var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecode seed files")

func corpusDir() string { return filepath.Join("testdata", "fuzz", "FuzzDecode") }

func TestWriteCorpus(t *testing.T) {
	if !*updateCorpus {
		t.Skip("run with -update-corpus to rewrite the seed corpus")
	}
	seeds := map[string][]byte{}
	vec := readVector(t)
	seeds["vector"] = vec
	for _, n := range []int{0, 4, 8, 27, 28, 36, 44, 68, 84, 100, 150, 166, 167} {
		seeds[fmt.Sprintf("vector-truncated-%03d", n)] = vec[:n]
	}
	for name, b := range sampleDatagrams() {
		seeds[name] = b
		seeds[name+"-truncated-half"] = b[:len(b)/2]
	}
	if err := os.MkdirAll(corpusDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(corpusDir(), name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readCorpus reads every seed file ([]byte values only).
func readCorpus(t *testing.T) [][]byte {
	t.Helper()
	entries, err := os.ReadDir(corpusDir())
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(corpusDir(), e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var s string
		if _, err := fmt.Sscanf(string(data), "go test fuzz v1\n[]byte(%q)", &s); err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		out = append(out, []byte(s))
	}
	if len(out) == 0 {
		t.Fatal("empty corpus")
	}
	return out
}
