// Package tunnel is the StreamTunnel controller: it turns a tunnel end into a proxy
// Deployment (proxy + sFlow sidecar), a Service and a ConfigMap holding the data-plane
// configuration, resolves the end's routes and scitag, and reports the Ready, ProxyAvailable
// and Degraded conditions. Certificates (package certificates) and the live figures from the
// pods (package telemetry) are other controllers' jobs; this one reads their conditions.
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/conditions"
	"github.com/scitunnel/scitunnel/controllers/internal/ends"
	"github.com/scitunnel/scitunnel/controllers/internal/ssa"
	"github.com/scitunnel/scitunnel/controllers/internal/watch"
	"github.com/scitunnel/scitunnel/dataplane/config"
)

// Options are the tunnel controller's settings.
type Options struct {
	// DataPlaneImage runs the proxy and the sFlow sidecar.
	DataPlaneImage string
	// ImagePullPolicy of the data-plane containers; empty lets Kubernetes choose.
	ImagePullPolicy corev1.PullPolicy
	// TrustDomain of the SPIFFE-style client identities, unless a tunnel sets its own.
	TrustDomain string
	// ClusterDomain is the cluster's DNS suffix.
	ClusterDomain string
	// MaxConcurrentReconciles of the controller.
	MaxConcurrentReconciles int
	// NetworkPolicy: each tunnel's NetworkPolicy (networkpolicy.go).
	NetworkPolicy NetworkPolicyOptions
}

// Reconciler builds one tunnel end's workload.
type Reconciler struct {
	client.Client
	Recorder events.EventRecorder
	Options  Options

	applier *ssa.Applier
}

// +kubebuilder:rbac:groups=scitunnel.io,resources=streamtunnels,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=scitunnel.io,resources=streamtunnels/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// scope carries what one reconciliation pass learned, from phase to phase.
type scope struct {
	tunnel *scitunnelv1.StreamTunnel
	orig   *scitunnelv1.StreamTunnelStatus // as read, before the phases write theirs

	// blocked: the tunnel cannot be built yet (e.g. its remote is missing); it says why.
	blocked *ends.Blocked

	ends ends.Ends // this end's routes

	// Tag.
	tag          *scitunnelv1.ResolvedScitag
	tagPending   bool // a ScitagPolicy selects the tunnel but has not resolved its tag yet
	fireflies    *config.Fireflies
	registryJSON []byte

	// Certificates, as the certificates controller reports them.
	tlsSecret    string // Secret mounted into the pods; "" without TLS
	certReady    bool   // the Secret can be mounted
	certsChecked bool   // the certificates controller has looked at this generation

	configHash string // of the ConfigMap's content, on the pod template

	// Observed children.
	service       *corev1.Service
	deployment    *appsv1.Deployment
	readyPods     int
	sysctlRefused bool // the kubelet refused a pod for the flow-label sysctl

	conditions conditions.Set
	problems   []problem
	requeue    time.Duration
}

// problem is one thing the user must act on; the Degraded condition lists them.
type problem struct{ reason, message string }

func (s *scope) set(condType string, status metav1.ConditionStatus, reason, message string) {
	s.conditions.Set(condType, status, reason, message)
}

func (s *scope) degrade(reason, message string) {
	s.problems = append(s.problems, problem{reason, message})
}

// requeueAfter keeps the soonest non-zero requeue.
func (s *scope) requeueAfter(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	if s.requeue == 0 || d < s.requeue {
		s.requeue = d
	}
}

