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
