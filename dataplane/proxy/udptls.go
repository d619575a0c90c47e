package proxy

import (
	"context"
	"net"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
)

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
		p.carryFrames(stream, up, toProducer, toConsumer, udpIdle(cfg))
	})
}

// udpIdle is how long a UDP session may be quiet both ways: the tunnel's idle timeout, or
// udpSessionIdle. UDP has no close, so both ends need one; the Inbound end's also frees what a
// peer that stops sending without closing its stream would hold.
func udpIdle(cfg *config.Config) time.Duration {
	if cfg.IdleTimeout.Duration > 0 {
		return cfg.IdleTimeout.Duration
	}
	return udpSessionIdle
}

// carryFrames relays between the TLS stream's frames and the producer's datagrams until either
// side ends or both have been quiet for idle.
func (p *Proxy) carryFrames(stream, up net.Conn, toProducer, toConsumer *byteCounter, idle time.Duration) {
	var act activity
	act.touch()
	stopWatch := make(chan struct{})
	go p.closeWhenIdle(&act, idle, stopWatch, stream, up)
	defer close(stopWatch)

	done := make(chan struct{})
	go func() { // producer -> frames
		defer close(done)
		fw := frameWriter{w: stream}
		replies := newDatagramReader(up, false)
		var writeErr error
		for writeErr == nil {
			err := replies.next(func(b []byte) {
				act.touch()
				if !p.datagramFits(p.cfg.Load(), len(b)) {
					return
				}
				if writeErr = fw.write(b); writeErr == nil {
					toConsumer.add(int64(len(b)))
					p.metrics.datagrams.WithLabelValues(dirToConsumer).Inc()
				}
			})
			if err != nil {
				return
			}
		}
	}()
	frames := newDatagramReader(stream, true)
	for {
		err := frames.next(func(b []byte) {
			act.touch()
			if !p.datagramFits(p.cfg.Load(), len(b)) {
				return
			}
			if _, err := up.Write(b); err != nil {
				p.metrics.datagramDrops.WithLabelValues("write_failed").Inc()
				return
			}
			toProducer.add(int64(len(b)))
			p.metrics.datagrams.WithLabelValues(dirToProducer).Inc()
		})
		if err != nil {
			break
		}
	}
	stream.Close()
	up.Close()
	<-done
}

// closeWhenIdle closes conns, counting an idle timeout, once act has been quiet for idle; it
// returns then or when stop closes.
func (p *Proxy) closeWhenIdle(act *activity, idle time.Duration, stop <-chan struct{}, conns ...net.Conn) {
	tick := time.NewTicker(max(idle/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			if act.quiet() > idle {
				p.countTimeout("idle")
				for _, c := range conns {
					c.Close()
				}
				return
			}
		}
	}
}
