package sampler

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
)

// ringEntry is one packet to lay out in a synthetic ring block as the kernel does.
type ringEntry struct {
	data      []byte
	length    uint32
	status    uint32
	tci, tpid uint16
	hatype    uint16
	ethertype uint16
	pkttype   uint8
}

// blockOf lays the entries out in a block: the block descriptor, then each tpacket3_hdr with its
// sockaddr_ll and data, chained by next offsets (the last one 0, as the kernel leaves it).
func blockOf(entries []ringEntry) []byte {
	block := make([]byte, 4096)
	const first = 48 // sizeof(struct tpacket_block_desc)
	binary.NativeEndian.PutUint32(block[blockPacketsOff:], uint32(len(entries)))
	binary.NativeEndian.PutUint32(block[blockFirstOff:], first)
	off := first
	for i, e := range entries {
		h := (*unix.Tpacket3Hdr)(unsafe.Pointer(&block[off]))
		h.Mac = uint16(sockaddrOffset + unix.SizeofSockaddrLinklayer + 14) // past the address, padded
		h.Snaplen, h.Len, h.Status = uint32(len(e.data)), e.length, e.status
		h.Hv1.Vlan_tci, h.Hv1.Vlan_tpid = uint32(e.tci), e.tpid
		ll := block[off+sockaddrOffset:]
		binary.BigEndian.PutUint16(ll[2:], e.ethertype)
		binary.NativeEndian.PutUint16(ll[8:], e.hatype)
		ll[10] = e.pkttype
		copy(block[off+int(h.Mac):], e.data)
		next := (int(h.Mac) + len(e.data) + 15) &^ 15
		if i < len(entries)-1 {
			h.Next_offset = uint32(next)
		}
		off += next
	}
	return block
}

func TestWalkBlock(t *testing.T) {
	eth := bytes.Repeat([]byte{0xAA}, 12)
	eth = append(eth, 0x86, 0xDD, 0x60, 1, 2, 3)
	ip4 := []byte{0x45, 0, 0, 20}
	block := blockOf([]ringEntry{
		{data: eth, length: 65226, hatype: unix.ARPHRD_ETHER, ethertype: unix.ETH_P_IPV6, pkttype: unix.PACKET_OUTGOING},
		{data: eth, length: 1514, status: unix.TP_STATUS_VLAN_VALID | unix.TP_STATUS_VLAN_TPID_VALID, tci: 100, tpid: 0x88A8,
			hatype: unix.ARPHRD_ETHER, ethertype: unix.ETH_P_IPV6, pkttype: unix.PACKET_HOST},
		{data: ip4, length: 20, hatype: unix.ARPHRD_NONE, ethertype: unix.ETH_P_IP, pkttype: unix.PACKET_HOST},
	})
	var got []packet
	walkBlock(block, 20, func(p packet) { got = append(got, p) })
	if len(got) != 3 {
		t.Fatalf("%d packets, want 3", len(got))
	}
	if p := got[0]; !bytes.Equal(p.header, eth) || p.frameLength != 65226 || !p.outgoing || p.protocol != sflow.HeaderEthernet {
		t.Errorf("super-frame sent: %+v", p)
	}
	// The stripped tag goes back after the MAC addresses; the header stays within snaplen.
	tagged := append(append(append([]byte{}, eth[:12]...), 0x88, 0xA8, 0, 100), eth[12:16]...)
	if p := got[1]; !bytes.Equal(p.header, tagged) || p.frameLength != 1518 || p.outgoing {
		t.Errorf("VLAN frame received: %+v, want header %x", p, tagged)
	}
	if p := got[2]; !bytes.Equal(p.header, ip4) || p.protocol != sflow.HeaderIPv4 {
		t.Errorf("raw IPv4 packet: %+v", p)
	}
	clear(block) // the kernel reuses the block once it is handed back
	if !bytes.Equal(got[0].header, eth) || !bytes.Equal(got[2].header, ip4) {
		t.Error("headers were not copied out of the ring")
	}
}

// A block whose offsets point outside it yields the packets before the bad one, and no panic.
func TestWalkBlockCorrupt(t *testing.T) {
	entry := ringEntry{data: []byte{0x45, 0, 0, 20}, length: 20, hatype: unix.ARPHRD_NONE, ethertype: unix.ETH_P_IP}
	block := blockOf([]ringEntry{entry, entry})
	h := (*unix.Tpacket3Hdr)(unsafe.Pointer(&block[48]))
	h.Next_offset = 1 << 20
	n := 0
	walkBlock(block, 128, func(packet) { n++ })
	if n != 1 {
		t.Errorf("%d packets from a block whose second offset is out of range, want 1", n)
	}
	binary.NativeEndian.PutUint32(block[blockFirstOff:], 4090)
	n = 0
	walkBlock(block, 128, func(packet) { n++ })
	if n != 0 {
		t.Errorf("%d packets from a block whose first offset is out of range, want 0", n)
	}
	h.Next_offset, h.Snaplen = 0, 1<<16
	binary.NativeEndian.PutUint32(block[blockFirstOff:], 48)
	n = 0
	walkBlock(block, 128, func(packet) { n++ })
	if n != 0 {
		t.Errorf("%d packets from an entry longer than the block, want 0", n)
	}
}
