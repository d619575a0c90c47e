package tunnel

// The tunnel's NetworkPolicy: the proxy pods' admin (9090) and analyzer (9091, 6343) ports
// serve peer addresses and identities (/v1/connections) and take sFlow, so only the manager's
// pods (which poll them) and a monitoring namespace may reach them; the listener ports stay
// open to everyone, as without the policy.

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/ssa"
	"github.com/scitunnel/scitunnel/dataplane/contract"
)

// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete

// NetworkPolicyOptions decide whether each tunnel gets a NetworkPolicy, and whom it admits to
// the pods' admin and analyzer ports.
type NetworkPolicyOptions struct {
	// Enabled makes the policy; off, the controller deletes the policies it made.
	Enabled bool
	// ManagerNamespace and ManagerPodLabels pick the manager's pods. Without a namespace the
	// manager is not admitted (it runs outside the cluster, e.g. in tests).
	ManagerNamespace string
	ManagerPodLabels map[string]string
	// MonitoringNamespace, when set, is admitted too (Prometheus scraping :9090 and :9091).
	MonitoringNamespace string
}

// networkPolicyName is the policy's name: the tunnel's, as for its Service.
func networkPolicyName(t *scitunnelv1.StreamTunnel) string { return t.Name }

// reconcileNetworkPolicy applies the tunnel's NetworkPolicy, or deletes it when disabled.
func (r *Reconciler) reconcileNetworkPolicy(ctx context.Context, s *scope) error {
	t := s.tunnel
	o := r.Options.NetworkPolicy
	key := client.ObjectKey{Namespace: t.Namespace, Name: networkPolicyName(t)}
	cur := &networkingv1.NetworkPolicy{}
	found, err := ssa.Get(ctx, r.Client, key, cur)
	if err != nil {
		return err
	}
	if !o.Enabled {
		if found && metav1.IsControlledBy(cur, t) {
			return client.IgnoreNotFound(r.Delete(ctx, cur))
		}
		return nil
	}
	spec := networkingv1ac.NetworkPolicySpec().
		WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(child.SelectorLabels(t))).
		WithPolicyTypes(networkingv1.PolicyTypeIngress)
	if listeners := listenerPorts(t, s.ends.ListenPorts); len(listeners) > 0 {
		// No peers: from everywhere, as the listeners were before the policy.
		spec.WithIngress(networkingv1ac.NetworkPolicyIngressRule().WithPorts(listeners...))
	}
	if peers := o.endpointPeers(); len(peers) > 0 {
		// A rule without peers would admit everyone: with nobody to admit, there is no rule.
		spec.WithIngress(networkingv1ac.NetworkPolicyIngressRule().WithFrom(peers...).WithPorts(endpointPorts()...))
	}
	ac := networkingv1ac.NetworkPolicy(key.Name, key.Namespace).
		WithLabels(child.Labels(t)).
		WithOwnerReferences(child.OwnerRef(t)).
		WithSpec(spec)
	var current client.Object
	if found {
		current = cur
	}
	_, err = r.applier.Apply(ctx, current, ac, nil)
	return err
}

// listenerPorts are the tunnel's listener ports, in the Service's protocol.
func listenerPorts(t *scitunnelv1.StreamTunnel, ports []int) []*networkingv1ac.NetworkPolicyPortApplyConfiguration {
	proto := listenerProtocol(t)
	out := make([]*networkingv1ac.NetworkPolicyPortApplyConfiguration, 0, len(ports))
	for _, p := range ports {
		out = append(out, networkingv1ac.NetworkPolicyPort().WithProtocol(proto).WithPort(intstr.FromInt32(int32(p))))
	}
	return out
}

// endpointPorts are the pod contract's admin, analyzer and sFlow ports.
func endpointPorts() []*networkingv1ac.NetworkPolicyPortApplyConfiguration {
	port := func(proto corev1.Protocol, p int32) *networkingv1ac.NetworkPolicyPortApplyConfiguration {
		return networkingv1ac.NetworkPolicyPort().WithProtocol(proto).WithPort(intstr.FromInt32(p))
	}
	return []*networkingv1ac.NetworkPolicyPortApplyConfiguration{
		port(corev1.ProtocolTCP, contract.AdminPort),
		port(corev1.ProtocolTCP, contract.AnalyzerPort),
		port(corev1.ProtocolUDP, contract.SFlowPort),
	}
}

// endpointPeers are whom the policy admits to the endpoint ports: the manager's pods and the
// monitoring namespace, each when known.
func (o NetworkPolicyOptions) endpointPeers() []*networkingv1ac.NetworkPolicyPeerApplyConfiguration {
	var peers []*networkingv1ac.NetworkPolicyPeerApplyConfiguration
	if o.ManagerNamespace != "" {
		peer := networkingv1ac.NetworkPolicyPeer().WithNamespaceSelector(namespaceNamed(o.ManagerNamespace))
		if len(o.ManagerPodLabels) > 0 {
			peer.WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(o.ManagerPodLabels))
		}
		peers = append(peers, peer)
	}
	if o.MonitoringNamespace != "" {
		peers = append(peers, networkingv1ac.NetworkPolicyPeer().WithNamespaceSelector(namespaceNamed(o.MonitoringNamespace)))
	}
	return peers
}

// namespaceNamed selects one namespace by the label the API server puts on every namespace.
func namespaceNamed(name string) *metav1ac.LabelSelectorApplyConfiguration {
	return metav1ac.LabelSelector().WithMatchLabels(map[string]string{corev1.LabelMetadataName: name})
}
