package sflow

// HeadersLength is how many leading bytes of a sampled packet are headers (link, network,
// IPv6 extension and transport headers): what follows is payload. A sampler that cuts its
// sampled headers there exports addresses, ports and the flow label, and not one byte of what
// the packet carries (on an unencrypted leg, the data itself). Whatever cannot be parsed ends
// the headers where the parse stopped: an unknown EtherType after the link header, an unknown
// transport after the network headers, a later fragment after its fragment header.
func HeadersLength(protocol uint32, h []byte) int {
	n := 0
	switch protocol {
	case HeaderEthernet:
		if len(h) < 14 {
			return len(h)
		}
		typ := uint16(h[12])<<8 | uint16(h[13])
		n = 14
		for i := 0; i < maxVLANTags && (typ == etherTypeVLAN || typ == etherTypeQinQ || typ == etherTypeQinQv1); i++ {
			if len(h) < n+4 {
				return len(h)
			}
			typ = uint16(h[n+2])<<8 | uint16(h[n+3])
			n += 4
		}
		switch typ {
		case etherTypeIPv4:
			return n + ipv4HeadersLength(h[n:])
		case etherTypeIPv6:
			return n + ipv6HeadersLength(h[n:])
		}
		return n
	case HeaderIPv4:
		return ipv4HeadersLength(h)
	case HeaderIPv6:
		return ipv6HeadersLength(h)
	}
	return 0 // an unknown header protocol: nothing is known not to be payload
}

func ipv4HeadersLength(h []byte) int {
	if len(h) < 20 {
		return len(h)
	}
	ihl := min(max(int(h[0]&0x0F)*4, 20), len(h))
	if fragOffset := (uint16(h[6])<<8 | uint16(h[7])) & 0x1FFF; fragOffset != 0 {
		return ihl // a later fragment: payload from its first byte
	}
	return ihl + transportHeaderLength(h[9], h[ihl:])
}

func ipv6HeadersLength(h []byte) int {
	if len(h) < 40 {
		return len(h)
	}
	next, n := h[6], 40
	for {
		switch next {
		case protoHopByHop, protoRouting, protoDestOpts:
			if len(h) < n+8 {
				return len(h)
			}
			next, n = h[n], n+(int(h[n+1])+1)*8
			if n > len(h) {
				return len(h)
			}
			continue
		case protoFragment:
			if len(h) < n+8 {
				return len(h)
			}
			offset := (uint16(h[n+2])<<8 | uint16(h[n+3])) >> 3
			next, n = h[n], n+8
			if offset != 0 {
				return n
			}
			continue
		}
		return n + transportHeaderLength(next, h[n:])
	}
}

// transportHeaderLength is the length of the transport header at the start of l4 (cut to
// what was sampled); 0 for a protocol not known here.
func transportHeaderLength(proto uint8, l4 []byte) int {
	n := 0
	switch proto {
	case protoTCP:
		n = 20
		if len(l4) >= 13 {
			n = max(int(l4[12]>>4)*4, 20)
		}
	case protoUDP, protoUDPLite, protoICMP, protoICMPv6:
		n = 8
	case protoSCTP:
		n = 12 // the common header; chunks are payload
	}
	return min(n, len(l4))
}

const (
	protoICMP   = 1
	protoICMPv6 = 58
)
