// Package testenv starts a real kube-apiserver and etcd (controller-runtime's envtest) with the
// SciTunnel CRDs installed, for the envtest suites of controllers/ and test/envtest/.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	kruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
)

// KubernetesVersion is the version of the envtest binaries the toolchain builds into bin/k8s.
const KubernetesVersion = "1.37.2"

// RepoRoot is the repository's root directory, found from this file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Scheme knows the built-in types and the SciTunnel API.
func Scheme() *kruntime.Scheme {
	s := kruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := scitunnelv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// Assets returns KUBEBUILDER_ASSETS, or the binaries `make envtest-binaries` builds into bin/k8s.
func Assets() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	dir := filepath.Join(RepoRoot(), "bin", "k8s", KubernetesVersion+"-"+runtime.GOOS+"-"+runtime.GOARCH)
	if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err != nil {
		return "", fmt.Errorf("no envtest binaries: set KUBEBUILDER_ASSETS or build them into %s (make envtest-binaries): %w", dir, err)
	}
	return dir, nil
}

// Start runs kube-apiserver and etcd with the CRDs of config/crd/bases plus any extra CRD
// directories (e.g. a stand-in for cert-manager's Certificate).
func Start(extraCRDDirs ...string) (*envtest.Environment, *rest.Config, error) {
	assets, err := Assets()
	if err != nil {
		return nil, nil, err
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     append([]string{filepath.Join(RepoRoot(), "config", "crd", "bases")}, extraCRDDirs...),
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	// Every tunnel has a ClusterIP Service: envtest's default /24 range would run out at 254
	// (the reconcile benchmark makes 1,000).
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/16")
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, err
	}
	return env, cfg, nil
}
