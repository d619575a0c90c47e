package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
)

const (
	handshakesRefusedMetric = "scitunnel_proxy_tls_handshakes_refused_total"
	timedOutMetric          = "scitunnel_proxy_connections_timed_out_total"
)

// floodStalledHandshakes opens n TCP connections to a TLS pair's Inbound end that never start
// their handshake, with an echoed stream running through the pair, and reports the footprint
// once every connection of the flood is either refused or in its handshake.
func floodStalledHandshakes(t testing.TB, n int, limits *config.Limits) (floodReport, *pair) {
	t.Helper()
	mp := startModeProducer(t)
	pr := startPair(t, pairOptions{producers: []string{mp.addr}, tweakIn: func(c *config.Config) { c.Limits = limits }})
	check := checkEcho(dialEchoStream(t, pr.entries[0]))
	eventually(t, "the established stream to carry bytes", 10*time.Second, func() bool { return check.verified.Load() > 0 })
	rest := measure()

	inbound := hostPort("::1", pr.inPorts[0])
	flood := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", inbound)
		if err != nil {
			t.Fatalf("flood connection %d: %v", len(flood), err)
		}
		flood = append(flood, c)
	}
	refused := func() int { return int(counterValue(t, pr.in, handshakesRefusedMetric, nil)) }
	// Each connection of the flood is refused (and counted) or holds its handshake's goroutine
	// (the second test also ends for a proxy without the limit, whose test then fails).
	inFlight := limits.WithDefaults().MaxHandshakes
	eventually(t, "the Inbound end to take every connection of the flood", 30*time.Second, func() bool {
		return refused() >= n-inFlight || refused()+runtime.NumGoroutine()-rest.goroutines >= n
	})
	r := floodReport{rest: rest, flood: measure()}
	r.counts = fmt.Sprintf("handshakes refused %d of %d", refused(), n)
	check.finish(t)
	return r, pr
}

// A flood of connections that never finish their TLS handshake holds at most maxHandshakes
// goroutines and buffers; the rest are closed at once and counted, established streams carry
// on, and the listener serves new peers once the flood is gone.
func TestStalledTLSHandshakesAreCapped(t *testing.T) {
	const n = 1500
	limits := &config.Limits{MaxHandshakes: 32, HandshakeTimeout: config.Duration{Duration: 30 * time.Second}}
	r, pr := floodStalledHandshakes(t, n, limits)
	t.Log(r.line("stalled TLS handshakes"))
	if got := counterValue(t, pr.in, handshakesRefusedMetric, nil); got < n-2*32 {
		t.Errorf("%v connections refused, want at least %d (all beyond the %d handshakes in flight)", got, n-2*32, 32)
	}
	// Without the cap every connection held a goroutine (and ~35 KiB) for the handshake timeout.
	if g := r.goroutineGrowth(); g > 300 {
		t.Errorf("the flood holds %d more goroutines, want at most a few per allowed handshake", g)
	}
	if h := r.heapGrowth(); h > 16<<20 {
		t.Errorf("the flood holds %d MiB more heap, want less than 16", h>>20)
	}
	// The flood has been closed: its handshakes fail at once and free their slots.
	eventually(t, "a new connection through the tunnel", 20*time.Second, func() bool {
		c, err := net.Dial("tcp", pr.entries[0])
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		msg := []byte("Eafter the flood")
		if _, err := c.Write(msg); err != nil {
			return false
		}
		got := make([]byte, len(msg)-1)
		_, err = io.ReadFull(c, got)
		return err == nil && string(got) == string(msg[1:])
	})
}

// A peer that connects and never speaks is cut after limits.handshakeTimeout, not a fixed 10 s.
func TestHandshakeTimeoutIsConfigurable(t *testing.T) {
	mp := startModeProducer(t)
	pr := startPair(t, pairOptions{producers: []string{mp.addr}, tweakIn: func(c *config.Config) {
		c.Limits = &config.Limits{HandshakeTimeout: config.Duration{Duration: 200 * time.Millisecond}}
	}})
	c, err := net.Dial("tcp", hostPort("::1", pr.inPorts[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Generous against the 200 ms asked for, but shorter than the old fixed 10 s.
	_ = c.SetReadDeadline(time.Now().Add(8 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("a silent peer was not cut by the handshake timeout: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// floodHalfClosed opens n connections through a TLS pair that send a little, half-close, and
// whose producer then stays silent, with an echoed stream running through the pair. It reports
// the footprint with every connection half-closed, and once the proxy has closed them all.
func floodHalfClosed(t testing.TB, n int, limits *config.Limits) (r floodReport, after footprint, pr *pair) {
	t.Helper()
	mp := startModeProducer(t)
	setLimits := func(c *config.Config) { c.Limits = limits }
	pr = startPair(t, pairOptions{producers: []string{mp.addr}, tweakIn: setLimits, tweakOut: setLimits})
	check := checkEcho(dialEchoStream(t, pr.entries[0]))
	eventually(t, "the established stream to carry bytes", 10*time.Second, func() bool { return check.verified.Load() > 0 })
	r.rest = measure()

	for i := range n {
		c, err := net.Dial("tcp", pr.entries[0])
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte("Sthen silence")); err != nil {
			t.Fatal(err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every half-close to reach the producer", 60*time.Second, func() bool { return mp.silentEOFs.Load() >= int64(n) })
	r.flood = measure()
	eventually(t, "the proxy to close every half-closed connection", 60*time.Second, func() bool {
		return len(pr.in.Connections().Active) == 1 && len(pr.out.Connections().Active) == 1
	})
	eventually(t, "the closed connections' goroutines to end", 30*time.Second, func() bool {
		return runtime.NumGoroutine() <= r.rest.goroutines+30
	})
	after = measure()
	check.finish(t)
	halfClosed := map[string]string{"reason": "half_closed"}
	r.counts = fmt.Sprintf("half-closed %d, closed by halfCloseTimeout: inbound %d, outbound %d; after: heap %.1f MiB, goroutines %d",
		n, int(counterValue(t, pr.in, timedOutMetric, halfClosed)), int(counterValue(t, pr.out, timedOutMetric, halfClosed)),
		float64(after.heap)/(1<<20), after.goroutines)
	return r, after, pr
}

// A connection whose one direction has ended and whose other stays silent is closed after
// limits.halfCloseTimeout and counted, and its goroutines end (floodHalfClosed waits for both);
// it used to wait for its silent peer forever.
func TestHalfClosedConnectionsAreClosed(t *testing.T) {
	const n = 150
	r, after, pr := floodHalfClosed(t, n, &config.Limits{HalfCloseTimeout: config.Duration{Duration: 2 * time.Second}})
	t.Log(r.line("half-closed connections"))
	if got := counterValue(t, pr.in, timedOutMetric, map[string]string{"reason": "half_closed"}); got != n {
		t.Errorf("the Inbound end counted %v half-closed connections closed, want %d", got, n)
	}
	if h := int64(after.heap) - int64(r.rest.heap); h > 8<<20 {
		t.Errorf("%d MiB more heap than before the flood once it was closed, want about none", h>>20)
	}
}
