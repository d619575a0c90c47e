package sampler

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scitunnel/scitunnel/dataplane/telemetry/analyzer"
	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
	"github.com/scitunnel/scitunnel/internal/testutil/netns"
)

// rawCollector records every datagram it receives, decoded, for checking field by field.
type rawCollector struct {
	conn *net.UDPConn
	mu   sync.Mutex
	raw  [][]byte
	last time.Time // when the last datagram arrived
}

func listenCollector(t *testing.T, ns *netns.NS) *rawCollector {
	t.Helper()
	c := &rawCollector{}
	ns.Do(t, func() {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6loopback})
		if err != nil {
			t.Fatal(err)
		}
		// The sampler sends a ring block's samples at once (hundreds of datagrams in these
		// tests' 1-in-10 floods); a collector takes them with a large socket buffer, as
		// sFlow-RT and pmacct do.
		if rc, err := conn.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) })
		}
		c.conn = conn
	})
	t.Cleanup(func() { c.conn.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := c.conn.Read(buf)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.raw = append(c.raw, append([]byte{}, buf[:n]...))
			c.last = time.Now()
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *rawCollector) addr() string { return c.conn.LocalAddr().String() }

// datagrams returns what arrived once the collector has been quiet for 200 ms: a sampler's last
// datagrams may still be in the socket queue when the sampler has exited.
func (c *rawCollector) datagrams() [][]byte {
	for {
		c.mu.Lock()
		quiet := time.Since(c.last) > 200*time.Millisecond
		if quiet {
			defer c.mu.Unlock()
			return append([][]byte{}, c.raw...)
		}
		c.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
}

// startAnalyzer runs an analyzer whose sFlow socket lives in ns.
func startAnalyzer(t testing.TB, ns *netns.NS, opt analyzer.Options) (*analyzer.Analyzer, string) {
	t.Helper()
	a := analyzer.New(opt)
	var conn *net.UDPConn
	ns.Do(t, func() {
		var err error
		if conn, err = analyzer.ListenSFlow("[::1]:0"); err != nil {
			t.Fatal(err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.ServeSFlow(ctx, conn, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	t.Cleanup(func() { cancel(); <-done })
	return a, conn.LocalAddr().String()
}

// twoHosts is namespaces A and B joined by a veth pair: A's sa0 fd5c::1 <-> B's sb0 fd5c::2.
func twoHosts(t testing.TB) (a, b *netns.NS) {
	t.Helper()
	a, b = netns.New(t, "sfa"), netns.New(t, "sfb")
	netns.Veth(t, a, "sa0", "fd5c::1/64", b, "sb0", "fd5c::2/64")
	return a, b
}

var (
	addrA = netip.MustParseAddr("fd5c::1")
	addrB = netip.MustParseAddr("fd5c::2")
)

// TestSamplerOnVeth sends a known number of equal UDP packets from A to B and checks what the
// sampler reports, datagram by datagram: 1-in-N within the binomial bound, the full frame length,
// direction, sample pool, drops, counter samples; and that the analyzer estimates the bytes.
func TestSamplerOnVeth(t *testing.T) {
	netns.Require(t)
	nsA, nsB := twoHosts(t)
	raw := listenCollector(t, nsA)
	an, anAddr := startAnalyzer(t, nsA, analyzer.Options{})
	const rate, packets, payload = 10, 20000, 1000
	stop := startSampler(t, nsA, childSpec{Interfaces: []string{"sa0"}, Rate: rate,
		Collectors: []string{raw.addr(), anAddr}, Polling: 500 * time.Millisecond, Flush: 200 * time.Millisecond})

	var sink, src *net.UDPConn
	nsB.Do(t, func() {
		var err error
		if sink, err = net.ListenUDP("udp6", &net.UDPAddr{IP: addrB.AsSlice(), Port: 9999}); err != nil {
			t.Fatal(err)
		}
	})
	defer sink.Close()
	go func() {
		buf := make([]byte, 2000)
		for {
			if _, err := sink.Read(buf); err != nil {
				return
			}
		}
	}()
	warmNeighbour(t, nsA, addrB)
	nsA.Do(t, func() {
		var err error
		if src, err = net.DialUDP("udp6", nil, &net.UDPAddr{IP: addrB.AsSlice(), Port: 9999}); err != nil {
			t.Fatal(err)
		}
	})
	defer src.Close()
	msg := make([]byte, payload)
	for i := 0; i < packets; i++ {
		if _, err := src.Write(msg); err != nil {
			t.Fatal(err)
		}
		if i%500 == 0 {
			time.Sleep(time.Millisecond) // let the sink keep up
		}
	}
	time.Sleep(700 * time.Millisecond)
	stop()

	const frame = 14 + 40 + 8 + payload
	ifindex := uint32(0)
	if ifi := nsA.Run(t, "cat", "/sys/class/net/sa0/ifindex"); ifi != "" {
		var v int
		_, _ = fmtSscan(ifi, &v)
		ifindex = uint32(v)
	}
	got := checkVethDatagrams(t, raw.datagrams(), ifindex, rate, frame)
	samples, counters, maxPool := got.samples, got.counters, got.maxPool
	// Binomial(20000, 1/10): mean 2000, standard deviation 42; 5 deviations is a bug, not luck.
	if math.Abs(float64(samples)-packets/rate) > 5*math.Sqrt(packets*(1.0/rate)*(1-1.0/rate)) {
		t.Errorf("%d samples of %d packets at 1-in-%d", samples, packets, rate)
	}
	// The pool counts the packets the interface passed until the last sample, plus a few of
	// neighbour discovery. Between its 100 ms counter reads it adds the sampling rate per
	// sample; the run may fit in one read interval, and then the estimate's standard deviation
	// is sqrt(20000*10*0.9) = 424 packets: five of them either way is a bug.
	poolSlack := uint32(5 * math.Sqrt(packets*rate*(1-1.0/rate)))
	if maxPool < packets-poolSlack || maxPool > packets+poolSlack {
		t.Errorf("sample pool reached %d for the %d packets sent", maxPool, packets)
	}
	if counters < 2 {
		t.Errorf("%d counter samples, want one per 500 ms", counters)
	}
	flows := an.Flows(0).Flows
	var est float64
	for _, f := range flows {
		if f.Src == addrA.String() && f.Dst == addrB.String() {
			est = float64(f.Bytes)
		}
	}
	truth := float64(packets * frame)
	bound := 1.96 * math.Sqrt(1.0/float64(samples)) // equal frames
	t.Logf("%d samples; estimate %.0f bytes, truth %.0f (%+.2f%%, bound %.2f%%)", samples, est, truth, 100*(est-truth)/truth, 100*bound)
	if math.Abs(est-truth)/truth > 2.5*bound {
		t.Errorf("analyzer estimate %.0f, truth %.0f", est, truth)
	}
}

// vethSamples is what TestSamplerOnVeth's collector received: the flow samples of the test's
// packets, the counter samples, and the highest sample pool of any flow sample.
type vethSamples struct {
	samples, counters int
	maxPool           uint32
}

// checkVethDatagrams decodes the datagrams a sampler of interface ifindex on A sent at 1-in-rate,
// checks every field it sets, and counts the samples of the test's frameLen-byte packets to B.
func checkVethDatagrams(t *testing.T, datagrams [][]byte, ifindex, rate, frameLen uint32) vethSamples {
	t.Helper()
	var d sflow.Decoder
	var got vethSamples
	var lastSeq uint32
	for _, b := range datagrams {
		dg, err := d.Decode(b)
		if err != nil {
			t.Fatalf("our own datagram does not decode: %v", err)
		}
		if dg.SequenceNumber != lastSeq+1 {
			t.Errorf("datagram sequence %d after %d", dg.SequenceNumber, lastSeq)
		}
		lastSeq = dg.SequenceNumber
		if dg.AgentAddress != addrA {
			t.Errorf("agent address %v, want %v (the sampled interface's)", dg.AgentAddress, addrA)
		}
		for _, s := range dg.FlowSamples {
			if s.SamplingRate != rate || s.SourceIDIndex != ifindex || len(s.Headers) != 1 {
				t.Fatalf("flow sample %+v", s)
			}
			got.maxPool = max(got.maxPool, s.SamplePool)
			p, ok := sflow.ParsePacket(s.Headers[0].Protocol, s.Headers[0].Header)
			if !ok || p.Dst != addrB || p.DstPort != 9999 {
				continue // neighbour discovery and the like
			}
			got.samples++
			if s.Headers[0].FrameLength != frameLen || len(s.Headers[0].Header) != 128 {
				t.Errorf("frame length %d, header %d bytes; want %d, 128", s.Headers[0].FrameLength, len(s.Headers[0].Header), frameLen)
			}
			if s.Input != sflow.InterfaceInternal || s.Output != ifindex {
				t.Errorf("outgoing packet with input %#x output %#x", s.Input, s.Output)
			}
			if s.Drops != 0 {
				t.Errorf("drops %d", s.Drops)
			}
		}
		for _, c := range dg.CounterSamples {
			if !c.HasInterface || c.Interface.Index != ifindex || c.Interface.Type != 6 || c.Interface.Status != 3 {
				t.Errorf("counter sample %+v", c)
			}
			got.counters++
		}
	}
	return got
}

// warmNeighbour resolves peer's link-layer address before a test's traffic, which would
// otherwise be dropped while neighbour discovery runs.
func warmNeighbour(t testing.TB, ns *netns.NS, peer netip.Addr) {
	t.Helper()
	ns.Do(t, func() {
		c, err := net.DialUDP("udp6", nil, &net.UDPAddr{IP: peer.AsSlice(), Port: 9})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("x"))
		c.Close()
	})
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(ns.Run(t, "ip", "-6", "neigh", "show", peer.String()), "lladdr") {
		if time.Now().After(deadline) {
			t.Fatalf("neighbour %v not resolved", peer)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSamplerLoopbackCountsOnce: on loopback every packet passes the tap twice (out, then in);
// the sampler must count it once. At 1-in-1 every packet is a sample, so the count is exact,
// also when the sampler is stopped right after the last packet.
func TestSamplerLoopbackCountsOnce(t *testing.T) {
	netns.Require(t)
	ns := netns.New(t, "sflo")
	raw := listenCollector(t, ns)
	stop := startSampler(t, ns, childSpec{Interfaces: []string{"lo"}, Rate: 1,
		Collectors: []string{raw.addr()}, Polling: time.Minute, Flush: 100 * time.Millisecond})
	var sink, src *net.UDPConn
	ns.Do(t, func() {
		var err error
		if sink, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback, Port: 9999}); err != nil {
			t.Fatal(err)
		}
		if src, err = net.DialUDP("udp6", nil, sink.LocalAddr().(*net.UDPAddr)); err != nil {
			t.Fatal(err)
		}
	})
	defer sink.Close()
	defer src.Close()
	const packets = 500
	buf := make([]byte, 100)
	for i := 0; i < packets; i++ {
		if _, err := src.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := sink.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	stop() // at once: the samples still in the kernel's ring are taken and sent on the way out
	var d sflow.Decoder
	n := 0
	for _, b := range raw.datagrams() {
		dg, err := d.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range dg.FlowSamples {
			if p, ok := sflow.ParsePacket(s.Headers[0].Protocol, s.Headers[0].Header); ok && p.DstPort == 9999 {
				n++
				if s.Input != 1 || s.Output != sflow.InterfaceInternal {
					t.Errorf("loopback sample in %d out %#x: want the incoming copy", s.Input, s.Output)
				}
			}
		}
	}
	if n != packets {
		t.Errorf("%d samples of %d loopback packets at 1-in-1", n, packets)
	}
}
