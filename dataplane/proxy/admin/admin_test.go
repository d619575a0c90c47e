package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/proxy"
	"github.com/scitunnel/scitunnel/dataplane/proxy/flowlabel"
	"github.com/scitunnel/scitunnel/dataplane/report"
	"github.com/scitunnel/scitunnel/internal/testutil"
)

// sink is a producer that reads everything and answers with a fixed number of bytes.
func sink(t *testing.T, answer int) string {
	t.Helper()
	return testutil.ServeTCP(t, "[::1]:0", func(c net.Conn) {
		defer c.Close()
		_, _ = c.Write(make([]byte, answer))
		_, _ = io.Copy(io.Discard, c)
	})
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	code, body := get(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, body)
	}
}

// waitFor polls cond until it holds, failing t with what it last saw after a deadline generous
// enough for a loaded machine.
func waitFor(t *testing.T, what string, cond func() bool, last func() string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30 s for %s; last: %s", what, last())
		}
	}
}

// waitReadyz polls /readyz until it answers want, failing t with notYet after 5 s.
func waitReadyz(t *testing.T, base string, want int, notYet string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for code, _ := get(t, base+"/readyz"); code != want; code, _ = get(t, base+"/readyz") {
		if time.Now().After(deadline) {
			t.Fatal(notYet)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// servedProxy is a proxy.Proxy running with its admin endpoints.
type servedProxy struct {
	p      *proxy.Proxy
	base   string        // the admin endpoints' URL
	cancel func()        // what SIGTERM does
	done   chan struct{} // closed when Run has returned
}

// serveProxy runs a proxy with cfg and its admin endpoints until the test ends.
func serveProxy(t *testing.T, cfg *config.Config) *servedProxy {
	t.Helper()
	p, err := proxy.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Listen("[::1]:0", p)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	ctx, cancel := context.WithCancel(context.Background())
	s := &servedProxy{p: p, base: "http://" + srv.Addr().String(), cancel: cancel, done: make(chan struct{})}
	go func() {
		if err := p.Run(ctx); err != nil {
			t.Error(err)
		}
		close(s.done)
	}()
	// Registered after the server's Shutdown, so run before it: the endpoints outlive the drain.
	t.Cleanup(func() { cancel(); <-s.done })
	return s
}

// checkConnections waits for /v1/connections to show the exact counts of the one connection c,
// then checks the 5-tuples of both legs, its flow label and the tag totals.
func checkConnections(t *testing.T, base string, c net.Conn, producer string, up, down uint64) {
	t.Helper()
	// The counts reach the tracker after the bytes reach their reader (a splice round returns
	// first), so on a loaded machine they can trail the consumer's read: wait for both
	// directions and the tag totals.
	var conns proxy.Connections
	countsIn := func(c proxy.Connections) bool {
		tb := c.Tags["atlas.Production_Output"]
		return len(c.Active) == 1 && c.Active[0].ToProducer == up && c.Active[0].ToConsumer == down &&
			tb.ToProducer == up && tb.ToConsumer == down
	}
	waitFor(t, fmt.Sprintf("/v1/connections to show %d bytes to the producer and %d to the consumer", up, down), func() bool {
		getJSON(t, base+ConnectionsPath, &conns)
		return countsIn(conns)
	}, func() string { return fmt.Sprintf("%+v", conns) })
	a := conns.Active[0]
	if a.Protocol != "tcp" || a.Scitag != "atlas.Production_Output" ||
		a.AcceptedRemote != c.LocalAddr().String() || a.DialedRemote != producer || a.DialedLocal == "" {
		t.Fatalf("connection %+v; want consumer %s, producer %s, %d/%d bytes", a, c.LocalAddr(), producer, up, down)
	}
	if a.FlowLabel&0x3FEFC != 65600 {
		t.Fatalf("flow label %#x does not carry atlas.Production_Output", a.FlowLabel)
	}
	if tb := conns.Tags["atlas.Production_Output"]; tb.Connections != 1 {
		t.Fatalf("tag totals %+v", tb)
	}
}

// Every endpoint reports what a tagged TCP tunnel end actually did: health, readiness (and its
// loss at SIGTERM), exact bytes per tag and per connection with both connections' addresses,
// Prometheus series and the controller's status document.
func TestEndpointsReportTheTraffic(t *testing.T) {
	const up, down = 300_000, 123_456
	producer := sink(t, down)
	port := testutil.FreePort(t)
	cfg := &config.Config{Tunnel: "ns/t", Role: config.Outbound, Protocol: config.TCP, ListenAddress: "::1",
		Routes:       []config.Route{{ListenPort: port, Target: producer}},
		Scitag:       &config.Scitag{ExperimentID: 2, ActivityID: 16, Name: "atlas.Production_Output", Entropy: true},
		DrainTimeout: config.Duration{Duration: 10 * time.Second}}
	sp := serveProxy(t, cfg)
	base := sp.base

	if code, body := get(t, base+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	waitReadyz(t, base, http.StatusOK, "/readyz never became ready")

	c, err := net.Dial("tcp", net.JoinHostPort("::1", fmt.Sprint(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, up)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, down)); err != nil {
		t.Fatal(err)
	}

	// /v1/connections: exact counts and the 5-tuples of both legs.
	checkConnections(t, base, c, producer, up, down)

	// /metrics: the same bytes, by tag and direction.
	wantMetrics := []string{
		fmt.Sprintf(`scitunnel_proxy_bytes_total{direction="to_producer",scitag="atlas.Production_Output",tunnel="ns/t"} %d`, up),
		fmt.Sprintf(`scitunnel_proxy_bytes_total{direction="to_consumer",scitag="atlas.Production_Output",tunnel="ns/t"} %d`, down),
		`scitunnel_proxy_connections_active{protocol="tcp",scitag="atlas.Production_Output",tunnel="ns/t"} 1`,
		`scitunnel_proxy_connections_total{protocol="tcp",scitag="atlas.Production_Output",tunnel="ns/t"} 1`,
		"go_goroutines", "process_cpu_seconds_total",
	}
	var metrics string
	missing := func() []string {
		var out []string
		for _, want := range wantMetrics {
			if !strings.Contains(metrics, want) {
				out = append(out, want)
			}
		}
		return out
	}
	waitFor(t, "/metrics to show the connection's bytes", func() bool {
		_, metrics = get(t, base+"/metrics")
		return len(missing()) == 0
	}, func() string { return "missing " + strings.Join(missing(), ", ") })

	// /v1/status: what the controller reads.
	var st report.ProxyStatus
	getJSON(t, base+report.StatusPath, &st)
	if !st.Ready || st.Tunnel != "ns/t" || st.ActiveConnections != 1 || st.TotalConnections != 1 || st.FlowLabel.Label != 65600 {
		t.Fatalf("status %+v", st)
	}
	if last := sp.p.Connections().Active[0]; last.FlowLabel != 0 && (!st.FlowLabel.Applied || st.FlowLabel.Reason != flowlabel.ReasonMarked) {
		t.Fatalf("the dial was marked but the status says %+v", st.FlowLabel)
	}

	// SIGTERM: not ready any more while the open connection drains; the endpoint keeps serving.
	sp.cancel()
	waitReadyz(t, base, http.StatusServiceUnavailable, "/readyz still ready during the drain")
	getJSON(t, base+report.StatusPath, &st)
	if st.Ready || st.ActiveConnections != 1 {
		t.Fatalf("status during the drain %+v", st)
	}
	c.Close()
	select {
	case <-sp.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the last connection closed")
	}
}

// An IPv4 target cannot carry a flow label: the status says so with the reason the controller
// puts on its FlowLabelApplied condition, and the tunnel still works.
func TestStatusExplainsAnIPv4Path(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("x"))
			c.Close()
		}
	}()
	port := testutil.FreePort(t)
	p, err := proxy.New(&config.Config{Tunnel: "ns/v4", Role: config.Outbound, Protocol: config.TCP,
		Routes: []config.Route{{ListenPort: port, Target: ln.Addr().String()}},
		Scitag: &config.Scitag{ExperimentID: 2, ActivityID: 16}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		if err := p.Run(ctx); err != nil {
			t.Error(err)
		}
		close(done)
	}()
	defer func() { cancel(); <-done }()
	var c net.Conn
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, err = net.Dial("tcp", net.JoinHostPort("::1", fmt.Sprint(port))); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer c.Close()
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("the IPv4 path does not carry data: %v", err)
	}
	st := p.Status().FlowLabel
	if st.Applied || st.Reason != flowlabel.ReasonIPv4Path || !strings.Contains(st.Message, "IPv4") {
		t.Fatalf("flow label status %+v, want not applied with reason IPv4Path", st)
	}
}
