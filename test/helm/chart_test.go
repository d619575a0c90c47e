// Package helm_test checks the Helm chart in charts/scitunnel: helm lint, helm template over the
// values files in values/, the values schema's refusals, drift from the kustomize tree in
// config/ (CRDs and RBAC), and a real `helm install` into envtest's kube-apiserver.
//
// The pinned helm and kustomize binaries come from the Makefile (`make helm kustomize`, which
// `make test-go` and `make test-helm` depend on); HELM and KUSTOMIZE override their paths.
package helm_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// kubeVersion is the Kubernetes version charts are rendered for: the envtest and local-cluster
// binaries' (helm template otherwise assumes v1.20).
const kubeVersion = "1.37.2"

// repoRoot is the repository's root, found from this file's location.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func chartDir() string { return filepath.Join(repoRoot(), "charts", "scitunnel") }

// tool finds a pinned tool: $ENV, else bin/NAME. Missing, the test is skipped with the command
// that builds it, except in CI (SCITUNNEL_REQUIRE_PRIVILEGED=1) where it fails.
func tool(t *testing.T, env, name string) string {
	t.Helper()
	path := os.Getenv(env)
	if path == "" {
		path = filepath.Join(repoRoot(), "bin", name)
	}
	if _, err := os.Stat(path); err != nil {
		msg := fmt.Sprintf("%s not found at %s (build it with `make %s`, or set %s)", name, path, name, env)
		if os.Getenv("SCITUNNEL_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

func helmBin(t *testing.T) string      { return tool(t, "HELM", "helm") }
func kustomizeBin(t *testing.T) string { return tool(t, "KUSTOMIZE", "kustomize") }

// run executes a command and returns its stdout; stderr goes into the error.
func run(name string, args ...string) (string, error) {
	stdout, stderr, err := run3(name, args...)
	if err != nil {
		return stdout, fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr)
	}
	return stdout, nil
}

// run3 executes a command and returns its stdout and stderr apart.
func run3(name string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(name, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// valuesFiles are the chart's test values, one rendering each.
func valuesFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(), "test", "helm", "values", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no values files in test/helm/values: %v", err)
	}
	return files
}

// templateArgs are `helm template` arguments for release NAME in namespace NS.
func templateArgs(name, ns string, extra ...string) []string {
	args := []string{"template", name, chartDir(), "--namespace", ns, "--kube-version", kubeVersion,
		// The Prometheus Operator's kinds, so charts that check for them render them.
		"--api-versions", "monitoring.coreos.com/v1"}
	return append(args, extra...)
}

// The release the tests render, and its namespace.
const (
	release   = "scitunnel"
	releaseNS = "scitunnel-system"
)

// render runs helm template for the release and decodes every object.
func render(t *testing.T, extra ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := run(helmBin(t), templateArgs(release, releaseNS, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeObjects(out)
	if err != nil {
		t.Fatalf("helm template output does not decode: %v", err)
	}
	return objs
}

// decodeObjects splits a multi-document YAML stream into objects, skipping empty documents.
func decodeObjects(stream string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// find returns the objects of a kind.
func find(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// one returns the single object of kind whose name ends with suffix.
func one(t *testing.T, objs []*unstructured.Unstructured, kind, suffix string) *unstructured.Unstructured {
	t.Helper()
	var match []*unstructured.Unstructured
	for _, o := range find(objs, kind) {
		if strings.HasSuffix(o.GetName(), suffix) {
			match = append(match, o)
		}
	}
	if len(match) != 1 {
		t.Fatalf("want exactly one %s named *%s, got %d (%s)", kind, suffix, len(match), names(objs))
	}
	return match[0]
}

func names(objs []*unstructured.Unstructured) string {
	var s []string
	for _, o := range objs {
		s = append(s, o.GetKind()+"/"+o.GetName())
	}
	return strings.Join(s, ", ")
}

// field reads a nested field or fails.
func field(t *testing.T, o *unstructured.Unstructured, path ...string) any {
	t.Helper()
	v, ok, err := unstructured.NestedFieldNoCopy(o.Object, path...)
	if err != nil || !ok {
		t.Fatalf("%s/%s: no field %s (%v)", o.GetKind(), o.GetName(), strings.Join(path, "."), err)
	}
	return v
}

// managerContainer is the rendered Deployment's manager container.
func managerContainer(t *testing.T, objs []*unstructured.Unstructured) map[string]any {
	t.Helper()
	d := one(t, objs, "Deployment", "-controller-manager")
	cs := field(t, d, "spec", "template", "spec", "containers").([]any)
	for _, c := range cs {
		if c.(map[string]any)["name"] == "manager" {
			return c.(map[string]any)
		}
	}
	t.Fatalf("no manager container in %s", d.GetName())
	return nil
}

func managerArgs(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	var args []string
	for _, a := range managerContainer(t, objs)["args"].([]any) {
		args = append(args, a.(string))
	}
	return args
}

// appVersion is Chart.yaml's appVersion: the default image tag.
func appVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(), "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil || c.AppVersion == "" {
		t.Fatalf("Chart.yaml has no appVersion: %v", err)
	}
	return c.AppVersion
}

func TestLint(t *testing.T) {
	helm := helmBin(t)
	for _, f := range valuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := run(helm, "lint", "--strict", chartDir(), "--namespace", "scitunnel-system",
				"--kube-version", kubeVersion, "-f", f)
			if err != nil {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint did not pass:\n%s", out)
			}
		})
	}
}

// TestTemplateInvariants holds for every values file: the objects are well-formed, namespaced
// in the release namespace, labelled, and wired to each other (Service and monitors select the
// manager's pods, bindings name roles and the ServiceAccount the Deployment runs as).
func TestTemplateInvariants(t *testing.T) { //nolint:gocyclo // one t.Run per values file; gocyclo counts the checks of the subtest closure as the parent's
	const ns = releaseNS
	for _, f := range valuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			objs := render(t, "-f", f)
			if len(objs) == 0 {
				t.Fatal("nothing rendered")
			}
			seen := map[string]bool{}
			for _, o := range objs {
				id := o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
				if seen[id] {
					t.Errorf("%s rendered twice", id)
				}
				seen[id] = true
				if o.GetAPIVersion() == "" || o.GetKind() == "" || o.GetName() == "" {
					t.Errorf("object without apiVersion/kind/name: %v", o.Object)
				}
				if len(o.GetName()) > 63 && o.GetKind() != "CustomResourceDefinition" {
					t.Errorf("%s: name longer than 63 characters", id)
				}
				if o.GetLabels()["app.kubernetes.io/managed-by"] != "Helm" {
					t.Errorf("%s: no app.kubernetes.io/managed-by=Helm label", id)
				}
				if clusterScoped[o.GetKind()] {
					if o.GetNamespace() != "" {
						t.Errorf("%s: cluster-scoped kind with a namespace", id)
					}
				} else if o.GetNamespace() == "" {
					t.Errorf("%s: namespaced object without namespace (helm template -n must set it)", id)
				}
			}

			d := one(t, objs, "Deployment", "-controller-manager")
			podLabels, _, _ := unstructured.NestedStringMap(d.Object, "spec", "template", "metadata", "labels")
			selector, _, _ := unstructured.NestedStringMap(d.Object, "spec", "selector", "matchLabels")
			if !subset(selector, podLabels) {
				t.Errorf("Deployment selector %v does not select its pod labels %v", selector, podLabels)
			}
			for _, kind := range []string{"Service", "NetworkPolicy", "ServiceMonitor"} {
				for _, o := range find(objs, kind) {
					path := map[string][]string{
						"Service":        {"spec", "selector"},
						"NetworkPolicy":  {"spec", "podSelector", "matchLabels"},
						"ServiceMonitor": {"spec", "selector", "matchLabels"},
					}[kind]
					sel, _, _ := unstructured.NestedStringMap(o.Object, path...)
					if len(sel) == 0 || !subset(sel, podLabels) {
						t.Errorf("%s %s selects %v, not the manager pods %v", kind, o.GetName(), sel, podLabels)
					}
				}
			}
			for _, o := range find(objs, "ServiceMonitor") {
				port := field(t, o, "spec", "endpoints").([]any)[0].(map[string]any)["port"]
				svc := one(t, objs, "Service", "-metrics")
				svcPort := field(t, svc, "spec", "ports").([]any)[0].(map[string]any)["name"]
				if port != svcPort {
					t.Errorf("ServiceMonitor scrapes port %v, the Service names it %v", port, svcPort)
				}
			}

			sa, _, _ := unstructured.NestedString(d.Object, "spec", "template", "spec", "serviceAccountName")
			roles := map[string]bool{}
			for _, kind := range []string{"ClusterRole", "Role"} {
				for _, o := range find(objs, kind) {
					roles[kind+"/"+o.GetName()] = true
				}
			}
			for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
				for _, o := range find(objs, kind) {
					ref := field(t, o, "roleRef").(map[string]any)
					if !roles[fmt.Sprint(ref["kind"])+"/"+fmt.Sprint(ref["name"])] {
						t.Errorf("%s %s binds %v/%v, which the chart does not render", kind, o.GetName(), ref["kind"], ref["name"])
					}
					subj := field(t, o, "subjects").([]any)[0].(map[string]any)
					if subj["name"] != sa || subj["namespace"] != ns {
						t.Errorf("%s %s binds %v/%v, the manager runs as %s/%s", kind, o.GetName(), subj["namespace"], subj["name"], ns, sa)
					}
				}
			}

			c := managerContainer(t, objs)
			sc := c["securityContext"].(map[string]any)
			if sc["allowPrivilegeEscalation"] != false || sc["readOnlyRootFilesystem"] != true {
				t.Errorf("manager securityContext is not hardened: %v", sc)
			}
			if drop := fmt.Sprint(sc["capabilities"].(map[string]any)["drop"]); drop != "[ALL]" {
				t.Errorf("manager does not drop all capabilities: %v", drop)
			}
			psc, _, _ := unstructured.NestedMap(d.Object, "spec", "template", "spec", "securityContext")
			if psc["runAsNonRoot"] != true {
				t.Errorf("manager pod is not runAsNonRoot: %v", psc)
			}
		})
	}
}

