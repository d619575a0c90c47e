// Package report is the JSON contract between the data plane in each proxy pod and the
// StreamTunnel controller, which holds the only API credentials and so pulls these reports:
//
//   - the sFlow analyzer serves TagTotals at GET TagsPath (contract.AnalyzerPort); the
//     controller writes them into status.throughput;
//   - the proxy serves ProxyStatus at GET StatusPath (contract.AdminPort); the controller derives
//     FlowLabelApplied and the active connection count from it.
package report

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

// UnknownTag is TagRate.Tag for traffic whose label decodes to no tag or to a tag without a
// second signal (not assigned to the pod, not announced by a firefly).
const UnknownTag = "unknown"

// TagRate is one tag's estimated throughput. Match a tag by its ids (Matches): the name is for
// display and follows the analyzer's registry, which may name a pair differently from the
// registry a tag was resolved against, or not at all.
type TagRate struct {
	// Tag is "expName.activityName" (or "exp.act" when the registry lacks a name, or UnknownTag).
	Tag string `json:"tag"`
	// ExperimentID and ActivityID identify the tag; both are 0 for UnknownTag (the pair 0.0 has
	// flow label 0, which the analyzer counts as unlabelled, so no tag is reported as 0.0).
	ExperimentID int `json:"experimentId"`
	ActivityID   int `json:"activityId"`
	// BitsPerSecond is the estimated rate over the window.
	BitsPerSecond float64 `json:"bitsPerSecond"`
	// ErrorPercent is the 95% error bound of BitsPerSecond. With equal frame sizes it is
	// 196*sqrt(1/Samples); the analyzer widens it by the spread of the sampled frame sizes
	// (offload super-frames beside ACKs), which the plain formula would understate.
	ErrorPercent float64 `json:"errorPercent"`
	// Bytes is the estimated total since the analyzer started.
	Bytes uint64 `json:"bytes"`
	// Samples is the number of samples behind the window's estimate.
	Samples uint64 `json:"samples"`
	// Flows active in the window.
	Flows int `json:"flows"`
}

// Matches reports whether r is the tag with these ids; the UnknownTag entry matches none.
func (r TagRate) Matches(experimentID, activityID int) bool {
	return r.Tag != UnknownTag && r.ExperimentID == experimentID && r.ActivityID == activityID
}

// StatusPath is the proxy's HTTP path for its ProxyStatus.
const StatusPath = "/v1/status"

// ProxyStatus is the body of GET StatusPath on the proxy's admin port.
type ProxyStatus struct {
	Tunnel string `json:"tunnel"`
	// Ready: every listener is bound and the certificates are loaded and valid.
	Ready             bool            `json:"ready"`
	FlowLabel         FlowLabelStatus `json:"flowLabel"`
	ActiveConnections int64           `json:"activeConnections"`
	TotalConnections  uint64          `json:"totalConnections"`
	// CertificateNotAfter is the expiry of the certificate the proxy currently serves or presents.
	CertificateNotAfter *time.Time `json:"certificateNotAfter,omitempty"`
}

// FlowLabelStatus says whether the proxy's connections carry the tag's flow label.
type FlowLabelStatus struct {
	// Applied is true when the last dialed connection was marked (and, on the accepting end,
	// when reflection is in effect). False with a Reason when marking is impossible.
	Applied bool `json:"applied"`
	// Reason is a CamelCase word for the condition: Marked, NoScitag, IPv4Path,
	// PermissionDenied, LabelOutOfRange, ReflectionOff, ...
	Reason string `json:"reason"`
	// Message says what happened and what to do, for a human.
	Message string `json:"message,omitempty"`
	// Label is the label (without entropy) the proxy stamps.
	Label uint32 `json:"label,omitempty"`
}
