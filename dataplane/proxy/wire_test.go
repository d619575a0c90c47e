package proxy

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Println("ready")
	if err := p.Run(ctx); err != nil {
		return 1
	}
	return 0
}

// netns is a network namespace made for one test and deleted after it.
type netns string

func newNetns(t *testing.T, name string) netns {
	t.Helper()
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", name).Run() })
	n := netns(name)
	n.run(t, "ip", "link", "set", "lo", "up")
	return n
}

func (n netns) run(t *testing.T, args ...string) {
	t.Helper()
	run(t, append([]string{"ip", "netns", "exec", string(n)}, args...)...)
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// do runs f on a thread moved into the namespace; sockets f creates stay in it.
func (n netns) do(t *testing.T, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	target, err := os.Open(filepath.Join("/var/run/netns", string(n)))
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			panic("cannot return to the test's network namespace: " + err.Error())
		}
	}()
	f()
}

// startProxyIn runs a proxy process inside n.
func (n netns) startProxyIn(t *testing.T, cfg *config.Config) {
	t.Helper()
	data, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", string(n), os.Args[0])
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
		t.Fatalf("proxy in %s did not start: %q %v", n, line, err)
	}
}

// TestFlowLabelOnTheWire runs a tagged tunnel and an untagged one between two namespaces joined
// by a veth pair and captures the link: every data segment of the tagged tunnel carries the
// tag's bits in both directions (the Outbound end dials with the label, the Inbound end
// reflects it), and the untagged tunnel's segments do not.
func TestFlowLabelOnTheWire(t *testing.T) {
	wire.RequirePrivileged(t)
	id := fmt.Sprintf("st%d", os.Getpid()%100000)
	producerSide := newNetns(t, id+"-in")
	consumerSide := newNetns(t, id+"-out")
	vIn, vOut := id+"a", id+"b"
	run(t, "ip", "link", "add", vIn, "netns", string(producerSide), "type", "veth", "peer", "name", vOut, "netns", string(consumerSide))
	producerSide.run(t, "ip", "addr", "add", "fd00:5c17::1/64", "dev", vIn, "nodad")
	consumerSide.run(t, "ip", "addr", "add", "fd00:5c17::2/64", "dev", vOut, "nodad")
	producerSide.run(t, "ip", "link", "set", vIn, "up")
	consumerSide.run(t, "ip", "link", "set", vOut, "up")
	// What the operator sets in the Inbound pod's securityContext.
	producerSide.run(t, "sysctl", "-qw", "net.ipv6.flowlabel_reflect=1")

	const n = 64 << 20
	var prod *producer
	var results chan [2]string
	producerSide.do(t, func() { prod, results = hashingProducer(t, n) })

	pk := newTestPKI(t)
	tag := &config.Scitag{ExperimentID: 2, ActivityID: 16, Name: "atlas.Production_Output"}
	want, _ := scitag.Label(2, 16)
	tagged := wireTunnel{inPort: 5100, outPort: 6100, tag: tag}
	untagged := wireTunnel{inPort: 5101, outPort: 6101}
	for _, tun := range []wireTunnel{tagged, untagged} {
		in := &config.Config{Tunnel: "wire/in", Role: config.Inbound, Scitag: tun.tag,
			Routes: []config.Route{{ListenPort: tun.inPort, Target: prod.addr}}, TLS: pk.server.config()}
		in.TLS.ServerName = ""
		out := &config.Config{Tunnel: "wire/out", Role: config.Outbound, Scitag: tun.tag,
			Routes: []config.Route{{ListenPort: tun.outPort, Target: hostPort("fd00:5c17::1", tun.inPort)}}, TLS: pk.client.config()}
		out.TLS.ServerName = "localhost"
		producerSide.startProxyIn(t, in)
		consumerSide.startProxyIn(t, out)
	}

	var capture *wire.Capture
	producerSide.do(t, func() {
		var err error
		if capture, err = wire.Start(vIn); err != nil {
			t.Fatal(err)
		}
	})
	for _, tun := range []wireTunnel{tagged, untagged} {
		consumerSide.do(t, func() { bothWays(t, hostPort("::1", tun.outPort), prod, results, n) })
	}
	packets := capture.Stop()

	tunnelPort := func(p wire.Packet, port uint16) bool { return p.Src.Port() == port || p.Dst.Port() == port }
	inbound := netip.MustParseAddr("fd00:5c17::1")
	for _, tun := range []wireTunnel{tagged, untagged} {
		var toIn, toOut, taggedSegs int
		for _, p := range packets {
			if !tunnelPort(p, uint16(tun.inPort)) || p.PayloadLen == 0 {
				continue
			}
			if p.Dst.Addr() == inbound {
				toIn++
			} else {
				toOut++
			}
			if p.FlowLabel&scitag.Mask == want {
				taggedSegs++
			}
		}
		if toIn == 0 || toOut == 0 {
			t.Fatalf("port %d: captured %d data segments toward the inbound end and %d back; want both", tun.inPort, toIn, toOut)
		}
		if tun.tag != nil && taggedSegs != toIn+toOut {
			t.Errorf("tagged tunnel: %d of %d data segments carry %s (%d toward the inbound end, %d back)",
				taggedSegs, toIn+toOut, scitag.FormatLabel(want), toIn, toOut)
		}
		if tun.tag == nil && taggedSegs != 0 {
			t.Errorf("untagged tunnel: %d of %d data segments carry the tag", taggedSegs, toIn+toOut)
		}
		t.Logf("port %d: %d data segments to the inbound end, %d back, %d with the tag", tun.inPort, toIn, toOut, taggedSegs)
	}
}

type wireTunnel struct {
	inPort, outPort int
	tag             *config.Scitag
}
