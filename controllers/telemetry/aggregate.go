package telemetry

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/dataplane/report"
)

// maxTags bounds status.throughput (the API's limit).
const maxTags = 32

// podReports is what one ready pod reported.
type podReports struct {
	pod       string
	tags      *report.TagTotals
	status    *report.ProxyStatus
	tagsErr   error
	statusErr error
}

// aggregateThroughput sums each tag over the pods. Each pod's analyzer reports its own 95%
// bound (widened for mixed frame sizes, which 196*sqrt(1/samples) would understate); the pods
// sample independently, so the bound of the sum is the root of the summed squared absolute
// bounds. The summary is the tunnel's own tag (matched by ids) when it has one, else
// everything measured.
func aggregateThroughput(reports []podReports, tag *scitunnelv1.ResolvedScitag) ([]scitunnelv1.TagThroughput, string) {
	type acc struct {
		bps            float64
		errVariance    float64 // sum over pods of (absolute 95% bound in bit/s)^2
		bytes, samples uint64
		last           time.Time
		own            bool // the tunnel's own tag, matched by ids
	}
	byTag := map[string]*acc{}
	for _, rep := range reports {
		if rep.tagsErr != nil || rep.tags == nil {
			continue
		}
		for _, tr := range rep.tags.Tags {
			a := byTag[tr.Tag]
			if a == nil {
				a = &acc{}
				byTag[tr.Tag] = a
			}
			a.bps += tr.BitsPerSecond
			abs := tr.ErrorPercent / 100 * tr.BitsPerSecond
			a.errVariance += abs * abs
			a.bytes += tr.Bytes
			a.samples += tr.Samples
			a.own = a.own || (tag != nil && tr.Matches(int(tag.ExperimentID), int(tag.ActivityID)))
			if rep.tags.Updated.After(a.last) {
				a.last = rep.tags.Updated
			}
		}
	}
	out := make([]scitunnelv1.TagThroughput, 0, len(byTag))
	var total float64
	for name, a := range byTag {
		tt := scitunnelv1.TagThroughput{
			Tag:           name,
			BitsPerSecond: int64(math.Round(a.bps)),
			ErrorPercent:  combinedErrorPercent(a.bps, a.errVariance, a.samples),
			Bytes:         clampInt64(a.bytes),
			Samples:       clampInt64(a.samples),
		}
		if !a.last.IsZero() {
			lu := metav1.NewTime(a.last.UTC().Truncate(time.Second))
			tt.LastUpdate = &lu
		}
		out = append(out, tt)
		if tag == nil || a.own {
			total += a.bps
		}
	}
	slices.SortFunc(out, func(a, b scitunnelv1.TagThroughput) int {
		if c := cmp.Compare(b.BitsPerSecond, a.BitsPerSecond); c != 0 {
			return c
		}
		return strings.Compare(a.Tag, b.Tag)
	})
	if len(out) > maxTags {
		out = out[:maxTags]
	}
	return out, FormatBitRate(total)
}

// combinedErrorPercent is the 95% bound of a rate summed over pods, in percent rounded up:
// 100 without samples or rate (nothing is known), capped at 100 otherwise.
func combinedErrorPercent(bps, errVariance float64, samples uint64) int32 {
	if samples == 0 || bps <= 0 {
		return 100
	}
	pct := math.Ceil(100 * math.Sqrt(errVariance) / bps)
	if math.IsNaN(pct) || pct > 100 {
		return 100
	}
	return int32(max(pct, 1))
}

func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// FormatBitRate renders a rate for humans and kubectl columns: "0 bit/s", "950 bit/s",
// "1.2 Gbit/s", "12 Gbit/s".
func FormatBitRate(bps float64) string {
	units := []string{"bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s", "Pbit/s"}
	if bps < 0 || math.IsNaN(bps) {
		bps = 0
	}
	i := 0
	for bps >= 999.5 && i < len(units)-1 {
		bps /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f %s", bps, units[i])
	}
	if bps < 9.95 {
		return fmt.Sprintf("%.1f %s", bps, units[i])
	}
	return fmt.Sprintf("%.0f %s", bps, units[i])
}