// Reconcile is one pass over a StreamTunnel: small phases, each doing one thing, then one
// status apply.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	log := logf.FromContext(ctx)
	t := &scitunnelv1.StreamTunnel{}
	if err := r.Get(ctx, req.NamespacedName, t); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !t.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // children go by owner reference; certificates has the finalizer
	}
	s := &scope{tunnel: t, orig: t.Status.DeepCopy(), conditions: conditions.Set{}}
	defer func() {
		if err := r.applyStatus(ctx, s, retErr == nil); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("status: %w", err))
		}
		if retErr == nil && s.requeue > 0 {
			result.RequeueAfter = s.requeue
		}
	}()

	phases := []struct {
		name string
		run  func(context.Context, *scope) error
	}{
		{"ends", r.reconcileEnds},
		{"scitag", r.reconcileScitag},
		{"service", r.reconcileService},
		{"networkpolicy", r.reconcileNetworkPolicy},
		{"certificates", r.observeCertificates},
		{"config", r.reconcileConfig},
		{"deployment", r.reconcileDeployment},
		{"pods", r.observePods},
	}
	var errs []error
	for _, p := range phases {
		if err := p.run(ctx, s); err != nil {
			log.V(1).Info("phase failed", "phase", p.name, "error", err.Error())
			if s.reportProblem(err) {
				continue
			}
			errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
		}
	}
	return ctrl.Result{}, errors.Join(errs...)
}

// conflictRecheck is how often a tunnel whose child's name is taken looks again: the user's
// object may live outside the cache (which holds only the operator's), so its removal
// triggers no event.
const conflictRecheck = 10 * time.Second

// reportProblem puts an apply error the user must act on into Degraded. A name conflict is
// not retried with backoff but rechecked at a steady pace; it reports true when the error is
// dealt with. An object the API server refused is reported and still retried.
func (s *scope) reportProblem(err error) bool {
	reason, message, ok := ssa.Problem(err)
	if !ok {
		return false
	}
	s.degrade(reason, message)
	if reason == conditions.ReasonNameConflict {
		s.requeueAfter(conflictRecheck)
		return true
	}
	return false
}

// reconcileEnds works out this end's routes; an Outbound referencing an Inbound of this
// cluster is wired to it.
func (r *Reconciler) reconcileEnds(ctx context.Context, s *scope) error {
	resolver := ends.Resolver{Reader: r.Client, ClusterDomain: r.Options.ClusterDomain, TrustDomain: r.Options.TrustDomain}
	e, err := resolver.Resolve(ctx, s.tunnel)
	if err != nil {
		return err
	}
	s.ends = e
	t := s.tunnel
	if e.Remote != "" {
		t.Status.Remote = e.Remote
	}
	if t.Spec.Role == scitunnelv1.RoleInbound && e.Blocked == nil {
		t.Status.Peers = e.Peers[:min(len(e.Peers), ends.MaxPeers)]
	}
	if b := e.Blocked; b != nil {
		s.blocked = b
		if b.Degraded {
			s.degrade(b.Reason, b.Message)
		}
	}
	return nil
}

// SetupWithManager registers the controller and its watches; the field indexes must exist.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("streamtunnel-controller")
	}
	if r.Options.MaxConcurrentReconciles == 0 {
		r.Options.MaxConcurrentReconciles = 4
	}
	r.applier = &ssa.Applier{Client: r.Client, Live: mgr.GetAPIReader(), Owner: child.FieldOwner}
	// Its own status writes must not trigger a new pass; the other controllers' conditions it
	// reads (CertificateReady, FlowLabelApplied's owner) must.
	self := predicate.Or(watch.SpecOrMeta(), predicate.Funcs{UpdateFunc: othersChanged})
	return ctrl.NewControllerManagedBy(mgr).
		For(&scitunnelv1.StreamTunnel{}, builder.WithPredicates(self)).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(watch.ByTunnelLabel)).
		Watches(&scitunnelv1.StreamTunnel{}, handler.EnqueueRequestsFromMapFunc(r.peerTunnels), builder.WithPredicates(watch.PeerChanged)).
		Watches(&scitunnelv1.ScitagPolicy{}, handler.EnqueueRequestsFromMapFunc(r.policyToTunnels), builder.WithPredicates(policyTagChanged)).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Options.MaxConcurrentReconciles}).
		Named("streamtunnel").
		Complete(r)
}
