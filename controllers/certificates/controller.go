// Package certificates is the StreamTunnel certificates controller: it gives each tunnel end
// that talks mutual TLS a certificate, CA and key from the source its spec names — the
// Inbound's own CA run by the operator (with the Outbound ends' client certificates and a
// connection bundle for other clusters), a user's Secret, a copied bundle, or cert-manager —
// renews what it issued at two thirds of its lifetime, and reports status.certificates and the
// CertificateReady condition under its own field manager. The tunnel controller mounts the
// Secret SecretName names once CertificateReady is True.
package certificates

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/conditions"
	"github.com/scitunnel/scitunnel/controllers/internal/ends"
	"github.com/scitunnel/scitunnel/controllers/internal/indexes"
	"github.com/scitunnel/scitunnel/controllers/internal/ssa"
	"github.com/scitunnel/scitunnel/controllers/internal/watch"
)

// FieldOwner is this controller's field manager on StreamTunnel status.
const FieldOwner = client.FieldOwner("scitunnel-certificates")

// ReasonExpiring: CertificateReady is True, but a certificate the operator does not renew
// is past two thirds of its life; the tunnel controller reports it as Degraded.
const ReasonExpiring = "Expiring"

// Waiting says whether a CertificateReady reason is a wait that resolves by itself (not a
// problem for the user to fix).
func Waiting(reason string) bool {
	switch reason {
	case "WaitingForCA", "Issuing", "Pending":
		return true
	}
	return false
}

// Mountable says whether a CertificateReady=False reason still leaves a Secret the pods can
// mount (it exists and parses, but its certificate is expired or not yet valid).
// A lost CA (CAUnavailable) leaves the issued certificates in place until they expire.
func Mountable(reason string) bool {
	return reason == "CertificateExpired" || reason == "CertificateNotYetValid" || reason == ReasonCAUnavailable
}

// Options are the certificates controller's settings.
type Options struct {
	// TrustDomain of the SPIFFE-style client identities, unless a tunnel sets its own.
	TrustDomain string
	// ClusterDomain is the cluster's DNS suffix, for Service names in certificates.
	ClusterDomain string
	// CertificateDuration is the default leaf lifetime.
	CertificateDuration time.Duration
	// MaxConcurrentReconciles of the controller.
	MaxConcurrentReconciles int
	// UserObjectsRecheck is how often a Secret a user names is read again: the manager does
	// not watch users' Secrets (it does not cache them), so a replaced certificate, or a
	// Secret created after the tunnel, is noticed within this time. 0: a minute.
	UserObjectsRecheck time.Duration
}

// Reconciler issues and checks one tunnel end's certificates.
type Reconciler struct {
	client.Client
	Recorder events.EventRecorder
	// Clock drives issuance and renewal; tests inject a fake one.
	Clock   clock.PassiveClock
	Options Options
	// APIReader reads the API server past the cache: the Secrets users name (their own
	// certificates, copied bundles), which the manager does not cache
	// (controllers.CacheOptions), and the CA before it is created, rotated or reported lost,
	// where a stale read would do harm. nil: SetupWithManager sets the manager's.
	APIReader client.Reader

	applier *ssa.Applier
}

// +kubebuilder:rbac:groups=scitunnel.io,resources=streamtunnels,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=scitunnel.io,resources=streamtunnels/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=scitunnel.io,resources=streamtunnels/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets;services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;watch;create;update;patch;delete

// scope carries what one pass learned, from phase to phase.
type scope struct {
	tunnel    *scitunnelv1.StreamTunnel
	now       time.Time
	ends      ends.Ends
	service   *corev1.Service              // the end's Service: its addresses go in the server certificate
	endpoints []scitunnelv1.TunnelEndpoint // where peers connect: the bundle's address

	conds        conditions.Set
	certificates []scitunnelv1.CertificateStatus
	requeue      time.Duration
}

