package envtest_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/test/envtest/testenv"
)

// BenchmarkReconcile1000 runs the real manager binary (cmd/) against envtest's kube-apiserver
// and etcd, creates 1,000 StreamTunnels (500 Inbound/Outbound pairs in 10 namespaces, each
// namespace with a ScitagPolicy tagging them) and waits until every tunnel's status reports its
// current generation with certificates issued and its proxy Deployment made. It prints the
// elapsed time, the manager's peak and final resident memory, and, as the anchor measured in
// the same run, the time the API server alone took to accept the 1,000 creations (no
// controller involved).
//
// Goals: all reconciled within goalReconcileTime, with the manager's peak RSS at most
// goalManagerRSS; it prints met or MISSED for each and fails only when something breaks, never
// on a number. Run with `make bench-reconcile`.
func BenchmarkReconcile1000(b *testing.B) {
	const namespaces = 10
	pairs := 500
	if v, err := strconv.Atoi(os.Getenv("BENCH_PAIRS")); err == nil && v > 0 {
		pairs = v // a smaller run, e.g. to read the API writes per tunnel on a busy machine
	}
	tunnels := 2 * pairs
	env, cfg, err := testenv.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()

	dir := b.TempDir()
	manager, kubeconfig := buildManager(b, dir, env.KubeConfig)

	for b.Loop() {
		// Anchor: the API server accepting 1,000 objects of the same size, no controller.
		anchorNS := fmt.Sprintf("anchor-%d", time.Now().UnixNano())
		mustCreate(b, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: anchorNS}})
		anchorStart := time.Now()
		createParallel(b, tunnels, func(i int) client.Object {
			return benchTunnel(anchorNS, i, "anchor")
		}, c)
		anchor := time.Since(anchorStart)
		// Deleted before the manager starts: it does not see them.
		if err := c.DeleteAllOf(ctx, &scitunnelv1.StreamTunnel{}, client.InNamespace(anchorNS)); err != nil {
			b.Fatal(err)
		}

		logPath := filepath.Join(dir, "manager.log")
		if p := os.Getenv("BENCH_MANAGER_LOG"); p != "" {
			logPath = p // keep the manager's log for a look afterwards
		}
		log, err := os.Create(logPath)
		if err != nil {
			b.Fatal(err)
		}
		cmd, pprofAddr := startManager(b, manager, kubeconfig, log)
		peak := &peakRSS{pid: cmd.Process.Pid}
		stopSampling := peak.sample(100 * time.Millisecond)
		before, err := takeAPICensus(ctx, cfg)
		if err != nil {
			b.Fatalf("reading the API server's request counts: %v", err)
		}
		if p := os.Getenv("BENCH_CPU_PROFILE"); p != "" {
			// The manager's CPU over the first minute, which covers the whole run when it
			// goes well: `go tool pprof -top $BENCH_CPU_PROFILE`.
			go saveProfile(b, "http://"+pprofAddr+"/debug/pprof/profile?seconds=60", p)
		}

		var nss []string
		for n := range namespaces {
			ns := fmt.Sprintf("bench-%d-%d", n, time.Now().UnixNano())
			nss = append(nss, ns)
			mustCreate(b, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
			mustCreate(b, c, &scitunnelv1.ScitagPolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "atlas"},
				Spec: scitunnelv1.ScitagPolicySpec{Experiment: "atlas", Activity: "Production Output",
					TunnelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"experiment": "atlas"}}},
			})
		}
		start := time.Now()
		createParallel(b, tunnels, func(i int) client.Object {
			ns := nss[(i/2)%namespaces]
			if i%2 == 0 {
				return benchTunnel(ns, i/2, "in")
			}
			return benchOutbound(ns, i/2)
		}, c)
		created := time.Since(start)

		var done int
		// When each tunnel was first seen reconciled, by role: the spread tells a slow
		// controller (all late) from a wait (a tail).
		doneAt := map[string]time.Duration{}
		deadline := time.Now().Add(5 * time.Minute)
		for time.Now().Before(deadline) {
			done = 0
			for _, ns := range nss {
				var list scitunnelv1.StreamTunnelList
				if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
					b.Fatal(err)
				}
				for _, t := range list.Items {
					if reconciled(&t) {
						done++
						if _, seen := doneAt[ns+"/"+t.Name]; !seen {
							doneAt[ns+"/"+t.Name] = time.Since(start)
						}
					}
				}
			}
			if done == tunnels {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		elapsed := time.Since(start)
		stopSampling()
		after, err := takeAPICensus(ctx, cfg)
		if err != nil {
			b.Fatalf("reading the API server's request counts: %v", err)
		}
		final := peak.current()
		if p := os.Getenv("BENCH_HEAP_PROFILE"); p != "" {
			saveProfile(b, "http://"+pprofAddr+"/debug/pprof/heap", p)
		}
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		_ = log.Close()
		if done != tunnels {
			if out, err := os.ReadFile(logPath); err == nil {
				lines := strings.Split(string(out), "\n")
				b.Logf("manager log tail:\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
			}
			b.Fatalf("only %d of %d tunnels reconciled after %s; manager log: %s", done, tunnels, elapsed, logPath)
		}

		var deployments int
		for _, ns := range nss {
			var list appsv1.DeploymentList
			if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
				b.Fatal(err)
			}
			deployments += len(list.Items)
		}
		if deployments != tunnels {
			b.Fatalf("%d Deployments for %d tunnels", deployments, tunnels)
		}

		b.ReportMetric(elapsed.Seconds(), "s/1000tunnels")
		b.ReportMetric(float64(peak.max())/(1<<20), "MB-peak-rss")
		fmt.Printf("\nreconcile %d StreamTunnels (%d wired pairs, 10 ScitagPolicies):\n", tunnels, pairs)
		fmt.Printf("  created in            %8.2f s\n", created.Seconds())
		timeVerdict, rssVerdict := reconcileVerdicts(elapsed, peak.max())
		fmt.Printf("  all reconciled after  %8.2f s   %-6s (goal <= %.0f s)\n", elapsed.Seconds(), timeVerdict, goalReconcileTime.Seconds())
		fmt.Printf("  reconciled by (p50 / p90 / last): Inbound %s, Outbound %s\n", spread(doneAt, "/in-"), spread(doneAt, "/out-"))
		fmt.Printf("  anchor: API server alone accepting %d creations %8.2f s\n", tunnels, anchor.Seconds())
		fmt.Printf("  ratio reconciled/anchor                          %8.1fx\n", elapsed.Seconds()/anchor.Seconds())
		fmt.Printf("  manager RSS peak      %8.1f MB   %-6s (goal <= %d MB)\n", float64(peak.max())/(1<<20), rssVerdict, goalManagerRSS>>20)
		fmt.Printf("  manager RSS at end    %8.1f MB\n", float64(final)/(1<<20))
		fmt.Printf("  Deployments created   %8d\n", deployments)
		// Writes include the bench's own creations (1,000 tunnels, 10 namespaces and policies).
		fmt.Printf("  API writes while reconciling (from the API server's apiserver_request_total):\n")
		for _, line := range after.writesSince(before, tunnels) {
			fmt.Println(line)
		}
	}
}

