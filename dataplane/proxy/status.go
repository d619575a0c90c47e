package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/proxy/flowlabel"
	"github.com/scitunnel/scitunnel/dataplane/report"
)

// Ready reports whether the end can carry traffic: every listener bound and, for TLS, a
// certificate inside its validity period.
func (p *Proxy) Ready() (bool, string) {
	p.mu.Lock()
	bound := len(p.listeners)
	p.mu.Unlock()
	cfg := p.cfg.Load()
	if bound != len(cfg.Routes) {
		return false, fmt.Sprintf("%d of %d listeners bound", bound, len(cfg.Routes))
	}
	if p.tls != nil && !p.tls.Valid(time.Now()) {
		return false, fmt.Sprintf("certificate not valid now (notAfter %s)", p.tls.NotAfter().Format(time.RFC3339))
	}
	return true, "ok"
}

// Status is what the controller reads at report.StatusPath.
func (p *Proxy) Status() report.ProxyStatus {
	cfg := p.cfg.Load()
	ready, _ := p.Ready()
	st := report.ProxyStatus{
		Tunnel:            cfg.Tunnel,
		Ready:             ready,
		FlowLabel:         p.flowLabelStatus(cfg),
		ActiveConnections: int64(p.conns.activeCount()),
		TotalConnections:  p.conns.total.Load(),
	}
	if p.tls != nil {
		na := p.tls.NotAfter()
		st.CertificateNotAfter = &na
	}
	return st
}

// flowLabelStatus says, truthfully, whether this end's traffic carries the tag:
//   - no tag configured: not applied (NoScitag);
//   - the last dial could not be labelled (IPv4, refused lease): not applied, with why;
//   - an Inbound end whose network namespace offers no reflection (neither the
//     flowlabel_reflect sysctl nor, with flowlabel_consistency=0, per-listener reflection): the
//     data it sends back to the Outbound end, usually the bulk of a stream, leaves unlabelled
//     (ReflectionOff);
//   - otherwise applied. Before any dial the answer rests on what can be known: an IPv4
//     target can never be labelled.
func (p *Proxy) flowLabelStatus(cfg *config.Config) report.FlowLabelStatus {
	if cfg.Scitag == nil {
		return report.FlowLabelStatus{Reason: ReasonNoScitag, Message: "the tunnel has no scitag"}
	}
	label := cfg.Scitag.FlowLabel()
	if cfg.Protocol == config.UDP && cfg.UDPTransport == config.UDPPlain {
		return report.FlowLabelStatus{Reason: ReasonUDPUnlabelled, Label: label,
			Message: "plain UDP relays are not labelled; use udpTransport TLS to carry datagrams on a labelled stream"}
	}
	if last := p.dialer.LastStatus(); last != nil && !last.Marked {
		return report.FlowLabelStatus{Reason: last.Reason, Message: last.Message, Label: label}
	}
	for _, r := range cfg.Routes {
		host, _, _ := net.SplitHostPort(r.Target)
		if a, err := netip.ParseAddr(host); err == nil && a.Unmap().Is4() {
			return report.FlowLabelStatus{Reason: flowlabel.ReasonIPv4Path, Label: label,
				Message: fmt.Sprintf("target %s is IPv4, which has no flow label: use an IPv6 address or a name that resolves to one", r.Target)}
		}
	}
	msg := fmt.Sprintf("connections carry flow label %s (%s)", formatLabel(label), tagName(cfg))
	if acceptsStreams(cfg) {
		reflection, why := p.Reflection()
		if reflection == flowlabel.ReflectOff {
			return report.FlowLabelStatus{Reason: ReasonReflectionOff, Label: label,
				Message: "data sent back to the outbound end leaves unlabelled: " + why}
		}
		msg += "; " + why
	}
	return report.FlowLabelStatus{Applied: true, Reason: flowlabel.ReasonMarked, Label: label, Message: msg}
}

func formatLabel(l uint32) string { return fmt.Sprintf("%#05x", l) }

// Reasons of FlowLabelStatus that the proxy (rather than the dialer) determines.
const (
	ReasonNoScitag      = "NoScitag"
	ReasonUDPUnlabelled = "UDPUnlabelled"
	ReasonReflectionOff = "ReflectionOff"
)

// Reflection says how this end's accepted connections mirror the dialer's flow label, and why.
func (p *Proxy) Reflection() (flowlabel.Reflection, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reflection, p.reflectionWhy
}

// Connections is the exact byte count per tag and connection, the ground truth that sFlow
// estimates are checked against.
func (p *Proxy) Connections() Connections { return p.conns.report(p.cfg.Load().Tunnel) }

// Metrics is the proxy's Prometheus registry, for the admin endpoint.
func (p *Proxy) Metrics() prometheus.Gatherer { return p.metrics.registry }
