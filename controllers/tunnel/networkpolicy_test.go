package tunnel

import "testing"

// A rule with ports and no peers admits every source: with no manager namespace and no
// monitoring namespace there must be no peers, and so no rule.
func TestEndpointPeers(t *testing.T) {
	if p := (NetworkPolicyOptions{Enabled: true, ManagerPodLabels: map[string]string{"a": "b"}}).endpointPeers(); len(p) != 0 {
		t.Errorf("peers %v without a manager namespace", p)
	}
	o := NetworkPolicyOptions{Enabled: true, ManagerNamespace: "ops", MonitoringNamespace: "mon"}
	p := o.endpointPeers()
	if len(p) != 2 || p[0].PodSelector != nil || p[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "ops" ||
		p[1].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "mon" {
		t.Errorf("peers %+v", p)
	}
}
