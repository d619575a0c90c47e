package v1alpha1

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/scitunnel/scitunnel/dataplane/contract"
)

// The CRD's rules spell the pod's own ports as numbers (a marker cannot name a Go constant):
// this test fails when dataplane/contract moves a port and the rules still refuse the old one.
func TestListenerRulesRefuseThePodContractPorts(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", "scitunnel.io_streamtunnels.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	crd := strings.Join(rules(doc), "\n")
	for _, want := range []string{
		fmt.Sprintf("p == %d || p == %d", contract.AdminPort, contract.AnalyzerPort),
		fmt.Sprintf("self.last < %d || self.first > %d", contract.AdminPort, contract.AnalyzerPort),
		fmt.Sprintf("!(%d in self.inbound.listenPorts)", contract.SFlowPort),
		fmt.Sprintf("!(%d in self.outbound.listenPorts)", contract.SFlowPort),
		fmt.Sprintf("!(%d in self.outbound.endpoint.ports)", contract.SFlowPort),
	} {
		if !strings.Contains(crd, want) {
			t.Errorf("the StreamTunnel CRD has no rule with %q: update the listener-port rules in streamtunnel_types.go to dataplane/contract's ports", want)
		}
	}
}

// rules collects every CEL rule of a decoded CRD (YAML folds long rules over lines).
func rules(v any) []string {
	var out []string
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if s, ok := x.(string); ok && k == "rule" {
				out = append(out, s)
			}
			out = append(out, rules(x)...)
		}
	case []any:
		for _, x := range t {
			out = append(out, rules(x)...)
		}
	}
	return out
}
