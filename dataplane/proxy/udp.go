package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
)

// UDP in a tunnel.
//
// Datagrams arrive as datagrams at an Outbound end (from consumers) and, in Plain transport,
// at an Inbound end too. Each source address gets a session: its own path to the target, so
// replies find their way back. In TLS transport the Outbound end carries each session over its
// own mutual-TLS stream to the Inbound end, one frame per datagram:
//
//	frame = u16 big-endian payload length | payload
//
// The 16-bit length holds every UDP payload (at most 65,507 bytes over IPv4 and 65,527 over
// IPv6), so no datagram is ever split or truncated; a frame can never exceed
// config.MaxFramedDatagram. Each datagram keeps its boundaries end to end.
//
// Size limit: config.MaxDatagramSize (default 65535, i.e. every datagram). Each end checks every
// datagram it receives, from a UDP socket or from a frame, and drops one above the limit, whole,
// counting it in scitunnel_proxy_udp_dropped_total{reason="too_large"}; the session carries on.
// Nothing is truncated or fragmented by the tunnel. (A datagram the next hop cannot take, such as
// 65,527 bytes toward an IPv4 target, fails to send and counts as write_failed.)

// udpSessionIdle ends a UDP session that has seen no datagram either way for this long, unless
// the tunnel sets its own idle timeout. UDP has no close, so some timeout is needed.
const udpSessionIdle = 2 * time.Minute

// udpDrainIdle ends a session during the drain once it has been quiet this long: UDP never says
// it is done, so a session still exchanging datagrams is carried to the drain's deadline and a
// quiet one lets the pod stop early.
const udpDrainIdle = 3 * time.Second

// udpQueue is how many datagrams a session buffers while its path to the target is being set
// up; beyond that, datagrams are dropped and counted, as a congested router would.
const udpQueue = 1024

const maxDatagram = 65535

// datagramLoop reads datagrams on a UDP listener and hands each to its source's session.
func (p *Proxy) datagramLoop(port int, pc *net.UDPConn) {
	sessions := map[netip.AddrPort]*udpSession{}
	var mu sync.Mutex
	buf := make([]byte, maxDatagram+1)
	for {
		n, src, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				mu.Lock()
				for _, s := range sessions {
					s.close()
				}
				mu.Unlock()
				return
			}
			continue
		}
		cfg := p.cfg.Load()
		if !p.datagramFits(cfg, n) {
			continue
		}
		mu.Lock()
		s, ok := sessions[src]
		if !ok && p.noNewSessions.Load() {
			mu.Unlock()
			p.metrics.datagramDrops.WithLabelValues("draining").Inc()
			continue
		}
		if !ok {
			route, found := routeFor(cfg, port)
			if !found {
				mu.Unlock()
				continue
			}
			s = newUDPSession(p, cfg, route, port, pc, src, func(s *udpSession) {
				mu.Lock()
				if sessions[src] == s {
					delete(sessions, src)
				}
				mu.Unlock()
			})
			sessions[src] = s
		}
		mu.Unlock()
		s.enqueue(buf[:n])
	}
}

// udpSession is one consumer (or peer) address's path to the target.
type udpSession struct {
	p      *Proxy
	cfg    *config.Config
	route  config.Route
	port   int
	pc     *net.UDPConn // the listener: replies go back through it
	client netip.AddrPort

	queue     chan []byte
	done      chan struct{}
	closeOnce sync.Once
	lastSeen  time.Time
	mu        sync.Mutex
	upstream  net.Conn
}

func newUDPSession(p *Proxy, cfg *config.Config, route config.Route, port int, pc *net.UDPConn, client netip.AddrPort, onEnd func(*udpSession)) *udpSession {
	s := &udpSession{p: p, cfg: cfg, route: route, port: port, pc: pc, client: client,
		queue: make(chan []byte, udpQueue), done: make(chan struct{}), lastSeen: time.Now()}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer onEnd(s)
		s.run()
	}()
	return s
}

