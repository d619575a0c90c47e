// Package config is the data plane's configuration: the one type that the StreamTunnel
// controller writes into the proxy pod's ConfigMap and that the proxy and the sFlow sidecar
// read, and that the standalone CLI builds from its flags. Keeping it in one place means the
// controller and the data plane cannot disagree on a field.
package config

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/contract"
)

// CurrentVersion is the schema version written by this build. A reader refuses other versions
// rather than guessing.
const CurrentVersion = 1

// Role says which end of a tunnel this proxy is.
type Role string

const (
	// Inbound runs at the producer's facility: it accepts (m)TLS from peers and dials the
	// producer application.
	Inbound Role = "Inbound"
	// Outbound runs at the consumer's facility: it accepts plain local connections from the
	// consumer and dials the inbound end.
	Outbound Role = "Outbound"
)

// Protocol is what the tunnel carries between its two ends.
type Protocol string

const (
	// TLS: TCP streams carried over mutual TLS 1.3 (the default).
	TLS Protocol = "TLS"
	// TCP: a plain TCP relay with no encryption, for trusted research networks.
	TCP Protocol = "TCP"
	// UDP: datagrams; see UDPTransport for how they cross between the ends.
	UDP Protocol = "UDP"
)

// UDPTransport says how UDP datagrams travel between the two ends.
type UDPTransport string

const (
	// UDPOverTLS frames each datagram (2-byte length prefix) on a mutual-TLS stream. Datagram
	// boundaries are preserved; datagrams above MaxFramedDatagram bytes are dropped and counted.
	UDPOverTLS UDPTransport = "TLS"
	// UDPPlain relays datagrams as datagrams, unencrypted.
	UDPPlain UDPTransport = "Plain"
)

// MaxFramedDatagram is the largest UDP payload UDPOverTLS carries: the 16-bit length prefix,
// which also covers the IPv6 jumbo-free maximum UDP payload (65527 bytes).
const MaxFramedDatagram = 65535

// Config is the whole data-plane configuration of one proxy pod (or one CLI invocation).
type Config struct {
	// Version of this schema; see CurrentVersion.
	Version int `json:"version"`
	// Tunnel names the tunnel in metrics, logs and fireflies, e.g. "namespace/name".
	Tunnel string `json:"tunnel"`
	Role   Role   `json:"role"`

	Protocol     Protocol     `json:"protocol"`
	UDPTransport UDPTransport `json:"udpTransport,omitempty"`
	// MaxDatagramSize (protocol UDP) is the largest datagram payload, in bytes, the tunnel
	// carries; a larger one is dropped where it enters the tunnel and counted
	// (scitunnel_proxy_udp_dropped_total{reason="too_large"}). 1..MaxFramedDatagram; default
	// MaxFramedDatagram, which lets every UDP datagram through. A lower limit keeps datagrams
	// below the path MTU, so a plain relay never sends IP fragments that firewalls drop.
	MaxDatagramSize int `json:"maxDatagramSize,omitempty"`

	// Routes: one per listening port. Parallel streams and port ranges are expanded into
	// routes before they reach the data plane (see Expand).
	Routes []Route `json:"routes"`

	// TLS is required for Protocol TLS and for UDP over TLS.
	TLS *TLSConfig `json:"tls,omitempty"`

	// Scitag, when set, is the tag the proxy stamps on the flow label of the connections it dials.
	// It is also the tag the sFlow sidecar's analyzer attributes this pod's labelled traffic to
	// (the second signal that separates marked traffic from Linux's random labels).
	Scitag *Scitag `json:"scitag,omitempty"`

	Fireflies *Fireflies `json:"fireflies,omitempty"`

	// Telemetry configures the sFlow sidecar that shares the pod.
	Telemetry *Telemetry `json:"telemetry,omitempty"`

	// AdminAddress serves /healthz, /readyz, /metrics and /v1/connections. Default ":9090"
	// (contract.AdminPort).
	AdminAddress string `json:"adminAddress,omitempty"`
	// ListenAddress is the host the listeners bind to; default "::" (all, dual-stack).
	ListenAddress string `json:"listenAddress,omitempty"`

	// DialTimeout bounds each dial to a target. Default 10s.
	DialTimeout Duration `json:"dialTimeout,omitempty"`
	// DrainTimeout is how long SIGTERM waits for active connections. Default 30s.
	DrainTimeout Duration `json:"drainTimeout,omitempty"`
	// IdleTimeout closes a connection idle in both directions this long; 0 means never
	// (science streams may pause for long stretches).
	IdleTimeout Duration `json:"idleTimeout,omitempty"`

	// Limits bound what a flood of UDP sources, stalled TLS handshakes or half-closed
	// connections can take from each listener. Absent: the defaults (see Limits).
	Limits *Limits `json:"limits,omitempty"`
}

// Route is one listening port and the target its connections are carried to.
type Route struct {
	// ListenPort: on an Inbound end the (m)TLS port peers connect to; on an Outbound end the
	// plain local port consumers connect to.
	ListenPort int `json:"listenPort"`
	// Target "host:port": on an Inbound end the producer application; on an Outbound end the
	// inbound end's listener.
	Target string `json:"target"`
}

// TLSConfig names PEM files. They are re-read when they change on disk, so a renewed Secret
// mounted into the pod takes effect for new connections without a restart.
type TLSConfig struct {
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// CAFile holds the CA(s) that sign the peer's certificate.
	CAFile string `json:"caFile"`
	// AllowedSANs (Inbound): the client certificate must carry one of these DNS, URI or IP SANs.
	// Empty means any certificate signed by CAFile.
	AllowedSANs []string `json:"allowedSANs,omitempty"`
	// ServerName (Outbound): the name the inbound end's certificate must carry. Default: the
	// host part of each route's target.
	ServerName string `json:"serverName,omitempty"`
}

