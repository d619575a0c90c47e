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

// printGoals compares against the data plane's performance goals (issue #3), measured in this
// same run. It reports; it does not fail, because a loaded machine skews every path.
func printGoals(results []result, runs [][]result, toggles []toggleResult, streams []int) {
	fmt.Println()
	fmt.Println("goals (this run):")
	report := func(state, what, detail string) {
		if state == "n/a" && len(results) == 0 {
			return // a run of -sampler-toggle alone: the paths' goals were not measured
		}
		fmt.Printf("  %-9s %-48s %s\n", state, what, detail)
	}
	check := func(what string, ok, known bool, detail string) {
		state := "met"
		switch {
		case !known:
			state = "n/a"
		case !ok:
			state = "MISSED"
		}
		report(state, what, detail)
	}
	for _, s := range streams {
		tls, okT := find(results, "scitunnel-tls", s)
		tcp, okP := find(results, "scitunnel-tcp", s)
		st, okS := find(results, "stunnel4", s)
		ha, okH := find(results, "haproxy", s)
		di, okD := find(results, "direct", s)
		check(fmt.Sprintf("P=%d TLS pair >= 1.5x stunnel4", s), tls.gbps >= 1.5*st.gbps, okT && okS, ratio(tls.gbps, st.gbps))
		check(fmt.Sprintf("P=%d TLS pair >= 2x haproxy", s), tls.gbps >= 2*ha.gbps, okT && okH, ratio(tls.gbps, ha.gbps))
		check(fmt.Sprintf("P=%d TCP pair >= 0.7x direct", s), tcp.gbps >= 0.7*di.gbps, okP && okD, ratio(tcp.gbps, di.gbps))
		check(fmt.Sprintf("P=%d TLS pair CPU per Gbit < stunnel4's", s), tls.cpuPerGbit() < st.cpuPerGbit(), okT && okS,
			fmt.Sprintf("%.3f vs %.3f s/Gbit", tls.cpuPerGbit(), st.cpuPerGbit()))
		on, lo, hi, okSm := pairedRatio(runs, "tls+sampler", "scitunnel-tls", s)
		spread := ""
		if len(runs) > 1 {
			spread = fmt.Sprintf(" (median of %d rounds' on/off ratios; rounds %.2f to %.2f; indicative: -sampler-toggle measures it)", len(runs), lo, hi)
		}
		// Separate rounds drift more than the goal's 2%, so the rounds' range decides, as the
		// toggle's confidence interval does: met only if every round meets it.
		state := "n/a"
		if okSm {
			state = onoff.IntervalVerdict(lo, hi, 0.98)
		}
		report(state, fmt.Sprintf("P=%d TLS pair, sampler 1-in-1000 >= 0.98x off", s), fmt.Sprintf("%.3fx%s", on, spread))
		for _, t := range toggles {
			if t.streams == s {
				fmt.Printf("  %-9s %-48s %.3fx, 95%% interval %.3f to %.3f (%d phase pairs)\n", t.Verdict(0.98),
					fmt.Sprintf("P=%d same, sidecar toggled within one run", s), t.Mean, t.CILo, t.CIHi, t.Pairs)
			}
		}
	}
	d, t, s := latency(results, "direct"), latency(results, "scitunnel-tls"), latency(results, "stunnel4")
	known := d.rttP50 > 0 && t.rttP50 > 0 && s.rttP50 > 0
	check("1 KiB ping-pong: TLS pair adds <= stunnel4", t.rttP50-d.rttP50 <= s.rttP50-d.rttP50, known,
		fmt.Sprintf("+%s vs +%s", us(t.rttP50-d.rttP50), us(s.rttP50-d.rttP50)))
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
