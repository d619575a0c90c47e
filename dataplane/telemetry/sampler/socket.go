package sampler

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
)

// ErrNoNetRaw: opening an AF_PACKET socket needs CAP_NET_RAW.
var ErrNoNetRaw = errors.New("AF_PACKET sockets need CAP_NET_RAW")

// socket is one interface's AF_PACKET socket with the sampling filter attached, receiving into a
// TPACKET_V3 ring shared with the kernel.
//
// Why a ring: a socket read per sample wakes the sidecar for every sample, and each wake-up of a
// Go process costs about 100 µs of CPU across its threads: on a busy two-core host that cost the
// tunnel 2-3% of its throughput at 1-in-1000 (bench-tunnel -sampler-toggle; the filter alone,
// at 1-in-a-million, cost nothing measurable). The kernel fills the ring's blocks and hands one
// over when it is full or ringTimeout after its first packet, so the sidecar wakes at most
// 1/ringTimeout times a second however many samples come. The kernel also copies only the
// kept bytes into the ring, rather than queueing the packet (a 64 KiB super-frame) itself.
//
// It is written against golang.org/x/sys/unix: gopacket's afpacket needs cgo, which the static
// images do not have, and the pure-Go packet libraries have no ring.
type socket struct {
	iface    net.Interface
	loopback bool
	snaplen  int
	file     *os.File
	rc       syscall.RawConn

	ring []byte // ringBlocks blocks of ringBlockSize, mapped from the kernel
	next int    // the block the kernel hands over next

	// The ring is unmapped once nothing reads it: by Close, or by serve if it is running then.
	mu      sync.Mutex
	serving bool
	closed  bool

	detached atomic.Bool // the kernel no longer adds to the ring (detach)
}

// packet is one sampled packet as the kernel hands it over.
type packet struct {
	header      []byte // the first snaplen bytes (copied)
	frameLength uint32 // the original length
	protocol    uint32 // sFlow header protocol
	outgoing    bool

	// Filled in per block by the data source (see stampPools).
	pool  uint64 // packets the interface passed until this one, since the sampler started
	drops uint32 // samples the kernel dropped until this one's block
}

// The ring's geometry. 8 blocks of 256 KiB hold about 9,000 samples of 128 bytes: at 1-in-1000
// that is a second of 9 million packets a second, more than any interface here sends.
const (
	ringBlockSize = 256 << 10
	ringBlocks    = 8
	// ringFrameSize only has to satisfy the kernel's checks: V3 packs packets back to back.
	ringFrameSize = 2048
	// ringTimeout is how long the kernel fills a block before handing it over however full.
	// A sample waits up to about two of them before it reaches a datagram (which waits up to
	// FlushInterval). At 100 ms the sidecar took 4 ms of CPU a second beside a 10 Gbit/s
	// loopback stream, at 250 ms 2 ms.
	ringTimeout = 250 * time.Millisecond
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openSocket opens, filters and binds the socket and maps its ring. The socket is created with
// protocol 0 and bound to ETH_P_ALL only once the filter is attached, so no unfiltered packet is
// ever taken.
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
	var ring []byte
	fail := func(what string, err error) (*socket, error) {
		if ring != nil {
			_ = unix.Munmap(ring)
		}
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
	if loopback {
		// Loopback hands every packet to the taps twice, on the way out and on the way in. The
		// filter drops the outgoing copy, but the kernel clones each outgoing packet for a tap
		// before any filter runs; PACKET_IGNORE_OUTGOING (Linux 4.20) spares those clones.
		// Older kernels refuse it and the filter alone keeps the count right.
		_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return fail("TPACKET_V3 (Linux 3.2)", err)
	}
	req := unix.TpacketReq3{
		Block_size: ringBlockSize, Block_nr: ringBlocks,
		Frame_size: ringFrameSize, Frame_nr: ringBlockSize / ringFrameSize * ringBlocks,
		Retire_blk_tov: uint32(ringTimeout.Milliseconds()),
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fail("the receive ring (PACKET_RX_RING)", err)
	}
	if ring, err = unix.Mmap(fd, 0, ringBlockSize*ringBlocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return fail("mapping the receive ring", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: iface.Index}); err != nil {
		return fail("bind", err)
	}
	// A non-blocking descriptor wrapped in an os.File is served by Go's poller: Close wakes a
	// waiting serve, and read deadlines work.
	file := os.NewFile(uintptr(fd), "packet:"+iface.Name)
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		_ = unix.Munmap(ring)
		return nil, err
	}
	return &socket{iface: iface, loopback: loopback, snaplen: int(snaplen), file: file, rc: rc, ring: ring}, nil
}

