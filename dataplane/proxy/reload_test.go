package proxy

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/proxy/tlsfiles"
	"github.com/scitunnel/scitunnel/internal/pki"
	"github.com/scitunnel/scitunnel/internal/testutil"
)

// secretMount lays out files as the kubelet mounts a Secret: the data lives in a timestamped
// directory, "..data" points at it, and each key is a symlink through "..data". An update
// writes a new directory and renames a new "..data" over the old one, atomically.
type secretMount struct {
	dir     string
	version int
}

func newSecretMount(t *testing.T, files map[string][]byte) *secretMount {
	t.Helper()
	m := &secretMount{dir: t.TempDir()}
	m.update(t, files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(m.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func (m *secretMount) update(t *testing.T, files map[string][]byte) {
	t.Helper()
	m.version++
	data := filepath.Join(m.dir, "..v"+time.Now().Format("150405.000000000"))
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(data, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(m.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(data), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func (m *secretMount) path(name string) string { return filepath.Join(m.dir, name) }

// The Inbound end picks up a renewed certificate and an extended CA bundle from a Secret
// mount on its own (no call into the proxy), while a connection stays open across the update:
// new handshakes present the new certificate, and clients of the new CA get in.
func TestCertificatesReloadFromSecretMountWithConnectionOpen(t *testing.T) {
	defer func(old time.Duration) { certReloadInterval = old }(certReloadInterval)
	certReloadInterval = 50 * time.Millisecond

	prod := startProducer(t, echo)
	var mount *secretMount
	pr := startPair(t, pairOptions{producers: []string{prod.addr}, allowed: []string{clientIdentity}, tweakIn: func(c *config.Config) {
		server, err := os.ReadFile(c.TLS.CertFile)
		if err != nil {
			t.Fatal(err)
		}
		key, _ := os.ReadFile(c.TLS.KeyFile)
		ca, _ := os.ReadFile(c.TLS.CAFile)
		mount = newSecretMount(t, map[string][]byte{"tls.crt": server, "tls.key": key, "ca.crt": ca})
		c.TLS.CertFile, c.TLS.KeyFile, c.TLS.CAFile = mount.path("tls.crt"), mount.path("tls.key"), mount.path("ca.crt")
	}})
	c := dialEcho(t, pr.entries[0])
	c.roundTrip(t, "before")

	newCA, err := pki.NewCA("next-ca", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	newClient, _ := newCA.Issue(pki.LeafRequest{CommonName: "next", URIs: []string{clientIdentity}, Lifetime: time.Hour}, time.Now())
	inAddr := hostPort("::1", pr.inPorts[0])
	before := counterValue(t, pr.in, "scitunnel_proxy_tls_handshake_failures_total", map[string]string{"reason": tlsfiles.FailUnknownCA})
	if err := tryClient(inAddr, newClient); err == nil {
		t.Fatal("a client of a CA not yet trusted got in")
	}
	eventually(t, "the refusal to be counted", 2*time.Second, func() bool {
		return counterValue(t, pr.in, "scitunnel_proxy_tls_handshake_failures_total", map[string]string{"reason": tlsfiles.FailUnknownCA}) == before+1
	})

	renewed, _ := pr.pki.ca.Issue(pki.LeafRequest{CommonName: "inbound-renewed", DNSNames: []string{"localhost"}, Server: true, Lifetime: 2 * time.Hour}, time.Now())
	bundle := append(append([]byte{}, pr.pki.ca.CertPEM...), newCA.CertPEM...)
	mount.update(t, map[string][]byte{"tls.crt": renewed.CertPEM, "tls.key": renewed.KeyPEM, "ca.crt": bundle})

	eventually(t, "new handshakes to present the renewed certificate", 5*time.Second, func() bool {
		return serverSerial(t, pr) == renewed.Cert.SerialNumber.String()
	})
	c.roundTrip(t, "after") // the open connection was not dropped
	if err := tryClient(inAddr, newClient); err != nil {
		t.Fatalf("a client of the newly trusted CA was refused: %v", err)
	}
	// And the tunnel itself (the Outbound end's old-CA client certificate) still works.
	c2 := dialEcho(t, pr.entries[0])
	c2.roundTrip(t, "new connection")
	if st := pr.in.Status(); st.CertificateNotAfter == nil || !st.CertificateNotAfter.Equal(renewed.Cert.NotAfter) {
		t.Fatalf("status reports certificate expiry %v, want the renewed %v", st.CertificateNotAfter, renewed.Cert.NotAfter)
	}
}

type echoConn struct{ net.Conn }

func dialEcho(t *testing.T, addr string) echoConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return echoConn{c}
}

func (c echoConn) roundTrip(t *testing.T, msg string) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo %q: got %q, %v", msg, buf, err)
	}
}

// The Outbound end presents whatever client certificate its mount holds now: after a swap to a
// certificate whose identity is not on the Inbound end's allow-list, new connections are
// refused (and counted as such by the Inbound end) while the open one carries on.
func TestOutboundPresentsTheReloadedClientCertificate(t *testing.T) {
	defer func(old time.Duration) { certReloadInterval = old }(certReloadInterval)
	certReloadInterval = 50 * time.Millisecond

	prod := startProducer(t, echo)
	var mount *secretMount
	pr := startPair(t, pairOptions{producers: []string{prod.addr}, allowed: []string{clientIdentity}, tweakOut: func(c *config.Config) {
		cert, _ := os.ReadFile(c.TLS.CertFile)
		key, _ := os.ReadFile(c.TLS.KeyFile)
		ca, _ := os.ReadFile(c.TLS.CAFile)
		mount = newSecretMount(t, map[string][]byte{"tls.crt": cert, "tls.key": key, "ca.crt": ca})
		c.TLS.CertFile, c.TLS.KeyFile, c.TLS.CAFile = mount.path("tls.crt"), mount.path("tls.key"), mount.path("ca.crt")
	}})
	open := dialEcho(t, pr.entries[0])
	open.roundTrip(t, "before")

	stranger, _ := pr.pki.ca.Issue(pki.LeafRequest{CommonName: "stranger", URIs: []string{"spiffe://test.local/stranger"}, Lifetime: time.Hour}, time.Now())
	mount.update(t, map[string][]byte{"tls.crt": stranger.CertPEM, "tls.key": stranger.KeyPEM, "ca.crt": pr.pki.ca.CertPEM})
	eventually(t, "a new connection to be refused for its new identity", 5*time.Second, func() bool {
		c, err := net.Dial("tcp", pr.entries[0])
		if err != nil {
			return false
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
			return false
		}
		// The refusal shows on the read: the write may or may not fail before it.
		_, _ = c.Write([]byte("x"))
		_, err = c.Read(make([]byte, 1))
		return err != nil && counterValue(t, pr.in, "scitunnel_proxy_tls_handshake_failures_total",
			map[string]string{"reason": tlsfiles.FailNotAllowed}) >= 1
	})
	open.roundTrip(t, "after") // established before the swap: unaffected
}

// Certificates are the one thing a proxy pod reloads in place (the tests above); a change of
// config.json rolls the pods instead. Proxy.Reload remains for `scitunnel run --watch-config` on
// a bare host (cmd/scitunnel's TestRunWatchConfigAppliesConfigFileChanges).

// A reload that adds ports, one of which cannot be bound, changes nothing: the ports it did
// bind are released and the running routes and targets stay as they were.
func TestReloadThatCannotBindChangesNothing(t *testing.T) {
	a := startProducer(t, func(c net.Conn) { _, _ = c.Write([]byte("a")); c.Close() })
	b := startProducer(t, func(c net.Conn) { _, _ = c.Write([]byte("b")); c.Close() })
	port, extra := testutil.FreePort(t), testutil.FreePort(t)
	taken, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := &config.Config{Tunnel: "t/reload", Role: config.Outbound, Protocol: config.TCP,
		Routes: []config.Route{{ListenPort: port, Target: a.addr}}}
	p := startProxy(t, cfg)

	next := *cfg
	next.Routes = []config.Route{{ListenPort: port, Target: b.addr}, {ListenPort: extra, Target: b.addr},
		{ListenPort: taken.Addr().(*net.TCPAddr).Port, Target: b.addr}}
	if err := p.Reload(&next); err == nil {
		t.Fatal("a reload onto a taken port succeeded")
	}
	if got := dialRead(t, hostPort("::1", port)); got.got != "a" {
		t.Fatalf("after the refused reload the route goes to %q, want the old target", got.got)
	} else {
		got.c.Close()
	}
	ln, err := net.Listen("tcp", hostPort("::", extra))
	if err != nil {
		t.Fatalf("the refused reload left port %d bound: %v", extra, err)
	}
	ln.Close()
	if ok, why := p.Ready(); !ok {
		t.Fatalf("not ready after a refused reload: %s", why)
	}
}
