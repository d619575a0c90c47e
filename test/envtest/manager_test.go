package envtest_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/scitunnel/scitunnel/internal/testutil"
	"github.com/scitunnel/scitunnel/test/envtest/testenv"
)

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// The manager binary as users run it (cmd/main.go): leader election, health probes, metrics,
// and the --dataplane-image flag reaching the proxy pods.
var _ = Describe("The manager binary", Ordered, func() {
	var (
		cmd                 *exec.Cmd
		probePort, metrics  int
		logPath, kubeconfig string
	)
	BeforeAll(func() {
		dir := GinkgoT().TempDir()
		manager := filepath.Join(dir, "manager")
		build := exec.Command("go", "build", "-o", manager, "./cmd")
		build.Dir = testenv.RepoRoot()
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		kubeconfig = filepath.Join(dir, "kubeconfig")
		Expect(os.WriteFile(kubeconfig, env.KubeConfig, 0o600)).To(Succeed())
		probePort, metrics = testutil.FreePort(GinkgoT()), testutil.FreePort(GinkgoT())
		logPath = filepath.Join(dir, "manager.log")
		log, err := os.Create(logPath)
		Expect(err).NotTo(HaveOccurred())
		cmd = exec.Command(manager,
			"--kubeconfig="+kubeconfig,
			"--leader-elect", "--leader-election-namespace=default",
			fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", probePort),
			fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metrics), "--metrics-secure=false",
			"--dataplane-image=registry.example.org/scitunnel/dataplane:v9")
		cmd.Stdout, cmd.Stderr = log, log
		Expect(cmd.Start()).To(Succeed())
		DeferCleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
			_ = log.Close()
		})
	})

	It("answers its health probes", func() {
		for _, path := range []string{"/healthz", "/readyz"} {
			Eventually(func(g Gomega) {
				code, _, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d%s", probePort, path))
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(code).To(Equal(http.StatusOK))
			}, 30*time.Second, 200*time.Millisecond).Should(Succeed(), path)
		}
	})

	It("takes the leader-election Lease", func() {
		Eventually(func(g Gomega) {
			var lease coordinationv1.Lease
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: "default", Name: "scitunnel-operator.scitunnel.io"}, &lease)).To(Succeed())
			g.Expect(lease.Spec.HolderIdentity).NotTo(BeNil())
		}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	})

	It("reconciles with the data-plane image it was given and serves controller metrics", func() {
		ns := "manager-binary"
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		t := object("StreamTunnel", "from-binary", validInbound)
		t.SetNamespace(ns)
		Expect(k8sClient.Create(ctx, t)).To(Succeed())
		Eventually(func(g Gomega) {
			var d appsv1.Deployment
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "from-binary"}, &d)).To(Succeed())
			g.Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal("registry.example.org/scitunnel/dataplane:v9"))
			g.Expect(d.Spec.Template.Spec.Containers[1].Image).To(Equal("registry.example.org/scitunnel/dataplane:v9"))
		}, 30*time.Second, 200*time.Millisecond).Should(Succeed(), "manager log: "+logPath)
		Eventually(func(g Gomega) {
			code, body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(code).To(Equal(http.StatusOK))
			g.Expect(body).To(ContainSubstring(`controller_runtime_reconcile_total{controller="streamtunnel"`))
			g.Expect(body).To(ContainSubstring(`controller_runtime_reconcile_total{controller="scitagpolicy"`))
		}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	})
})
