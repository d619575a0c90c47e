// Command imagepack packs static binaries into a container image tarball with no base image,
// without a Docker engine or a registry:
//
//	imagepack -o bin/images/manager.tar -t localhost/scitunnel/manager:v1 -entrypoint /manager bin/manager=/manager
//
// The result is a docker-archive tarball (`ctr -n k8s.io images import`, `docker load`). It is
// reproducible: the same files give the same bytes (fixed times, sorted entries), so an unchanged
// rebuild imports as the same image. go-containerregistry does the image format; this program
// only decides the layer's contents.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	out := flag.String("o", "", "output tarball `path`")
	ref := flag.String("t", "", "image `reference`, e.g. localhost/scitunnel/manager:v1 (not :latest)")
	entrypoint := flag.String("entrypoint", "", "absolute `path` of the program to run")
	user := flag.String("user", fmt.Sprintf("%d:%d", NonRootUID, NonRootUID), "`uid:gid` the image runs as")
	arch := flag.String("arch", runtime.GOARCH, "image architecture")
	netRaw := flag.String("cap-net-raw", "", "give the image's `path` the file capability cap_net_raw=p (permitted, not effective: the program raises it)")
	caBundle := flag.String("ca-bundle", "", "PEM `file` of trusted CAs to install at "+CABundlePath+" (for programs that call HTTPS servers)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: imagepack -o OUT.tar -t REF -entrypoint /PROG [flags] SRC=DST...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *out == "" || *ref == "" || *entrypoint == "" || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	created, err := sourceDateEpoch()
	if err != nil {
		fail(err)
	}
	spec := Spec{Entrypoint: []string{*entrypoint}, User: *user, OS: "linux", Arch: *arch, Created: created, CABundle: *caBundle}
	for _, a := range flag.Args() {
		src, dst, ok := strings.Cut(a, "=")
		if !ok || src == "" || !strings.HasPrefix(dst, "/") {
			fail(fmt.Errorf("argument %q: want SRC=/DST", a))
		}
		f := File{Src: src, Dst: dst, Mode: 0o755}
		if dst == *netRaw {
			f.Capabilities = 1 << unix.CAP_NET_RAW
		}
		spec.Files = append(spec.Files, f)
	}
	if *netRaw != "" && !slices.ContainsFunc(spec.Files, func(f File) bool { return f.Dst == *netRaw }) {
		fail(fmt.Errorf("-cap-net-raw %s: no such file in the image", *netRaw))
	}
	img, err := Build(spec)
	if err != nil {
		fail(err)
	}
	if err := WriteTarball(*out, *ref, img); err != nil {
		fail(err)
	}
	d, err := img.Digest()
	if err != nil {
		fail(err)
	}
	fmt.Printf("imagepack: %s -> %s (%s)\n", *ref, *out, d)
}

// sourceDateEpoch is the reproducible-builds convention for "the time of the inputs"; without
// it the images say 1970, which is honest: they carry no build time.
func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "imagepack:", err)
	os.Exit(1)
}
