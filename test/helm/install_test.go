package helm_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/scitunnel/scitunnel/internal/testutil"
	"github.com/scitunnel/scitunnel/test/envtest/testenv"
)

// TestInstall installs the chart with `helm install` into a real kube-apiserver (envtest's,
// built into bin/k8s by `make envtest-binaries`) for every values file, upgrades it in place,
// proves with SubjectAccessReviews that the manager's ServiceAccount has the permissions it
// needs and not more, runs the manager binary as that ServiceAccount with the chart's own
// arguments until it reconciles the samples, and uninstalls: CRDs stay with crds.keep and go
// without it.
func TestInstall(t *testing.T) { //nolint:gocyclo // one install's steps in order (install, RBAC checks, manager run, uninstall), each a t.Run; gocyclo adds their branches to the parent
	helm := helmBin(t)
	assets, err := testenv.Assets()
	if err != nil {
		if os.Getenv("SCITUNNEL_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(c.Scheme()); err != nil {
		t.Fatal(err)
	}
	values := func(name string) string { return filepath.Join(repoRoot(), "test", "helm", "values", name) }
	helmRun := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := run(helm, append(args, "--kubeconfig", kubeconfig)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	install := func(t *testing.T, release, ns string, args ...string) string {
		t.Helper()
		return helmRun(t, append([]string{"install", release, chartDir(), "--namespace", ns, "--create-namespace"}, args...)...)
	}
	crdsPresent := func() (int, error) {
		n := 0
		for _, name := range []string{"streamtunnels.scitunnel.io", "scitagpolicies.scitunnel.io"} {
			var crd apiextensionsv1.CustomResourceDefinition
			err := c.Get(ctx, client.ObjectKey{Name: name}, &crd)
			switch {
			case err == nil && crd.DeletionTimestamp == nil:
				n++
			case err != nil && !apierrors.IsNotFound(err):
				return 0, err
			}
		}
		return n, nil
	}

	t.Run("crds.keep=false removes the CRDs on uninstall", func(t *testing.T) {
		install(t, "ha", "rel-ha", "-f", values("ha.yaml"))
		waitEstablished(ctx, t, c)
		helmRun(t, "upgrade", "ha", chartDir(), "--namespace", "rel-ha", "-f", values("ha.yaml"))
		helmRun(t, "uninstall", "ha", "--namespace", "rel-ha")
		eventually(t, 30*time.Second, func() error {
			if n, err := crdsPresent(); err != nil || n != 0 {
				return fmt.Errorf("%d CRDs left after uninstalling a crds.keep=false release (%v)", n, err)
			}
			return nil
		})
	})

	var notes string
	t.Run("default values", func(t *testing.T) {
		notes = install(t, "scitunnel", "scitunnel-system", "-f", values("default.yaml"))
		waitEstablished(ctx, t, c)
		// An upgrade with the same values applies cleanly (the CRDs live in templates/, so
		// upgrades update them, unlike Helm's crds/ directory).
		helmRun(t, "upgrade", "scitunnel", chartDir(), "--namespace", "scitunnel-system", "-f", values("default.yaml"))
		for _, want := range []string{"kubectl get tunnels", "net.ipv6.flowlabel_reflect", "config/samples"} {
			if !strings.Contains(notes, want) {
				t.Errorf("helm install printed no %q in NOTES:\n%s", want, notes)
			}
		}
	})

	// The other values files, each as its own release beside the first (which owns the CRDs).
	for _, f := range []string{"local-cluster.yaml", "minimal.yaml", "monitoring.yaml"} {
		t.Run(f, func(t *testing.T) {
			if f == "monitoring.yaml" {
				applyFile(ctx, t, c, filepath.Join(repoRoot(), "test", "helm", "testdata", "prometheus-operator-crds.yaml"))
				if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "monitoring"}}); err != nil && !apierrors.IsAlreadyExists(err) {
					t.Fatal(err)
				}
				eventually(t, 30*time.Second, func() error {
					_, err := c.RESTMapper().RESTMapping(schema.GroupKind{Group: "monitoring.coreos.com", Kind: "PodMonitor"}, "v1")
					return err
				})
			}
			rel := strings.TrimSuffix(f, ".yaml")
			install(t, rel, "rel-"+rel, "-f", values(f), "--set", "crds.enabled=false")
			out := helmRun(t, "get", "manifest", rel, "--namespace", "rel-"+rel)
			objs, err := decodeObjects(out)
			if err != nil || len(objs) == 0 {
				t.Fatalf("helm get manifest: %v", err)
			}
			for _, o := range objs {
				if err := c.Get(ctx, client.ObjectKeyFromObject(o), o.DeepCopy()); err != nil {
					t.Errorf("%s %s/%s not in the API server after install: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
				}
			}
		})
	}

	const ns = "scitunnel-system"
	sa := "scitunnel-controller-manager"
	t.Run("least privilege", func(t *testing.T) {
		user := "system:serviceaccount:" + ns + ":" + sa
		cases := []struct {
			attrs authorizationv1.ResourceAttributes
			allow bool
		}{
			{authorizationv1.ResourceAttributes{Namespace: "science", Verb: "create", Group: "apps", Resource: "deployments"}, true},
			{authorizationv1.ResourceAttributes{Namespace: "science", Verb: "patch", Resource: "services"}, true},
			{authorizationv1.ResourceAttributes{Namespace: "science", Verb: "create", Resource: "secrets"}, true},
			{authorizationv1.ResourceAttributes{Namespace: "science", Verb: "watch", Resource: "pods"}, true},
			{authorizationv1.ResourceAttributes{Namespace: "science", Verb: "update", Group: "scitunnel.io", Resource: "streamtunnels", Subresource: "status"}, true},
			{authorizationv1.ResourceAttributes{Namespace: "science", Verb: "update", Group: "scitunnel.io", Resource: "scitagpolicies", Subresource: "finalizers"}, true},
			{authorizationv1.ResourceAttributes{Namespace: "science", Verb: "create", Group: "events.k8s.io", Resource: "events"}, true},
			{authorizationv1.ResourceAttributes{Namespace: ns, Verb: "update", Group: "coordination.k8s.io", Resource: "leases"}, true},
			// Leader election's own event, through the core/v1 Events API.
			{authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "events"}, true},
			// Not needed, so not granted:
			{authorizationv1.ResourceAttributes{Namespace: "kube-system", Verb: "update", Group: "coordination.k8s.io", Resource: "leases"}, false},
			{authorizationv1.ResourceAttributes{Namespace: "science", Verb: "create", Resource: "pods"}, false},
			{authorizationv1.ResourceAttributes{Namespace: "science", Verb: "create", Resource: "pods", Subresource: "exec"}, false},
			{authorizationv1.ResourceAttributes{Namespace: "science", Verb: "create", Group: "scitunnel.io", Resource: "streamtunnels"}, false},
			{authorizationv1.ResourceAttributes{Namespace: "science", Verb: "delete", Group: "scitunnel.io", Resource: "streamtunnels"}, false},
			{authorizationv1.ResourceAttributes{Verb: "delete", Resource: "nodes"}, false},
			{authorizationv1.ResourceAttributes{Verb: "list", Resource: "namespaces"}, false},
			{authorizationv1.ResourceAttributes{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings"}, false},
			{authorizationv1.ResourceAttributes{Verb: "update", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"}, false},
			{authorizationv1.ResourceAttributes{Namespace: "science", Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "roles"}, false},
		}
		for _, tc := range cases {
			a := tc.attrs
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:               user,
				Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
				ResourceAttributes: &a,
			}}
			if err := c.Create(ctx, sar); err != nil {
				t.Fatal(err)
			}
			if sar.Status.Allowed != tc.allow {
				t.Errorf("%s may %s %s/%s/%s in %q: %v, want %v (%s)", sa, a.Verb, a.Group, a.Resource, a.Subresource,
					a.Namespace, sar.Status.Allowed, tc.allow, sar.Status.Reason)
			}
		}
	})

	t.Run("the manager runs as the chart's ServiceAccount with the chart's arguments", func(t *testing.T) {
		runManagerAsChart(ctx, t, c, cfg, ns, sa)
	})

	t.Run("uninstall keeps the CRDs and the tunnels", func(t *testing.T) {
		for _, rel := range []string{"local-cluster", "minimal", "monitoring"} {
			helmRun(t, "uninstall", rel, "--namespace", "rel-"+rel)
		}
		out := helmRun(t, "uninstall", "scitunnel", "--namespace", ns)
		if !strings.Contains(out, "resource-policy") && !strings.Contains(out, "kept") {
			t.Logf("helm uninstall output: %s", out)
		}
		if n, err := crdsPresent(); err != nil || n != 2 {
			t.Fatalf("%d of 2 CRDs left after uninstalling a crds.keep release (%v)", n, err)
		}
		var tunnels unstructured.UnstructuredList
		tunnels.SetAPIVersion("scitunnel.io/v1alpha1")
		tunnels.SetKind("StreamTunnelList")
		if err := c.List(ctx, &tunnels, client.InNamespace("science")); err != nil || len(tunnels.Items) != 2 {
			t.Errorf("the sample tunnels did not survive the uninstall: %d left (%v)", len(tunnels.Items), err)
		}
		var d unstructured.Unstructured
		d.SetAPIVersion("apps/v1")
		d.SetKind("Deployment")
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "scitunnel-controller-manager"}, &d); !apierrors.IsNotFound(err) {
			t.Errorf("the manager Deployment is still there after uninstall: %v", err)
		}
	})
}

