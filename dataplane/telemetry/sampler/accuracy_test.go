package sampler

import (
	"bufio"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/scitag"
	"github.com/scitunnel/scitunnel/dataplane/telemetry/analyzer"
	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
	"github.com/scitunnel/scitunnel/internal/testutil/netns"
)

// Labels of the accuracy test: 65572 is atlas.Debug (2.9), assigned to the "pod"; 65600 is
// atlas.Production_Output (2.16), registered but not assigned, standing in for an unmarked
// flow whose random label happens to decode to a registered tag.
const (
	assignedLabel   = 65572
	unassignedLabel = 65600
)

// TestAccuracy runs two labelled iperf3 streams over a veth pair between two namespaces, samples
// the sender's interface with our sampler and checks the analyzer's per-tag byte estimate
// against the true count, with offload super-frames (TSO/GSO on) and without (every frame at
// most 1514 bytes). The true count comes from nftables counters on the receiver's input hook
// (plus an Ethernet header per packet), with GRO off there: a veth hands the receiver exactly
// the packets the sender's tap saw, super-frames whole, while the sender's own output hook would
// see TCP's GSO super-packets even with offloads off (the kernel segments them later, in
// software, just before the tap). A third case samples the receiver's interface instead, with
// GRO on: incoming super-frames, the other direction of the tap.
// The stream with the unassigned label must not be reported under its tag.
func TestAccuracy(t *testing.T) {
	netns.Require(t, "iperf3", "nft", "ethtool")
	for _, c := range []accuracyCase{
		{"super-frames", true, 10, false},
		{"offloads-off", false, 20, false},
		{"receiver-gro", true, 10, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The bound is a 95% bound: one honest trial in twenty lands outside it. A second,
			// independent trial cuts false alarms to one in four hundred, while a biased
			// estimate (super-frames weighted by the captured bytes, a direction counted
			// twice, a wrong rate) misses both by far.
			for trial := 1; ; trial++ {
				ok := accuracyTrial(t, c, trial == 2)
				if ok || trial == 2 {
					return
				}
				t.Logf("trial %d outside the 95%% bound; running an independent second trial", trial)
			}
		})
	}
}

type accuracyCase struct {
	name     string
	offloads bool   // TSO/GSO on the sender
	rate     uint32 // 1-in-N
	receiver bool   // sample the receiver's interface (GRO on) rather than the sender's
}

