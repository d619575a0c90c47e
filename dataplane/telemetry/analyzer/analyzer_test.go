package analyzer

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/firefly"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
)

// fakeClock is a settable clock for the window arithmetic.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestAnalyzer(assigned ...scitag.Tag) (*Analyzer, *fakeClock) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return New(Options{Window: 10 * time.Second, AssignedTags: assigned, Now: clk.now}), clk
}

var (
	hostA      = netip.MustParseAddr("fd00::1")
	hostB      = netip.MustParseAddr("fd00::2")
	atlasDebug = scitag.Tag{ExperimentID: 2, ActivityID: 9} // label 65572
)

// frame builds an Ethernet + IPv6 + TCP header with a flow label.
func frame(src, dst netip.Addr, label uint32, sport, dport uint16) []byte {
	b := make([]byte, 14+40+20)
	binary.BigEndian.PutUint16(b[12:], 0x86DD)
	ip := b[14:]
	binary.BigEndian.PutUint32(ip, 6<<28|label)
	ip[6], ip[7] = 6, 64
	copy(ip[8:], src.AsSlice())
	copy(ip[24:], dst.AsSlice())
	binary.BigEndian.PutUint16(ip[40:], sport)
	binary.BigEndian.PutUint16(ip[42:], dport)
	return b
}

// agentState numbers datagrams and samples like a real agent.
type agentState struct {
	addr      netip.Addr
	seq, fseq uint32
	pool      uint32
	drops     uint32
	w         sflow.Writer
}

// datagram makes one datagram holding one flow sample per header.
func (ag *agentState) datagram(rate uint32, frameLen uint32, headers ...[]byte) []byte {
	ag.seq++
	ag.w.Begin(ag.addr, 0, ag.seq, ag.seq*1000)
	for _, h := range headers {
		ag.fseq++
		ag.pool += rate
		s := sflow.FlowSample{SequenceNumber: ag.fseq, SourceIDIndex: 2, SamplingRate: rate, SamplePool: ag.pool, Drops: ag.drops,
			Input: sflow.InterfaceInternal, Output: 2,
			Headers: []sflow.SampledHeader{{Protocol: sflow.HeaderEthernet, FrameLength: frameLen, Header: h}}}
		if !ag.w.AddFlowSample(&s) {
			panic("datagram full")
		}
	}
	return append([]byte{}, ag.w.Bytes()...)
}

func newAgent() *agentState { return &agentState{addr: netip.MustParseAddr("192.0.2.1")} }

func tagRate(t *testing.T, a *Analyzer, name string) (rate float64, samples uint64, found bool) {
	t.Helper()
	for _, r := range a.Tags().Tags {
		if r.Tag == name {
			return r.BitsPerSecond, r.Samples, true
		}
	}
	return 0, 0, false
}

func TestEstimateAndWindow(t *testing.T) {
	a, clk := newTestAnalyzer(atlasDebug)
	ag := newAgent()
	h := frame(hostA, hostB, 65572, 40000, 5201)
	// 10 samples per second for 20 s, each 1500 bytes at 1-in-100: 1.5 MB/s = 12 Mbit/s.
	for i := 0; i < 200; i++ {
		if err := a.Ingest(ag.datagram(100, 1500, h)); err != nil {
			t.Fatal(err)
		}
		clk.advance(100 * time.Millisecond)
	}
	rate, c, ok := tagRate(t, a, "atlas.Debug")
	if !ok {
		t.Fatalf("no atlas.Debug in %+v", a.Tags())
	}
	// At t=20s the current slice has just begun: the window holds the 15 full slices before
	// it, 9.375 s, in which 93 samples arrived (every 100 ms from 10.7 s to 19.9 s).
	if c != 93 {
		t.Errorf("%d samples in the window, want 93", c)
	}
	if want := 93 * 1500 * 100 * 8 / 9.375; math.Abs(rate-want)/want > 1e-9 {
		t.Errorf("rate %.0f bit/s, want %.0f", rate, want)
	}
	tags := a.Tags()
	if tags.WindowSeconds != 10 || math.Abs(tags.Tags[0].ErrorPercent-196*math.Sqrt(0.99/93)) > 1e-9 || tags.Tags[0].Flows != 1 || tags.Tags[0].ExperimentID != 2 || tags.Tags[0].ActivityID != 9 {
		t.Errorf("tag totals %+v", tags)
	}
	if got := tags.Tags[0].Bytes; got != 200*1500*100 {
		t.Errorf("total bytes %d, want %d", got, 200*1500*100)
	}
	flows := a.Flows(0)
	if len(flows.Flows) != 1 || flows.Flows[0].Src != "fd00::1" || flows.Flows[0].Dst != "fd00::2" || flows.Flows[0].Label != "0x10024" {
		t.Errorf("flows %+v", flows)
	}
	// The window slides: 11 s later nothing is left in it, and the flow is forgotten; the tag
	// stays listed, idle, with its total (the status keeps showing the bytes carried).
	clk.advance(11 * time.Second)
	for _, r := range a.Tags().Tags {
		if r.Tag == "atlas.Debug" && (r.BitsPerSecond != 0 || r.Samples != 0 || r.ErrorPercent != 100 || r.Bytes != 200*1500*100 || r.Flows != 0) {
			t.Errorf("idle tag reported as %+v, want 0 bit/s, 0 samples, 100%% bound, its total bytes", r)
		}
	}
	if _, _, ok := tagRate(t, a, "atlas.Debug"); !ok {
		t.Error("idle tag dropped from the report")
	}
	_ = a.Ingest(ag.datagram(100, 1500, frame(hostB, hostA, 0, 1, 2)))
	if n := len(a.Flows(0).Flows); n != 1 {
		t.Errorf("%d flows, want only the new one", n)
	}
	if a.Totals()["atlas.Debug"].Bytes != 200*1500*100 {
		t.Error("cumulative total lost")
	}
}

