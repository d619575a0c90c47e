package tunnel

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/controllers/certificates"
	"github.com/scitunnel/scitunnel/controllers/internal/child"
	"github.com/scitunnel/scitunnel/controllers/internal/ends"
	"github.com/scitunnel/scitunnel/controllers/internal/ssa"
	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/contract"
)

// buildConfig renders the data-plane configuration for this end.
func (r *Reconciler) buildConfig(s *scope) (*config.Config, error) {
	t := s.tunnel
	routes, err := config.Expand(s.ends.ListenPorts, s.ends.Targets)
	if err != nil {
		return nil, err
	}
	cfg := &config.Config{
		Tunnel:   t.Namespace + "/" + t.Name,
		Role:     config.Role(t.Spec.Role),
		Protocol: config.Protocol(t.Spec.Protocol),
		Routes:   routes,
	}
	if t.Spec.Protocol == scitunnelv1.ProtocolUDP {
		cfg.UDPTransport = config.UDPTransport(t.Spec.UDPTransport)
		if cfg.UDPTransport == "" {
			cfg.UDPTransport = config.UDPOverTLS
		}
	}
	if ends.UsesTLS(t) {
		cfg.TLS = &config.TLSConfig{
			CertFile: contract.CertFile,
			KeyFile:  contract.KeyFile,
			CAFile:   contract.CAFile,
		}
		// The user's allow-list, plus the ends the operator wired or exported itself. An Inbound
		// with an operator-run CA always has one: it accepts only the identities it issued to
		// peers that are still wired, so a refused or deleted peer's certificate stops working.
		if t.Spec.Role == scitunnelv1.RoleInbound && (len(t.Spec.Inbound.AllowedClients) > 0 || certificates.ExportsBundle(t)) {
			allowed := slices.Clone(t.Spec.Inbound.AllowedClients)
			allowed = append(allowed, s.ends.PeerIDs...)
			if certificates.ExportsBundle(t) {
				allowed = append(allowed, child.BundleIdentity(ends.TrustDomain(t, r.Options.TrustDomain), t.Namespace, t.Name))
			}
			slices.Sort(allowed)
			cfg.TLS.AllowedSANs = slices.Compact(allowed)
		}
		if t.Spec.Role == scitunnelv1.RoleOutbound {
			cfg.TLS.ServerName = s.ends.ServerName
		}
	}
	if s.tag != nil {
		cfg.Scitag = &config.Scitag{
			ExperimentID: int(s.tag.ExperimentID),
			ActivityID:   int(s.tag.ActivityID),
			Name:         s.tag.Name,
			Entropy:      s.tag.Entropy,
		}
	}
	// Every tunnel pod has an unencrypted leg (producers or consumers): its samples carry headers
	// alone, so no byte of the data reaches the analyzer or an external collector.
	tel := &config.Telemetry{SamplingRate: contract.DefaultSampling, RegistryFile: contract.RegistryFile,
		HeaderBytes: config.HeaderBytesTransport}
	var own *config.Fireflies
	if ts := t.Spec.Telemetry; ts != nil {
		if ts.SamplingRate != nil {
			tel.SamplingRate = int(*ts.SamplingRate)
		}
		for _, c := range ts.Collectors {
			tel.Collectors = append(tel.Collectors, string(c))
		}
		own = firefliesFrom(ts.Fireflies)
	}
	cfg.Telemetry = tel
	if ff := mergeFireflies(own, s.fireflies); ff != nil {
		ff.Application = "scitunnel"
		cfg.Fireflies = ff
	}
	if t.Spec.IdleTimeout != nil {
		cfg.IdleTimeout = config.Duration{Duration: t.Spec.IdleTimeout.Duration}
	}
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// reconcileConfig applies the ConfigMap holding config.json and registry.json.
func (r *Reconciler) reconcileConfig(ctx context.Context, s *scope) error {
	t := s.tunnel
	if s.blocked != nil {
		return nil
	}
	cfg, err := r.buildConfig(s)
	if err != nil {
		msg := fmt.Sprintf("the proxy configuration is invalid: %v", err)
		s.blocked = &ends.Blocked{Reason: "InvalidConfiguration", Message: msg, Degraded: true}
		s.degrade("InvalidConfiguration", msg)
		return nil
	}
	data, err := cfg.Marshal()
	if err != nil {
		return err
	}
	ac := corev1ac.ConfigMap(child.ConfigMapName(t), t.Namespace).
		WithLabels(child.Labels(t)).
		WithOwnerReferences(child.OwnerRef(t)).
		WithData(map[string]string{contract.ConfigKey: string(data), contract.RegistryKey: string(s.registryJSON)})
	cur := &corev1.ConfigMap{}
	found, err := ssa.Get(ctx, r.Client, client.ObjectKey{Namespace: t.Namespace, Name: child.ConfigMapName(t)}, cur)
	if err != nil {
		return err
	}
	var current client.Object
	if found {
		current = cur
	}
	changed, err := r.applier.Apply(ctx, current, ac, nil)
	if err != nil {
		return err
	}
	if found && changed && cur.Data[contract.ConfigKey] != string(data) {
		r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, "ConfigurationChanged", "Update", "proxy configuration changed; rolling the proxy pods")
	}
	rolling, err := rollingPart(cfg)
	if err != nil {
		return err
	}
	s.configHash = ssa.HashOf(rolling, s.registryJSON)
	return nil
}

// rollingPart is the configuration without what the proxies take in place (the allow-list of
// client identities, re-read from config.json by `scitunnel run`): its hash goes on the pod
// template, so admitting or revoking a peer rolls no pod and drops no other peer's connection.
func rollingPart(cfg *config.Config) ([]byte, error) {
	if cfg.TLS == nil || len(cfg.TLS.AllowedSANs) == 0 {
		return cfg.Marshal()
	}
	c, tlsCfg := *cfg, *cfg.TLS
	tlsCfg.AllowedSANs = nil
	c.TLS = &tlsCfg
	return c.Marshal()
}
