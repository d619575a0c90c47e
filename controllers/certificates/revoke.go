package certificates

// Revocation: an Outbound end that is no longer wired to an operator-managed Inbound (refused by
// the Inbound's allowedPeerNamespaces, its tunnelRef changed, the Inbound gone or changed) loses
// the client certificate the Inbound's CA issued to it. The Inbound's proxies stop accepting
// its identity on their own (the tunnel controller lists only wired peers in their allow-list);
// removing the Secret also keeps the key from being reused elsewhere.

import (
	"context"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/ends"
	"github.com/scitunnel/scitunnel/controllers/internal/ssa"
)

// wiredToOperatorCA says whether an Outbound end holds, rightly, a client certificate from its
// Inbound's operator-run CA.
func wiredToOperatorCA(s *scope) bool {
	t, in := s.tunnel, s.ends.Inbound
	return ends.UsesTLS(t) && s.ends.Blocked == nil && in != nil &&
		certSource(t) == scitunnelv1.CertificatesOperator && certSource(in) == scitunnelv1.CertificatesOperator
}

// removeUnwiredClientCertificate deletes an Outbound end's client certificate Secret issued
// from an Inbound's CA once the end is no longer wired to that Inbound. A Secret the operator
// did not issue from a CA (the user's, cert-manager's) carries no issuer label and is left alone.
func (r *Reconciler) removeUnwiredClientCertificate(ctx context.Context, s *scope) error {
	t := s.tunnel
	if t.Spec.Role != scitunnelv1.RoleOutbound || wiredToOperatorCA(s) {
		return nil
	}
	// The status stops listing the CA-issued certificate even when an earlier pass removed the
	// Secret but failed to say so ("client" entries come from operatorOutbound alone).
	if slices.ContainsFunc(s.certificates, func(c scitunnelv1.CertificateStatus) bool { return c.Name == "client" }) {
		s.certificates = nil
	}
	sec := &corev1.Secret{}
	found, err := ssa.Get(ctx, r.Client, client.ObjectKey{Namespace: t.Namespace, Name: child.TLSSecretName(t)}, sec)
	if err != nil || !found || sec.Labels[child.LabelIssuerUID] == "" {
		return err
	}
	if err := r.Delete(ctx, sec, client.Preconditions{UID: &sec.UID}); client.IgnoreNotFound(err) != nil {
		return err
	}
	why := "it is no longer wired to the Inbound end whose CA issued it"
	if b := s.ends.Blocked; b != nil {
		why = b.Message
	}
	r.Recorder.Eventf(t, sec, corev1.EventTypeWarning, "ClientCertificateRemoved", "Revoke",
		"removed client certificate %s: %s", sec.Name, why)
	return nil
}

// peerLifetime is an Outbound end's client certificate lifetime: its own, capped by the
// Inbound's, so that a peer never holds access longer than the Inbound grants.
func (r *Reconciler) peerLifetime(out, in *scitunnelv1.StreamTunnel) time.Duration {
	return min(r.leafLifetime(out), r.leafLifetime(in))
}
