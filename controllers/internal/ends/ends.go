// Package ends works out a StreamTunnel end's routes from its spec: the ports it listens on,
// the targets they carry to, the Inbound end an Outbound is wired to in this cluster, and the
// Outbound ends an Inbound accepts. The tunnel controller builds the proxies from it and the
// certificates controller issues for the same peers.
package ends

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
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/conditions"
	"github.com/scitunnel/scitunnel/controllers/internal/indexes"
	"github.com/scitunnel/scitunnel/dataplane/config"
)

// MaxPeers bounds status.peers (the API's limit).
const MaxPeers = 64

// Blocked says why an end cannot be built yet; Degraded marks the ones the user must fix
// (as opposed to a guard against a spec the API server already refuses).
type Blocked struct {
	Reason, Message string
	Degraded        bool
}

// Ends is one end's routes.
type Ends struct {
	ListenPorts []int
	Targets     []string
	ServerName  string
	// Remote (Outbound) is what status.remote shows: "host:5100-5104".
	Remote string
	// Inbound is the Inbound end of this cluster an Outbound is wired to (tunnelRef).
	Inbound *scitunnelv1.StreamTunnel
	// Peers (Inbound) are the wired Outbound ends, "ns/name", sorted; PeerIDs their identities.
	Peers   []string
	PeerIDs []string
	// Blocked is set when the end cannot be built yet.
	Blocked *Blocked
}

// Resolver resolves ends against the cluster.
type Resolver struct {
	Reader client.Reader
	// ClusterDomain is the cluster's DNS suffix, for the Inbound's Service name.
	ClusterDomain string
	// TrustDomain is the default trust domain of client identities.
	TrustDomain string
}

// Resolve works out t's routes. An Outbound referencing an Inbound of this cluster is wired to
// it; an Inbound lists the Outbound ends wired to it.
func (r Resolver) Resolve(ctx context.Context, t *scitunnelv1.StreamTunnel) (Ends, error) {
	var e Ends
	switch t.Spec.Role {
	case scitunnelv1.RoleInbound:
		in := t.Spec.Inbound
		if in == nil { // refused by the API server's validation; guard anyway
			e.Blocked = &Blocked{Reason: "InvalidSpec", Message: "spec.inbound is missing"}
			return e, nil
		}
		e.ListenPorts = InboundPorts(in)
		for _, p := range in.Producers {
			e.Targets = append(e.Targets, string(p))
		}
		return e, r.findPeers(ctx, t, &e)
	case scitunnelv1.RoleOutbound:
		out := t.Spec.Outbound
		if out == nil {
			e.Blocked = &Blocked{Reason: "InvalidSpec", Message: "spec.outbound is missing"}
			return e, nil
		}
		if out.TunnelRef != nil {
			return e, r.wireToInbound(ctx, t, &e)
		}
		ep := out.Endpoint
		remote := portsOf(ep.Ports)
		e.ServerName = ep.ServerName
		for _, p := range remote {
			e.Targets = append(e.Targets, net.JoinHostPort(ep.Address, strconv.Itoa(p)))
		}
		e.ListenPorts = OutboundPorts(out, remote)
		e.Remote = JoinHostPorts(ep.Address, remote)
	}
	return e, nil
}

// InboundKey is the Inbound an Outbound's tunnelRef names (its namespace by default).
func InboundKey(t *scitunnelv1.StreamTunnel) (types.NamespacedName, bool) {
	if t.Spec.Outbound == nil || t.Spec.Outbound.TunnelRef == nil {
		return types.NamespacedName{}, false
	}
	ref := t.Spec.Outbound.TunnelRef
	key := types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}
	if key.Namespace == "" {
		key.Namespace = t.Namespace
	}
	return key, true
}

// wireToInbound resolves spec.outbound.tunnelRef.
func (r Resolver) wireToInbound(ctx context.Context, t *scitunnelv1.StreamTunnel, e *Ends) error {
	key, _ := InboundKey(t)
	// Before the remote is known, local ports given explicitly can still be served (Service).
	e.ListenPorts = OutboundPorts(t.Spec.Outbound, nil)
	block := func(reason, msg string) error {
		e.Blocked = &Blocked{Reason: reason, Message: msg, Degraded: true}
		return nil
	}

	in := &scitunnelv1.StreamTunnel{}
	found := true
	if err := r.Reader.Get(ctx, key, in); err != nil {
		if !apierrors.IsNotFound(err) {
			return err
		}
		found = false
	}
	// Permission first, and one answer whether the tunnel exists or not: otherwise a reference
	// into a namespace that does not allow yours tells you what exists there and in what state.
	if key.Namespace != t.Namespace && (!found || !PeerAllowed(in, t.Namespace)) {
		return block(conditions.ReasonRemoteNotFoundOrNotAllowed, fmt.Sprintf("Inbound StreamTunnel %s does not exist or does not accept peers from namespace %q: "+
			"fix spec.outbound.tunnelRef, or have that tunnel list %q in spec.inbound.allowedPeerNamespaces", key, t.Namespace, t.Namespace))
	}
	if !found {
		return block("RemoteNotFound", fmt.Sprintf("Inbound StreamTunnel %s not found: create it, or fix spec.outbound.tunnelRef", key))
	}
	if b := WiringProblem(in, t); b != nil {
		e.Blocked = b
		return nil
	}
	remote := InboundPorts(in.Spec.Inbound)
	local := OutboundPorts(t.Spec.Outbound, remote)
	host := fmt.Sprintf("%s.%s.svc.%s", in.Name, in.Namespace, r.ClusterDomain)
	e.Inbound = in
	e.ListenPorts = local
	e.ServerName = host
	e.Targets = nil
	for _, p := range remote {
		e.Targets = append(e.Targets, net.JoinHostPort(host, strconv.Itoa(p)))
	}
	e.Remote = JoinHostPorts(host, remote)
	return nil
}

