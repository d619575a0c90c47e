package helm_test

import (
	"slices"
	"strings"
	"testing"
)

// TestTunnelNetworkPolicyFlags: by default the manager makes each tunnel's NetworkPolicy and
// names itself by the release namespace and the labels its own pods carry, so the policies admit
// it; networkPolicy.tunnels.enabled=false turns them off.
func TestTunnelNetworkPolicyFlags(t *testing.T) {
	objs := render(t, "--set", "networkPolicy.tunnels.monitoringNamespace=monitoring")
	args := managerArgs(t, objs)
	for _, want := range []string{"--tunnel-network-policies=true", "--manager-namespace=" + releaseNS, "--monitoring-namespace=monitoring"} {
		if !slices.Contains(args, want) {
			t.Errorf("manager args %v lack %s", args, want)
		}
	}
	podLabels := field(t, one(t, objs, "Deployment", ""), "spec", "template", "metadata", "labels").(map[string]any)
	i := slices.IndexFunc(args, func(a string) bool { return strings.HasPrefix(a, "--manager-pod-labels=") })
	if i < 0 {
		t.Fatalf("manager args %v lack --manager-pod-labels", args)
	}
	for _, kv := range strings.Split(strings.TrimPrefix(args[i], "--manager-pod-labels="), ",") {
		k, v, _ := strings.Cut(kv, "=")
		if podLabels[k] != v {
			t.Errorf("--manager-pod-labels has %s=%s, the manager's pods %v", k, v, podLabels)
		}
	}

	args = managerArgs(t, render(t, "--set", "networkPolicy.tunnels.enabled=false"))
	if !slices.Contains(args, "--tunnel-network-policies=false") {
		t.Errorf("disabled: manager args %v lack --tunnel-network-policies=false", args)
	}
}
