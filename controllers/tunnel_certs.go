package controllers

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"github.com/scitunnel/scitunnel/internal/pki"
	"maps"
	"net"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
)

// Keys of the connection-bundle Secret an Inbound end exports for Outbound ends in other
// clusters (besides ca.crt, tls.crt, tls.key).
const BundleInfoKey = "bundle.json"

// BundleInfo is the bundle's description of the Inbound end.
type BundleInfo struct {
	Tunnel     string `json:"tunnel"`
	Protocol   string `json:"protocol"`
	Address    string `json:"address"`
	Ports      []int  `json:"ports"`
	ServerName string `json:"serverName"`
	Identity   string `json:"identity"`
	NotAfter   string `json:"notAfter"`
}

func certSource(t *scitunnelv1.StreamTunnel) scitunnelv1.CertificateSource {
	if c := t.Spec.Certificates; c != nil && c.Source != "" {
		return c.Source
	}
	return scitunnelv1.CertificatesOperator
}

// exportsBundle: an Inbound end with operator-managed mutual TLS exports a connection bundle.
func (r *StreamTunnelReconciler) exportsBundle(t *scitunnelv1.StreamTunnel) bool {
	return t.Spec.Role == scitunnelv1.RoleInbound && usesTLS(t) && certSource(t) == scitunnelv1.CertificatesOperator
}

func (r *StreamTunnelReconciler) leafLifetime(t *scitunnelv1.StreamTunnel) time.Duration {
	if c := t.Spec.Certificates; c != nil && c.Duration != nil && c.Duration.Duration > 0 {
		return c.Duration.Duration
	}
	return r.Options.CertificateDuration
}

// reconcileCertificates makes sure the pods have a valid certificate, CA and key, from the
// source the spec names, and renews what the operator issued at two thirds of its lifetime.
func (r *StreamTunnelReconciler) reconcileCertificates(ctx context.Context, s *tunnelScope) error {
	t := s.tunnel
	if !usesTLS(t) {
		s.set(scitunnelv1.ConditionCertificateReady, metav1.ConditionTrue, "NotRequired",
			fmt.Sprintf("protocol %s uses no TLS", effectiveProtocol(t)))
		t.Status.Certificates = nil
		return nil
	}
	if s.blocked {
		return nil
	}
	switch certSource(t) {
	case scitunnelv1.CertificatesSecret:
		return r.useSecret(ctx, s, t.Spec.Certificates.SecretRef.Name, "user",
			"create it with tls.crt, tls.key and ca.crt (the CA that signs the peer's certificate)")
	case scitunnelv1.CertificatesCertManager:
		return r.certManager(ctx, s)
	}
	switch {
	case t.Spec.Role == scitunnelv1.RoleInbound:
		return r.operatorInbound(ctx, s)
	case s.inbound != nil:
		return r.operatorOutbound(ctx, s)
	default:
		return r.useSecret(ctx, s, t.Spec.Outbound.Endpoint.BundleSecretRef.Name, "bundle",
			"copy the Inbound end's connection-bundle Secret (<inbound>-bundle) from its cluster into this namespace under this name")
	}
}

// operatorInbound runs the Inbound's CA and issues its server certificate and bundle.
func (r *StreamTunnelReconciler) operatorInbound(ctx context.Context, s *tunnelScope) error {
	t := s.tunnel
	ca, caSecret, err := r.ensureCA(ctx, s)
	if err != nil {
		return err
	}
	statuses := []scitunnelv1.CertificateStatus{certStatus("ca", caSecret, ca.Cert)}

	server, err := r.ensureLeaf(ctx, s, tlsSecretName(t), ca, r.serverRequest(s), childLabels(t), nil)
	if err != nil {
		return err
	}
	statuses = append(statuses, certStatus("server", tlsSecretName(t), server))
	s.tlsSecret = tlsSecretName(t)

	if r.exportsBundle(t) {
		addr, ports := externalAddress(t)
		td := r.trustDomain(t)
		req := pki.LeafRequest{
			CommonName: fmt.Sprintf("%s.%s bundle", t.Name, t.Namespace),
			URIs:       []string{bundleIdentity(td, t.Namespace, t.Name)},
			Lifetime:   r.leafLifetime(t),
		}
		info := func(c *x509.Certificate) map[string][]byte {
			b, _ := json.MarshalIndent(BundleInfo{
				Tunnel: t.Namespace + "/" + t.Name, Protocol: effectiveProtocol(t),
				Address: addr, Ports: ports, ServerName: addr,
				Identity: req.URIs[0], NotAfter: c.NotAfter.UTC().Format(time.RFC3339),
			}, "", "  ")
			return map[string][]byte{BundleInfoKey: b}
		}
		bundle, err := r.ensureLeaf(ctx, s, bundleSecretName(t), ca, req, childLabels(t), info)
		if err != nil {
			return err
		}
		statuses = append(statuses, certStatus("bundle", bundleSecretName(t), bundle))
	}
	t.Status.Certificates = statuses
	s.set(scitunnelv1.ConditionCertificateReady, metav1.ConditionTrue, "Issued",
		fmt.Sprintf("server certificate valid until %s, renewed after %s", server.NotAfter.UTC().Format(time.RFC3339), pki.RenewAt(server).UTC().Format(time.RFC3339)))
	return nil
}

