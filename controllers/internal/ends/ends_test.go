package ends

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
)

func TestFormatPorts(t *testing.T) {
	for _, c := range []struct {
		ports []int
		want  string
	}{
		{nil, ""}, {[]int{5100}, "5100"}, {[]int{5100, 5101, 5102}, "5100-5102"}, {[]int{5100, 6000}, "5100,6000"},
		{[]int{5101, 5100}, "5101,5100"},
	} {
		if got := FormatPorts(c.ports); got != c.want {
			t.Errorf("FormatPorts(%v) = %q, want %q", c.ports, got, c.want)
		}
	}
	if got := JoinHostPorts("2001:db8::1", []int{5100, 5101}); got != "[2001:db8::1]:5100-5101" {
		t.Errorf("joinHostPorts IPv6 = %q", got)
	}
}

// WiringProblem is the one wiring check: the Outbound reports it, and the Inbound leaves a peer
// it refuses off its peer list (and so off its proxies' allow-list).
func TestWiringProblem(t *testing.T) {
	in := &scitunnelv1.StreamTunnel{
		ObjectMeta: metav1.ObjectMeta{Namespace: "producer", Name: "in"},
		Spec: scitunnelv1.StreamTunnelSpec{Role: scitunnelv1.RoleInbound, Inbound: &scitunnelv1.InboundSpec{
			ListenPorts: []scitunnelv1.Port{5100, 5101}, AllowedPeerNamespaces: []string{"consumer"}}},
	}
	out := func(ns string, mutate func(*scitunnelv1.StreamTunnel)) *scitunnelv1.StreamTunnel {
		o := &scitunnelv1.StreamTunnel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "out"},
			Spec: scitunnelv1.StreamTunnelSpec{Role: scitunnelv1.RoleOutbound, Outbound: &scitunnelv1.OutboundSpec{
				TunnelRef: &scitunnelv1.TunnelReference{Name: "in", Namespace: "producer"}}}}
		if mutate != nil {
			mutate(o)
		}
		return o
	}
	for _, c := range []struct {
		name string
		out  *scitunnelv1.StreamTunnel
		want string
	}{
		{"same namespace", out("producer", nil), ""},
		{"allowed namespace", out("consumer", nil), ""},
		{"refused namespace", out("stranger", nil), "PeerNamespaceNotAllowed"},
		{"protocol", out("consumer", func(o *scitunnelv1.StreamTunnel) { o.Spec.Protocol = scitunnelv1.ProtocolTCP }), "ProtocolMismatch"},
		{"port count", out("consumer", func(o *scitunnelv1.StreamTunnel) { o.Spec.Outbound.ListenPorts = []scitunnelv1.Port{7100} }), "PortCountMismatch"},
	} {
		got := ""
		if b := WiringProblem(in, c.out); b != nil {
			got = b.Reason
		}
		if got != c.want {
			t.Errorf("%s: WiringProblem = %q, want %q", c.name, got, c.want)
		}
	}
}
