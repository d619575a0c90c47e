package sampler

import (
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/analyzer"
	"github.com/scitunnel/scitunnel/dataplane/netnstest"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

// BenchmarkThroughputSamplerOnOff measures what the sampler costs the traffic it samples:
// iperf3 over a veth pair between two namespaces (offloads as a pod's veth has them), in
// alternating rounds with no sampler and with the sidecar (sampler at 1-in-1000 plus analyzer)
// on the sender's interface, and reports the ratio of the medians (target: at least 0.98).
func BenchmarkThroughputSamplerOnOff(b *testing.B) {
	netnstest.Require(b, "iperf3")
	nsA, nsB := twoHosts(b)
	warmNeighbour(b, nsA, addrB)
	// Odd, and enough that the medians of a shared 2-core machine hold still to about 1%.
	const rounds = 9
	port := 5600
	run := func() float64 {
		port++
		startIperfServer(b, nsB, port)
		out, err := nsA.Command("iperf3", "-6", "-c", addrB.String(), "-p", strconv.Itoa(port),
			"--flowlabel", "65572", "-t", "3", "-J").Output()
		if err != nil {
			b.Fatalf("iperf3: %v\n%s", err, out)
		}
		var r struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if err := json.Unmarshal(out, &r); err != nil || r.End.SumReceived.BitsPerSecond == 0 {
			b.Fatalf("iperf3 JSON: %v\n%s", err, out)
		}
		return r.End.SumReceived.BitsPerSecond
	}
	var off, on []float64
	for b.Loop() {
		for range rounds {
			off = append(off, run())
			an, anAddr := startAnalyzer(b, nsA, analyzer.Options{AssignedTags: []scitag.Tag{{ExperimentID: 2, ActivityID: 9}}})
			stop := startSampler(b, nsA, childSpec{Interfaces: []string{"sa0"}, Rate: 1000,
				Collectors: []string{anAddr}, Polling: 20 * time.Second, Flush: time.Second})
			on = append(on, run())
			stop()
			if an.Totals()["atlas.Debug"].Samples == 0 {
				b.Fatal("the sampler sampled nothing while on")
			}
		}
	}
	slices.Sort(off)
	slices.Sort(on)
	mOff, mOn := off[len(off)/2], on[len(on)/2]
	b.Logf("sampler off: %.2f Gbit/s (rounds %v); on at 1-in-1000: %.2f Gbit/s (rounds %v)", mOff/1e9, gbit(off), mOn/1e9, gbit(on))
	b.ReportMetric(mOff/1e9, "off-Gbit/s")
	b.ReportMetric(mOn/1e9, "on-Gbit/s")
	b.ReportMetric(mOn/mOff, "on/off")
}

func gbit(v []float64) []string {
	var out []string
	for _, x := range v {
		out = append(out, strconv.FormatFloat(x/1e9, 'f', 2, 64))
	}
	return out
}