// set records CertificateReady, the one condition this controller writes.
func (s *scope) set(status metav1.ConditionStatus, reason, message string) {
	s.conds.Set(scitunnelv1.ConditionCertificateReady, status, reason, message)
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

// SecretName is the Secret a tunnel end's pods mount its certificate from ("" without TLS):
// the one this controller issues or checks for the source the spec names.
func SecretName(t *scitunnelv1.StreamTunnel) string {
	if !ends.UsesTLS(t) {
		return ""
	}
	switch certSource(t) {
	case scitunnelv1.CertificatesSecret:
		return t.Spec.Certificates.SecretRef.Name
	case scitunnelv1.CertificatesCertManager:
		return child.TLSSecretName(t)
	}
	if out := t.Spec.Outbound; t.Spec.Role == scitunnelv1.RoleOutbound && out != nil && out.TunnelRef == nil &&
		out.Endpoint != nil && out.Endpoint.BundleSecretRef != nil {
		return out.Endpoint.BundleSecretRef.Name
	}
	return child.TLSSecretName(t)
}

// Reconcile is one pass over a tunnel's certificates, then one status apply.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	t := &scitunnelv1.StreamTunnel{}
	if err := r.Get(ctx, req.NamespacedName, t); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !t.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, t)
	}
	if t.Spec.Role == scitunnelv1.RoleInbound && !controllerutil.ContainsFinalizer(t, child.Finalizer) {
		patch := client.MergeFrom(t.DeepCopy())
		controllerutil.AddFinalizer(t, child.Finalizer)
		if err := r.Patch(ctx, t, patch); err != nil {
			return ctrl.Result{}, err
		}
	}
	// A pass that cannot look at the certificates (blocked, waiting, an error) keeps the list.
	s := &scope{tunnel: t, now: r.Clock.Now(), conds: conditions.Set{}, certificates: t.Status.Certificates}
	defer func() {
		if err := r.applyStatus(ctx, s); err != nil && !apierrors.IsNotFound(err) {
			retErr = errors.Join(retErr, fmt.Errorf("status: %w", err))
		}
		if retErr == nil && s.requeue > 0 {
			result.RequeueAfter = s.requeue
		}
	}()
	if err := r.observe(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.reconcileCertificates(ctx, s); err != nil {
		logf.FromContext(ctx).V(1).Info("certificates failed", "error", err.Error())
		return ctrl.Result{}, s.reportProblem(err)
	}
	return ctrl.Result{}, nil
}

// conflictRecheck is how often a tunnel whose certificate Secret's (or Certificate's) name is
// taken looks again: the user's object's removal need not reach this controller's watches.
const conflictRecheck = 10 * time.Second

// reportProblem puts an apply error the user must act on into CertificateReady (the tunnel
// controller reports it as Degraded). A name conflict is rechecked at a steady pace instead
// of retried with backoff; every other error is returned for a retry.
func (s *scope) reportProblem(err error) error {
	reason, message, ok := ssa.Problem(err)
	if !ok {
		return err
	}
	s.set(metav1.ConditionFalse, reason, message)
	if reason == conditions.ReasonNameConflict {
		s.requeueAfter(conflictRecheck)
		return nil
	}
	return err
}

// observe reads what the certificates depend on: the end's routes and peer, its Service.
func (r *Reconciler) observe(ctx context.Context, s *scope) error {
	t := s.tunnel
	resolver := ends.Resolver{Reader: r.Client, ClusterDomain: r.Options.ClusterDomain, TrustDomain: r.Options.TrustDomain}
	e, err := resolver.Resolve(ctx, t)
	if err != nil {
		return err
	}
	s.ends = e
	svc := &corev1.Service{}
	found, err := ssa.Get(ctx, r.Client, client.ObjectKeyFromObject(t), svc)
	if err != nil {
		return err
	}
	if found && metav1.IsControlledBy(svc, t) {
		s.service = svc
		s.endpoints, _ = ends.Endpoints(t, svc, e.ListenPorts)
	}
	return nil
}

// applyStatus applies CertificateReady and status.certificates when they changed.
func (r *Reconciler) applyStatus(ctx context.Context, s *scope) error {
	t := s.tunnel
	if !s.conds.Has(scitunnelv1.ConditionCertificateReady) {
		if b := s.ends.Blocked; b != nil {
			s.set(metav1.ConditionUnknown, b.Reason, "waiting: "+b.Message)
		} else {
			s.set(metav1.ConditionUnknown, "Pending", "certificates not checked yet")
		}
	}
	if wait := firstReportWait(t, s.conds[scitunnelv1.ConditionCertificateReady]); wait > 0 {
		s.requeueAfter(wait)
		return nil
	}
	all, owned := s.conds.Merge(t.Status.Conditions, t.Generation)
	if equality.Semantic.DeepEqual(all, t.Status.Conditions) && equality.Semantic.DeepEqual(s.certificates, t.Status.Certificates) {
		return nil
	}
	fields, err := ssa.Fields(struct {
		Conditions   []metav1.Condition              `json:"conditions"`
		Certificates []scitunnelv1.CertificateStatus `json:"certificates"`
	}{owned, ssa.List(s.certificates)})
	if err != nil {
		return err
	}
	// No event here: issuance records its own (CertificateIssued, CertificateRenewed, ...), and
	// the tunnel controller announces what CertificateReady does to Ready and Degraded.
	return ssa.ApplyStatus(ctx, r.Client, t, FieldOwner, fields, false)
}

