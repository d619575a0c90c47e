package sampler

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/internal/testutil/netns"
)

// childEnv makes the test binary a sampler process: the privileged tests run it inside a
// network namespace (ip netns exec), as the sidecar runs in its pod, where /sys/class/net shows
// the namespace's own interfaces.
const childEnv = "SCITUNNEL_SAMPLER_CHILD"

// childSpec is the child's configuration.
type childSpec struct {
	Interfaces []string
	Rate       uint32
	Collectors []string
	Polling    time.Duration
	Flush      time.Duration
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(m.Run())
}

func runChild(spec string) int {
	var c childSpec
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := New(Config{Interfaces: c.Interfaces, SamplingRate: c.Rate, Collectors: c.Collectors,
		PollingInterval: c.Polling, FlushInterval: c.Flush, Log: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Println("ready")
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	st := s.Stats()
	b, _ := json.Marshal(st)
	fmt.Fprintln(os.Stderr, "stats", string(b))
	return 0
}

// startSampler runs a sampler process in ns; it stops (SIGTERM, flushing its last datagram)
// when stop is called or the test ends.
func startSampler(t testing.TB, ns *netns.NS, spec childSpec) (stop func()) {
	t.Helper()
	b, _ := json.Marshal(spec)
	cmd := ns.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := sc.Scan() && sc.Text() == "ready"
		ready <- ok
		for sc.Scan() {
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("sampler did not start: %s", stderr.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("sampler did not start in time: %s", stderr.String())
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("sampler exited: %v\n%s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("sampler did not stop on SIGTERM: %s", stderr.String())
		}
		t.Logf("sampler: %s", strings.TrimSpace(stderr.String()))
	}
	t.Cleanup(stop)
	return stop
}

func fmtSscan(s string, v *int) (int, error) { return fmt.Sscan(strings.TrimSpace(s), v) }
