// Package conditions holds what every controller does with status conditions: carry their
// transition times into a status apply, keep messages within the API's bounds, and record the
// transitions users care about as events.
package conditions

import (
	"regexp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
)

// Reasons shared by the controllers that apply a tunnel's children.
const (
	// ReasonNameConflict: an object of a child's name exists and is not the tunnel's; the
	// operator leaves it untouched.
	ReasonNameConflict = "NameConflict"
	// ReasonApplyFailed: the API server refused a child; the message carries its answer.
	ReasonApplyFailed = "ApplyFailed"
	// ReasonRemoteNotFoundOrNotAllowed: an Outbound's tunnelRef names a tunnel in another
	// namespace that does not exist or does not accept this namespace; the two are one answer,
	// so that a reference does not tell what exists in a namespace that does not allow yours.
	ReasonRemoteNotFoundOrNotAllowed = "RemoteNotFoundOrNotAllowed"
)

// MaxMessage bounds condition and status messages (the API allows more; people read less).
const MaxMessage = 1000

// Reason is the API server's rule for metav1.Condition.Reason: a reason read from elsewhere
// (a pod's report) must match it, or the API server refuses the whole status.
var Reason = regexp.MustCompile(`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`)

// Truncate shortens s to n bytes, marking the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// Set is the conditions one controller decides in one pass, by type.
type Set map[string]metav1.Condition

// Set records a condition.
func (s Set) Set(typ string, status metav1.ConditionStatus, reason, message string) {
	s[typ] = metav1.Condition{Type: typ, Status: status, Reason: reason, Message: message}
}

// Has says whether the pass decided typ.
func (s Set) Has(typ string) bool { _, ok := s[typ]; return ok }

// Merge returns current with the set's conditions written in (for generation), keeping each
// unchanged condition's lastTransitionTime, and the set's conditions as they now stand, sorted
// by type: what the controller applies.
func (s Set) Merge(current []metav1.Condition, generation int64) (all, owned []metav1.Condition) {
	all = slices.Clone(current)
	for _, c := range s {
		c.ObservedGeneration = generation
		c.Message = Truncate(c.Message, MaxMessage)
		meta.SetStatusCondition(&all, c)
	}
	for _, c := range all {
		if _, ok := s[c.Type]; ok {
			owned = append(owned, c)
		}
	}
	slices.SortFunc(owned, func(a, b metav1.Condition) int {
		if a.Type < b.Type {
			return -1
		}
		if a.Type > b.Type {
			return 1
		}
		return 0
	})
	return all, owned
}

// Announce records an event for each of types whose status or reason changed from before to
// after. warning decides which transitions are warnings.
func Announce(rec events.EventRecorder, obj runtime.Object, before, after []metav1.Condition, types []string,
	warning func(typ string, now metav1.Condition, old *metav1.Condition) bool) {
	for _, typ := range types {
		now := meta.FindStatusCondition(after, typ)
		old := meta.FindStatusCondition(before, typ)
		if now == nil || (old != nil && old.Status == now.Status && old.Reason == now.Reason) {
			continue
		}
		kind := corev1.EventTypeNormal
		if warning(typ, *now, old) {
			kind = corev1.EventTypeWarning
		}
		rec.Eventf(obj, nil, kind, now.Reason, typ, "%s=%s: %s", typ, now.Status, now.Message)
	}
}
