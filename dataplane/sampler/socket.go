package sampler

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/scitunnel/scitunnel/dataplane/sflow"
)

// ErrNoNetRaw: opening an AF_PACKET socket needs CAP_NET_RAW.
var ErrNoNetRaw = errors.New("AF_PACKET sockets need CAP_NET_RAW")

// socket is one interface's AF_PACKET socket with the sampling filter attached. It is written
// against golang.org/x/sys/unix rather than a packet-socket library because it needs what those
// do not expose: the packet's direction (sll_pkttype) and its original length before truncation
// (PACKET_AUXDATA's tp_len), which is what keeps offload super-frames weighted right.
type socket struct {
	iface    net.Interface
	loopback bool
	file     *os.File
	rc       syscall.RawConn
}

// packet is one sampled packet as the kernel hands it over.
type packet struct {
	header      []byte // the first snaplen bytes (copied)
	frameLength uint32 // the original length
	protocol    uint32 // sFlow header protocol
	outgoing    bool
}

// receiveBuffer is the socket queue asked for.
const receiveBuffer = 8 << 20

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openSocket opens, filters and binds the socket. The socket is created with protocol 0 and
// bound to ETH_P_ALL only once the filter is attached, so no unfiltered packet is ever queued.
func openSocket(iface net.Interface, rate, snaplen uint32) (*socket, error) {
	loopback := iface.Flags&net.FlagLoopback != 0
	prog, err := Filter(rate, snaplen, loopback)
	if err != nil {
		return nil, err
	}
	fd, err := withNetRaw(func() (int, error) {
		return unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	})
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("%w: %v", ErrNoNetRaw, err)
		}
		return nil, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	fail := func(what string, err error) (*socket, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s on %s: %w", what, iface.Name, err)
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}); err != nil {
		return fail("attaching the sampling filter", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		return fail("PACKET_AUXDATA", err)
	}
	if loopback {
		// Loopback hands every packet to the taps twice, on the way out and on the way in. The
		// filter drops the outgoing copy, but the kernel clones each outgoing packet for a tap
		// before any filter runs; PACKET_IGNORE_OUTGOING (Linux 4.20) spares those clones.
		// Older kernels refuse it and the filter alone keeps the count right.
		_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	}
	// The queue is charged the full size of each sampled packet (a clone of a 64 KiB
	// super-frame costs 64 KiB however little of it is copied out), so ask for room: past the
	// rmem_max limit when permitted (CAP_NET_ADMIN), else up to it.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, receiveBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, receiveBuffer)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: iface.Index}); err != nil {
		return fail("bind", err)
	}
	// A non-blocking descriptor wrapped in an os.File is served by Go's poller, so Close wakes
	// a blocked read.
	file := os.NewFile(uintptr(fd), "packet:"+iface.Name)
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, err
	}
	return &socket{iface: iface, loopback: loopback, file: file, rc: rc}, nil
}

func (s *socket) Close() error { return s.file.Close() }

// read waits for the next sampled packet. buf must hold snaplen bytes.
func (s *socket) read(buf, oob []byte) (packet, error) {
	var (
		n, oobn int
		from    unix.Sockaddr
		rerr    error
	)
	err := s.rc.Read(func(fd uintptr) bool {
		n, oobn, _, from, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
		return rerr != unix.EAGAIN && rerr != unix.EINTR
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return packet{}, err
	}
	ll, _ := from.(*unix.SockaddrLinklayer)
	if ll == nil {
		return packet{}, errors.New("recvmsg returned no link-layer address")
	}
	p := packet{frameLength: uint32(n), outgoing: ll.Pkttype == unix.PACKET_OUTGOING}
	p.protocol = headerProtocol(ll.Hatype, ll.Protocol)
	aux, ok := auxdata(oob[:oobn])
	if ok {
		p.frameLength = aux.Len
	}
	hdr := buf[:n]
	if ok && aux.Status&unix.TP_STATUS_VLAN_VALID != 0 && p.protocol == sflow.HeaderEthernet && n >= 12 {
		// The NIC took the 802.1Q tag off: put it back, so the header (and length) is the frame
		// as it was on the wire.
		tpid := uint16(0x8100)
		if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
			tpid = aux.Vlan_tpid
		}
		hdr = insertVLAN(hdr, tpid, aux.Vlan_tci, len(buf))
		p.frameLength += 4
	}
	p.header = append([]byte(nil), hdr...)
	return p, nil
}

// insertVLAN returns the frame with an 802.1Q tag after the MAC addresses, cut to limit bytes.
func insertVLAN(frame []byte, tpid, tci uint16, limit int) []byte {
	out := make([]byte, 0, len(frame)+4)
	out = append(out, frame[:12]...)
	out = binary.BigEndian.AppendUint16(out, tpid)
	out = binary.BigEndian.AppendUint16(out, tci)
	out = append(out, frame[12:]...)
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

// headerProtocol maps the device's link type to sFlow's header protocol: devices with an
// Ethernet header (and loopback, which has a zeroed one) give Ethernet; devices without a link
// header (tunnels, WireGuard) give the raw IP packet.
func headerProtocol(hatype uint16, proto uint16) uint32 {
	switch hatype {
	case unix.ARPHRD_ETHER, unix.ARPHRD_LOOPBACK:
		return sflow.HeaderEthernet
	}
	switch htons(proto) {
	case unix.ETH_P_IP:
		return sflow.HeaderIPv4
	case unix.ETH_P_IPV6:
		return sflow.HeaderIPv6
	}
	return 0
}

// auxdata finds PACKET_AUXDATA among the control messages.
func auxdata(oob []byte) (unix.TpacketAuxdata, bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break
		}
		if h.Level == unix.SOL_PACKET && h.Type == unix.PACKET_AUXDATA && l >= unix.CmsgLen(sizeofAuxdata) {
			return *(*unix.TpacketAuxdata)(unsafe.Pointer(&oob[unix.CmsgLen(0)])), true
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return unix.TpacketAuxdata{}, false
}

// drops reads and resets the kernel's count of sampled packets dropped because the socket's
// queue was full (PACKET_STATISTICS).
func (s *socket) drops() (uint32, error) {
	var st *unix.TpacketStats
	var gerr error
	err := s.rc.Control(func(fd uintptr) {
		st, gerr = unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
	})
	if err == nil {
		err = gerr
	}
	if err != nil {
		return 0, err
	}
	return st.Drops, nil
}

// sizeofAuxdata is the size of struct tpacket_auxdata (x/sys/unix has the type, not its size).
const sizeofAuxdata = int(unsafe.Sizeof(unix.TpacketAuxdata{}))
