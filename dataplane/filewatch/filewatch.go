// Package filewatch polls a set of files and calls back when their contents change: the one
// file watcher of the data plane, used for the TLS certificate files (dataplane/proxy/tlsfiles), the
// sFlow sidecar's scitags registry file, and `scitunnel run --watch-config`.
//
// Polling the contents, rather than watching with inotify or comparing modification times,
// survives every way a file can be replaced: written in place, renamed over, or swapped
// atomically by the kubelet, which updates a ConfigMap or Secret volume by writing a new
// timestamped directory and renaming the "..data" symlink that every key's symlink goes
// through (the new files may even carry older modification times). The files are small
// (certificates, a configuration, a registry), so reading them every few seconds costs
// nothing. A touch, or a swap to identical contents, is not a change.
//
// What is watched, and what is not: in a cluster, the operator rolls the proxy pods when
// config.json (or the registry in the same ConfigMap) changes, through the pod template's
// scitunnel.io/config-hash annotation, so the proxy does not watch config.json there; the
// certificates of the TLS Secret are reloaded in place, through this package, because a
// renewal must not cut running streams. See dataplane/proxy/README.md, "Configuration
// changes".
package filewatch

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// Watcher polls Files every Interval. Set the fields, then call Run (or Poll).
type Watcher struct {
	// Files are read together, in this order, on each poll.
	Files []string
	// Interval between polls; zero means 5 s.
	Interval time.Duration
	// Initial, when not nil, is the contents the caller has already loaded (one entry per file,
	// in Files' order): a change between that load and the first poll is then noticed. When
	// nil, the contents at the first poll are the baseline.
	Initial [][]byte
	// OnChange gets the contents of every file (in Files' order) read by a poll that found any
	// of them different from the previous poll's. The new contents become the baseline whatever
	// OnChange makes of them: contents it refuses are offered again only after a further change.
	// A kubelet swap of several files happens at once, but a poll may read during it and see
	// some files old and some new; the next poll then sees a change again and calls OnChange
	// with the complete new set.
	OnChange func(contents [][]byte)
	// OnError, when not nil, hears that a poll could not read a file (the baseline stays and
	// the next poll tries again). It is called once per distinct error, not on every poll, until
	// a poll reads every file again.
	OnError func(err error)

	last    [][sha256.Size]byte
	started bool
	lastErr string
}

// Run polls until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	interval := w.Interval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	if !w.started {
		w.baseline()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.Poll()
		}
	}
}

// baseline takes Initial, or the files as they are now.
func (w *Watcher) baseline() {
	w.started = true
	if w.Initial != nil {
		w.last = sums(w.Initial)
		return
	}
	if contents, err := w.read(); err == nil {
		w.last = sums(contents)
	}
	// Unreadable now: the first poll that reads every file reports them as a change.
}

// Poll reads the files once and calls OnChange if they changed since the previous poll (or
// since Initial). It reports whether they changed. Run calls it; tests may call it directly.
func (w *Watcher) Poll() bool {
	if !w.started {
		w.baseline()
	}
	contents, err := w.read()
	if err != nil {
		if msg := err.Error(); msg != w.lastErr {
			w.lastErr = msg
			if w.OnError != nil {
				w.OnError(err)
			}
		}
		return false
	}
	w.lastErr = ""
	now := sums(contents)
	if w.last != nil && slices.Equal(now, w.last) {
		return false
	}
	w.last = now
	if w.OnChange != nil {
		w.OnChange(contents)
	}
	return true
}

func (w *Watcher) read() ([][]byte, error) {
	if len(w.Files) == 0 {
		return nil, errors.New("filewatch: no files to watch")
	}
	contents := make([][]byte, len(w.Files))
	for i, f := range w.Files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("filewatch: %w", err)
		}
		contents[i] = b
	}
	return contents, nil
}

func sums(contents [][]byte) [][sha256.Size]byte {
	s := make([][sha256.Size]byte, len(contents))
	for i, c := range contents {
		s[i] = sha256.Sum256(c)
	}
	return s
}
