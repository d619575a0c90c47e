package helm_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSchemaRefuses checks that values.schema.json (and the chart's own checks) refuse unknown
// keys and wrong types at every level with a message that names the key, so a typo in --set or
// a values file fails `helm install` instead of being ignored.
func TestSchemaRefuses(t *testing.T) {
	helm := helmBin(t)
	cases := []struct {
		name string
		// args are extra helm arguments; values, when set, is a values file's content.
		args   []string
		values string
		// want are substrings of the error, naming the offending key.
		want []string
	}{
		{name: "unknown top-level key", args: []string{"--set", "replicas=2"},
			want: []string{"at ''", "additional properties 'replicas' not allowed"}},
		{name: "unknown nested key", args: []string{"--set", "manager.leaderElection.enable=false"},
			want: []string{"at '/manager/leaderElection'", "'enable' not allowed"}},
		{name: "mistyped section", args: []string{"--set", "metric.enabled=false"},
			want: []string{"additional properties 'metric' not allowed"}},
		{name: "string for integer", args: []string{"--set", "manager.replicas=two"},
			want: []string{"at '/manager/replicas'", "want integer"}},
		{name: "string for boolean", args: []string{"--set-string", "crds.keep=yes"},
			want: []string{"at '/crds/keep'", "want boolean"}},
		{name: "number for string", args: []string{"--set", "metrics.serviceMonitor.interval=30"},
			want: []string{"at '/metrics/serviceMonitor/interval'", "want string"}},
		{name: "port out of range", args: []string{"--set", "metrics.port=70000"},
			want: []string{"at '/metrics/port'", "maximum"}},
		{name: "pull policy not an enum value", args: []string{"--set", "image.pullPolicy=Sometimes"},
			want: []string{"at '/image/pullPolicy'", "IfNotPresent"}},
		{name: "empty dataplane repository", args: []string{"--set", "dataplane.image.repository="},
			want: []string{"at '/dataplane/image/repository'"}},
		{name: "malformed digest", args: []string{"--set", "image.digest=sha256:xyz"},
			want: []string{"at '/image/digest'"}},
		{name: "not a duration", args: []string{"--set", "manager.certificateDuration=90days"},
			want: []string{"at '/manager/certificateDuration'"}},
		{name: "log level", args: []string{"--set", "manager.logLevel=verbose"},
			want: []string{"at '/manager/logLevel'"}},
		{name: "extra arg without dashes", args: []string{"--set", "manager.extraArgs[0]=leader-elect"},
			want: []string{"at '/manager/extraArgs/0'"}},
		{name: "toleration effect", args: []string{"--set", "manager.tolerations[0].effect=NoSchedul"},
			want: []string{"at '/manager/tolerations/0/effect'"}},
		{name: "unknown key deep in a pod field",
			values: "manager:\n  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - topologyKey: kubernetes.io/hostname\n        labelSelectr: {}\n",
			want:   []string{"at '/manager/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/0'", "'labelSelectr' not allowed"}},
		{name: "unknown securityContext key", values: "manager:\n  securityContext:\n    runAsUsr: 1000\n",
			want: []string{"at '/manager/securityContext'", "'runAsUsr' not allowed"}},
		{name: "label value not a string", values: "manager:\n  podLabels:\n    tier: 3\n",
			want: []string{"at '/manager/podLabels/tier'", "want string"}},
		{name: "resources typo", values: "manager:\n  resources:\n    limit:\n      memory: 1Gi\n",
			want: []string{"at '/manager/resources'", "'limit' not allowed"}},
		{name: "bad quantity", values: "manager:\n  resources:\n    limits:\n      memory: lots\n",
			want: []string{"at '/manager/resources/limits/memory'"}},
		// Rules across keys live in the templates, with messages naming both keys.
		{name: "replicas without leader election", args: []string{"--set", "manager.replicas=2", "--set", "manager.leaderElection.enabled=false"},
			want: []string{"manager.replicas > 1 needs manager.leaderElection.enabled=true"}},
		{name: "no ServiceAccount to run as", args: []string{"--set", "serviceAccount.create=false"},
			want: []string{"serviceAccount.name is required when serviceAccount.create is false"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := templateArgs("scitunnel", "scitunnel-system", c.args...)
			if c.values != "" {
				f := filepath.Join(t.TempDir(), "values.yaml")
				if err := os.WriteFile(f, []byte(c.values), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "-f", f)
			}
			out, stderr, err := run3(helm, args...)
			if err == nil {
				t.Fatalf("helm template accepted the values; rendered %d bytes", len(out))
			}
			// Only helm's message counts (the command line would contain the key too).
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("helm's error does not contain %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestSchemaAcceptsValuesYAML: every key of the chart's own values.yaml is known to the schema
// (helm validates the defaults too), and a values file that sets every documented key renders.
func TestSchemaAcceptsValuesYAML(t *testing.T) {
	helm := helmBin(t)
	if out, err := run(helm, templateArgs("scitunnel", "scitunnel-system", "-f", filepath.Join(chartDir(), "values.yaml"))...); err != nil {
		t.Fatalf("the chart's own values.yaml is refused: %v\n%s", err, out)
	}
}
