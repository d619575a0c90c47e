// Package telemetry is the StreamTunnel telemetry controller: it reads the reports of a
// tunnel's ready proxy pods (the proxy's /v1/status, the sFlow analyzer's /v1/tags) and writes
// what they say into the tunnel's status — per-tag throughput, active connections and, while
// the tunnel is tagged and a pod is ready, the FlowLabelApplied condition — under its own
// field manager. The pods are polled concurrently under one deadline, off the tunnel
// controller's path: an unreachable analyzer delays nothing else.
package telemetry

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/conditions"
	"github.com/scitunnel/scitunnel/controllers/internal/ssa"
	"github.com/scitunnel/scitunnel/controllers/internal/watch"
)

// FieldOwner is this controller's field manager on StreamTunnel status.
const FieldOwner = client.FieldOwner("scitunnel-telemetry")

// StaleSummary replaces status.throughputSummary while no ready pod answers: the per-tag
// figures stay, with the time they were last measured.
const StaleSummary = "stale"

// Reconciler polls one tunnel's ready pods.
type Reconciler struct {
	client.Client
	Recorder events.EventRecorder
	// Reports reads the pods' reports.
	Reports DataPlaneReports
	// Interval is how often a tunnel with ready pods is polled.
	Interval time.Duration
	// Deadline bounds one poll of all of a tunnel's pods.
	Deadline time.Duration
	// MaxConcurrentReconciles is how many tunnels are polled at once.
	MaxConcurrentReconciles int
}

// +kubebuilder:rbac:groups=scitunnel.io,resources=streamtunnels,verbs=get;list;watch
// +kubebuilder:rbac:groups=scitunnel.io,resources=streamtunnels/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch

// OwnsFlowLabelCondition says whether FlowLabelApplied is this controller's to write: while
// the tunnel is tagged, a proxy pod is ready to report and no pod is refused for the flow-label
// sysctl. Otherwise the tunnel controller writes it, saying why nothing can be reported.
func OwnsFlowLabelCondition(tagged bool, readyPods int, sysctlRefused bool) bool {
	return tagged && readyPods > 0 && !sysctlRefused
}

// SysctlRefused says whether the kubelet refused a pod for a sysctl (the flow-label one is the
// only unsafe sysctl the operator asks for).
func SysctlRefused(p *corev1.Pod) bool { return p.Status.Reason == "SysctlForbidden" }

// scope is what one poll learned.
type scope struct {
	tunnel  *scitunnelv1.StreamTunnel
	ready   []corev1.Pod
	refused bool // a pod was refused for the flow-label sysctl
	reports []podReports

	throughput  []scitunnelv1.TagThroughput
	summary     string
	connections int64
	flowLabel   *metav1.Condition
}

// Reconcile polls the tunnel's ready pods and applies what they report.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	t := &scitunnelv1.StreamTunnel{}
	if err := r.Get(ctx, req.NamespacedName, t); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !t.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	s := &scope{tunnel: t}
	if err := r.findReadyPods(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	var result ctrl.Result
	if len(s.ready) > 0 {
		r.poll(ctx, s)
		r.summarize(s)
		result.RequeueAfter = r.Interval
	} else {
		s.throughput, s.summary, s.connections = nil, "", 0
	}
	if err := r.applyStatus(ctx, s); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		if apierrors.IsConflict(err) {
			// Read from a stale cache: the next pass sees the tunnel as it is.
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
		return ctrl.Result{}, err
	}
	return result, nil
}

func (r *Reconciler) findReadyPods(ctx context.Context, s *scope) error {
	t := s.tunnel
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(t.Namespace), client.MatchingLabels(child.SelectorLabels(t))); err != nil {
		return err
	}
	for _, p := range pods.Items {
		if PodReady(&p) {
			s.ready = append(s.ready, p)
		}
		s.refused = s.refused || SysctlRefused(&p)
	}
	return nil
}

