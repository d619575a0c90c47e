package sampler

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/scitag"
	"github.com/scitunnel/scitunnel/dataplane/telemetry/analyzer"
	"github.com/scitunnel/scitunnel/internal/testutil/netns"
	"github.com/scitunnel/scitunnel/test/onoff"
)

// BenchmarkThroughputSamplerOnOff measures what the sampler costs the traffic it samples:
// iperf3 over a veth pair between two namespaces (offloads as a pod's veth has them), one long
// run during which the sidecar (sampler at 1-in-1000 plus analyzer) on the sender's interface
// is started and stopped every second. It reports the mean ratio of each on phase to the off
// phases beside it, with its 95% interval (target: at least 0.98); package onoff says why not
// separate runs.
func BenchmarkThroughputSamplerOnOff(b *testing.B) {
	netns.Require(b, "iperf3")
	nsA, nsB := twoHosts(b)
	warmNeighbour(b, nsA, addrB)
	const total, phase = 120 * time.Second, time.Second
	port := 5600
	for b.Loop() {
		port++
		startIperfServer(b, nsB, port)
		args := append([]string{"iperf3", "-6", "-c", addrB.String(), "-p", strconv.Itoa(port), "--flowlabel", "65572"}, onoff.IperfArgs(total)...)
		var stop func()
		var an *analyzer.Analyzer
		ons, sampled := 0, 0
		on := func() error {
			ons++
			var anAddr string
			an, anAddr = startAnalyzer(b, nsA, analyzer.Options{AssignedTags: []scitag.Tag{{ExperimentID: 2, ActivityID: 9}}})
			stop = startSampler(b, nsA, childSpec{Interfaces: []string{"sa0"}, Rate: 1000,
				Collectors: []string{anAddr}, Polling: 20 * time.Second, Flush: time.Second})
			return nil
		}
		off := func() error {
			stop()
			if an.Totals()["atlas.Debug"].Samples > 0 {
				sampled++
			}
			return nil
		}
		res, err := onoff.Measure(context.Background(), nsA.Command(args...), total, phase, on, off)
		if err != nil {
			b.Fatal(err) // on and off never fail: iperf3 did, after the last stop
		}
		if sampled < ons*9/10 {
			b.Fatalf("the sampler sampled the stream in only %d of %d on phases", sampled, ons)
		}
		b.Logf("sidecar toggled every %s in one %s run: on/off %.3f, 95%% interval %.3f to %.3f over %d phase pairs (goal >= 0.98: %s); median %.3f, range %.2f to %.2f; pooled on %.2f Gbit/s, off %.2f",
			phase, total, res.Mean, res.CILo, res.CIHi, res.Pairs, res.Verdict(0.98), res.Median, res.Lo, res.Hi, res.OnGbps, res.OffGbps)
		b.ReportMetric(res.OffGbps, "off-Gbit/s")
		b.ReportMetric(res.OnGbps, "on-Gbit/s")
		b.ReportMetric(res.Mean, "on/off")
		b.ReportMetric(res.CILo, "on/off-95%-low")
	}
}
