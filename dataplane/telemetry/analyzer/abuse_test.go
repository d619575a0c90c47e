package analyzer

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
	"github.com/scitunnel/scitunnel/internal/testutil/netns"
)

// Tests of the analyzer against a hostile pod that can reach its sFlow socket.

// floodDatagram is the cheapest datagram that names a new agent: an sFlow v5 header with an
// IPv6 agent address and no samples (40 bytes).
func floodDatagram(w *sflow.Writer, i int) []byte {
	var b [16]byte
	b[0], b[1] = 0xfd, 0x66
	b[12], b[13], b[14], b[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
	w.Begin(netip.AddrFrom16(b), 0, 1, 1)
	return w.Bytes()
}

// heapInuse is the heap in use after a collection.
func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestAgentFloodBounded: before the agent table was bounded, 500,000 datagrams naming distinct
// agents left 78 MiB behind for good. Now the table holds MaxAgents and counts the rest as
// evicted, and an agent that keeps sending survives the flood.
func TestAgentFloodBounded(t *testing.T) {
	const flood = 300_000
	a, clk := newTestAnalyzer(atlasDebug)
	steady := newAgent()
	var w sflow.Writer
	before := heapInuse()
	for i := range flood {
		if err := a.Ingest(floodDatagram(&w, i)); err != nil {
			t.Fatal(err)
		}
		if i%256 == 0 {
			if err := a.Ingest(steady.datagram(100, 1000, frame(hostA, hostB, 65572, 1, 2))); err != nil {
				t.Fatal(err)
			}
			clk.advance(time.Millisecond)
		}
	}
	after := heapInuse()
	runtime.KeepAlive(a)
	grown := (int64(after) - int64(before)) >> 20
	t.Logf("heap grew %d MiB after %d flooding agents", grown, flood)
	if grown > 8 { // 75 MiB before the bound
		t.Errorf("heap grew %d MiB after a flood of %d agents, want a few at most", grown, flood)
	}
	agents := a.Agents()
	if len(agents) > 1024 {
		t.Errorf("%d agents tracked, want at most MaxAgents (1024)", len(agents))
	}
	if h := a.Health(); h.AgentsEvicted < flood-1024 {
		t.Errorf("%d agents evicted, want at least %d", h.AgentsEvicted, flood-1024)
	}
	if !hasAgent(agents, steady.addr) {
		t.Errorf("the steady agent %v was evicted by the flood", steady.addr)
	}
}

func hasAgent(agents []AgentStatus, addr netip.Addr) bool {
	for _, ag := range agents {
		if ag.Address == addr.String() {
			return true
		}
	}
	return false
}

// TestIdleAgentsExpire: an agent silent for AgentIdle is forgotten, with its data sources.
func TestIdleAgentsExpire(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	a := New(Options{Now: clk.now, AgentIdle: time.Minute})
	gone, kept := newAgent(), &agentState{addr: netip.MustParseAddr("192.0.2.2")}
	h := frame(hostA, hostB, 65572, 1, 2)
	_ = a.Ingest(gone.datagram(100, 1000, h))
	for range 70 {
		clk.advance(time.Second)
		_ = a.Ingest(kept.datagram(100, 1000, h))
	}
	if ags := a.Agents(); len(ags) != 1 || !hasAgent(ags, kept.addr) {
		t.Errorf("agents %+v, want only %v", ags, kept.addr)
	}
	if h := a.Health(); h.AgentsExpired != 1 || a.agents.sources != 1 {
		t.Errorf("%d agents expired, %d sources left; want 1 and 1", h.AgentsExpired, a.agents.sources)
	}
}

func TestAdmits(t *testing.T) {
	a := New(Options{AllowedAgents: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00::7/128")}})
	for _, c := range []struct {
		from, local string
		want        bool
	}{
		{"127.0.0.1", "0.0.0.0", true}, {"::1", "::", true}, {"10.1.3.4", "::", true}, {"fd00::7", "::", true},
		{"10.2.0.5", "10.2.0.5", true}, // the sampler sends to the address the analyzer listens on
		{"10.2.0.6", "0.0.0.0", false}, {"fd00::8", "::", false}, {"10.2.0.5", "0.0.0.0", false},
	} {
		if got := a.admits(netip.MustParseAddr(c.from), netip.MustParseAddr(c.local)); got != c.want {
			t.Errorf("admits(%s, local %s) = %v, want %v", c.from, c.local, got, c.want)
		}
	}
}

// TestForgedSourceRefused sends forged samples of the pod's tag from another network namespace
// (another pod) to the analyzer's socket, and the pod's own sampler's from loopback: only the
// sampler's count in the tag's throughput.
func TestForgedSourceRefused(t *testing.T) {
	netns.Require(t)
	pod, hostile := netns.New(t, "sfpod"), netns.New(t, "sfhost")
	netns.Veth(t, pod, "sfp0", "fd5e::2/64", hostile, "sfh0", "fd5e::1/64")
	a, _ := newTestAnalyzer(atlasDebug)
	var conn *net.UDPConn
	var sampler net.Conn
	var err error
	pod.Do(t, func() {
		if conn, err = ListenSFlow(":0"); err == nil {
			sampler, err = net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(conn.LocalAddr().(*net.UDPAddr).Port)))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sampler.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = a.ServeSFlow(ctx, conn, slog.New(slog.NewTextHandler(io.Discard, nil))) }()

	const forged, legit = 50, 20
	hostile.Do(t, func() {
		c, err := net.Dial("udp", net.JoinHostPort("fd5e::2", strconv.Itoa(conn.LocalAddr().(*net.UDPAddr).Port)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		liar := newAgent() // claims to be the pod's agent
		for range forged {
			_, _ = c.Write(liar.datagram(1_000_000, 1500, frame(hostA, hostB, 65572, 1, 2)))
		}
	})
	own := newAgent()
	for range legit {
		if _, err := sampler.Write(own.datagram(10, 1000, frame(hostA, hostB, 65572, 1, 2))); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for h := a.Health(); h.Datagrams < legit || h.Refused < forged; h = a.Health() {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %d datagrams ingested (want %d), %d refused (want %d)", h.Datagrams, legit, h.Refused, forged)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got, want := a.Totals()["atlas.Debug"].Bytes, float64(legit*10*1000); got != want {
		t.Errorf("atlas.Debug counts %.0f bytes, want the sampler's %.0f alone", got, want)
	}
}