// PodReady says whether a pod can report: running, addressed, Ready and not going away.
func PodReady(p *corev1.Pod) bool {
	if !p.DeletionTimestamp.IsZero() || p.Status.PodIP == "" {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// poll reads every ready pod's two reports concurrently, all under one deadline.
func (r *Reconciler) poll(ctx context.Context, s *scope) {
	ctx, cancel := context.WithTimeout(ctx, r.Deadline)
	defer cancel()
	s.reports = make([]podReports, len(s.ready))
	var wg sync.WaitGroup
	for i := range s.ready {
		ip := s.ready[i].Status.PodIP
		rep := &s.reports[i]
		rep.pod = s.ready[i].Name
		wg.Go(func() { rep.status, rep.statusErr = r.Reports.Status(ctx, ip) })
		wg.Go(func() { rep.tags, rep.tagsErr = r.Reports.Tags(ctx, ip) })
	}
	wg.Wait()
}

// summarize turns the reports into the status fields: figures from the pods that answered,
// marked stale when none did, and the flow-label condition while it is ours.
func (r *Reconciler) summarize(s *scope) {
	t := s.tunnel
	var statusOK, tagsOK int
	var notApplied *podReports
	var lastErr error
	for i := range s.reports {
		rep := &s.reports[i]
		if rep.statusErr == nil {
			statusOK++
			s.connections += rep.status.ActiveConnections
			if !rep.status.FlowLabel.Applied && notApplied == nil {
				notApplied = rep
			}
		} else {
			lastErr = rep.statusErr
		}
		if rep.tagsErr == nil {
			tagsOK++
		} else {
			lastErr = rep.tagsErr
		}
	}
	if statusOK == 0 {
		s.connections = t.Status.ActiveConnections
	}
	if tagsOK > 0 {
		s.throughput, s.summary = aggregateThroughput(s.reports, t.Status.Scitag)
	} else {
		s.throughput, s.summary = t.Status.Throughput, StaleSummary
	}
	tag := t.Status.Scitag
	if !OwnsFlowLabelCondition(tag != nil, len(s.ready), s.refused) {
		return
	}
	var c metav1.Condition
	switch {
	case statusOK == 0:
		c = condition(metav1.ConditionUnknown, "NoReport", fmt.Sprintf("could not read the proxies' status: %v", lastErr))
	case notApplied != nil:
		reason := notApplied.status.FlowLabel.Reason
		if !conditions.Reason.MatchString(reason) {
			reason = "NotMarked" // the API server refuses malformed reasons, and so the whole status
		}
		msg := notApplied.status.FlowLabel.Message
		if msg == "" {
			msg = "the proxy does not stamp the flow label"
		}
		c = condition(metav1.ConditionFalse, reason, fmt.Sprintf("pod %s: %s", notApplied.pod, msg))
	default:
		c = condition(metav1.ConditionTrue, "Marked", fmt.Sprintf("%d proxy pod(s) stamp flow label %s (%s)", statusOK, tag.FlowLabelHex, tag.Name))
	}
	if lastErr != nil && c.Status == metav1.ConditionTrue {
		c.Message += fmt.Sprintf("; %d of %d ready proxy pods did not report: %v", len(s.ready)-min(statusOK, tagsOK), len(s.ready), lastErr)
	}
	s.flowLabel = &c
}

func condition(status metav1.ConditionStatus, reason, message string) metav1.Condition {
	return metav1.Condition{Type: scitunnelv1.ConditionFlowLabelApplied, Status: status, Reason: reason, Message: message}
}

// applyStatus applies this controller's fields when they differ from what the tunnel shows.
// The apply is preconditioned on the tunnel's resourceVersion: whether the flow-label
// condition is ours depends on status.scitag, which the tunnel controller writes.
func (r *Reconciler) applyStatus(ctx context.Context, s *scope) error {
	t := s.tunnel
	set := conditions.Set{}
	if s.flowLabel != nil {
		set[s.flowLabel.Type] = *s.flowLabel
	}
	_, owned := set.Merge(t.Status.Conditions, t.Generation)
	unchanged := equality.Semantic.DeepEqual(ssa.List(s.throughput), ssa.List(t.Status.Throughput)) &&
		s.summary == t.Status.ThroughputSummary && s.connections == t.Status.ActiveConnections &&
		(s.flowLabel == nil || sameCondition(meta.FindStatusCondition(t.Status.Conditions, s.flowLabel.Type), owned[0]))
	if unchanged {
		return nil
	}
	// Every field is sent, empty ones too, so that clearing a figure clears it.
	fields := map[string]any{
		"throughput":        ssa.List(s.throughput),
		"throughputSummary": s.summary,
		"activeConnections": s.connections,
	}
	if len(owned) > 0 {
		conds, err := ssa.Fields(struct {
			C []metav1.Condition `json:"c"`
		}{owned})
		if err != nil {
			return err
		}
		fields["conditions"] = conds["c"]
	}
	if err := ssa.ApplyStatus(ctx, r.Client, t, FieldOwner, fields, true); err != nil {
		return err
	}
	if len(owned) > 0 {
		conditions.Announce(r.Recorder, t, t.Status.Conditions, owned, []string{scitunnelv1.ConditionFlowLabelApplied},
			func(_ string, now metav1.Condition, old *metav1.Condition) bool {
				return now.Status == metav1.ConditionFalse && old != nil && old.Status == metav1.ConditionTrue
			})
	}
	return nil
}

func sameCondition(cur *metav1.Condition, want metav1.Condition) bool {
	return cur != nil && cur.Status == want.Status && cur.Reason == want.Reason && cur.Message == want.Message &&
		cur.ObservedGeneration == want.ObservedGeneration
}

// SetupWithManager registers the controller: it looks at a tunnel when it comes, when its tag
// changes, when its pods change, and every Interval while pods are ready.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Interval == 0 {
		r.Interval = 10 * time.Second
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("streamtunnel-telemetry")
	}
	if r.Deadline == 0 {
		r.Deadline = 3 * time.Second
	}
	if r.MaxConcurrentReconciles == 0 {
		r.MaxConcurrentReconciles = 4
	}
	tagOrSpec := predicate.Or(predicate.GenerationChangedPredicate{}, predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*scitunnelv1.StreamTunnel)
		n, ok2 := e.ObjectNew.(*scitunnelv1.StreamTunnel)
		return !ok1 || !ok2 || !equality.Semantic.DeepEqual(o.Status.Scitag, n.Status.Scitag)
	}})
	return ctrl.NewControllerManagedBy(mgr).
		For(&scitunnelv1.StreamTunnel{}, builder.WithPredicates(tagOrSpec)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(watch.ByTunnelLabel)).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Named("streamtunnel-telemetry").
		Complete(r)
}
