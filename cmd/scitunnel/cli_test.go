package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/proxy"
	"github.com/scitunnel/scitunnel/dataplane/report"
	"github.com/scitunnel/scitunnel/internal/testutil"
)

// The CLI tests run the real binary, built once, as a user would.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "scitunnel-cli-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "scitunnel")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building scitunnel: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is a finished command.
type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	done := make(chan struct{})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The exit code, read below from cmd.ProcessState, is the result: Wait's error adds nothing.
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("scitunnel %s did not exit (it should have refused to start)\nstderr: %s", strings.Join(args, " "), errOut.String())
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errOut.String()}
}

// started is a scitunnel process serving in the background.
type started struct {
	cmd    *exec.Cmd
	stderr *testutil.LockedBuffer
	done   chan struct{}
}

func startCLI(t *testing.T, args ...string) *started {
	t.Helper()
	cmd := exec.Command(binary, args...)
	s := &started{cmd: cmd, stderr: &testutil.LockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-s.done
		if t.Failed() {
			t.Logf("scitunnel %s stderr:\n%s", strings.Join(args, " "), s.stderr.String())
		}
	})
	return s
}

func port(p int) string { return strconv.Itoa(p) }

func waitHTTP(t *testing.T, url string) *http.Response {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			return resp
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp := waitHTTP(t, url)
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// echoServer is the producer: it echoes every connection.
func echoServer(t *testing.T, greeting string) string {
	t.Helper()
	return testutil.ServeTCP(t, "[::1]:0", func(c net.Conn) {
		defer c.Close()
		if greeting != "" {
			_, _ = c.Write([]byte(greeting))
		}
		_, _ = io.Copy(c, c)
	})
}

func TestHelpIsThereWithExamples(t *testing.T) {
	for _, cmd := range []string{"inbound", "outbound", "run"} {
		r := runCLI(t, cmd, "--help")
		help := r.stdout + r.stderr
		if r.code != 0 || !strings.Contains(help, "Example") || !strings.Contains(help, "scitunnel "+cmd) {
			t.Errorf("scitunnel %s --help: exit %d, no examples:\n%s", cmd, r.code, help)
		}
	}
	r := runCLI(t, "--help")
	for _, cmd := range []string{"inbound", "outbound", "run", "certs"} {
		if !strings.Contains(r.stderr, cmd) {
			t.Errorf("scitunnel --help does not list %s:\n%s", cmd, r.stderr)
		}
	}
}

// Each bad configuration exits non-zero with an error naming the flag or field, and leaves
// nothing listening.
func TestBadConfigurationNamesTheFieldAndBindsNothing(t *testing.T) {
	dir := t.TempDir()
	if r := runCLI(t, "certs", "--out", dir+"/pki", "--server-name", "localhost"); r.code != 0 {
		t.Fatalf("certs: %d %s", r.code, r.stderr)
	}
	tlsIn := []string{"--cert", dir + "/pki/server.crt", "--key", dir + "/pki/server.key", "--ca", dir + "/pki/ca.crt"}
	free1, free2 := testutil.FreePort(t), testutil.FreePort(t)
	taken, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port

	badJSON := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(badJSON, []byte(`{"version":1,"role":"Inbound","protocol":"TCP","routes":[{"listenPort":`+port(free1)+`,"target":"producer"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	unknownField := filepath.Join(dir, "typo.json")
	if err := os.WriteFile(unknownField, []byte(`{"version":1,"role":"Inbound","protocol":"TCP","routez":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		args  []string
		want  string
		ports []int // must be free afterwards
	}{
		{"no listen ports", []string{"inbound", "--target", "[::1]:1", "--protocol", "TCP"}, "--listen", nil},
		{"bad target", []string{"inbound", "--listen", port(free1), "--target", "nohost", "--protocol", "TCP"}, "--target", []int{free1}},
		{"port out of range", []string{"inbound", "--listen", "70000", "--target", "[::1]:1", "--protocol", "TCP"}, "--listen", nil},
		{"unknown scitag", []string{"inbound", "--listen", port(free1), "--target", "[::1]:1", "--protocol", "TCP", "--scitag", "atlas/NoSuchActivity"}, "--scitag", []int{free1}},
		{"TLS without certificates", []string{"inbound", "--listen", port(free1), "--target", "[::1]:1"}, "--cert", []int{free1}},
		{"missing key file", append([]string{"inbound", "--listen", port(free1), "--target", "[::1]:1"}, append(tlsIn[:2:2], "--key", dir+"/nope.key", "--ca", dir+"/pki/ca.crt")...), "tls.keyFile", []int{free1}},
		{"bad protocol", []string{"outbound", "--listen", port(free1), "--remote", "[::1]:" + port(free2), "--protocol", "SCTP"}, "--protocol", []int{free1}},
		{"port counts differ", []string{"outbound", "--listen", port(free1), "--remote", "[::1]:5100-5101", "--protocol", "TCP"}, "--remote", []int{free1}},
		{"datagram size", []string{"inbound", "--listen", port(free1), "--target", "[::1]:1", "--protocol", "UDP", "--udp-transport", "Plain", "--max-datagram", "70000"}, "--max-datagram", []int{free1}},
		{"second port taken", []string{"inbound", "--listen", port(free1) + "," + port(takenPort), "--target", "[::1]:1", "--protocol", "TCP", "--admin", "[::1]:0"}, "listen port " + port(takenPort), []int{free1}},
		{"admin port taken", []string{"inbound", "--listen", port(free1) + "," + port(free2), "--target", "[::1]:1", "--protocol", "TCP", "--admin", "[::]:" + port(takenPort)}, "--admin", []int{free1, free2}},
		{"config file field", []string{"run", "--config", badJSON}, "routes[0].target", []int{free1}},
		{"config file typo", []string{"run", "--config", unknownField}, "routez", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runCLI(t, c.args...)
			if r.code == 0 {
				t.Fatalf("exit 0; want a refusal naming %s", c.want)
			}
			if !strings.Contains(r.stderr, c.want) {
				t.Fatalf("error does not name %q:\n%s", c.want, r.stderr)
			}
			if strings.Contains(r.stderr, "tunnel end up") {
				t.Fatalf("started serving before failing:\n%s", r.stderr)
			}
			for _, p := range c.ports {
				ln, err := net.Listen("tcp", "[::]:"+port(p))
				if err != nil {
					t.Fatalf("port %d still bound after the refusal: %v", p, err)
				}
				ln.Close()
			}
		})
	}
}

// An outbound and an inbound end started from flags carry data both ways, report it at their
// admin endpoints, and on SIGTERM stop accepting but let the open connection finish.
func TestInboundOutboundEndToEndAndDrain(t *testing.T) {
	dir := t.TempDir()
	if r := runCLI(t, "certs", "--out", dir, "--server-name", "localhost", "--client-id", "spiffe://test/consumer"); r.code != 0 {
		t.Fatalf("certs: %s", r.stderr)
	}
	producer := echoServer(t, "")
	inPorts := []int{testutil.FreePort(t), testutil.FreePort(t)}
	outPorts := []int{testutil.FreePort(t), testutil.FreePort(t)}
	inAdmin, outAdmin := testutil.FreePort(t), testutil.FreePort(t)
	startCLI(t, "inbound", "--listen", port(inPorts[0])+","+port(inPorts[1]), "--target", producer,
		"--cert", dir+"/server.crt", "--key", dir+"/server.key", "--ca", dir+"/ca.crt", "--allow-san", "spiffe://test/consumer",
		"--scitag", "atlas/Production_Output", "--admin", "[::1]:"+port(inAdmin), "--listen-address", "::1")
	out := startCLI(t, "outbound", "--listen", port(outPorts[0])+","+port(outPorts[1]),
		"--remote", "[::1]:"+port(inPorts[0])+","+port(inPorts[1]), "--server-name", "localhost",
		"--cert", dir+"/client.crt", "--key", dir+"/client.key", "--ca", dir+"/ca.crt",
		"--scitag", "atlas/Production_Output", "--admin", "[::1]:"+port(outAdmin), "--listen-address", "::1", "--drain-timeout", "20s")
	waitHTTP(t, fmt.Sprintf("http://[::1]:%d/readyz", inAdmin)).Body.Close()
	waitHTTP(t, fmt.Sprintf("http://[::1]:%d/readyz", outAdmin)).Body.Close()

	var conns []net.Conn
	for _, p := range outPorts {
		c, err := net.Dial("tcp", "[::1]:"+port(p))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
		echoCheck(t, c, "hello through port "+port(p))
	}
	var status report.ProxyStatus
	getJSON(t, fmt.Sprintf("http://[::1]:%d%s", outAdmin, report.StatusPath), &status)
	if status.ActiveConnections != 2 || status.FlowLabel.Label != 65600 || status.Tunnel != "cli/outbound" {
		t.Fatalf("outbound status %+v", status)
	}
	var inConns proxy.Connections
	getJSON(t, fmt.Sprintf("http://[::1]:%d/v1/connections", inAdmin), &inConns)
	if len(inConns.Active) != 2 || inConns.Active[0].PeerIdentity != "spiffe://test/consumer" || inConns.Active[0].Scitag != "atlas.Production_Output" {
		t.Fatalf("inbound connections %+v", inConns)
	}
	resp := waitHTTP(t, fmt.Sprintf("http://[::1]:%d/metrics", inAdmin))
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `scitunnel_proxy_connections_active{protocol="tls",scitag="atlas.Production_Output",tunnel="cli/inbound"} 2`) {
		t.Fatalf("inbound metrics lack the two active connections:\n%s", metrics)
	}

	// SIGTERM: new connections are refused, open ones carry on until they close.
	if err := out.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "[::1]:"+port(outPorts[0]), 200*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the outbound end still accepts after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	echoCheck(t, conns[0], "still carried during the drain")
	select {
	case <-out.done:
		t.Fatal("the outbound end exited with connections open")
	case <-time.After(300 * time.Millisecond):
	}
	for _, c := range conns {
		c.Close()
	}
	select {
	case <-out.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the outbound end did not exit after its connections closed")
	}
	if code := out.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d after the drain", code)
	}
}

