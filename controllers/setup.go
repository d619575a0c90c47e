// Package controllers is the home of SciTunnel's reconcilers, one package per job:
//
//   - tunnel: a StreamTunnel end's proxy Deployment, Service and ConfigMap, its routes and
//     scitag, and its Ready/ProxyAvailable/Degraded conditions;
//   - certificates: the end's certificates, CA and connection bundle (CertificateReady);
//   - telemetry: the live figures its proxy pods report (throughput, connections,
//     FlowLabelApplied), polled off the other controllers' path;
//   - scitagpolicy: a ScitagPolicy's tag, resolved against its registry.
//
// Each writes the status fields it owns with server-side apply under its own field manager.
// Setup wires them all into a manager; the manager binary and the envtest suites share it.
package controllers

import (
	"context"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/certificates"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/indexes"
	"github.com/scitunnel/scitunnel/controllers/scitagpolicy"
	"github.com/scitunnel/scitunnel/controllers/telemetry"
	"github.com/scitunnel/scitunnel/controllers/tunnel"
)

// Options are the manager-wide settings of the controllers.
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
	// MaxConcurrentReconciles of each StreamTunnel controller.
	MaxConcurrentReconciles int
	// UserObjectsRecheck is how often the Secrets and ConfigMaps users name are read again:
	// they are not cached, hence not watched. 0: a minute.
	UserObjectsRecheck time.Duration
	// TunnelNetworkPolicy: whether each tunnel gets a NetworkPolicy admitting only the
	// manager's pods (ManagerNamespace, ManagerPodLabels: the manager's identity) and
	// MonitoringNamespace to the pods' admin and analyzer ports (--tunnel-network-policies).
	TunnelNetworkPolicy tunnel.NetworkPolicyOptions
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

// Setup wires the controllers into a manager: the field indexes, then the four controllers.
type Setup struct {
	Options Options
	// Reports reads the data plane's reports; nil disables the telemetry controller.
	Reports telemetry.DataPlaneReports
	// Registry says which ScitagPolicy registry URLs may be fetched (https, public addresses).
	Registry scitagpolicy.RegistryOptions
	// Clock drives certificate issuance; nil: the real clock.
	Clock clock.PassiveClock
}

// Register adds the controllers to mgr.
func (s Setup) Register(mgr ctrl.Manager) error {
	o := s.Options.withDefaults()
	if s.Clock == nil {
		s.Clock = clock.RealClock{}
	}
	if err := indexes.SetupIndexes(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return err
	}
	c := mgr.GetClient()
	if err := (&tunnel.Reconciler{Client: c, Options: tunnel.Options{
		DataPlaneImage: o.DataPlaneImage, ImagePullPolicy: o.ImagePullPolicy, TrustDomain: o.TrustDomain,
		ClusterDomain: o.ClusterDomain, MaxConcurrentReconciles: o.MaxConcurrentReconciles,
		NetworkPolicy: o.TunnelNetworkPolicy,
	}}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&certificates.Reconciler{Client: c, APIReader: mgr.GetAPIReader(), Clock: s.Clock, Options: certificates.Options{
		TrustDomain: o.TrustDomain, ClusterDomain: o.ClusterDomain, CertificateDuration: o.CertificateDuration,
		MaxConcurrentReconciles: o.MaxConcurrentReconciles, UserObjectsRecheck: o.UserObjectsRecheck,
	}}).SetupWithManager(mgr); err != nil {
		return err
	}
	if s.Reports != nil {
		if err := (&telemetry.Reconciler{Client: c, Reports: s.Reports, Interval: o.ThroughputInterval,
			MaxConcurrentReconciles: o.MaxConcurrentReconciles}).SetupWithManager(mgr); err != nil {
			return err
		}
	}
	return (&scitagpolicy.Reconciler{Client: c, APIReader: mgr.GetAPIReader(), UserObjectsRecheck: o.UserObjectsRecheck, Registry: s.Registry, Clock: s.Clock}).SetupWithManager(mgr)
}

// CacheOptions keeps the manager's memory bounded in a shared cluster: Pods, Deployments,
// NetworkPolicies,
// Services, Secrets and ConfigMaps are cached only when the operator made them (its
// managed-by label), so other groups' objects cost the manager nothing and their Secrets are
// never held in its memory; the Secrets and ConfigMaps users name (their certificates, copied
// bundles, registry ConfigMaps) are read with an uncached Get when needed. No cached object
// keeps its managedFields, which the reconcilers never read and which weigh as much as the
// objects.
//
// namespaces, when not empty, confine the manager to those namespaces (the chart's namespaced
// install, with Roles instead of a ClusterRole): it sees tunnels, policies and children there
// only, so an Outbound's Inbound must be in one of them too.
func CacheOptions(namespaces ...string) cache.Options {
	managed := labels.SelectorFromSet(labels.Set{child.LabelManagedBy: child.ManagedByValue})
	var only map[string]cache.Config
	if len(namespaces) > 0 {
		only = map[string]cache.Config{}
		for _, ns := range namespaces {
			only[ns] = cache.Config{}
		}
	}
	return cache.Options{
		DefaultNamespaces: only,
		DefaultTransform:  cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:                 {Label: managed},
			&appsv1.Deployment{}:          {Label: managed},
			&corev1.Service{}:             {Label: managed},
			&corev1.Secret{}:              {Label: managed},
			&corev1.ConfigMap{}:           {Label: managed},
			&networkingv1.NetworkPolicy{}: {Label: managed},
			&scitunnelv1.StreamTunnel{}:   {},
		},
	}
}
