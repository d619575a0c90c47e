package proxy

import (
	"context"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/filewatch"
)

// WatchConfig polls the configuration file every interval until ctx ends (dataplane/filewatch)
// and applies a changed one with Reload: new connections get the new targets, tag, ports and
// fireflies, while established connections carry on. A change that does not parse or cannot be
// applied is logged and the running configuration stays; it is retried only when the file
// changes again.
//
// Only `scitunnel run --watch-config` (a bare host) calls it. The proxy pods do not: in a
// cluster a configuration change rolls the pods (see README.md, "Configuration changes").
func (p *Proxy) WatchConfig(ctx context.Context, path string, interval time.Duration) {
	w := &filewatch.Watcher{
		Files:    []string{path},
		Interval: interval,
		OnChange: func(contents [][]byte) {
			cfg, err := config.Parse(contents[0])
			if err == nil {
				err = p.Reload(cfg)
			}
			if err != nil {
				p.metrics.configReloads.WithLabelValues("refused").Inc()
				p.log.Error("configuration change refused; the previous configuration stays in effect", "file", path, "err", err)
				return
			}
			p.metrics.configReloads.WithLabelValues("applied").Inc()
		},
		OnError: func(err error) {
			p.log.Warn("configuration file unreadable; keeping the running configuration", "file", path, "err", err)
		},
	}
	w.Run(ctx)
}

// WatchAllowedClients polls the configuration file every interval until ctx ends and applies
// one field of it in place: the Inbound end's allow-list of client identities (tls.allowedSANs).
// It is what the proxy pods run instead of WatchConfig. The operator leaves the allow-list out
// of the hash that rolls the pods, so revoking a peer (or admitting one) neither restarts the
// proxies nor drops the other peers' connections: the next handshake checks the new list.
// Every other change of the file is left to the roll that the operator starts for it.
func (p *Proxy) WatchAllowedClients(ctx context.Context, path string, interval time.Duration) {
	if p.tls == nil || p.cfg.Load().Role != config.Inbound {
		return
	}
	w := &filewatch.Watcher{
		Files:    []string{path},
		Interval: interval,
		// A placeholder baseline: the first poll applies the file as it is then, which closes
		// the gap between reading the configuration at start and this watch.
		Initial: [][]byte{nil},
		OnChange: func(contents [][]byte) {
			cfg, err := config.Parse(contents[0])
			if err != nil || cfg.TLS == nil {
				p.log.Error("configuration file unreadable; keeping the allow-list of client identities", "file", path, "err", err)
				return
			}
			if p.tls.SetAllowed(cfg.TLS.AllowedSANs) {
				p.metrics.configReloads.WithLabelValues("allowed_clients").Inc()
				p.log.Info("allow-list of client identities changed; it applies from the next handshake", "identities", len(cfg.TLS.AllowedSANs))
			}
		},
		OnError: func(err error) {
			p.log.Warn("configuration file unreadable; keeping the allow-list of client identities", "file", path, "err", err)
		},
	}
	w.Run(ctx)
}
