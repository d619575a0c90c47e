package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/proxy/flowlabel"
	"github.com/scitunnel/scitunnel/dataplane/report"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
	"github.com/scitunnel/scitunnel/internal/testutil/netns"
	"github.com/scitunnel/scitunnel/test/wire"
)

// The wire test runs each tunnel end as its own process inside its own network namespace, as
// in two pods: a dialer's sockets land in the namespace of the thread that makes them, so one
// Go process cannot host both ends. The test binary re-executes itself as the proxy process.
const helperEnv = "SCITUNNEL_TEST_PROXY_CONFIG"

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		os.Exit(runHelperProxy(path))
	}
	os.Exit(m.Run())
}

func runHelperProxy(path string) int {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	p, err := New(cfg, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	admin, err := net.Listen("tcp", cfg.AdminAddress)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The admin package's handler cannot be imported here (it imports this package), and
	// the test needs only the status.
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/status", func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(p.Status()) })
	mux.HandleFunc("/v1/connections", func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(p.Connections()) })
	go func() { _ = http.Serve(admin, mux) }()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Println("ready")
	if err := p.Run(ctx); err != nil {
		return 1
	}
	return 0
}

// startProxyIn runs a proxy process inside n.
func startProxyIn(t *testing.T, n *netns.NS, cfg *config.Config) {
	t.Helper()
	data, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := n.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	cmd.Stderr = os.Stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	line := make([]byte, 6)
	if _, err := io.ReadFull(stdout, line); err != nil || string(line) != "ready\n" {
		t.Fatalf("proxy in %s did not start: %q %v", n.Name, line, err)
	}
}

// TestFlowLabelOnTheWire runs a tagged tunnel and an untagged one between two namespaces joined
// by a veth pair and captures the link. Every data segment of the tagged tunnel toward the
// Inbound end carries the tag (the Outbound end dials with the label); the segments coming back
// carry it too when the Inbound end's namespace reflects labels, by the sysctl or per listener,
// and /v1/status says which. The untagged tunnel's segments never carry the tag.
func TestFlowLabelOnTheWire(t *testing.T) {
	wire.RequirePrivileged(t)
	modes := []struct {
		name                   string
		reflect, consistency   string // sysctls in the Inbound end's namespace
		wantBack, wantApplied  bool
		wantReason, wantDetail string
	}{
		{"sysctl", "1", "1", true, true, flowlabel.ReasonMarked, "flowlabel_reflect is on"},
		{"listener", "0", "0", true, true, flowlabel.ReasonMarked, "IPV6_FL_F_REFLECT"},
		{"off", "0", "1", false, false, ReasonReflectionOff, "flowlabel_reflect is off"},
	}
	for i, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			id := fmt.Sprintf("st%d%d", os.Getpid()%100000, i)
			producerSide, consumerSide, inAddr := vethPair(t, id)
			producerSide.Run(t, "sysctl", "-qw", "net.ipv6.flowlabel_reflect="+m.reflect, "net.ipv6.flowlabel_consistency="+m.consistency)

			const n = 32 << 20
			var prod *producer
			var results chan [2]string
			producerSide.Do(t, func() { prod, results = hashingProducer(t, n) })

			pk := newTestPKI(t)
			tag := &config.Scitag{ExperimentID: 2, ActivityID: 16, Name: "atlas.Production_Output", Entropy: true}
			want, _ := scitag.Label(2, 16)
			tagged := wireTunnel{inPort: 5100, outPort: 6100, tag: tag, admin: 9100}
			untagged := wireTunnel{inPort: 5101, outPort: 6101, admin: 9101}
			outAdmin := 9200
			for _, tun := range []wireTunnel{tagged, untagged} {
				in := &config.Config{Tunnel: "wire/in", Role: config.Inbound, Scitag: tun.tag, AdminAddress: hostPort("::1", tun.admin),
					Routes: []config.Route{{ListenPort: tun.inPort, Target: prod.addr}}, TLS: pk.server.config()}
				outAdmin++
				out := &config.Config{Tunnel: "wire/out", Role: config.Outbound, Scitag: tun.tag, AdminAddress: hostPort("::1", outAdmin),
					Routes: []config.Route{{ListenPort: tun.outPort, Target: hostPort(inAddr.String(), tun.inPort)}}, TLS: pk.client.config()}
				out.TLS.ServerName = "localhost"
				startProxyIn(t, producerSide, in)
				startProxyIn(t, consumerSide, out)
			}

			var capture, local *wire.Capture
			producerSide.Do(t, func() {
				var err error
				if capture, err = wire.Start(id + "a"); err != nil {
					t.Fatal(err)
				}
				// The Inbound end's own dial to the producer, on the producer side's loopback.
				if local, err = wire.Start("lo"); err != nil {
					t.Fatal(err)
				}
			})
			for _, tun := range []*wireTunnel{&tagged, &untagged} {
				consumerSide.Do(t, func() { bothWays(t, hostPort("::1", tun.outPort), results, n) })
				tun.dialedFrom = map[netip.AddrPort]bool{}
				for _, c := range connectionsIn(t, producerSide, tun.admin).RecentEnded {
					tun.dialedFrom[netip.MustParseAddrPort(c.DialedLocal)] = true
				}
			}
			packets := capture.Stop()
			localPackets := local.Stop()
			prodPort := netip.MustParseAddrPort(prod.addr).Port()

			for _, tun := range []wireTunnel{tagged, untagged} {
				tun.check(t, countSegments(tun, packets, localPackets, inAddr, prodPort, want), want, m.wantBack)
			}

			// The Inbound end reports what the capture shows.
			st := statusIn(t, producerSide, tagged.admin)
			if st.FlowLabel.Applied != m.wantApplied || st.FlowLabel.Reason != m.wantReason || !strings.Contains(st.FlowLabel.Message, m.wantDetail) {
				t.Errorf("inbound /v1/status flowLabel = %+v, want applied=%v reason %s mentioning %q", st.FlowLabel, m.wantApplied, m.wantReason, m.wantDetail)
			}
		})
	}
}

