package helm_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// syncHint is what to do when the chart lags behind config/.
const syncHint = "run `make chart-sync` (after `make manifests`) and commit charts/scitunnel/files"

// TestChartFilesInSync: the chart's copies of the generated CRDs and of config/rbac's roles are
// byte-for-byte what config/ holds. This is what fails when someone changes the API types or
// RBAC markers, runs `make manifests`, and forgets `make chart-sync`.
func TestChartFilesInSync(t *testing.T) {
	for _, pair := range []struct{ src, dst string }{
		{"config/crd/bases/*.yaml", "charts/scitunnel/files/crds"},
		{"config/rbac/*role.yaml", "charts/scitunnel/files/rbac"},
	} {
		src, err := filepath.Glob(filepath.Join(repoRoot(), pair.src))
		if err != nil || len(src) == 0 {
			t.Fatalf("nothing matches %s: %v", pair.src, err)
		}
		want := map[string][]byte{}
		for _, f := range src {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			want[filepath.Base(f)] = b
		}
		dst, _ := filepath.Glob(filepath.Join(repoRoot(), pair.dst, "*.yaml"))
		got := map[string][]byte{}
		for _, f := range dst {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			got[filepath.Base(f)] = b
		}
		for name, b := range want {
			switch g, ok := got[name]; {
			case !ok:
				t.Errorf("%s/%s is missing (%s holds it): %s", pair.dst, name, filepath.Dir(pair.src), syncHint)
			case !bytes.Equal(g, b):
				t.Errorf("%s/%s differs from %s/%s: %s", pair.dst, name, filepath.Dir(pair.src), name, syncHint)
			}
		}
		for name := range got {
			if _, ok := want[name]; !ok {
				t.Errorf("%s/%s has no source in %s any more: %s", pair.dst, name, filepath.Dir(pair.src), syncHint)
			}
		}
	}
}

// TestChartMatchesKustomize renders config/default with kustomize and the chart with helm and
// compares what matters semantically: the CRD specs, and the permissions (every rule expanded to
// single group/resource/verb grants) of each role and of the manager's ServiceAccount as a
// whole. The chart must grant the manager exactly what config/ does: no less (the operator would
// fail) and no more (least privilege).
func TestChartMatchesKustomize(t *testing.T) {
	out, err := run(kustomizeBin(t), "build", filepath.Join(repoRoot(), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	kust, err := decodeObjects(out)
	if err != nil {
		t.Fatalf("kustomize output: %v", err)
	}
	chart := render(t)

	t.Run("CRDs", func(t *testing.T) {
		kcrds, hcrds := byName(find(kust, "CustomResourceDefinition")), byName(find(chart, "CustomResourceDefinition"))
		if len(kcrds) == 0 {
			t.Fatal("kustomize rendered no CRDs")
		}
		for name, k := range kcrds {
			h, ok := hcrds[name]
			if !ok {
				t.Errorf("CRD %s is in config/ but not in the chart: %s", name, syncHint)
				continue
			}
			if !reflect.DeepEqual(k.Object["spec"], h.Object["spec"]) {
				t.Errorf("CRD %s: the chart's spec differs from config/'s: %s\n%s", name, syncHint,
					firstDifference(k.Object["spec"], h.Object["spec"], "spec"))
			}
		}
		for name := range hcrds {
			if _, ok := kcrds[name]; !ok {
				t.Errorf("the chart installs CRD %s, which config/ does not have", name)
			}
		}
	})

	t.Run("roles", func(t *testing.T) {
		// Each Role and ClusterRole of config/ has a chart counterpart of the same kind with the
		// same grants and the same aggregation labels. Names differ (kustomize's namePrefix, the
		// chart's fullname), so roles are matched by content.
		hroles := append(find(chart, "ClusterRole"), find(chart, "Role")...)
		used := map[*unstructured.Unstructured]bool{}
		for _, k := range append(find(kust, "ClusterRole"), find(kust, "Role")...) {
			kg := grants(t, k)
			var match *unstructured.Unstructured
			for _, h := range hroles {
				if !used[h] && h.GetKind() == k.GetKind() && slices.Equal(kg, grants(t, h)) &&
					reflect.DeepEqual(aggregation(k), aggregation(h)) {
					match = h
					break
				}
			}
			if match == nil {
				t.Errorf("%s %s (config/rbac) has no chart counterpart with the same rules and aggregation labels: %s\nits grants: %s",
					k.GetKind(), k.GetName(), syncHint, strings.Join(kg, " "))
				continue
			}
			used[match] = true
		}
		for _, h := range hroles {
			if !used[h] {
				t.Errorf("the chart renders %s %s, which config/rbac does not have", h.GetKind(), h.GetName())
			}
		}
	})

	t.Run("manager ServiceAccount", func(t *testing.T) {
		kg := boundGrants(t, kust)
		hg := boundGrants(t, chart)
		if len(kg) == 0 {
			t.Fatal("config/ binds nothing to the manager's ServiceAccount")
		}
		if missing := diff(kg, hg); len(missing) > 0 {
			t.Errorf("the chart's manager lacks grants config/ gives it: %s", strings.Join(missing, " "))
		}
		if extra := diff(hg, kg); len(extra) > 0 {
			t.Errorf("the chart's manager has grants config/ does not give it: %s", strings.Join(extra, " "))
		}
	})

	t.Run("manager flags", func(t *testing.T) {
		// Every flag config/manager sets, the chart sets too (values may differ: images, ports).
		kd := find(kust, "Deployment")
		if len(kd) != 1 {
			t.Fatalf("kustomize rendered %d Deployments", len(kd))
		}
		hargs := map[string]bool{}
		for _, a := range managerArgs(t, chart) {
			hargs[flagName(a)] = true
		}
		for _, c := range field(t, kd[0], "spec", "template", "spec", "containers").([]any) {
			for _, a := range c.(map[string]any)["args"].([]any) {
				if !hargs[flagName(a.(string))] {
					t.Errorf("config/manager passes %s, the chart does not", a)
				}
			}
		}
	})
}

func flagName(arg string) string { name, _, _ := strings.Cut(arg, "="); return name }

func byName(objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	m := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		m[o.GetName()] = o
	}
	return m
}

// aggregation is a role's rbac.authorization.k8s.io/aggregate-to-* labels.
func aggregation(o *unstructured.Unstructured) map[string]string {
	m := map[string]string{}
	for k, v := range o.GetLabels() {
		if strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") {
			m[k] = v
		}
	}
	return m
}

