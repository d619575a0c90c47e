// Package wire captures IPv6 TCP packets on an interface so tests can check what actually went
// on the wire (flow labels, ports, payload sizes). It needs CAP_NET_RAW; see Privileged.
package wire

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Packet is one captured IPv6 TCP segment.
type Packet struct {
	Src, Dst         netip.AddrPort
	FlowLabel        uint32
	PayloadLen       int // TCP payload bytes
	Outgoing         bool
	SYN, ACK, FINRST bool
}

// Capture records IPv6 TCP packets seen on one interface until Stop.
type Capture struct {
	fd       int
	stopping atomic.Bool
	mu       sync.Mutex
	packets  []Packet
	done     chan struct{}
	stopped  sync.Once
}

// Start opens an AF_PACKET socket (cooked) on iface and captures IPv6 TCP in the background.
// It listens to every protocol because the kernel hands outgoing packets only to ETH_P_ALL
// sockets; IPv6 is picked out afterwards. On "lo" every packet is seen twice (out and in);
// Packet.Outgoing tells them apart.
func Start(iface string) (*Capture, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, err
	}
	proto := htons(unix.ETH_P_ALL)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET socket (needs CAP_NET_RAW): %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 32<<20)
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	c := &Capture{fd: fd, done: make(chan struct{})}
	go c.loop()
	return c, nil
}

func (c *Capture) loop() {
	defer close(c.done)
	buf := make([]byte, 65536)
	for {
		n, from, err := unix.Recvfrom(c.fd, buf, unix.MSG_TRUNC)
		if err != nil {
			if (err == unix.EAGAIN || err == unix.EINTR) && !c.stopping.Load() {
				continue
			}
			return
		}
		if n > len(buf) {
			n = len(buf)
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		if ll == nil || ll.Protocol != htons(unix.ETH_P_IPV6) {
			continue
		}
		if p, ok := parse(buf[:n]); ok {
			p.Outgoing = ll.Pkttype == unix.PACKET_OUTGOING
			c.mu.Lock()
			c.packets = append(c.packets, p)
			c.mu.Unlock()
		}
	}
}

// Stop ends the capture and returns every packet captured.
func (c *Capture) Stop() []Packet {
	c.stopped.Do(func() {
		// Let in-flight packets reach the socket before closing it.
		time.Sleep(100 * time.Millisecond)
		c.stopping.Store(true)
		<-c.done // the loop notices within its 50 ms receive timeout
		unix.Close(c.fd)
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Packet(nil), c.packets...)
}

func parse(b []byte) (Packet, bool) {
	if len(b) < 40 || b[0]>>4 != 6 {
		return Packet{}, false
	}
	label := binary.BigEndian.Uint32(b[0:4]) & 0xFFFFF
	payloadLen := int(binary.BigEndian.Uint16(b[4:6]))
	next := b[6]
	src, _ := netip.AddrFromSlice(b[8:24])
	dst, _ := netip.AddrFromSlice(b[24:40])
	if next != unix.IPPROTO_TCP || len(b) < 40+20 {
		return Packet{}, false
	}
	tcp := b[40:]
	off := int(tcp[12]>>4) * 4
	flags := tcp[13]
	return Packet{
		Src:        netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2])),
		Dst:        netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4])),
		FlowLabel:  label,
		PayloadLen: payloadLen - off,
		SYN:        flags&0x02 != 0,
		ACK:        flags&0x10 != 0,
		FINRST:     flags&0x05 != 0,
	}, true
}

// Between returns the packets of one TCP connection going from a to b.
func Between(packets []Packet, a, b netip.AddrPort) []Packet {
	var out []Packet
	for _, p := range packets {
		if p.Src == a && p.Dst == b {
			out = append(out, p)
		}
	}
	return out
}

// Privileged says whether the process can capture (root). Tests that need it skip without it,
// unless SCITUNNEL_REQUIRE_PRIVILEGED=1 (CI), where they must fail instead.
func Privileged() (ok bool, why string) {
	if os.Geteuid() != 0 {
		return false, "needs root (AF_PACKET capture, network namespaces)"
	}
	return true, ""
}

// RequirePrivileged skips t (or fails it in CI) when the test cannot capture.
func RequirePrivileged(t interface {
	Helper()
	Skip(...any)
	Fatal(...any)
}) {
	t.Helper()
	if ok, why := Privileged(); !ok {
		if os.Getenv("SCITUNNEL_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal("SCITUNNEL_REQUIRE_PRIVILEGED=1 but the test cannot run: " + why)
		}
		t.Skip(why)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
