// Package onoff measures what switching something on costs a stream's throughput, on a machine
// whose throughput drifts by more than that cost.
//
// Separate runs with and without the thing measured (the sFlow sidecar, say) are seconds apart,
// and on a shared 2-core machine their throughput differs by 10 to 20% for reasons of its own
// (other tenants, CPU steal): they cannot tell 0.97x from 1.00x. Here one long iperf3 run reports
// every Interval while Toggle starts and stops the thing every phase. Summarize then compares
// each "on" phase with the "off" phases on either side of it and reports the mean of those
// ratios (geometric, so 0.5x and 2x cancel) with its 95% confidence interval: whether a goal
// such as ">= 0.98x" is met, missed or not yet shown is read from the interval, not guessed
// from one figure. The intervals around each start and stop are dropped, so start-up work and
// the misalignment of iperf3's clock with ours do not count.
package onoff

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"slices"
	"strconv"
	"time"
)

const (
	// Interval is the iperf3 reporting interval to run with (IperfArgs).
	Interval = 250 * time.Millisecond
	// guard is dropped on each side of a start or stop.
	guard = 150 * time.Millisecond
	// warmUp is the connection's start, dropped.
	warmUp = time.Second
)

// IperfArgs are the iperf3 client arguments for a run of total length with the reporting
// interval Summarize expects, in JSON.
func IperfArgs(total time.Duration) []string {
	return []string{"-t", strconv.Itoa(int(total.Seconds())), "-i", strconv.FormatFloat(Interval.Seconds(), 'f', 2, 64), "-J"}
}

// Transition is one start or stop, in time since iperf3 was launched.
type Transition struct {
	Begin, End time.Duration
	On         bool // the state after it
}

// Toggle starts (on) and stops (off) the thing measured every phase, from one second after
// launched, as long as a whole off phase still fits before total after the next stop: the run
// begins and ends with it off. It returns when the last stop is done, with every transition.
func Toggle(ctx context.Context, launched time.Time, total, phase time.Duration, on, off func() error) ([]Transition, error) {
	var ts []Transition
	state := false
	for n := 1; state || warmUp+time.Duration(n+2)*phase <= total; n++ {
		select {
		case <-time.After(time.Until(launched.Add(warmUp + time.Duration(n)*phase))):
		case <-ctx.Done():
			return ts, ctx.Err()
		}
		begin := time.Since(launched)
		switch {
		case state:
			if err := off(); err != nil {
				return ts, err
			}
		default:
			if err := on(); err != nil {
				return ts, err
			}
		}
		state = !state
		ts = append(ts, Transition{Begin: begin, End: time.Since(launched), On: state})
	}
	return ts, nil
}

// Measure runs iperf, an iperf3 client given IperfArgs(total), while Toggle switches the thing
// on and off every phase, and summarizes iperf3's report. If it fails while the thing is on, the
// caller switches it off.
func Measure(ctx context.Context, iperf *exec.Cmd, total, phase time.Duration, on, off func() error) (Result, error) {
	var report bytes.Buffer
	iperf.Stdout = &report
	launched := time.Now()
	if err := iperf.Start(); err != nil {
		return Result{}, fmt.Errorf("iperf3: %w", err)
	}
	ts, err := Toggle(ctx, launched, total, phase, on, off)
	if err != nil {
		_ = iperf.Process.Kill()
		_ = iperf.Wait()
		return Result{}, err
	}
	if err := iperf.Wait(); err != nil {
		return Result{}, fmt.Errorf("iperf3: %w\n%s", err, report.String())
	}
	return Summarize(report.Bytes(), ts, total)
}

// Result compares the on phases with the off phases.
type Result struct {
	Pairs           int     // on phases with off phases on both sides
	Mean            float64 // the geometric mean of the on/off phase ratios
	CILo, CIHi      float64 // its 95% confidence interval
	Median, Lo, Hi  float64 // the median, smallest and largest on/off phase ratio
	OnGbps, OffGbps float64 // pooled over all clean on (off) intervals
	OnShare         float64 // the fraction of the run it was on
}

