// Package proxy is one end of a SciTunnel: it accepts connections on its routes' ports and
// carries each to the route's target, over mutual TLS between the two ends of a tunnel, with
// the tunnel's scitag stamped on the IPv6 flow label of every TCP connection it dials.
//
//	consumer --plain--> Outbound end ==mTLS, labelled==> Inbound end --labelled--> producer
//
// The Outbound end accepts plain connections from consumers and dials the Inbound end; the
// Inbound end accepts (m)TLS from Outbound ends and dials the producer. Bytes flow both ways.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/firefly"
	"github.com/scitunnel/scitunnel/dataplane/proxy/flowlabel"
	"github.com/scitunnel/scitunnel/dataplane/proxy/tlsfiles"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

// certReloadInterval is how often the mounted certificate files are polled (dataplane/filewatch:
// by content, which survives the kubelet's symlink swap of a Secret volume); a few seconds of
// delay do not matter for certificates renewed at two thirds of their lifetime. A variable so
// tests can shorten it.
var certReloadInterval = 5 * time.Second

// Proxy is one running tunnel end.
type Proxy struct {
	log       *slog.Logger
	cfg       atomic.Pointer[config.Config]
	tls       *tlsfiles.Source // nil when the ends do not talk TLS
	serverTLS *tls.Config
	dialer    *flowlabel.Dialer
	conns     *tracker
	metrics   *metrics
	fireflies atomic.Pointer[firefly.Sender]
	started   time.Time

	// allowBit19 is false when the kernel reserves flow labels with bit 19 set
	// (net.ipv6.flowlabel_state_ranges=1); entropy then leaves that bit clear.
	allowBit19 bool
	// reflection says how this end's accepted connections mirror the dialer's label (Inbound
	// stream ends only), and reflectionWhy explains it in /v1/status.
	reflection    flowlabel.Reflection
	reflectionWhy string

	mu        sync.Mutex
	listeners map[int]io.Closer // by listen port
	serving   bool
	draining  bool // Run's context ended: no listener opens again
	// noNewSessions is set at the drain's start: UDP listeners stay open for the sessions they
	// carry (their socket is the reply path) but start no new ones. Atomic: read per datagram.
	noNewSessions atomic.Bool
	wg            sync.WaitGroup // accept loops and connection handlers
	ctx           context.Context
}

// New validates cfg, loads the certificates and binds every listener. Either all of that
// succeeds or nothing stays open: a bad configuration never half-starts.
func New(cfg *config.Config, log *slog.Logger) (*Proxy, error) {
	if log == nil {
		log = slog.Default()
	}
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Proxy{
		log:       log.With("tunnel", cfg.Tunnel, "role", cfg.Role),
		conns:     newTracker(),
		metrics:   newMetrics(cfg.Tunnel),
		listeners: map[int]io.Closer{},
		started:   time.Now(),
	}
	p.cfg.Store(cfg)
	p.allowBit19 = !flowlabel.KernelReservesBit19()
	// Refusals are retried for half the dial timeout (a peer just becoming ready), leaving the
	// rest for a last try that may fall back to IPv4.
	p.dialer = &flowlabel.Dialer{Timeout: cfg.DialTimeout.Duration, Label: p.nextLabel,
		RetryRefused: cfg.DialTimeout.Duration / 2,
		OnRetry:      func(target string) { p.metrics.dialRetries.WithLabelValues(target).Inc() }}
	p.reflection, p.reflectionWhy = flowlabel.ReflectOff, "this end accepts no labelled connections"
	if acceptsStreams(cfg) {
		p.reflection, p.reflectionWhy = flowlabel.DetectReflection()
	}

	if cfg.NeedsTLS() {
		for field, path := range map[string]string{"tls.certFile": cfg.TLS.CertFile, "tls.keyFile": cfg.TLS.KeyFile, "tls.caFile": cfg.TLS.CAFile} {
			if _, err := os.Stat(path); err != nil {
				return nil, fmt.Errorf("%s: %w", field, err)
			}
		}
		src, err := tlsfiles.Load(tlsfiles.Files{CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile, CAFile: cfg.TLS.CAFile}, p.log)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		p.tls = src
		if cfg.Role == config.Inbound {
			p.serverTLS = src.ServerConfig(cfg.TLS.AllowedSANs)
		}
	}
	for _, r := range cfg.Routes {
		if err := p.listen(cfg, r.ListenPort); err != nil {
			p.closeListeners()
			return nil, err
		}
	}
	p.setFireflies(cfg)
	return p, nil
}

// acceptsStreams reports whether this end accepts the tunnel's (labelled) TCP connections: the
// Inbound end of a stream tunnel, whose answers reflection can label.
func acceptsStreams(cfg *config.Config) bool {
	return cfg.Role == config.Inbound && (cfg.Protocol != config.UDP || cfg.UDPTransport == config.UDPOverTLS)
}

// Close releases the listeners of a proxy that will not Run (Run releases them itself), for a
// caller whose own start-up failed after New.
func (p *Proxy) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.serving {
		p.closeListeners()
		p.fireflies.Swap(nil).Close()
	}
}

