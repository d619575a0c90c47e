package sflow

import "net/netip"

// Packet is what a sampled header says about the packet it came from: addresses, the IPv6 flow
// label and the transport ports.
type Packet struct {
	Src, Dst netip.Addr
	// FlowLabel is the IPv6 flow label (20 bits); IPv4 packets have none (IPv6 false).
	FlowLabel uint32
	IPv6      bool
	// Protocol is the transport protocol (6 TCP, 17 UDP, ...), after IPv6 extension headers.
	Protocol uint8
	// SrcPort and DstPort are set for TCP, UDP, UDP-Lite and SCTP when the header reaches them
	// (and, for IPv4, in the first fragment only).
	SrcPort, DstPort uint16
	HasPorts         bool
	// VLAN is the innermost 802.1Q VLAN id, if the Ethernet frame was tagged.
	VLAN uint16

	// The addresses as two big-endian words each (IPv4 IPv4-mapped), for hashing: see AddrWords.
	srcWords, dstWords [2]uint64
}

// AddrWords returns the source and destination addresses as two 64-bit words each (IPv4
// addresses IPv4-mapped; all zeros when the header was not IP), read straight from the header:
// an analyzer keys its flow table with them without converting netip.Addr back to bytes.
func (p *Packet) AddrWords() (src, dst [2]uint64) { return p.srcWords, p.dstWords }

// Ethertypes and IP protocol numbers used while walking a header.
const (
	etherTypeIPv4   = 0x0800
	etherTypeIPv6   = 0x86DD
	etherTypeVLAN   = 0x8100
	etherTypeQinQ   = 0x88A8
	etherTypeQinQv1 = 0x9100

	protoHopByHop = 0
	protoTCP      = 6
	protoUDP      = 17
	protoRouting  = 43
	protoFragment = 44
	protoDestOpts = 60
	protoSCTP     = 132
	protoUDPLite  = 136
)

// maxVLANTags bounds the walk through stacked VLAN tags (QinQ has two).
const maxVLANTags = 4

// ParsePacket reads the addresses, flow label and ports from a sampled header of the given
// header protocol (HeaderEthernet with any VLAN tags, HeaderIPv4, HeaderIPv6). ok is false when
// the header is not IP or too short to hold the IP addresses.
func ParsePacket(protocol uint32, h []byte) (p Packet, ok bool) {
	ok = p.Parse(protocol, h)
	return p, ok
}

// Parse is ParsePacket into p, for hot loops (no copies of the result).
func (p *Packet) Parse(protocol uint32, h []byte) bool {
	*p = Packet{}
	switch protocol {
	case HeaderEthernet:
		if len(h) < 14 {
			return false
		}
		typ := uint16(h[12])<<8 | uint16(h[13])
		h = h[14:]
		for i := 0; i < maxVLANTags && (typ == etherTypeVLAN || typ == etherTypeQinQ || typ == etherTypeQinQv1); i++ {
			if len(h) < 4 {
				return false
			}
			p.VLAN = (uint16(h[0])<<8 | uint16(h[1])) & 0x0FFF
			typ = uint16(h[2])<<8 | uint16(h[3])
			h = h[4:]
		}
		switch typ {
		case etherTypeIPv4:
			return p.ipv4(h)
		case etherTypeIPv6:
			return p.ipv6(h)
		}
		return false
	case HeaderIPv4:
		return p.ipv4(h)
	case HeaderIPv6:
		return p.ipv6(h)
	}
	return false
}

func (p *Packet) ipv4(h []byte) bool {
	if len(h) < 20 || h[0]>>4 != 4 {
		return false
	}
	ihl := int(h[0]&0x0F) * 4
	p.Src = netip.AddrFrom4([4]byte(h[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(h[16:20]))
	const mapped = 0xFFFF << 32
	p.srcWords = [2]uint64{0, mapped | uint64(be.Uint32(h[12:]))}
	p.dstWords = [2]uint64{0, mapped | uint64(be.Uint32(h[16:]))}
	p.Protocol = h[9]
	fragOffset := (uint16(h[6])<<8 | uint16(h[7])) & 0x1FFF
	if ihl >= 20 && fragOffset == 0 && len(h) >= ihl {
		p.ports(h[ihl:])
	}
	return true
}

func (p *Packet) ipv6(h []byte) bool {
	if len(h) < 40 || h[0]>>4 != 6 {
		return false
	}
	p.IPv6 = true
	p.FlowLabel = (uint32(h[1])&0x0F)<<16 | uint32(h[2])<<8 | uint32(h[3])
	p.Src = netip.AddrFrom16([16]byte(h[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(h[24:40]))
	p.srcWords = [2]uint64{be.Uint64(h[8:]), be.Uint64(h[16:])}
	p.dstWords = [2]uint64{be.Uint64(h[24:]), be.Uint64(h[32:])}
	next := h[6]
	h = h[40:]
	// Walk the extension headers that may precede the transport header; a later fragment
	// carries no transport header.
	for {
		switch next {
		case protoHopByHop, protoRouting, protoDestOpts:
			if len(h) < 8 {
				p.Protocol = next
				return true
			}
			n := (int(h[1]) + 1) * 8
			if len(h) < n {
				p.Protocol = h[0]
				return true
			}
			next, h = h[0], h[n:]
			continue
		case protoFragment:
			if len(h) < 8 {
				p.Protocol = next
				return true
			}
			offset := (uint16(h[2])<<8 | uint16(h[3])) >> 3
			next, h = h[0], h[8:]
			if offset != 0 {
				p.Protocol = next
				return true
			}
			continue
		}
		break
	}
	p.Protocol = next
	p.ports(h)
	return true
}

func (p *Packet) ports(l4 []byte) {
	switch p.Protocol {
	case protoTCP, protoUDP, protoSCTP, protoUDPLite:
		if len(l4) >= 4 {
			p.SrcPort = uint16(l4[0])<<8 | uint16(l4[1])
			p.DstPort = uint16(l4[2])<<8 | uint16(l4[3])
			p.HasPorts = true
		}
	}
}
