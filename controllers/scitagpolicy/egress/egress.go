// Package egress is the HTTP client the manager fetches user-named URLs with (a ScitagPolicy's
// registry URL). Anyone who may create a policy chooses the URL, so the client must not become
// a way to reach what the manager can reach and they cannot: it speaks https unless allowed,
// follows redirects only on the same host, and dials only addresses its Rules allow. The
// address is checked when the socket connects (net.Dialer.Control), on the address actually
// dialled, so a name that resolves to a public address when checked and to a private one when
// dialled (DNS rebinding) is still refused.
package egress

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"syscall"
	"time"
)

// Refusals, wrapped by the errors the client returns. Callers tell users which rule refused
// a URL only for the scheme and redirects (both visible in the URL and the answer); a refused
// address reads like any unreachable one, so that status messages cannot map the cluster.
var (
	ErrSchemeRefused   = errors.New("only https:// URLs are fetched")
	ErrRedirectRefused = errors.New("redirect to another host or scheme refused")
	ErrAddressRefused  = errors.New("address refused")
)

// AlwaysRefused are ranges no user-named URL should reach: loopback, link-local (the cloud
// metadata endpoints live there), unspecified, "this network" and multicast.
func AlwaysRefused() []netip.Prefix { return slices.Clone(alwaysRefused) }

var alwaysRefused = mustPrefixes("127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10", "0.0.0.0/8", "::/128",
	"224.0.0.0/4", "ff00::/8")

// DefaultPrivate are the private ranges refused unless the site changes them (RFC 1918,
// carrier-grade NAT, IPv6 unique-local): where in-cluster and site-internal services live.
func DefaultPrivate() []netip.Prefix {
	return mustPrefixes("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
}

// Rules say what the client may fetch.
type Rules struct {
	// AllowHTTP lets plain http:// URLs through (off: a registry read in clear can be altered
	// on the way, and the tags it names end up on every tunnel's packets).
	AllowHTTP bool
	// Refused ranges are never dialled; AlwaysRefused is added to them.
	Refused []netip.Prefix
	// Allowed ranges are dialled even when a refused range holds them: a site's internal
	// mirror, or loopback in tests.
	Allowed []netip.Prefix
}

// Permits reports whether the rules let the client dial addr.
func (r Rules) Permits(addr netip.Addr) bool {
	addr = addr.Unmap() // ::ffff:127.0.0.1 is loopback too
	if slices.ContainsFunc(r.Allowed, func(p netip.Prefix) bool { return p.Contains(addr) }) {
		return true
	}
	refused := func(p netip.Prefix) bool { return p.Contains(addr) }
	return !slices.ContainsFunc(alwaysRefused, refused) && !slices.ContainsFunc(r.Refused, refused)
}

// CheckScheme refuses a URL scheme the rules do not allow.
func (r Rules) CheckScheme(scheme string) error {
	switch {
	case scheme == "https", scheme == "http" && r.AllowHTTP:
		return nil
	case scheme == "http":
		return ErrSchemeRefused
	default:
		return fmt.Errorf("%w (scheme %q)", ErrSchemeRefused, scheme)
	}
}

// maxRedirects bounds a chain of same-host redirects.
const maxRedirects = 3

// NewClient returns a client that keeps to the rules. timeout bounds a whole request, body
// included. No proxy from the environment is used: the rules would then judge the proxy's
// address, not the registry's.
func NewClient(r Rules, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: r.control}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Timeout:       timeout,
		Transport:     schemeGuard{rules: r, next: transport},
		CheckRedirect: sameHostRedirects,
	}
}

// control runs after the name was resolved and before the socket connects.
func (r Rules) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address and port", ErrAddressRefused, address)
	}
	if !r.Permits(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrAddressRefused, ap.Addr())
	}
	return nil
}

// schemeGuard checks every request, redirects included, against the allowed schemes.
type schemeGuard struct {
	rules Rules
	next  http.RoundTripper
}

func (g schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := g.rules.CheckScheme(req.URL.Scheme); err != nil {
		return nil, err
	}
	return g.next.RoundTrip(req)
}

// sameHostRedirects follows a redirect only to the same host and port, and never from https
// to http: another host would be a second URL nobody checked against the policy's.
func sameHostRedirects(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	if req.URL.Host != first.Host || (first.Scheme == "https" && req.URL.Scheme != "https") {
		return ErrRedirectRefused
	}
	if len(via) > maxRedirects {
		return fmt.Errorf("%w: more than %d redirects", ErrRedirectRefused, maxRedirects)
	}
	return nil
}

// ParsePrefixes reads CIDRs (a flag's comma-separated values); a bare address is a /32 or /128.
func ParsePrefixes(cidrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, s := range cidrs {
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an IP address", s)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func mustPrefixes(cidrs ...string) []netip.Prefix {
	p, err := ParsePrefixes(cidrs)
	if err != nil {
		panic(err)
	}
	return p
}