// spread gives the median, 90th percentile and last of the times whose key contains part.
func spread(at map[string]time.Duration, part string) string {
	var ds []time.Duration
	for k, d := range at {
		if strings.Contains(k, part) {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return "none"
	}
	slices.Sort(ds)
	q := func(f float64) string { return fmt.Sprintf("%.1f s", ds[int(f*float64(len(ds)-1))].Seconds()) }
	return q(0.5) + " / " + q(0.9) + " / " + q(1)
}

// buildManager builds the manager binary (./cmd) into dir and writes the kubeconfig it uses.
func buildManager(b *testing.B, dir string, kubeconfigData []byte) (manager, kubeconfig string) {
	manager = filepath.Join(dir, "manager")
	build := exec.Command("go", "build", "-o", manager, "./cmd")
	build.Dir = testenv.RepoRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		b.Fatalf("building the manager: %v", err)
	}
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kubeconfigData, 0o600); err != nil {
		b.Fatal(err)
	}
	return manager, kubeconfig
}

// startManager runs the manager as the chart would, with the API rate limits raised for the
// benchmark and Go's pprof on a free loopback port.
func startManager(b *testing.B, manager, kubeconfig string, log io.Writer) (cmd *exec.Cmd, pprofAddr string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	pprofAddr = l.Addr().String()
	_ = l.Close()
	cmd = exec.Command(manager,
		"--kubeconfig="+kubeconfig,
		"--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--kube-api-qps=1000", "--kube-api-burst=2000",
		"--max-concurrent-reconciles=8",
		"--dataplane-image=scitunnel-dataplane:bench", "--pprof-bind-address="+pprofAddr)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	return cmd, pprofAddr
}

// The operator's goals for BenchmarkReconcile1000: 1,000 tunnels reconciled within 15 s, the
// manager's resident memory peaking at 100 MB or less.
const (
	goalReconcileTime       = 15 * time.Second
	goalManagerRSS    int64 = 100 << 20
)

