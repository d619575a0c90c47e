package filewatch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kubeletMount lays files out as the kubelet mounts a ConfigMap or Secret volume: each key is a
// symlink through "..data", which points at a timestamped directory and is renamed over
// atomically on an update.
type kubeletMount struct {
	dir string
	n   int
}

func newKubeletMount(t *testing.T, files map[string]string) *kubeletMount {
	t.Helper()
	m := &kubeletMount{dir: t.TempDir()}
	m.update(t, files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(m.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func (m *kubeletMount) update(t *testing.T, files map[string]string) {
	t.Helper()
	m.n++
	data := filepath.Join(m.dir, "..2026_"+strings.Repeat("x", m.n))
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour) // an older mtime than the files it replaces
	for name, content := range files {
		p := filepath.Join(data, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		setMtime(t, p, old)
	}
	tmp := filepath.Join(m.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(data), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func (m *kubeletMount) path(name string) string { return filepath.Join(m.dir, name) }

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// setMtime sets a file's access and modification times to mtime.
func setMtime(t *testing.T, name string, mtime time.Time) {
	t.Helper()
	if err := os.Chtimes(name, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestPollNoticesSymlinkSwapsAndInPlaceWritesNotTouches(t *testing.T) {
	m := newKubeletMount(t, map[string]string{"tls.crt": "cert-1", "tls.key": "key-1"})
	var got [][]string
	w := &Watcher{Files: []string{m.path("tls.crt"), m.path("tls.key")}, OnChange: func(c [][]byte) {
		got = append(got, []string{string(c[0]), string(c[1])})
	}}
	if w.Poll() {
		t.Fatal("the first poll reported a change of unchanged files")
	}
	m.update(t, map[string]string{"tls.crt": "cert-2", "tls.key": "key-2"})
	if !w.Poll() || len(got) != 1 || got[0][0] != "cert-2" || got[0][1] != "key-2" {
		t.Fatalf("after the ..data swap: %v", got)
	}
	if w.Poll() {
		t.Fatal("a second poll of the same contents reported a change")
	}
	m.update(t, map[string]string{"tls.crt": "cert-2", "tls.key": "key-2"}) // same contents, new directory
	now := time.Now().Add(time.Minute)
	setMtime(t, m.path("tls.crt"), now)
	if w.Poll() {
		t.Fatal("a swap to identical contents, and a touch, reported a change")
	}
	// Written in place (not a kubelet mount, a file on a bare host): same size, same mtime.
	target, _ := filepath.EvalSymlinks(m.path("tls.key"))
	st, _ := os.Stat(target)
	writeFile(t, target, "key-3")
	setMtime(t, target, st.ModTime())
	if !w.Poll() || got[len(got)-1][1] != "key-3" {
		t.Fatalf("an in-place write of the same size and mtime was missed: %v", got)
	}
}

func TestInitialIsTheBaseline(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "config.json")
	writeFile(t, f, "v2")
	changes := 0
	// The caller loaded "v1"; the file changed before the watcher started.
	w := &Watcher{Files: []string{f}, Initial: [][]byte{[]byte("v1")}, OnChange: func([][]byte) { changes++ }}
	if !w.Poll() || changes != 1 {
		t.Fatal("a change between the caller's load and the first poll was missed")
	}
}

func TestUnreadableFilesReportOnceAndKeepTheBaseline(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "registry.json")
	writeFile(t, f, "a")
	var errs, changes int
	w := &Watcher{Files: []string{f}, OnChange: func([][]byte) { changes++ }, OnError: func(error) { errs++ }}
	w.Poll()
	os.Remove(f)
	for range 3 {
		if w.Poll() {
			t.Fatal("a missing file counted as a change")
		}
	}
	if errs != 1 {
		t.Fatalf("OnError called %d times for one lasting error, want 1", errs)
	}
	writeFile(t, f, "a")
	if w.Poll() || changes != 0 {
		t.Fatal("the same contents back after an error counted as a change")
	}
	writeFile(t, f, "b")
	if !w.Poll() || changes != 1 {
		t.Fatal("a change after an error was missed")
	}
}

func TestRunPollsUntilCancelled(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	writeFile(t, f, "1")
	changed := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	w := &Watcher{Files: []string{f}, Interval: 10 * time.Millisecond, Initial: [][]byte{[]byte("1")},
		OnChange: func(c [][]byte) { changed <- string(c[0]) }}
	go func() { w.Run(ctx); close(done) }()
	writeFile(t, f, "2")
	select {
	case got := <-changed:
		if got != "2" {
			t.Fatalf("changed to %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not notice the change")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
