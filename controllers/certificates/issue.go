package certificates

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/ends"
	"github.com/scitunnel/scitunnel/controllers/internal/ssa"
	"github.com/scitunnel/scitunnel/internal/pki"
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

// ExportsBundle: an Inbound end with operator-managed mutual TLS exports a connection bundle
// (whose identity the Inbound's proxies accept).
func ExportsBundle(t *scitunnelv1.StreamTunnel) bool {
	return t.Spec.Role == scitunnelv1.RoleInbound && ends.UsesTLS(t) && certSource(t) == scitunnelv1.CertificatesOperator
}

func (r *Reconciler) leafLifetime(t *scitunnelv1.StreamTunnel) time.Duration {
	if c := t.Spec.Certificates; c != nil && c.Duration != nil && c.Duration.Duration > 0 {
		return c.Duration.Duration
	}
	return r.Options.CertificateDuration
}

// reconcileCertificates makes sure the pods have a valid certificate, CA and key, from the
// source the spec names, and renews what the operator issued at two thirds of its lifetime.
func (r *Reconciler) reconcileCertificates(ctx context.Context, s *scope) error {
	t := s.tunnel
	if err := r.removeUnwiredClientCertificate(ctx, s); err != nil {
		return err
	}
	if !ends.UsesTLS(t) {
		s.set(metav1.ConditionTrue, "NotRequired",
			fmt.Sprintf("protocol %s uses no TLS", ends.EffectiveProtocol(t)))
		s.certificates = nil
		return nil
	}
	if s.ends.Blocked != nil {
		return nil // the end cannot be built yet; CertificateReady says what it waits for
	}
	if t.Spec.Role == scitunnelv1.RoleInbound && certSource(t) != scitunnelv1.CertificatesSecret &&
		s.service == nil && len(s.ends.ListenPorts) > 0 {
		// The tunnel controller is creating the Service, whose addresses go in the server
		// certificate: issuing now would mean issuing twice. Its creation triggers a pass.
		s.set(metav1.ConditionUnknown, "Pending",
			"waiting for the tunnel's Service, whose addresses go in the server certificate")
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
	case s.ends.Inbound != nil:
		return r.operatorOutbound(ctx, s)
	default:
		return r.useSecret(ctx, s, t.Spec.Outbound.Endpoint.BundleSecretRef.Name, "bundle",
			"copy the Inbound end's connection-bundle Secret (<inbound>-bundle) from its cluster into this namespace under this name")
	}
}

// operatorInbound runs the Inbound's CA and issues its server certificate and bundle.
func (r *Reconciler) operatorInbound(ctx context.Context, s *scope) error {
	t := s.tunnel
	ca, err := r.ensureCA(ctx, s)
	if err != nil || ca == nil {
		return err
	}
	statuses := []scitunnelv1.CertificateStatus{certStatus("ca", child.CASecretName(t.Name), ca.signer.Cert)}

	server, err := r.ensureLeaf(ctx, s, child.TLSSecretName(t), issuer{ca.serverSigner(), ca.trust()}, r.serverRequest(s), child.Labels(t), nil)
	if err != nil {
		return err
	}
	statuses = append(statuses, certStatus("server", child.TLSSecretName(t), server))

	if ExportsBundle(t) {
		addr, ports := ends.ExternalAddress(s.endpoints)
		td := r.trustDomain(t)
		req := pki.LeafRequest{
			CommonName: fmt.Sprintf("%s.%s bundle", t.Name, t.Namespace),
			URIs:       []string{child.BundleIdentity(td, t.Namespace, t.Name)},
			Lifetime:   r.leafLifetime(t),
		}
		info := func(c *x509.Certificate) map[string][]byte {
			b, _ := json.MarshalIndent(BundleInfo{
				Tunnel: t.Namespace + "/" + t.Name, Protocol: ends.EffectiveProtocol(t),
				Address: addr, Ports: ports, ServerName: addr,
				Identity: req.URIs[0], NotAfter: c.NotAfter.UTC().Format(time.RFC3339),
			}, "", "  ")
			return map[string][]byte{BundleInfoKey: b}
		}
		bundle, err := r.ensureLeaf(ctx, s, child.BundleSecretName(t), issuer{ca.signer, ca.trust()}, req, child.Labels(t), info)
		if err != nil {
			return err
		}
		statuses = append(statuses, certStatus("bundle", child.BundleSecretName(t), bundle))
	}
	s.certificates = statuses
	s.set(metav1.ConditionTrue, "Issued",
		fmt.Sprintf("server certificate valid until %s, renewed after %s", server.NotAfter.UTC().Format(time.RFC3339), pki.RenewAt(server).UTC().Format(time.RFC3339)))
	return nil
}

// serverRequest lists every name and address peers may use to reach an Inbound end.
func (r *Reconciler) serverRequest(s *scope) pki.LeafRequest {
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
		URIs:       []string{child.Identity(r.trustDomain(t), t.Namespace, t.Name)},
		Server:     true,
		Lifetime:   r.leafLifetime(t),
	}
}

