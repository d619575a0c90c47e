package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
)

// Field indexes: they find the objects that reference a changed object without listing
// everything.
const (
	// IndexInboundRef: Outbound StreamTunnels by the "namespace/name" of the Inbound they name.
	IndexInboundRef = "spec.outbound.tunnelRef"
	// IndexPolicyRef: StreamTunnels by the ScitagPolicy named in spec.scitag.policyRef.
	IndexPolicyRef = "spec.scitag.policyRef"
	// IndexSecretRefs: StreamTunnels by the user Secrets they mount (certificates.secretRef,
	// outbound.endpoint.bundleSecretRef).
	IndexSecretRefs = "spec.secretRefs"
	// IndexRegistryConfigMap: ScitagPolicies by the ConfigMap holding their registry.
	IndexRegistryConfigMap = "spec.registry.configMapRef"
)

// SetupIndexes registers the field indexes both reconcilers use. Call it once per manager.
func SetupIndexes(ctx context.Context, idx client.FieldIndexer) error {
	if err := idx.IndexField(ctx, &scitunnelv1.StreamTunnel{}, IndexInboundRef, func(o client.Object) []string {
		t := o.(*scitunnelv1.StreamTunnel)
		if t.Spec.Outbound == nil || t.Spec.Outbound.TunnelRef == nil {
			return nil
		}
		ns := t.Spec.Outbound.TunnelRef.Namespace
		if ns == "" {
			ns = t.Namespace
		}
		return []string{ns + "/" + t.Spec.Outbound.TunnelRef.Name}
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &scitunnelv1.StreamTunnel{}, IndexPolicyRef, func(o client.Object) []string {
		t := o.(*scitunnelv1.StreamTunnel)
		if t.Spec.Scitag == nil || t.Spec.Scitag.PolicyRef == nil {
			return nil
		}
		return []string{t.Spec.Scitag.PolicyRef.Name}
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &scitunnelv1.StreamTunnel{}, IndexSecretRefs, func(o client.Object) []string {
		t := o.(*scitunnelv1.StreamTunnel)
		var names []string
		if c := t.Spec.Certificates; c != nil && c.SecretRef != nil {
			names = append(names, c.SecretRef.Name)
		}
		if out := t.Spec.Outbound; out != nil && out.Endpoint != nil && out.Endpoint.BundleSecretRef != nil {
			names = append(names, out.Endpoint.BundleSecretRef.Name)
		}
		return names
	}); err != nil {
		return err
	}
	return idx.IndexField(ctx, &scitunnelv1.ScitagPolicy{}, IndexRegistryConfigMap, func(o client.Object) []string {
		p := o.(*scitunnelv1.ScitagPolicy)
		if p.Spec.Registry == nil || p.Spec.Registry.ConfigMapRef == nil {
			return nil
		}
		return []string{p.Spec.Registry.ConfigMapRef.Name}
	})
}

// podToTunnel maps a proxy pod to its tunnel by label.
func podToTunnel(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[LabelTunnel]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// secretToTunnels maps a Secret to the tunnels that mount it (user certificates, connection
// bundles) or that it belongs to (cert-manager-issued Secrets carry our tunnel label).
func (r *StreamTunnelReconciler) secretToTunnels(ctx context.Context, o client.Object) []reconcile.Request {
	reqs := podToTunnel(ctx, o)
	var ts scitunnelv1.StreamTunnelList
	if err := r.List(ctx, &ts, client.InNamespace(o.GetNamespace()), client.MatchingFields{IndexSecretRefs: o.GetName()}); err != nil {
		logf.FromContext(ctx).Error(err, "listing tunnels that mount a Secret")
		return reqs
	}
	for _, t := range ts.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&t)})
	}
	return reqs
}

// peerTunnels maps a StreamTunnel event to the other end(s) of its tunnel in this cluster: an
// Inbound's change (ports, CA, deletion) reaches its Outbounds, an Outbound's arrival or
// departure reaches its Inbound (which lists its peers and their identities).
func (r *StreamTunnelReconciler) peerTunnels(ctx context.Context, o client.Object) []reconcile.Request {
	t := o.(*scitunnelv1.StreamTunnel)
	var reqs []reconcile.Request
	if t.Spec.Outbound != nil && t.Spec.Outbound.TunnelRef != nil {
		ns := t.Spec.Outbound.TunnelRef.Namespace
		if ns == "" {
			ns = t.Namespace
		}
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: t.Spec.Outbound.TunnelRef.Name}})
	}
	if t.Spec.Role == scitunnelv1.RoleInbound {
		var outs scitunnelv1.StreamTunnelList
		if err := r.List(ctx, &outs, client.MatchingFields{IndexInboundRef: t.Namespace + "/" + t.Name}); err != nil {
			logf.FromContext(ctx).Error(err, "listing outbound peers")
			return reqs
		}
		for _, out := range outs.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&out)})
		}
	}
	return reqs
}

// policyToTunnels maps a ScitagPolicy to the tunnels it may tag: those naming it and those its
// selector matches. Called with the old and the new object on update, so tunnels a changed
// selector no longer matches are re-queued too.
func (r *StreamTunnelReconciler) policyToTunnels(ctx context.Context, o client.Object) []reconcile.Request {
	p := o.(*scitunnelv1.ScitagPolicy)
	var reqs []reconcile.Request
	var named scitunnelv1.StreamTunnelList
	if err := r.List(ctx, &named, client.InNamespace(p.Namespace), client.MatchingFields{IndexPolicyRef: p.Name}); err == nil {
		for _, t := range named.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&t)})
		}
	}
	sel, ok := policySelector(p)
	if !ok {
		return reqs
	}
	var selected scitunnelv1.StreamTunnelList
	if err := r.List(ctx, &selected, client.InNamespace(p.Namespace), client.MatchingLabelsSelector{Selector: sel}); err == nil {
		for _, t := range selected.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&t)})
		}
	}
	return reqs
}

// secretKeyPresent is a tiny helper for Secret checks.
func secretKeyPresent(s *corev1.Secret, keys ...string) (missing []string) {
	for _, k := range keys {
		if len(s.Data[k]) == 0 {
			missing = append(missing, k)
		}
	}
	return missing
}
