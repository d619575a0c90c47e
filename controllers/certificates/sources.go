package certificates

// Certificates the operator does not issue: a user's Secret, a copied bundle, cert-manager's.

import (
	"cmp"
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"k8s.io/utils/ptr"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/ssa"
	"github.com/scitunnel/scitunnel/internal/pki"
)

// useSecret checks a Secret the operator does not issue (a user's, a copied bundle, or
// cert-manager's) and mounts it.
func (r *Reconciler) useSecret(ctx context.Context, s *scope, name, kind, howTo string) error {
	t := s.tunnel
	sec := &corev1.Secret{}
	// cert-manager's Secret carries the operator's labels (secretTemplate), so it is cached and
	// watched; a user's own Secret is read from the API server and read again periodically.
	var reader client.Reader = r.Client
	if kind != "cert-manager" {
		reader = r.APIReader
		s.requeueAfter(cmp.Or(r.Options.UserObjectsRecheck, time.Minute))
	}
	found, err := ssa.Get(ctx, reader, client.ObjectKey{Namespace: t.Namespace, Name: name}, sec)
	if err != nil {
		return err
	}
	fail := func(reason, msg string) {
		s.set(metav1.ConditionFalse, reason, msg)
	}
	if !found {
		fail("SecretNotFound", fmt.Sprintf("Secret %q not found: %s", name, howTo))
		return nil
	}
	if missing := secretKeyPresent(sec, "tls.crt", "tls.key", "ca.crt"); len(missing) > 0 {
		fail("SecretInvalid", fmt.Sprintf("Secret %q lacks %v: %s", name, missing, howTo))
		return nil
	}
	kp, err := pki.ParseKeyPair(sec.Data["tls.crt"], sec.Data["tls.key"])
	if err != nil {
		fail("SecretInvalid", fmt.Sprintf("Secret %q: tls.crt/tls.key: %v", name, err))
		return nil
	}
	ca, err := pki.ParseCertPEM(sec.Data["ca.crt"])
	if err != nil {
		fail("SecretInvalid", fmt.Sprintf("Secret %q: ca.crt: %v", name, err))
		return nil
	}
	c := kp.Cert
	s.certificates = []scitunnelv1.CertificateStatus{certStatus(kind, name, c), certStatus("ca", name, ca)}
	switch {
	case s.now.After(c.NotAfter):
		fail("CertificateExpired", fmt.Sprintf("the certificate in Secret %q expired at %s: replace it", name, c.NotAfter.UTC().Format(time.RFC3339)))
		return nil
	case s.now.Before(c.NotBefore):
		fail("CertificateNotYetValid", fmt.Sprintf("the certificate in Secret %q is valid only from %s", name, c.NotBefore.UTC().Format(time.RFC3339)))
		s.requeueAfter(c.NotBefore.Sub(s.now))
		return nil
	}
	if !s.now.Before(pki.RenewAt(c)) && kind != "cert-manager" {
		// Still valid, but the user must act: the tunnel controller reports it as Degraded.
		s.set(metav1.ConditionTrue, ReasonExpiring,
			fmt.Sprintf("the certificate in Secret %q expires at %s: replace it before then", name, c.NotAfter.UTC().Format(time.RFC3339)))
	} else {
		s.set(metav1.ConditionTrue, "Valid",
			fmt.Sprintf("%s certificate in Secret %q valid until %s", kind, name, c.NotAfter.UTC().Format(time.RFC3339)))
	}
	if s.now.Before(pki.RenewAt(c)) {
		s.requeueAfter(pki.RenewAt(c).Sub(s.now))
	} else {
		s.requeueAfter(c.NotAfter.Sub(s.now))
	}
	return nil
}

// CertManagerGVK is cert-manager's Certificate; it is written as unstructured so that
// cert-manager stays optional.
var certManagerAPIVersion, certManagerKind = "cert-manager.io/v1", "Certificate"