// issuer signs a leaf with ca; trust is the ca.crt that goes with it (ca, and during a CA
// rotation's overlap the other CA too).
type issuer struct {
	ca    *pki.KeyPair
	trust []byte
}

// ensureLeaf keeps a leaf certificate Secret (tls.crt, tls.key, ca.crt) signed by the issuer
// with the wanted SANs, renewing it at two thirds of its lifetime. extra adds keys derived from
// the certificate (the bundle's description).
func (r *Reconciler) ensureLeaf(ctx context.Context, s *scope, name string, by issuer, req pki.LeafRequest,
	labels map[string]string, extra func(*x509.Certificate) map[string][]byte) (*x509.Certificate, error) {
	t := s.tunnel
	cur := &corev1.Secret{}
	found, err := ssa.Get(ctx, r.Client, client.ObjectKey{Namespace: t.Namespace, Name: name}, cur)
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
		case !pki.SignedBy(kp.Cert, by.ca.Cert) || !pki.SamePEM(cur.Data["ca.crt"], by.trust):
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
		if leaf, err = by.ca.Issue(req, s.now); err != nil {
			return nil, err
		}
		reason := "CertificateIssued"
		if why == "renewed" {
			reason = "CertificateRenewed"
		}
		r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, reason, "IssueCertificate",
			"certificate %s %s, valid until %s", name, why, leaf.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	data := map[string][]byte{"tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM, "ca.crt": by.trust}
	if extra != nil {
		maps.Copy(data, extra(leaf.Cert))
	}
	ac := corev1ac.Secret(name, t.Namespace).
		WithType(corev1.SecretTypeTLS).
		WithLabels(labels).
		WithOwnerReferences(child.OwnerRef(t)).
		WithData(data)
	if _, err := r.applier.Apply(ctx, current, ac, nil); err != nil {
		return nil, err
	}
	s.requeueAfter(pki.RenewAt(leaf.Cert).Sub(s.now))
	return leaf.Cert, nil
}

// operatorOutbound issues the Outbound end's client certificate from its Inbound's CA.
func (r *Reconciler) operatorOutbound(ctx context.Context, s *scope) error {
	t, in := s.tunnel, s.ends.Inbound
	if certSource(in) != scitunnelv1.CertificatesOperator {
		msg := fmt.Sprintf("the Inbound end %s/%s does not use operator-managed certificates: set spec.certificates on this end (source Secret or CertManager) to a certificate its CA trusts", in.Namespace, in.Name)
		s.set(metav1.ConditionFalse, "NoIssuer", msg)
		return nil
	}
	caSec := &corev1.Secret{}
	found, err := ssa.Get(ctx, r.Client, client.ObjectKey{Namespace: in.Namespace, Name: child.CASecretName(in.Name)}, caSec)
	if err != nil {
		return err
	}
	if !found || !metav1.IsControlledBy(caSec, in) { // a Secret of that name that is not the Inbound's is no CA
		s.set(metav1.ConditionFalse, "WaitingForCA",
			fmt.Sprintf("waiting for the Inbound end %s/%s to create its CA", in.Namespace, in.Name))
		s.requeueAfter(5 * time.Second)
		return nil
	}
	ca, err := pki.ParseKeyPair(caSec.Data["ca.crt"], caSec.Data["ca.key"])
	if err != nil {
		s.set(metav1.ConditionFalse, "WaitingForCA",
			fmt.Sprintf("the CA Secret of %s/%s is not readable yet: %v", in.Namespace, in.Name, err))
		s.requeueAfter(5 * time.Second)
		return nil
	}
	labels := child.Labels(t)
	labels[child.LabelIssuerUID] = string(in.UID)
	req := pki.LeafRequest{
		CommonName: fmt.Sprintf("%s.%s", t.Name, t.Namespace),
		URIs:       []string{child.Identity(r.trustDomain(t), t.Namespace, t.Name)},
		Lifetime:   r.peerLifetime(t, in),
	}
	// ca.CertPEM is the whole of the Inbound's ca.crt: during a rotation, both CAs.
	leaf, err := r.ensureLeaf(ctx, s, child.TLSSecretName(t), issuer{ca, ca.CertPEM}, req, labels, nil)
	if err != nil {
		return err
	}
	s.certificates = []scitunnelv1.CertificateStatus{
		certStatus("ca", child.CASecretName(in.Name), ca.Cert),
		certStatus("client", child.TLSSecretName(t), leaf),
	}
	s.set(metav1.ConditionTrue, "Issued",
		fmt.Sprintf("client certificate from %s/%s's CA valid until %s", in.Namespace, in.Name, leaf.NotAfter.UTC().Format(time.RFC3339)))
	return nil
}

func certStatus(name, secret string, c *x509.Certificate) scitunnelv1.CertificateStatus {
	na := metav1.NewTime(c.NotAfter.UTC())
	ra := metav1.NewTime(pki.RenewAt(c).UTC().Truncate(time.Second))
	return scitunnelv1.CertificateStatus{Name: name, SecretName: secret, NotAfter: &na, RenewAfter: &ra}
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
