package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/firefly"
	"github.com/scitunnel/scitunnel/internal/testutil"
)

// udpEcho answers every datagram with the same bytes.
func udpEcho(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			// A lost echo shows as a consumer's read timing out.
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().String()
}

// Datagram sizes from empty to the largest an IPv6 UDP socket on loopback carries.
var datagramSizes = []int{0, 1, 512, 1400, 1500, 9000, 32768, 65000, 65527}

func testUDP(t *testing.T, transport config.UDPTransport) {
	target := udpEcho(t)
	pr := startPair(t, pairOptions{protocol: config.UDP, udpTransport: transport, producers: []string{target}})
	c, err := net.Dial("udp", pr.entries[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 70000)
	for round := 0; round < 3; round++ {
		for _, size := range datagramSizes {
			msg := bytes.Repeat([]byte{byte(size), byte(round)}, size/2+1)[:size]
			if _, err := c.Write(msg); err != nil {
				t.Fatalf("send %d bytes: %v", size, err)
			}
			if err := c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
				t.Fatal(err)
			}
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("datagram of %d bytes: no answer: %v", size, err)
			}
			if n != size || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("sent a %d-byte datagram, got back %d bytes (boundaries or content changed)", size, n)
			}
		}
	}
	total := 0
	for _, s := range datagramSizes {
		total += 3 * s
	}
	eventually(t, "the byte counts", 2*time.Second, func() bool {
		tags := pr.out.Connections().Tags["none"]
		return tags.ToProducer == uint64(total) && tags.ToConsumer == uint64(total)
	})
	// The inbound end counts a datagram just after sending it on, so the count may trail the
	// echo the consumer already has by a moment.
	eventually(t, fmt.Sprintf("inbound to count %d datagrams to the consumer side", 3*len(datagramSizes)), 2*time.Second, func() bool {
		return counterValue(t, pr.in, "scitunnel_proxy_udp_datagrams_total", map[string]string{"direction": dirToConsumer}) == float64(3*len(datagramSizes))
	})
}

func TestUDPOverTLSPreservesDatagrams(t *testing.T) { testUDP(t, config.UDPOverTLS) }

func TestUDPPlainRelayPreservesDatagrams(t *testing.T) { testUDP(t, config.UDPPlain) }

// Two consumers get separate sessions: each receives only its own answers.
func TestUDPSessionsAreSeparate(t *testing.T) {
	target := udpEcho(t)
	pr := startPair(t, pairOptions{protocol: config.UDP, producers: []string{target}})
	var conns []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("udp", pr.entries[0])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	for round := 0; round < 5; round++ {
		for i, c := range conns {
			msg := fmt.Sprintf("consumer %d round %d", i, round)
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			if err := c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != msg {
				t.Fatalf("consumer %d got %q, %v; want %q", i, buf[:n], err, msg)
			}
		}
	}
	if n := len(pr.in.Connections().Active); n != 2 {
		t.Fatalf("inbound holds %d sessions, want 2", n)
	}
}