// FirstReportGrace: how long a new tunnel's first CertificateReady may stay unwritten while it
// only says "waiting" (an Outbound waiting for its Inbound's CA, which normally comes within
// moments: the CA Secret's creation triggers the next pass).
const FirstReportGrace = 10 * time.Second

// firstReportWait says how much longer a new tunnel's first CertificateReady should wait: a
// "waiting" condition that the next pass replaces at once is not worth a status write (and
// the tunnel controller's pass it triggers) on each of a thousand new tunnels. 0: write now.
func firstReportWait(t *scitunnelv1.StreamTunnel, c metav1.Condition) time.Duration {
	if !Waiting(c.Reason) || meta.FindStatusCondition(t.Status.Conditions, scitunnelv1.ConditionCertificateReady) != nil {
		return 0
	}
	// Wall-clock time against the API server's timestamp: the controller's clock is for
	// certificate lifetimes.
	return FirstReportGrace - time.Since(t.CreationTimestamp.Time)
}

// finalize removes the client certificates issued from an Inbound's CA in every namespace,
// then lets the API server delete the tunnel (its own children go by owner reference).
func (r *Reconciler) finalize(ctx context.Context, t *scitunnelv1.StreamTunnel) error {
	if !controllerutil.ContainsFinalizer(t, child.Finalizer) {
		return nil
	}
	var issued corev1.SecretList
	if err := r.List(ctx, &issued, client.MatchingLabels{child.LabelIssuerUID: string(t.UID)}); err != nil {
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
	controllerutil.RemoveFinalizer(t, child.Finalizer)
	return client.IgnoreNotFound(r.Patch(ctx, t, patch))
}

func (r *Reconciler) trustDomain(t *scitunnelv1.StreamTunnel) string {
	return ends.TrustDomain(t, r.Options.TrustDomain)
}

// secretKeyPresent lists the keys a Secret lacks.
func secretKeyPresent(s *corev1.Secret, keys ...string) (missing []string) {
	for _, k := range keys {
		if len(s.Data[k]) == 0 {
			missing = append(missing, k)
		}
	}
	return missing
}

// SetupWithManager registers the controller and its watches; the field indexes must exist.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("streamtunnel-certificates")
	}
	if r.Options.MaxConcurrentReconciles == 0 {
		r.Options.MaxConcurrentReconciles = 4
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	r.applier = &ssa.Applier{Client: r.Client, Live: r.APIReader, Owner: child.FieldOwner}
	return ctrl.NewControllerManagedBy(mgr).
		For(&scitunnelv1.StreamTunnel{}, builder.WithPredicates(watch.SpecOrMeta())).
		Owns(&corev1.Secret{}).
		Owns(&corev1.Service{}). // its addresses go in the server certificate
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.secretToTunnels)).
		Watches(&scitunnelv1.StreamTunnel{}, handler.EnqueueRequestsFromMapFunc(r.peerTunnels), builder.WithPredicates(watch.PeerChanged)).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Options.MaxConcurrentReconciles}).
		Named("streamtunnel-certificates").
		Complete(r)
}

// secretToTunnels maps a Secret to the tunnels that use it and, for an Inbound's CA, to the
// Outbound ends wired to that Inbound (their client certificates come from it).
func (r *Reconciler) secretToTunnels(ctx context.Context, o client.Object) []reconcile.Request {
	reqs := watch.SecretUsers(ctx, r.Client, o)
	if owner, ok := strings.CutSuffix(o.GetName(), child.CASecretName("")); ok && owner != "" && o.GetLabels()[child.LabelTunnel] == "" {
		// A CA Secret restored from a backup without its labels: its tunnel may be waiting for it
		// (CAUnavailable). A Secret of that name that is no tunnel's costs one cached Get.
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: owner}})
	}
	if owner := o.GetLabels()[child.LabelTunnel]; owner != "" && o.GetName() == child.CASecretName(owner) {
		peers, err := indexes.Requests(ctx, r.Client, &scitunnelv1.StreamTunnelList{}, client.MatchingFields{indexes.InboundRef: o.GetNamespace() + "/" + owner})
		if err != nil {
			logf.FromContext(ctx).Error(err, "listing the Outbound ends of an Inbound")
		}
		reqs = append(reqs, peers...)
	}
	return reqs
}

// peerTunnels: an Inbound's change (its existence, spec, allowed namespaces) reaches the
// Outbound ends wired to it, whose client certificates it issues.
func (r *Reconciler) peerTunnels(ctx context.Context, o client.Object) []reconcile.Request {
	return watch.PeerRequests(ctx, r.Client, o.(*scitunnelv1.StreamTunnel))
}
