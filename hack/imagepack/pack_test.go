package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const testRef = "localhost/scitunnel/test:v1"

// writeSrc creates a file to pack with the given content.
func writeSrc(t *testing.T, dir, file, content string) string {
	t.Helper()
	p := filepath.Join(dir, file)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pack(t *testing.T, out string, s Spec) []byte {
	t.Helper()
	img, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteTarball(out, testRef, img); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func spec(src string) Spec {
	return Spec{
		Files:      []File{{Src: src, Dst: "/usr/bin/prog", Mode: 0o755}},
		Entrypoint: []string{"/usr/bin/prog"},
		User:       "65532:65532",
		OS:         "linux",
		Arch:       "amd64",
		Created:    time.Unix(0, 0),
	}
}

func TestReproducible(t *testing.T) {
	dir := t.TempDir()
	src := writeSrc(t, dir, "prog", "#!binary one")
	a := pack(t, filepath.Join(dir, "a.tar"), spec(src))
	// Same inputs later, from a file with another mtime and name: the same bytes.
	time.Sleep(1100 * time.Millisecond)
	src2 := writeSrc(t, dir, "prog-copy", "#!binary one")
	b := pack(t, filepath.Join(dir, "b.tar"), spec(src2))
	if !bytes.Equal(a, b) {
		t.Fatalf("same inputs gave different tarballs: %x vs %x", sha256.Sum256(a), sha256.Sum256(b))
	}

	// Different content, or a different stamp, must change the bytes.
	src3 := writeSrc(t, dir, "prog3", "#!binary two")
	if c := pack(t, filepath.Join(dir, "c.tar"), spec(src3)); bytes.Equal(a, c) {
		t.Fatal("different file content gave the same tarball")
	}
	s := spec(src)
	s.Created = time.Unix(1700000000, 0)
	if d := pack(t, filepath.Join(dir, "d.tar"), s); bytes.Equal(a, d) {
		t.Fatal("different SOURCE_DATE_EPOCH gave the same tarball")
	}
}

func TestContents(t *testing.T) {
	dir := t.TempDir()
	src := writeSrc(t, dir, "prog", "program bytes")
	out := filepath.Join(dir, "img.tar")
	pack(t, out, spec(src))

	tag, err := name.NewTag(testRef)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("reading the tarball back under %s: %v", testRef, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || !reflect.DeepEqual(cf.Config.Entrypoint, []string{"/usr/bin/prog"}) ||
		cf.OS != "linux" || cf.Architecture != "amd64" || !cf.Created.Equal(time.Unix(0, 0)) {
		t.Fatalf("config: user %q entrypoint %q os/arch %s/%s created %v", cf.Config.User, cf.Config.Entrypoint, cf.OS, cf.Architecture, cf.Created)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1 (no base image)", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()

	type got struct {
		mode     int64
		uid, gid int
		typ      byte
		data     string
	}
	entries := map[string]got{}
	var order []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: mtime %v, want the fixed stamp", h.Name, h.ModTime)
		}
		data, _ := io.ReadAll(tr)
		entries[h.Name] = got{h.Mode, h.Uid, h.Gid, h.Typeflag, string(data)}
		order = append(order, h.Name)
	}
	wantOrder := []string{"etc/", "etc/group", "etc/passwd", "home/", "home/nonroot/", "root/", "tmp/", "usr/", "usr/bin/", "usr/bin/prog"}
	if !reflect.DeepEqual(order, wantOrder) {
		t.Fatalf("layer entries\n got %q\nwant %q", order, wantOrder)
	}
	if e := entries["usr/bin/prog"]; e.data != "program bytes" || e.mode != 0o755 || e.uid != 0 || e.typ != tar.TypeReg {
		t.Errorf("the program: %+v", e)
	}
	if e := entries["etc/passwd"]; !strings.Contains(e.data, "\nnonroot:x:65532:65532:") || e.mode != 0o644 {
		t.Errorf("/etc/passwd: %+v", e)
	}
	if e := entries["etc/group"]; !strings.Contains(e.data, "\nnonroot:x:65532:") {
		t.Errorf("/etc/group: %+v", e)
	}
	if e := entries["home/nonroot/"]; e.uid != 65532 || e.gid != 65532 || e.mode != 0o700 {
		t.Errorf("nonroot's home: %+v", e)
	}
	if e := entries["tmp/"]; e.mode != 0o1777 {
		t.Errorf("/tmp mode %o, want 1777", e.mode)
	}
}

func TestCABundle(t *testing.T) {
	dir := t.TempDir()
	src := writeSrc(t, dir, "prog", "x")
	pemFile := writeSrc(t, dir, "cas.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	s := spec(src)
	s.CABundle = pemFile
	img, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	found := false
	for tr := tar.NewReader(rc); ; {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == strings.TrimPrefix(CABundlePath, "/") {
			data, _ := io.ReadAll(tr)
			found = true
			if !strings.Contains(string(data), "BEGIN CERTIFICATE") || h.Mode != 0o644 || h.Uid != 0 {
				t.Errorf("CA bundle entry: mode %o uid %d, %d bytes", h.Mode, h.Uid, len(data))
			}
		}
	}
	if !found {
		t.Errorf("no %s in the layer", CABundlePath)
	}

	s.CABundle = src // not PEM
	if _, err := Build(s); err == nil {
		t.Error("a CA bundle without a certificate was accepted")
	}
}

// The file capability the sFlow sidecar relies on: security.capability as a PAX xattr record,
// struct vfs_cap_data revision 2 with CAP_NET_RAW permitted and no effective bit.
func TestFileCapability(t *testing.T) {
	dir := t.TempDir()
	src := writeSrc(t, dir, "prog", "x")
	s := spec(src)
	s.Files[0].Capabilities = 1 << 13 // CAP_NET_RAW
	img, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	want := string([]byte{0, 0, 0, 2, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	for tr := tar.NewReader(rc); ; {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatal("the program is not in the layer")
		}
		if err != nil {
			t.Fatal(err)
		}
		got, has := h.PAXRecords[capabilityXattr]
		if h.Name != "usr/bin/prog" {
			if has {
				t.Errorf("%s carries a file capability", h.Name)
			}
			continue
		}
		if got != want {
			t.Fatalf("security.capability = % x, want % x", got, want)
		}
		break
	}
}

func TestRejectsConflictsAndBadRefs(t *testing.T) {
	dir := t.TempDir()
	src := writeSrc(t, dir, "prog", "x")
	s := spec(src)
	s.Files = append(s.Files, File{Src: src, Dst: "/etc/passwd"})
	if _, err := Build(s); err == nil {
		t.Error("a file over the generated /etc/passwd was accepted")
	}
	img, err := Build(spec(src))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteTarball(filepath.Join(dir, "x.tar"), "Not A Reference", img); err == nil {
		t.Error("an invalid image reference was accepted")
	}
}
