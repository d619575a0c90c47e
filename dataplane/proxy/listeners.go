package proxy

// The proxy's listeners: binding a route's port (TCP or UDP, with flow-label reflection),
// closing them for a drain or a failed start, and the accept loops that serve them. Apart from
// proxy.go, which holds the lifecycle (New, Run, Reload, Close) that drives them.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/proxy/flowlabel"
)

// listen binds one route's port: TCP for stream protocols and UDP over TLS at the Inbound end
// (the TLS stream arrives over TCP), UDP for datagrams arriving as datagrams.
func (p *Proxy) listen(cfg *config.Config, port int) error {
	addr := net.JoinHostPort(cfg.ListenAddress, strconv.Itoa(port))
	if cfg.Protocol == config.UDP && (cfg.Role != config.Inbound || cfg.UDPTransport != config.UDPOverTLS) {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("routes: listen port %d: %w", port, err)
		}
		p.listeners[port] = pc
		return nil
	}
	// Plain TCP, not Go's default multipath TCP for listeners: the flow-label socket options
	// (IPV6_FL_F_REFLECT) exist only for TCP sockets, and the tunnel's guarantees (labels,
	// splice) are about single-path TCP.
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return fmt.Errorf("routes: listen port %d: %w", port, err)
	}
	if p.reflection == flowlabel.ReflectByListener {
		if err := reflectListener(ln); err != nil {
			// Keep serving: an unlabelled tunnel is better than none. /v1/status says why.
			p.reflection = flowlabel.ReflectOff
			p.reflectionWhy = fmt.Sprintf("the kernel refused flow-label reflection on listen port %d: %v", port, err)
			p.log.Warn("flow-label reflection unavailable", "port", port, "err", err)
		}
	}
	p.listeners[port] = ln
	return nil
}

// reflectListener turns on flow-label reflection for the listener's accepted connections.
func reflectListener(ln net.Listener) error {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return fmt.Errorf("%T is not a TCP listener", ln)
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return err
	}
	return flowlabel.ReflectAccepted(rc)
}

// closeStreamListeners closes the TCP listeners for the drain and returns the UDP sockets,
// which active UDP sessions still send their replies through. Called with p.mu held.
func (p *Proxy) closeStreamListeners() []io.Closer {
	var udp []io.Closer
	for port, l := range p.listeners {
		if _, ok := l.(net.PacketConn); ok {
			udp = append(udp, l)
		} else {
			l.Close()
		}
		delete(p.listeners, port)
	}
	return udp
}

// closeListeners closes every listener. Called with p.mu held, or before Run.
func (p *Proxy) closeListeners() {
	for port, l := range p.listeners {
		l.Close()
		delete(p.listeners, port)
	}
}

// Addr returns the bound address of a route's listener (useful with port 0 in tests).
func (p *Proxy) Addr(port int) net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch l := p.listeners[port].(type) {
	case net.Listener:
		return l.Addr()
	case net.PacketConn:
		return l.LocalAddr()
	}
	return nil
}

// serve starts the accept (or datagram) loop of one listener. Called with p.mu held.
func (p *Proxy) serve(port int, l io.Closer) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		switch l := l.(type) {
		case net.Listener:
			p.acceptLoop(port, l)
		case net.PacketConn:
			p.datagramLoop(port, l.(*net.UDPConn))
		}
	}()
}

// acceptLoop accepts a TCP listener's connections until it closes, one handler each. Where
// this end terminates TLS, at most limits.maxHandshakes connections of the listener may be in
// their handshake at once: a flood of connections that never finish theirs would otherwise hold
// a goroutine, a descriptor and the handshake's buffers each until the handshake timeout. A
// connection beyond the limit is closed at once and counted.
func (p *Proxy) acceptLoop(port int, ln net.Listener) {
	var backoff time.Duration
	var handshakes atomic.Int64
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and similar: wait a little instead of spinning.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed", "port", port, "err", err, "retryIn", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		handshakeDone := func() {}
		if cfg := p.cfg.Load(); cfg.NeedsTLS() && cfg.Role == config.Inbound {
			if handshakes.Add(1) > int64(cfg.Limits.WithDefaults().MaxHandshakes) {
				handshakes.Add(-1)
				p.metrics.handshakesRefused.Inc()
				c.Close()
				continue
			}
			handshakeDone = func() { handshakes.Add(-1) }
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handleStream(port, c, handshakeDone)
		}()
	}
}
