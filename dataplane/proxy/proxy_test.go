package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/proxy/tlsfiles"
	"github.com/scitunnel/scitunnel/internal/pki"
	"github.com/scitunnel/scitunnel/internal/testutil"
)

// bothWays streams n bytes from the consumer to the producer and n bytes back at the same
// time through entry, and checks both hashes.
func bothWays(t *testing.T, entry string, results chan [2]string, n int64) {
	t.Helper()
	c, err := net.Dial("tcp", entry)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sentUp := make(chan string, 1)
	go func() {
		h, err := sendAndHash(c, 1, n)
		if err != nil {
			t.Errorf("consumer send: %v", err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Errorf("consumer half-close: %v", err)
		}
		sentUp <- h
	}()
	gotDown, count, err := readAndHash(c)
	if err != nil || count != n {
		t.Fatalf("consumer received %d bytes (%v), want %d", count, err, n)
	}
	r := <-results // producer: [received hash, sent hash]
	if up := <-sentUp; r[0] != up {
		t.Fatalf("consumer -> producer: sent %s, producer got %s", up, r[0])
	}
	if gotDown != r[1] {
		t.Fatalf("producer -> consumer: sent %s, consumer got %s", r[1], gotDown)
	}
}

// hashingProducer receives and hashes everything while sending n pattern bytes back.
func hashingProducer(t *testing.T, n int64) (*producer, chan [2]string) {
	results := make(chan [2]string, 16)
	prod := startProducer(t, func(c net.Conn) {
		defer c.Close()
		sent := make(chan string, 1)
		go func() {
			h, _ := sendAndHash(c, 2, n)
			_ = c.(*net.TCPConn).CloseWrite()
			sent <- h
		}()
		got, _, _ := readAndHash(c)
		results <- [2]string{got, <-sent}
	})
	return prod, results
}

func TestTLSPairCarriesOneGiBEachWay(t *testing.T) {
	const n = 1 << 30
	prod, results := hashingProducer(t, n)
	pr := startPair(t, pairOptions{producers: []string{prod.addr}, allowed: []string{clientIdentity}})
	bothWays(t, pr.entries[0], results, n)

	// The exact counts are reported per tag and connection.
	eventually(t, "the connection to end", 2*time.Second, func() bool { return len(pr.in.Connections().Active) == 0 })
	for name, p := range map[string]*Proxy{"inbound": pr.in, "outbound": pr.out} {
		tags := p.Connections().Tags["none"]
		if tags.ToProducer != n || tags.ToConsumer != n || tags.Connections != 1 {
			t.Errorf("%s reports %+v, want %d bytes each way over 1 connection", name, tags, n)
		}
		if got := counterValue(t, p, "scitunnel_proxy_bytes_total", map[string]string{"direction": dirToConsumer}); got != n {
			t.Errorf("%s metric bytes to_consumer = %v", name, got)
		}
	}
	ended := pr.in.Connections().RecentEnded
	if len(ended) != 1 || ended[0].PeerIdentity != clientIdentity || ended[0].Protocol != "tls" {
		t.Fatalf("inbound's ended connections: %+v", ended)
	}
}

func TestTCPPairCarriesDataEachWay(t *testing.T) {
	const n = 256 << 20
	prod, results := hashingProducer(t, n)
	pr := startPair(t, pairOptions{protocol: config.TCP, producers: []string{prod.addr}})
	bothWays(t, pr.entries[0], results, n)
}

func TestManyConcurrentConnections(t *testing.T) {
	prod := startProducer(t, echo)
	pr := startPair(t, pairOptions{producers: []string{prod.addr}, streams: 4})
	const conns, size = 200, 64 << 10
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := net.Dial("tcp", pr.entries[i%len(pr.entries)])
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			go func() {
				_, _ = sendAndHash(c, byte(i), size)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
			got, n, err := readAndHash(c)
			want, _ := sendAndHash(io.Discard, byte(i), size)
			if err != nil || n != size || got != want {
				errs <- fmt.Errorf("connection %d: %d bytes, hash match %v, err %v", i, n, got == want, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := pr.in.Connections().Tags["none"].Connections; got != conns {
		t.Fatalf("inbound counted %d connections, want %d", got, conns)
	}
}

func TestParallelStreamsMapRoundRobin(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]int{}
	mark := func(name string) func(net.Conn) {
		return func(c net.Conn) {
			mu.Lock()
			hits[name]++
			mu.Unlock()
			_, _ = c.Write([]byte(name))
			c.Close()
		}
	}
	a := startProducer(t, mark("a"))
	b := startProducer(t, mark("b"))
	pr := startPair(t, pairOptions{producers: []string{a.addr, b.addr}, streams: 4})
	for i, entry := range pr.entries {
		c, err := net.Dial("tcp", entry)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		want := []string{"a", "b"}[i%2]
		if string(got) != want {
			t.Fatalf("stream %d reached producer %q, want %q", i, got, want)
		}
	}
}

// The allow-list, the CA, expiry and a missing certificate each refuse the client, and each
// refusal is counted under its own reason.
func TestMutualTLSRefusals(t *testing.T) {
	prod := startProducer(t, echo)
	pr := startPair(t, pairOptions{producers: []string{prod.addr}, allowed: []string{clientIdentity}})
	inAddr := hostPort("::1", pr.inPorts[0])

	other, err := pki.NewCA("other-ca", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	wrongCA, _ := other.Issue(pki.LeafRequest{CommonName: "intruder", URIs: []string{clientIdentity}, Lifetime: time.Hour}, time.Now())
	expired, _ := pr.pki.ca.Issue(pki.LeafRequest{CommonName: "old", URIs: []string{clientIdentity}, Lifetime: time.Hour}, time.Now().Add(-3*time.Hour))
	stranger, _ := pr.pki.ca.Issue(pki.LeafRequest{CommonName: "stranger", URIs: []string{"spiffe://test.local/ns/x/streamtunnel/stranger"}, Lifetime: time.Hour}, time.Now())
	good, _ := pr.pki.ca.Issue(pki.LeafRequest{CommonName: "good", URIs: []string{clientIdentity}, Lifetime: time.Hour}, time.Now())

	cases := []struct {
		name   string
		cert   *pki.KeyPair
		reason string
	}{
		{"no client certificate", nil, tlsfiles.FailNoClientCert},
		{"wrong CA", wrongCA, tlsfiles.FailUnknownCA},
		{"expired certificate", expired, tlsfiles.FailExpired},
		{"identity not on the allow-list", stranger, tlsfiles.FailNotAllowed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := counterValue(t, pr.in, "scitunnel_proxy_tls_handshake_failures_total", map[string]string{"reason": c.reason})
			err := tryClient(inAddr, c.cert)
			if err == nil {
				t.Fatal("the inbound end accepted the client")
			}
			eventually(t, "the refusal to be counted under "+c.reason, 2*time.Second, func() bool {
				return counterValue(t, pr.in, "scitunnel_proxy_tls_handshake_failures_total", map[string]string{"reason": c.reason}) == before+1
			})
		})
	}
	if err := tryClient(inAddr, good); err != nil {
		t.Fatalf("a valid, allowed client was refused: %v", err)
	}
}

// tryClient handshakes with the inbound end and exchanges one echo (TLS 1.3 reports a client
// certificate refusal only on the first read).
func tryClient(addr string, cert *pki.KeyPair) error {
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13} // the server side is under test here
	if cert != nil {
		pair, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
		if err != nil {
			return err
		}
		// Always present it: Go's default picks no certificate when the server's list of
		// acceptable CAs does not include its issuer, which would hide the wrong-CA case.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	return nil
}

func TestCertificateReloadKeepsOpenConnections(t *testing.T) {
	prod := startProducer(t, echo)
	pr := startPair(t, pairOptions{producers: []string{prod.addr}})
	c, err := net.Dial("tcp", pr.entries[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip := func(msg string) {
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
	roundTrip("before")
	oldSerial := serverSerial(t, pr)

	// Renew the server certificate in place, as a Secret update does.
	renewed, _ := pr.pki.ca.Issue(pki.LeafRequest{CommonName: "inbound-renewed", DNSNames: []string{"localhost"}, Server: true, Lifetime: 2 * time.Hour}, time.Now())
	writePair(t, pr.pki.dir+"/server", renewed, pr.pki.ca)
	if changed, err := pr.in.tls.Reload(); err != nil || !changed {
		t.Fatalf("reload: changed=%v err=%v", changed, err)
	}
	roundTrip("after") // the established connection carries on
	if got := serverSerial(t, pr); got == oldSerial || got != renewed.Cert.SerialNumber.String() {
		t.Fatalf("new connections get serial %s, want the renewed %s", got, renewed.Cert.SerialNumber)
	}

	// A broken update is refused and the previous certificate stays.
	if err := os.WriteFile(pr.pki.dir+"/server/tls.key", []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := pr.in.tls.Reload(); err == nil {
		t.Fatal("a garbage key was accepted")
	}
	if got := serverSerial(t, pr); got != renewed.Cert.SerialNumber.String() {
		t.Fatalf("after a refused reload the server presents %s", got)
	}
	roundTrip("still")
}

func serverSerial(t *testing.T, pr *pair) string {
	t.Helper()
	pair, _ := tls.LoadX509KeyPair(pr.pki.client.cert, pr.pki.client.key)
	c, err := tls.Dial("tcp", hostPort("::1", pr.inPorts[0]), &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestGracefulDrain(t *testing.T) {
	prod := startProducer(t, echo)
	port := testutil.FreePort(t)
	cfg := &config.Config{Tunnel: "t/drain", Role: config.Outbound, Protocol: config.TCP,
		Routes: []config.Route{{ListenPort: port, Target: prod.addr}}, DrainTimeout: config.Duration{Duration: time.Second}}
	_, cancel, done := startStoppableProxy(t, cfg)

	c, err := net.Dial("tcp", hostPort("::1", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}

	cancel() // SIGTERM
	eventually(t, "the listener to close", 2*time.Second, func() bool {
		d, err := net.DialTimeout("tcp", hostPort("::1", port), 100*time.Millisecond)
		if err == nil {
			d.Close()
		}
		return err != nil
	})
	// The active connection still works during the drain...
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("connection broke during the drain: %v", err)
	}
	// ...and is cut at the deadline, after which Run returns.
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the drain deadline")
	}
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err == nil {
		t.Fatal("connection still open after the drain deadline")
	}
}

func TestDrainEndsEarlyWhenConnectionsFinish(t *testing.T) {
	prod := startProducer(t, echo)
	port := testutil.FreePort(t)
	cfg := &config.Config{Tunnel: "t/drain", Role: config.Outbound, Protocol: config.TCP,
		Routes: []config.Route{{ListenPort: port, Target: prod.addr}}, DrainTimeout: config.Duration{Duration: time.Minute}}
	_, cancel, done := startStoppableProxy(t, cfg)
	c, _ := net.Dial("tcp", hostPort("::1", port))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	cancel()
	time.Sleep(100 * time.Millisecond)
	c.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run waited although no connection was left")
	}
}

// A configuration that cannot start leaves nothing bound.
func TestBadConfigurationHalfStartsNothing(t *testing.T) {
	taken, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	first := testutil.FreePort(t)
	cfg := &config.Config{Tunnel: "t/bad", Role: config.Inbound, Protocol: config.TCP, Routes: []config.Route{
		{ListenPort: first, Target: "[::1]:1"},
		{ListenPort: taken.Addr().(*net.TCPAddr).Port, Target: "[::1]:2"},
	}}
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "routes: listen port") {
		t.Fatalf("New with a taken port: %v", err)
	}
	ln, err := net.Listen("tcp", hostPort("::", first))
	if err != nil {
		t.Fatalf("the first route's port stayed bound after the failure: %v", err)
	}
	ln.Close()

	bad := &config.Config{Role: config.Inbound, Routes: []config.Route{{ListenPort: 70000, Target: "x"}}}
	_, err = New(bad, nil)
	for _, field := range []string{"routes[0].listenPort", "routes[0].target", "tls"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("error %v does not name %s", err, field)
		}
	}
	missing := &config.Config{Role: config.Inbound, Routes: []config.Route{{ListenPort: first, Target: "[::1]:1"}},
		TLS: &config.TLSConfig{CertFile: "/nonexistent/tls.crt", KeyFile: "/nonexistent/tls.key", CAFile: "/nonexistent/ca.crt"}}
	if _, err := New(missing, nil); err == nil || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("missing certificate files: %v", err)
	}
}

// A reload changes the target of new connections; the open one keeps its producer.
func TestReloadRetargetsNewConnections(t *testing.T) {
	a := startProducer(t, func(c net.Conn) { _, _ = c.Write([]byte("a")); _, _ = io.Copy(io.Discard, c); c.Close() })
	b := startProducer(t, func(c net.Conn) { _, _ = c.Write([]byte("b")); _, _ = io.Copy(io.Discard, c); c.Close() })
	port := testutil.FreePort(t)
	cfg := &config.Config{Tunnel: "t/reload", Role: config.Outbound, Protocol: config.TCP,
		Routes: []config.Route{{ListenPort: port, Target: a.addr}}}
	p := startProxy(t, cfg)
	first := dialRead(t, hostPort("::1", port))
	if first.got != "a" {
		t.Fatalf("before reload: %q", first.got)
	}
	next := *cfg
	next.Routes = []config.Route{{ListenPort: port, Target: b.addr}}
	if err := p.Reload(&next); err != nil {
		t.Fatal(err)
	}
	second := dialRead(t, hostPort("::1", port))
	second.c.Close()
	if second.got != "b" {
		t.Fatalf("after reload: %q", second.got)
	}
	if _, err := first.c.Write([]byte("still here")); err != nil {
		t.Fatalf("the open connection broke on reload: %v", err)
	}
	first.c.Close()

	changeRole := next
	changeRole.Role = config.Inbound
	if err := p.Reload(&changeRole); err == nil {
		t.Fatal("a role change was applied without a restart")
	}
}

type dialed struct {
	c   net.Conn
	got string
}

func dialRead(t *testing.T, addr string) dialed {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	return dialed{c: c, got: string(buf)}
}

// A target that refuses at first (a peer whose port opens a moment later) is dialed again
// within the dial timeout: the consumer's connection is carried, not reset.
func TestRefusedDialIsRetried(t *testing.T) {
	target := refusingAddr(t)
	port := testutil.FreePort(t)
	// Tagged, as in the pods: the refusal comes back through the flow-label dialer's own connect.
	p := startProxy(t, &config.Config{Tunnel: "t/late", Role: config.Outbound, Protocol: config.TCP,
		Scitag: &config.Scitag{ExperimentID: 2, ActivityID: 16, Entropy: true},
		Routes: []config.Route{{ListenPort: port, Target: target}}, DialTimeout: config.Duration{Duration: 5 * time.Second}})
	c, err := net.Dial("tcp", hostPort("::1", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a refused dial to be retried", 2*time.Second, func() bool {
		return counterValue(t, p, "scitunnel_proxy_dial_retries_total", map[string]string{"target": target}) >= 1
	})
	ln, err := net.Listen("tcp", target) // the peer is up now
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if s, err := ln.Accept(); err == nil {
			echo(s)
		}
	}()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
		t.Fatalf("through a target that came up late: %q, %v", got, err)
	}
	if n := counterValue(t, p, "scitunnel_proxy_dial_failures_total", map[string]string{"target": target}); n != 0 {
		t.Errorf("%v dial failures counted for a dial that succeeded on retry", n)
	}
}

// refusingAddr is a loopback address where nothing listens: a dial to it is refused.
func refusingAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestDialFailureIsCounted(t *testing.T) {
	target := refusingAddr(t)
	port := testutil.FreePort(t)
	p := startProxy(t, &config.Config{Tunnel: "t/dead", Role: config.Outbound, Protocol: config.TCP,
		Routes: []config.Route{{ListenPort: port, Target: target}}, DialTimeout: config.Duration{Duration: time.Second}})
	c, err := net.Dial("tcp", hostPort("::1", port))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && err == nil {
		t.Fatalf("read on a connection whose target is down: %v", err)
	}
	eventually(t, "the dial failure to be counted", 2*time.Second, func() bool {
		return counterValue(t, p, "scitunnel_proxy_dial_failures_total", map[string]string{"target": target}) == 1
	})
}
