package main

import (
	"testing"

	"github.com/scitunnel/scitunnel/test/onoff"
)

// measured is a result whose CPU per Gbit is cpuPerGbit, over a 10 s run at gbps.
func measured(path string, streams int, gbps, cpuPerGbit float64) result {
	return result{path: path, streams: streams, gbps: gbps, carriedGbit: 10 * gbps, cpuSeconds: cpuPerGbit * 10 * gbps}
}

func TestPointVerdicts(t *testing.T) {
	for _, c := range []struct {
		name, got, want string
	}{
		{"higher is better, above", atLeast(12, 10, 1.1, true), "met"},
		{"higher is better, at the goal", atLeast(11, 10, 1.1, true), "met"},
		{"higher is better, below", atLeast(10.9, 10, 1.1, true), "MISSED"},
		{"higher is better, not measured", atLeast(12, 10, 1.1, false), "n/a"},
		{"higher is better, reference zero", atLeast(12, 0, 1.1, true), "n/a"},
		{"lower is better, below", atMost(0.8, 1, 0.85, true), "met"},
		{"lower is better, at the goal", atMost(0.45, 0.5, 0.9, true), "met"},
		{"lower is better, above", atMost(0.9, 1, 0.85, true), "MISSED"},
		{"lower is better, above 1x", atMost(1.2, 1, 1.1, true), "MISSED"},
		{"lower is better, figure zero", atMost(0, 1, 0.85, true), "n/a"},
		{"lower is better, not measured", atMost(0.5, 1, 0.85, false), "n/a"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %q, want %q", c.name, c.got, c.want)
		}
	}
}

func states(vs []verdict) map[string]string {
	m := map[string]string{}
	for _, v := range vs {
		m[v.what] = v.state
	}
	return m
}

func TestGoalVerdicts(t *testing.T) {
	results := []result{
		// P=1: every goal met. TLS 1.2x stunnel4, 0.9x TCP, 0.5x stunnel4's CPU per Gbit.
		measured("direct", 1, 40, 0),
		measured("scitunnel-tls", 1, 12, 0.5),
		measured("scitunnel-tcp", 1, 13.3, 0.2),
		measured("stunnel4", 1, 10, 1.0),
		measured("haproxy", 1, 11, 1.0), // haproxy and direct are no longer goals
		// P=4: TLS 1.05x stunnel4 (MISSED), 0.8x TCP (MISSED), 0.9x stunnel4's CPU (MISSED:
		// lower is better, and 0.9 > 0.85).
		measured("direct", 4, 40, 0),
		measured("scitunnel-tls", 4, 10.5, 0.9),
		measured("scitunnel-tcp", 4, 13.125, 0.2),
		measured("stunnel4", 4, 10, 1.0),
	}
	runs := [][]result{
		{measured("scitunnel-tls", 1, 10, 0.5), measured("tls+sampler", 1, 9.9, 0.5)},
		{measured("scitunnel-tls", 1, 10, 0.5), measured("tls+sampler", 1, 9.85, 0.5)},
	}
	toggles := []toggleResult{{streams: 4, Result: onoff.Result{Pairs: 20, Mean: 0.97, CILo: 0.95, CIHi: 0.99}}}
	got := states(goalVerdicts(results, runs, toggles, []int{1, 4}))
	want := map[string]string{
		"P=1 TLS pair >= 1.1x stunnel4":                 "met",
		"P=1 TLS pair >= 0.85x our TCP pair":            "met",
		"P=1 TLS pair CPU per Gbit <= 0.85x stunnel4's": "met",
		"P=1 TLS pair, sampler 1-in-1000 >= 0.98x off":  "met",
		"P=4 TLS pair >= 1.1x stunnel4":                 "MISSED",
		"P=4 TLS pair >= 0.85x our TCP pair":            "MISSED",
		"P=4 TLS pair CPU per Gbit <= 0.85x stunnel4's": "MISSED",
		"P=4 TLS pair, sampler 1-in-1000 >= 0.98x off":  "n/a",
		"P=4 same, sidecar toggled within one run":      "not shown",
	}
	for what, state := range want {
		if got[what] != state {
			t.Errorf("%s: %q, want %q", what, got[what], state)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d goals, want %d: %v", len(got), len(want), got)
	}
}

func TestGoalVerdictsNotMeasured(t *testing.T) {
	// stunnel4 not installed: its goals are n/a, the TCP pair's still read.
	results := []result{
		measured("scitunnel-tls", 1, 9, 0.5),
		measured("scitunnel-tcp", 1, 10, 0.2),
		{path: "stunnel4", streams: 1, skipped: "stunnel4 not installed"},
	}
	got := states(goalVerdicts(results, [][]result{results}, nil, []int{1}))
	for what, state := range map[string]string{
		"P=1 TLS pair >= 1.1x stunnel4":                 "n/a",
		"P=1 TLS pair >= 0.85x our TCP pair":            "met",
		"P=1 TLS pair CPU per Gbit <= 0.85x stunnel4's": "n/a",
		"P=1 TLS pair, sampler 1-in-1000 >= 0.98x off":  "n/a",
	} {
		if got[what] != state {
			t.Errorf("%s: %q, want %q", what, got[what], state)
		}
	}
}
