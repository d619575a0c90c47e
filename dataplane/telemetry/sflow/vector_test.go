package sflow

import (
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scitunnel/scitunnel/dataplane/contract"
)

// vectorDir holds the project's shared sFlow test vector (see its SOURCE.md).
var vectorDir = filepath.Join("..", "..", "..", "test", "testdata", "sflow")

func readVector(t testing.TB) []byte {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(vectorDir, "sflow-vector.hex"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.Join(strings.Fields(string(text)), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVector checks every field of the 168-byte vector against its documented decoding.
func TestVector(t *testing.T) {
	b := readVector(t)
	if len(b) != 168 {
		t.Fatalf("vector is %d bytes, want 168", len(b))
	}
	var d Decoder
	dg, err := d.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	check("agent", dg.AgentAddress, netip.MustParseAddr("192.0.2.1"))
	check("sub-agent", dg.SubAgentID, uint32(0))
	check("datagram sequence", dg.SequenceNumber, uint32(42))
	check("uptime ms", dg.Uptime, uint32(123456))
	check("declared samples", dg.NumSamples, uint32(1))
	check("skipped samples", dg.SkippedSamples, 0)
	check("counter samples", len(dg.CounterSamples), 0)
	if len(dg.FlowSamples) != 1 {
		t.Fatalf("%d flow samples, want 1", len(dg.FlowSamples))
	}
	s := dg.FlowSamples[0]
	check("expanded", s.Expanded, false)
	check("sample sequence", s.SequenceNumber, uint32(7))
	check("source class", s.SourceIDClass, uint32(0))
	check("source index", s.SourceIDIndex, uint32(3))
	check("sampling rate", s.SamplingRate, uint32(1000))
	check("sample pool", s.SamplePool, uint32(7000))
	check("drops", s.Drops, uint32(0))
	check("input format", s.InputFormat, uint32(0))
	check("input", s.Input, uint32(3))
	check("output format", s.OutputFormat, uint32(0))
	check("output", s.Output, uint32(4))
	check("declared records", s.NumRecords, uint32(1))
	check("skipped records", s.SkippedRecords, 0)
	if len(s.Headers) != 1 {
		t.Fatalf("%d sampled headers, want 1", len(s.Headers))
	}
	h := s.Headers[0]
	check("header protocol", h.Protocol, uint32(HeaderEthernet))
	check("frame length", h.FrameLength, uint32(1498))
	check("stripped", h.Stripped, uint32(4))
	check("header length", len(h.Header), 74)

	p, ok := ParsePacket(h.Protocol, h.Header)
	if !ok {
		t.Fatal("sampled header does not parse as IP")
	}
	check("src", p.Src, netip.MustParseAddr("2001:db8::1"))
	check("dst", p.Dst, netip.MustParseAddr("2001:db8::2"))
	check("ipv6", p.IPv6, true)
	check("flow label", p.FlowLabel, uint32(852291))
	check("masked label", p.FlowLabel&0x3FEFC, uint32(65600))
	check("protocol", p.Protocol, uint8(6))
	check("src port", p.SrcPort, uint16(40000))
	check("dst port", p.DstPort, uint16(443))
	check("estimated bytes", uint64(h.FrameLength)*uint64(s.SamplingRate), uint64(1498000))
}

// TestVectorPcap checks that the pcap holds the same datagram on UDP port 6343.
func TestVectorPcap(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(vectorDir, "sflow-vector.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	frames := pcapngFrames(t, data)
	if len(frames) != 1 {
		t.Fatalf("%d frames, want 1", len(frames))
	}
	port, payload := udpPayload(t, frames[0])
	if port != contract.SFlowPort {
		t.Errorf("UDP destination port %d, want %d", port, contract.SFlowPort)
	}
	if want := readVector(t); string(payload) != string(want) {
		t.Errorf("pcap payload differs from the hex vector:\n%x\n%x", payload, want)
	}
}

// pcapngFrames returns the packet data of every Enhanced Packet Block (little-endian files).
func pcapngFrames(t *testing.T, b []byte) [][]byte {
	t.Helper()
	le := binary.LittleEndian
	var frames [][]byte
	for len(b) >= 12 {
		typ, n := le.Uint32(b), int(le.Uint32(b[4:]))
		if n < 12 || n > len(b) {
			t.Fatalf("pcapng block of length %d", n)
		}
		if typ == 6 { // Enhanced Packet Block
			caplen := int(le.Uint32(b[20:]))
			frames = append(frames, b[28:28+caplen])
		}
		b = b[n:]
	}
	return frames
}

// udpPayload unwraps Ethernet + IPv6 or IPv4 + UDP.
func udpPayload(t *testing.T, f []byte) (dstPort uint16, payload []byte) {
	t.Helper()
	var l4 []byte
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x86DD:
		if f[14+6] != 17 {
			t.Fatalf("not UDP")
		}
		l4 = f[14+40:]
	case 0x0800:
		l4 = f[14+int(f[14]&0xF)*4:]
	default:
		t.Fatalf("not IP")
	}
	return binary.BigEndian.Uint16(l4[2:]), l4[8:binary.BigEndian.Uint16(l4[4:])]
}