type wireTunnel struct {
	inPort, outPort, admin int
	tag                    *config.Scitag
	dialedFrom             map[netip.AddrPort]bool // the inbound end's connections to the producer
}

// segmentCounts are a tunnel's captured data segments each way between the ends and toward
// the producer, and how many of them carry the tag's label.
type segmentCounts struct {
	toIn, toOut, taggedIn, taggedOut int
	toProducer, taggedToProducer     int
}

// countSegments counts tun's data segments in packets (the link between the ends, inAddr being
// the Inbound end's) and localPackets (the producer side's loopback), against the label want.
func countSegments(tun wireTunnel, packets, localPackets []wire.Packet, inAddr netip.Addr, prodPort uint16, want uint32) segmentCounts {
	var c segmentCounts
	for _, p := range packets {
		if (p.Src.Port() != uint16(tun.inPort) && p.Dst.Port() != uint16(tun.inPort)) || p.PayloadLen == 0 {
			continue
		}
		isTagged := p.FlowLabel&scitag.Mask == want
		if p.Dst.Addr() == inAddr {
			c.toIn++
			if isTagged {
				c.taggedIn++
			}
		} else {
			c.toOut++
			if isTagged {
				c.taggedOut++
			}
		}
	}
	// Which producer connection is this tunnel's: the inbound end reports it.
	for _, p := range localPackets {
		if p.Dst.Port() == prodPort && p.PayloadLen > 0 && tun.dialedFrom[p.Src] {
			c.toProducer++
			if p.FlowLabel&scitag.Mask == want {
				c.taggedToProducer++
			}
		}
	}
	return c
}

// check fails t unless the tunnel's segments carry the label want as they should: all of a
// tagged tunnel's toward the inbound end and the producer, and back only with wantBack (the
// Inbound end reflects labels); none of an untagged tunnel's.
func (tun wireTunnel) check(t *testing.T, c segmentCounts, want uint32, wantBack bool) {
	t.Helper()
	t.Logf("port %d: %d/%d data segments to the inbound end tagged, %d/%d back, %d/%d to the producer",
		tun.inPort, c.taggedIn, c.toIn, c.taggedOut, c.toOut, c.taggedToProducer, c.toProducer)
	if c.toProducer == 0 {
		t.Fatalf("port %d: captured no data segments toward the producer", tun.inPort)
	}
	if tun.tag != nil && c.taggedToProducer != c.toProducer {
		t.Errorf("toward the producer %d of %d data segments carry %s", c.taggedToProducer, c.toProducer, scitag.FormatLabel(want))
	}
	if tun.tag == nil && c.taggedToProducer != 0 {
		t.Errorf("untagged tunnel: %d data segments toward the producer carry the tag", c.taggedToProducer)
	}
	if c.toIn == 0 || c.toOut == 0 {
		t.Fatalf("port %d: captured %d data segments toward the inbound end and %d back; want both", tun.inPort, c.toIn, c.toOut)
	}
	if tun.tag == nil {
		if c.taggedIn+c.taggedOut != 0 {
			t.Errorf("untagged tunnel: %d of %d data segments carry the tag", c.taggedIn+c.taggedOut, c.toIn+c.toOut)
		}
		return
	}
	if c.taggedIn != c.toIn {
		t.Errorf("toward the inbound end %d of %d data segments carry %s", c.taggedIn, c.toIn, scitag.FormatLabel(want))
	}
	if wantBack && c.taggedOut != c.toOut {
		t.Errorf("back from the inbound end %d of %d data segments carry %s", c.taggedOut, c.toOut, scitag.FormatLabel(want))
	}
	if !wantBack && c.taggedOut != 0 {
		t.Errorf("without reflection %d of %d data segments back carry the tag", c.taggedOut, c.toOut)
	}
}

// vethPair makes two namespaces joined by a veth pair, the producer's side at fd00:5c17::1 and
// the consumer's at fd00:5c17::2.
func vethPair(t *testing.T, id string) (producerSide, consumerSide *netns.NS, inAddr netip.Addr) {
	t.Helper()
	producerSide = netns.New(t, id+"-in")
	consumerSide = netns.New(t, id+"-out")
	netns.Veth(t, producerSide, id+"a", "fd00:5c17::1/64", consumerSide, id+"b", "fd00:5c17::2/64")
	return producerSide, consumerSide, netip.MustParseAddr("fd00:5c17::1")
}

// statusIn reads /v1/status from a proxy's admin port inside n.
func statusIn(t *testing.T, n *netns.NS, port int) report.ProxyStatus {
	t.Helper()
	var st report.ProxyStatus
	getJSONIn(t, n, port, report.StatusPath, &st)
	return st
}

// connectionsIn reads /v1/connections from a proxy's admin port inside n.
func connectionsIn(t *testing.T, n *netns.NS, port int) Connections {
	t.Helper()
	var c Connections
	getJSONIn(t, n, port, "/v1/connections", &c)
	return c
}

// getJSONIn makes the connection on a thread in n, then runs HTTP over it from anywhere.
func getJSONIn(t *testing.T, n *netns.NS, port int, path string, v any) {
	t.Helper()
	var conn net.Conn
	n.Do(t, func() {
		var err error
		if conn, err = net.Dial("tcp", hostPort("::1", port)); err != nil {
			t.Fatal(err)
		}
	})
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil },
	}}
	resp, err := client.Get("http://admin" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
