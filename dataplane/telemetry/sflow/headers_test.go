package sflow

import "testing"

func TestHeadersLength(t *testing.T) {
	ipv4 := func(proto byte, frag uint16, rest ...byte) []byte {
		h := make([]byte, 20)
		h[0], h[6], h[7], h[9] = 0x45, byte(frag>>8), byte(frag), proto
		return append(h, rest...)
	}
	payload := make([]byte, 100)
	tcp := make([]byte, 20)
	tcp[12] = 5 << 4
	for name, c := range map[string]struct {
		proto uint32
		h     []byte
		want  int
	}{
		"arp: the link header":            {HeaderEthernet, append([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x06}, payload...), 14},
		"IPv4 TCP":                        {HeaderIPv4, ipv4(6, 0, append(tcp, payload...)...), 40},
		"IPv4 later fragment":             {HeaderIPv4, ipv4(6, 0x0010, payload...), 20},
		"IPv4 unknown transport":          {HeaderIPv4, ipv4(47, 0, payload...), 20},
		"IPv4 ICMP":                       {HeaderIPv4, ipv4(1, 0, payload...), 28},
		"IPv4 cut inside TCP":             {HeaderIPv4, ipv4(6, 0, 1, 2, 3), 23},
		"IPv6 cut short":                  {HeaderIPv6, make([]byte, 30), 30},
		"unknown header protocol":         {99, payload, 0},
		"Ethernet cut in the link header": {HeaderEthernet, []byte{1, 2, 3}, 3},
	} {
		if got := HeadersLength(c.proto, c.h); got != c.want {
			t.Errorf("%s: %d, want %d", name, got, c.want)
		}
	}
}