// WiringProblem says why the Outbound out cannot be wired to the Inbound in (nil when it can).
// The Outbound's end reports it; the Inbound's end leaves such a peer off its list, and so off
// the allow-list of client identities its proxies accept.
func WiringProblem(in, out *scitunnelv1.StreamTunnel) *Blocked {
	key := types.NamespacedName{Namespace: in.Namespace, Name: in.Name}
	block := func(reason, msg string) *Blocked {
		return &Blocked{Reason: reason, Message: msg, Degraded: true}
	}
	switch {
	case !in.DeletionTimestamp.IsZero():
		return block("RemoteDeleting", fmt.Sprintf("Inbound StreamTunnel %s is being deleted", key))
	case in.Spec.Role != scitunnelv1.RoleInbound || in.Spec.Inbound == nil:
		return block("RemoteNotInbound", fmt.Sprintf("spec.outbound.tunnelRef names %s, which is an Outbound end: name the Inbound end", key))
	case !PeerAllowed(in, out.Namespace):
		return block("PeerNamespaceNotAllowed", fmt.Sprintf("Inbound StreamTunnel %s does not accept peers from namespace %q: add it to that tunnel's spec.inbound.allowedPeerNamespaces", key, out.Namespace))
	case EffectiveProtocol(in) != EffectiveProtocol(out):
		return block("ProtocolMismatch", fmt.Sprintf("protocol %s does not match the Inbound end %s (%s): set spec.protocol (and udpTransport) alike on both ends", EffectiveProtocol(out), key, EffectiveProtocol(in)))
	}
	remote := InboundPorts(in.Spec.Inbound)
	if local := OutboundPorts(out.Spec.Outbound, remote); len(local) != len(remote) {
		return block("PortCountMismatch", fmt.Sprintf("spec.outbound lists %d local ports but the Inbound end %s has %d streams: list one local port per stream, or omit them to reuse the Inbound's port numbers", len(local), key, len(remote)))
	}
	return nil
}

// findPeers lists the Outbound ends of this cluster wired to an Inbound: those whose tunnelRef
// names it and that WiringProblem does not refuse.
func (r Resolver) findPeers(ctx context.Context, t *scitunnelv1.StreamTunnel, e *Ends) error {
	var outs scitunnelv1.StreamTunnelList
	if err := r.Reader.List(ctx, &outs, client.MatchingFields{indexes.InboundRef: t.Namespace + "/" + t.Name}); err != nil {
		return err
	}
	for i := range outs.Items {
		o := &outs.Items[i]
		if !o.DeletionTimestamp.IsZero() || o.Spec.Outbound == nil || WiringProblem(t, o) != nil {
			continue
		}
		e.Peers = append(e.Peers, o.Namespace+"/"+o.Name)
		e.PeerIDs = append(e.PeerIDs, child.Identity(TrustDomain(o, r.TrustDomain), o.Namespace, o.Name))
	}
	slices.Sort(e.Peers)
	slices.Sort(e.PeerIDs)
	return nil
}

// TrustDomain is t's trust domain: its own, or the operator's default.
func TrustDomain(t *scitunnelv1.StreamTunnel, def string) string {
	if c := t.Spec.Certificates; c != nil && c.TrustDomain != "" {
		return c.TrustDomain
	}
	return def
}

// PeerAllowed says whether an Outbound in namespace ns may be wired to the Inbound in.
func PeerAllowed(in *scitunnelv1.StreamTunnel, ns string) bool {
	if ns == in.Namespace {
		return true
	}
	return in.Spec.Inbound != nil && (slices.Contains(in.Spec.Inbound.AllowedPeerNamespaces, "*") ||
		slices.Contains(in.Spec.Inbound.AllowedPeerNamespaces, ns))
}

// EffectiveProtocol is protocol plus UDP transport, defaults applied ("TLS", "UDP/Plain").
func EffectiveProtocol(t *scitunnelv1.StreamTunnel) string {
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

// UsesTLS reports whether the two ends talk mutual TLS.
func UsesTLS(t *scitunnelv1.StreamTunnel) bool {
	p := EffectiveProtocol(t)
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

// InboundPorts are an Inbound end's listener ports, one per stream.
func InboundPorts(in *scitunnelv1.InboundSpec) []int {
	if in.ListenPortRange != nil {
		return rangePorts(in.ListenPortRange)
	}
	return portsOf(in.ListenPorts)
}

// OutboundPorts are an Outbound end's local ports: as listed, or the remote's port numbers.
func OutboundPorts(out *scitunnelv1.OutboundSpec, remote []int) []int {
	switch {
	case out.ListenPortRange != nil:
		return rangePorts(out.ListenPortRange)
	case len(out.ListenPorts) > 0:
		return portsOf(out.ListenPorts)
	default:
		return slices.Clone(remote)
	}
}

// FormatPorts renders ports compactly: "5100-5104" for a run, "5100,6000" otherwise.
func FormatPorts(ports []int) string {
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

// JoinHostPorts renders "host:5100-5104", bracketing IPv6 addresses.
func JoinHostPorts(host string, ports []int) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return host + ":" + FormatPorts(ports)
}
