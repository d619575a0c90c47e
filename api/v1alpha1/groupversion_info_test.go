package v1alpha1

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
)

func TestAddToScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"StreamTunnel", "StreamTunnelList", "ScitagPolicy", "ScitagPolicyList"} {
		if !s.Recognizes(GroupVersion.WithKind(kind)) {
			t.Errorf("the scheme does not know %s", GroupVersion.WithKind(kind))
		}
	}
	// metav1's options kinds, which the client needs for list/watch/delete on this group-version.
	for _, kind := range []string{"ListOptions", "DeleteOptions", "GetOptions"} {
		if !s.Recognizes(GroupVersion.WithKind(kind)) {
			t.Errorf("the scheme does not know %s", GroupVersion.WithKind(kind))
		}
	}
	gvks, _, err := s.ObjectKinds(&StreamTunnel{})
	if err != nil || len(gvks) != 1 || gvks[0] != GroupVersion.WithKind("StreamTunnel") {
		t.Errorf("StreamTunnel's kinds: %v, %v", gvks, err)
	}
}
