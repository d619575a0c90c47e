package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/proxy/splice"
)

// byteCounter counts one direction of one connection and feeds the tag's totals.
type byteCounter struct {
	n       atomic.Uint64
	onBytes func(int64)
}

func (c *byteCounter) add(n int64) {
	if n <= 0 {
		return
	}
	c.n.Add(uint64(n))
	if c.onBytes != nil {
		c.onBytes(n)
	}
}

// activity is when a connection last carried a byte (or a datagram), for its timeouts.
type activity struct{ last atomic.Int64 }

func (a *activity) touch() { a.last.Store(time.Now().UnixNano()) }

func (a *activity) quiet() time.Duration { return time.Since(time.Unix(0, a.last.Load())) }

// relayTimeouts are what ends a relay that is not ended by its peers.
type relayTimeouts struct {
	// idle closes a connection silent both ways this long; 0: never.
	idle time.Duration
	// halfClose closes a connection one direction of which has ended once the other has been
	// silent this long: without it a peer that half-closes and goes quiet holds the connection
	// (its descriptors, a goroutine and a buffer) forever. 0: never.
	halfClose time.Duration
	// onTimeout is told why a timeout closed the connection ("idle", "half_closed").
	onTimeout func(reason string)
}

// watchInterval is how often the timeouts are checked: often enough to end a connection within
// a quarter of its timeout after the fact.
func (t relayTimeouts) watchInterval() time.Duration {
	shortest := t.halfClose
	if t.idle > 0 && (shortest == 0 || t.idle < shortest) {
		shortest = t.idle
	}
	if shortest == 0 {
		return time.Hour // nothing to watch; the ticker just never matters
	}
	return max(shortest/4, 10*time.Millisecond)
}

// relay copies both ways between the connection a consumer or peer opened (accepted) and the
// one the proxy dialed (dialed) until both directions end. A clean end of one direction is
// passed on as a half-close, so request/response protocols that shut down their sending side
// still get their answer; an error in either direction tears both down, and so do the timeouts.
func relay(accepted, dialed net.Conn, toProducer, toConsumer *byteCounter, timeouts relayTimeouts) {
	var act activity
	act.touch()

	errc := make(chan error, 2)
	go func() {
		err := pipe(dialed, accepted, toProducer, act.touch)
		if err == nil {
			err = closeWrite(dialed)
		}
		errc <- err
	}()
	go func() {
		err := pipe(accepted, dialed, toConsumer, act.touch)
		if err == nil {
			err = closeWrite(accepted)
		}
		errc <- err
	}()

	closeBoth := func() { accepted.Close(); dialed.Close() }
	watchdog := time.NewTicker(timeouts.watchInterval())
	defer watchdog.Stop()
	halfClosed, timedOut := false, false
	for pending := 2; pending > 0; {
		select {
		case err := <-errc:
			pending--
			if err != nil {
				closeBoth()
			} else {
				halfClosed = true
				act.touch() // the other direction's silence is counted from the half-close
			}
		case <-watchdog.C:
			if timedOut {
				continue
			}
			reason := ""
			switch quiet := act.quiet(); {
			case timeouts.idle > 0 && quiet > timeouts.idle:
				reason = "idle"
			case halfClosed && timeouts.halfClose > 0 && quiet > timeouts.halfClose:
				reason = "half_closed"
			}
			if reason != "" {
				timedOut = true
				if timeouts.onTimeout != nil {
					timeouts.onTimeout(reason)
				}
				closeBoth()
			}
		}
	}
	closeBoth()
}

// pipe copies src to dst until src ends (nil) or either side fails.
func pipe(dst, src net.Conn, cnt *byteCounter, touch func()) error {
	if d, ok := dst.(*net.TCPConn); ok {
		if s, ok := src.(*net.TCPConn); ok {
			if err := splice.Copy(d, s, func(n int64) { cnt.add(n); touch() }); !errors.Is(err, splice.ErrUnsupported) {
				return err
			}
			// The kernel cannot splice these sockets: copy through user space below.
		}
	}
	// Paths that cannot splice (TLS on either side) copy through an adaptive buffer: large
	// while the stream is busy, so one Write carries many TLS records (where the per-syscall
	// cost goes), small while it idles.
	var ab adaptiveBuffer
	defer ab.release()
	read := src.Read
	if ts, ok := src.(*tls.Conn); ok {
		read = func(b []byte) (int, error) { return readBatch(ts, b) }
	}
	write := func(b []byte) error { _, err := dst.Write(b); return err }
	if td, ok := dst.(*tls.Conn); ok {
		if bc, ok := td.NetConn().(*batchConn); ok {
			write = func(b []byte) error { return writeBatched(td, bc, b) }
		}
	}
	for {
		buf := ab.get()
		n, err := read(buf)
		if n > 0 {
			if werr := write(buf[:n]); werr != nil {
				return werr
			}
			cnt.add(int64(n))
			touch()
		}
		ab.used(n)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

type halfCloser interface{ CloseWrite() error }

func closeWrite(c net.Conn) error {
	if hc, ok := c.(halfCloser); ok {
		if err := hc.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	}
	return c.Close()
}
