package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
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
		fw := &frameWriter{w: stream}
		buf := make([]byte, maxDatagram+1)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			act.touch()
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
		act.touch()
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
