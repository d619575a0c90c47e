// Package scitagpolicy is the ScitagPolicy controller: it resolves a policy's experiment and
// activity against its registry (compiled in, a ConfigMap, or a URL it fetches), computes the
// flow label, and reports which tunnels it tags and whether another policy competes for them.
// Tunnels pick up the result through the tunnel controller's watch on policies.
package scitagpolicy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"k8s.io/utils/ptr"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/conditions"
	"github.com/scitunnel/scitunnel/controllers/internal/indexes"
	"github.com/scitunnel/scitunnel/controllers/internal/ssa"
	"github.com/scitunnel/scitunnel/controllers/internal/tagpolicy"
	"github.com/scitunnel/scitunnel/controllers/internal/watch"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

// Reconciler resolves a policy's experiment/activity against its registry,
// computes the flow label, and reports which tunnels it tags and whether another policy
// competes for them. Tunnels pick up the result through their watch on policies.
type Reconciler struct {
	client.Client
	Recorder events.EventRecorder
	// Registry says which registry URLs may be fetched and how many are cached.
	Registry RegistryOptions
	// APIReader reads the registry ConfigMaps users name, which the manager does not cache
	// (controllers.CacheOptions): the API server, uncached. nil: SetupWithManager sets the
	// manager's, as the certificates controller does.
	APIReader client.Reader
	// UserObjectsRecheck is how often such a ConfigMap is read again (it is not watched).
	// 0: a minute.
	UserObjectsRecheck time.Duration
	Clock              clock.PassiveClock

	fetcher *registryFetcher
	applier *ssa.Applier
}

// +kubebuilder:rbac:groups=scitunnel.io,resources=scitagpolicies,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=scitunnel.io,resources=scitagpolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=scitunnel.io,resources=scitagpolicies/finalizers,verbs=update

// Reconcile is one pass over a ScitagPolicy.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	p := &scitunnelv1.ScitagPolicy{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			r.fetcher.forget(req.NamespacedName) // its URL's copy goes when no policy uses it
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !p.DeletionTimestamp.IsZero() {
		r.fetcher.forget(req.NamespacedName)
		return ctrl.Result{}, nil // the registry ConfigMap goes by owner reference
	}
	now := r.Clock.Now()
	orig := p.DeepCopy()
	conds := map[string]metav1.Condition{}
	set := func(typ string, st metav1.ConditionStatus, reason, msg string) {
		conds[typ] = metav1.Condition{Type: typ, Status: st, Reason: reason, Message: conditions.Truncate(msg, conditions.MaxMessage), ObservedGeneration: p.Generation}
	}
	var requeue time.Duration
	defer func() {
		for _, c := range conds {
			meta.SetStatusCondition(&p.Status.Conditions, c)
		}
		if retErr == nil {
			p.Status.ObservedGeneration = p.Generation
		}
		if !equality.Semantic.DeepEqual(orig.Status, p.Status) {
			if err := r.Status().Patch(ctx, p, client.MergeFrom(orig)); err != nil && !apierrors.IsNotFound(err) {
				retErr = errors.Join(retErr, err)
			}
			r.announce(p, &orig.Status)
		}
		if retErr == nil {
			result.RequeueAfter = requeue
		}
	}()

	reg, outcome, err := r.loadRegistry(ctx, p, now, set)
	if err != nil {
		return ctrl.Result{}, err
	}
	switch outcome {
	case registryPending:
		return ctrl.Result{}, nil // the fetcher sends the policy back when its URL is read
	case registryCacheFull:
		requeue = time.Minute // no event comes when room frees
	}
	if src := p.Spec.Registry; src != nil && src.ConfigMapRef != nil {
		// Users' ConfigMaps are not watched (not cached): read it again periodically.
		requeue = cmp.Or(r.UserObjectsRecheck, time.Minute)
	}
	p.Status.Registry = &scitunnelv1.RegistryStatus{
		Source:   reg.source,
		Version:  int32(reg.registry.Version),
		Modified: reg.registry.Modified,
		LastSync: reg.synced,
		Pairs:    int32(reg.registry.Len()),
	}
	if reg.raw != nil {
		if err := r.applyRegistryConfigMap(ctx, p, reg.raw); err != nil {
			return ctrl.Result{}, err
		}
	}

	r.resolve(p, reg.registry, set)
	if err := r.reportTunnels(ctx, p, set); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

