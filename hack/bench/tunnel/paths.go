package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/scitunnel/scitunnel/internal/testutil"
)

// pathDef is one way of carrying a stream from an entry port to a target.
type pathDef struct {
	name  string
	needs []string // executables on PATH
	// launch starts the path's processes toward target ("[::1]:port") and returns the entry
	// port clients connect to and every port that must be listening before traffic starts.
	launch func(b *bench, target, tag string) (entry int, listening []int, procs []*exec.Cmd, err error)
}

var paths = []pathDef{
	{name: "direct", launch: launchDirect},
	{name: "scitunnel-tls", launch: launchScitunnel("TLS")},
	{name: "scitunnel-tcp", launch: launchScitunnel("TCP")},
	{name: "tls+sampler", launch: launchScitunnelSampled},
	{name: "stunnel4", needs: []string{"stunnel4"}, launch: launchStunnel},
	{name: "haproxy", needs: []string{"haproxy"}, launch: launchHaproxy},
	{name: "socat", needs: []string{"socat"}, launch: launchSocat},
}

// loopbackAnyPort is where the benchmark's servers and admin endpoints listen: IPv6 loopback,
// a port the kernel picks.
const loopbackAnyPort = "[::1]:0"

func allPathNames() []string {
	names := make([]string, 0, len(paths))
	for _, p := range paths {
		names = append(names, p.name)
	}
	return names
}

func pathByName(name string) (pathDef, bool) {
	for _, p := range paths {
		if p.name == name {
			return p, true
		}
	}
	return pathDef{}, false
}

// running is a started path.
type running struct {
	entry string
	procs []*exec.Cmd
}

func (b *bench) start(p pathDef, target, tag string) (*running, error) {
	entry, listening, procs, err := p.launch(b, target, tag)
	r := &running{entry: "[::1]:" + strconv.Itoa(entry), procs: procs}
	if err != nil {
		r.stop()
		return nil, err
	}
	for _, port := range listening {
		if err := waitListening(port, 10*time.Second); err != nil {
			r.stop()
			return nil, fmt.Errorf("%s: port %d: %w (logs in %s)", p.name, port, err, b.work)
		}
	}
	for _, c := range procs {
		if c.ProcessState != nil {
			r.stop()
			return nil, fmt.Errorf("%s: %s exited: %s", p.name, c.Path, c.ProcessState)
		}
	}
	return r, nil
}

// cpu is the CPU time, in seconds, the path's processes and their children have used so far.
func (r *running) cpu() float64 {
	var total float64
	for _, c := range r.procs {
		if c.Process != nil {
			total += processTreeCPU(c.Process.Pid)
		}
	}
	return total
}