func echoCheck(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo of %q: %q, %v", msg, buf, err)
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
}

// configMount is a config.json mounted as the kubelet mounts a ConfigMap: the file is a symlink
// through "..data", which an update renames over atomically.
type configMount struct {
	t            *testing.T
	dir          string
	entry, admin int
}

func newConfigMount(t *testing.T, target string) *configMount {
	m := &configMount{t: t, dir: t.TempDir(), entry: testutil.FreePort(t), admin: testutil.FreePort(t)}
	m.write("1", target)
	if err := os.Symlink("..data/config.json", filepath.Join(m.dir, "config.json")); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *configMount) write(version, target string) {
	m.t.Helper()
	doc := fmt.Sprintf(`{"version":1,"tunnel":"t/reload","role":"Outbound","protocol":"TCP","adminAddress":"[::1]:%d",
		"routes":[{"listenPort":%d,"target":%q}]}`, m.admin, m.entry, target)
	data := filepath.Join(m.dir, "..data-"+version)
	if err := os.MkdirAll(data, 0o755); err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "config.json"), []byte(doc), 0o644); err != nil {
		m.t.Fatal(err)
	}
	// The kubelet's atomic update: a new directory, then one rename of the ..data symlink.
	if err := os.Symlink(filepath.Base(data), filepath.Join(m.dir, "..data.tmp")); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(m.dir, "..data.tmp"), filepath.Join(m.dir, "..data")); err != nil {
		m.t.Fatal(err)
	}
}

