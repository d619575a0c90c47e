package analyzer

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// receiveBuffer is the analyzer socket's receive buffer: bursts of datagrams from many agents
// must not overflow it while a scrape holds the lock.
const receiveBuffer = 4 << 20

// ListenSFlow opens the sFlow socket. ":6343" (or "[::]:6343") listens on IPv4 and IPv6 at once.
func ListenSFlow(address string) (*net.UDPConn, error) {
	return listenUDP(address)
}

func listenUDP(address string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			// SO_RXQ_OVFL: every datagram carries the socket's drop count, so the analyzer can
			// report datagrams it never saw.
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, receiveBuffer)
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", address)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// ServeSFlow reads datagrams from conn into the analyzer until ctx is done (it then closes
// conn). Datagrams from sources it does not admit (see admits) are counted and dropped;
// malformed ones are counted and logged at debug level.
func (a *Analyzer) ServeSFlow(ctx context.Context, conn *net.UDPConn, log *slog.Logger) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	buf := make([]byte, 65536)
	oob := make([]byte, unix.CmsgSpace(4))
	var lastDrops uint32
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	for {
		n, oobn, _, from, err := conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			log.Warn("sFlow receive failed", "err", err)
			continue
		}
		if drops, ok := rxqOverflow(oob[:oobn]); ok && drops != lastDrops {
			a.addReceiveDropped(uint64(drops - lastDrops))
			lastDrops = drops
		}
		if !a.admits(from.Addr().Unmap(), local) {
			a.refuse()
			log.Debug("sFlow datagram refused: its source is not an allowed agent", "from", from, "bytes", n)
			continue
		}
		if err := a.Ingest(buf[:n]); err != nil {
			log.Debug("malformed sFlow datagram", "from", from, "bytes", n, "err", err)
		}
	}
}

// admits says whether a datagram from the address from may be ingested: it comes from the pod's
// own sampler (loopback, which no other host can forge, or the address the analyzer listens on,
// where the sampler sends when one is configured) or from an allowed agent.
func (a *Analyzer) admits(from, local netip.Addr) bool {
	if from.IsLoopback() || (from == local && !local.IsUnspecified()) {
		return true
	}
	for _, p := range a.opt.AllowedAgents {
		if p.Contains(from) {
			return true
		}
	}
	return false
}

func (a *Analyzer) refuse() {
	a.mu.Lock()
	a.health.Refused++
	a.mu.Unlock()
}

// rxqOverflow finds the SO_RXQ_OVFL drop counter among control messages without allocating.
func rxqOverflow(oob []byte) (uint32, bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && l >= unix.CmsgLen(4) {
			return binary.NativeEndian.Uint32(oob[unix.CmsgLen(0):]), true
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return 0, false
}

// ListenFireflies opens the firefly socket (scitags convention: UDP 10514).
func ListenFireflies(address string) (*net.UDPConn, error) {
	return listenUDP(address)
}

// ServeFireflies reads fireflies from conn until ctx is done (it then closes conn).
func (a *Analyzer) ServeFireflies(ctx context.Context, conn *net.UDPConn, log *slog.Logger) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	buf := make([]byte, 65536)
	for {
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			log.Warn("firefly receive failed", "err", err)
			continue
		}
		if err := a.Firefly(buf[:n]); err != nil {
			log.Debug("firefly ignored", "from", from, "err", err)
		}
	}
}