// applyRegistryConfigMap keeps "<policy>-registry" with the registry document (fetched, or
// copied from the user's ConfigMap), so the proxies of the tunnels it tags name flows with the
// same registry, and the tunnel controller reads it from its cache.
func (r *Reconciler) applyRegistryConfigMap(ctx context.Context, p *scitunnelv1.ScitagPolicy, raw []byte) error {
	ac := corev1ac.ConfigMap(child.RegistryConfigMapName(p), p.Namespace).
		WithLabels(map[string]string{child.LabelManagedBy: child.ManagedByValue, child.LabelPolicy: p.Name}).
		WithOwnerReferences(metav1ac.OwnerReference().
			WithAPIVersion(scitunnelv1.GroupVersion.String()).WithKind("ScitagPolicy").
			WithName(p.Name).WithUID(p.UID).WithController(true).WithBlockOwnerDeletion(true)).
		WithData(map[string]string{"api.json": string(raw)})
	cur := &corev1.ConfigMap{}
	found, err := ssa.Get(ctx, r.Client, client.ObjectKey{Namespace: p.Namespace, Name: child.RegistryConfigMapName(p)}, cur)
	if err != nil {
		return err
	}
	var current client.Object
	if found {
		current = cur
	}
	_, err = r.applier.Apply(ctx, current, ac, nil)
	return err
}

// resolve turns experiment/activity names or ids into ids and the flow label.
func (r *Reconciler) resolve(p *scitunnelv1.ScitagPolicy, reg *scitag.Registry, set func(string, metav1.ConditionStatus, string, string)) {
	tag, err := reg.Resolve(string(p.Spec.Experiment), string(p.Spec.Activity))
	if err != nil {
		clearResolved(p)
		reason := "NotInRegistry"
		if errors.Is(err, scitag.ErrOutOfRange) {
			reason = "OutOfRange"
		}
		set(scitunnelv1.ConditionResolved, metav1.ConditionFalse, reason, err.Error())
		return
	}
	reason, msg := "Resolved", ""
	if !tag.InRegistry {
		reason = "IDsNotInRegistry"
		msg = fmt.Sprintf("ids %d.%d are not in the registry (%s); the label carries them anyway", tag.ExperimentID, tag.ActivityID, p.Status.Registry.Source)
	}
	p.Status.Tag = tag.String()
	p.Status.ExperimentID = ptr.To(int32(tag.ExperimentID))
	p.Status.ActivityID = ptr.To(int32(tag.ActivityID))
	p.Status.ExperimentName = tag.ExperimentName
	p.Status.ActivityName = tag.ActivityName
	p.Status.FlowLabel = ptr.To(int32(tag.Label))
	p.Status.FlowLabelHex = tag.LabelHex
	p.Status.Mask = int32(scitag.Mask)
	if msg == "" {
		msg = fmt.Sprintf("%s is experiment %d activity %d: flow label %d (%s)", tag, tag.ExperimentID, tag.ActivityID, tag.Label, tag.LabelHex)
	}
	set(scitunnelv1.ConditionResolved, metav1.ConditionTrue, reason, msg)
}

func clearResolved(p *scitunnelv1.ScitagPolicy) {
	p.Status.Tag, p.Status.ExperimentName, p.Status.ActivityName, p.Status.FlowLabelHex = "", "", "", ""
	p.Status.ExperimentID, p.Status.ActivityID, p.Status.FlowLabel = nil, nil, nil
	p.Status.Mask = int32(scitag.Mask)
}

