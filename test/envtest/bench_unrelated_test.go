package envtest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/test/envtest/testenv"
)

// BenchmarkUnrelatedObjects measures what other groups' objects cost the manager in a shared
// cluster: its peak RSS serving 20 tunnels, first alone, then with 5,000 unrelated 10 KiB
// Secrets and 5,000 unrelated 10 KiB ConfigMaps in other namespaces (about 100 MB in etcd).
// The manager caches only the objects it labelled (controllers.CacheOptions), so the goal is
// under +10 MB; an unfiltered cache holds all 100 MB.
func BenchmarkUnrelatedObjects(b *testing.B) {
	const (
		pairs     = 10
		unrelated = 5000
		size      = 10 << 10
		observe   = 20 * time.Second // after the tunnels are reconciled: caches synced, GC settled
	)
	env, cfg, err := testenv.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	manager, kubeconfig := buildManager(b, dir, env.KubeConfig)

	for b.Loop() {
		ns := fmt.Sprintf("tunnels-%d", time.Now().UnixNano())
		mustCreate(b, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		mustCreate(b, c, &scitunnelv1.ScitagPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "atlas"},
			Spec: scitunnelv1.ScitagPolicySpec{Experiment: "atlas", Activity: "Production Output",
				TunnelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"experiment": "atlas"}}},
		})
		createParallel(b, 2*pairs, func(i int) client.Object {
			if i%2 == 0 {
				return benchTunnel(ns, i/2, "in")
			}
			return benchOutbound(ns, i/2)
		}, c)

		alone := managerPeakRSS(b, c, manager, kubeconfig, filepath.Join(dir, "alone.log"), ns, 2*pairs, observe)

		payload := strings.Repeat("x", size)
		var others []string
		for n := range 10 {
			other := fmt.Sprintf("other-%d-%d", n, time.Now().UnixNano())
			others = append(others, other)
			mustCreate(b, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}})
		}
		createParallel(b, 2*unrelated, func(i int) client.Object {
			meta := metav1.ObjectMeta{Namespace: others[i%len(others)], Name: fmt.Sprintf("unrelated-%d", i/2)}
			if i%2 == 0 {
				return &corev1.Secret{ObjectMeta: meta, StringData: map[string]string{"data": payload}}
			}
			return &corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"data": payload}}
		}, c)

		crowded := managerPeakRSS(b, c, manager, kubeconfig, filepath.Join(dir, "crowded.log"), ns, 2*pairs, observe)

		delta := crowded - alone
		verdict := "met"
		if delta > goalUnrelatedRSS {
			verdict = "MISSED"
		}
		b.ReportMetric(float64(delta)/(1<<20), "MB-added-by-unrelated")
		fmt.Printf("\nmanager RSS, 20 tunnels, with and without other groups' objects:\n")
		fmt.Printf("  alone                                          %8.1f MB\n", float64(alone)/(1<<20))
		fmt.Printf("  with %d unrelated 10 KiB Secrets and %d ConfigMaps %6.1f MB\n", unrelated, unrelated, float64(crowded)/(1<<20))
		fmt.Printf("  added                                          %+8.1f MB   %-6s (goal <= +%d MB)\n", float64(delta)/(1<<20), verdict, goalUnrelatedRSS>>20)
	}
}

// goalUnrelatedRSS: what 10,000 unrelated objects may add to the manager's peak RSS.
const goalUnrelatedRSS int64 = 10 << 20

// managerPeakRSS starts the manager, waits until it has reconciled the n tunnels of ns, keeps
// it running for observe more, stops it and returns its peak RSS.
func managerPeakRSS(b *testing.B, c client.Client, manager, kubeconfig, logPath, ns string, n int, observe time.Duration) int64 {
	log, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close()
	cmd, _ := startManager(b, manager, kubeconfig, log)
	peak := &peakRSS{pid: cmd.Process.Pid}
	stop := peak.sample(100 * time.Millisecond)
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()

	deadline := time.Now().Add(3 * time.Minute)
	for {
		var list scitunnelv1.StreamTunnelList
		if err := c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
		done := 0
		for i := range list.Items {
			if reconciled(&list.Items[i]) {
				done++
			}
		}
		if done == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d tunnels reconciled; manager log: %s", done, n, logPath)
		}
		time.Sleep(250 * time.Millisecond)
	}
	time.Sleep(observe)
	stop()
	return peak.max()
}
