package controllers

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/dataplane/config"
)

// reconcileEnds works out this end's routes: listener ports and the targets they carry to. An
// Outbound end referencing an Inbound of this cluster is wired to it here.
func (r *StreamTunnelReconciler) reconcileEnds(ctx context.Context, s *tunnelScope) error {
	t := s.tunnel
	switch t.Spec.Role {
	case scitunnelv1.RoleInbound:
		in := t.Spec.Inbound
		if in == nil { // refused by the API server's validation; guard anyway
			s.block("InvalidSpec", "spec.inbound is missing")
			return nil
		}
		s.listenPorts = inboundPorts(in)
		for _, p := range in.Producers {
			s.targets = append(s.targets, string(p))
		}
		return r.findPeers(ctx, s)
	case scitunnelv1.RoleOutbound:
		out := t.Spec.Outbound
		if out == nil {
			s.block("InvalidSpec", "spec.outbound is missing")
			return nil
		}
		if out.TunnelRef != nil {
			return r.wireToInbound(ctx, s)
		}
		ep := out.Endpoint
		remote := portsOf(ep.Ports)
		s.serverName = ep.ServerName
		for _, p := range remote {
			s.targets = append(s.targets, net.JoinHostPort(ep.Address, strconv.Itoa(p)))
		}
		s.listenPorts = outboundPorts(out, remote)
		t.Status.Remote = joinHostPorts(ep.Address, remote)
	}
	return nil
}

// wireToInbound resolves spec.outbound.tunnelRef.
func (r *StreamTunnelReconciler) wireToInbound(ctx context.Context, s *tunnelScope) error {
	t := s.tunnel
	ref := t.Spec.Outbound.TunnelRef
	key := types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}
	if key.Namespace == "" {
		key.Namespace = t.Namespace
	}
	// Before the remote is known, local ports given explicitly can still be served (Service).
	s.listenPorts = outboundPorts(t.Spec.Outbound, nil)

	in := &scitunnelv1.StreamTunnel{}
	if err := r.Get(ctx, key, in); err != nil {
		if !apierrors.IsNotFound(err) {
			return err
		}
		msg := fmt.Sprintf("Inbound StreamTunnel %s not found: create it, or fix spec.outbound.tunnelRef", key)
		s.block("RemoteNotFound", msg)
		s.degrade("RemoteNotFound", msg)
		return nil
	}
	if !in.DeletionTimestamp.IsZero() {
		msg := fmt.Sprintf("Inbound StreamTunnel %s is being deleted", key)
		s.block("RemoteDeleting", msg)
		s.degrade("RemoteDeleting", msg)
		return nil
	}
	if in.Spec.Role != scitunnelv1.RoleInbound || in.Spec.Inbound == nil {
		msg := fmt.Sprintf("spec.outbound.tunnelRef names %s, which is an Outbound end: name the Inbound end", key)
		s.block("RemoteNotInbound", msg)
		s.degrade("RemoteNotInbound", msg)
		return nil
	}
	if !peerAllowed(in, t.Namespace) {
		msg := fmt.Sprintf("Inbound StreamTunnel %s does not accept peers from namespace %q: add it to that tunnel's spec.inbound.allowedPeerNamespaces", key, t.Namespace)
		s.block("PeerNamespaceNotAllowed", msg)
		s.degrade("PeerNamespaceNotAllowed", msg)
		return nil
	}
	if effectiveProtocol(in) != effectiveProtocol(t) {
		msg := fmt.Sprintf("protocol %s does not match the Inbound end %s (%s): set spec.protocol (and udpTransport) alike on both ends", effectiveProtocol(t), key, effectiveProtocol(in))
		s.block("ProtocolMismatch", msg)
		s.degrade("ProtocolMismatch", msg)
		return nil
	}
	remote := inboundPorts(in.Spec.Inbound)
	local := outboundPorts(t.Spec.Outbound, remote)
	if len(local) != len(remote) {
		msg := fmt.Sprintf("spec.outbound lists %d local ports but the Inbound end %s has %d streams: list one local port per stream, or omit them to reuse the Inbound's port numbers", len(local), key, len(remote))
		s.block("PortCountMismatch", msg)
		s.degrade("PortCountMismatch", msg)
		return nil
	}
	host := fmt.Sprintf("%s.%s.svc.%s", in.Name, in.Namespace, r.Options.ClusterDomain)
	s.inbound = in
	s.listenPorts = local
	s.serverName = host
	s.targets = nil
	for _, p := range remote {
		s.targets = append(s.targets, net.JoinHostPort(host, strconv.Itoa(p)))
	}
	t.Status.Remote = joinHostPorts(host, remote)
	return nil
}

