package proxy

import (
	"context"
	"errors"
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
//
// Floods: the sessions of a listener and of one source IP, and the bytes a session queues, are
// capped (config.Limits, udplimits.go); the Inbound end of UDP over TLS closes a stream quiet
// for the idle timeout, as the Outbound end ends its session.

// udpSessionIdle ends a UDP session that has seen no datagram either way for this long, unless
// the tunnel sets its own idle timeout. UDP has no close, so some timeout is needed.
const udpSessionIdle = 2 * time.Minute

// udpDrainIdle ends a session during the drain once it has been quiet this long: UDP never says
// it is done, so a session still exchanging datagrams is carried to the drain's deadline and a
// quiet one lets the pod stop early.
const udpDrainIdle = 3 * time.Second

const maxDatagram = 65535

// datagramLoop reads datagrams on a UDP listener and hands each to its source's session.
func (p *Proxy) datagramLoop(port int, pc *net.UDPConn) {
	sessions := newUDPSessions()
	buf := make([]byte, maxDatagram+1)
	for {
		n, src, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				sessions.closeAll()
				return
			}
			continue
		}
		cfg := p.cfg.Load()
		if !p.datagramFits(cfg, n) {
			continue
		}
		adm := admission{limits: cfg.Limits.WithDefaults(), perSource: cfg.Role == config.Outbound, draining: p.noNewSessions.Load()}
		s, dropped := sessions.get(src, adm, func() *udpSession {
			route, found := routeFor(cfg, port)
			if !found {
				return nil
			}
			return newUDPSession(p, cfg, route, port, pc, src, func(s *udpSession) { sessions.remove(src, s) })
		})
		if dropped != "" {
			p.metrics.datagramDrops.WithLabelValues(dropped).Inc()
		}
		if s != nil {
			s.enqueue(buf[:n])
		}
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

	queue     *datagramQueue
	done      chan struct{}
	closeOnce sync.Once
	lastSeen  time.Time
	mu        sync.Mutex
	upstream  net.Conn
}

func newUDPSession(p *Proxy, cfg *config.Config, route config.Route, port int, pc *net.UDPConn, client netip.AddrPort, onEnd func(*udpSession)) *udpSession {
	s := &udpSession{p: p, cfg: cfg, route: route, port: port, pc: pc, client: client,
		queue: newDatagramQueue(cfg.Limits.WithDefaults().UDPQueueBytes), done: make(chan struct{}), lastSeen: time.Now()}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer onEnd(s)
		s.run()
	}()
	return s
}

func (s *udpSession) enqueue(b []byte) {
	if !s.queue.push(b) {
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
	ctx, cancel := context.WithTimeout(s.p.ctx, s.cfg.Limits.WithDefaults().HandshakeTimeout.Duration+s.cfg.DialTimeout.Duration)
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

	idle := udpIdle(s.cfg)
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
		case <-s.queue.ready:
			for b, ok := s.queue.pop(); ok; b, ok = s.queue.pop() {
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
}

// repliesToClient sends what the target answers back to the session's client address.
func (s *udpSession) repliesToClient(up net.Conn, framed bool, cnt *byteCounter) {
	defer s.close()
	replies := newDatagramReader(up, framed)
	for {
		err := replies.next(func(b []byte) {
			s.touch()
			if !s.p.datagramFits(s.p.cfg.Load(), len(b)) {
				return
			}
			if _, err := s.pc.WriteToUDPAddrPort(b, s.client); err != nil {
				s.p.metrics.datagramDrops.WithLabelValues("write_failed").Inc()
				return
			}
			cnt.add(int64(len(b)))
			s.p.metrics.datagrams.WithLabelValues(dirToConsumer).Inc()
		})
		if err != nil {
			return
		}
	}
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
