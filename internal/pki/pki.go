// Package pki is the small certificate authority SciTunnel uses: a CA per Inbound tunnel and the
// leaf certificates of both ends, with crypto/x509 and ECDSA P-256 keys. The operator issues and
// renews with it; the CLI and the tests use it to make certificates for bare hosts.
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"slices"
	"time"
)

// A full PKI library would add a dependency for what is a dozen lines per certificate;
// cert-manager is the choice for users who want more (spec.certificates.source CertManager).

const (
	// CALifetime is long: rotating a CA means re-issuing every peer's certificate, including the
	// connection bundles copied into other clusters by hand.
	CALifetime = 10 * 365 * 24 * time.Hour
	// Backdate tolerates clock skew between the nodes that check the certificates: NotBefore
	// is this much before the issuing time, so a certificate lives Lifetime + Backdate.
	Backdate = 5 * time.Minute
)

// KeyPair is a certificate with its key and parsed form.
type KeyPair struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     *ecdsa.PrivateKey
	KeyPEM  []byte
}

// RenewAt is when a certificate should be replaced: two thirds into its lifetime, as
// cert-manager does by default, leaving a third of the lifetime to retry on failure.
func RenewAt(c *x509.Certificate) time.Time {
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotBefore.Add(life * 2 / 3)
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func encodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// NewCA makes a self-signed CA, e.g. for one Inbound tunnel and the Outbound ends that talk to it.
func NewCA(commonName string, now time.Time) (*KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"SciTunnel"}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return finishPair(der, key)
}

func finishPair(der []byte, key *ecdsa.PrivateKey) (*KeyPair, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &KeyPair{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:     key,
		KeyPEM:  keyPEM,
	}, nil
}

// LeafRequest describes a leaf certificate.
type LeafRequest struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	URIs       []string
	Server     bool // server auth (and client auth: one certificate can do both)
	Lifetime   time.Duration
}

// Issue signs a leaf certificate with ca.
func (ca *KeyPair) Issue(req LeafRequest, now time.Time) (*KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	usages := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if req.Server {
		usages = append(usages, x509.ExtKeyUsageServerAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: req.CommonName, Organization: []string{"SciTunnel"}},
		NotBefore:    now.Add(-Backdate),
		NotAfter:     now.Add(req.Lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usages,
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPs,
	}
	for _, u := range req.URIs {
		parsed, err := url.Parse(u)
		if err != nil {
			return nil, fmt.Errorf("URI SAN %q: %w", u, err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	return finishPair(der, key)
}

// ParseCertPEM returns the first certificate in PEM data.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// ParseKeyPair reads a certificate and its private key and checks that they belong together.
func ParseKeyPair(certPEM, keyPEM []byte) (*KeyPair, error) {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("no PEM private key")
	}
	var key *ecdsa.PrivateKey
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, errors.New("private key is not ECDSA")
		}
		key = ek
	case "EC PRIVATE KEY":
		if key, err = x509.ParseECPrivateKey(block.Bytes); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unsupported private key type %q", block.Type)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("private key does not match the certificate")
	}
	return &KeyPair{Cert: cert, CertPEM: certPEM, Key: key, KeyPEM: keyPEM}, nil
}

// SignedBy reports whether cert chains to ca.
func SignedBy(cert, ca *x509.Certificate) bool {
	return cert.CheckSignatureFrom(ca) == nil
}

// HasSANs reports whether cert carries exactly the wanted SANs (order aside), so a change of
// Service IP or advertised address triggers a re-issue.
func HasSANs(cert *x509.Certificate, req LeafRequest) bool {
	dns := slices.Clone(cert.DNSNames)
	want := slices.Clone(req.DNSNames)
	slices.Sort(dns)
	slices.Sort(want)
	if !slices.Equal(dns, want) {
		return false
	}
	ips := make([]string, 0, len(cert.IPAddresses))
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	wantIPs := make([]string, 0, len(req.IPs))
	for _, ip := range req.IPs {
		wantIPs = append(wantIPs, ip.String())
	}
	slices.Sort(ips)
	slices.Sort(wantIPs)
	if !slices.Equal(ips, wantIPs) {
		return false
	}
	uris := make([]string, 0, len(cert.URIs))
	for _, u := range cert.URIs {
		uris = append(uris, u.String())
	}
	wantURIs := slices.Clone(req.URIs)
	slices.Sort(uris)
	slices.Sort(wantURIs)
	return slices.Equal(uris, wantURIs)
}

// SamePEM compares PEM blobs ignoring trailing whitespace.
func SamePEM(a, b []byte) bool { return bytes.Equal(bytes.TrimSpace(a), bytes.TrimSpace(b)) }
