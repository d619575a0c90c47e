package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/internal/testutil"
)

const (
	datagramDropsMetric = "scitunnel_proxy_udp_dropped_total"
	// Reasons of datagramDropsMetric, spelled out: a renamed reason is a breaking change.
	sessionLimit       = "session_limit"
	sourceSessionLimit = "source_session_limit"
)

// datagramCheck keeps a UDP session busy through a flood: numbered datagrams, each sent again
// until its echo comes back (a flood may make the kernel drop some), every echo verified.
type datagramCheck struct {
	stop     chan struct{}
	done     chan error
	verified atomic.Int64
}

// checkedDatagram is datagram seq of a check: its number, then bytes derived from it.
func checkedDatagram(seq uint64) []byte {
	b := bytes.Repeat([]byte{byte(seq), byte(seq >> 8), 0x5a}, 400)
	binary.BigEndian.PutUint64(b, seq)
	return b
}

func checkDatagrams(c net.Conn) *datagramCheck {
	dc := &datagramCheck{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() { dc.done <- dc.run(c) }()
	return dc
}

func (dc *datagramCheck) run(c net.Conn) error {
	buf := make([]byte, 2000)
	for seq := uint64(1); ; seq++ {
		want := checkedDatagram(seq)
		answered := false
		for try := 0; !answered; try++ {
			select {
			case <-dc.stop:
				return nil
			default:
			}
			if try == 50 {
				return fmt.Errorf("datagram %d: no echo after %d tries", seq, try)
			}
			if _, err := c.Write(want); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			for !answered {
				n, err := c.Read(buf)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break // send it again
				}
				if err != nil {
					return err
				}
				got := binary.BigEndian.Uint64(buf[:8])
				switch {
				case got < seq && bytes.Equal(buf[:n], checkedDatagram(got)): // a late duplicate
				case got == seq && bytes.Equal(buf[:n], want):
					answered = true
				default:
					return fmt.Errorf("datagram %d: got %d bytes that are no echo of ours", seq, n)
				}
			}
		}
		dc.verified.Add(1)
	}
}

// finish stops the checks and fails t if the session broke or carried nothing.
func (dc *datagramCheck) finish(t testing.TB) {
	t.Helper()
	close(dc.stop)
	if err := <-dc.done; err != nil {
		t.Fatalf("the established UDP session, during the flood: %v", err)
	}
	if dc.verified.Load() == 0 {
		t.Fatal("the established UDP session carried nothing during the flood")
	}
}

// startUDPOutbound runs an Outbound end relaying plain UDP from one port to target.
func startUDPOutbound(t testing.TB, target string, limits *config.Limits) (*Proxy, int) {
	t.Helper()
	port := testutil.FreePort(t)
	p := startProxy(t, &config.Config{Tunnel: "test/udp", Role: config.Outbound, Protocol: config.UDP, UDPTransport: config.UDPPlain,
		Routes: []config.Route{{ListenPort: port, Target: target}}, Limits: limits, DrainTimeout: config.Duration{Duration: time.Second}})
	return p, port
}

// floodUDPSources sends one datagram from each of ips x perIP source addresses (127.0.0.2 and
// up, all loopback) to an Outbound end while an established session is checked.
func floodUDPSources(t testing.TB, ips, perIP int, limits *config.Limits) (floodReport, *Proxy) {
	t.Helper()
	p, port := startUDPOutbound(t, udpEcho(t), limits)
	legit, err := net.Dial("udp", hostPort("::1", port))
	if err != nil {
		t.Fatal(err)
	}
	defer legit.Close()
	check := checkDatagrams(legit)
	eventually(t, "the established session to carry datagrams", 10*time.Second, func() bool { return check.verified.Load() > 0 })
	rest := measure()

	entry := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	drops := func(reason string) int {
		return int(counterValue(t, p, datagramDropsMetric, map[string]string{"reason": reason}))
	}
	accounted := func() int {
		forwarded := counterValue(t, p, "scitunnel_proxy_udp_datagrams_total", map[string]string{"direction": dirToProducer})
		return int(forwarded) + drops(sessionLimit) + drops(sourceSessionLimit)
	}
	sent := 0
	for i := range ips {
		src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}
		for range perIP {
			c, err := net.ListenUDP("udp4", src)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.WriteToUDPAddrPort([]byte("flood"), entry)
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			sent++
		}
		// Paced per source IP, so the listener's socket buffer never overflows.
		eventually(t, "the flood's datagrams to be taken", 30*time.Second, func() bool { return accounted() >= sent })
	}
	r := floodReport{rest: rest, flood: measure()}
	r.counts = fmt.Sprintf("sessions %d for %d sources, dropped %s=%d %s=%d", len(p.Connections().Active), sent,
		sessionLimit, drops(sessionLimit), sourceSessionLimit, drops(sourceSessionLimit))
	check.finish(t)
	return r, p
}

