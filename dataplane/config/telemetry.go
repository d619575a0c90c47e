package config

// The telemetry section: the sFlow sidecar's settings, their defaults and validation. The
// sidecar builds this section from its flags too, so it stands on its own, apart from config.go.

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/contract"
)

// Telemetry configures the sFlow sidecar.
type Telemetry struct {
	// SamplingRate N samples 1 in N packets; 0 turns the in-pod sampler off.
	SamplingRate int `json:"samplingRate"`
	// PollingInterval between interface counter samples. Default 20s.
	PollingInterval Duration `json:"pollingInterval,omitempty"`
	// Interfaces to sample; empty means every non-loopback interface in the pod.
	Interfaces []string `json:"interfaces,omitempty"`
	// Collectors receive the sampler's sFlow datagrams besides the local analyzer
	// ("host:port", e.g. an sFlow-RT at port 6343).
	Collectors []string `json:"collectors,omitempty"`
	// HeaderBytes is how much of each sampled packet the datagrams carry: a byte count
	// (64..1024, default 128), or "transport": up to the end of the transport header, so
	// collectors get addresses, ports and flow labels but no payload byte of an unencrypted leg.
	HeaderBytes HeaderBytes `json:"headerBytes,omitempty"`
	// AnalyzerAddress is where the analyzer listens for sFlow (from our sampler and from
	// switches). Default ":6343" (contract.SFlowPort).
	AnalyzerAddress string `json:"analyzerAddress,omitempty"`
	// HTTPAddress serves /v1/flows, /v1/tags and /metrics. Default ":9091" (contract.AnalyzerPort).
	HTTPAddress string `json:"httpAddress,omitempty"`
	// Window is the smoothing window of the rate estimates. Default 10s.
	Window Duration `json:"window,omitempty"`
	// RegistryFile is a scitags registry (api.json format) to name tags; empty means the
	// snapshot compiled into the binary.
	RegistryFile string `json:"registryFile,omitempty"`
	// FireflyAddress, when set (e.g. ":10514"), makes the analyzer listen for scitags fireflies:
	// a flow announced with a tag is the other second signal for that tag. Empty: off.
	FireflyAddress string `json:"fireflyAddress,omitempty"`
	// AgentAddress is the IP address the sampler puts in its datagrams as the agent's; empty
	// means the first global address of the sampled interfaces (the pod IP).
	AgentAddress string `json:"agentAddress,omitempty"`
	// AllowedAgents are the external sFlow agents (switches, routers: IP addresses or CIDRs)
	// whose datagrams the analyzer accepts besides the pod's own sampler. Empty: only the
	// sampler's, so no other pod can feed forged samples into the tunnel's throughput.
	AllowedAgents []string `json:"allowedAgents,omitempty"`
}

// Default fills the telemetry fields that have a default.
func (t *Telemetry) Default() {
	if t.PollingInterval.Duration == 0 {
		t.PollingInterval.Duration = 20 * time.Second
	}
	if t.AnalyzerAddress == "" {
		t.AnalyzerAddress = contract.ListenAddress(contract.SFlowPort)
	}
	if t.HTTPAddress == "" {
		t.HTTPAddress = contract.ListenAddress(contract.AnalyzerPort)
	}
	if t.Window.Duration == 0 {
		t.Window.Duration = 10 * time.Second
	}
}

// Validate checks the sidecar's settings; the sFlow sidecar runs it on the section it builds
// from its flags.
func (t *Telemetry) Validate() error {
	var p problems
	if t.SamplingRate < 0 {
		p.add("samplingRate", "is %d, must be 0 (off) or a positive 1-in-N rate", t.SamplingRate)
	}
	for i, a := range t.Collectors {
		if err := checkHostPort(a); err != nil {
			p.add(fmt.Sprintf("collectors[%d]", i), "%v", err)
		}
	}
	for _, a := range []struct{ field, addr string }{
		{"analyzerAddress", t.AnalyzerAddress}, {"httpAddress", t.HTTPAddress}, {"fireflyAddress", t.FireflyAddress},
	} {
		if a.addr == "" {
			continue
		}
		if err := checkListenAddress(a.addr); err != nil {
			p.add(a.field, "%v", err)
		}
	}
	if h := t.HeaderBytes; h != 0 && h != HeaderBytesTransport && (h < minHeaderBytes || h > maxHeaderBytes) {
		p.add("headerBytes", "is %d, must be %d..%d or \"transport\"", int(h), minHeaderBytes, maxHeaderBytes)
	}
	if t.AgentAddress != "" {
		if _, err := netip.ParseAddr(t.AgentAddress); err != nil {
			p.add("agentAddress", "%q is not an IP address", t.AgentAddress)
		}
	}
	for i, a := range t.AllowedAgents {
		if _, err := ParseAgentPrefix(a); err != nil {
			p.add(fmt.Sprintf("allowedAgents[%d]", i), "%v", err)
		}
	}
	return p.err()
}

// ParseAgentPrefix reads an allowedAgents entry: an IP address (one agent) or a CIDR.
func ParseAgentPrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR (e.g. 192.0.2.7, 10.20.0.0/16)", s)
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// AllowedAgentPrefixes is AllowedAgents parsed (entries that do not parse, which Validate
// refuses, are left out).
func (t *Telemetry) AllowedAgentPrefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(t.AllowedAgents))
	for _, s := range t.AllowedAgents {
		if p, err := ParseAgentPrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// checkListenAddress accepts "host:port" and ":port" (all addresses).
func checkListenAddress(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not [host]:port (e.g. \":6343\", \"[::]:6343\")", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: port must be 0..65535", s)
	}
	return nil
}

// HeaderBytes is a sampled-header length: a byte count, or HeaderBytesTransport. In JSON, a
// number or "transport".
type HeaderBytes int

// HeaderBytesTransport cuts each sampled header after its transport header.
const HeaderBytesTransport HeaderBytes = -1

// The byte counts allowed: enough for Ethernet, IPv6 and ports; no more than sFlow agents send.
const minHeaderBytes, maxHeaderBytes = 64, 1024

// ParseHeaderBytes reads "transport" or a byte count (the range is Validate's).
func ParseHeaderBytes(s string) (HeaderBytes, error) {
	if s == "transport" {
		return HeaderBytesTransport, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is neither a byte count nor \"transport\"", s)
	}
	return HeaderBytes(n), nil
}

// MarshalJSON writes "transport" or the count.
func (h HeaderBytes) MarshalJSON() ([]byte, error) {
	if h == HeaderBytesTransport {
		return []byte(`"transport"`), nil
	}
	return strconv.AppendInt(nil, int64(h), 10), nil
}

// UnmarshalJSON reads "transport" or a count.
func (h *HeaderBytes) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) != nil {
		s = string(b)
	}
	v, err := ParseHeaderBytes(s)
	if err != nil {
		return err
	}
	*h = v
	return nil
}
