package scitagpolicy

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/scitagpolicy/egress"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

// RegistryOptions are the manager's rules for registry URLs.
type RegistryOptions struct {
	// Egress says which URLs and addresses may be fetched (https only and no loopback,
	// link-local, private or cluster address, unless the chart allows them).
	Egress egress.Rules
	// MaxURLs bounds the URLs cached at once; 0: DefaultMaxRegistryURLs.
	MaxURLs int
	// Timeout bounds one fetch, body included; 0: 15 s.
	Timeout time.Duration
	// Clock times retries and refreshes; nil: the real clock.
	Clock clock.WithTicker
}

func (o RegistryOptions) newFetcher(log logr.Logger) *registryFetcher {
	return newRegistryFetcher(o.getter(log), o.MaxURLs, o.Clock)
}

// getter fetches and checks one document under the options' rules.
func (o RegistryOptions) getter(log logr.Logger) func(context.Context, string) (fetchedDocument, error) {
	g := registryGetter{client: egress.NewClient(o.Egress, cmp.Or(o.Timeout, 15*time.Second)), rules: o.Egress, log: log}
	return g.get
}

// loadedRegistry is the registry a pass resolved against.
type loadedRegistry struct {
	registry *scitag.Registry
	raw      []byte // the document, copied into "<policy>-registry" for the proxies
	source   string
	synced   *metav1.Time
}

// registryOutcome says whether a pass can resolve against what loadRegistry returned.
type registryOutcome int

const (
	registryLoaded    registryOutcome = iota // the source, or a fallback the condition names
	registryPending                          // a URL's first fetch is under way: keep the status as is
	registryCacheFull                        // a URL that does not fit the cache: the snapshot meanwhile
)

type setCondition func(typ string, st metav1.ConditionStatus, reason, msg string)

// loadRegistry reads the policy's registry source. When the source fails, it falls back to
// the last good copy (URL) or the compiled-in snapshot, and RegistrySynced says so.
func (r *Reconciler) loadRegistry(ctx context.Context, p *scitunnelv1.ScitagPolicy, now time.Time, set setCondition) (loadedRegistry, registryOutcome, error) {
	src := p.Spec.Registry
	if src == nil || src.URL == "" {
		r.fetcher.forget(client.ObjectKeyFromObject(p))
	}
	switch {
	case src == nil:
		set(scitunnelv1.ConditionRegistrySynced, metav1.ConditionTrue, "Embedded", "using the scitags registry snapshot compiled into the operator")
		return embeddedRegistry(), registryLoaded, nil
	case src.URL != "":
		l, outcome := r.loadURL(p, set)
		return l, outcome, nil
	default:
		return r.loadConfigMap(ctx, p, now, set)
	}
}

func embeddedRegistry() loadedRegistry {
	return loadedRegistry{registry: scitag.Default(), source: scitag.SnapshotSource}
}

// loadURL reads the fetcher's cache; the fetch itself happens in the background.
func (r *Reconciler) loadURL(p *scitunnelv1.ScitagPolicy, set setCondition) (loadedRegistry, registryOutcome) {
	src := p.Spec.Registry
	refresh := DefaultRegistryRefresh
	if src.RefreshInterval != nil {
		refresh = src.RefreshInterval.Duration
	}
	// A spec change asks for a fresh copy, unless the URL is backing off after a failure.
	refreshNow := p.Status.ObservedGeneration != p.Generation
	got := r.fetcher.want(types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, src.URL, refresh, refreshNow)
	switch {
	case got.full:
		set(scitunnelv1.ConditionRegistrySynced, metav1.ConditionFalse, "TooManyRegistryURLs",
			fmt.Sprintf("the operator caches at most %d registry URLs and other policies use them all: share a URL with them, "+
				"or put the registry in a ConfigMap; using the compiled-in snapshot meanwhile", r.fetcher.maxURLs))
		return embeddedRegistry(), registryCacheFull
	case got.pending:
		set(scitunnelv1.ConditionRegistrySynced, metav1.ConditionUnknown, "Fetching", fmt.Sprintf("fetching %s", src.URL))
		return loadedRegistry{}, registryPending
	case got.registry == nil:
		set(scitunnelv1.ConditionRegistrySynced, metav1.ConditionFalse, "FetchFailed",
			fmt.Sprintf("%s: %v; using the compiled-in snapshot until it succeeds", src.URL, got.err))
		return embeddedRegistry(), registryLoaded
	}
	synced := metav1.NewTime(got.fetchedAt.UTC().Truncate(time.Second))
	loaded := loadedRegistry{registry: got.registry, raw: got.raw, source: src.URL, synced: &synced}
	if got.err != nil {
		set(scitunnelv1.ConditionRegistrySynced, metav1.ConditionFalse, "FetchFailed",
			fmt.Sprintf("%s: %v; using the copy fetched at %s", src.URL, got.err, synced.UTC().Format(time.RFC3339)))
		return loaded, registryLoaded
	}
	set(scitunnelv1.ConditionRegistrySynced, metav1.ConditionTrue, "Fetched", fmt.Sprintf("fetched %s", src.URL))
	return loaded, registryLoaded
}

// loadConfigMap reads the registry from a ConfigMap of the policy's namespace.
func (r *Reconciler) loadConfigMap(ctx context.Context, p *scitunnelv1.ScitagPolicy, now time.Time, set setCondition) (loadedRegistry, registryOutcome, error) {
	ref := p.Spec.Registry.ConfigMapRef
	key := cmp.Or(ref.Key, "api.json")
	var cm corev1.ConfigMap
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: ref.Name}, &cm); err != nil {
		if !apierrors.IsNotFound(err) {
			return loadedRegistry{}, registryLoaded, err
		}
		set(scitunnelv1.ConditionRegistrySynced, metav1.ConditionFalse, "ConfigMapNotFound",
			fmt.Sprintf("ConfigMap %q not found: create it with key %q holding the registry (api.json format); using the compiled-in snapshot meanwhile", ref.Name, key))
		return embeddedRegistry(), registryLoaded, nil
	}
	data := cm.Data[key]
	if data == "" {
		data = string(cm.BinaryData[key])
	}
	reg, err := parseForStatus([]byte(data))
	if err != nil {
		set(scitunnelv1.ConditionRegistrySynced, metav1.ConditionFalse, "InvalidRegistry",
			fmt.Sprintf("ConfigMap %q key %q: %v; using the compiled-in snapshot meanwhile", ref.Name, key, err))
		return embeddedRegistry(), registryLoaded, nil
	}
	synced := metav1.NewTime(now.UTC().Truncate(time.Second))
	set(scitunnelv1.ConditionRegistrySynced, metav1.ConditionTrue, "Loaded", fmt.Sprintf("read ConfigMap %q key %q", ref.Name, key))
	return loadedRegistry{registry: reg, raw: []byte(data), source: "configmap:" + ref.Name + "/" + key, synced: &synced}, registryLoaded, nil
}
