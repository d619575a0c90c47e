// Package controllers holds the StreamTunnel and ScitagPolicy reconcilers: they turn a tunnel
// end into a proxy Deployment, Service, Secrets and ConfigMap, resolve scitags into flow labels,
// and write truthful conditions and live throughput into status.
package controllers

import (
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
)

// FieldOwner is the server-side-apply field manager of everything the operator writes.
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

// Data-plane paths and ports, fixed by the pod contract with cmd/scitunnel.
const (
	ConfigDir        = "/etc/scitunnel"
	ConfigFile       = ConfigDir + "/config.json"
	RegistryFile     = ConfigDir + "/registry.json"
	TLSDir           = ConfigDir + "/tls"
	ConfigKey        = "config.json"
	RegistryKey      = "registry.json"
	AdminPort        = 9090
	AnalyzerPort     = 9091
	SFlowPort        = 6343
	DefaultSampling  = 1000
	ProxyContainer   = "proxy"
	SidecarContainer = "sflow"
)

// Options are the manager-wide settings of the StreamTunnel reconciler.
type Options struct {
	// DataPlaneImage runs the proxy and the sFlow sidecar (the --dataplane-image flag).
	DataPlaneImage string
	// ImagePullPolicy of the data-plane containers; empty lets Kubernetes choose.
	ImagePullPolicy corev1.PullPolicy
	// TrustDomain of the SPIFFE-style client identities, unless a tunnel sets its own.
	TrustDomain string
	// ClusterDomain is the cluster's DNS suffix, for Service names in certificates.
	ClusterDomain string
	// CertificateDuration is the default leaf lifetime.
	CertificateDuration time.Duration
	// ThroughputInterval is how often the data plane's reports are read while pods are ready.
	ThroughputInterval time.Duration
	// MaxConcurrentReconciles of the StreamTunnel controller.
	MaxConcurrentReconciles int
}

// withDefaults fills unset options.
func (o Options) withDefaults() Options {
	if o.DataPlaneImage == "" {
		o.DataPlaneImage = "ghcr.io/scitunnel/scitunnel:latest"
	}
	if o.TrustDomain == "" {
		o.TrustDomain = "scitunnel.local"
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
	}
	if o.CertificateDuration == 0 {
		o.CertificateDuration = 90 * 24 * time.Hour
	}
	if o.ThroughputInterval == 0 {
		o.ThroughputInterval = 10 * time.Second
	}
	if o.MaxConcurrentReconciles == 0 {
		o.MaxConcurrentReconciles = 4
	}
	return o
}

// CacheOptions keeps the manager's memory bounded in large clusters: Pods, Deployments and
// Services are cached only when the operator made them (Secrets and ConfigMaps stay
// unfiltered because tunnels and policies reference users' own), and no cached object keeps
// its managedFields, which the reconcilers never read and which weigh as much as the objects.
func CacheOptions() cache.Options {
	managed := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue})
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:               {Label: managed},
			&appsv1.Deployment{}:        {Label: managed},
			&corev1.Service{}:           {Label: managed},
			&scitunnelv1.StreamTunnel{}: {},
		},
	}
}

// Child object names.
func configMapName(t *scitunnelv1.StreamTunnel) string { return t.Name + "-config" }
func caSecretName(inboundName string) string           { return inboundName + "-ca" }
func tlsSecretName(t *scitunnelv1.StreamTunnel) string { return t.Name + "-tls" }
func bundleSecretName(t *scitunnelv1.StreamTunnel) string {
	return t.Name + "-bundle"
}
func registryConfigMapName(p *scitunnelv1.ScitagPolicy) string { return p.Name + "-registry" }

// selectorLabels select a tunnel's proxy pods.
func selectorLabels(t *scitunnelv1.StreamTunnel) map[string]string {
	return map[string]string{LabelName: ProxyAppName, LabelTunnel: t.Name}
}

// childLabels go on every object made for a tunnel.
func childLabels(t *scitunnelv1.StreamTunnel) map[string]string {
	l := selectorLabels(t)
	l[LabelInstance] = t.Name
	l[LabelComponent] = string(t.Spec.Role)
	l[LabelManagedBy] = ManagedByValue
	return l
}

// identity is the URI SAN of a tunnel end's client certificate.
func identity(trustDomain, namespace, name string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/streamtunnel/%s", trustDomain, namespace, name)
}

// bundleIdentity is the client identity carried by an Inbound's connection bundle.
func bundleIdentity(trustDomain, namespace, name string) string {
	return identity(trustDomain, namespace, name) + "/bundle"
}
