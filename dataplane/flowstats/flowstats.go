// Package flowstats is the JSON contract between the sFlow analyzer in each proxy pod and the
// StreamTunnel controller: the analyzer serves TagTotals at GET /v1/tags, the controller reads
// it on an interval and writes it into StreamTunnel status.throughput.
package flowstats

import "time"

// TagsPath is the analyzer's HTTP path for per-tag totals.
const TagsPath = "/v1/tags"

// TagTotals is the body of GET /v1/tags.
type TagTotals struct {
	// Window is the smoothing window the rates are computed over.
	WindowSeconds float64 `json:"windowSeconds"`
	// Tags holds one entry per tag seen in the window, plus "unknown" for traffic whose label
	// decodes to no tag or to a tag without a second signal.
	Tags []TagRate `json:"tags"`
	// Updated is when the analyzer last folded a sample into these figures.
	Updated time.Time `json:"updated"`
}

// TagRate is one tag's estimated throughput.
type TagRate struct {
	// Tag is "expName.activityName" (or "exp.act" when the registry lacks a name, or "unknown").
	Tag          string `json:"tag"`
	ExperimentID int    `json:"experimentId"`
	ActivityID   int    `json:"activityId"`
	// BitsPerSecond is the estimated rate over the window.
	BitsPerSecond float64 `json:"bitsPerSecond"`
	// ErrorPercent is the 95% error bound, 196*sqrt(1/Samples).
	ErrorPercent float64 `json:"errorPercent"`
	// Bytes is the estimated total since the analyzer started.
	Bytes uint64 `json:"bytes"`
	// Samples is the number of samples behind the window's estimate.
	Samples uint64 `json:"samples"`
	// Flows active in the window.
	Flows int `json:"flows"`
}