// reportTunnels counts the tunnels this policy tags and detects competing policies: a tunnel
// with an inline tag or a policyRef is decided by its own spec; a tunnel matched only by
// selectors goes to the oldest selecting policy, and every selecting policy reports Conflict.
func (r *Reconciler) reportTunnels(ctx context.Context, p *scitunnelv1.ScitagPolicy, set func(string, metav1.ConditionStatus, string, string)) error {
	var named scitunnelv1.StreamTunnelList
	if err := r.List(ctx, &named, client.InNamespace(p.Namespace), client.MatchingFields{indexes.PolicyRef: p.Name}); err != nil {
		return err
	}
	tagged := map[string]bool{}
	for _, t := range named.Items {
		tagged[t.Name] = true
	}
	var conflicts []string
	if sel, ok := tagpolicy.Selector(p); ok {
		var selected scitunnelv1.StreamTunnelList
		if err := r.List(ctx, &selected, client.InNamespace(p.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
			return err
		}
		var policies scitunnelv1.ScitagPolicyList
		if err := r.List(ctx, &policies, client.InNamespace(p.Namespace)); err != nil {
			return err
		}
		for i := range selected.Items {
			t := &selected.Items[i]
			if t.Spec.Scitag != nil {
				continue // its own spec decides
			}
			selecting := tagpolicy.Selecting(policies.Items, t)
			if len(selecting) == 0 {
				continue // p is being deleted
			}
			winner := selecting[0]
			var rivals []string
			for _, q := range selecting {
				if q.Name != p.Name {
					rivals = append(rivals, q.Name)
				}
			}
			if len(rivals) > 0 {
				conflicts = append(conflicts, fmt.Sprintf("tunnel %s is also selected by %s (%s applies)", t.Name, strings.Join(rivals, ", "), winner.Name))
			}
			if winner.Name == p.Name {
				tagged[t.Name] = true
			}
		}
	}
	names := make([]string, 0, len(tagged))
	for n := range tagged {
		names = append(names, n)
	}
	slices.Sort(names)
	p.Status.MatchedTunnels = int32(len(names))
	if len(names) > 64 {
		names = names[:64]
	}
	p.Status.Tunnels = names
	if len(conflicts) > 0 {
		slices.Sort(conflicts)
		set(scitunnelv1.ConditionConflict, metav1.ConditionTrue, "OverlappingSelectors",
			strings.Join(conflicts, "; ")+": narrow the tunnelSelectors, or name one policy in the tunnels' spec.scitag.policyRef")
	} else {
		set(scitunnelv1.ConditionConflict, metav1.ConditionFalse, "NoConflict", "no other policy selects these tunnels")
	}
	return nil
}

func (r *Reconciler) announce(p *scitunnelv1.ScitagPolicy, before *scitunnelv1.ScitagPolicyStatus) {
	conditions.Announce(r.Recorder, p, before.Conditions, p.Status.Conditions,
		[]string{scitunnelv1.ConditionResolved, scitunnelv1.ConditionConflict, scitunnelv1.ConditionRegistrySynced},
		func(typ string, now metav1.Condition, _ *metav1.Condition) bool {
			if typ == scitunnelv1.ConditionConflict {
				return now.Status == metav1.ConditionTrue
			}
			return now.Status == metav1.ConditionFalse
		})
}

// SetupWithManager registers the controller. SetupIndexes must have run (Setup does both).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("scitagpolicy-controller")
	}
	r.fetcher = r.Registry.newFetcher(ctrl.Log.WithName("registry-fetcher"))
	if err := mgr.Add(r.fetcher); err != nil {
		return err
	}
	r.applier = &ssa.Applier{Client: r.Client, Owner: child.FieldOwner}
	specOrMeta := watch.SpecOrMeta()
	return ctrl.NewControllerManagedBy(mgr).
		// A finished fetch sends the policies of its URL.
		WatchesRawSource(source.Channel(r.fetcher.events, &handler.EnqueueRequestForObject{})).
		For(&scitunnelv1.ScitagPolicy{}, builder.WithPredicates(specOrMeta)).
		Owns(&corev1.ConfigMap{}).
		Watches(&scitunnelv1.StreamTunnel{}, handler.EnqueueRequestsFromMapFunc(r.tunnelToPolicies), builder.WithPredicates(watch.PeerChanged)).
		// A policy's status feeds its rivals' Conflict conditions.
		Watches(&scitunnelv1.ScitagPolicy{}, handler.EnqueueRequestsFromMapFunc(r.rivalPolicies), builder.WithPredicates(specOrMeta)).
		Named("scitagpolicy").
		Complete(r)
}

// tunnelToPolicies re-evaluates the policies of a tunnel's namespace when it comes, goes or
// changes labels; there are few policies per namespace.
func (r *Reconciler) tunnelToPolicies(ctx context.Context, o client.Object) []reconcile.Request {
	reqs, _ := indexes.Requests(ctx, r.Client, &scitunnelv1.ScitagPolicyList{}, client.InNamespace(o.GetNamespace()))
	return reqs
}

// rivalPolicies: a policy's status feeds its rivals' Conflict conditions.
func (r *Reconciler) rivalPolicies(ctx context.Context, o client.Object) []reconcile.Request {
	reqs := r.tunnelToPolicies(ctx, o)
	return slices.DeleteFunc(reqs, func(q reconcile.Request) bool { return q.Name == o.GetName() })
}
