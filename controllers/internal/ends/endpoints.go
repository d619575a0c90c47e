package ends

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
)

// maxEndpoints bounds status.endpoints (the API allows 8; one is kept for the advertised one).
const maxEndpoints = 7

// Endpoints are where consumers or peers connect to an end whose Service is svc and whose
// listeners are ports, and the primary one as status.endpoint shows it ("host:5100-5104").
func Endpoints(t *scitunnelv1.StreamTunnel, svc *corev1.Service, ports []int) ([]scitunnelv1.TunnelEndpoint, string) {
	p32 := make([]int32, len(ports))
	for i, p := range ports {
		p32[i] = int32(p)
	}
	dns := fmt.Sprintf("%s.%s.svc", svc.Name, svc.Namespace)
	eps := []scitunnelv1.TunnelEndpoint{{Type: "ClusterDNS", Address: dns, Ports: p32}}
	if ip := svc.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
		eps = append(eps, scitunnelv1.TunnelEndpoint{Type: "ClusterIP", Address: ip, Ports: p32})
	}
	if svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		var nodePorts []int32
		for _, p := range svc.Spec.Ports {
			if p.NodePort != 0 {
				nodePorts = append(nodePorts, p.NodePort)
			}
		}
		if len(nodePorts) > 0 {
			eps = append(eps, scitunnelv1.TunnelEndpoint{Type: "NodePort", Address: "*", Ports: nodePorts})
		}
	}
	primary := eps[0]
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		addr := ing.IP
		if ing.Hostname != "" {
			addr = ing.Hostname
		}
		if addr != "" && len(eps) < maxEndpoints {
			ep := scitunnelv1.TunnelEndpoint{Type: "LoadBalancer", Address: addr, Ports: p32}
			eps = append(eps, ep)
			primary = ep
		}
	}
	if e := t.Spec.Exposure; e != nil && e.AdvertisedAddress != "" {
		ep := scitunnelv1.TunnelEndpoint{Type: "Advertised", Address: e.AdvertisedAddress, Ports: p32}
		eps = append(eps, ep)
		primary = ep
	}
	return eps, JoinHostPorts(primary.Address, int32sToInts(primary.Ports))
}

// ExternalAddress is the address peers in other clusters should use, for the bundle: the
// advertised or load-balancer address, else the first endpoint.
func ExternalAddress(eps []scitunnelv1.TunnelEndpoint) (string, []int) {
	for i := len(eps) - 1; i >= 0; i-- {
		if eps[i].Type == "Advertised" || eps[i].Type == "LoadBalancer" {
			return eps[i].Address, int32sToInts(eps[i].Ports)
		}
	}
	if len(eps) > 0 {
		return eps[0].Address, int32sToInts(eps[0].Ports)
	}
	return "", nil
}

func int32sToInts(in []int32) []int {
	out := make([]int, len(in))
	for i, v := range in {
		out[i] = int(v)
	}
	return out
}
