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

	"github.com/scitunnel/scitunnel/dataplane/report"
)

func TestSflowFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"sflow", "--assigned-tags", "atlas"}, "telemetry.assignedTags[0]"},
		{[]string{"sflow", "--sampling-rate", "-1"}, "telemetry.samplingRate"},
		{[]string{"sflow", "--collectors", "no-port"}, "telemetry.collectors[0]"},
		{[]string{"sflow", "--agent-address", "pod"}, "telemetry.agentAddress"},
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

// TestSflowWithoutNetRaw runs the sidecar without CAP_NET_RAW (as uid 65534 when the test is
// root): it must say the sampler needs NET_RAW, and still serve sFlow from other agents — here
// the project's test vector, whose label maps to the assigned tag 2.16.
func TestSflowWithoutNetRaw(t *testing.T) {
	dir, err := os.MkdirTemp("", "scitunnel-sflow-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A copy nobody can execute (the shared binary sits in a private directory).
	data, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "scitunnel")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfg, []byte(`{"version":1,"role":"Inbound","protocol":"TCP","routes":[{"listenPort":5000,"target":"localhost:5001"}],
		"telemetry":{"samplingRate":100,"assignedTags":["2.16"],"analyzerAddress":":6343","httpAddress":":9091"}}`), 0o644); err != nil {
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
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(stderr)
	var sawNetRaw bool
	var serving struct{ Sflow, HTTP string }
	for lines.Scan() {
		line := lines.Text()
		t.Log(line)
		if strings.Contains(line, "needs the NET_RAW capability") {
			sawNetRaw = true
		}
		if strings.Contains(line, "sflow sidecar serving") {
			if err := json.Unmarshal([]byte(line), &serving); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if !sawNetRaw {
		t.Error("the sidecar did not say the sampler needs NET_RAW")
	}
	if serving.Sflow == "" || serving.HTTP == "" {
		t.Fatal("the sidecar did not start serving")
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()

	text, err := os.ReadFile(filepath.Join("..", "..", "test", "testdata", "sflow", "sflow-vector.hex"))
	if err != nil {
		t.Fatal(err)
	}
	vector, _ := hex.DecodeString(strings.TrimSpace(string(text)))
	c, err := net.Dial("udp", serving.Sflow)
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
		getSflowJSON(t, "http://"+serving.HTTP+report.TagsPath, &tags)
		if len(tags.Tags) > 0 {
			if tags.Tags[0].Tag != "atlas.Production_Output" || tags.Tags[0].Bytes%1498000 != 0 {
				t.Errorf("tags %+v", tags)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the vector never showed in /v1/tags")
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, err := http.Get("http://" + serving.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "scitunnel_sampler_up 0") {
		t.Error("metrics do not show the sampler down")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
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
