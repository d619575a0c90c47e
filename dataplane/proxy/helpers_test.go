package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/internal/pki"
	"github.com/scitunnel/scitunnel/internal/testutil"
)

// testPKI is a CA with a server certificate for the Inbound end and a client certificate for
// the Outbound end, written to files as a Secret mount would hold them.
type testPKI struct {
	dir    string
	ca     *pki.KeyPair
	server tlsPaths
	client tlsPaths
}

type tlsPaths struct{ cert, key, ca string }

const clientIdentity = "spiffe://test.local/ns/default/streamtunnel/out"

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("test-ca", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: dir, ca: ca}
	p.server = p.issue(t, "server", pki.LeafRequest{CommonName: "inbound", DNSNames: []string{"localhost"},
		IPs: []net.IP{net.ParseIP("::1"), net.ParseIP("127.0.0.1")}, Server: true, Lifetime: time.Hour}, time.Now())
	p.client = p.issue(t, "client", pki.LeafRequest{CommonName: "outbound", URIs: []string{clientIdentity}, Lifetime: time.Hour}, time.Now())
	return p
}

// issue writes a leaf signed by the CA into dir/name/{tls.crt,tls.key,ca.crt}.
func (p *testPKI) issue(t testing.TB, name string, req pki.LeafRequest, now time.Time) tlsPaths {
	t.Helper()
	kp, err := p.ca.Issue(req, now)
	if err != nil {
		t.Fatal(err)
	}
	return writePair(t, filepath.Join(p.dir, name), kp, p.ca)
}

func writePair(t testing.TB, dir string, kp, ca *pki.KeyPair) tlsPaths {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	paths := tlsPaths{cert: filepath.Join(dir, "tls.crt"), key: filepath.Join(dir, "tls.key"), ca: filepath.Join(dir, "ca.crt")}
	for path, data := range map[string][]byte{paths.cert: kp.CertPEM, paths.key: kp.KeyPEM, paths.ca: ca.CertPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return paths
}

func (tp tlsPaths) config() *config.TLSConfig {
	return &config.TLSConfig{CertFile: tp.cert, KeyFile: tp.key, CAFile: tp.ca}
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// startProxy runs a proxy until the test ends.
func startProxy(t testing.TB, cfg *config.Config) *Proxy {
	t.Helper()
	p, _, _ := startStoppableProxy(t, cfg)
	return p
}

// startStoppableProxy is startProxy for the drain tests: stop is what SIGTERM does, and done
// closes when Run has returned.
func startStoppableProxy(t testing.TB, cfg *config.Config) (p *Proxy, stop func(), done <-chan struct{}) {
	t.Helper()
	p, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	go func() {
		_ = p.Run(ctx)
		close(finished)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	waitReady(t, p)
	return p, cancel, finished
}

func waitReady(t testing.TB, p *Proxy) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		serving := p.serving
		p.mu.Unlock()
		if ok, _ := p.Ready(); ok && serving {
			return
		}
		if time.Now().After(deadline) {
			_, why := p.Ready()
			t.Fatalf("proxy not ready: %s", why)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pair is an Outbound end and an Inbound end wired to each other on loopback.
type pair struct {
	in, out  *Proxy
	entries  []string // where consumers connect (the Outbound end's ports)
	inPorts  []int
	pki      *testPKI
	inConfig *config.Config
}

type pairOptions struct {
	protocol     config.Protocol
	udpTransport config.UDPTransport
	allowed      []string
	producers    []string
	streams      int // listener ports (num_conn); default len(producers)
	tag          *config.Scitag
	tweakIn      func(*config.Config)
	tweakOut     func(*config.Config)
}

func startPair(t testing.TB, o pairOptions) *pair {
	t.Helper()
	if o.protocol == "" {
		o.protocol = config.TLS
	}
	if o.streams == 0 {
		o.streams = len(o.producers)
	}
	pr := &pair{pki: newTestPKI(t)}
	var outPorts []int
	for i := 0; i < o.streams; i++ {
		pr.inPorts = append(pr.inPorts, testutil.FreePort(t))
		outPorts = append(outPorts, testutil.FreePort(t))
	}
	inRoutes, err := config.Expand(pr.inPorts, o.producers)
	if err != nil {
		t.Fatal(err)
	}
	remotes := make([]string, len(pr.inPorts))
	for i, p := range pr.inPorts {
		remotes[i] = hostPort("::1", p)
	}
	outRoutes, _ := config.Expand(outPorts, remotes)

	in := &config.Config{Tunnel: "test/in", Role: config.Inbound, Protocol: o.protocol, UDPTransport: o.udpTransport,
		Routes: inRoutes, Scitag: o.tag, DrainTimeout: config.Duration{Duration: 2 * time.Second}}
	out := &config.Config{Tunnel: "test/out", Role: config.Outbound, Protocol: o.protocol, UDPTransport: o.udpTransport,
		Routes: outRoutes, Scitag: o.tag, DrainTimeout: config.Duration{Duration: 2 * time.Second}}
	needsTLS := o.protocol == config.TLS || (o.protocol == config.UDP && o.udpTransport != config.UDPPlain)
	if needsTLS {
		in.TLS = pr.pki.server.config()
		in.TLS.AllowedSANs = o.allowed
		out.TLS = pr.pki.client.config()
		out.TLS.ServerName = "localhost"
	}
	if o.tweakIn != nil {
		o.tweakIn(in)
	}
	if o.tweakOut != nil {
		o.tweakOut(out)
	}
	pr.inConfig = in
	pr.in = startProxy(t, in)
	pr.out = startProxy(t, out)
	for _, p := range outPorts {
		pr.entries = append(pr.entries, hostPort("::1", p))
	}
	return pr
}

// producer is a TCP server standing in for the producer application.
type producer struct {
	addr string
}

func startProducer(t testing.TB, handle func(net.Conn)) *producer {
	t.Helper()
	return &producer{addr: testutil.ServeTCP(t, "[::1]:0", handle)}
}

func echo(c net.Conn) {
	defer c.Close()
	_, _ = io.Copy(c, c)
}

// pattern is a deterministic byte stream: a seeded ChaCha8 generator, so both sides can hash
// a GiB without keeping it.
type pattern struct{ rng *rand.ChaCha8 }

func newPattern(seed byte) *pattern {
	var s [32]byte
	s[0] = seed
	return &pattern{rng: rand.NewChaCha8(s)}
}

func (p *pattern) Read(b []byte) (int, error) { return p.rng.Read(b) }

// sendAndHash writes n pattern bytes to w and returns their SHA-256.
func sendAndHash(w io.Writer, seed byte, n int64) (string, error) {
	h := sha256.New()
	_, err := io.CopyBuffer(io.MultiWriter(w, h), io.LimitReader(newPattern(seed), n), make([]byte, 256<<10))
	return hex.EncodeToString(h.Sum(nil)), err
}

// readAndHash reads r to EOF and returns the SHA-256 and count.
func readAndHash(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 256<<10))
	return hex.EncodeToString(h.Sum(nil)), n, err
}

func counterValue(t testing.TB, p *Proxy, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := p.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metric
				}
			}
			if c := m.GetCounter(); c != nil {
				total += c.GetValue()
			} else if g := m.GetGauge(); g != nil {
				total += g.GetValue()
			}
		}
	}
	return total
}

func eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
