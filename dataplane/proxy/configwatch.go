package proxy

import (
	"bytes"
	"context"
	"os"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
)

// WatchConfig re-reads the configuration file every interval until ctx ends and applies a
// changed one with Reload: new connections get the new targets, tag, ports and fireflies, while
// established connections carry on. Polling the contents catches every way the file can change,
// including the kubelet's symlink swap when a ConfigMap is updated. A change that does not parse
// or cannot be applied is logged and the running configuration stays; it is retried only when
// the file changes again.
func (p *Proxy) WatchConfig(ctx context.Context, path string, interval time.Duration) {
	last, _ := os.ReadFile(path)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := os.ReadFile(path)
		if err != nil {
			p.log.Warn("configuration file unreadable; keeping the running configuration", "file", path, "err", err)
			continue
		}
		if bytes.Equal(data, last) {
			continue
		}
		last = data
		cfg, err := config.Parse(data)
		if err == nil {
			err = p.Reload(cfg)
		}
		if err != nil {
			p.metrics.configReloads.WithLabelValues("refused").Inc()
			p.log.Error("configuration change refused; the previous configuration stays in effect", "file", path, "err", err)
			continue
		}
		p.metrics.configReloads.WithLabelValues("applied").Inc()
	}
}
