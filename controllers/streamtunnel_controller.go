package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/dataplane/config"
)

// StreamTunnelReconciler turns a StreamTunnel into a proxy Deployment (proxy + sFlow sidecar),
// a Service, certificate Secrets, a connection bundle and a ConfigMap holding the data-plane
// configuration, and reports truthful conditions and live throughput in status.
type StreamTunnelReconciler struct {
	client.Client
	Scheme   *runtime.Scheme
	Recorder events.EventRecorder
	// Reports reads the proxies' and analyzers' reports; nil disables throughput polling.
	Reports DataPlaneReports
	// Clock drives certificate issuance and renewal; tests inject a fake one.
	Clock   clock.PassiveClock
	Options Options

	applied appliedCache
}

// +kubebuilder:rbac:groups=scitunnel.io,resources=streamtunnels,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=scitunnel.io,resources=streamtunnels/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=scitunnel.io,resources=streamtunnels/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;configmaps;secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;watch;create;update;patch;delete

// tunnelScope carries what one reconciliation pass learned, from phase to phase.
type tunnelScope struct {
	tunnel *scitunnelv1.StreamTunnel
	now    time.Time

	// blocked: the tunnel cannot be built yet (e.g. its remote is missing); the message says why.
	blocked       bool
	blockedReason string
	blockedMsg    string

	// This end's routes.
	listenPorts []int
	targets     []string
	serverName  string
	inbound     *scitunnelv1.StreamTunnel // Outbound wired to an Inbound of this cluster
	peers       []string                  // Inbound: wired Outbound ends, "ns/name"
	peerIDs     []string                  // their client identities

	// Tag.
	tag          *scitunnelv1.ResolvedScitag
	tagPending   bool // a ScitagPolicy selects the tunnel but has not resolved its tag yet
	fireflies    *config.Fireflies
	registryJSON []byte

	// Certificates.
	tlsSecret string // Secret mounted into the pods; "" without TLS

	configHash string // of the ConfigMap's content, on the pod template

	// Observed children.
	service    *corev1.Service
	deployment *appsv1.Deployment
	pods       []corev1.Pod

	conditions map[string]metav1.Condition
	problems   []problem
	requeue    time.Duration
}

// problem is one thing the user must act on; the Degraded condition lists them.
type problem struct{ reason, message string }

func (s *tunnelScope) set(condType string, status metav1.ConditionStatus, reason, message string) {
	s.conditions[condType] = metav1.Condition{Type: condType, Status: status, Reason: reason, Message: message}
}

func (s *tunnelScope) degrade(reason, message string) {
	s.problems = append(s.problems, problem{reason, message})
}

func (s *tunnelScope) block(reason, message string) {
	if !s.blocked {
		s.blocked, s.blockedReason, s.blockedMsg = true, reason, message
	}
}

// requeueAfter keeps the soonest non-zero requeue.
func (s *tunnelScope) requeueAfter(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	if s.requeue == 0 || d < s.requeue {
		s.requeue = d
	}
}

// Reconcile is one pass over a StreamTunnel: small phases, each doing one thing, then one
// status patch.
func (r *StreamTunnelReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	log := logf.FromContext(ctx)
	t := &scitunnelv1.StreamTunnel{}
	if err := r.Get(ctx, req.NamespacedName, t); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !t.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, t)
	}
	if t.Spec.Role == scitunnelv1.RoleInbound && !controllerutil.ContainsFinalizer(t, Finalizer) {
		patch := client.MergeFrom(t.DeepCopy())
		controllerutil.AddFinalizer(t, Finalizer)
		if err := r.Patch(ctx, t, patch); err != nil {
			return ctrl.Result{}, err
		}
	}

	s := &tunnelScope{tunnel: t, now: r.Clock.Now(), conditions: map[string]metav1.Condition{}}
	orig := t.DeepCopy()
	before := &orig.Status
	defer func() {
		r.summarize(s, retErr == nil)
		if !equality.Semantic.DeepEqual(before, &t.Status) {
			if err := r.Status().Patch(ctx, t, client.MergeFrom(orig)); err != nil && !apierrors.IsNotFound(err) {
				retErr = errors.Join(retErr, fmt.Errorf("status: %w", err))
			}
			r.announce(t, before)
		}
		if retErr == nil && s.requeue > 0 {
			result.RequeueAfter = s.requeue
		}
	}()

	phases := []struct {
		name string
		run  func(context.Context, *tunnelScope) error
	}{
		{"ends", r.reconcileEnds},
		{"scitag", r.reconcileScitag},
		{"service", r.reconcileService},
		{"certificates", r.reconcileCertificates},
		{"config", r.reconcileConfig},
		{"deployment", r.reconcileDeployment},
		{"dataplane", r.observeDataPlane},
	}
	var errs []error
	for _, p := range phases {
		if err := p.run(ctx, s); err != nil {
			log.V(1).Info("phase failed", "phase", p.name, "error", err.Error())
			errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
		}
	}
	return ctrl.Result{}, errors.Join(errs...)
}

// finalize removes the client certificates issued from an Inbound's CA in every namespace,
// then lets the API server delete the tunnel (its own children go by owner reference).
func (r *StreamTunnelReconciler) finalize(ctx context.Context, t *scitunnelv1.StreamTunnel) error {
	if !controllerutil.ContainsFinalizer(t, Finalizer) {
		return nil
	}
	var issued corev1.SecretList
	if err := r.List(ctx, &issued, client.MatchingLabels{LabelIssuerUID: string(t.UID)}); err != nil {
		return err
	}
	for i := range issued.Items {
		sec := &issued.Items[i]
		if err := r.Delete(ctx, sec); client.IgnoreNotFound(err) != nil {
			return err
		}
		r.Recorder.Eventf(t, sec, corev1.EventTypeNormal, "PeerCertificateRemoved", "Finalize",
			"removed client certificate %s/%s issued from this tunnel's CA", sec.Namespace, sec.Name)
	}
	patch := client.MergeFrom(t.DeepCopy())
	controllerutil.RemoveFinalizer(t, Finalizer)
	return client.IgnoreNotFound(r.Patch(ctx, t, patch))
}