// accuracyTrial runs one measurement. It reports whether the estimate was within the bound;
// other failures (and, when final, the bound) fail t.
func accuracyTrial(t *testing.T, c accuracyCase, final bool) bool {
	offloads, rate := c.offloads, c.rate
	nsA, nsB := twoHosts(t)
	nsA.Offloads(t, "sa0", offloads)
	nsB.Offloads(t, "sb0", c.receiver)
	// Where the sidecar runs: the sender's namespace and interface, or the receiver's.
	side, ifc := nsA, "sa0"
	if c.receiver {
		side, ifc = nsB, "sb0"
	}
	var ifindex int
	_, _ = fmtSscan(side.Run(t, "cat", "/sys/class/net/"+ifc+"/ifindex"), &ifindex)
	nsB.Run(t, "nft", fmt.Sprintf(`add table ip6 acct
		add chain ip6 acct in { type filter hook input priority 0; policy accept; }
		add rule ip6 acct in ip6 flowlabel %d counter
		add rule ip6 acct in ip6 flowlabel %d counter`, assignedLabel, unassignedLabel))

	raw := listenCollector(t, side)
	an, anAddr := startAnalyzer(t, side, analyzer.Options{AssignedTags: []scitag.Tag{{ExperimentID: 2, ActivityID: 9}}})
	stop := startSampler(t, side, childSpec{Interfaces: []string{ifc}, Rate: rate,
		Collectors: []string{anAddr, raw.addr()}, Polling: 5 * time.Second, Flush: 200 * time.Millisecond})
	warmNeighbour(t, nsA, addrB)

	var wg sync.WaitGroup
	for i, label := range []int{assignedLabel, unassignedLabel} {
		port := 5301 + i
		startIperfServer(t, nsB, port)
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := nsA.Command("iperf3", "-6", "-c", addrB.String(), "-p", strconv.Itoa(port),
				"--flowlabel", strconv.Itoa(label), "-t", "3", "-J").CombinedOutput()
			if err != nil {
				t.Errorf("iperf3 --flowlabel %d: %v\n%s", label, err, out)
			}
		}()
	}
	wg.Wait()
	time.Sleep(500 * time.Millisecond)
	stop()

	truth := nftTruth(t, nsB.Run(t, "nft", "list", "table", "ip6", "acct"), assignedLabel, unassignedLabel)
	tot := an.Totals()
	got := tot["atlas.Debug"]
	want := truth[assignedLabel]
	bound := got.ErrorPercent / 100
	errFrac := (got.Bytes - want) / want

	// What the sampler saw of the assigned stream: the frame lengths, and the kernel's drops.
	var d sflow.Decoder
	var maxFrame, drops uint32
	for _, b := range raw.datagrams() {
		dg, err := d.Decode(b)
		if err != nil {
			t.Fatalf("our datagram does not decode: %v", err)
		}
		for _, s := range dg.FlowSamples {
			drops = max(drops, s.Drops)
			if p, ok := sflow.ParsePacket(s.Headers[0].Protocol, s.Headers[0].Header); ok && p.FlowLabel == assignedLabel {
				maxFrame = max(maxFrame, s.Headers[0].FrameLength)
				in, out := uint32(sflow.InterfaceInternal), uint32(ifindex)
				if c.receiver {
					in, out = out, in
				}
				if s.Input != in || s.Output != out {
					t.Errorf("data packet sampled with input %#x output %#x, want %#x %#x", s.Input, s.Output, in, out)
				}
			}
		}
	}
	t.Logf("%s, offloads %v, 1-in-%d: atlas.Debug estimate %.0f bytes from %d samples, truth %.0f: %+.2f%% (95%% bound %.2f%%); largest frame %d; kernel drops %d",
		ifc, offloads, rate, got.Bytes, got.Samples, want, 100*errFrac, 100*bound, maxFrame, drops)

	if got.Samples < 1000 {
		t.Fatalf("only %d samples of the assigned stream", got.Samples)
	}
	if offloads && maxFrame <= 1514 {
		t.Errorf("no super-frame sampled (largest %d bytes): the offload case did not happen", maxFrame)
	}
	if !offloads && maxFrame > 1514 {
		t.Errorf("a %d-byte frame with offloads off", maxFrame)
	}
	// The unassigned label's stream must not appear under its tag; its bytes are in unknown.
	if p, ok := tot["atlas.Production_Output"]; ok {
		t.Errorf("the unassigned label was reported as atlas.Production_Output: %+v", p)
	}
	for name := range tot {
		if name != "atlas.Debug" && name != analyzer.UnknownTag {
			t.Errorf("traffic reported under %q", name)
		}
	}
	if u := tot[analyzer.UnknownTag]; u.Bytes < truth[unassignedLabel]*(1-3*u.ErrorPercent/100) {
		t.Errorf("unknown holds %.0f bytes, less than the unassigned stream's %.0f", u.Bytes, truth[unassignedLabel])
	}
	within := math.Abs(errFrac) <= bound
	if !within && final {
		t.Errorf("estimate off by %+.2f%%, outside the 95%% bound of %.2f%% (second trial)", 100*errFrac, 100*bound)
	}
	return within
}

// startIperfServer runs a one-shot iperf3 server in ns and waits until it listens.
func startIperfServer(t testing.TB, ns *netns.NS, port int) {
	t.Helper()
	cmd := ns.Command("iperf3", "-s", "-1", "--forceflush", "-p", strconv.Itoa(port))
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening") {
				close(ready)
				break
			}
		}
		for sc.Scan() {
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("iperf3 server did not start")
	}
}

var nftCounter = regexp.MustCompile(`flowlabel (\d+) counter packets (\d+) bytes (\d+)`)

// nftTruth reads the per-label counters: bytes at the IPv6 layer plus an Ethernet header per
// packet (the sampled frame length includes it; offload super-frames count once, as on the tap).
func nftTruth(t *testing.T, listing string, labels ...uint32) map[uint32]float64 {
	t.Helper()
	out := map[uint32]float64{}
	for _, m := range nftCounter.FindAllStringSubmatch(listing, -1) {
		label, _ := strconv.Atoi(m[1])
		packets, _ := strconv.ParseFloat(m[2], 64)
		bytes, _ := strconv.ParseFloat(m[3], 64)
		out[uint32(label)] = bytes + 14*packets
	}
	for _, l := range labels {
		if out[l] == 0 {
			t.Fatalf("nft counter of label %d missing or zero:\n%s", l, listing)
		}
	}
	return out
}
