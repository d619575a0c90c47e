package tunnel

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/tagpolicy"
	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

var (
	snapshotOnce sync.Once
	snapshotJSON []byte
)

// defaultRegistryJSON is the compiled-in registry, rendered once for the proxies' ConfigMaps.
func defaultRegistryJSON() []byte {
	snapshotOnce.Do(func() {
		b, err := json.Marshal(scitag.Default())
		if err != nil {
			panic(err)
		}
		snapshotJSON = b
	})
	return snapshotJSON
}

// reconcileScitag resolves the tunnel's tag: inline names/ids, the policy it names, or the
// oldest policy whose selector matches it.
func (r *Reconciler) reconcileScitag(ctx context.Context, s *scope) error {
	t := s.tunnel
	s.registryJSON = defaultRegistryJSON()
	prev := t.Status.Scitag
	t.Status.Scitag = nil
	notTagged := func(status metav1.ConditionStatus, reason, msg string) {
		s.set(scitunnelv1.ConditionFlowLabelApplied, status, reason, msg)
	}

	if sc := t.Spec.Scitag; sc != nil && sc.PolicyRef == nil {
		tag, err := resolveInline(sc.Experiment, sc.Activity)
		if err != nil {
			msg := fmt.Sprintf("spec.scitag: %v", err)
			notTagged(metav1.ConditionFalse, "TagUnresolved", msg)
			s.degrade("TagUnresolved", msg)
			return nil
		}
		s.tag = resolved(tag, sc.Entropy == nil || *sc.Entropy, "inline")
		t.Status.Scitag = s.tag
		return nil
	}

	policy, err := r.findPolicy(ctx, s)
	if err != nil || policy == nil {
		return err
	}

	source := "ScitagPolicy/" + policy.Name
	resolvedCond := meta.FindStatusCondition(policy.Status.Conditions, scitunnelv1.ConditionResolved)
	switch {
	case resolvedCond == nil || resolvedCond.ObservedGeneration != policy.Generation:
		if prev == nil || prev.Source != source {
			notTagged(metav1.ConditionUnknown, "PolicyPending", fmt.Sprintf("waiting for ScitagPolicy %q to resolve its tag", policy.Name))
			s.tagPending = true
			return nil
		}
		// The policy is re-resolving after an edit: its last tag stays on the flows meanwhile,
		// rather than every tunnel it selects going untagged (and its proxies reloading) twice.
		s.tag = prev
	case resolvedCond.Status != metav1.ConditionTrue || policy.Status.ExperimentID == nil || policy.Status.ActivityID == nil:
		msg := fmt.Sprintf("ScitagPolicy %q does not resolve: %s", policy.Name, resolvedCond.Message)
		notTagged(metav1.ConditionFalse, "PolicyUnresolved", msg)
		s.degrade("PolicyUnresolved", msg)
		return nil
	default:
		tag := scitag.Tag{
			ExperimentID:   int(*policy.Status.ExperimentID),
			ActivityID:     int(*policy.Status.ActivityID),
			ExperimentName: policy.Status.ExperimentName,
			ActivityName:   policy.Status.ActivityName,
		}
		entropy := policy.Spec.Entropy == nil || *policy.Spec.Entropy // default on
		if sc := t.Spec.Scitag; sc != nil && sc.Entropy != nil {
			entropy = *sc.Entropy
		}
		s.tag = resolved(tag, entropy, source)
	}
	t.Status.Scitag = s.tag
	s.fireflies = firefliesFrom(policy.Spec.Fireflies)

	// The proxies name tags with the registry the policy resolved against.
	// (The policy controller copies a registry from a URL or from a user's ConfigMap into
	// "<policy>-registry", which the manager caches.)
	if policy.Spec.Registry != nil {
		var cm corev1.ConfigMap
		key := client.ObjectKey{Namespace: t.Namespace, Name: child.RegistryConfigMapName(policy)}
		if err := r.Get(ctx, key, &cm); err == nil && cm.Data["api.json"] != "" {
			if _, err := scitag.Parse([]byte(cm.Data["api.json"])); err == nil {
				s.registryJSON = []byte(cm.Data["api.json"])
			}
		}
	}
	return nil
}