// Close closes the socket; a running serve returns. The ring is unmapped here, or by serve on
// its way out (the mapping keeps the kernel's socket alive until then).
func (s *socket) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.file.Close()
	if !s.serving {
		s.unmap()
	}
	return err
}

func (s *socket) unmap() {
	if s.ring != nil {
		_ = unix.Munmap(s.ring)
		s.ring = nil
	}
}

// unusedEthertype is what a stopping socket is re-bound to: IEEE 802's local experimental
// EtherType, which nothing here sends (and the filter drops all by then anyway).
const unusedEthertype = 0x88B5

// detach stops the kernel adding to the ring, for good, and makes serve take what the ring
// holds and return. A filter that keeps nothing goes first; the re-bind then moves the socket's
// hook, and the kernel waits for every receive in flight on the old one (synchronize_net), so the
// block the kernel was filling is complete and still. A stopping sidecar thus loses nothing and
// need not wait up to two ring timeouts for the kernel to hand that block over.
func (s *socket) detach() error {
	drop, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	if err != nil {
		return err
	}
	var serr error
	err = s.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: 1, Filter: &unix.SockFilter{Code: drop[0].Op, K: drop[0].K}})
		if serr == nil {
			serr = unix.Bind(int(fd), &unix.SockaddrLinklayer{Protocol: htons(unusedEthertype), Ifindex: s.iface.Index})
		}
	})
	if err = errors.Join(err, serr); err != nil {
		return err
	}
	s.detached.Store(true)
	return s.file.SetReadDeadline(time.Unix(1, 0)) // wakes serve
}

// stopAfter makes serve return once the blocks the kernel hands over within d are read: the
// fallback where detach fails. The kernel's timer hands over a block with packets in it within
// about two ring timeouts, so a longer d takes every packet sampled before the call.
func (s *socket) stopAfter(d time.Duration) {
	_ = s.file.SetReadDeadline(time.Now().Add(d))
}

// serve calls batch with the sampled packets of each block the kernel hands over, until the
// socket is closed or the stopAfter deadline passes. The slice is reused from one call to the
// next. serve is not safe to run twice at once.
func (s *socket) serve(batch func([]packet)) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.serving = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.serving = false
		if s.closed {
			s.unmap()
		}
		s.mu.Unlock()
	}()
	var packets []packet
	takeAll := func() {
		for s.userOwns(s.next) {
			packets = s.take(s.next, packets[:0])
			if len(packets) > 0 {
				batch(packets)
			}
		}
	}
	for {
		takeAll()
		// The poller's readiness survives a block handed over between the check above and
		// the wait, so none is missed.
		if err := s.rc.Read(func(uintptr) bool { return s.userOwns(s.next) }); err != nil {
			takeAll() // handed over as the deadline passed
			if s.detached.Load() {
				// The block the kernel was filling, which it no longer touches.
				if packets = s.take(s.next, packets[:0]); len(packets) > 0 {
					batch(packets)
				}
			}
			return err
		}
	}
}

// blockStatus points at block i's status word, which the kernel and the sidecar hand the block
// back and forth with (struct tpacket_block_desc, then tpacket_hdr_v1's block_status).
func (s *socket) blockStatus(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&s.ring[i*ringBlockSize+blockStatusOffset]))
}

func (s *socket) userOwns(i int) bool {
	return atomic.LoadUint32(s.blockStatus(i))&unix.TP_STATUS_USER != 0
}

