//go:build e2e

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/scitunnel/scitunnel/internal/loadgen"
	"github.com/scitunnel/scitunnel/test/envtest/testenv"
)

// Settings, from the environment (test/e2e/run.sh and the Makefile set them).
var (
	kubeconfig   = os.Getenv("KUBECONFIG")
	managerImg   = os.Getenv("MANAGER_IMG")
	dataplaneImg = os.Getenv("DATAPLANE_IMG")
	// pullPolicy of every image; IfNotPresent suits imported images (their tags are never
	// "latest") and images pushed to a registry alike.
	pullPolicy = envOr("E2E_IMAGE_PULL_POLICY", "IfNotPresent")
	// keep leaves the operator and the test namespace installed after the run, for debugging.
	keep = os.Getenv("E2E_KEEP") == "1"
	// samplingRate of the tunnels under test: 1 in N packets. Lower than the default 1000 so a
	// short test run yields enough samples for a tight error bound.
	samplingRate = envOr("E2E_SAMPLING_RATE", "100")
)

const (
	testNS    = "scitunnel-e2e"
	releaseNS = "scitunnel-system"
	release   = "scitunnel"
	tag       = "atlas.Production_Output"
	// label is ATLAS (2) Production Output (16): 2<<12 | 16<<2... as dataplane/scitag encodes it.
	label = 0x10040
)

var (
	ctx       context.Context
	cancel    context.CancelFunc
	k8s       client.Client
	clientset *kubernetes.Clientset
	timings   []string
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "SciTunnel end to end")
}

var _ = BeforeSuite(func() {
	ctx, cancel = context.WithCancel(context.Background())
	Expect(kubeconfig).NotTo(BeEmpty(), "KUBECONFIG must name the cluster to test (make test-e2e sets it)")
	Expect(managerImg).NotTo(BeEmpty(), "MANAGER_IMG must name the manager image (make test-e2e sets it)")
	Expect(dataplaneImg).NotTo(BeEmpty(), "DATAPLANE_IMG must name the data-plane image (make test-e2e sets it)")
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	clientset, err = kubernetes.NewForConfig(cfg)
	Expect(err).NotTo(HaveOccurred())

	By("installing the operator with helm (" + managerImg + ")")
	start := time.Now()
	mRepo, mTag := splitImage(managerImg)
	dRepo, dTag := splitImage(dataplaneImg)
	out, err := run(tool("HELM", "helm"), "upgrade", "--install", release, filepath.Join(repoRoot(), "charts", "scitunnel"),
		"--namespace", releaseNS, "--create-namespace", "--wait", "--timeout", "3m",
		"--set", "image.repository="+mRepo, "--set", "image.tag="+mTag, "--set", "image.pullPolicy="+pullPolicy,
		"--set", "dataplane.image.repository="+dRepo, "--set", "dataplane.image.tag="+dTag,
		"--set", "dataplane.image.pullPolicy="+pullPolicy,
		// Status every 5 s rather than 10 s: the throughput check has 15 s.
		"--set", "manager.throughputInterval=5s", "--set", "manager.logLevel=debug")
	Expect(err).NotTo(HaveOccurred(), out)
	Expect(out).To(ContainSubstring("kubectl get tunnels"), "helm install printed no NOTES")
	record("helm install --wait (operator Ready)", time.Since(start))

	By("creating the test namespace, the producer and the consumer's pod")
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS, Labels: map[string]string{
		// The sFlow sidecar's NET_RAW and the flow-label sysctl are beyond "baseline".
		"pod-security.kubernetes.io/enforce": "privileged"}}}
	Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, nsObj))).To(Succeed())
	start = time.Now()
	applyTemplate("workloads.yaml")
	for _, d := range []string{"daq-producer", "consumer"} {
		out, err := kubectl("-n", testNS, "rollout", "status", "deployment/"+d, "--timeout=120s")
		Expect(err).NotTo(HaveOccurred(), out+describe("deployment", d))
	}
	record("producer and consumer pods Ready", time.Since(start))
})

var _ = AfterSuite(func() {
	defer cancel()
	if CurrentSpecReport().Failed() || keep {
		dumpDiagnostics()
	}
	if !keep {
		By("removing the test namespace, the operator and its CRDs")
		_, _ = kubectl("delete", "namespace", testNS, "--wait=true", "--timeout=120s")
		_, _ = run(tool("HELM", "helm"), "uninstall", release, "--namespace", releaseNS, "--wait", "--timeout", "2m")
		// The chart keeps its CRDs on uninstall (helm.sh/resource-policy: keep); the test
		// removes them so the cluster is as it found it.
		_, _ = kubectl("delete", "crd", "streamtunnels.scitunnel.io", "scitagpolicies.scitunnel.io", "--ignore-not-found")
		_, _ = kubectl("delete", "namespace", releaseNS, "--wait=true", "--timeout=120s")
	}
	fmt.Fprintln(GinkgoWriter, "\n==== e2e timings")
	for _, t := range timings {
		fmt.Fprintln(GinkgoWriter, "  "+t)
	}
	AddReportEntry("timings", strings.Join(timings, "\n"))
})