// certManager asks cert-manager for the certificate and mounts the Secret it writes.
func (r *Reconciler) certManager(ctx context.Context, s *scope) error {
	t := s.tunnel
	cs := t.Spec.Certificates
	life := r.leafLifetime(t)
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(certManagerAPIVersion)
	u.SetKind(certManagerKind)
	u.SetName(t.Name)
	u.SetNamespace(t.Namespace)
	u.SetLabels(child.Labels(t))
	u.SetOwnerReferences([]metav1.OwnerReference{{
		APIVersion: scitunnelv1.GroupVersion.String(), Kind: "StreamTunnel", Name: t.Name, UID: t.UID,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}})
	issuer := map[string]any{"name": cs.IssuerRef.Name, "kind": cmp.Or(cs.IssuerRef.Kind, "Issuer"), "group": cmp.Or(cs.IssuerRef.Group, "cert-manager.io")}
	spec := map[string]any{
		"secretName":     child.TLSSecretName(t),
		"issuerRef":      issuer,
		"duration":       life.String(),
		"renewBefore":    (life / 3).String(),
		"privateKey":     map[string]any{"algorithm": "ECDSA", "size": int64(256), "rotationPolicy": "Always"},
		"uris":           []any{child.Identity(r.trustDomain(t), t.Namespace, t.Name)},
		"secretTemplate": map[string]any{"labels": map[string]any{child.LabelTunnel: t.Name, child.LabelManagedBy: child.ManagedByValue}},
	}
	if t.Spec.Role == scitunnelv1.RoleInbound {
		req := r.serverRequest(s)
		spec["commonName"] = req.CommonName
		spec["dnsNames"] = toAny(req.DNSNames)
		ips := make([]string, 0, len(req.IPs))
		for _, ip := range req.IPs {
			ips = append(ips, ip.String())
		}
		if len(ips) > 0 {
			spec["ipAddresses"] = toAny(ips)
		}
		spec["usages"] = []any{"server auth", "client auth", "digital signature"}
	} else {
		spec["commonName"] = t.Name + "." + t.Namespace
		spec["usages"] = []any{"client auth", "digital signature"}
	}
	u.Object["spec"] = spec
	// From the API server: a user's Secret of that name carries none of the operator's labels,
	// so the cache does not hold it.
	sec := &corev1.Secret{}
	found, err := ssa.Get(ctx, r.APIReader, client.ObjectKey{Namespace: t.Namespace, Name: child.TLSSecretName(t)}, sec)
	if err != nil {
		return err
	}
	if found && !certManagerSecretOf(sec, t) {
		return &ssa.NameConflictError{Kind: "Secret", Name: sec.Name, Controller: metav1.GetControllerOf(sec)}
	}
	applied, err := r.applyCertificate(ctx, u)
	if meta.IsNoMatchError(err) {
		msg := "spec.certificates.source is CertManager but the cert-manager Certificate API (cert-manager.io/v1) is not installed: install cert-manager, or use source Operator"
		s.set(metav1.ConditionFalse, "CertManagerNotInstalled", msg)
		s.requeueAfter(time.Minute)
		return nil
	}
	if err != nil {
		return err
	}
	u = applied
	if !found {
		msg := fmt.Sprintf("waiting for cert-manager to issue Secret %q from %s %q", child.TLSSecretName(t), issuer["kind"], cs.IssuerRef.Name)
		if reason, m := certificateNotReady(u); reason != "" {
			msg += fmt.Sprintf(" (%s: %s)", reason, m)
		}
		s.set(metav1.ConditionFalse, "Issuing", msg)
		s.requeueAfter(15 * time.Second)
		return nil
	}
	return r.useSecret(ctx, s, child.TLSSecretName(t), "cert-manager", "cert-manager writes it; check the Certificate "+t.Name)
}

// certManagerSecretOf: the Secret was written for t's Certificate (cert-manager annotates it
// with the Certificate's name; the Certificate's secretTemplate labels it with the tunnel's).
// Any other Secret of that name is a user's, which cert-manager would overwrite.
func certManagerSecretOf(sec *corev1.Secret, t *scitunnelv1.StreamTunnel) bool {
	return sec.Annotations["cert-manager.io/certificate-name"] == t.Name || sec.Labels[child.LabelTunnel] == t.Name
}

// applyCertificate applies a cert-manager Certificate through the Applier (which leaves a
// Certificate of that name that is not the tunnel's alone) and returns it as the API server
// holds it.
func (r *Reconciler) applyCertificate(ctx context.Context, u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(u.GroupVersionKind())
	found, err := ssa.Get(ctx, r.Client, client.ObjectKeyFromObject(u), cur)
	if err != nil {
		return nil, err
	}
	var current client.Object
	if found {
		current = cur
	}
	applied := &unstructured.Unstructured{}
	if _, err := r.applier.Apply(ctx, current, client.ApplyConfigurationFromUnstructured(u), applied); err != nil {
		return nil, err
	}
	return applied, nil
}

// certificateNotReady reads a cert-manager Certificate's Ready condition when it is not True.
func certificateNotReady(u *unstructured.Unstructured) (reason, message string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if ok && m["type"] == "Ready" && m["status"] != "True" {
			reason, _ = m["reason"].(string)
			message, _ = m["message"].(string)
			return reason, message
		}
	}
	return "", ""
}
