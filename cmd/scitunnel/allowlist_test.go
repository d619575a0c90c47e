package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/internal/pki"
	"github.com/scitunnel/scitunnel/internal/testutil"
)

// Without --watch-config, as the proxy pods run, `run` still takes the Inbound end's allow-list
// of client identities from a changed config.json (the operator revokes a peer that way,
// without rolling the pods): the revoked identity is refused from then on, while the other
// peer's open connection and new ones carry on.
func TestRunTakesTheAllowListInPlaceWithoutWatchConfig(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("allow-list", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	server, _ := ca.Issue(pki.LeafRequest{CommonName: "in", IPs: []net.IP{net.ParseIP("::1")}, Server: true, Lifetime: time.Hour}, time.Now())
	for name, data := range map[string][]byte{"tls.crt": server.CertPEM, "tls.key": server.KeyPEM, "ca.crt": ca.CertPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const kept, revoked = "spiffe://t/ns/a/streamtunnel/kept", "spiffe://t/ns/b/streamtunnel/revoked"
	keptCert, _ := ca.Issue(pki.LeafRequest{CommonName: "kept", URIs: []string{kept}, Lifetime: time.Hour}, time.Now())
	revokedCert, _ := ca.Issue(pki.LeafRequest{CommonName: "revoked", URIs: []string{revoked}, Lifetime: time.Hour}, time.Now())

	entry, admin := testutil.FreePort(t), testutil.FreePort(t)
	target := echoServer(t, "g")
	m := &configMount{t: t, dir: t.TempDir()}
	write := func(version string, allowed ...string) {
		list, _ := json.Marshal(allowed)
		doc := fmt.Sprintf(`{"version":1,"tunnel":"t/in","role":"Inbound","protocol":"TLS","adminAddress":"[::1]:%d",
			"routes":[{"listenPort":%d,"target":%q}],
			"tls":{"certFile":%q,"keyFile":%q,"caFile":%q,"allowedSANs":%s}}`, admin, entry, target,
			filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt"), list)
		m.swap(version, doc)
	}
	write("1", kept, revoked)
	if err := os.Symlink("..data/config.json", m.path()); err != nil {
		t.Fatal(err)
	}
	startCLI(t, "run", "--config", m.path())
	waitHTTP(t, fmt.Sprintf("http://[::1]:%d/readyz", admin)).Body.Close()

	addr := net.JoinHostPort("::1", port(entry))
	open, err := greetTLS(addr, keptCert)
	if err != nil {
		t.Fatalf("the allowed peer was refused: %v", err)
	}
	defer open.Close()
	if c, err := greetTLS(addr, revokedCert); err != nil {
		t.Fatalf("before the revocation the peer was refused: %v", err)
	} else {
		c.Close()
	}

	write("2", kept)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := greetTLS(addr, revokedCert)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the revoked peer still gets in 30 s after the allow-list changed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	echoCheck(t, open, "still open")
	c, err := greetTLS(addr, keptCert)
	if err != nil {
		t.Fatalf("after the revocation the allowed peer was refused: %v", err)
	}
	c.Close()
}

// swap writes a new config.json as the kubelet updates a ConfigMap mount (one rename).
func (m *configMount) swap(version, doc string) {
	m.t.Helper()
	data := filepath.Join(m.dir, "..data-"+version)
	if err := os.MkdirAll(data, 0o755); err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "config.json"), []byte(doc), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(data), filepath.Join(m.dir, "..data.tmp")); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(m.dir, "..data.tmp"), filepath.Join(m.dir, "..data")); err != nil {
		m.t.Fatal(err)
	}
}

// greetTLS connects with a client certificate and reads the producer's one-byte greeting (TLS
// 1.3 shows a refused client certificate only on the first read).
func greetTLS(addr string, cert *pki.KeyPair) (net.Conn, error) {
	pair, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
	if err != nil {
		return nil, err
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, //nolint:gosec // the server is not under test
		Certificates: []tls.Certificate{pair}})
	if err != nil {
		return nil, err
	}
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		c.Close()
		return nil, err
	}
	return c, c.SetReadDeadline(time.Time{})
}