// nextLabel is the flow label for the next dialed connection: the current tag with fresh
// entropy when asked for, or 0 (unmarked) when the tunnel has no tag.
func (p *Proxy) nextLabel() uint32 {
	s := p.cfg.Load().Scitag
	switch {
	case s == nil:
		return 0
	case s.Entropy: // spreads the tunnel's streams over ECMP paths; not a secret, so math/rand
		return scitag.WithEntropy(s.FlowLabel(), rand.Uint32(), p.allowBit19)
	}
	return s.FlowLabel()
}

func (p *Proxy) setFireflies(cfg *config.Config) {
	var next *firefly.Sender
	if f := cfg.Fireflies; f != nil && f.Enabled {
		next = &firefly.Sender{Collectors: f.Collectors, ToPeer: f.ToPeer, Application: orDefault(f.Application, "scitunnel"), Log: p.log,
			OnDrop: p.metrics.fireflyDrops.Inc}
	}
	// The old sender flushes its queue in the background; connections still open announce
	// their end through whichever sender is current then.
	go p.fireflies.Swap(next).Close()
}

// tagName names the tunnel's current tag in metrics and reports.
func tagName(cfg *config.Config) string {
	s := cfg.Scitag
	if s == nil {
		return "none"
	}
	if s.Name != "" {
		return s.Name
	}
	if t, ok := scitag.Default().Lookup(s.ExperimentID, s.ActivityID); ok {
		return t.String()
	}
	return scitag.Tag{ExperimentID: s.ExperimentID, ActivityID: s.ActivityID}.String()
}

// Run serves until ctx ends, then drains: it stops accepting, lets active connections finish
// until the drain timeout, cuts the rest and returns.
func (p *Proxy) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.serving {
		p.mu.Unlock()
		return errors.New("proxy already running")
	}
	p.serving = true
	p.ctx = ctx
	for port, l := range p.listeners {
		p.serve(port, l)
	}
	p.mu.Unlock()

	if p.tls != nil {
		go p.tls.Watch(ctx, certReloadInterval)
	}
	cfg := p.cfg.Load()
	p.log.Info("tunnel end up", "protocol", cfg.Protocol, "routes", len(cfg.Routes), "scitag", tagName(cfg))
	if acceptsStreams(cfg) {
		p.mu.Lock()
		reflection, why := p.reflection, p.reflectionWhy
		p.mu.Unlock()
		p.log.Info("flow-label reflection", "mode", reflection, "detail", why)
	}

	<-ctx.Done()
	drain := p.cfg.Load().DrainTimeout.Duration
	p.log.Info("draining: no new connections", "active", p.conns.activeCount(), "deadline", drain)
	p.noNewSessions.Store(true)
	p.mu.Lock()
	p.draining = true
	udp := p.closeStreamListeners()
	p.mu.Unlock()
	if cut := p.conns.waitIdle(time.Now().Add(drain)); cut > 0 {
		p.log.Warn("drain deadline passed; connections cut", "cut", cut)
	}
	// Every session has ended (or was cut): the UDP sockets can go, and their loops with them.
	for _, pc := range udp {
		pc.Close()
	}
	p.wg.Wait()
	p.fireflies.Load().Close()
	return nil
}

// routeFor returns the route of a listen port in cfg.
func routeFor(cfg *config.Config, port int) (config.Route, bool) {
	for _, r := range cfg.Routes {
		if r.ListenPort == port {
			return r, true
		}
	}
	return config.Route{}, false
}

// Reload applies a new configuration to new connections: targets, tag, fireflies and the set of
// listen ports. Role, protocol and certificate paths need a restart.
func (p *Proxy) Reload(cfg *config.Config) error {
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		return err
	}
	old := p.cfg.Load()
	if cfg.Role != old.Role || cfg.Protocol != old.Protocol || cfg.UDPTransport != old.UDPTransport ||
		cfg.ListenAddress != old.ListenAddress || (cfg.TLS == nil) != (old.TLS == nil) ||
		(cfg.TLS != nil && (cfg.TLS.CertFile != old.TLS.CertFile || cfg.TLS.KeyFile != old.TLS.KeyFile || cfg.TLS.CAFile != old.TLS.CAFile)) {
		return errors.New("role, protocol, udpTransport, listenAddress and tls file paths cannot change while running; restart the proxy")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining {
		return errors.New("the proxy is draining for shutdown; configuration changes are not applied")
	}
	// Bind every new port before changing anything, so a port that cannot be bound leaves the
	// running configuration exactly as it was.
	want := map[int]bool{}
	var added []int
	for _, r := range cfg.Routes {
		want[r.ListenPort] = true
		if _, ok := p.listeners[r.ListenPort]; ok {
			continue
		}
		if err := p.listen(cfg, r.ListenPort); err != nil {
			for _, port := range added {
				p.listeners[port].Close()
				delete(p.listeners, port)
			}
			return err
		}
		added = append(added, r.ListenPort)
	}
	if p.serving {
		for _, port := range added {
			p.serve(port, p.listeners[port])
		}
	}
	for port, l := range p.listeners {
		if !want[port] {
			l.Close() // established connections on it carry on
			delete(p.listeners, port)
		}
	}
	if p.tls != nil && cfg.Role == config.Inbound {
		p.serverTLS = p.tls.ServerConfig(cfg.TLS.AllowedSANs)
	}
	p.cfg.Store(cfg)
	p.setFireflies(cfg)
	p.log.Info("configuration reloaded", "routes", len(cfg.Routes), "scitag", tagName(cfg))
	return nil
}

// orDefault is s, or def when s is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
