// Package indexes holds the field indexes the controllers share: they find the objects that
// reference a changed object without listing everything. SetupIndexes registers them once per
// manager; Requests turns a listed set into work for a controller.
package indexes

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
)

const (
	// InboundRef: Outbound StreamTunnels by the "namespace/name" of the Inbound they name.
	InboundRef = "spec.outbound.tunnelRef"
	// PolicyRef: StreamTunnels by the ScitagPolicy named in spec.scitag.policyRef.
	PolicyRef = "spec.scitag.policyRef"
	// SecretRefs: StreamTunnels by the user Secrets they mount (certificates.secretRef,
	// outbound.endpoint.bundleSecretRef).
	SecretRefs = "spec.secretRefs"
)

// SetupIndexes registers the field indexes. Call it once per manager.
func SetupIndexes(ctx context.Context, idx client.FieldIndexer) error {
	tunnelIndexes := map[string]func(*scitunnelv1.StreamTunnel) []string{
		InboundRef: inboundRef,
		PolicyRef:  policyRef,
		SecretRefs: secretRefs,
	}
	for name, extract := range tunnelIndexes {
		if err := idx.IndexField(ctx, &scitunnelv1.StreamTunnel{}, name, func(o client.Object) []string {
			return extract(o.(*scitunnelv1.StreamTunnel))
		}); err != nil {
			return err
		}
	}
	return nil
}

func inboundRef(t *scitunnelv1.StreamTunnel) []string {
	if t.Spec.Outbound == nil || t.Spec.Outbound.TunnelRef == nil {
		return nil
	}
	ns := t.Spec.Outbound.TunnelRef.Namespace
	if ns == "" {
		ns = t.Namespace
	}
	return []string{ns + "/" + t.Spec.Outbound.TunnelRef.Name}
}

func policyRef(t *scitunnelv1.StreamTunnel) []string {
	if t.Spec.Scitag == nil || t.Spec.Scitag.PolicyRef == nil {
		return nil
	}
	return []string{t.Spec.Scitag.PolicyRef.Name}
}

func secretRefs(t *scitunnelv1.StreamTunnel) []string {
	var names []string
	if c := t.Spec.Certificates; c != nil && c.SecretRef != nil {
		names = append(names, c.SecretRef.Name)
	}
	if out := t.Spec.Outbound; out != nil && out.Endpoint != nil && out.Endpoint.BundleSecretRef != nil {
		names = append(names, out.Endpoint.BundleSecretRef.Name)
	}
	return names
}

// Requests lists list with opts and returns a request for each item: the one shape of every
// "these objects changed, look at those" mapper.
func Requests(ctx context.Context, c client.Reader, list client.ObjectList, opts ...client.ListOption) ([]reconcile.Request, error) {
	if err := c.List(ctx, list, opts...); err != nil {
		return nil, err
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	reqs := make([]reconcile.Request, 0, len(items))
	for _, it := range items {
		if o, ok := it.(client.Object); ok {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)})
		}
	}
	return reqs, nil
}
