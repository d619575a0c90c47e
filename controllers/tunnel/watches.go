package tunnel

import (
	"context"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/indexes"
	"github.com/scitunnel/scitunnel/controllers/internal/tagpolicy"
	"github.com/scitunnel/scitunnel/controllers/internal/watch"
)

// peerTunnels: an Inbound's change (ports, deletion) reaches its Outbounds; an Outbound's
// arrival or departure reaches its Inbound (which lists its peers and their identities).
func (r *Reconciler) peerTunnels(ctx context.Context, o client.Object) []reconcile.Request {
	return watch.PeerRequests(ctx, r.Client, o.(*scitunnelv1.StreamTunnel))
}

// policyToTunnels maps a ScitagPolicy to the tunnels it may tag: those naming it and those its
// selector matches. Called with the old and the new object on update, so tunnels a changed
// selector no longer matches are re-queued too.
func (r *Reconciler) policyToTunnels(ctx context.Context, o client.Object) []reconcile.Request {
	p := o.(*scitunnelv1.ScitagPolicy)
	log := logf.FromContext(ctx)
	reqs, err := indexes.Requests(ctx, r.Client, &scitunnelv1.StreamTunnelList{}, client.InNamespace(p.Namespace), client.MatchingFields{indexes.PolicyRef: p.Name})
	if err != nil {
		log.Error(err, "listing the tunnels that name a policy")
	}
	sel, ok := tagpolicy.Selector(p)
	if !ok {
		return reqs
	}
	selected, err := indexes.Requests(ctx, r.Client, &scitunnelv1.StreamTunnelList{}, client.InNamespace(p.Namespace), client.MatchingLabelsSelector{Selector: sel})
	if err != nil {
		log.Error(err, "listing the tunnels a policy selects")
	}
	return append(reqs, selected...)
}

// policyTagChanged: what a tunnel reads of a policy: its spec and its resolved tag.
var policyTagChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	if watch.MetaChanged(e) {
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
