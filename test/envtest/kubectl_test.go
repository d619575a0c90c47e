package envtest_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"

	"github.com/scitunnel/scitunnel/test/envtest/testenv"
)

var _ = Describe("kubectl names", func() {
	It("publishes the short names tunnel, tunnels, stun and the category scitunnel", func() {
		dc, err := discovery.NewDiscoveryClientForConfig(cfg)
		Expect(err).NotTo(HaveOccurred())
		list, err := dc.ServerResourcesForGroupVersion("scitunnel.io/v1alpha1")
		Expect(err).NotTo(HaveOccurred())
		found := map[string]metav1.APIResource{}
		for _, r := range list.APIResources {
			found[r.Name] = r
		}
		Expect(found).To(HaveKey("streamtunnels"))
		Expect(found["streamtunnels"].ShortNames).To(ConsistOf("tunnel", "tunnels", "stun"))
		Expect(found["streamtunnels"].Categories).To(ConsistOf("scitunnel"))
		Expect(found["streamtunnels"].Namespaced).To(BeTrue())
		Expect(found["scitagpolicies"].Categories).To(ConsistOf("scitunnel"))
		Expect(found).To(HaveKey("streamtunnels/scale"))
		Expect(found).To(HaveKey("streamtunnels/status"))
	})

	It("resolves tunnels, tunnel, stun and the category scitunnel the way kubectl does", func() {
		dc, err := discovery.NewDiscoveryClientForConfig(cfg)
		Expect(err).NotTo(HaveOccurred())
		cached := memory.NewMemCacheClient(dc)
		expander := restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(cached), cached, nil)
		want := schema.GroupVersionResource{Group: "scitunnel.io", Version: "v1alpha1", Resource: "streamtunnels"}
		for _, name := range []string{"tunnels", "tunnel", "stun", "streamtunnels", "streamtunnel"} {
			gvr, err := expander.ResourceFor(schema.GroupVersionResource{Resource: name})
			Expect(err).NotTo(HaveOccurred(), name)
			Expect(gvr).To(Equal(want), name)
		}
		resources, ok := restmapper.NewDiscoveryCategoryExpander(cached).Expand("scitunnel")
		Expect(ok).To(BeTrue())
		Expect(resources).To(ConsistOf(
			schema.GroupResource{Group: "scitunnel.io", Resource: "streamtunnels"},
			schema.GroupResource{Group: "scitunnel.io", Resource: "scitagpolicies"}))
	})

	It("answers `kubectl get tunnels` (-o wide) and `kubectl get scitunnel` with the real kubectl, once it is built", func() {
		assets, err := testenv.Assets()
		Expect(err).NotTo(HaveOccurred())
		kubectl := filepath.Join(assets, "kubectl")
		if _, err := os.Stat(kubectl); err != nil {
			// `make envtest-binaries` builds it; other envtest asset sets may lack it.
			msg := fmt.Sprintf("no kubectl beside the envtest binaries in %s (make envtest-binaries builds it)", assets)
			if os.Getenv("SCITUNNEL_REQUIRE_PRIVILEGED") == "1" {
				Fail(msg)
			}
			Skip(msg)
		}
		kubeconfig := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
		Expect(os.WriteFile(kubeconfig, env.KubeConfig, 0o600)).To(Succeed())
		ns := "kubectl-names"
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		tun := object("StreamTunnel", "kubectl-in", validInbound)
		tun.SetNamespace(ns)
		Expect(k8sClient.Create(ctx, tun)).To(Succeed())
		pol := object("ScitagPolicy", "kubectl-policy", "experiment: atlas\nactivity: Debug\n")
		pol.SetNamespace(ns)
		Expect(k8sClient.Create(ctx, pol)).To(Succeed())

		run := func(args ...string) string {
			cmd := exec.Command(kubectl, append([]string{"--kubeconfig", kubeconfig, "-n", ns}, args...)...)
			out, err := cmd.CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), string(out))
			return string(out)
		}
		for _, name := range []string{"tunnels", "tunnel", "stun", "streamtunnels"} {
			out := run("get", name)
			Expect(out).To(ContainSubstring("kubectl-in"), name)
			header := strings.Fields(strings.SplitN(out, "\n", 2)[0])
			Expect(header).To(Equal([]string{"NAME", "ROLE", "READY", "ENDPOINT", "SCITAG", "THROUGHPUT", "AGE"}), name)
		}
		wide := strings.Fields(strings.SplitN(run("get", "tunnels", "-o", "wide"), "\n", 2)[0])
		Expect(wide).To(Equal([]string{"NAME", "ROLE", "READY", "ENDPOINT", "SCITAG", "THROUGHPUT", "AGE", "FLOWLABEL", "CONNECTIONS", "MESSAGE"}))
		both := run("get", "scitunnel")
		Expect(both).To(ContainSubstring("streamtunnel.scitunnel.io/kubectl-in"))
		Expect(both).To(ContainSubstring("scitagpolicy.scitunnel.io/kubectl-policy"))
	})
})
