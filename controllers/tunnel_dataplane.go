package controllers

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/dataplane/report"
)

// conditionReason is the API server's rule for metav1.Condition.Reason.
var conditionReason = regexp.MustCompile(`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`)

// UnknownTag is the analyzer's name for traffic that carries no (assigned) tag.
const UnknownTag = "unknown"

// podReports is what one ready pod reported.
type podReports struct {
	pod       string
	tags      *report.TagTotals
	status    *report.ProxyStatus
	tagsErr   error
	statusErr error
}

// observeDataPlane looks at the proxy pods: kubelet refusals, then (while pods are ready) the
// proxies' and analyzers' reports, which become status.throughput, activeConnections and
// FlowLabelApplied.
func (r *StreamTunnelReconciler) observeDataPlane(ctx context.Context, s *tunnelScope) error {
	t := s.tunnel
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(t.Namespace), client.MatchingLabels(selectorLabels(t))); err != nil {
		return err
	}
	s.pods = pods.Items

	for _, p := range pods.Items {
		if p.Status.Reason == "SysctlForbidden" {
			msg := fmt.Sprintf("the kubelet refused pod %s: it does not allow the sysctl %s that mirrors the flow label on replies. "+
				"Allow it on the kubelets (--allowed-unsafe-sysctls=%s, or allowedUnsafeSysctls in the kubelet configuration), "+
				"or set spec.inbound.flowLabelReflection: false to run without reflection (replies then carry no tag)",
				p.Name, SysctlFlowLabelReflect, SysctlFlowLabelReflect)
			s.degrade("SysctlForbidden", msg)
			s.set(scitunnelv1.ConditionFlowLabelApplied, metav1.ConditionFalse, "SysctlForbidden", msg)
			break
		}
	}

	var ready []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp.IsZero() && p.Status.PodIP != "" && podReady(&p) {
			ready = append(ready, p)
		}
	}
	_, flowLabelSet := s.conditions[scitunnelv1.ConditionFlowLabelApplied]
	if len(ready) == 0 || r.Reports == nil {
		if s.deployment != nil {
			t.Status.Throughput, t.Status.ThroughputSummary, t.Status.ActiveConnections = nil, "", 0
		}
		if !flowLabelSet && s.tag != nil {
			s.set(scitunnelv1.ConditionFlowLabelApplied, metav1.ConditionUnknown, "NoReport", "no proxy pod is ready to report")
		}
		return nil
	}

	reports := r.collect(ctx, ready)
	s.requeueAfter(r.Options.ThroughputInterval)

	var conns int64
	var statusOK, tagsOK int
	var notApplied *podReports
	var lastErr error
	for i := range reports {
		rep := &reports[i]
		if rep.statusErr == nil {
			statusOK++
			conns += rep.status.ActiveConnections
			if !rep.status.FlowLabel.Applied && notApplied == nil {
				notApplied = rep
			}
		} else {
			lastErr = rep.statusErr
		}
		if rep.tagsErr == nil {
			tagsOK++
		} else {
			lastErr = rep.tagsErr
		}
	}
	if statusOK > 0 {
		t.Status.ActiveConnections = conns
	}
	if tagsOK > 0 {
		t.Status.Throughput, t.Status.ThroughputSummary = aggregateThroughput(reports, s.tag)
	}
	if lastErr != nil {
		s.degrade("ReportsUnavailable", fmt.Sprintf("%d of %d ready proxy pods did not report: %v", len(ready)-min(statusOK, tagsOK), len(ready), lastErr))
	}

	if flowLabelSet {
		return nil
	}
	switch {
	case s.tag == nil:
		// set by reconcileScitag (NotTagged and friends)
	case statusOK == 0:
		s.set(scitunnelv1.ConditionFlowLabelApplied, metav1.ConditionUnknown, "NoReport",
			fmt.Sprintf("could not read the proxies' status: %v", lastErr))
	case notApplied != nil:
		reason := notApplied.status.FlowLabel.Reason
		if !conditionReason.MatchString(reason) {
			reason = "NotMarked" // the API server refuses malformed reasons, and so the whole status
		}
		s.set(scitunnelv1.ConditionFlowLabelApplied, metav1.ConditionFalse, reason,
			fmt.Sprintf("pod %s: %s", notApplied.pod, orDefault(notApplied.status.FlowLabel.Message, "the proxy does not stamp the flow label")))
	default:
		s.set(scitunnelv1.ConditionFlowLabelApplied, metav1.ConditionTrue, "Marked",
			fmt.Sprintf("%d proxy pod(s) stamp flow label %s (%s)", statusOK, s.tag.FlowLabelHex, s.tag.Name))
	}
	return nil
}

// collect reads every ready pod's reports in parallel.
func (r *StreamTunnelReconciler) collect(ctx context.Context, pods []corev1.Pod) []podReports {
	out := make([]podReports, len(pods))
	var wg sync.WaitGroup
	for i := range pods {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ip := pods[i].Status.PodIP
			out[i].pod = pods[i].Name
			out[i].status, out[i].statusErr = r.Reports.Status(ctx, ip)
			out[i].tags, out[i].tagsErr = r.Reports.Tags(ctx, ip)
		}(i)
	}
	wg.Wait()
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// aggregateThroughput sums each tag over the pods. Each pod's analyzer reports its own 95%
// bound (widened for mixed frame sizes, which 196*sqrt(1/samples) would understate); the pods
// sample independently, so the bound of the sum is the root of the summed squared absolute
// bounds. The summary is the tunnel's own tag when it has one, else everything measured.
func aggregateThroughput(reports []podReports, tag *scitunnelv1.ResolvedScitag) ([]scitunnelv1.TagThroughput, string) {
	type acc struct {
		bps            float64
		errVariance    float64 // sum over pods of (absolute 95% bound in bit/s)^2
		bytes, samples uint64
		last           time.Time
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
		switch {
		case tag != nil && name == tag.Name:
			total += a.bps
		case tag == nil:
			total += a.bps
		}
	}
	slices.SortFunc(out, func(a, b scitunnelv1.TagThroughput) int {
		if c := cmp.Compare(b.BitsPerSecond, a.BitsPerSecond); c != 0 {
			return c
		}
		return strings.Compare(a.Tag, b.Tag)
	})
	if len(out) > 32 {
		out = out[:32]
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
