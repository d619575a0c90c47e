package onoff

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"
)

// iperfJSON is a report of 250 ms intervals whose rate is rate(start).
func iperfJSON(t *testing.T, total time.Duration, rate func(start time.Duration) float64) []byte {
	t.Helper()
	type sum struct {
		Start         float64 `json:"start"`
		End           float64 `json:"end"`
		BitsPerSecond float64 `json:"bits_per_second"`
	}
	type iv struct {
		Sum sum `json:"sum"`
	}
	var report struct {
		Intervals []iv `json:"intervals"`
	}
	for s := time.Duration(0); s < total; s += Interval {
		report.Intervals = append(report.Intervals, iv{sum{s.Seconds(), (s + Interval).Seconds(), rate(s) * 1e9}})
	}
	b, err := json.Marshal(report)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// transitions every 2 s from 1 s, each taking 50 ms, as Toggle makes them for a 20 s run.
func transitions(total time.Duration) []Transition {
	var ts []Transition
	on := false
	for at := warmUp + 2*time.Second; at+2*time.Second <= total || on; at += 2 * time.Second {
		on = !on
		ts = append(ts, Transition{Begin: at, End: at + 50*time.Millisecond, On: on})
	}
	return ts
}

func TestSummarizeSeesACostUnderDrift(t *testing.T) {
	const total = 20 * time.Second
	ts := transitions(total)
	isOn := func(at time.Duration) bool {
		on := false
		for _, tr := range ts {
			if at >= tr.Begin {
				on = tr.On
			}
		}
		return on
	}
	// The machine drifts from 10 to 6 Gbit/s over the run (40%, far more than the cost); the
	// thing costs 3% while on.
	rate := func(at time.Duration) float64 {
		r := 10 - 4*at.Seconds()/total.Seconds()
		if isOn(at) {
			r *= 0.97
		}
		return r
	}
	res, err := Summarize(iperfJSON(t, total, rate), ts, total)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pairs != 4 {
		t.Errorf("%d pairs, want 4 (on phases 1, 3, 5, 7 of %d transitions)", res.Pairs, len(ts))
	}
	if math.Abs(res.Median-0.97) > 0.003 || math.Abs(res.Mean-0.97) > 0.003 {
		t.Errorf("on/off median %.4f, mean %.4f, want 0.97: the drift leaked into the ratio", res.Median, res.Mean)
	}
	if res.Verdict(0.98) != "MISSED" || res.Verdict(0.96) != "met" {
		t.Errorf("a steady 0.97x with 95%% interval %.4f..%.4f: verdicts %q at 0.98, %q at 0.96", res.CILo, res.CIHi, res.Verdict(0.98), res.Verdict(0.96))
	}
	if res.OnShare < 0.35 || res.OnShare > 0.45 {
		t.Errorf("on for %.2f of the run, want 8 s of 20", res.OnShare)
	}
}

func TestSummarizeDropsIntervalsNearATransition(t *testing.T) {
	const total = 20 * time.Second
	ts := transitions(total)
	// A burst of start-up work halves the rate for 100 ms after each transition ends, and the
	// warm-up is slow: none of it may count.
	rate := func(at time.Duration) float64 {
		if at < warmUp {
			return 1
		}
		for _, tr := range ts {
			if at >= tr.Begin-Interval && at < tr.End+100*time.Millisecond {
				return 5
			}
		}
		return 10
	}
	res, err := Summarize(iperfJSON(t, total, rate), ts, total)
	if err != nil {
		t.Fatal(err)
	}
	if res.Median != 1 || res.Lo != 1 || res.Hi != 1 || res.OnGbps != 10 || res.OffGbps != 10 {
		t.Errorf("%+v: intervals near a transition or in the warm-up were counted", res)
	}
}

func TestSummarizeNeedsOffPhasesOnBothSides(t *testing.T) {
	ts := []Transition{{Begin: 2 * time.Second, End: 2 * time.Second, On: true}}
	if _, err := Summarize(iperfJSON(t, 5*time.Second, func(time.Duration) float64 { return 1 }), ts, 5*time.Second); err == nil {
		t.Error("a run that ends while on gave a ratio")
	}
	if _, err := Summarize([]byte(`{"error":"unable to connect"}`), nil, time.Second); err == nil {
		t.Error("iperf3's error was not reported")
	}
}

func TestToggleEndsOffWithAWholeOffPhase(t *testing.T) {
	const total, phase = 1600 * time.Millisecond, 100 * time.Millisecond
	var ons, offs int
	ts, err := Toggle(context.Background(), time.Now(), total, phase,
		func() error { ons++; return nil }, func() error { offs++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	// Starts at 1.1, 1.3, 1.5 s would stop at 1.2, 1.4, 1.6; 1.5 leaves no off phase before 1.6.
	if ons != 2 || offs != 2 || len(ts) != 4 || !ts[0].On || ts[3].On {
		t.Fatalf("%d starts, %d stops, transitions %+v", ons, offs, ts)
	}
	for i, tr := range ts {
		want := warmUp + time.Duration(i+1)*phase
		if tr.Begin < want || tr.Begin > want+50*time.Millisecond || tr.End < tr.Begin {
			t.Errorf("transition %d at %v..%v, want from %v", i, tr.Begin, tr.End, want)
		}
	}
}

func TestConfidenceInterval(t *testing.T) {
	// Ratios around 0.99 with a spread of 6%: the interval holds 0.99 and is about
	// 2.09*0.06/sqrt(20) = 2.8% either side.
	var ratios []float64
	for i := range 20 {
		d := 0.06
		if i%2 == 0 {
			d = -d
		}
		ratios = append(ratios, 0.99*math.Exp(d))
	}
	mean, lo, hi := meanWithCI(ratios)
	if math.Abs(mean-0.99) > 1e-9 {
		t.Errorf("geometric mean %v, want 0.99", mean)
	}
	if half := math.Log(hi / mean); math.Abs(half-2.09*0.0615/math.Sqrt(20)) > 0.001 || math.Abs(math.Log(mean/lo)-half) > 1e-9 {
		t.Errorf("interval %v..%v", lo, hi)
	}
	if v := (Result{Pairs: 20, Mean: mean, CILo: lo, CIHi: hi}).Verdict(0.98); v != "not shown" {
		t.Errorf("an interval straddling the goal: %q", v)
	}
}

func TestIntervalVerdict(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		want   string
	}{
		{0.98, 1.02, "met"}, // at the goal counts as meeting it
		{0.90, 0.979, "MISSED"},
		{0.97, 1.01, "not shown"},
		{0.85, 1.02, "not shown"}, // bench-tunnel's separate rounds, spread wider than the goal
	} {
		if got := IntervalVerdict(c.lo, c.hi, 0.98); got != c.want {
			t.Errorf("%.3f..%.3f against 0.98: %q, want %q", c.lo, c.hi, got, c.want)
		}
	}
}
