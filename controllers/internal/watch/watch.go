// Package watch maps events on the objects around a StreamTunnel to the tunnels that must look
// again, and holds the predicates that keep status writes from waking controllers that do not
// read them: a policy's or a peer's status changes often, and re-queueing everything each time
// makes creating N tunnels cost O(N²) reconciliations.
package watch

import (
	"context"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/ends"
	"github.com/scitunnel/scitunnel/controllers/internal/indexes"
)

// SpecOrMeta lets through what a controller reads of its own object: spec (generation),
// labels (they choose ScitagPolicies) and annotations (an annotation nudges a pass), never its
// status writes.
func SpecOrMeta() predicate.Predicate {
	return predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}, predicate.AnnotationChangedPredicate{})
}

// MetaChanged: creation, deletion, spec (generation), labels, or the deletion timestamp.
func MetaChanged(e event.UpdateEvent) bool {
	o, n := e.ObjectOld, e.ObjectNew
	return o.GetGeneration() != n.GetGeneration() ||
		!equality.Semantic.DeepEqual(o.GetLabels(), n.GetLabels()) ||
		!o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp())
}

// PeerChanged lets through what one end reads of the other: its spec and its existence.
var PeerChanged = predicate.Funcs{UpdateFunc: MetaChanged}

// ByTunnelLabel maps an object the operator made (a proxy pod, a Secret) to its tunnel.
func ByTunnelLabel(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[child.LabelTunnel]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// PeerRequests are the other end(s) of t's tunnel in this cluster: an Outbound's Inbound, an
// Inbound's Outbounds.
func PeerRequests(ctx context.Context, c client.Reader, t *scitunnelv1.StreamTunnel) []reconcile.Request {
	var reqs []reconcile.Request
	if key, ok := ends.InboundKey(t); ok {
		reqs = append(reqs, reconcile.Request{NamespacedName: key})
	}
	if t.Spec.Role == scitunnelv1.RoleInbound {
		outs, err := indexes.Requests(ctx, c, &scitunnelv1.StreamTunnelList{}, client.MatchingFields{indexes.InboundRef: t.Namespace + "/" + t.Name})
		if err != nil {
			logf.FromContext(ctx).Error(err, "listing outbound peers")
		}
		reqs = append(reqs, outs...)
	}
	return reqs
}

// SecretUsers maps a Secret to the tunnels that mount it (user certificates, bundles) or that
// it belongs to (cert-manager's Secrets carry our tunnel label).
func SecretUsers(ctx context.Context, c client.Reader, o client.Object) []reconcile.Request {
	reqs := ByTunnelLabel(ctx, o)
	users, err := indexes.Requests(ctx, c, &scitunnelv1.StreamTunnelList{}, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexes.SecretRefs: o.GetName()})
	if err != nil {
		logf.FromContext(ctx).Error(err, "listing tunnels that mount a Secret")
	}
	return append(reqs, users...)
}
