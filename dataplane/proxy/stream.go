package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/firefly"
	"github.com/scitunnel/scitunnel/dataplane/proxy/flowlabel"
	"github.com/scitunnel/scitunnel/dataplane/proxy/tlsfiles"
)

// handleStream carries one accepted TCP connection to its route's target. handshakeDone gives
// back the listener's handshake slot (listeners.go), once the TLS handshake is over.
func (p *Proxy) handleStream(port int, c net.Conn, handshakeDone func()) {
	handshakeDone = sync.OnceFunc(handshakeDone)
	defer handshakeDone()
	cfg := p.cfg.Load()
	route, ok := routeFor(cfg, port)
	if !ok { // the route was removed by a reload after this connection was accepted
		c.Close()
		return
	}
	limits := cfg.Limits.WithDefaults()
	ctx, cancel := context.WithTimeout(p.ctx, limits.HandshakeTimeout.Duration+cfg.DialTimeout.Duration)
	defer cancel()

	accepted, peerID, ok := p.acceptTLS(ctx, cfg, c)
	handshakeDone()
	if !ok {
		return
	}
	if cfg.Protocol == config.UDP { // UDP over TLS, Inbound end: frames on this stream
		p.relayFramedToUDP(ctx, cfg, route, port, accepted, peerID)
		return
	}
	dialed, st, ok := p.dialTarget(ctx, cfg, route.Target)
	if !ok {
		accepted.Close()
		return
	}
	protocol := "tcp"
	if cfg.Protocol == config.TLS {
		protocol = "tls"
	}
	p.track(cfg, ConnInfo{
		Protocol: protocol, Port: port, PeerIdentity: peerID, FlowLabel: st.Label,
		AcceptedRemote: c.RemoteAddr().String(), AcceptedLocal: c.LocalAddr().String(),
		DialedLocal: dialed.LocalAddr().String(), DialedRemote: dialed.RemoteAddr().String(),
	}, accepted, dialed, func(toProducer, toConsumer *byteCounter) {
		relay(accepted, dialed, toProducer, toConsumer, relayTimeouts{
			idle: cfg.IdleTimeout.Duration, halfClose: limits.HalfCloseTimeout.Duration, onTimeout: p.countTimeout,
		})
	})
}

// countTimeout counts a connection a timeout closed.
func (p *Proxy) countTimeout(reason string) { p.metrics.timedOut.WithLabelValues(reason).Inc() }

// acceptTLS terminates mutual TLS at the Inbound end; elsewhere it passes c through.
func (p *Proxy) acceptTLS(ctx context.Context, cfg *config.Config, c net.Conn) (net.Conn, string, bool) {
	if !cfg.NeedsTLS() || cfg.Role != config.Inbound {
		return c, "", true
	}
	p.mu.Lock()
	serverTLS := p.serverTLS
	p.mu.Unlock()
	tc := tls.Server(&batchConn{Conn: c}, serverTLS)
	hctx, cancel := context.WithTimeout(ctx, cfg.Limits.WithDefaults().HandshakeTimeout.Duration)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		reason := tlsfiles.Classify(err)
		p.metrics.handshakeFailures.WithLabelValues(reason).Inc()
		p.log.Info("client refused", "remote", c.RemoteAddr(), "reason", reason, "err", err)
		c.Close()
		return nil, "", false
	}
	return tc, firstIdentity(tc.ConnectionState()), true
}

// dialTarget connects to a route's target with the tunnel's flow label, and at the Outbound
// end of a TLS tunnel completes the mutual-TLS handshake with the Inbound end.
func (p *Proxy) dialTarget(ctx context.Context, cfg *config.Config, target string) (net.Conn, flowlabel.Status, bool) {
	raw, st, err := p.dialer.Dial(ctx, "tcp", target)
	if err != nil {
		p.metrics.dialFailures.WithLabelValues(target).Inc()
		p.log.Warn("dial failed", "target", target, "err", err)
		return nil, st, false
	}
	tuneTCP(raw)
	if !cfg.NeedsTLS() || cfg.Role != config.Outbound {
		return raw, st, true
	}
	serverName := cfg.TLS.ServerName
	if serverName == "" {
		serverName, _, _ = net.SplitHostPort(target)
	}
	tc := tls.Client(&batchConn{Conn: raw}, p.tls.ClientConfig(serverName))
	hctx, cancel := context.WithTimeout(ctx, cfg.Limits.WithDefaults().HandshakeTimeout.Duration)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		reason := tlsfiles.Classify(err)
		p.metrics.handshakeFailures.WithLabelValues(reason).Inc()
		p.log.Warn("handshake with the inbound end failed", "target", target, "reason", reason, "err", err)
		raw.Close()
		return nil, st, false
	}
	return tc, st, true
}

// track registers a connection, announces it with fireflies, runs it and unregisters it.
func (p *Proxy) track(cfg *config.Config, info ConnInfo, accepted, dialed net.Conn, run func(toProducer, toConsumer *byteCounter)) {
	tag := tagName(cfg)
	info.Scitag = tag
	bytesUp := p.metrics.bytes.WithLabelValues(tag, dirToProducer)
	bytesDown := p.metrics.bytes.WithLabelValues(tag, dirToConsumer)
	active := p.metrics.active.WithLabelValues(tag, info.Protocol)
	p.metrics.total.WithLabelValues(tag, info.Protocol).Inc()
	active.Inc()
	defer active.Dec()

	c := p.conns.add(info, func(n int64) { bytesUp.Add(float64(n)) }, func(n int64) { bytesDown.Add(float64(n)) }, accepted, dialed)
	defer p.conns.remove(c)

	flow, announce := fireflyFlow(cfg, info, c.info.Started)
	if announce {
		p.fireflies.Load().Start(flow)
	}
	run(&c.toProducer, &c.toConsumer)
	if announce {
		// The flow is the dialed connection: "sent" is what went from this proxy to the target.
		// The current sender, not the one at the start: a reload may have replaced it.
		p.fireflies.Load().End(flow, time.Now(), c.toProducer.n.Load(), c.toConsumer.n.Load())
	}
}

// fireflyFlow describes the dialed (labelled) connection of a tagged tunnel.
func fireflyFlow(cfg *config.Config, info ConnInfo, start time.Time) (firefly.Flow, bool) {
	if cfg.Scitag == nil || cfg.Fireflies == nil || !cfg.Fireflies.Enabled || info.DialedLocal == "" {
		return firefly.Flow{}, false
	}
	src, err1 := netip.ParseAddrPort(info.DialedLocal)
	dst, err2 := netip.ParseAddrPort(info.DialedRemote)
	if err1 != nil || err2 != nil {
		return firefly.Flow{}, false
	}
	proto := "tcp"
	if info.Protocol == "udp" && cfg.UDPTransport == config.UDPPlain {
		proto = "udp"
	}
	return firefly.Flow{Src: src, Dst: dst, Protocol: proto, ExperimentID: cfg.Scitag.ExperimentID, ActivityID: cfg.Scitag.ActivityID, Start: start}, true
}

// tuneTCP sets what a bulk stream wants. Nagle stays off: the relay writes large buffers, and
// small interactive writes must not wait for an ACK.
func tuneTCP(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
}

// firstIdentity returns the verified client certificate's first SAN, for logs and reports.
func firstIdentity(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	c := cs.PeerCertificates[0]
	switch {
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	case len(c.IPAddresses) > 0:
		return c.IPAddresses[0].String()
	}
	return c.Subject.CommonName
}
