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

// relay copies both ways between the connection a consumer or peer opened (accepted) and the
// one the proxy dialed (dialed) until both directions end. A clean end of one direction is
// passed on as a half-close, so request/response protocols that shut down their sending side
// still get their answer; an error in either direction tears both down.
func relay(accepted, dialed net.Conn, toProducer, toConsumer *byteCounter, idle time.Duration) {
	var lastActive atomic.Int64
	touch := func() { lastActive.Store(time.Now().UnixNano()) }
	touch()

	errc := make(chan error, 2)
	go func() {
		err := pipe(dialed, accepted, toProducer, touch)
		if err == nil {
			err = closeWrite(dialed)
		}
		errc <- err
	}()
	go func() {
		err := pipe(accepted, dialed, toConsumer, touch)
		if err == nil {
			err = closeWrite(accepted)
		}
		errc <- err
	}()

	closeBoth := func() { accepted.Close(); dialed.Close() }
	var watchdog *time.Ticker
	var idleC <-chan time.Time
	if idle > 0 {
		watchdog = time.NewTicker(max(idle/4, 10*time.Millisecond))
		defer watchdog.Stop()
		idleC = watchdog.C
	}
	for pending := 2; pending > 0; {
		select {
		case err := <-errc:
			pending--
			if err != nil {
				closeBoth()
			}
		case <-idleC:
			if time.Since(time.Unix(0, lastActive.Load())) > idle {
				closeBoth()
				idleC = nil
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
