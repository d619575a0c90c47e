package controllers

import (
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
)

// Watches on other tunnels and on policies must not fire on every status write: a policy's
// status changes each time a tunnel it selects comes or goes, and re-queueing all its tunnels
// each time makes creating N tunnels cost O(N²) reconciliations. These predicates let through
// only what the watching side reads.

// metaChanged: creation, deletion, spec (generation), labels, or the deletion timestamp.
func metaChanged(e event.UpdateEvent) bool {
	o, n := e.ObjectOld, e.ObjectNew
	return o.GetGeneration() != n.GetGeneration() ||
		!equality.Semantic.DeepEqual(o.GetLabels(), n.GetLabels()) ||
		!o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp())
}

// peerChanged: what one end reads of the other: its spec, its existence, and its CA (an
// Inbound's CA rotation shows in status.certificates).
var peerChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	if metaChanged(e) {
		return true
	}
	o, ok1 := e.ObjectOld.(*scitunnelv1.StreamTunnel)
	n, ok2 := e.ObjectNew.(*scitunnelv1.StreamTunnel)
	return !ok1 || !ok2 || !equality.Semantic.DeepEqual(caStatus(o), caStatus(n))
}}

func caStatus(t *scitunnelv1.StreamTunnel) *scitunnelv1.CertificateStatus {
	for i := range t.Status.Certificates {
		if t.Status.Certificates[i].Name == "ca" {
			return &t.Status.Certificates[i]
		}
	}
	return nil
}

// policyTagChanged: what a tunnel reads of a policy: its spec and its resolved tag.
var policyTagChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	if metaChanged(e) {
		return true
	}
	o, ok1 := e.ObjectOld.(*scitunnelv1.ScitagPolicy)
	n, ok2 := e.ObjectNew.(*scitunnelv1.ScitagPolicy)
	if !ok1 || !ok2 {
		return true
	}
	return !equality.Semantic.DeepEqual(resolvedTag(o), resolvedTag(n))
}}

// resolvedTag is the part of a policy's status its tunnels use.
func resolvedTag(p *scitunnelv1.ScitagPolicy) []any {
	c := meta.FindStatusCondition(p.Status.Conditions, scitunnelv1.ConditionResolved)
	var cond []any
	if c != nil {
		cond = []any{c.Status, c.Reason, c.Message, c.ObservedGeneration}
	}
	var reg []any // the document's identity, not lastSync: tunnels copy the registry it names
	if r := p.Status.Registry; r != nil {
		reg = []any{r.Source, r.Version, r.Modified}
	}
	return []any{p.Status.ExperimentID, p.Status.ActivityID, p.Status.ExperimentName, p.Status.ActivityName, cond, reg}
}

// tunnelMembershipChanged: what a policy reads of a tunnel: its labels, spec and existence.
var tunnelMembershipChanged = predicate.Funcs{UpdateFunc: metaChanged}
