// Package child names and labels the objects the operator makes for a StreamTunnel (its proxy
// Deployment, Service, ConfigMap and certificate Secrets) and for a ScitagPolicy, so that every
// controller finds them the same way.
package child

import (
	"fmt"

	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
)

// FieldOwner is the server-side-apply field manager of every child object the operator writes.
const FieldOwner = client.FieldOwner("scitunnel-operator")

// Labels and annotations the operator puts on the objects it creates.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelTunnel names the StreamTunnel (same namespace) an object belongs to.
	LabelTunnel = "scitunnel.io/tunnel"
	// LabelIssuerUID marks client certificates issued from an Inbound tunnel's CA, wherever they
	// live, so the Inbound's finalizer can remove them when it goes away.
	LabelIssuerUID = "scitunnel.io/issuer-uid"
	// LabelPolicy names the ScitagPolicy an object belongs to.
	LabelPolicy = "scitunnel.io/scitagpolicy"

	ManagedByValue = "scitunnel-operator"
	ProxyAppName   = "scitunnel-proxy"

	// AnnotationConfigHash on the pod template restarts the proxies when their configuration
	// changes (certificates are reloaded from disk and need no restart).
	AnnotationConfigHash = "scitunnel.io/config-hash"

	// Finalizer lets an Inbound tunnel remove the client certificates issued from its CA in
	// other namespaces (owner references cannot cross namespaces).
	Finalizer = "scitunnel.io/peer-certificates"
)

// Object names.
func ConfigMapName(t *scitunnelv1.StreamTunnel) string         { return t.Name + "-config" }
func CASecretName(inboundName string) string                   { return inboundName + "-ca" }
func TLSSecretName(t *scitunnelv1.StreamTunnel) string         { return t.Name + "-tls" }
func BundleSecretName(t *scitunnelv1.StreamTunnel) string      { return t.Name + "-bundle" }
func RegistryConfigMapName(p *scitunnelv1.ScitagPolicy) string { return p.Name + "-registry" }

// SelectorLabels select a tunnel's proxy pods.
func SelectorLabels(t *scitunnelv1.StreamTunnel) map[string]string {
	return map[string]string{LabelName: ProxyAppName, LabelTunnel: t.Name}
}

// Labels go on every object made for a tunnel.
func Labels(t *scitunnelv1.StreamTunnel) map[string]string {
	l := SelectorLabels(t)
	l[LabelInstance] = t.Name
	l[LabelComponent] = string(t.Spec.Role)
	l[LabelManagedBy] = ManagedByValue
	return l
}

// OwnerRef makes t the controlling owner of a child.
func OwnerRef(t *scitunnelv1.StreamTunnel) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(scitunnelv1.GroupVersion.String()).
		WithKind("StreamTunnel").
		WithName(t.Name).
		WithUID(t.UID).
		WithController(true).
		WithBlockOwnerDeletion(true)
}

// Identity is the URI SAN of a tunnel end's client certificate.
func Identity(trustDomain, namespace, name string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/streamtunnel/%s", trustDomain, namespace, name)
}

// BundleIdentity is the client identity carried by an Inbound's connection bundle.
func BundleIdentity(trustDomain, namespace, name string) string {
	return Identity(trustDomain, namespace, name) + "/bundle"
}
