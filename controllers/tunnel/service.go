package tunnel

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/ends"
	"github.com/scitunnel/scitunnel/controllers/internal/ssa"
)

// listenerProtocol is the L4 protocol of this end's listeners: UDP for the consumer-facing
// ports of a UDP tunnel and for both ends of plain UDP; TCP otherwise (TLS runs over TCP).
func listenerProtocol(t *scitunnelv1.StreamTunnel) corev1.Protocol {
	switch ends.EffectiveProtocol(t) {
	case "UDP/Plain":
		return corev1.ProtocolUDP
	case "UDP/TLS":
		if t.Spec.Role == scitunnelv1.RoleOutbound {
			return corev1.ProtocolUDP
		}
	}
	return corev1.ProtocolTCP
}

func portName(i int) string { return fmt.Sprintf("s%d", i) }

// reconcileService applies the Service in front of the proxy pods.
func (r *Reconciler) reconcileService(ctx context.Context, s *scope) error {
	t := s.tunnel
	if len(s.ends.ListenPorts) == 0 {
		return nil // an Outbound end whose remote (and so its port list) is not known yet
	}
	typ := corev1.ServiceTypeClusterIP
	var annotations map[string]string
	var lbClass *string
	if e := t.Spec.Exposure; e != nil {
		if e.Type != "" {
			typ = e.Type
		}
		annotations = e.Annotations
		lbClass = e.LoadBalancerClass
	}
	proto := listenerProtocol(t)
	// PreferDualStack: the flow label exists only in IPv6, so the Service needs an IPv6 address
	// (and its DNS name an AAAA record) for the peer's dialer to take the labelled path; a
	// single-stack cluster still gets its one family.
	spec := corev1ac.ServiceSpec().WithType(typ).WithSelector(child.SelectorLabels(t)).
		WithIPFamilyPolicy(corev1.IPFamilyPolicyPreferDualStack)
	for i, p := range s.ends.ListenPorts {
		spec.WithPorts(corev1ac.ServicePort().WithName(portName(i)).WithProtocol(proto).
			WithPort(int32(p)).WithTargetPort(intstr.FromInt32(int32(p))))
	}
	if lbClass != nil && typ == corev1.ServiceTypeLoadBalancer {
		spec.WithLoadBalancerClass(*lbClass)
	}
	ac := corev1ac.Service(t.Name, t.Namespace).
		WithLabels(child.Labels(t)).
		WithOwnerReferences(child.OwnerRef(t)).
		WithSpec(spec)
	if len(annotations) > 0 {
		ac.WithAnnotations(annotations)
	}
	cur := &corev1.Service{}
	found, err := ssa.Get(ctx, r.Client, client.ObjectKeyFromObject(t), cur)
	if err != nil {
		return err
	}
	var current client.Object
	if found {
		current = cur
	}
	svc := &corev1.Service{}
	changed, err := r.applier.Apply(ctx, current, ac, svc)
	if err != nil {
		return err
	}
	if !found && changed {
		r.Recorder.Eventf(t, svc, corev1.EventTypeNormal, "ServiceCreated", "Create", "created %s Service %s", typ, svc.Name)
	}
	s.service = svc
	t.Status.Endpoints, t.Status.Endpoint = ends.Endpoints(t, svc, s.ends.ListenPorts)
	return nil
}
