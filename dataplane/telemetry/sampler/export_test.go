package sampler

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
)

// secret is payload that must not leave the pod with TransportHeadersOnly.
var secret = bytes.Repeat([]byte("SCIENCE-DATA!"), 8)

// tcp6Frame is Ethernet + 802.1Q + IPv6 + a hop-by-hop header + TCP with 12 bytes of options,
// then payload.
func tcp6Frame(payload []byte) []byte {
	b := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x81, 0x00, 0, 7, 0x86, 0xDD}
	ip := make([]byte, 40)
	binary.BigEndian.PutUint32(ip, 6<<28|0x10024)
	binary.BigEndian.PutUint16(ip[4:], uint16(8+32+len(payload)))
	ip[6], ip[7] = 0, 64 // next: hop-by-hop
	copy(ip[8:], netip.MustParseAddr("fd00::1").AsSlice())
	copy(ip[24:], netip.MustParseAddr("fd00::2").AsSlice())
	hbh := []byte{6, 0, 1, 4, 0, 0, 0, 0} // next: TCP; PadN
	tcp := make([]byte, 32)
	binary.BigEndian.PutUint16(tcp, 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	tcp[12] = 8 << 4 // data offset: 32 bytes
	return append(append(append(append(b, ip...), hbh...), tcp...), payload...)
}

// udp4Frame is Ethernet + IPv4 with options + UDP, then payload.
func udp4Frame(payload []byte) []byte {
	b := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00}
	ip := make([]byte, 24)
	ip[0], ip[8], ip[9] = 0x46, 64, 17
	copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	udp := []byte{0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 0}
	return append(append(append(b, ip...), udp...), payload...)
}

// exported runs one sampled frame through the exporter and returns the datagram it builds.
func exported(t *testing.T, transportOnly bool, frame []byte) []byte {
	t.Helper()
	s := &Sampler{cfg: Config{SamplingRate: 10, TransportHeadersOnly: transportOnly, AgentAddress: netip.MustParseAddr("fd00::1")}, log: slog.Default()}
	e := exporter{s: s}
	src := &dataSource{sock: &socket{iface: net.Interface{Index: 3, Name: "eth0"}}}
	e.flow(sample{src, packet{protocol: sflow.HeaderEthernet, frameLength: uint32(len(frame)), header: frame}})
	return append([]byte(nil), e.w.Bytes()...)
}

// TestTransportHeadersOnly: with the setting, no payload byte is in the datagram, and the
// headers the analyzer needs (addresses, ports, flow label) are whole.
func TestTransportHeadersOnly(t *testing.T) {
	for name, c := range map[string]struct {
		frame   []byte
		headers int
	}{
		"IPv6/TCP": {tcp6Frame(secret), 18 + 40 + 8 + 32},
		"IPv4/UDP": {udp4Frame(secret), 14 + 24 + 8},
	} {
		if dg := exported(t, false, c.frame); !bytes.Contains(dg, secret[:32]) {
			t.Fatalf("%s: the full header should carry payload (the test's control)", name)
		}
		dg := exported(t, true, c.frame)
		if i := bytes.Index(dg, secret[:4]); i >= 0 {
			t.Errorf("%s: payload exported at datagram byte %d", name, i)
		}
		var d sflow.Decoder
		got, err := d.Decode(dg)
		if err != nil {
			t.Fatal(err)
		}
		h := got.FlowSamples[0].Headers[0]
		if len(h.Header) != c.headers || int(h.FrameLength) != len(c.frame) {
			t.Errorf("%s: header %d bytes of a %d-byte frame, want %d of %d", name, len(h.Header), h.FrameLength, c.headers, len(c.frame))
		}
		if p, ok := sflow.ParsePacket(h.Protocol, h.Header); !ok || !p.HasPorts || p.DstPort != 5201 {
			t.Errorf("%s: the cut header no longer parses: %+v", name, p)
		}
	}
}