// Fireflies announce the start and the end of each tagged connection: a syslog header, then
// JSON naming the dialed connection's 5-tuple and the tag's ids.
func TestFirefliesAnnounceStartAndEnd(t *testing.T) {
	collector, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer collector.Close()
	prod := startProducer(t, echo)
	tag := &config.Scitag{ExperimentID: 2, ActivityID: 16, Name: "atlas.Production_Output"}
	pr := startPair(t, pairOptions{producers: []string{prod.addr}, tag: tag, tweakOut: func(c *config.Config) {
		c.Fireflies = &config.Fireflies{Enabled: true, Collectors: []string{collector.LocalAddr().String()}, Application: "test-app"}
	}})
	c, err := net.Dial("tcp", pr.entries[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	c.Close()

	var msgs []firefly.Message
	buf := make([]byte, 4096)
	for len(msgs) < 2 {
		if err := collector.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, _, err := collector.ReadFrom(buf)
		if err != nil {
			t.Fatalf("received %d fireflies: %v", len(msgs), err)
		}
		line := string(buf[:n])
		header, body, ok := strings.Cut(line, " firefly-json - ")
		if !ok || !strings.HasPrefix(header, "<134>1 ") || !strings.Contains(header, " scitunnel") {
			t.Fatalf("not a syslog-framed firefly: %q", line)
		}
		dec := json.NewDecoder(strings.NewReader(body))
		dec.DisallowUnknownFields()
		var m firefly.Message
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("firefly JSON: %v: %s", err, body)
		}
		msgs = append(msgs, m)
	}
	start, end := msgs[0], msgs[1]
	if start.Lifecycle.State != "start" || end.Lifecycle.State != "end" || end.Lifecycle.EndTime == "" {
		t.Fatalf("lifecycle: %+v then %+v", start.Lifecycle, end.Lifecycle)
	}
	if start.Version != 1 || start.Context.ExperimentID != 2 || start.Context.ActivityID != 16 || start.Context.Application != "test-app" {
		t.Fatalf("context: %+v", start)
	}
	// The flow is the outbound end's labelled connection to the inbound end (the end firefly
	// leaves just before the connection is filed as ended).
	eventually(t, "the outbound end to file the connection as ended", 2*time.Second, func() bool {
		return len(pr.out.Connections().RecentEnded) == 1
	})
	ended := pr.out.Connections().RecentEnded
	src := netip.MustParseAddrPort(ended[0].DialedLocal)
	dst := netip.MustParseAddrPort(ended[0].DialedRemote)
	id := start.FlowID
	if id.AFI != "ipv6" || id.Protocol != "tcp" || id.SrcIP != src.Addr().String() || id.SrcPort != src.Port() || id.DstIP != dst.Addr().String() || id.DstPort != dst.Port() {
		t.Fatalf("flow-id %+v, want %s -> %s", id, src, dst)
	}
	if end.Usage == nil || end.Usage.Sent != 5 || end.Usage.Received != 5 {
		t.Fatalf("usage %+v, want 5 bytes each way", end.Usage)
	}
}

// A datagram above maxDatagramSize is dropped whole where it enters the tunnel and counted;
// the session carries on with the next datagram.
func TestUDPOversizeDatagramsAreDroppedAndCounted(t *testing.T) {
	for _, transport := range []config.UDPTransport{config.UDPOverTLS, config.UDPPlain} {
		t.Run(string(transport), func(t *testing.T) {
			const limit = 1200
			target := udpEcho(t)
			limitSize := func(c *config.Config) { c.MaxDatagramSize = limit }
			pr := startPair(t, pairOptions{protocol: config.UDP, udpTransport: transport, producers: []string{target},
				tweakIn: limitSize, tweakOut: limitSize})
			c, err := net.Dial("udp", pr.entries[0])
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			exchange := func(size int) (int, error) {
				msg := bytes.Repeat([]byte{byte(size)}, size)
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 70000)
				if err := c.SetReadDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
					t.Fatal(err)
				}
				n, err := c.Read(buf)
				if err == nil && !bytes.Equal(buf[:n], msg) {
					t.Fatalf("sent %d bytes, got %d different bytes back", size, n)
				}
				return n, err
			}
			if n, err := exchange(limit); err != nil || n != limit {
				t.Fatalf("a datagram of exactly the limit: %d bytes back, %v", n, err)
			}
			if n, err := exchange(limit + 1); err == nil {
				t.Fatalf("a datagram one byte over the limit came back (%d bytes)", n)
			}
			eventually(t, "the drop to be counted", 2*time.Second, func() bool {
				return counterValue(t, pr.out, "scitunnel_proxy_udp_dropped_total", map[string]string{"reason": "too_large"}) == 1
			})
			if n, err := exchange(100); err != nil || n != 100 {
				t.Fatalf("the session did not carry on after a drop: %d bytes back, %v", n, err)
			}
			// Nothing of the oversize datagram reached the other end (which counts a datagram
			// just after sending it on, so its count may trail the echo by a moment).
			eventually(t, fmt.Sprintf("the inbound end to count %d bytes to the producer", limit+100), 2*time.Second, func() bool {
				return pr.in.Connections().Tags["none"].ToProducer == limit+100
			})
			if got := pr.in.Connections().Tags["none"].ToProducer; got != limit+100 {
				t.Fatalf("inbound end carried %d bytes to the producer, want %d", got, limit+100)
			}
		})
	}
}