func (s *udpSession) enqueue(b []byte) {
	select {
	case s.queue <- append([]byte(nil), b...):
	default:
		s.p.metrics.datagramDrops.WithLabelValues("queue_full").Inc()
	}
}

func (s *udpSession) close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.mu.Lock()
		if s.upstream != nil {
			s.upstream.Close()
		}
		s.mu.Unlock()
	})
}

func (s *udpSession) touch() {
	s.mu.Lock()
	s.lastSeen = time.Now()
	s.mu.Unlock()
}

func (s *udpSession) idleFor() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Since(s.lastSeen)
}

// run opens the path to the target, then relays until the session idles out or fails.
func (s *udpSession) run() {
	ctx, cancel := context.WithTimeout(s.p.ctx, handshakeTimeout+s.cfg.DialTimeout.Duration)
	var up net.Conn
	framed := s.cfg.UDPTransport == config.UDPOverTLS // only reached at the Outbound end
	var label uint32
	if framed {
		c, st, ok := s.p.dialTarget(ctx, s.cfg, s.route.Target)
		if !ok {
			cancel()
			return
		}
		up, label = c, st.Label
	} else {
		c, err := (&net.Dialer{}).DialContext(ctx, "udp", s.route.Target)
		if err != nil {
			s.p.metrics.dialFailures.WithLabelValues(s.route.Target).Inc()
			s.p.log.Warn("dial failed", "target", s.route.Target, "err", err)
			cancel()
			return
		}
		up = c
	}
	cancel()
	s.mu.Lock()
	s.upstream = up
	s.mu.Unlock()
	select {
	case <-s.done: // closed while dialing
		up.Close()
		return
	default:
	}

	idle := udpSessionIdle
	if s.cfg.IdleTimeout.Duration > 0 {
		idle = s.cfg.IdleTimeout.Duration
	}
	local := s.pc.LocalAddr().String()
	s.p.track(s.cfg, ConnInfo{
		Protocol: "udp", Port: s.port, FlowLabel: label,
		AcceptedRemote: s.client.String(), AcceptedLocal: local,
		DialedLocal: up.LocalAddr().String(), DialedRemote: up.RemoteAddr().String(),
	}, up, up, func(toProducer, toConsumer *byteCounter) {
		go s.repliesToClient(up, framed, toConsumer)
		s.datagramsToTarget(up, framed, toProducer, idle)
	})
}

// datagramsToTarget forwards the session's queue until idle or closed.
func (s *udpSession) datagramsToTarget(up net.Conn, framed bool, cnt *byteCounter, idle time.Duration) {
	tick := time.NewTicker(min(max(idle/4, 10*time.Millisecond), 500*time.Millisecond))
	defer tick.Stop()
	defer s.close()
	var fw *frameWriter
	if framed {
		fw = &frameWriter{w: up}
	}
	for {
		select {
		case <-s.done:
			return
		case <-tick.C:
			quiet := s.idleFor()
			if quiet > idle || (s.p.noNewSessions.Load() && quiet > udpDrainIdle) {
				return
			}
		case b := <-s.queue:
			s.touch()
			var err error
			if framed {
				err = fw.write(b)
			} else {
				_, err = up.Write(b)
			}
			if err != nil {
				s.p.metrics.datagramDrops.WithLabelValues("write_failed").Inc()
				if framed { // a broken stream cannot recover
					return
				}
				continue
			}
			cnt.add(int64(len(b)))
			s.p.metrics.datagrams.WithLabelValues(dirToProducer).Inc()
		}
	}
}