func (m *configMount) path() string { return filepath.Join(m.dir, "config.json") }

// `run --config --watch-config` (a bare host) applies a changed file to new connections, here
// one changed as the kubelet changes a ConfigMap (the symlink swap); open connections keep
// their target.
func TestRunWatchConfigAppliesConfigFileChanges(t *testing.T) {
	a, b := echoServer(t, "a"), echoServer(t, "b")
	m := newConfigMount(t, a)
	startCLI(t, "run", "--config", m.path(), "--watch-config")
	waitHTTP(t, fmt.Sprintf("http://[::1]:%d/readyz", m.admin)).Body.Close()

	first := greeting(t, m.entry)
	if first.got != "a" {
		t.Fatalf("before the change: %q", first.got)
	}
	m.write("2", b)
	deadline := time.Now().Add(15 * time.Second)
	for {
		g := greeting(t, m.entry)
		g.c.Close()
		if g.got == "b" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new connections still reach the old target 15 s after the change")
		}
		time.Sleep(200 * time.Millisecond)
	}
	echoCheck(t, first.c, "the open connection keeps its producer")
	first.c.Close()
}

// Without --watch-config, as the proxy pods run, `run` keeps the configuration it started with:
// in a cluster a configuration change rolls the pods instead.
func TestRunKeepsItsConfigurationWithoutWatchConfig(t *testing.T) {
	a, b := echoServer(t, "a"), echoServer(t, "b")
	m := newConfigMount(t, a)
	startCLI(t, "run", "--config", m.path())
	waitHTTP(t, fmt.Sprintf("http://[::1]:%d/readyz", m.admin)).Body.Close()
	m.write("2", b)
	time.Sleep(7 * time.Second) // two of --watch-config's 3 s polls
	g := greeting(t, m.entry)
	g.c.Close()
	if g.got != "a" {
		t.Fatalf("a new connection reached %q after the file changed; want the starting target", g.got)
	}
}

type greeted struct {
	c   net.Conn
	got string
}

func greeting(t *testing.T, p int) greeted {
	t.Helper()
	c, err := net.Dial("tcp", "[::1]:"+port(p))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	return greeted{c: c, got: string(buf)}
}