// findPolicy finds the policy that tags the tunnel: the one it names, or the oldest whose
// selector matches it (a conflict the user should resolve). nil: none, and the phase has said
// why the tunnel is not tagged.
func (r *Reconciler) findPolicy(ctx context.Context, s *scope) (*scitunnelv1.ScitagPolicy, error) {
	t := s.tunnel
	if sc := t.Spec.Scitag; sc != nil && sc.PolicyRef != nil {
		policy := &scitunnelv1.ScitagPolicy{}
		if err := r.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: sc.PolicyRef.Name}, policy); err != nil {
			if !apierrors.IsNotFound(err) {
				return nil, err
			}
			s.set(scitunnelv1.ConditionFlowLabelApplied, metav1.ConditionFalse, "PolicyNotFound",
				fmt.Sprintf("ScitagPolicy %q named in spec.scitag.policyRef does not exist yet; flows are untagged until it does", sc.PolicyRef.Name))
			return nil, nil
		}
		return policy, nil
	}
	var list scitunnelv1.ScitagPolicyList
	if err := r.List(ctx, &list, client.InNamespace(t.Namespace)); err != nil {
		return nil, err
	}
	matching := tagpolicy.Selecting(list.Items, t)
	if len(matching) == 0 {
		s.set(scitunnelv1.ConditionFlowLabelApplied, metav1.ConditionFalse, "NotTagged", "no scitag: set spec.scitag or label the tunnel for a ScitagPolicy's tunnelSelector")
		return nil, nil
	}
	policy := matching[0]
	if len(matching) > 1 {
		names := make([]string, 0, len(matching)-1)
		for _, p := range matching[1:] {
			names = append(names, p.Name)
		}
		s.degrade("PolicyConflict", fmt.Sprintf("ScitagPolicies %q and %v all select this tunnel; the oldest, %q, applies: narrow their tunnelSelectors or use spec.scitag.policyRef",
			policy.Name, names, policy.Name))
	}
	return policy, nil
}

// resolveInline resolves inline names or ids against the compiled-in registry (scitag's
// Registry.Resolve: two numeric ids the registry does not list are accepted as they are).
func resolveInline(exp scitunnelv1.ExperimentRef, act scitunnelv1.ActivityRef) (scitag.Tag, error) {
	tag, err := scitag.Default().Resolve(string(exp), string(act))
	return tag.Tag, err
}

func resolved(tag scitag.Tag, entropy bool, source string) *scitunnelv1.ResolvedScitag {
	label := tag.Label()
	return &scitunnelv1.ResolvedScitag{
		Name:         tag.String(),
		ExperimentID: int32(tag.ExperimentID),
		ActivityID:   int32(tag.ActivityID),
		FlowLabel:    int32(label),
		FlowLabelHex: scitag.FormatLabel(label),
		Entropy:      entropy,
		Source:       source,
	}
}

// firefliesFrom converts the API's fireflies settings to the data plane's.
func firefliesFrom(f *scitunnelv1.FirefliesSpec) *config.Fireflies {
	if f == nil {
		return nil
	}
	out := &config.Fireflies{
		Enabled: f.Enabled != nil && *f.Enabled,
		ToPeer:  f.ToPeer != nil && *f.ToPeer,
	}
	for _, c := range f.Collectors {
		out.Collectors = append(out.Collectors, string(c))
	}
	return out
}

// mergeFireflies combines the tunnel's own settings with its policy's: enabled if either
// enables, collectors from both.
func mergeFireflies(a, b *config.Fireflies) *config.Fireflies {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	out := &config.Fireflies{Enabled: a.Enabled || b.Enabled, ToPeer: a.ToPeer || b.ToPeer, Application: a.Application}
	out.Collectors = append(slices.Clone(a.Collectors), b.Collectors...)
	slices.Sort(out.Collectors)
	out.Collectors = slices.Compact(out.Collectors)
	return out
}