// grants expands a role's rules into sorted single grants "group/resource[/name]:verb" or
// "url:verb", so two rule lists that split or order permissions differently compare equal.
func grants(t *testing.T, role *unstructured.Unstructured) []string {
	t.Helper()
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	set := map[string]bool{}
	strs := func(r map[string]any, key string) []string {
		var out []string
		if l, ok := r[key].([]any); ok {
			for _, v := range l {
				out = append(out, fmt.Sprint(v))
			}
		}
		return out
	}
	for _, raw := range rules {
		r := raw.(map[string]any)
		for _, verb := range strs(r, "verbs") {
			for _, url := range strs(r, "nonResourceURLs") {
				set["url:"+url+":"+verb] = true
			}
			for _, g := range strs(r, "apiGroups") {
				for _, res := range strs(r, "resources") {
					names := strs(r, "resourceNames")
					if len(names) == 0 {
						names = []string{"*"}
					}
					for _, n := range names {
						set[fmt.Sprintf("%s/%s/%s:%s", g, res, n, verb)] = true
					}
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for g := range set {
		out = append(out, g)
	}
	sort.Strings(out)
	return out
}

// boundGrants are the grants of every role bound to the manager's ServiceAccount (the subject
// of the binding to the ClusterRole holding streamtunnels/status), tagged with the binding's
// scope ("cluster" or "namespace").
func boundGrants(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	roles := map[string]*unstructured.Unstructured{}
	for _, kind := range []string{"ClusterRole", "Role"} {
		for _, o := range find(objs, kind) {
			roles[kind+"/"+o.GetName()] = o
		}
	}
	// The manager's ServiceAccount: the one bound to a role that may update streamtunnels/status.
	sa := ""
	bindings := append(find(objs, "ClusterRoleBinding"), find(objs, "RoleBinding")...)
	for _, b := range bindings {
		ref := b.Object["roleRef"].(map[string]any)
		role := roles[fmt.Sprint(ref["kind"])+"/"+fmt.Sprint(ref["name"])]
		if role != nil && slices.Contains(grants(t, role), "scitunnel.io/streamtunnels/status/*:update") {
			sa = fmt.Sprint(b.Object["subjects"].([]any)[0].(map[string]any)["name"])
		}
	}
	if sa == "" {
		t.Fatal("no binding grants a ServiceAccount streamtunnels/status update")
	}
	set := map[string]bool{}
	for _, b := range bindings {
		bound := false
		for _, s := range b.Object["subjects"].([]any) {
			s := s.(map[string]any)
			if s["kind"] == "ServiceAccount" && s["name"] == sa {
				bound = true
			}
		}
		if !bound {
			continue
		}
		ref := b.Object["roleRef"].(map[string]any)
		role := roles[fmt.Sprint(ref["kind"])+"/"+fmt.Sprint(ref["name"])]
		if role == nil {
			t.Errorf("%s %s binds %v %v, which is not rendered", b.GetKind(), b.GetName(), ref["kind"], ref["name"])
			continue
		}
		scope := "cluster"
		if b.GetKind() == "RoleBinding" {
			scope = "namespace"
		}
		for _, g := range grants(t, role) {
			set[scope+" "+g] = true
		}
	}
	out := make([]string, 0, len(set))
	for g := range set {
		out = append(out, g)
	}
	sort.Strings(out)
	return out
}

// diff is a minus b.
func diff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// firstDifference describes where two decoded YAML trees first differ.
func firstDifference(a, b any, path string) string {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: map vs %T", path, b)
		}
		keys := map[string]bool{}
		for k := range av {
			keys[k] = true
		}
		for k := range bv {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			if !reflect.DeepEqual(av[k], bv[k]) {
				return firstDifference(av[k], bv[k], path+"."+k)
			}
		}
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			return fmt.Sprintf("%s: list of %d vs %v", path, len(av), b)
		}
		for i := range av {
			if !reflect.DeepEqual(av[i], bv[i]) {
				return firstDifference(av[i], bv[i], fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	return fmt.Sprintf("%s: config/ has %v, the chart %v", path, a, b)
}