// With toPeer, fireflies also go to port 10514 of the flow's peer, as flowd does.
func TestFirefliesToPeer(t *testing.T) {
	peer, err := net.ListenPacket("udp", hostPort("::1", firefly.Port))
	if err != nil {
		if os.Getenv("SCITUNNEL_REQUIRE_PRIVILEGED") == "1" {
			t.Fatalf("UDP port %d on ::1 is taken: %v", firefly.Port, err)
		}
		t.Skipf("UDP port %d on ::1 is taken: %v", firefly.Port, err)
	}
	defer peer.Close()
	prod := startProducer(t, echo)
	tag := &config.Scitag{ExperimentID: 5, ActivityID: 12}
	pr := startPair(t, pairOptions{producers: []string{prod.addr}, tag: tag, tweakIn: func(c *config.Config) {
		c.Fireflies = &config.Fireflies{Enabled: true, ToPeer: true}
	}})
	c, err := net.Dial("tcp", pr.entries[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	buf := make([]byte, 4096)
	if err := peer.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, _, err := peer.ReadFrom(buf)
	if err != nil {
		t.Fatalf("the peer received no firefly: %v", err)
	}
	_, body, _ := strings.Cut(string(buf[:n]), " firefly-json - ")
	var m firefly.Message
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	// The inbound end's flow is its connection to the producer, the peer that got the firefly.
	if m.Context.ExperimentID != 5 || m.Context.ActivityID != 12 || m.FlowID.DstPort != netip.MustParseAddrPort(prod.addr).Port() {
		t.Fatalf("firefly %+v", m)
	}
}

// SIGTERM with UDP sessions open: the sessions carry on through the drain (their listener is
// also their reply path), a new source starts none, and once they are quiet the end stops
// without waiting for the deadline.
func TestUDPDrainKeepsSessionsAndRefusesNewOnes(t *testing.T) {
	target := udpEcho(t)
	port := testutil.FreePort(t)
	cfg := &config.Config{Tunnel: "t/udp-drain", Role: config.Outbound, Protocol: config.UDP, UDPTransport: config.UDPPlain,
		Routes: []config.Route{{ListenPort: port, Target: target}}, DrainTimeout: config.Duration{Duration: 20 * time.Second}}
	p, cancel, done := startStoppableProxy(t, cfg)

	roundTrip := func(c net.Conn, msg string) error {
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		if err := c.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			return err
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != msg {
			return fmt.Errorf("got %q back, want %q", buf[:n], msg)
		}
		return nil
	}
	active, err := net.Dial("udp", hostPort("::1", port))
	if err != nil {
		t.Fatal(err)
	}
	defer active.Close()
	if err := roundTrip(active, "before"); err != nil {
		t.Fatal(err)
	}

	cancel() // SIGTERM
	drainStart := time.Now()
	eventually(t, "the drain to start", 2*time.Second, func() bool { return p.noNewSessions.Load() })
	// The open session keeps working for longer than a quiet one would be kept.
	for i := range 5 {
		if err := roundTrip(active, fmt.Sprintf("during %d", i)); err != nil {
			t.Fatalf("the open UDP session broke during the drain: %v", err)
		}
		time.Sleep(udpDrainIdle / 2)
	}
	newcomer, err := net.Dial("udp", hostPort("::1", port))
	if err != nil {
		t.Fatal(err)
	}
	defer newcomer.Close()
	if err := roundTrip(newcomer, "new"); err == nil {
		t.Error("a new UDP source got a session during the drain")
	}
	eventually(t, "the new source's datagram counted as dropped", 2*time.Second, func() bool {
		return counterValue(t, p, "scitunnel_proxy_udp_dropped_total", map[string]string{"reason": "draining"}) >= 1
	})

	// Quiet now: the end stops soon, long before the 20 s deadline.
	select {
	case <-done:
	case <-time.After(udpDrainIdle + 5*time.Second):
		t.Fatal("Run still draining after the last session went quiet")
	}
	if took := time.Since(drainStart); took > 15*time.Second {
		t.Errorf("drain took %v; a quiet session should not hold it to the deadline", took)
	}
	if err := roundTrip(active, "after"); err == nil {
		t.Error("the session still answers after the end stopped")
	}
}

// Fireflies the sender drops (its queue full: collectors slow to resolve or to take them) are
// counted in the proxy's metrics.
func TestDroppedFirefliesAreCounted(t *testing.T) {
	cfg := &config.Config{Tunnel: "ns/drops", Role: config.Outbound, Protocol: config.TCP,
		Routes:    []config.Route{{ListenPort: testutil.FreePort(t), Target: "[::1]:9"}},
		Scitag:    &config.Scitag{ExperimentID: 2, ActivityID: 16},
		Fireflies: &config.Fireflies{Enabled: true, Collectors: []string{"[::1]:9"}}}
	p, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s := p.fireflies.Load()
	if s == nil || s.OnDrop == nil {
		t.Fatal("the firefly sender does not report its drops")
	}
	if got := counterValue(t, p, "scitunnel_proxy_fireflies_dropped_total", nil); got != 0 {
		t.Fatalf("scitunnel_proxy_fireflies_dropped_total = %v before any drop", got)
	}
	for range 3 {
		s.OnDrop() // what the sender calls for each announcement that finds its queue full
	}
	if got := counterValue(t, p, "scitunnel_proxy_fireflies_dropped_total", nil); got != 3 {
		t.Fatalf("scitunnel_proxy_fireflies_dropped_total = %v after 3 drops, want 3", got)
	}
}