// serverRequest lists every name and address peers may use to reach an Inbound end.
func (r *StreamTunnelReconciler) serverRequest(s *tunnelScope) pki.LeafRequest {
	t := s.tunnel
	dns := []string{
		t.Name,
		t.Name + "." + t.Namespace,
		t.Name + "." + t.Namespace + ".svc",
		t.Name + "." + t.Namespace + ".svc." + r.Options.ClusterDomain,
	}
	var ips []net.IP
	addSAN := func(v string) {
		if v == "" {
			return
		}
		if ip := net.ParseIP(v); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
		} else if !slices.Contains(dns, v) {
			dns = append(dns, v)
		}
	}
	if svc := s.service; svc != nil {
		if svc.Spec.ClusterIP != corev1.ClusterIPNone {
			for _, ip := range svc.Spec.ClusterIPs {
				addSAN(ip)
			}
			addSAN(svc.Spec.ClusterIP)
		}
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			addSAN(ing.IP)
			addSAN(ing.Hostname)
		}
	}
	if e := t.Spec.Exposure; e != nil {
		addSAN(e.AdvertisedAddress)
	}
	if c := t.Spec.Certificates; c != nil {
		for _, san := range c.ExtraSANs {
			addSAN(san)
		}
	}
	return pki.LeafRequest{
		CommonName: t.Name + "." + t.Namespace + ".svc",
		DNSNames:   dns,
		IPs:        ips,
		URIs:       []string{identity(r.trustDomain(t), t.Namespace, t.Name)},
		Server:     true,
		Lifetime:   r.leafLifetime(t),
	}
}