// record keeps a timing for the summary printed at the end.
func record(what string, d time.Duration) {
	timings = append(timings, fmt.Sprintf("%-55s %6.1f s", what, d.Seconds()))
	GinkgoWriter.Printf("timing: %s: %.1f s\n", what, d.Seconds())
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// tool finds a pinned binary: $ENV, else bin/NAME.
func tool(env, name string) string {
	if p := os.Getenv(env); p != "" {
		return p
	}
	p := filepath.Join(repoRoot(), "bin", name)
	_, err := os.Stat(p)
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), "%s not found: run `make %s` or set %s", p, name, env)
	return p
}

// splitImage splits "repo:tag" (a registry port's colon is not a tag).
func splitImage(ref string) (string, string) {
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") {
		return ref, "latest"
	}
	return ref[:i], ref[i+1:]
}

// run executes a command; the error carries its stderr.
func run(name string, args ...string) (string, error) {
	return runIn(ctx, nil, name, args...)
}

func runIn(ctx context.Context, stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// kubectl runs the pinned kubectl (bin/kubectl, v1.37.2) against the cluster under test.
func kubectl(args ...string) (string, error) { return run(tool("KUBECTL", "kubectl"), args...) }

// kubectlIn is kubectl with standard input.
func kubectlIn(stdin []byte, args ...string) (string, error) {
	return runIn(ctx, stdin, tool("KUBECTL", "kubectl"), args...)
}

// applyTemplate applies testdata/NAME with ${NAMESPACE}, ${IMAGE}, ${PULL_POLICY} and
// ${SAMPLING_RATE} filled in.
func applyTemplate(name string) {
	b, err := os.ReadFile(filepath.Join(repoRoot(), "test", "e2e", "testdata", name))
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	s := strings.NewReplacer("${NAMESPACE}", testNS, "${IMAGE}", dataplaneImg, "${PULL_POLICY}", pullPolicy,
		"${SAMPLING_RATE}", samplingRate).Replace(string(b))
	out, err := kubectlIn([]byte(s), "apply", "--server-side", "-f", "-")
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), out)
}

// consumerPod is the name of the pod the loadgen client runs in.
func consumerPod() string {
	out, err := kubectl("-n", testNS, "get", "pods", "-l", "app=consumer", "--field-selector=status.phase=Running",
		"-o", "jsonpath={.items[0].metadata.name}")
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), out)
	ExpectWithOffset(1, out).NotTo(BeEmpty(), "no running consumer pod")
	return out
}

// loadgenRun runs `scitunnel loadgen OP ARGS...` in the consumer's pod and decodes its result.
// The error is set when the command could not run or printed no result; a result that did not
// verify comes back with Verified false.
func loadgenRun(ctx context.Context, pod, op string, args ...string) (loadgen.Result, error) {
	var res loadgen.Result
	full := append([]string{"-n", testNS, "exec", pod, "-c", "loadgen", "--", "/scitunnel", "loadgen", op}, args...)
	out, err := runIn(ctx, nil, tool("KUBECTL", "kubectl"), full...)
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil {
		if err == nil {
			err = jerr
		}
		return res, fmt.Errorf("loadgen %s: %w (output %q)", op, err, out)
	}
	return res, nil
}

// describe is kubectl describe output for a failure message.
func describe(kind, name string) string {
	out, _ := kubectl("-n", testNS, "describe", kind, name)
	return "\n" + out
}

// dumpDiagnostics prints what explains a failure: tunnels, pods, events, logs.
func dumpDiagnostics() {
	for _, args := range [][]string{
		{"get", "tunnels", "-A", "-o", "wide"},
		{"get", "streamtunnels", "-n", testNS, "-o", "yaml"},
		{"get", "pods,svc,endpointslices", "-A", "-o", "wide"},
		{"get", "events", "-n", testNS, "--sort-by=.lastTimestamp"},
		{"-n", releaseNS, "logs", "deployment/" + release + "-controller-manager", "--tail=100"},
		{"-n", testNS, "logs", "-l", "app.kubernetes.io/name=scitunnel-proxy", "--all-containers", "--prefix", "--tail=50"},
	} {
		out, err := kubectl(args...)
		fmt.Fprintf(GinkgoWriter, "\n==== kubectl %s\n%s%v\n", strings.Join(args, " "), out, errOrEmpty(err))
	}
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