// runManagerAsChart starts the manager binary with the arguments of the chart's Deployment,
// authenticated as the chart's ServiceAccount (impersonation), and checks that it takes its
// leader-election Lease in the release namespace and reconciles the samples into proxy
// Deployments, Services, ConfigMaps and Secrets without a single "forbidden" in its log.
func runManagerAsChart(ctx context.Context, t *testing.T, c client.Client, cfg *rest.Config, ns, sa string) {
	dir := t.TempDir()
	manager := filepath.Join(dir, "manager")
	build := exec.Command("go", "build", "-o", manager, "./cmd")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd: %v\n%s", err, out)
	}

	// A kubeconfig that acts as system:serviceaccount:NS:SA.
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["sa"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken,
		Impersonate:       "system:serviceaccount:" + ns + ":" + sa,
		ImpersonateGroups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	kc.Contexts["sa"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "sa"}
	kc.CurrentContext = "sa"
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}

	// The installed Deployment's arguments, with the listen addresses moved to free loopback
	// ports (several managers may run on this machine), plus what a pod gets from its
	// environment: the kubeconfig and the namespace of the leader-election Lease.
	var d unstructured.Unstructured
	d.SetAPIVersion("apps/v1")
	d.SetKind("Deployment")
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "scitunnel-controller-manager"}, &d); err != nil {
		t.Fatal(err)
	}
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	probePort := testutil.FreePort(t)
	args := []string{"--kubeconfig=" + kubeconfig, "--leader-election-namespace=" + ns}
	for _, a := range containers[0].(map[string]any)["args"].([]any) {
		arg := a.(string)
		switch flagName(arg) {
		case "--health-probe-bind-address":
			arg = fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", probePort)
		case "--metrics-bind-address":
			arg = fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", testutil.FreePort(t))
		}
		args = append(args, arg)
	}
	var logBuf testutil.LockedBuffer
	cmd := exec.Command(manager, args...)
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	defer func() {
		if t.Failed() {
			t.Logf("manager log:\n%s", logBuf.String())
		}
	}()

	eventually(t, 60*time.Second, func() error {
		var lease coordinationv1.Lease
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "scitunnel-operator.scitunnel.io"}, &lease); err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return fmt.Errorf("lease has no holder")
		}
		return nil
	})

	// The samples, as a user applies them (kubectl apply -k config/samples).
	out, err := run(kustomizeBin(t), "build", filepath.Join(repoRoot(), "config", "samples"))
	if err != nil {
		t.Fatal(err)
	}
	samples, err := decodeObjects(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "science"}}); err != nil {
		t.Fatal(err)
	}
	var tunnels []string
	for _, o := range samples {
		o.SetNamespace("science")
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("create sample %s %s: %v", o.GetKind(), o.GetName(), err)
		}
		if o.GetKind() == "StreamTunnel" {
			tunnels = append(tunnels, o.GetName())
		}
	}
	if len(tunnels) < 2 {
		t.Fatalf("config/samples has %d StreamTunnels, want an inbound/outbound pair", len(tunnels))
	}
	eventually(t, 60*time.Second, func() error {
		for _, name := range tunnels {
			for _, child := range []struct{ apiVersion, kind, name string }{
				{"apps/v1", "Deployment", name},
				{"v1", "Service", name},
				{"v1", "ConfigMap", name + "-config"},
				{"v1", "Secret", name + "-tls"},
			} {
				var o unstructured.Unstructured
				o.SetAPIVersion(child.apiVersion)
				o.SetKind(child.kind)
				if err := c.Get(ctx, client.ObjectKey{Namespace: "science", Name: child.name}, &o); err != nil {
					return fmt.Errorf("%s of tunnel %s: %w", child.kind, name, err)
				}
			}
		}
		return nil
	})
	if strings.Contains(strings.ToLower(logBuf.String()), "forbidden") {
		t.Errorf("the manager was refused something with the chart's RBAC:\n%s", grepLines(logBuf.String(), "forbidden"))
	}
}

// waitEstablished waits until both SciTunnel CRDs are served.
func waitEstablished(ctx context.Context, t *testing.T, c client.Client) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		for _, name := range []string{"streamtunnels.scitunnel.io", "scitagpolicies.scitunnel.io"} {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := c.Get(ctx, client.ObjectKey{Name: name}, &crd); err != nil {
				return err
			}
			established := false
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					established = true
				}
			}
			if !established {
				return fmt.Errorf("CRD %s not Established", name)
			}
		}
		return nil
	})
}

// applyFile creates every object of a YAML file (already existing ones are left as they are).
func applyFile(ctx context.Context, t *testing.T, c client.Client, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeObjects(string(b))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}

// eventually retries f until it succeeds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func grepLines(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(strings.ToLower(l), word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
