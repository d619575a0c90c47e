// Package contract is the pod contract between the operator and the data plane: the ports the
// proxy and the sFlow sidecar serve, where the configuration, the scitags registry and the TLS
// files are mounted, the containers' names and the default sampling rate. The operator builds
// the pod from these names and numbers and the data plane defaults to them, so both sides read
// them from here and cannot drift apart.
package contract

import (
	"net"
	"strconv"
)

// Ports of a tunnel pod.
const (
	// AdminPort is the proxy's admin endpoint: /healthz, /readyz, /metrics, /v1/status,
	// /v1/connections (dataplane/proxy/admin).
	AdminPort = 9090
	// AnalyzerPort is the sFlow sidecar's HTTP endpoint: /healthz, /v1/tags, /v1/flows,
	// /v1/agents, /v1/health, /metrics (dataplane/telemetry/analyzer).
	AnalyzerPort = 9091
	// SFlowPort is where the sidecar's analyzer receives sFlow datagrams (UDP; IANA's sFlow port).
	SFlowPort = 6343
)

// Where the operator mounts the data plane's files: the ConfigMap (configuration and scitags
// registry) at ConfigDir and the TLS Secret at TLSDir.
const (
	ConfigDir = "/etc/scitunnel"
	// ConfigKey and RegistryKey are the ConfigMap's keys, hence the file names under ConfigDir.
	ConfigKey    = "config.json"
	RegistryKey  = "registry.json"
	ConfigFile   = ConfigDir + "/" + ConfigKey
	RegistryFile = ConfigDir + "/" + RegistryKey

	TLSDir = ConfigDir + "/tls"
	// CertKey, KeyKey and CAKey are the TLS Secret's keys (those of a kubernetes.io/tls Secret
	// plus the CA), hence the file names under TLSDir.
	CertKey  = "tls.crt"
	KeyKey   = "tls.key"
	CAKey    = "ca.crt"
	CertFile = TLSDir + "/" + CertKey
	KeyFile  = TLSDir + "/" + KeyKey
	CAFile   = TLSDir + "/" + CAKey
)

// The containers of a tunnel pod.
const (
	ProxyContainer   = "proxy"
	SidecarContainer = "sflow"
)

// DefaultSampling is the sampler's 1-in-N rate when a tunnel does not choose one.
const DefaultSampling = 1000

// ListenAddress is a port on every address, IPv4 and IPv6 (":9090"): how the data plane
// listens by default.
func ListenAddress(port int) string { return net.JoinHostPort("", strconv.Itoa(port)) }
