package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scitunnel/scitunnel/dataplane/report"
	"github.com/scitunnel/scitunnel/internal/testutil/netns"
)

func TestSflowFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		// The flag's problem is reported under the flag's name (with the value given).
		{[]string{"sflow", "--assigned-tags", "atlas"}, `--assigned-tags: "atlas" is not`},
		{[]string{"sflow", "--sampling-rate", "-1"}, "--sampling-rate: is -1"},
		{[]string{"sflow", "--collectors", "ok:6343,no-port"}, `--collectors: "no-port" is not host:port`},
		{[]string{"sflow", "--agent-address", "pod"}, `--agent-address: "pod" is not an IP address`},
		{[]string{"sflow", "--allowed-agents", "10.0.0.0/8,switch-1"}, `--allowed-agents: "switch-1" is neither an IP address nor a CIDR`},
		{[]string{"sflow", "--header-bytes", "payload"}, `--header-bytes: "payload" is neither a byte count nor "transport"`},
		{[]string{"sflow", "--header-bytes", "16"}, "--header-bytes: is 16, must be 64..1024"},
		{[]string{"sflow", "--assigned-tags", "2.16,2.64"}, "--assigned-tags: activity id 64 out of range"},
		{[]string{"sflow", "--config", "/nonexistent.json"}, "/nonexistent.json"},
		{[]string{"sflow", "extra"}, "unexpected arguments"},
	} {
		r := runCLI(t, c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, r.code, r.stderr, c.want)
		}
	}
	if r := runCLI(t, "sflow", "--help"); r.code != 0 || !strings.Contains(r.stderr, "--assigned-tags") {
		t.Errorf("help: %d %q", r.code, r.stderr)
	}
}

// sidecarRun is a `scitunnel sflow` process started by startSidecar.
type sidecarRun struct {
	cmd             *exec.Cmd
	sflow, http     string // where it serves
	saidNeedsNetRaw bool   // it logged that the sampler needs NET_RAW
	saidSamplerOn   bool   // it logged that the sampler runs
}

// startSidecar runs the sidecar from a copy of the binary (the shared one sits in a private
// directory), as uid 65534 when the test is root, with the tag 2.16 as its configuration's scitag
// (which the analyzer attributes without a firefly) and the registry file given, and waits
// until it serves. netRawFileCap gives the copy the file capability the
// data-plane image gives /scitunnel (cap_net_raw=p).
func startSidecar(t *testing.T, netRawFileCap bool, registry string) *sidecarRun {
	t.Helper()
	dir, err := os.MkdirTemp("", "scitunnel-sflow-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "scitunnel")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if netRawFileCap {
		// struct vfs_cap_data revision 2, little-endian: magic 0x02000000 (no effective bit),
		// permitted 1<<13 (CAP_NET_RAW), then zero inheritable and upper words.
		capData := []byte{0, 0, 0, 2, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		if err := unix.Setxattr(bin, "security.capability", capData, 0); err != nil {
			t.Fatalf("setting the file capability: %v", err)
		}
	}
	telemetry := `"samplingRate":100,"analyzerAddress":":6343","httpAddress":":9091"`
	if registry != "" {
		regFile := filepath.Join(dir, "registry.json")
		if err := os.WriteFile(regFile, []byte(registry), 0o644); err != nil {
			t.Fatal(err)
		}
		telemetry += `,"registryFile":"` + regFile + `"`
	}
	cfg := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfg, []byte(`{"version":1,"role":"Inbound","protocol":"TCP","routes":[{"listenPort":5000,"target":"localhost:5001"}],
		"scitag":{"experimentId":2,"activityId":16,"entropy":true},"telemetry":{`+telemetry+`}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// The flags override the file's addresses (free ports for the test).
	cmd := exec.Command(bin, "sflow", "--config", cfg, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	run := &sidecarRun{cmd: cmd}
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		line := lines.Text()
		t.Log(line)
		run.saidNeedsNetRaw = run.saidNeedsNetRaw || strings.Contains(line, "needs the NET_RAW capability")
		run.saidSamplerOn = run.saidSamplerOn || strings.Contains(line, `"msg":"sampler on"`)
		if strings.Contains(line, "sflow sidecar serving") {
			var serving struct{ Sflow, HTTP string }
			if err := json.Unmarshal([]byte(line), &serving); err != nil {
				t.Fatal(err)
			}
			run.sflow, run.http = serving.Sflow, serving.HTTP
			break
		}
	}
	if run.sflow == "" || run.http == "" {
		t.Fatal("the sidecar did not start serving")
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	return run
}

// feedVector sends the project's sFlow test vector (label 2.16, as from a switch) until the
// analyzer reports a tag, and returns the first.
func (r *sidecarRun) feedVector(t *testing.T) report.TagRate {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("..", "..", "test", "testdata", "sflow", "sflow-vector.hex"))
	if err != nil {
		t.Fatal(err)
	}
	vector, _ := hex.DecodeString(strings.TrimSpace(string(text)))
	c, err := net.Dial("udp", r.sflow)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := c.Write(vector); err != nil {
			t.Fatal(err)
		}
		var tags report.TagTotals
		getSflowJSON(t, "http://"+r.http+report.TagsPath, &tags)
		if len(tags.Tags) > 0 {
			return tags.Tags[0]
		}
		if time.Now().After(deadline) {
			t.Fatal("the vector never showed in /v1/tags")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *sidecarRun) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + r.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestSflowWithoutNetRaw runs the sidecar without CAP_NET_RAW (as uid 65534 when the test is
// root): it must say the sampler needs NET_RAW, and still serve sFlow from other agents — here
// the project's test vector, whose label maps to the assigned tag 2.16.
func TestSflowWithoutNetRaw(t *testing.T) {
	r := startSidecar(t, false, "")
	if !r.saidNeedsNetRaw {
		t.Error("the sidecar did not say the sampler needs NET_RAW")
	}
	if tag := r.feedVector(t); tag.Tag != "atlas.Production_Output" || tag.Bytes%1498000 != 0 {
		t.Errorf("tag %+v", tag)
	}
	if !strings.Contains(r.metrics(t), "scitunnel_sampler_up 0") {
		t.Error("metrics do not show the sampler down")
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	if err := r.cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

// TestSflowNonRootSamplesWithTheFileCapability is the sidecar as the pods run it: non-root,
// NET_RAW only from the binary's file capability (cap_net_raw=p). The sampler must start; and
// tags are named from the registry file the controller mounts (a site's own name for 2.16).
func TestSflowNonRootSamplesWithTheFileCapability(t *testing.T) {
	netns.Require(t) // root, to set a file capability and to start the sidecar as uid 65534
	const siteRegistry = `{"version": 9, "modified": "2026-06-01T00:00:00Z", "experiments": [
  {"expName": "atlas-site", "expId": 2, "activities": [{"activityName": "Beamline Stream", "activityId": 16}]}]}`
	r := startSidecar(t, true, siteRegistry)
	if r.saidNeedsNetRaw || !r.saidSamplerOn {
		t.Fatalf("non-root with cap_net_raw=p: sampler on %v, complained about NET_RAW %v", r.saidSamplerOn, r.saidNeedsNetRaw)
	}
	if !strings.Contains(r.metrics(t), "scitunnel_sampler_up 1") {
		t.Error("metrics do not show the sampler up")
	}
	if tag := r.feedVector(t); tag.Tag != "atlas-site.Beamline_Stream" {
		t.Errorf("the vector's tag is named %q, want the mounted registry's atlas-site.Beamline_Stream", tag.Tag)
	}
}

func getSflowJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
