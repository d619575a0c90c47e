package certificates

import (
	"net"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/internal/pki"
)

func TestRenewalAtTwoThirds(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ca, err := pki.NewCA("test", now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(pki.LeafRequest{CommonName: "x", DNSNames: []string{"x"}, IPs: []net.IP{net.ParseIP("10.0.0.1")},
		URIs: []string{"spiffe://td/ns/a/streamtunnel/b"}, Server: true, Lifetime: 90 * time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	// NotBefore is backdated 5 minutes: the lifetime is 90h05m, two thirds of it 60h03m20s.
	want := now.Add(-pki.Backdate).Add((90*time.Hour + pki.Backdate) * 2 / 3)
	if got := pki.RenewAt(leaf.Cert); !got.Equal(want) {
		t.Errorf("pki.RenewAt = %v, want %v", got, want)
	}
	if !pki.SignedBy(leaf.Cert, ca.Cert) {
		t.Error("leaf not signed by its CA")
	}
	other, _ := pki.NewCA("other", now)
	if pki.SignedBy(leaf.Cert, other.Cert) {
		t.Error("leaf verified against a foreign CA")
	}
	if !pki.HasSANs(leaf.Cert, pki.LeafRequest{DNSNames: []string{"x"}, IPs: []net.IP{net.ParseIP("10.0.0.1")}, URIs: []string{"spiffe://td/ns/a/streamtunnel/b"}}) {
		t.Error("pki.HasSANs false for the same SANs")
	}
	if pki.HasSANs(leaf.Cert, pki.LeafRequest{DNSNames: []string{"x", "y"}, IPs: []net.IP{net.ParseIP("10.0.0.1")}, URIs: []string{"spiffe://td/ns/a/streamtunnel/b"}}) {
		t.Error("pki.HasSANs true after a name was added")
	}
	if lifetimeChanged(leaf.Cert, 90*time.Hour) || !lifetimeChanged(leaf.Cert, 30*time.Hour) {
		t.Error("lifetimeChanged misjudges")
	}
	kp, err := pki.ParseKeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil || kp.Cert.SerialNumber.Cmp(leaf.Cert.SerialNumber) != 0 {
		t.Errorf("pki.ParseKeyPair round trip: %v", err)
	}
	if _, err := pki.ParseKeyPair(leaf.CertPEM, ca.KeyPEM); err == nil {
		t.Error("pki.ParseKeyPair accepted a key of another certificate")
	}
}
