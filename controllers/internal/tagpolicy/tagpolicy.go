// Package tagpolicy decides which ScitagPolicy tags a StreamTunnel that does not name one:
// the oldest policy of its namespace whose tunnelSelector matches it. The tunnel controller
// applies that policy's tag; the ScitagPolicy controller reports the same decision as its
// tunnels and its Conflict condition.
package tagpolicy

import (
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
)

// Selector returns a policy's tunnel selector; an unset or empty selector selects nothing
// (matching every tunnel of a namespace by default would surprise).
func Selector(p *scitunnelv1.ScitagPolicy) (labels.Selector, bool) {
	ls := p.Spec.TunnelSelector
	if ls == nil || (len(ls.MatchLabels) == 0 && len(ls.MatchExpressions) == 0) {
		return nil, false
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return nil, false
	}
	return sel, true
}

// Older orders policies oldest first (then by name): the oldest wins a conflict, so adding a
// policy never re-tags flows that are already running.
func Older(a, b *scitunnelv1.ScitagPolicy) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// Selecting returns the policies (of t's namespace, not being deleted) whose selector matches
// t, oldest first: the first one tags t, the others are its rivals.
func Selecting(policies []scitunnelv1.ScitagPolicy, t *scitunnelv1.StreamTunnel) []*scitunnelv1.ScitagPolicy {
	var out []*scitunnelv1.ScitagPolicy
	for i := range policies {
		p := &policies[i]
		if !p.DeletionTimestamp.IsZero() || p.Namespace != t.Namespace {
			continue
		}
		if sel, ok := Selector(p); ok && sel.Matches(labels.Set(t.Labels)) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, Older)
	return out
}