// clusterScoped are the kinds the chart renders without a namespace.
var clusterScoped = map[string]bool{
	"CustomResourceDefinition": true, "ClusterRole": true, "ClusterRoleBinding": true,
}

func subset(small, big map[string]string) bool {
	for k, v := range small {
		if big[k] != v {
			return false
		}
	}
	return true
}

// TestTemplateValues checks that each values file does what it says.
func TestTemplateValues(t *testing.T) { //nolint:gocyclo // one t.Run per values file, each a few checks; gocyclo adds every closure's branches to the parent
	const ns = releaseNS
	values := func(name string) string { return filepath.Join(repoRoot(), "test", "helm", "values", name) }
	version := appVersion(t)

	t.Run("default.yaml", func(t *testing.T) {
		objs := render(t, "-f", values("default.yaml"))
		kinds := map[string]int{}
		for _, o := range objs {
			kinds[o.GetKind()]++
		}
		want := map[string]int{"CustomResourceDefinition": 2, "ServiceAccount": 1, "ClusterRole": 5,
			"ClusterRoleBinding": 2, "Role": 1, "RoleBinding": 1, "Service": 1, "Deployment": 1}
		if fmt.Sprint(kinds) != fmt.Sprint(want) {
			t.Errorf("rendered kinds %v, want %v", kinds, want)
		}
		for _, crd := range find(objs, "CustomResourceDefinition") {
			if crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
				t.Errorf("CRD %s lacks helm.sh/resource-policy: keep", crd.GetName())
			}
		}
		c := managerContainer(t, objs)
		if c["image"] != "ghcr.io/scitunnel/manager:"+version {
			t.Errorf("manager image %v, want the appVersion tag %s", c["image"], version)
		}
		args := managerArgs(t, objs)
		for _, want := range []string{"--leader-elect", "--metrics-bind-address=:8443", "--metrics-secure=true",
			"--health-probe-bind-address=:8081", "--dataplane-image=ghcr.io/scitunnel/dataplane:" + version} {
			if !slices.Contains(args, want) {
				t.Errorf("manager args %v lack %s", args, want)
			}
		}
		if slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--dataplane-image-pull-policy") }) {
			t.Errorf("empty dataplane.image.pullPolicy must not pass a flag: %v", args)
		}
		for _, kind := range []string{"ServiceMonitor", "PodMonitor", "ConfigMap", "NetworkPolicy"} {
			if len(find(objs, kind)) != 0 {
				t.Errorf("%s rendered although disabled by default", kind)
			}
		}
		role := one(t, objs, "Role", "-leader-election-role")
		if role.GetNamespace() != ns {
			t.Errorf("leader-election Role in %q, want the release namespace", role.GetNamespace())
		}
	})

	t.Run("local-cluster.yaml", func(t *testing.T) {
		objs := render(t, "-f", values("local-cluster.yaml"))
		c := managerContainer(t, objs)
		if c["image"] != "localhost/scitunnel/manager:e2e" || c["imagePullPolicy"] != "Never" {
			t.Errorf("manager image %v pull %v", c["image"], c["imagePullPolicy"])
		}
		args := managerArgs(t, objs)
		for _, want := range []string{"--dataplane-image=localhost/scitunnel/dataplane:e2e",
			"--dataplane-image-pull-policy=Never", "--zap-log-level=debug", "--throughput-interval=5s"} {
			if !slices.Contains(args, want) {
				t.Errorf("manager args %v lack %s", args, want)
			}
		}
	})

	t.Run("monitoring.yaml", func(t *testing.T) {
		objs := render(t, "-f", values("monitoring.yaml"))
		sm := one(t, objs, "ServiceMonitor", "-controller-manager")
		if sm.GetLabels()["release"] != "kube-prometheus-stack" {
			t.Errorf("ServiceMonitor labels %v lack release=kube-prometheus-stack", sm.GetLabels())
		}
		ep := field(t, sm, "spec", "endpoints").([]any)[0].(map[string]any)
		if ep["scheme"] != "https" || ep["port"] != "https" || ep["interval"] != "15s" || ep["scrapeTimeout"] != "5s" {
			t.Errorf("ServiceMonitor endpoint %v", ep)
		}
		pm := one(t, objs, "PodMonitor", "-proxies")
		if got := fmt.Sprint(field(t, pm, "spec", "namespaceSelector", "matchNames")); got != "[science detectors]" {
			t.Errorf("PodMonitor namespaces %s", got)
		}
		ports := map[string]bool{}
		for _, e := range field(t, pm, "spec", "podMetricsEndpoints").([]any) {
			ports[e.(map[string]any)["port"].(string)] = true
		}
		if !ports["admin"] || !ports["analyzer"] {
			t.Errorf("PodMonitor scrapes %v, want the proxy's admin and the analyzer ports", ports)
		}
		cm := one(t, objs, "ConfigMap", "-dashboard")
		if cm.GetNamespace() != "monitoring" || cm.GetLabels()["grafana_dashboard"] != "1" {
			t.Errorf("dashboard ConfigMap %s/%s labels %v", cm.GetNamespace(), cm.GetName(), cm.GetLabels())
		}
		var dash map[string]any
		raw, _, _ := unstructured.NestedString(cm.Object, "data", "scitunnel.json")
		if err := json.Unmarshal([]byte(raw), &dash); err != nil {
			t.Fatalf("dashboard is not JSON: %v", err)
		}
		np := one(t, objs, "NetworkPolicy", "-allow-metrics")
		port := field(t, np, "spec", "ingress").([]any)[0].(map[string]any)["ports"].([]any)[0].(map[string]any)["port"]
		if fmt.Sprint(port) != "8443" {
			t.Errorf("NetworkPolicy opens port %v, want the metrics port 8443", port)
		}
	})

	t.Run("minimal.yaml", func(t *testing.T) {
		objs := render(t, "-f", values("minimal.yaml"))
		for _, kind := range []string{"CustomResourceDefinition", "ServiceAccount", "Role", "RoleBinding", "Service"} {
			if n := len(find(objs, kind)); n != 0 {
				t.Errorf("%d %s rendered, want none", n, kind)
			}
		}
		if n := len(find(objs, "ClusterRole")); n != 1 {
			t.Errorf("%d ClusterRoles, want only the manager's: %s", n, names(objs))
		}
		crb := one(t, objs, "ClusterRoleBinding", "-manager-rolebinding")
		if s := field(t, crb, "subjects").([]any)[0].(map[string]any)["name"]; s != "platform-provided" {
			t.Errorf("manager bound to %v, want serviceAccount.name platform-provided", s)
		}
		args := managerArgs(t, objs)
		if slices.Contains(args, "--leader-elect") || !slices.Contains(args, "--metrics-bind-address=0") {
			t.Errorf("manager args %v: want no leader election and metrics off", args)
		}
	})

	t.Run("namespaced.yaml", func(t *testing.T) {
		objs := render(t, "-f", values("namespaced.yaml"))
		for _, o := range find(objs, "ClusterRole") {
			if strings.HasSuffix(o.GetName(), "-manager-role") {
				t.Errorf("namespaced install renders the cluster-wide %s", o.GetName())
			}
		}
		var roleNS, bindingNS []string
		for _, o := range find(objs, "Role") {
			if strings.HasSuffix(o.GetName(), "-manager-role") {
				roleNS = append(roleNS, o.GetNamespace())
				if !strings.Contains(fmt.Sprint(field(t, o, "rules")), "secrets") {
					t.Errorf("Role in %s lacks the generated rules", o.GetNamespace())
				}
			}
		}
		for _, o := range find(objs, "RoleBinding") {
			if strings.HasSuffix(o.GetName(), "-manager-rolebinding") {
				bindingNS = append(bindingNS, o.GetNamespace())
			}
		}
		if fmt.Sprint(roleNS) != "[detectors science]" || fmt.Sprint(bindingNS) != "[detectors science]" {
			t.Errorf("manager Roles in %v, RoleBindings in %v; want one of each in detectors and science", roleNS, bindingNS)
		}
		if !slices.Contains(managerArgs(t, objs), "--watch-namespaces=detectors,science") {
			t.Errorf("manager args %v lack --watch-namespaces", managerArgs(t, objs))
		}
	})

	t.Run("ha.yaml", func(t *testing.T) {
		objs := render(t, "-f", values("ha.yaml"))
		d := one(t, objs, "Deployment", "-controller-manager")
		if d.GetName() != "tunnels-controller-manager" {
			t.Errorf("fullnameOverride not applied: %s", d.GetName())
		}
		if r := field(t, d, "spec", "replicas"); fmt.Sprint(r) != "2" {
			t.Errorf("replicas %v", r)
		}
		for _, crd := range find(objs, "CustomResourceDefinition") {
			if _, ok := crd.GetAnnotations()["helm.sh/resource-policy"]; ok {
				t.Errorf("crds.keep=false but CRD %s has the keep policy", crd.GetName())
			}
		}
		c := managerContainer(t, objs)
		if c["image"] != "registry.example.org/scitunnel/manager@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" {
			t.Errorf("digest not used: %v", c["image"])
		}
		args := managerArgs(t, objs)
		for _, want := range []string{"--leader-elect", "--metrics-bind-address=:8080", "--metrics-secure=false",
			"--dataplane-image=registry.example.org/scitunnel/dataplane:v1.2.3", "--dataplane-image-pull-policy=IfNotPresent",
			"--trust-domain=hpc.example.org", "--certificate-duration=720h", "--kube-api-qps=20.5",
			"--zap-log-level=2", "--pprof-bind-address=127.0.0.1:6060"} {
			if !slices.Contains(args, want) {
				t.Errorf("manager args %v lack %s", args, want)
			}
		}
		env := fmt.Sprint(c["env"])
		if !strings.Contains(env, "GOMEMLIMIT") || !strings.Contains(env, "GODEBUG") || !strings.Contains(env, "spec.nodeName") {
			t.Errorf("env %s lacks GOMEMLIMIT or the extra variables", env)
		}
		svc := one(t, objs, "Service", "-metrics")
		p := field(t, svc, "spec", "ports").([]any)[0].(map[string]any)
		if p["name"] != "http" || fmt.Sprint(p["port"]) != "8080" {
			t.Errorf("plain-HTTP metrics Service port %v", p)
		}
		for _, o := range find(objs, "ClusterRole") {
			if strings.Contains(o.GetName(), "metrics-auth") {
				t.Errorf("metrics.secure=false needs no %s", o.GetName())
			}
		}
		spec := field(t, d, "spec", "template", "spec").(map[string]any)
		for _, k := range []string{"affinity", "tolerations", "topologySpreadConstraints", "nodeSelector", "priorityClassName", "imagePullSecrets"} {
			if spec[k] == nil {
				t.Errorf("pod spec lacks %s", k)
			}
		}
		labels, _, _ := unstructured.NestedStringMap(d.Object, "spec", "template", "metadata", "labels")
		if labels["team"] != "science" {
			t.Errorf("podLabels not applied: %v", labels)
		}
	})
}