func TestYoungAnalyzerRate(t *testing.T) {
	// Two seconds after start, the rate is over two seconds, not over the ten-second window.
	a, clk := newTestAnalyzer(atlasDebug)
	ag := newAgent()
	h := frame(hostA, hostB, 65572, 40000, 5201)
	for i := 0; i < 20; i++ {
		_ = a.Ingest(ag.datagram(100, 1000, h))
		clk.advance(100 * time.Millisecond)
	}
	rate, _, _ := tagRate(t, a, "atlas.Debug")
	if want := 8.0 * 20 * 1000 * 100 / 2; math.Abs(rate-want)/want > 1e-9 {
		t.Errorf("rate %.0f, want %.0f", rate, want)
	}
}

// TestEstimateWithinBound simulates random 1-in-N sampling and checks the estimator, not the
// sampler, against the truth over many trials: about 95% of them must fall within the reported
// 95% bound — for equal frames, and for a mix of ACKs, full frames and super-frames, where the
// familiar 196*sqrt(1/c) would cover only about 80%.
func TestEstimateWithinBound(t *testing.T) {
	for _, c := range []struct {
		name  string
		sizes []uint32
	}{
		{"equal frames", []uint32{1514}},
		{"mixed frames", []uint32{66, 66, 1514, 1514, 1514, 9000, 65226}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			h := frame(hostA, hostB, 65572, 40000, 5201)
			within, familiar, trials := 0, 0, 200
			for trial := 0; trial < trials; trial++ {
				a, _ := newTestAnalyzer(atlasDebug)
				ag := newAgent()
				const n, packets = 50, 100_000
				var truth float64
				for i := 0; i < packets; i++ {
					size := c.sizes[rng.IntN(len(c.sizes))]
					truth += float64(size)
					if rng.IntN(n) == 0 {
						_ = a.Ingest(ag.datagram(n, size, h))
					}
				}
				tot := a.Totals()["atlas.Debug"]
				off := math.Abs(tot.Bytes-truth) / truth
				if off <= tot.ErrorPercent/100 {
					within++
				}
				if off <= 1.96/math.Sqrt(float64(tot.Samples)) {
					familiar++
				}
			}
			// Binomial(200, 0.95) falls below 180 with probability about 0.1%; an estimator
			// not scaled by the rate, or a bound blind to the frame sizes, falls far below.
			t.Logf("%d of %d trials within the reported bound (%d within 196*sqrt(1/c))", within, trials, familiar)
			if within < 180 || within > 199 {
				t.Errorf("%d of %d trials within the 95%% bound", within, trials)
			}
		})
	}
}

