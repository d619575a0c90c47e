package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/scitunnel/scitunnel/test/onoff"
)

func printHeader(b *bench) {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "model name") {
				_, cpu, _ = strings.Cut(line, ": ")
				break
			}
		}
	}
	fmt.Printf("bench-tunnel: IPv6 loopback, %d s per run after 1 s warm-up, %d CPUs (%s), %s\n",
		b.seconds, runtime.NumCPU(), cpu, time.Now().UTC().Format(time.RFC3339))
	fmt.Println("measuring:")
}

func find(results []result, path string, streams int) (result, bool) {
	for _, r := range results {
		if r.path == path && r.streams == streams && r.skipped == "" && r.gbps > 0 {
			return r, true
		}
	}
	return result{}, false
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func printTable(results []result, streams []int) {
	fmt.Println()
	fmt.Printf("%-14s %3s %8s %9s %11s %10s %11s %15s\n", "path", "P", "Gbit/s", "x direct", "x stunnel4", "x haproxy", "CPU s/Gbit", "CPU x stunnel4")
	for _, s := range streams {
		direct, _ := find(results, "direct", s)
		stunnel, _ := find(results, "stunnel4", s)
		haproxy, _ := find(results, "haproxy", s)
		for _, r := range results {
			if r.streams != s {
				continue
			}
			if r.skipped != "" {
				fmt.Printf("%-14s %3d  skipped: %s\n", r.path, s, r.skipped)
				continue
			}
			cpu, cpuRatio := "-", "-"
			if r.path != "direct" {
				cpu = fmt.Sprintf("%.3f", r.cpuPerGbit())
				cpuRatio = ratio(r.cpuPerGbit(), stunnel.cpuPerGbit())
			}
			fmt.Printf("%-14s %3d %8.2f %9s %11s %10s %11s %15s\n", r.path, s, r.gbps,
				ratio(r.gbps, direct.gbps), ratio(r.gbps, stunnel.gbps), ratio(r.gbps, haproxy.gbps), cpu, cpuRatio)
		}
	}

	fmt.Println()
	fmt.Printf("%-14s %12s %12s %18s %11s\n", "path", "1KiB RTT p50", "p99", "added p50 vs direct", "x stunnel4")
	direct := latency(results, "direct")
	stunnel := latency(results, "stunnel4")
	for _, r := range results {
		if r.streams != streams[0] || r.rttP50 == 0 {
			continue
		}
		added, addedRatio := "-", "-"
		if r.path != "direct" && direct.rttP50 > 0 {
			added = us(r.rttP50 - direct.rttP50)
			if stunnel.rttP50 > 0 {
				addedRatio = ratio(float64(r.rttP50-direct.rttP50), float64(stunnel.rttP50-direct.rttP50))
			}
		}
		fmt.Printf("%-14s %12s %12s %18s %11s\n", r.path, us(r.rttP50), us(r.rttP99), added, addedRatio)
	}
}

func latency(results []result, path string) result {
	for _, r := range results {
		if r.path == path && r.rttP50 > 0 {
			return r
		}
	}
	return result{}
}

// The data plane's performance goals, each checked at every stream count measured (bench-tunnel
// runs 1 and 4 by default). Throughput ratios are higher-is-better, CPU per Gbit lower-is-better.
const (
	// goalTLSOverStunnel: our TLS pair carries at least this times stunnel4's throughput.
	goalTLSOverStunnel = 1.1
	// goalTLSOverTCP: our TLS pair carries at least this times our own no-crypto (TCP) pair's
	// throughput: what TLS costs us, whatever the machine.
	goalTLSOverTCP = 0.85
	// goalCPUOverStunnel: our TLS pair spends at most this times stunnel4's CPU per Gbit.
	goalCPUOverStunnel = 0.85
	// goalSamplerOnOff: the TLS pair with the sFlow sampler on (1-in-1000) carries at least this
	// times its throughput with the sampler off.
	goalSamplerOnOff = 0.98
)

// verdict is one goal's line: its state ("met", "MISSED", "not shown" when the measurement's
// spread straddles the goal, "n/a" when a figure it needs was not measured), what the goal is,
// and the figures behind the state.
type verdict struct {
	state, what, detail string
}

// atLeast reads a higher-is-better ratio have/of against goal; atMost a lower-is-better one.
// known says both figures were measured; a figure of zero counts as not measured.
func atLeast(have, of, goal float64, known bool) string {
	return pointVerdict(known && have > 0 && of > 0, have >= goal*of)
}

func atMost(have, of, goal float64, known bool) string {
	return pointVerdict(known && have > 0 && of > 0, have <= goal*of)
}

func pointVerdict(known, ok bool) string {
	switch {
	case !known:
		return "n/a"
	case !ok:
		return "MISSED"
	}
	return "met"
}

// goalVerdicts checks results (the medians over runs) and the sampler toggles against the goals,
// stream count by stream count. It reports; it does not fail, because a loaded machine skews
// every path.
func goalVerdicts(results []result, runs [][]result, toggles []toggleResult, streams []int) []verdict {
	var out []verdict
	for _, s := range streams {
		tls, okT := find(results, "scitunnel-tls", s)
		tcp, okP := find(results, "scitunnel-tcp", s)
		st, okS := find(results, "stunnel4", s)
		out = append(out,
			verdict{atLeast(tls.gbps, st.gbps, goalTLSOverStunnel, okT && okS),
				fmt.Sprintf("P=%d TLS pair >= %.2gx stunnel4", s, goalTLSOverStunnel),
				ratio(tls.gbps, st.gbps)},
			verdict{atLeast(tls.gbps, tcp.gbps, goalTLSOverTCP, okT && okP),
				fmt.Sprintf("P=%d TLS pair >= %.2gx our TCP pair", s, goalTLSOverTCP),
				ratio(tls.gbps, tcp.gbps)},
			verdict{atMost(tls.cpuPerGbit(), st.cpuPerGbit(), goalCPUOverStunnel, okT && okS),
				fmt.Sprintf("P=%d TLS pair CPU per Gbit <= %.2gx stunnel4's", s, goalCPUOverStunnel),
				fmt.Sprintf("%s (%.3f vs %.3f s/Gbit)", ratio(tls.cpuPerGbit(), st.cpuPerGbit()), tls.cpuPerGbit(), st.cpuPerGbit())})

		on, lo, hi, okSm := pairedRatio(runs, "tls+sampler", "scitunnel-tls", s)
		spread := ""
		if len(runs) > 1 {
			spread = fmt.Sprintf(" (median of %d rounds' on/off ratios; rounds %.2f to %.2f; indicative: -sampler-toggle measures it)", len(runs), lo, hi)
		}
		// Separate rounds drift more than the goal's 2%, so the rounds' range decides, as the
		// toggle's confidence interval does: met only if every round meets it.
		state := "n/a"
		if okSm {
			state = onoff.IntervalVerdict(lo, hi, goalSamplerOnOff)
		}
		out = append(out, verdict{state, fmt.Sprintf("P=%d TLS pair, sampler 1-in-1000 >= %.2gx off", s, goalSamplerOnOff),
			fmt.Sprintf("%.3fx%s", on, spread)})
		for _, t := range toggles {
			if t.streams == s {
				out = append(out, verdict{t.Verdict(goalSamplerOnOff), fmt.Sprintf("P=%d same, sidecar toggled within one run", s),
					fmt.Sprintf("%.3fx, 95%% interval %.3f to %.3f (%d phase pairs)", t.Mean, t.CILo, t.CIHi, t.Pairs)})
			}
		}
	}
	return out
}

// printGoals prints goalVerdicts, then figures that were goals once and are worth watching.
func printGoals(results []result, runs [][]result, toggles []toggleResult, streams []int) {
	fmt.Println()
	fmt.Println("goals (this run):")
	for _, v := range goalVerdicts(results, runs, toggles, streams) {
		if v.state == "n/a" && len(results) == 0 {
			continue // a run of -sampler-toggle alone: the paths' goals were not measured
		}
		fmt.Printf("  %-9s %-48s %s\n", v.state, v.what, v.detail)
	}
	if len(results) == 0 {
		return
	}
	fmt.Println("for information (not goals):")
	for _, s := range streams {
		tls, _ := find(results, "scitunnel-tls", s)
		tcp, _ := find(results, "scitunnel-tcp", s)
		ha, _ := find(results, "haproxy", s)
		di, _ := find(results, "direct", s)
		fmt.Printf("  %-9s %-48s %s\n", "", fmt.Sprintf("P=%d TLS pair x haproxy", s), ratio(tls.gbps, ha.gbps))
		fmt.Printf("  %-9s %-48s %s\n", "", fmt.Sprintf("P=%d TCP pair x direct", s), ratio(tcp.gbps, di.gbps))
	}
	d, t, st := latency(results, "direct"), latency(results, "scitunnel-tls"), latency(results, "stunnel4")
	if d.rttP50 > 0 && t.rttP50 > 0 && st.rttP50 > 0 {
		fmt.Printf("  %-9s %-48s %s\n", "", "1 KiB ping-pong p50 added: TLS pair vs stunnel4",
			fmt.Sprintf("+%s vs +%s", us(t.rttP50-d.rttP50), us(st.rttP50-d.rttP50)))
	}
}

// pairedRatio is the median over rounds of path num's throughput over path den's in the same
// round, with the smallest and largest round. Pairing within a round cancels the machine's
// drift between rounds, which the ratio of two medians keeps.
func pairedRatio(runs [][]result, num, den string, streams int) (median, lo, hi float64, ok bool) {
	var ratios []float64
	for _, run := range runs {
		n, okN := find(run, num, streams)
		d, okD := find(run, den, streams)
		if okN && okD {
			ratios = append(ratios, n.gbps/d.gbps)
		}
	}
	if len(ratios) == 0 {
		return 0, 0, 0, false
	}
	slices.Sort(ratios)
	return ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1], true
}
