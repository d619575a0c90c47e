package proxy

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/proxy/tlsfiles"
	"github.com/scitunnel/scitunnel/internal/pki"
)

// Generous: these tests share two cores with other work; they wait for states, not durations.
const trustDeadline = 20 * time.Second

const revokedIdentity = "spiffe://test.local/ns/refused/streamtunnel/out"

// writeConfig writes cfg where the ConfigMap mount would hold config.json.
func writeConfig(t *testing.T, path string, cfg *config.Config) {
	t.Helper()
	data, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func handshakeRefusals(t *testing.T, p *Proxy, reason string) float64 {
	return counterValue(t, p, "scitunnel_proxy_tls_handshake_failures_total", map[string]string{"reason": reason})
}

// A peer taken off the Inbound end's allow-list in config.json (as the operator does when it
// revokes a peer, without rolling the pods) is refused from its next handshake on, and the
// refusal is counted; the allowed peer's stream, open across the change, keeps flowing, and it
// can still open new ones.
func TestRevokedClientIsRefusedWithoutDroppingOthers(t *testing.T) {
	prod := startProducer(t, echo)
	pr := startPair(t, pairOptions{producers: []string{prod.addr}, allowed: []string{clientIdentity, revokedIdentity}})
	path := filepath.Join(t.TempDir(), "config.json")
	writeConfig(t, path, pr.inConfig)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go pr.in.WatchAllowedClients(ctx, path, 20*time.Millisecond)

	inAddr := hostPort("::1", pr.inPorts[0])
	revoked, err := pr.pki.ca.Issue(pki.LeafRequest{CommonName: "refused", URIs: []string{revokedIdentity}, Lifetime: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := tryClient(inAddr, revoked); err != nil {
		t.Fatalf("before the revocation the peer was refused: %v", err)
	}
	open := dialEcho(t, pr.entries[0])
	open.roundTrip(t, "before")

	next := *pr.inConfig
	tlsCfg := *next.TLS
	tlsCfg.AllowedSANs = []string{clientIdentity}
	next.TLS = &tlsCfg
	writeConfig(t, path, &next)

	before := handshakeRefusals(t, pr.in, tlsfiles.FailNotAllowed)
	eventually(t, "the revoked certificate to be refused", trustDeadline, func() bool {
		return tryClient(inAddr, revoked) != nil
	})
	eventually(t, "the refusal to be counted under "+tlsfiles.FailNotAllowed, trustDeadline, func() bool {
		return handshakeRefusals(t, pr.in, tlsfiles.FailNotAllowed) >= before+1
	})
	if got := counterValue(t, pr.in, "scitunnel_proxy_config_reloads_total", map[string]string{"result": "allowed_clients"}); got < 1 {
		t.Fatalf("allow-list changes counted: %v", got)
	}
	open.roundTrip(t, "after") // established before the revocation: untouched
	dialEcho(t, pr.entries[0]).roundTrip(t, "new stream of the allowed peer")
}

// A CA rotation as the operator runs it: first both ends trust the old and the new CA and
// their leaves are re-issued under the new one, then the old CA is dropped. A stream opened
// before the swap keeps flowing through both steps; during the overlap handshakes with leaves
// of either CA succeed; after it, only the new CA's.
func TestCARotationKeepsOpenStreamsAndAcceptsBothCAsDuringOverlap(t *testing.T) {
	defer func(old time.Duration) { certReloadInterval = old }(certReloadInterval)
	certReloadInterval = 20 * time.Millisecond

	prod := startProducer(t, echo)
	var inMount, outMount *secretMount
	pr := startPair(t, pairOptions{producers: []string{prod.addr}, allowed: []string{clientIdentity},
		tweakIn:  func(c *config.Config) { inMount = mountTLS(t, c) },
		tweakOut: func(c *config.Config) { outMount = mountTLS(t, c) }})
	open := dialEcho(t, pr.entries[0])
	open.roundTrip(t, "before the rotation")

	oldCA := pr.pki.ca
	newCA, err := pki.NewCA("rotated-ca", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	both := append(append([]byte{}, newCA.CertPEM...), oldCA.CertPEM...)
	server, _ := newCA.Issue(pki.LeafRequest{CommonName: "inbound", DNSNames: []string{"localhost"}, Server: true, Lifetime: time.Hour}, time.Now())
	client, _ := newCA.Issue(pki.LeafRequest{CommonName: "outbound", URIs: []string{clientIdentity}, Lifetime: time.Hour}, time.Now())
	oldLeaf, _ := oldCA.Issue(pki.LeafRequest{CommonName: "old", URIs: []string{clientIdentity}, Lifetime: time.Hour}, time.Now())
	inMount.update(t, map[string][]byte{"tls.crt": server.CertPEM, "tls.key": server.KeyPEM, "ca.crt": both})
	outMount.update(t, map[string][]byte{"tls.crt": client.CertPEM, "tls.key": client.KeyPEM, "ca.crt": both})

	eventually(t, "the Inbound end to present the new CA's server certificate", trustDeadline, func() bool {
		return serverSerial(t, pr) == server.Cert.SerialNumber.String()
	})
	open.roundTrip(t, "during the overlap")
	inAddr := hostPort("::1", pr.inPorts[0])
	if err := tryClient(inAddr, oldLeaf); err != nil {
		t.Fatalf("during the overlap a leaf of the old CA was refused: %v", err)
	}
	if err := tryClient(inAddr, client); err != nil {
		t.Fatalf("during the overlap a leaf of the new CA was refused: %v", err)
	}
	eventually(t, "a new stream through the re-issued Outbound end", trustDeadline, func() bool {
		c := dialEcho(t, pr.entries[0])
		return tryEcho(c, "new stream") == nil
	})

	before := handshakeRefusals(t, pr.in, tlsfiles.FailUnknownCA)
	inMount.update(t, map[string][]byte{"tls.crt": server.CertPEM, "tls.key": server.KeyPEM, "ca.crt": newCA.CertPEM})
	eventually(t, "the old CA's leaf to be refused after the overlap", trustDeadline, func() bool {
		return tryClient(inAddr, oldLeaf) != nil
	})
	eventually(t, "the refusal to be counted under "+tlsfiles.FailUnknownCA, trustDeadline, func() bool {
		return handshakeRefusals(t, pr.in, tlsfiles.FailUnknownCA) >= before+1
	})
	open.roundTrip(t, "after the overlap")
}

// mountTLS moves an end's certificate files into a Secret-like mount the test can swap.
func mountTLS(t *testing.T, c *config.Config) *secretMount {
	t.Helper()
	files := map[string][]byte{}
	for name, path := range map[string]string{"tls.crt": c.TLS.CertFile, "tls.key": c.TLS.KeyFile, "ca.crt": c.TLS.CAFile} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	m := newSecretMount(t, files)
	c.TLS.CertFile, c.TLS.KeyFile, c.TLS.CAFile = m.path("tls.crt"), m.path("tls.key"), m.path("ca.crt")
	return m
}

// tryEcho is roundTrip for a condition: an error instead of failing the test.
func tryEcho(c echoConn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return err
}
