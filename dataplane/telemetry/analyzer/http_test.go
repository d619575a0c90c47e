package analyzer

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/scitunnel/scitunnel/dataplane/firefly"
	"github.com/scitunnel/scitunnel/dataplane/report"
)

func get(t *testing.T, srv *httptest.Server, path string) []byte {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, b)
	}
	return b
}

func TestHTTP(t *testing.T) {
	a, clk := newTestAnalyzer(atlasDebug)
	ag := newAgent()
	for i := 0; i < 30; i++ {
		_ = a.Ingest(ag.datagram(100, 1500, frame(hostA, hostB, 65572, 40000, 5201), frame(hostB, hostA, 0x12345, 5201, 40000)))
		clk.advance(100 * time.Millisecond)
	}
	_ = a.Ingest([]byte("garbage data"))
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.Collector())
	srv := httptest.NewServer(a.Handler(reg))
	defer srv.Close()

	if got := string(get(t, srv, "/healthz")); got != "ok\n" {
		t.Errorf("healthz %q", got)
	}
	var tags report.TagTotals
	if err := json.Unmarshal(get(t, srv, report.TagsPath), &tags); err != nil {
		t.Fatal(err)
	}
	if len(tags.Tags) != 2 || tags.Tags[0].Tag != "atlas.Debug" || tags.Tags[0].Samples != 30 || tags.Tags[1].Tag != "unknown" ||
		tags.WindowSeconds != 10 || tags.Updated.IsZero() {
		t.Errorf("tags %+v", tags)
	}
	if want := 8.0 * 30 * 1500 * 100 / 3; tags.Tags[0].BitsPerSecond < want*0.999 || tags.Tags[0].BitsPerSecond > want*1.001 {
		t.Errorf("rate %v, want %v", tags.Tags[0].BitsPerSecond, want)
	}
	var flows FlowReport
	if err := json.Unmarshal(get(t, srv, FlowsPath+"?limit=1"), &flows); err != nil {
		t.Fatal(err)
	}
	if len(flows.Flows) != 1 {
		t.Errorf("limit ignored: %+v", flows)
	}
	var agents []AgentStatus
	if err := json.Unmarshal(get(t, srv, AgentsPath), &agents); err != nil || len(agents) != 1 || agents[0].Datagrams != 30 {
		t.Errorf("agents %+v %v", agents, err)
	}
	var health Health
	if err := json.Unmarshal(get(t, srv, HealthPath), &health); err != nil || health.Malformed != 1 || health.FlowSamples != 60 {
		t.Errorf("health %+v %v", health, err)
	}
	metrics := string(get(t, srv, MetricsPath))
	for _, want := range []string{
		`scitag_networks_bps{dst="fd00::2",scitag="atlas.Debug",src="fd00::1"} 1.2e+07`,
		`scitunnel_sflow_tag_bits_per_second{scitag="unknown"} 1.2e+07`,
		`scitunnel_sflow_datagrams_total 30`,
		`scitunnel_sflow_malformed_datagrams_total{reason="version"} 1`,
		`scitunnel_sflow_samples_total{type="flow"} 60`,
		`scitunnel_sflow_agent_datagrams_total{agent="192.0.2.1"} 30`,
		`scitunnel_sflow_tag_error_percent{scitag="atlas.Debug"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(metrics, `scitag_networks_bps{dst="fd00::1"`) {
		t.Error("untagged flow exported as scitag_networks_bps")
	}
}

// TestServeUDP sends sFlow over IPv4 and IPv6 to one wildcard socket, and a firefly to the
// firefly socket.
func TestServeUDP(t *testing.T) {
	a, _ := newTestAnalyzer(atlasDebug)
	conn, err := ListenSFlow(":0")
	if err != nil {
		t.Fatal(err)
	}
	ff, err := ListenFireflies("[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- a.ServeSFlow(ctx, conn, log) }()
	go func() { done <- a.ServeFireflies(ctx, ff, log) }()
	port := conn.LocalAddr().(*net.UDPAddr).Port
	ag := newAgent()
	for _, host := range []string{"127.0.0.1", "::1"} {
		c, err := net.Dial("udp", net.JoinHostPort(host, itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(ag.datagram(10, 1000, frame(hostA, hostB, 65572, 1, 2))); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	c, _ := net.Dial("udp", ff.LocalAddr().String())
	line, _ := firefly.Frame(firefly.Build(firefly.Flow{Src: netip.AddrPortFrom(hostA, 1), Dst: netip.AddrPortFrom(hostB, 2), Protocol: "tcp", ExperimentID: 2, ActivityID: 16}, "start", time.Time{}, time.Now(), nil, ""), "h", time.Now())
	_, _ = c.Write(line)
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for a.Health().Datagrams < 2 || a.Health().Fireflies < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("health %+v", a.Health())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestRxqOverflow(t *testing.T) {
	if _, ok := rxqOverflow(nil); ok {
		t.Error("empty control data parsed")
	}
	if _, ok := rxqOverflow([]byte{1, 2, 3}); ok {
		t.Error("short control data parsed")
	}
	oob := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SO_RXQ_OVFL
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(oob[unix.CmsgLen(0):], 7)
	if n, ok := rxqOverflow(oob); !ok || n != 7 {
		t.Errorf("rxqOverflow = %d, %v; want 7", n, ok)
	}
}
