package tunnel

import (
	"context"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/certificates"
	"github.com/scitunnel/scitunnel/controllers/internal/conditions"
	"github.com/scitunnel/scitunnel/controllers/internal/ssa"
	"github.com/scitunnel/scitunnel/controllers/telemetry"
)

// FieldOwner is this controller's field manager on StreamTunnel status.
const FieldOwner = client.FieldOwner("scitunnel-tunnel")

// ownedStatus is the part of StreamTunnelStatus this controller writes. A field left empty is
// left out of the apply, which removes it.
type ownedStatus struct {
	ObservedGeneration int64                        `json:"observedGeneration,omitempty"`
	Conditions         []metav1.Condition           `json:"conditions,omitempty"`
	Endpoint           string                       `json:"endpoint,omitempty"`
	Endpoints          []scitunnelv1.TunnelEndpoint `json:"endpoints,omitempty"`
	Remote             string                       `json:"remote,omitempty"`
	Peers              []string                     `json:"peers,omitempty"`
	Scitag             *scitunnelv1.ResolvedScitag  `json:"scitag,omitempty"`
	Replicas           int32                        `json:"replicas,omitempty"`
	ReadyReplicas      int32                        `json:"readyReplicas,omitempty"`
	Selector           string                       `json:"selector,omitempty"`
	Message            string                       `json:"message,omitempty"`
}

// owned picks this controller's fields from a status, with conds as its conditions (Ready,
// ProxyAvailable, Degraded, and FlowLabelApplied while the telemetry controller does not write
// it: see telemetry.OwnsFlowLabelCondition).
func owned(st *scitunnelv1.StreamTunnelStatus, conds []metav1.Condition) ownedStatus {
	return ownedStatus{
		ObservedGeneration: st.ObservedGeneration, Conditions: conds,
		Endpoint: st.Endpoint, Endpoints: st.Endpoints, Remote: st.Remote, Peers: st.Peers, Scitag: st.Scitag,
		Replicas: st.Replicas, ReadyReplicas: st.ReadyReplicas, Selector: st.Selector, Message: st.Message,
	}
}

// observeCertificates reads what the certificates controller reports: which Secret to mount,
// whether it is ready, and what the user must fix.
func (r *Reconciler) observeCertificates(_ context.Context, s *scope) error {
	t := s.tunnel
	s.tlsSecret = certificates.SecretName(t)
	c := meta.FindStatusCondition(t.Status.Conditions, scitunnelv1.ConditionCertificateReady)
	if c == nil {
		return nil
	}
	// The Secret can be mounted when it is valid, and also when it exists but is expired or not
	// yet valid: the pods then fail their handshakes, as before the split, but spec changes
	// (replicas, ports, tag) still reach the Deployment.
	s.certsChecked = c.ObservedGeneration == t.Generation
	s.certReady = s.certsChecked && (c.Status == metav1.ConditionTrue || certificates.Mountable(c.Reason))
	switch {
	case s.blocked != nil:
	case c.Status == metav1.ConditionFalse && !certificates.Waiting(c.Reason):
		s.degrade(c.Reason, c.Message)
	case c.Status == metav1.ConditionTrue && c.Reason == certificates.ReasonExpiring:
		s.degrade("CertificateExpiring", c.Message)
	}
	return nil
}

// summarize computes Ready and Degraded (and FlowLabelApplied while it is this controller's)
// from the phases' findings and the certificates controller's condition.
func (r *Reconciler) summarize(s *scope) {
	t := s.tunnel
	if !s.conditions.Has(scitunnelv1.ConditionProxyAvailable) {
		s.set(scitunnelv1.ConditionProxyAvailable, metav1.ConditionFalse, "NoDeployment", "the proxy Deployment does not exist yet")
	}
	if telemetry.OwnsFlowLabelCondition(s.tag != nil, s.readyPods, s.sysctlRefused) {
		delete(s.conditions, scitunnelv1.ConditionFlowLabelApplied)
	} else if !s.conditions.Has(scitunnelv1.ConditionFlowLabelApplied) {
		if s.tag != nil {
			s.set(scitunnelv1.ConditionFlowLabelApplied, metav1.ConditionUnknown, "NoReport", "no proxy pod is ready to report")
		} else {
			s.set(scitunnelv1.ConditionFlowLabelApplied, metav1.ConditionUnknown, "Pending", "the tag is not resolved yet")
		}
	}

	cert := meta.FindStatusCondition(t.Status.Conditions, scitunnelv1.ConditionCertificateReady)
	proxy := s.conditions[scitunnelv1.ConditionProxyAvailable]
	switch {
	case s.blocked != nil:
		s.set(scitunnelv1.ConditionReady, metav1.ConditionFalse, s.blocked.Reason, s.blocked.Message)
	case cert == nil:
		s.set(scitunnelv1.ConditionReady, metav1.ConditionFalse, "CertificateNotReady", "certificates not checked yet")
	case cert.Status != metav1.ConditionTrue:
		s.set(scitunnelv1.ConditionReady, metav1.ConditionFalse, "CertificateNotReady", cert.Message)
	case proxy.Status != metav1.ConditionTrue:
		s.set(scitunnelv1.ConditionReady, metav1.ConditionFalse, "ProxyNotAvailable", proxy.Message)
	default:
		s.set(scitunnelv1.ConditionReady, metav1.ConditionTrue, "TunnelReady", "proxy pods available and certificates valid")
	}
	if len(s.problems) > 0 {
		msgs := make([]string, len(s.problems))
		for i, p := range s.problems {
			msgs[i] = p.message
		}
		s.set(scitunnelv1.ConditionDegraded, metav1.ConditionTrue, s.problems[0].reason, strings.Join(msgs, "; "))
	} else {
		s.set(scitunnelv1.ConditionDegraded, metav1.ConditionFalse, "AsExpected", "nothing needs attention")
	}
}