func TestAttribution(t *testing.T) {
	a, clk := newTestAnalyzer(atlasDebug)
	ag := newAgent()
	dg := ag.datagram(10, 1000,
		frame(hostA, hostB, 65572, 40000, 5201),         // assigned tag: tagged
		frame(hostA, hostB, 0xC0103|65572, 40001, 5201), // assigned tag with entropy bits: tagged
		frame(hostA, hostB, 65600, 40002, 5201),         // registered but not assigned: unknown
		frame(hostA, hostB, 0, 40003, 5201),             // unmarked
		frame(hostA, hostB, 261884, 40004, 5201),        // 511.63: unregistered, unassigned
	)
	if err := a.Ingest(dg); err != nil {
		t.Fatal(err)
	}
	tot := a.Totals()
	if tot["atlas.Debug"].Samples != 2 || tot[UnknownTag].Samples != 3 || len(tot) != 2 {
		t.Errorf("totals %+v", tot)
	}

	// A firefly announcing the atlas.Production_Output flow makes it tagged, in both directions.
	msg := firefly.Build(firefly.Flow{Src: netip.AddrPortFrom(hostA, 40002), Dst: netip.AddrPortFrom(hostB, 5201),
		Protocol: "tcp", ExperimentID: 2, ActivityID: 16, Start: clk.now()}, "start", time.Time{}, clk.now(), nil, "test")
	line, err := firefly.Frame(msg, "host", clk.now())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Firefly(line); err != nil {
		t.Fatal(err)
	}
	_ = a.Ingest(ag.datagram(10, 1000, frame(hostA, hostB, 65600, 40002, 5201), frame(hostB, hostA, 65600, 5201, 40002)))
	// Another flow with the same label, not announced: still unknown. The announced flow with
	// a different label: unknown too (the label and the announcement must agree).
	_ = a.Ingest(ag.datagram(10, 1000, frame(hostA, hostB, 65600, 40009, 5201), frame(hostA, hostB, 196664, 40002, 5201)))
	tot = a.Totals()
	if tot["atlas.Production_Output"].Samples != 2 || tot[UnknownTag].Samples != 5 {
		t.Errorf("after firefly: %+v", tot)
	}
	// The end of the flow: its samples still count for one window, then no more.
	msg.Lifecycle.State = "end"
	line, _ = firefly.Frame(msg, "host", clk.now())
	_ = a.Firefly(line)
	clk.advance(5 * time.Second)
	_ = a.Ingest(ag.datagram(10, 1000, frame(hostA, hostB, 65600, 40002, 5201)))
	clk.advance(6 * time.Second)
	_ = a.Ingest(ag.datagram(10, 1000, frame(hostA, hostB, 65600, 40002, 5201)))
	tot = a.Totals()
	if tot["atlas.Production_Output"].Samples != 3 || tot[UnknownTag].Samples != 6 {
		t.Errorf("after the end: %+v", tot)
	}

	// Malformed fireflies are counted.
	for _, bad := range []string{`{"version":1}`, `<134>1 - - - - - - no json`, `<134>1 x {"version":2}`,
		`<134>1 x {"version":1,"flow-lifecycle":{"state":"start"},"flow-id":{"protocol":"tcp","src-ip":"fd00::1","dst-ip":"fd00::2"},"context":{"experiment-id":600}}`} {
		if err := a.Firefly([]byte(bad)); err == nil {
			t.Errorf("firefly %q accepted", bad)
		}
	}
	if h := a.Health(); h.Fireflies != 2 || h.FirefliesMalformed != 4 {
		t.Errorf("firefly health %+v", h)
	}
}

func TestNamesAndIPv4(t *testing.T) {
	unregistered := scitag.Tag{ExperimentID: 300, ActivityID: 5}
	a, _ := newTestAnalyzer(unregistered)
	ag := newAgent()
	l := unregistered.Label()
	ip4 := make([]byte, 14+20+8)
	binary.BigEndian.PutUint16(ip4[12:], 0x0800)
	ip4[14] = 0x45
	ip4[14+9] = 17
	_ = a.Ingest(ag.datagram(1, 100, frame(hostA, hostB, l, 1, 2), ip4, []byte{1, 2, 3}))
	tot := a.Totals()
	if tot["300.5"].Samples != 1 || tot[UnknownTag].Samples != 2 {
		t.Errorf("totals %+v", tot)
	}
}