// take appends block i's packets to packets and gives the block back to the kernel.
func (s *socket) take(i int, packets []packet) []packet {
	walkBlock(s.ring[i*ringBlockSize:(i+1)*ringBlockSize], s.snaplen, func(p packet) { packets = append(packets, p) })
	atomic.StoreUint32(s.blockStatus(i), unix.TP_STATUS_KERNEL)
	s.next = (i + 1) % ringBlocks
	return packets
}

// Offsets in a ring block and its packets (linux/if_packet.h).
const (
	blockStatusOffset = 8  // tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1
	blockPacketsOff   = 12 // num_pkts
	blockFirstOff     = 16 // offset_to_first_pkt
	// The sockaddr_ll follows each tpacket3_hdr at TPACKET_ALIGN(sizeof(struct tpacket3_hdr)).
	sockaddrOffset = (unix.SizeofTpacket3Hdr + 15) &^ 15
)

// walkBlock calls each for every packet in a block the kernel handed over, whose headers were
// cut to snaplen. Offsets that point outside the block end the walk: a corrupt block costs its
// samples, not the process.
func walkBlock(block []byte, snaplen int, each func(packet)) {
	n := int(binary.NativeEndian.Uint32(block[blockPacketsOff:]))
	off := int(binary.NativeEndian.Uint32(block[blockFirstOff:]))
	for range n {
		if off <= 0 || off+sockaddrOffset+unix.SizeofSockaddrLinklayer > len(block) {
			return
		}
		h := (*unix.Tpacket3Hdr)(unsafe.Pointer(&block[off]))
		start, end := off+int(h.Mac), off+int(h.Mac)+int(h.Snaplen)
		if end > len(block) || start < off+sockaddrOffset {
			return
		}
		ll := block[off+sockaddrOffset:]
		hatype := binary.NativeEndian.Uint16(ll[8:])
		ethertype := binary.BigEndian.Uint16(ll[2:])
		p := packet{frameLength: h.Len, outgoing: ll[10] == unix.PACKET_OUTGOING, protocol: headerProtocol(hatype, ethertype)}
		p.header = copyHeader(block[start:end], &p, h.Status, h.Hv1, snaplen)
		each(p)
		if h.Next_offset == 0 {
			return
		}
		off += int(h.Next_offset)
	}
}

// copyHeader copies a ring entry's bytes out of the ring (the block goes back to the kernel).
func copyHeader(data []byte, p *packet, status uint32, v unix.TpacketHdrVariant1, snaplen int) []byte {
	if status&unix.TP_STATUS_VLAN_VALID != 0 && p.protocol == sflow.HeaderEthernet && len(data) >= 12 {
		// The NIC took the 802.1Q tag off: put it back, so the header (and length) is the frame
		// as it was on the wire.
		tpid := uint16(0x8100)
		if status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
			tpid = v.Vlan_tpid
		}
		p.frameLength += 4
		return insertVLAN(data, tpid, uint16(v.Vlan_tci), snaplen)
	}
	return append([]byte(nil), data...)
}

// insertVLAN returns a copy of the frame with an 802.1Q tag after the MAC addresses, cut to
// limit bytes.
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
// header (tunnels, WireGuard) give the raw IP packet, told apart by its EtherType.
func headerProtocol(hatype, ethertype uint16) uint32 {
	switch hatype {
	case unix.ARPHRD_ETHER, unix.ARPHRD_LOOPBACK:
		return sflow.HeaderEthernet
	}
	switch ethertype {
	case unix.ETH_P_IP:
		return sflow.HeaderIPv4
	case unix.ETH_P_IPV6:
		return sflow.HeaderIPv6
	}
	return 0
}

// drops reads and resets the kernel's count of sampled packets dropped because the ring was
// full (PACKET_STATISTICS).
func (s *socket) drops() (uint32, error) {
	var st *unix.TpacketStatsV3
	var gerr error
	err := s.rc.Control(func(fd uintptr) {
		st, gerr = unix.GetsockoptTpacketStatsV3(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
	})
	if err == nil {
		err = gerr
	}
	if err != nil {
		return 0, err
	}
	return st.Drops, nil
}
