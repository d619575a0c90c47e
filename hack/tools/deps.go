//go:build tools

// Package tools pins, in go.mod, the libraries the project is built on before every package
// imports them, so parallel work on separate packages does not race on go.mod.
package tools

import (
	_ "github.com/google/go-containerregistry/pkg/v1/mutate"
	_ "github.com/netsampler/goflow2/v2/decoders/sflow"
	_ "github.com/onsi/ginkgo/v2"
	_ "github.com/onsi/gomega"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "golang.org/x/net/bpf"
	_ "golang.org/x/sys/unix"
	_ "k8s.io/api/core/v1"
	_ "k8s.io/client-go/kubernetes"
	_ "sigs.k8s.io/controller-runtime"
	_ "sigs.k8s.io/controller-runtime/pkg/envtest"
)