// New UDP sources beyond the listener's and the source's session limits are dropped and
// counted instead of each costing a session; the established session carries on.
func TestUDPNewSourceFloodIsCapped(t *testing.T) {
	const sessions = 128
	r, p := floodUDPSources(t, 40, 50, &config.Limits{MaxUDPSessions: sessions, MaxUDPSessionsPerSource: 16})
	t.Log(r.line("UDP new sources"))
	if n := len(p.Connections().Active); n > sessions {
		t.Errorf("%d sessions, want at most %d", n, sessions)
	}
	for _, reason := range []string{sessionLimit, sourceSessionLimit} {
		if counterValue(t, p, datagramDropsMetric, map[string]string{"reason": reason}) == 0 {
			t.Errorf("no datagram dropped with reason %s", reason)
		}
	}
	// Without the limits each of the 2000 sources held two goroutines and ~90 KiB.
	if g := r.goroutineGrowth(); g > 2*sessions+50 {
		t.Errorf("the flood holds %d more goroutines, want at most two per session", g)
	}
	if h := r.heapGrowth(); h > 16<<20 {
		t.Errorf("the flood holds %d MiB more heap, want less than 16", h>>20)
	}
}

// floodStalledUDPOverTLS has one source send n large datagrams to an Outbound end of UDP over
// TLS whose Inbound end accepts TCP and never answers the handshake, so the session's queue
// fills, while a session of another route, to a working Inbound end, is checked.
func floodStalledUDPOverTLS(t testing.TB, n int, limits *config.Limits) floodReport {
	t.Helper()
	tp := newTestPKI(t)
	release := make(chan struct{})
	stalled := testutil.ServeTCP(t, "[::1]:0", func(c net.Conn) { <-release; c.Close() })
	t.Cleanup(func() { close(release) })
	inPort, stalledPort, workingPort := testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t)
	startProxy(t, &config.Config{Tunnel: "test/in", Role: config.Inbound, Protocol: config.UDP, UDPTransport: config.UDPOverTLS,
		Routes: []config.Route{{ListenPort: inPort, Target: udpEcho(t)}}, TLS: tp.server.config()})
	outTLS := tp.client.config()
	outTLS.ServerName = "localhost"
	out := startProxy(t, &config.Config{Tunnel: "test/out", Role: config.Outbound, Protocol: config.UDP, UDPTransport: config.UDPOverTLS,
		Routes: []config.Route{{ListenPort: stalledPort, Target: stalled}, {ListenPort: workingPort, Target: hostPort("::1", inPort)}},
		TLS:    outTLS, Limits: limits, DrainTimeout: config.Duration{Duration: time.Second}})

	legit, err := net.Dial("udp", hostPort("::1", workingPort))
	if err != nil {
		t.Fatal(err)
	}
	defer legit.Close()
	check := checkDatagrams(legit)
	eventually(t, "the established session to carry datagrams", 10*time.Second, func() bool { return check.verified.Load() > 0 })
	rest := measure()

	source, err := net.Dial("udp", hostPort("::1", stalledPort))
	if err != nil {
		t.Fatal(err)
	}
	defer source.Close()
	big := make([]byte, 60000)
	for i := range n {
		if _, err := source.Write(big); err != nil {
			t.Fatal(err)
		}
		if i%4 == 3 { // let the proxy read them: the listener's socket holds only a few this size
			time.Sleep(time.Millisecond)
		}
	}
	queueFull := func() int {
		return int(counterValue(t, out, datagramDropsMetric, map[string]string{"reason": "queue_full"}))
	}
	eventually(t, "a full queue to drop datagrams", 30*time.Second, func() bool { return queueFull() > 0 })
	r := floodReport{rest: rest, flood: measure()}
	r.counts = fmt.Sprintf("%d datagrams of %d bytes toward a stalled peer, dropped queue_full=%d", n, len(big), queueFull())
	check.finish(t)
	return r
}

// A session whose path stalls queues at most limits.udpQueueBytes: it used to queue 1024
// datagrams of any size, 64 MiB for one source.
func TestStalledUDPSessionQueueIsBoundedInBytes(t *testing.T) {
	r := floodStalledUDPOverTLS(t, 2000, &config.Limits{HandshakeTimeout: config.Duration{Duration: 30 * time.Second}})
	t.Log(r.line("stalled UDP over TLS"))
	if h := r.heapGrowth(); h > 16<<20 {
		t.Errorf("one stalled source holds %d MiB more heap, want less than 16 (a %d KiB queue)", h>>20, config.DefaultUDPQueueBytes>>10)
	}
}

// The Inbound end of UDP over TLS closes a stream quiet for the idle timeout (and counts it),
// as the Outbound end ends its session; a busy session carries on.
func TestUDPOverTLSInboundHonoursIdleTimeout(t *testing.T) {
	pr := startPair(t, pairOptions{protocol: config.UDP, udpTransport: config.UDPOverTLS, producers: []string{udpEcho(t)},
		tweakIn: func(c *config.Config) { c.IdleTimeout = config.Duration{Duration: time.Second} }})
	quiet, err := net.Dial("udp", pr.entries[0])
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	if _, err := quiet.Write([]byte("once")); err != nil {
		t.Fatal(err)
	}
	_ = quiet.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := quiet.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Dial("udp", pr.entries[0])
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	check := checkDatagrams(busy)
	eventually(t, "the Inbound end to close the quiet stream", 20*time.Second, func() bool {
		return counterValue(t, pr.in, timedOutMetric, map[string]string{"reason": "idle"}) == 1 && len(pr.in.Connections().Active) == 1
	})
	carried := check.verified.Load()
	eventually(t, "the busy session to carry on", 10*time.Second, func() bool { return check.verified.Load() > carried+20 })
	check.finish(t)
}
