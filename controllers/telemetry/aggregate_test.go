package telemetry

import (
	"testing"
)

func TestFormatBitRate(t *testing.T) {
	for _, c := range []struct {
		bps  float64
		want string
	}{
		{0, "0 bit/s"}, {-5, "0 bit/s"}, {950, "950 bit/s"}, {999.4, "999 bit/s"}, {999.6, "1.0 kbit/s"},
		{1200, "1.2 kbit/s"}, {12_300_000, "12 Mbit/s"}, {1.2e9, "1.2 Gbit/s"}, {9.96e9, "10 Gbit/s"},
		{100e9, "100 Gbit/s"}, {1.5e12, "1.5 Tbit/s"},
	} {
		if got := FormatBitRate(c.bps); got != c.want {
			t.Errorf("FormatBitRate(%v) = %q, want %q", c.bps, got, c.want)
		}
	}
}

func TestCombinedErrorPercent(t *testing.T) {
	abs := func(pct, bps float64) float64 { return pct / 100 * bps }
	for _, c := range []struct {
		name        string
		bps, errVar float64
		samples     uint64
		want        int32
	}{
		{"no samples", 1e9, 0, 0, 100},
		{"no rate", 0, 0, 10, 100},
		{"one pod keeps its analyzer's bound, rounded up", 1e9, abs(3.3, 1e9) * abs(3.3, 1e9), 10000, 4},
		{"two equal pods: the bound shrinks by sqrt(2)", 2e9, 2 * abs(3.3, 1e9) * abs(3.3, 1e9), 20000, 3},
		{"a small noisy pod beside a large precise one", 1.1e9, abs(2, 1e9)*abs(2, 1e9) + abs(50, 1e8)*abs(50, 1e8), 10100, 5},
		{"capped at 100", 1e6, abs(400, 1e6) * abs(400, 1e6), 1, 100},
		{"never below 1", 1e9, 0, 1e9, 1},
	} {
		if got := combinedErrorPercent(c.bps, c.errVar, c.samples); got != c.want {
			t.Errorf("%s: combinedErrorPercent = %d, want %d", c.name, got, c.want)
		}
	}
}
