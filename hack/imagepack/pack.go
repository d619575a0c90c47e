package main

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// NonRootUID is the uid/gid images run as: distroless's "nonroot", which Kubernetes manifests
// across the ecosystem expect (runAsUser: 65532).
const NonRootUID = 65532

// File is one file copied from the host into the image.
type File struct {
	Src  string // path on the build host
	Dst  string // absolute path in the image
	Mode int64  // permission bits in the image; 0 keeps the source's
	// Capabilities are the file's permitted capabilities (bit n: capability n, e.g.
	// 1<<unix.CAP_NET_RAW), without the effective bit: the program raises them itself, and
	// still starts where the container's bounding set lacks them.
	Capabilities uint64
}

// capabilityXattr is the PAX record of a file capability (security.capability), which
// containerd and Docker apply when they unpack the layer.
const capabilityXattr = "SCHILY.xattr.security.capability"

// vfsCapData encodes permitted capabilities as the kernel's struct vfs_cap_data, revision 2:
// magic_etc, then {permitted, inheritable} for capabilities 0-31 and 32-63, little-endian.
// Revision 2 rather than 3: 3 adds a user-namespace root id, which only an unprivileged
// setcap inside a user namespace writes.
func vfsCapData(permitted uint64) string {
	const vfsCapRevision2 = 0x02000000
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], vfsCapRevision2)
	binary.LittleEndian.PutUint32(b[4:], uint32(permitted))
	binary.LittleEndian.PutUint32(b[12:], uint32(permitted>>32))
	return string(b)
}

// Spec describes an image built from files only, with no base image.
type Spec struct {
	Files      []File
	Entrypoint []string
	User       string // "uid:gid"
	OS, Arch   string
	// Created stamps the image config, the history and every file, so that the same inputs give
	// the same bytes whenever and wherever they are packed.
	Created time.Time
	// CABundle, when set, is a PEM file of trusted CAs copied to CABundlePath, where Go's
	// crypto/x509 looks first on Linux: without it, a program in an image with no base image
	// cannot verify any HTTPS server.
	CABundle string
}

// CABundlePath is where Debian, distroless and Go's crypto/x509 expect the system's CAs.
const CABundlePath = "/etc/ssl/certs/ca-certificates.crt"

// entry is one tar entry of the image's single layer.
type entry struct {
	hdr  tar.Header
	data []byte
}

// entries are the layer's tar entries by name (directories end in "/").
type entries map[string]*entry

func (es entries) dir(p string, mode int64, uid int) {
	es[p+"/"] = &entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode, Uid: uid, Gid: uid}}
}

// file adds a regular file at p, and its parent directories, root-owned 0755, like any image's.
func (es entries) file(p string, mode int64, data []byte) error {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" || p == "." {
		return fmt.Errorf("invalid destination path %q", p)
	}
	if _, dup := es[p]; dup {
		return fmt.Errorf("two files at /%s", p)
	}
	for d := path.Dir(p); d != "."; d = path.Dir(d) {
		if _, ok := es[d+"/"]; !ok {
			es.dir(d, 0o755, 0)
		}
	}
	es[p] = &entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data))}, data: data}
	return nil
}

// layerEntries are the image's files, the directories above them, a minimal /etc/passwd and
// /etc/group (root and nonroot, so runAsNonRoot and user-name lookups work), /tmp and nonroot's
// home, and the CA bundle if the spec has one.
func layerEntries(s Spec) (entries, error) {
	es := entries{}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", NonRootUID, NonRootUID)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", NonRootUID)
	if err := es.file("etc/passwd", 0o644, []byte(passwd)); err != nil {
		return nil, err
	}
	if err := es.file("etc/group", 0o644, []byte(group)); err != nil {
		return nil, err
	}
	es.dir("tmp", 0o1777, 0)
	es.dir("home", 0o755, 0)
	es.dir("home/nonroot", 0o700, NonRootUID)
	es.dir("root", 0o700, 0)
	if s.CABundle != "" {
		pem, err := os.ReadFile(s.CABundle)
		if err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
		if !bytes.Contains(pem, []byte("-----BEGIN CERTIFICATE-----")) {
			return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", s.CABundle)
		}
		if err := es.file(CABundlePath, 0o644, pem); err != nil {
			return nil, err
		}
	}

	for _, f := range s.Files {
		data, err := os.ReadFile(f.Src)
		if err != nil {
			return nil, err
		}
		mode := f.Mode
		if mode == 0 {
			st, err := os.Stat(f.Src)
			if err != nil {
				return nil, err
			}
			mode = int64(st.Mode().Perm())
		}
		if err := es.file(f.Dst, mode, data); err != nil {
			return nil, err
		}
		if f.Capabilities != 0 {
			e := es[strings.TrimPrefix(path.Clean("/"+f.Dst), "/")]
			e.hdr.PAXRecords = map[string]string{capabilityXattr: vfsCapData(f.Capabilities)}
		}
	}
	return es, nil
}

// Build assembles the image: one layer holding layerEntries, and a config that runs the
// entrypoint as the spec's user.
func Build(s Spec) (v1.Image, error) {
	es, err := layerEntries(s)
	if err != nil {
		return nil, err
	}
	layer, err := layerOf(es, s.Created)
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: s.Created.UTC()}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: created, CreatedBy: "hack/imagepack", Comment: "static files, no base image"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = s.OS, s.Arch, created
	cf.Config = v1.Config{
		Entrypoint: s.Entrypoint,
		User:       s.User,
		WorkingDir: "/",
		// Nothing in these images looks PATH up, but tools (kubectl debug, ctr run) expect it.
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	}
	return mutate.ConfigFile(img, cf)
}

// layerOf writes the entries in name order with fixed owners and times: a tar's bytes depend on
// entry order and header fields, and the layer's digest on those bytes.
func layerOf(entries map[string]*entry, mtime time.Time) (v1.Layer, error) {
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := entries[n]
		h := e.hdr
		h.ModTime = mtime.UTC().Truncate(time.Second)
		h.Format = tar.FormatPAX
		if h.Uid == NonRootUID {
			h.Uname, h.Gname = "nonroot", "nonroot"
		} else {
			h.Uname, h.Gname = "root", "root"
		}
		if err := tw.WriteHeader(&h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
}

// WriteTarball writes img as a docker-archive tarball tagged ref (what `ctr images import` and
// `docker load` read), through a temporary file renamed into place so readers never see half a
// tarball.
func WriteTarball(out, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	if err := os.MkdirAll(path.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, out)
}