func (r *running) stop() {
	for _, c := range r.procs {
		if c.Process != nil {
			_ = c.Process.Signal(os.Interrupt)
		}
	}
	for _, c := range r.procs {
		if c.Process == nil {
			continue
		}
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
}

// spawn starts a process with its output in the work directory.
func (b *bench) spawn(logName string, env []string, name string, args ...string) (*exec.Cmd, error) {
	log, err := os.Create(filepath.Join(b.work, logName+".log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return cmd, nil
}

func launchDirect(_ *bench, target, _ string) (int, []int, []*exec.Cmd, error) {
	_, port, err := splitPort(target)
	return port, nil, nil, err
}

// launchScitunnel runs our pair: the outbound end (entry, plain) carries each connection over
// mutual TLS (or plain TCP) to the inbound end, which forwards to the target. Tagged, as pods
// run it: every dialed connection goes through the flow-label dialer.
func launchScitunnel(protocol string) func(*bench, string, string) (int, []int, []*exec.Cmd, error) {
	return func(b *bench, target, tag string) (int, []int, []*exec.Cmd, error) {
		ports, err := testutil.FreePorts(2)
		if err != nil {
			return 0, nil, nil, err
		}
		entry, inner := ports[0], ports[1]
		name := "scitunnel-" + protocol + "-" + tag
		inArgs := []string{"inbound", "--protocol", protocol, "--listen", strconv.Itoa(inner), "--target", target,
			"--listen-address", "::1", "--admin", loopbackAnyPort, "--scitag", "2/16"}
		outArgs := []string{"outbound", "--protocol", protocol, "--listen", strconv.Itoa(entry),
			"--remote", "[::1]:" + strconv.Itoa(inner), "--listen-address", "::1", "--admin", loopbackAnyPort, "--scitag", "2/16"}
		if protocol == "TLS" {
			inArgs = append(inArgs, "--cert", b.certs.serverCert, "--key", b.certs.serverKey, "--ca", b.certs.ca, "--allow-san", clientID)
			outArgs = append(outArgs, "--cert", b.certs.clientCert, "--key", b.certs.clientKey, "--ca", b.certs.ca, "--server-name", "localhost")
		}
		in, err := b.spawn(name+"-in", b.scitunnelEnv, b.scitunnel, inArgs...)
		if err != nil {
			return 0, nil, nil, err
		}
		out, err := b.spawn(name+"-out", b.scitunnelEnv, b.scitunnel, outArgs...)
		if err != nil {
			return 0, nil, []*exec.Cmd{in}, err
		}
		return entry, []int{entry, inner}, []*exec.Cmd{in, out}, nil
	}
}

// launchScitunnelSampled is the TLS pair with the pod's sFlow sidecar beside it (startSidecar).
// Its CPU counts as the path's. Sampling needs CAP_NET_RAW: without it the path is skipped.
func launchScitunnelSampled(b *bench, target, tag string) (int, []int, []*exec.Cmd, error) {
	entry, listening, procs, err := launchScitunnel("TLS")(b, target, tag)
	if err != nil {
		return entry, listening, procs, err
	}
	sidecar, err := b.startSidecar(tag)
	if sidecar != nil {
		procs = append(procs, sidecar)
	}
	return entry, listening, procs, err
}

// startSidecar runs the pod's sFlow sidecar: the sampler at 1-in-1000 on loopback (where the
// pairs' traffic flows), sending to its own analyzer. It returns once the sampler is on.
func (b *bench) startSidecar(tag string) (*exec.Cmd, error) {
	logName := "sflow-" + tag
	args := append([]string{"sflow", "--interfaces", "lo", "--sampling-rate", "1000",
		"--assigned-tags", "2.16", "--listen", loopbackAnyPort, "--http", loopbackAnyPort, "--polling-interval", "20s"}, b.sidecarArgs...)
	sidecar, err := b.spawn(logName, b.scitunnelEnv, b.scitunnel, args...)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(b.work, logName+".log")
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		log, _ := os.ReadFile(logPath)
		switch {
		case strings.Contains(string(log), `"msg":"sampler on"`):
			return sidecar, nil
		case strings.Contains(string(log), `"msg":"sampler off`):
			return sidecar, fmt.Errorf("the sampler did not start (run as root for CAP_NET_RAW; %s)", logPath)
		}
	}
	return sidecar, fmt.Errorf("the sFlow sidecar did not report its sampler (%s)", logPath)
}

// launchStunnel runs two stunnel4 processes as in the team's reference baseline: a client-mode
// one taking plain connections and a server-mode one terminating TLS.
func launchStunnel(b *bench, target, tag string) (int, []int, []*exec.Cmd, error) {
	ports, err := testutil.FreePorts(2)
	if err != nil {
		return 0, nil, nil, err
	}
	entry, inner := ports[0], ports[1]
	host, tport, _ := splitPort(target)
	srv := fmt.Sprintf("foreground = yes\npid =\n[srv]\naccept = ::1:%d\nconnect = %s:%d\ncert = %s\nkey = %s\n",
		inner, host, tport, b.certs.serverCert, b.certs.serverKey)
	cli := fmt.Sprintf("foreground = yes\npid =\n[cli]\nclient = yes\naccept = ::1:%d\nconnect = ::1:%d\n", entry, inner)
	srvConf := filepath.Join(b.work, "stunnel-srv-"+tag+".conf")
	cliConf := filepath.Join(b.work, "stunnel-cli-"+tag+".conf")
	if err := os.WriteFile(srvConf, []byte(srv), 0o600); err != nil {
		return 0, nil, nil, err
	}
	if err := os.WriteFile(cliConf, []byte(cli), 0o600); err != nil {
		return 0, nil, nil, err
	}
	s, err := b.spawn("stunnel-srv-"+tag, nil, "stunnel4", srvConf)
	if err != nil {
		return 0, nil, nil, err
	}
	c, err := b.spawn("stunnel-cli-"+tag, nil, "stunnel4", cliConf)
	if err != nil {
		return 0, nil, []*exec.Cmd{s}, err
	}
	return entry, []int{entry, inner}, []*exec.Cmd{s, c}, nil
}

// launchHaproxy runs one haproxy holding both ends, as the reference baseline does.
func launchHaproxy(b *bench, target, tag string) (int, []int, []*exec.Cmd, error) {
	ports, err := testutil.FreePorts(2)
	if err != nil {
		return 0, nil, nil, err
	}
	entry, inner := ports[0], ports[1]
	cfg := fmt.Sprintf(`global
  maxconn 1000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fcli
  bind [::1]:%d
  default_backend bcli
backend bcli
  server s1 [::1]:%d ssl verify none
frontend fsrv
  bind [::1]:%d ssl crt %s
  default_backend bsrv
backend bsrv
  server s2 %s
`, entry, inner, inner, b.certs.serverBundle, target)
	path := filepath.Join(b.work, "haproxy-"+tag+".cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return 0, nil, nil, err
	}
	h, err := b.spawn("haproxy-"+tag, nil, "haproxy", "-db", "-f", path)
	if err != nil {
		return 0, nil, nil, err
	}
	return entry, []int{entry, inner}, []*exec.Cmd{h}, nil
}

// launchSocat runs a one-hop plain relay, forking a child per connection.
func launchSocat(b *bench, target, tag string) (int, []int, []*exec.Cmd, error) {
	ports, err := testutil.FreePorts(1)
	if err != nil {
		return 0, nil, nil, err
	}
	s, err := b.spawn("socat-"+tag, nil, "socat", fmt.Sprintf("TCP6-LISTEN:%d,bind=[::1],fork,reuseaddr", ports[0]), "TCP6:"+target)
	if err != nil {
		return 0, nil, nil, err
	}
	return ports[0], []int{ports[0]}, []*exec.Cmd{s}, nil
}