// TestNotes checks NOTES.txt tells the user what to do next.
func TestNotes(t *testing.T) {
	notes := renderNotes(t)
	for _, want := range []string{
		"kubectl apply -k config/samples",
		"kubectl get tunnels",
		"net.ipv6.flowlabel_reflect",
		"allowed-unsafe-sysctls",
		"rollout status deployment/scitunnel-controller-manager",
		"pod-security.kubernetes.io/enforce=privileged",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES.txt does not mention %q:\n%s", want, notes)
		}
	}
}

// renderNotes renders NOTES.txt offline. helm template skips NOTES.txt, so in a copy of the
// chart it becomes a named template that a ConfigMap includes.
func renderNotes(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := run("cp", "-r", chartDir(), dir); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	tpl := filepath.Join(dir, "scitunnel", "templates")
	notes, err := os.ReadFile(filepath.Join(tpl, "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	wrapped := `{{- define "test.notes" -}}` + string(notes) + `{{- end -}}`
	wrapper := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include \"test.notes\" . | quote }}\n"
	if err := os.WriteFile(filepath.Join(tpl, "_notes.tpl"), []byte(wrapped), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tpl, "notes-test.yaml"), []byte(wrapper), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(helmBin(t), "template", "scitunnel", filepath.Join(dir, "scitunnel"), "--namespace",
		"scitunnel-system", "--kube-version", kubeVersion, "--show-only", "templates/notes-test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeObjects(out)
	if err != nil || len(objs) != 1 {
		t.Fatalf("notes wrapper: %v %s", err, out)
	}
	text, _, _ := unstructured.NestedString(objs[0].Object, "data", "notes")
	return text
}

// TestDashboardMetricsExist: every metric the Grafana dashboard queries is one the data plane
// exports (its name appears as a string in dataplane/), so a renamed metric cannot leave a
// silently empty panel.
func TestDashboardMetricsExist(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir(), "files", "dashboards", "scitunnel.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var source strings.Builder
	err = filepath.WalkDir(filepath.Join(repoRoot(), "dataplane"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		source.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Metric names: identifiers followed by a label matcher or a closing parenthesis.
	metric := regexp.MustCompile(`\b(scit[a-z_]+)\s*[{)\[]`)
	seen := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range metric.FindAllStringSubmatch(tg.Expr, -1) {
				seen++
				if !strings.Contains(source.String(), `"`+m[1]+`"`) {
					t.Errorf("panel %q queries %s, which nothing in dataplane/ exports", p.Title, m[1])
				}
			}
		}
	}
	if seen < 5 {
		t.Fatalf("found only %d metric references in the dashboard", seen)
	}
}