// Duration is a time.Duration that reads and writes as "10s" in JSON.
type Duration struct{ time.Duration }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"10s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Load reads, defaults and validates a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data)
}

// Parse decodes JSON strictly (unknown fields are errors, so a typo is not silently ignored),
// fills defaults and validates.
func Parse(data []byte) (*Config, error) {
	var c Config
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.Default()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Marshal renders the configuration as the controller stores it in the ConfigMap.
func (c *Config) Marshal() ([]byte, error) { return json.MarshalIndent(c, "", "  ") }

// Default fills every unset field that has a default.
func (c *Config) Default() {
	if c.Version == 0 {
		c.Version = CurrentVersion
	}
	if c.Protocol == "" {
		c.Protocol = TLS
	}
	if c.Protocol == UDP && c.UDPTransport == "" {
		c.UDPTransport = UDPOverTLS
	}
	if c.Protocol == UDP && c.MaxDatagramSize == 0 {
		c.MaxDatagramSize = MaxFramedDatagram
	}
	if c.AdminAddress == "" {
		c.AdminAddress = contract.ListenAddress(contract.AdminPort)
	}
	if c.ListenAddress == "" {
		c.ListenAddress = "::"
	}
	if c.DialTimeout.Duration == 0 {
		c.DialTimeout.Duration = 10 * time.Second
	}
	if c.DrainTimeout.Duration == 0 {
		c.DrainTimeout.Duration = 30 * time.Second
	}
	if c.Telemetry != nil {
		c.Telemetry.Default()
	}
}

// NeedsTLS reports whether the ends talk (m)TLS to each other.
func (c *Config) NeedsTLS() bool {
	return c.Protocol == TLS || (c.Protocol == UDP && c.UDPTransport == UDPOverTLS)
}

// Validate returns every problem at once, each a *FieldError naming the field (see Fields) and
// saying what is allowed. Each section validates itself (TLSConfig.Validate, Routes.Validate,
// ...); what spans sections (TLS required by the protocol, allow-lists by the role) is checked
// here.
func (c *Config) Validate() error {
	var p problems
	if c.Version != CurrentVersion {
		p.add("version", "is %d, this build reads version %d", c.Version, CurrentVersion)
	}
	if c.Role != Inbound && c.Role != Outbound {
		p.add("role", "is %q, must be %q or %q", c.Role, Inbound, Outbound)
	}
	switch c.Protocol {
	case TLS, TCP:
		if c.UDPTransport != "" {
			p.add("udpTransport", "applies only to protocol UDP")
		}
	case UDP:
		if c.UDPTransport != UDPOverTLS && c.UDPTransport != UDPPlain {
			p.add("udpTransport", "is %q, must be %q or %q", c.UDPTransport, UDPOverTLS, UDPPlain)
		}
	default:
		p.add("protocol", "is %q, must be %q, %q or %q", c.Protocol, TLS, TCP, UDP)
	}
	if c.Protocol != UDP && c.MaxDatagramSize != 0 {
		p.add("maxDatagramSize", "applies only to protocol UDP")
	} else if c.MaxDatagramSize < 0 || c.MaxDatagramSize > MaxFramedDatagram {
		p.add("maxDatagramSize", "is %d, must be 1..%d bytes", c.MaxDatagramSize, MaxFramedDatagram)
	}
	p.within("routes", Routes(c.Routes).Validate())
	if c.NeedsTLS() {
		if c.TLS == nil {
			p.add("tls", "is required for protocol %s (certFile, keyFile, caFile)", c.Protocol)
		} else {
			p.within("tls", c.TLS.Validate())
			if c.Role == Outbound && len(c.TLS.AllowedSANs) > 0 {
				p.add("tls.allowedSANs", "applies only to the Inbound end (it checks client identities)")
			}
		}
	} else if c.TLS != nil && c.Role == Inbound && len(c.TLS.AllowedSANs) > 0 {
		p.add("tls.allowedSANs", "has no effect without TLS (protocol %s)", c.Protocol)
	}
	if c.Scitag != nil {
		p.within("scitag", c.Scitag.Validate())
	}
	if c.Fireflies != nil {
		p.within("fireflies", c.Fireflies.Validate())
	}
	if c.Telemetry != nil {
		p.within("telemetry", c.Telemetry.Validate())
	}
	if c.Limits != nil {
		p.within("limits", c.Limits.Validate())
	}
	if _, port, err := net.SplitHostPort(c.AdminAddress); err != nil {
		p.add("adminAddress", "%q is not [host]:port, e.g. \":9090\"", c.AdminAddress)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.add("adminAddress", "%q: port must be 0..65535", c.AdminAddress)
	}
	for _, d := range []struct {
		field string
		v     Duration
	}{{"dialTimeout", c.DialTimeout}, {"drainTimeout", c.DrainTimeout}, {"idleTimeout", c.IdleTimeout}} {
		if d.v.Duration < 0 {
			p.add(d.field, "must not be negative")
		}
	}
	return p.err()
}

// Validate checks that the three files are named; whether TLS is needed at all, and which of
// its fields apply to which end, is the whole configuration's question (Config.Validate).
func (t *TLSConfig) Validate() error {
	var p problems
	for _, f := range []struct{ field, path string }{{"certFile", t.CertFile}, {"keyFile", t.KeyFile}, {"caFile", t.CAFile}} {
		if f.path == "" {
			p.add(f.field, "is required")
		}
	}
	return p.err()
}

// checkHostPort accepts "host:port" with a host and a port 1..65535 (a place to send to).
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port (IPv6 hosts in brackets: [2001:db8::1]:5000)", s)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port must be 1..65535", s)
	}
	return nil
}