// repliesToClient sends what the target answers back to the session's client address.
func (s *udpSession) repliesToClient(up net.Conn, framed bool, cnt *byteCounter) {
	defer s.close()
	buf := make([]byte, maxDatagram+1)
	var fr *frameReader
	if framed {
		fr = newFrameReader(up)
	}
	for {
		var b []byte
		var err error
		if framed {
			b, err = fr.read(buf)
		} else {
			var n int
			n, err = up.Read(buf)
			b = buf[:n]
		}
		if err != nil {
			return
		}
		s.touch()
		if !s.p.datagramFits(s.p.cfg.Load(), len(b)) {
			continue
		}
		if _, err := s.pc.WriteToUDPAddrPort(b, s.client); err != nil {
			s.p.metrics.datagramDrops.WithLabelValues("write_failed").Inc()
			continue
		}
		cnt.add(int64(len(b)))
		s.p.metrics.datagrams.WithLabelValues(dirToConsumer).Inc()
	}
}

// relayFramedToUDP is the Inbound end of UDP over TLS: frames from one mutual-TLS stream become
// datagrams to the producer, and the producer's answers become frames back.
func (p *Proxy) relayFramedToUDP(ctx context.Context, cfg *config.Config, route config.Route, port int, stream net.Conn, peerID string) {
	up, err := (&net.Dialer{}).DialContext(ctx, "udp", route.Target)
	if err != nil {
		p.metrics.dialFailures.WithLabelValues(route.Target).Inc()
		p.log.Warn("dial failed", "target", route.Target, "err", err)
		stream.Close()
		return
	}
	p.track(cfg, ConnInfo{
		Protocol: "udp", Port: port, PeerIdentity: peerID,
		AcceptedRemote: stream.RemoteAddr().String(), AcceptedLocal: stream.LocalAddr().String(),
		DialedLocal: up.LocalAddr().String(), DialedRemote: up.RemoteAddr().String(),
	}, stream, up, func(toProducer, toConsumer *byteCounter) {
		done := make(chan struct{})
		go func() { // producer -> frames
			defer close(done)
			fw := &frameWriter{w: stream}
			buf := make([]byte, maxDatagram+1)
			for {
				n, err := up.Read(buf)
				if err != nil {
					return
				}
				if !p.datagramFits(p.cfg.Load(), n) {
					continue
				}
				if err := fw.write(buf[:n]); err != nil {
					return
				}
				toConsumer.add(int64(n))
				p.metrics.datagrams.WithLabelValues(dirToConsumer).Inc()
			}
		}()
		fr := newFrameReader(stream)
		buf := make([]byte, maxDatagram+1)
		for {
			b, err := fr.read(buf)
			if err != nil {
				break
			}
			if !p.datagramFits(p.cfg.Load(), len(b)) {
				continue
			}
			if _, err := up.Write(b); err != nil {
				p.metrics.datagramDrops.WithLabelValues("write_failed").Inc()
				continue
			}
			toProducer.add(int64(len(b)))
			p.metrics.datagrams.WithLabelValues(dirToProducer).Inc()
		}
		stream.Close()
		up.Close()
		<-done
	})
}

// datagramFits reports whether a datagram is within the tunnel's size limit; one above it is
// dropped and counted.
func (p *Proxy) datagramFits(cfg *config.Config, n int) bool {
	if cfg.MaxDatagramSize > 0 && n > cfg.MaxDatagramSize {
		p.metrics.datagramDrops.WithLabelValues("too_large").Inc()
		return false
	}
	return true
}

// frameWriter writes one frame per datagram, header and payload in a single Write so a TLS
// record never splits a small datagram.
type frameWriter struct {
	w   io.Writer
	buf []byte
}

var errTooLarge = errors.New("datagram larger than a frame can carry")

func (f *frameWriter) write(b []byte) error {
	if len(b) > config.MaxFramedDatagram {
		return errTooLarge
	}
	f.buf = binary.BigEndian.AppendUint16(f.buf[:0], uint16(len(b)))
	f.buf = append(f.buf, b...)
	_, err := f.w.Write(f.buf)
	return err
}

type frameReader struct{ r *bufio.Reader }

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 128<<10)}
}

// read returns the next datagram, in buf.
func (f *frameReader) read(buf []byte) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(f.r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(f.r, buf[:n]); err != nil {
		return nil, err
	}
	return buf[:n], nil
}