// message summarises why the tunnel is not Ready or is Degraded.
func message(conds []metav1.Condition, degraded bool) string {
	if degraded {
		return meta.FindStatusCondition(conds, scitunnelv1.ConditionDegraded).Message
	}
	if ready := meta.FindStatusCondition(conds, scitunnelv1.ConditionReady); ready.Status != metav1.ConditionTrue {
		return ready.Message
	}
	return ""
}

// applyStatus applies this controller's status fields when they changed, and records the
// transitions users care about as events. The phases wrote s.tunnel.Status; s.orig is the
// status as read.
func (r *Reconciler) applyStatus(ctx context.Context, s *scope, succeeded bool) error {
	t := s.tunnel
	if wait := r.firstStatusWait(s); wait > 0 {
		s.requeueAfter(wait)
		return nil
	}
	r.summarize(s)
	all, conds := s.conditions.Merge(s.orig.Conditions, t.Generation)
	st := t.Status
	st.Message = conditions.Truncate(message(all, len(s.problems) > 0), conditions.MaxMessage)
	st.ObservedGeneration = s.orig.ObservedGeneration
	// A pass that waited for the certificates controller to look at this generation has not
	// applied the Deployment yet: it does not claim the generation.
	if succeeded && (s.tlsSecret == "" || s.certsChecked) {
		st.ObservedGeneration = t.Generation
	}
	var prior []metav1.Condition
	for _, c := range conds {
		if p := meta.FindStatusCondition(s.orig.Conditions, c.Type); p != nil {
			prior = append(prior, *p)
		}
	}
	desired := owned(&st, conds)
	if equality.Semantic.DeepEqual(desired, owned(s.orig, prior)) {
		return nil
	}
	fields, err := ssa.Fields(desired)
	if err != nil {
		return err
	}
	if err := ssa.ApplyStatus(ctx, r.Client, t, FieldOwner, fields, false); err != nil {
		return client.IgnoreNotFound(err)
	}
	conditions.Announce(r.Recorder, t, s.orig.Conditions, all,
		[]string{scitunnelv1.ConditionReady, scitunnelv1.ConditionDegraded, scitunnelv1.ConditionFlowLabelApplied},
		func(typ string, now metav1.Condition, old *metav1.Condition) bool {
			if typ == scitunnelv1.ConditionDegraded {
				return now.Status == metav1.ConditionTrue
			}
			return now.Status == metav1.ConditionFalse && old != nil && old.Status == metav1.ConditionTrue
		})
	return nil
}

// firstStatusWait says how much longer a new tunnel's first status should wait. Until the
// certificates controller has looked at a new tunnel, a pass can only report "certificates not
// checked yet", which the pass that CertificateReady triggers replaces right away: at a thousand
// new tunnels those throwaway writes (and their events) were a third of the API server's load.
// A tunnel whose certificates controller stays silent (it also holds back a first "waiting"
// for up to the same grace) still gets its status after the grace.
// 0: write now.
func (r *Reconciler) firstStatusWait(s *scope) time.Duration {
	t := s.tunnel
	if s.tlsSecret == "" || s.certsChecked || meta.FindStatusCondition(s.orig.Conditions, scitunnelv1.ConditionReady) != nil {
		return 0
	}
	// Wall-clock time against the API server's timestamp, as tagPendingWait.
	return certificates.FirstReportGrace - time.Since(t.CreationTimestamp.Time)
}

// othersChanged lets through the status changes of other controllers that this one reads:
// CertificateReady and whether status.scitag (which decides FlowLabelApplied's owner) is set.
func othersChanged(e event.UpdateEvent) bool {
	o, ok1 := e.ObjectOld.(*scitunnelv1.StreamTunnel)
	n, ok2 := e.ObjectNew.(*scitunnelv1.StreamTunnel)
	if !ok1 || !ok2 {
		return true
	}
	oc := meta.FindStatusCondition(o.Status.Conditions, scitunnelv1.ConditionCertificateReady)
	nc := meta.FindStatusCondition(n.Status.Conditions, scitunnelv1.ConditionCertificateReady)
	return !equality.Semantic.DeepEqual(oc, nc)
}
