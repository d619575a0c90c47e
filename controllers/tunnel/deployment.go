package tunnel

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/ssa"
	"github.com/scitunnel/scitunnel/controllers/telemetry"
)

// tagPendingWait bounds how long a new tunnel's pods wait for its ScitagPolicy to resolve; a
// policy that takes longer does not hold the data up (the pods start untagged and roll later).
const tagPendingWait = 30 * time.Second

// reconcileDeployment applies the proxy Deployment and reads its availability.
func (r *Reconciler) reconcileDeployment(ctx context.Context, s *scope) error {
	t := s.tunnel
	if s.blocked != nil || s.configHash == "" {
		return r.observeDeployment(ctx, s) // keep reporting on pods that already run
	}
	if s.tlsSecret != "" && !s.certReady {
		return r.observeDeployment(ctx, s) // certificates not ready yet: pods could not start
	}
	cur := &appsv1.Deployment{}
	found, err := ssa.Get(ctx, r.Client, client.ObjectKeyFromObject(t), cur)
	if err != nil {
		return err
	}
	// A tunnel applied together with its ScitagPolicy: the policy resolves within moments.
	// Starting the pods untagged meanwhile would roll them again right away, and the first
	// consumers would stream, unlabelled, through pods that are already draining. (Wall-clock
	// time against the API server's timestamp: the reconciler's clock is for certificates.)
	if !found && s.tagPending && time.Since(t.CreationTimestamp.Time) < tagPendingWait {
		s.requeueAfter(time.Second)
		return nil
	}
	ac := appsv1ac.Deployment(t.Name, t.Namespace).
		WithLabels(child.Labels(t)).
		WithOwnerReferences(child.OwnerRef(t)).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(replicasOf(t)).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(child.SelectorLabels(t))).
			WithTemplate(r.podTemplate(s)))
	var current client.Object
	if found {
		current = cur
	}
	dep := &appsv1.Deployment{}
	changed, err := r.applier.Apply(ctx, current, ac, dep)
	if err != nil {
		return err
	}
	if !found && changed {
		r.Recorder.Eventf(t, dep, corev1.EventTypeNormal, "DeploymentCreated", "Create", "created proxy Deployment %s", dep.Name)
	}
	s.deployment = dep
	r.setAvailability(s)
	return nil
}

func (r *Reconciler) observeDeployment(ctx context.Context, s *scope) error {
	dep := &appsv1.Deployment{}
	found, err := ssa.Get(ctx, r.Client, client.ObjectKeyFromObject(s.tunnel), dep)
	if err != nil || !found || !metav1.IsControlledBy(dep, s.tunnel) {
		return err // a Deployment of this name that is not the tunnel's says nothing about it
	}
	s.deployment = dep
	r.setAvailability(s)
	return nil
}

func replicasOf(t *scitunnelv1.StreamTunnel) int32 {
	if t.Spec.Replicas != nil {
		return *t.Spec.Replicas
	}
	return 1
}

// setAvailability derives ProxyAvailable and the scale status from the Deployment.
func (r *Reconciler) setAvailability(s *scope) {
	t, d := s.tunnel, s.deployment
	want := replicasOf(t)
	t.Status.Replicas = d.Status.Replicas
	t.Status.ReadyReplicas = d.Status.AvailableReplicas
	t.Status.Selector = labels.SelectorFromSet(child.SelectorLabels(t)).String()
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentReplicaFailure && c.Status == corev1.ConditionTrue {
			s.degrade("ReplicaFailure", fmt.Sprintf("the proxy pods cannot be created: %s", c.Message))
		}
		if c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse && c.Reason == "ProgressDeadlineExceeded" {
			s.degrade("RolloutStuck", fmt.Sprintf("the proxy rollout is stuck: %s; check the pods' events", c.Message))
		}
	}
	switch {
	case want == 0:
		s.set(scitunnelv1.ConditionProxyAvailable, metav1.ConditionFalse, "ScaledToZero", "spec.replicas is 0: no proxy pod runs")
	case d.Status.AvailableReplicas > 0:
		s.set(scitunnelv1.ConditionProxyAvailable, metav1.ConditionTrue, "Available",
			fmt.Sprintf("%d of %d proxy pods available", d.Status.AvailableReplicas, want))
	default:
		s.set(scitunnelv1.ConditionProxyAvailable, metav1.ConditionFalse, "NoPodAvailable",
			fmt.Sprintf("0 of %d proxy pods available yet", want))
	}
}

// observePods looks at the proxy pods: a kubelet that refuses them for the flow-label
// sysctl, and how many are ready to report (which decides who writes FlowLabelApplied).
func (r *Reconciler) observePods(ctx context.Context, s *scope) error {
	t := s.tunnel
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(t.Namespace), client.MatchingLabels(child.SelectorLabels(t))); err != nil {
		return err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if telemetry.PodReady(p) {
			s.readyPods++
		}
		s.sysctlRefused = s.sysctlRefused || telemetry.SysctlRefused(p)
	}
	for _, p := range pods.Items {
		if telemetry.SysctlRefused(&p) {
			msg := fmt.Sprintf("the kubelet refused pod %s: it does not allow the sysctl %s that mirrors the flow label on replies. "+
				"Allow it on the kubelets (--allowed-unsafe-sysctls=%s, or allowedUnsafeSysctls in the kubelet configuration), "+
				"or set spec.inbound.flowLabelReflection: false to run without reflection (replies then carry no tag)",
				p.Name, SysctlFlowLabelReflect, SysctlFlowLabelReflect)
			s.degrade("SysctlForbidden", msg)
			s.set(scitunnelv1.ConditionFlowLabelApplied, metav1.ConditionFalse, "SysctlForbidden", msg)
			break
		}
	}
	return nil
}