func TestSequenceTracking(t *testing.T) {
	a, _ := newTestAnalyzer()
	ag := newAgent()
	h := frame(hostA, hostB, 0, 1, 2)
	d1 := ag.datagram(10, 100, h)
	_ = a.Ingest(d1)
	ag.seq += 3 // three datagrams lost
	_ = a.Ingest(ag.datagram(10, 100, h))
	_ = a.Ingest(d1) // a duplicate of an old one
	// A restart: sequence and uptime start again.
	ag.seq, ag.fseq = 0, 0
	_ = a.Ingest(ag.datagram(10, 100, h))
	hl := a.Health()
	if hl.SequenceGaps != 3 || hl.OutOfOrder != 1 || hl.AgentRestarts != 1 || hl.Datagrams != 4 {
		t.Errorf("health %+v", hl)
	}
	if ags := a.Agents(); len(ags) != 1 || ags[0].SequenceGaps != 3 || ags[0].Datagrams != 4 || ags[0].Address != "192.0.2.1" {
		t.Errorf("agents %+v", ags)
	}
}

// TestLossCompensation: samples lost in transit or dropped by the agent are charged to the
// next sample of the same data source.
func TestLossCompensation(t *testing.T) {
	a, _ := newTestAnalyzer(atlasDebug)
	ag := newAgent()
	h := frame(hostA, hostB, 65572, 1, 2)
	_ = a.Ingest(ag.datagram(10, 100, h)) // 1000 bytes
	ag.fseq += 2                          // two samples lost with a datagram
	_ = a.Ingest(ag.datagram(10, 100, h)) // stands for 3 samples: 3000
	ag.drops += 1                         // the agent dropped one
	_ = a.Ingest(ag.datagram(10, 100, h)) // 2000
	tot := a.Totals()["atlas.Debug"]
	if tot.Bytes != 6000 || tot.Samples != 3 {
		t.Errorf("total %+v, want 6000 bytes from 3 samples", tot)
	}
	if hl := a.Health(); hl.LostSamples != 2 || hl.AgentDroppedSample != 1 {
		t.Errorf("health %+v", hl)
	}
}

func TestMalformedCounted(t *testing.T) {
	a, _ := newTestAnalyzer()
	good := newAgent().datagram(10, 100, frame(hostA, hostB, 0, 1, 2))
	bad := append([]byte{}, good...)
	binary.BigEndian.PutUint32(bad[24:], 5) // more samples than present
	for _, b := range [][]byte{nil, {0, 0, 0, 4, 0, 0, 0, 1}, bad, good[:40]} {
		if err := a.Ingest(b); err == nil {
			t.Errorf("%x accepted", b)
		}
	}
	// Rate 0 is invalid, not a crash or a division.
	zero := newAgent().datagram(0, 100, frame(hostA, hostB, 0, 1, 2))
	_ = a.Ingest(zero)
	h := a.Health()
	if h.Malformed != 4 || h.MalformedByReason["short"] != 1 || h.MalformedByReason["version"] != 1 || h.MalformedByReason["overrun"] != 2 || h.InvalidSamples != 1 {
		t.Errorf("health %+v", h)
	}
	if len(a.Totals()) != 0 {
		t.Error("a malformed datagram contributed to the totals")
	}
}

func TestMaxFlows(t *testing.T) {
	a := New(Options{MaxFlows: 2, AssignedTags: []scitag.Tag{atlasDebug}})
	ag := newAgent()
	for i := 0; i < 5; i++ {
		_ = a.Ingest(ag.datagram(1, 100, frame(hostA, netip.AddrFrom16([16]byte{0xfd, 15: byte(i)}), 65572, 1, 2)))
	}
	if n := len(a.Flows(0).Flows); n != 2 {
		t.Errorf("%d flows, want the cap of 2", n)
	}
	if tot := a.Totals()["atlas.Debug"]; tot.Samples != 5 {
		t.Errorf("tag total %+v lost overflow samples", tot)
	}
	if h := a.Health(); h.FlowsOverflow != 3 {
		t.Errorf("overflow %d", h.FlowsOverflow)
	}
}

// FuzzIngest feeds arbitrary bytes to the analyzer as sFlow and as fireflies: it must count, not
// crash. Seeds: a datagram of our own and the sFlow decoder's corpus.
func FuzzIngest(f *testing.F) {
	f.Add(newAgent().datagram(10, 100, frame(hostA, hostB, 65572, 1, 2)))
	dir := filepath.Join("..", "sflow", "testdata", "fuzz", "FuzzDecode")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		var s string
		if _, err := fmt.Sscanf(string(data), "go test fuzz v1\n[]byte(%q)", &s); err != nil {
			f.Fatalf("%s: %v", e.Name(), err)
		}
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a := New(Options{AssignedTags: []scitag.Tag{atlasDebug}})
		_ = a.Ingest(b)
		_ = a.Firefly(b)
		_ = a.Tags()
		_ = a.Flows(0)
	})
}