// SetupWithManager registers the controller and its watches; SetupIndexes must have run
// (Setup.Register does both).
func (r *StreamTunnelReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.Options = r.Options.withDefaults()
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("streamtunnel-controller")
	}
	// Status writes (our own, every poll) must not trigger a new pass: only spec, label and
	// annotation changes do (labels choose ScitagPolicies; an annotation nudges a pass).
	specOrMeta := predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}, predicate.AnnotationChangedPredicate{})
	return ctrl.NewControllerManagedBy(mgr).
		For(&scitunnelv1.StreamTunnel{}, builder.WithPredicates(specOrMeta)).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Secret{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToTunnel)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.secretToTunnels)).
		Watches(&scitunnelv1.StreamTunnel{}, handler.EnqueueRequestsFromMapFunc(r.peerTunnels), builder.WithPredicates(peerChanged)).
		Watches(&scitunnelv1.ScitagPolicy{}, handler.EnqueueRequestsFromMapFunc(r.policyToTunnels), builder.WithPredicates(policyTagChanged)).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Options.MaxConcurrentReconciles}).
		Named("streamtunnel").
		Complete(r)
}

// summarize computes Ready and Degraded from the phases' findings and writes status.
func (r *StreamTunnelReconciler) summarize(s *tunnelScope, succeeded bool) {
	t := s.tunnel
	st := &t.Status

	if _, ok := s.conditions[scitunnelv1.ConditionCertificateReady]; !ok {
		if s.blocked {
			s.set(scitunnelv1.ConditionCertificateReady, metav1.ConditionUnknown, s.blockedReason, "waiting: "+s.blockedMsg)
		} else {
			s.set(scitunnelv1.ConditionCertificateReady, metav1.ConditionUnknown, "Pending", "certificates not checked yet")
		}
	}
	if _, ok := s.conditions[scitunnelv1.ConditionProxyAvailable]; !ok {
		s.set(scitunnelv1.ConditionProxyAvailable, metav1.ConditionFalse, "NoDeployment", "the proxy Deployment does not exist yet")
	}
	if _, ok := s.conditions[scitunnelv1.ConditionFlowLabelApplied]; !ok {
		s.set(scitunnelv1.ConditionFlowLabelApplied, metav1.ConditionUnknown, "Pending", "the tag is not resolved yet")
	}

	cert := s.conditions[scitunnelv1.ConditionCertificateReady]
	proxy := s.conditions[scitunnelv1.ConditionProxyAvailable]
	switch {
	case s.blocked:
		s.set(scitunnelv1.ConditionReady, metav1.ConditionFalse, s.blockedReason, s.blockedMsg)
	case cert.Status != metav1.ConditionTrue:
		s.set(scitunnelv1.ConditionReady, metav1.ConditionFalse, "CertificateNotReady", cert.Message)
	case proxy.Status != metav1.ConditionTrue:
		s.set(scitunnelv1.ConditionReady, metav1.ConditionFalse, "ProxyNotAvailable", proxy.Message)
	default:
		s.set(scitunnelv1.ConditionReady, metav1.ConditionTrue, "TunnelReady", "proxy pods available and certificates valid")
	}
	if len(s.problems) > 0 {
		msg := s.problems[0].message
		for _, p := range s.problems[1:] {
			msg += "; " + p.message
		}
		s.set(scitunnelv1.ConditionDegraded, metav1.ConditionTrue, s.problems[0].reason, truncate(msg, 1000))
	} else {
		s.set(scitunnelv1.ConditionDegraded, metav1.ConditionFalse, "AsExpected", "nothing needs attention")
	}

	for _, c := range s.conditions {
		c.ObservedGeneration = t.Generation
		c.Message = truncate(c.Message, 1000)
		meta.SetStatusCondition(&st.Conditions, c)
	}
	switch {
	case len(s.problems) > 0:
		st.Message = s.conditions[scitunnelv1.ConditionDegraded].Message
	case s.conditions[scitunnelv1.ConditionReady].Status != metav1.ConditionTrue:
		st.Message = s.conditions[scitunnelv1.ConditionReady].Message
	default:
		st.Message = ""
	}
	st.Message = truncate(st.Message, 1000)
	if succeeded {
		st.ObservedGeneration = t.Generation
	}
}

// announce records events for the transitions a user cares about.
func (r *StreamTunnelReconciler) announce(t *scitunnelv1.StreamTunnel, before *scitunnelv1.StreamTunnelStatus) {
	for _, typ := range []string{scitunnelv1.ConditionReady, scitunnelv1.ConditionDegraded, scitunnelv1.ConditionFlowLabelApplied} {
		now := meta.FindStatusCondition(t.Status.Conditions, typ)
		old := meta.FindStatusCondition(before.Conditions, typ)
		if now == nil || (old != nil && old.Status == now.Status && old.Reason == now.Reason) {
			continue
		}
		kind := corev1.EventTypeNormal
		if (typ == scitunnelv1.ConditionDegraded && now.Status == metav1.ConditionTrue) ||
			(typ != scitunnelv1.ConditionDegraded && now.Status == metav1.ConditionFalse && old != nil && old.Status == metav1.ConditionTrue) {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(t, nil, kind, now.Reason, typ, "%s=%s: %s", typ, now.Status, now.Message)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