// ensureCA returns the Inbound's CA, creating (or rotating, past two thirds of its ten years)
// the "<name>-ca" Secret.
func (r *StreamTunnelReconciler) ensureCA(ctx context.Context, s *tunnelScope) (*pki.KeyPair, string, error) {
	t := s.tunnel
	name := caSecretName(t.Name)
	cur := &corev1.Secret{}
	found, err := getCached(ctx, r.Client, client.ObjectKey{Namespace: t.Namespace, Name: name}, cur)
	if err != nil {
		return nil, "", err
	}
	var ca *pki.KeyPair
	if found {
		if kp, err := pki.ParseKeyPair(cur.Data["ca.crt"], cur.Data["ca.key"]); err == nil && s.now.Before(pki.RenewAt(kp.Cert)) && kp.Cert.IsCA {
			ca = kp
		}
	}
	var current client.Object
	if found {
		current = cur
	}
	if ca == nil {
		if ca, err = pki.NewCA(fmt.Sprintf("SciTunnel CA %s/%s", t.Namespace, t.Name), s.now); err != nil {
			return nil, "", err
		}
		current = nil // force the write
		verb := "CACreated"
		if found {
			verb = "CARotated"
		}
		r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, verb, "IssueCertificate",
			"CA for this tunnel and its Outbound ends valid until %s", ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	ac := corev1ac.Secret(name, t.Namespace).
		WithType(corev1.SecretTypeOpaque).
		WithLabels(childLabels(t)).
		WithOwnerReferences(ownerRef(t)).
		WithData(map[string][]byte{"ca.crt": ca.CertPEM, "ca.key": ca.KeyPEM})
	if _, err := r.apply(ctx, current, ac, nil); err != nil {
		return nil, "", err
	}
	s.requeueAfter(pki.RenewAt(ca.Cert).Sub(s.now))
	return ca, name, nil
}

// ensureLeaf keeps a leaf certificate Secret (tls.crt, tls.key, ca.crt) signed by ca with the
// wanted SANs, renewing it at two thirds of its lifetime. extra adds keys derived from the
// certificate (the bundle's description).
func (r *StreamTunnelReconciler) ensureLeaf(ctx context.Context, s *tunnelScope, name string, ca *pki.KeyPair, req pki.LeafRequest,
	labels map[string]string, extra func(*x509.Certificate) map[string][]byte) (*x509.Certificate, error) {
	t := s.tunnel
	cur := &corev1.Secret{}
	found, err := getCached(ctx, r.Client, client.ObjectKey{Namespace: t.Namespace, Name: name}, cur)
	if err != nil {
		return nil, err
	}
	var leaf *pki.KeyPair
	why := "issued"
	if found {
		kp, err := pki.ParseKeyPair(cur.Data["tls.crt"], cur.Data["tls.key"])
		switch {
		case err != nil:
			why = "re-issued (unreadable)"
		case !pki.SignedBy(kp.Cert, ca.Cert) || !pki.SamePEM(cur.Data["ca.crt"], ca.CertPEM):
			why = "re-issued (new CA)"
		case !pki.HasSANs(kp.Cert, req):
			why = "re-issued (names changed)"
		case !s.now.Before(pki.RenewAt(kp.Cert)):
			why = "renewed"
		case lifetimeChanged(kp.Cert, req.Lifetime):
			why = "re-issued (lifetime changed)"
		default:
			leaf = kp
		}
	}
	var current client.Object
	if found {
		current = cur
	}
	if leaf == nil {
		if leaf, err = ca.Issue(req, s.now); err != nil {
			return nil, err
		}
		reason := "CertificateIssued"
		if why == "renewed" {
			reason = "CertificateRenewed"
		}
		r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, reason, "IssueCertificate",
			"certificate %s %s, valid until %s", name, why, leaf.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	data := map[string][]byte{"tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM, "ca.crt": ca.CertPEM}
	if extra != nil {
		maps.Copy(data, extra(leaf.Cert))
	}
	ac := corev1ac.Secret(name, t.Namespace).
		WithType(corev1.SecretTypeTLS).
		WithLabels(labels).
		WithOwnerReferences(ownerRef(t)).
		WithData(data)
	if _, err := r.apply(ctx, current, ac, nil); err != nil {
		return nil, err
	}
	s.requeueAfter(pki.RenewAt(leaf.Cert).Sub(s.now))
	return leaf.Cert, nil
}

// operatorOutbound issues the Outbound end's client certificate from its Inbound's CA.
func (r *StreamTunnelReconciler) operatorOutbound(ctx context.Context, s *tunnelScope) error {
	t, in := s.tunnel, s.inbound
	if certSource(in) != scitunnelv1.CertificatesOperator {
		msg := fmt.Sprintf("the Inbound end %s/%s does not use operator-managed certificates: set spec.certificates on this end (source Secret or CertManager) to a certificate its CA trusts", in.Namespace, in.Name)
		s.set(scitunnelv1.ConditionCertificateReady, metav1.ConditionFalse, "NoIssuer", msg)
		s.degrade("NoIssuer", msg)
		return nil
	}
	caSec := &corev1.Secret{}
	found, err := getCached(ctx, r.Client, client.ObjectKey{Namespace: in.Namespace, Name: caSecretName(in.Name)}, caSec)
	if err != nil {
		return err
	}
	if !found {
		s.set(scitunnelv1.ConditionCertificateReady, metav1.ConditionFalse, "WaitingForCA",
			fmt.Sprintf("waiting for the Inbound end %s/%s to create its CA", in.Namespace, in.Name))
		s.requeueAfter(5 * time.Second)
		return nil
	}
	ca, err := pki.ParseKeyPair(caSec.Data["ca.crt"], caSec.Data["ca.key"])
	if err != nil {
		s.set(scitunnelv1.ConditionCertificateReady, metav1.ConditionFalse, "WaitingForCA",
			fmt.Sprintf("the CA Secret of %s/%s is not readable yet: %v", in.Namespace, in.Name, err))
		s.requeueAfter(5 * time.Second)
		return nil
	}
	labels := childLabels(t)
	labels[LabelIssuerUID] = string(in.UID)
	req := pki.LeafRequest{
		CommonName: fmt.Sprintf("%s.%s", t.Name, t.Namespace),
		URIs:       []string{identity(r.trustDomain(t), t.Namespace, t.Name)},
		Lifetime:   r.leafLifetime(t),
	}
	client, err := r.ensureLeaf(ctx, s, tlsSecretName(t), ca, req, labels, nil)
	if err != nil {
		return err
	}
	s.tlsSecret = tlsSecretName(t)
	t.Status.Certificates = []scitunnelv1.CertificateStatus{
		certStatus("ca", caSecretName(in.Name), ca.Cert),
		certStatus("client", tlsSecretName(t), client),
	}
	s.set(scitunnelv1.ConditionCertificateReady, metav1.ConditionTrue, "Issued",
		fmt.Sprintf("client certificate from %s/%s's CA valid until %s", in.Namespace, in.Name, client.NotAfter.UTC().Format(time.RFC3339)))
	return nil
}

// useSecret checks a Secret the operator does not issue (a user's, a copied bundle, or
// cert-manager's) and mounts it.
func (r *StreamTunnelReconciler) useSecret(ctx context.Context, s *tunnelScope, name, kind, howTo string) error {
	t := s.tunnel
	sec := &corev1.Secret{}
	found, err := getCached(ctx, r.Client, client.ObjectKey{Namespace: t.Namespace, Name: name}, sec)
	if err != nil {
		return err
	}
	fail := func(reason, msg string) {
		s.set(scitunnelv1.ConditionCertificateReady, metav1.ConditionFalse, reason, msg)
		s.degrade(reason, msg)
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
	t.Status.Certificates = []scitunnelv1.CertificateStatus{certStatus(kind, name, c), certStatus("ca", name, ca)}
	s.tlsSecret = name
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
		s.degrade("CertificateExpiring", fmt.Sprintf("the certificate in Secret %q expires at %s: replace it before then", name, c.NotAfter.UTC().Format(time.RFC3339)))
	}
	s.set(scitunnelv1.ConditionCertificateReady, metav1.ConditionTrue, "Valid",
		fmt.Sprintf("%s certificate in Secret %q valid until %s", kind, name, c.NotAfter.UTC().Format(time.RFC3339)))
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
func (r *StreamTunnelReconciler) certManager(ctx context.Context, s *tunnelScope) error {
	t := s.tunnel
	cs := t.Spec.Certificates
	life := r.leafLifetime(t)
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(certManagerAPIVersion)
	u.SetKind(certManagerKind)
	u.SetName(t.Name)
	u.SetNamespace(t.Namespace)
	u.SetLabels(childLabels(t))
	u.SetOwnerReferences([]metav1.OwnerReference{{
		APIVersion: scitunnelv1.GroupVersion.String(), Kind: "StreamTunnel", Name: t.Name, UID: t.UID,
		Controller: ptr(true), BlockOwnerDeletion: ptr(true),
	}})
	issuer := map[string]any{"name": cs.IssuerRef.Name, "kind": orDefault(cs.IssuerRef.Kind, "Issuer"), "group": orDefault(cs.IssuerRef.Group, "cert-manager.io")}
	spec := map[string]any{
		"secretName":     tlsSecretName(t),
		"issuerRef":      issuer,
		"duration":       life.String(),
		"renewBefore":    (life / 3).String(),
		"privateKey":     map[string]any{"algorithm": "ECDSA", "size": int64(256), "rotationPolicy": "Always"},
		"uris":           []any{identity(r.trustDomain(t), t.Namespace, t.Name)},
		"secretTemplate": map[string]any{"labels": map[string]any{LabelTunnel: t.Name}},
	}
	if t.Spec.Role == scitunnelv1.RoleInbound {
		req := r.serverRequest(s)
		spec["commonName"] = req.CommonName
		spec["dnsNames"] = toAny(req.DNSNames)
		var ips []string
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
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), FieldOwner, client.ForceOwnership); err != nil {
		if meta.IsNoMatchError(err) {
			msg := "spec.certificates.source is CertManager but the cert-manager Certificate API (cert-manager.io/v1) is not installed: install cert-manager, or use source Operator"
			s.set(scitunnelv1.ConditionCertificateReady, metav1.ConditionFalse, "CertManagerNotInstalled", msg)
			s.degrade("CertManagerNotInstalled", msg)
			s.requeueAfter(time.Minute)
			return nil
		}
		return err
	}
	sec := &corev1.Secret{}
	found, err := getCached(ctx, r.Client, client.ObjectKey{Namespace: t.Namespace, Name: tlsSecretName(t)}, sec)
	if err != nil {
		return err
	}
	if !found {
		msg := fmt.Sprintf("waiting for cert-manager to issue Secret %q from %s %q", tlsSecretName(t), issuer["kind"], cs.IssuerRef.Name)
		if reason, m := certificateNotReady(u); reason != "" {
			msg += fmt.Sprintf(" (%s: %s)", reason, m)
		}
		s.set(scitunnelv1.ConditionCertificateReady, metav1.ConditionFalse, "Issuing", msg)
		s.requeueAfter(15 * time.Second)
		return nil
	}
	return r.useSecret(ctx, s, tlsSecretName(t), "cert-manager", "cert-manager writes it; check the Certificate "+t.Name)
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

func certStatus(name, secret string, c *x509.Certificate) scitunnelv1.CertificateStatus {
	na := metav1.NewTime(c.NotAfter.UTC())
	ra := metav1.NewTime(pki.RenewAt(c).UTC().Truncate(time.Second))
	return scitunnelv1.CertificateStatus{Name: name, SecretName: secret, NotAfter: &na, RenewAfter: &ra}
}

func ptr[T any](v T) *T { return &v }

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

func toAny(in []string) []any {
	out := make([]any, len(in))
	for i, v := range in {
		out[i] = v
	}
	return out
}

// lifetimeChanged: spec.certificates.duration no longer matches what the certificate got.
func lifetimeChanged(c *x509.Certificate, lifetime time.Duration) bool {
	d := c.NotAfter.Sub(c.NotBefore) - (lifetime + pki.Backdate)
	return d > time.Minute || d < -time.Minute
}