// findPeers lists the Outbound ends of this cluster wired to an Inbound.
func (r *StreamTunnelReconciler) findPeers(ctx context.Context, s *tunnelScope) error {
	t := s.tunnel
	var outs scitunnelv1.StreamTunnelList
	if err := r.List(ctx, &outs, client.MatchingFields{IndexInboundRef: t.Namespace + "/" + t.Name}); err != nil {
		return err
	}
	for i := range outs.Items {
		o := &outs.Items[i]
		if !o.DeletionTimestamp.IsZero() || !peerAllowed(t, o.Namespace) {
			continue
		}
		s.peers = append(s.peers, o.Namespace+"/"+o.Name)
		s.peerIDs = append(s.peerIDs, identity(r.trustDomain(o), o.Namespace, o.Name))
	}
	slices.Sort(s.peers)
	slices.Sort(s.peerIDs)
	if len(s.peers) > 64 {
		t.Status.Peers = s.peers[:64]
	} else {
		t.Status.Peers = s.peers
	}
	return nil
}

func (r *StreamTunnelReconciler) trustDomain(t *scitunnelv1.StreamTunnel) string {
	if c := t.Spec.Certificates; c != nil && c.TrustDomain != "" {
		return c.TrustDomain
	}
	return r.Options.TrustDomain
}

// peerAllowed says whether an Outbound in namespace ns may be wired to the Inbound in.
func peerAllowed(in *scitunnelv1.StreamTunnel, ns string) bool {
	if ns == in.Namespace {
		return true
	}
	return in.Spec.Inbound != nil && (slices.Contains(in.Spec.Inbound.AllowedPeerNamespaces, "*") ||
		slices.Contains(in.Spec.Inbound.AllowedPeerNamespaces, ns))
}

// effectiveProtocol is protocol plus UDP transport, defaults applied ("TLS", "UDP/Plain").
func effectiveProtocol(t *scitunnelv1.StreamTunnel) string {
	p := t.Spec.Protocol
	if p == "" {
		p = scitunnelv1.ProtocolTLS
	}
	if p != scitunnelv1.ProtocolUDP {
		return string(p)
	}
	tr := t.Spec.UDPTransport
	if tr == "" {
		tr = scitunnelv1.UDPTransportTLS
	}
	return string(p) + "/" + string(tr)
}

// usesTLS reports whether the two ends talk mutual TLS.
func usesTLS(t *scitunnelv1.StreamTunnel) bool {
	p := effectiveProtocol(t)
	return p == "TLS" || p == "UDP/TLS"
}

func portsOf(ps []scitunnelv1.Port) []int {
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = int(p)
	}
	return out
}

func rangePorts(r *scitunnelv1.PortRange) []int {
	return config.PortRange(int(r.First), int(r.Last-r.First)+1)
}

// inboundPorts are an Inbound end's listener ports, one per stream.
func inboundPorts(in *scitunnelv1.InboundSpec) []int {
	if in.ListenPortRange != nil {
		return rangePorts(in.ListenPortRange)
	}
	return portsOf(in.ListenPorts)
}

// outboundPorts are an Outbound end's local ports: as listed, or the remote's port numbers.
func outboundPorts(out *scitunnelv1.OutboundSpec, remote []int) []int {
	switch {
	case out.ListenPortRange != nil:
		return rangePorts(out.ListenPortRange)
	case len(out.ListenPorts) > 0:
		return portsOf(out.ListenPorts)
	default:
		return slices.Clone(remote)
	}
}

// formatPorts renders ports compactly: "5100-5104" for a run, "5100,6000" otherwise.
func formatPorts(ports []int) string {
	if len(ports) == 0 {
		return ""
	}
	consecutive := true
	for i := 1; i < len(ports); i++ {
		if ports[i] != ports[i-1]+1 {
			consecutive = false
			break
		}
	}
	if len(ports) > 1 && consecutive {
		return fmt.Sprintf("%d-%d", ports[0], ports[len(ports)-1])
	}
	parts := make([]string, len(ports))
	for i, p := range ports {
		parts[i] = strconv.Itoa(p)
	}
	return strings.Join(parts, ",")
}

// joinHostPorts renders "host:5100-5104", bracketing IPv6 addresses.
func joinHostPorts(host string, ports []int) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return host + ":" + formatPorts(ports)
}