// reconcileVerdicts reads the elapsed time and the manager's peak RSS against the goals: "met"
// or "MISSED" each (both lower-is-better; at the goal meets it).
func reconcileVerdicts(elapsed time.Duration, peakRSS int64) (timeVerdict, rssVerdict string) {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	return verdict(elapsed <= goalReconcileTime), verdict(peakRSS <= goalManagerRSS)
}

// reconciled: the manager has processed the tunnel's current spec and issued its certificates.
func reconciled(t *scitunnelv1.StreamTunnel) bool {
	if t.Status.ObservedGeneration != t.Generation {
		return false
	}
	c := meta.FindStatusCondition(t.Status.Conditions, scitunnelv1.ConditionCertificateReady)
	// ProxyAvailable past NoDeployment: the proxy Deployment exists (no pods run on envtest).
	p := meta.FindStatusCondition(t.Status.Conditions, scitunnelv1.ConditionProxyAvailable)
	return c != nil && c.Status == metav1.ConditionTrue && t.Status.Scitag != nil && p != nil && p.Reason != "NoDeployment"
}

func benchTunnel(ns string, i int, prefix string) *scitunnelv1.StreamTunnel {
	return &scitunnelv1.StreamTunnel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-%d", prefix, i), Labels: map[string]string{"experiment": "atlas"}},
		Spec: scitunnelv1.StreamTunnelSpec{
			Role:            scitunnelv1.RoleInbound,
			ParallelStreams: ptrTo(int32(4)),
			Inbound: &scitunnelv1.InboundSpec{
				Producers:       []scitunnelv1.HostPort{scitunnelv1.HostPort(fmt.Sprintf("daq-%d.daq.svc:5074", i))},
				ListenPortRange: &scitunnelv1.PortRange{First: 5100, Last: 5103},
			},
		},
	}
}

func benchOutbound(ns string, i int) *scitunnelv1.StreamTunnel {
	return &scitunnelv1.StreamTunnel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("out-%d", i), Labels: map[string]string{"experiment": "atlas"}},
		Spec: scitunnelv1.StreamTunnelSpec{
			Role:     scitunnelv1.RoleOutbound,
			Outbound: &scitunnelv1.OutboundSpec{TunnelRef: &scitunnelv1.TunnelReference{Name: fmt.Sprintf("in-%d", i)}},
		},
	}
}

func createParallel(b *testing.B, n int, build func(int) client.Object, c client.Client) {
	var wg sync.WaitGroup
	work := make(chan int)
	errs := make(chan error, n)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := c.Create(context.Background(), build(i)); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

func mustCreate(b *testing.B, c client.Client, o client.Object) {
	if err := c.Create(context.Background(), o); err != nil {
		b.Fatal(err)
	}
}

func ptrTo[T any](v T) *T { return &v }

// peakRSS samples a process's resident memory from /proc.
type peakRSS struct {
	pid  int
	mu   sync.Mutex
	peak int64
}

func (p *peakRSS) current() int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func (p *peakRSS) sample(every time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if v := p.current(); v > 0 {
				p.mu.Lock()
				p.peak = max(p.peak, v)
				p.mu.Unlock()
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func (p *peakRSS) max() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak
}

// saveProfile keeps one of the manager's pprof profiles for `go tool pprof`.
func saveProfile(b *testing.B, url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		b.Logf("heap profile: %v", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Logf("heap profile: %v", err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}

// TestReconcileVerdicts needs no API server: `go test ./test/envtest -run TestReconcileVerdicts`.
func TestReconcileVerdicts(t *testing.T) {
	for _, c := range []struct {
		elapsed        time.Duration
		rss            int64
		wantT, wantRSS string
	}{
		{10 * time.Second, 80 << 20, "met", "met"},
		{15 * time.Second, 100 << 20, "met", "met"}, // at the goal meets it
		{15*time.Second + time.Millisecond, 100<<20 + 1, "MISSED", "MISSED"},
		{60 * time.Second, 150 << 20, "MISSED", "MISSED"}, // the goals before: missed now
		{5 * time.Second, 120 << 20, "met", "MISSED"},
	} {
		gotT, gotRSS := reconcileVerdicts(c.elapsed, c.rss)
		if gotT != c.wantT || gotRSS != c.wantRSS {
			t.Errorf("%s, %d MB: %s, %s; want %s, %s", c.elapsed, c.rss>>20, gotT, gotRSS, c.wantT, c.wantRSS)
		}
	}
}