// Summarize assigns every clean interval of iperf3's JSON report to the phase it lies in and
// pairs each on phase with its off neighbours.
func Summarize(iperfJSON []byte, ts []Transition, total time.Duration) (Result, error) {
	intervals, err := parseIntervals(iperfJSON)
	if err != nil {
		return Result{}, err
	}
	var res Result
	// Phase k is the time after transition k-1; phase 0, before the first, is off.
	sums := make([]float64, len(ts)+1)
	counts := make([]int, len(ts)+1)
	var pooled [2]float64
	var pooledN [2]int
	for _, iv := range intervals {
		k, ok := phaseOf(iv, ts)
		if !ok {
			continue
		}
		sums[k] += iv.gbps
		counts[k]++
		pooled[k%2] += iv.gbps
		pooledN[k%2]++
	}
	mean := func(k int) (float64, bool) {
		if k < 0 || k >= len(sums) || counts[k] == 0 {
			return 0, false
		}
		return sums[k] / float64(counts[k]), true
	}
	var ratios []float64
	for k := 1; k < len(sums); k += 2 {
		on, okOn := mean(k)
		before, okB := mean(k - 1)
		after, okA := mean(k + 1)
		if okOn && okB && okA {
			ratios = append(ratios, on/((before+after)/2))
		}
	}
	if pooledN[0] > 0 && pooledN[1] > 0 {
		res.OffGbps, res.OnGbps = pooled[0]/float64(pooledN[0]), pooled[1]/float64(pooledN[1])
	}
	var onTime time.Duration
	for i := 0; i+1 < len(ts); i += 2 {
		onTime += ts[i+1].Begin - ts[i].End
	}
	res.OnShare = onTime.Seconds() / total.Seconds()
	res.Pairs = len(ratios)
	if len(ratios) == 0 {
		return res, fmt.Errorf("no on phase with clean off phases on both sides (%d intervals, %d transitions)", len(intervals), len(ts))
	}
	res.Mean, res.CILo, res.CIHi = meanWithCI(ratios)
	slices.Sort(ratios)
	res.Median, res.Lo, res.Hi = ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1]
	return res, nil
}

// meanWithCI is the geometric mean of ratios and its 95% confidence interval, from the mean and
// standard error of their logarithms with Student's t (1.96 + 2.5/df is within 1% of its
// 97.5% quantile from 5 degrees of freedom up). With one ratio the interval is unbounded.
func meanWithCI(ratios []float64) (mean, lo, hi float64) {
	n := float64(len(ratios))
	var sum float64
	for _, r := range ratios {
		sum += math.Log(r)
	}
	m := sum / n
	if len(ratios) < 2 {
		return math.Exp(m), 0, math.Inf(1)
	}
	var ss float64
	for _, r := range ratios {
		ss += (math.Log(r) - m) * (math.Log(r) - m)
	}
	se := math.Sqrt(ss/(n-1)) / math.Sqrt(n)
	t := 1.96 + 2.5/(n-1)
	return math.Exp(m), math.Exp(m - t*se), math.Exp(m + t*se)
}

// Verdict says whether the result shows the ratio at least goal: "met" when the whole
// confidence interval lies at or above it, "MISSED" when it lies wholly below, and "not shown"
// when it straddles the goal (the run was too short or too noisy to tell).
func (r Result) Verdict(goal float64) string {
	if r.Pairs == 0 {
		return "n/a"
	}
	return IntervalVerdict(r.CILo, r.CIHi, goal)
}

// IntervalVerdict reads "at least goal" from a range the true value lies in: "met" when all of
// it is at or above goal, "MISSED" when all of it is below, else "not shown".
func IntervalVerdict(lo, hi, goal float64) string {
	switch {
	case lo >= goal:
		return "met"
	case hi < goal:
		return "MISSED"
	}
	return "not shown"
}

// phaseOf is the phase an interval lies wholly in, or false for the warm-up and the intervals
// near a transition.
func phaseOf(iv interval, ts []Transition) (int, bool) {
	if iv.start < warmUp {
		return 0, false
	}
	k := 0
	for _, t := range ts {
		if iv.end > t.Begin-guard && iv.start < t.End+guard {
			return 0, false
		}
		if iv.start >= t.End {
			k++
		}
	}
	return k, true
}

type interval struct {
	start, end time.Duration
	gbps       float64
}

func parseIntervals(iperfJSON []byte) ([]interval, error) {
	var report struct {
		Intervals []struct {
			Sum struct {
				Start         float64 `json:"start"`
				End           float64 `json:"end"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum"`
		} `json:"intervals"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(iperfJSON, &report); err != nil {
		return nil, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if report.Error != "" {
		return nil, fmt.Errorf("iperf3: %s", report.Error)
	}
	var out []interval
	for _, i := range report.Intervals {
		out = append(out, interval{
			start: time.Duration(i.Sum.Start * float64(time.Second)),
			end:   time.Duration(i.Sum.End * float64(time.Second)),
			gbps:  i.Sum.BitsPerSecond / 1e9,
		})
	}
	return out, nil
}
