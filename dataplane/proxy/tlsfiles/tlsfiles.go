// Package tlsfiles serves mutual-TLS configurations from PEM files that change on disk.
//
// Kubernetes renews a mounted Secret by swapping a symlink, so the files are polled and compared
// by content (dataplane/filewatch); a handshake always gets the newest valid material while
// established connections keep the keys they negotiated: certificates are reloaded in place,
// never by restarting the proxy. A broken update (a key that does not match its certificate,
// say) is refused and the previous material stays in use.
package tlsfiles

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/filewatch"
)

// Files names the PEM files of one end.
type Files struct {
	CertFile string
	KeyFile  string
	CAFile   string
}

// material is one consistent load of the three files.
type material struct {
	cert     tls.Certificate
	leaf     *x509.Certificate
	pool     *x509.CertPool
	raw      [3][]byte
	loadedAt time.Time
}

// Source holds the current material and reloads it.
type Source struct {
	files   Files
	current atomic.Pointer[material]
	// allowed is the Inbound end's allow-list, read per handshake so that a revoked identity
	// is refused from the next handshake on without touching established connections.
	allowed atomic.Pointer[allowList]
	log     *slog.Logger

	mu      sync.Mutex
	lastErr error
}

// Load reads the files once; an error here means the end cannot start.
func Load(files Files, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Source{files: files, log: log}
	s.allowed.Store(&allowList{})
	m, err := read(files)
	if err != nil {
		return nil, err
	}
	s.current.Store(m)
	return s, nil
}

func (f Files) paths() []string { return []string{f.CertFile, f.KeyFile, f.CAFile} }

func read(f Files) (*material, error) {
	var raw [3][]byte
	for i, p := range f.paths() {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		raw[i] = b
	}
	return parse(f, raw)
}

// parse makes material of the three files' contents.
func parse(f Files, raw [3][]byte) (*material, error) {
	cert, err := tls.X509KeyPair(raw[0], raw[1])
	if err != nil {
		return nil, fmt.Errorf("tls: %s and %s: %w", f.CertFile, f.KeyFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw[2]) {
		return nil, fmt.Errorf("tls: %s holds no PEM certificate", f.CAFile)
	}
	return &material{cert: cert, leaf: cert.Leaf, pool: pool, raw: raw, loadedAt: time.Now()}, nil
}

// Reload re-reads the files and swaps them in if they changed and are valid. It reports whether
// new material was taken.
func (s *Source) Reload() (bool, error) {
	m, err := read(s.files)
	return s.take(m, err)
}

// take swaps in m (unless err says the files were bad) if it differs from the current material.
func (s *Source) take(m *material, err error) (bool, error) {
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
	if err != nil {
		return false, err
	}
	old := s.current.Load()
	if old != nil && bytes.Equal(old.raw[0], m.raw[0]) && bytes.Equal(old.raw[1], m.raw[1]) && bytes.Equal(old.raw[2], m.raw[2]) {
		return false, nil
	}
	s.current.Store(m)
	return true, nil
}

// Watch polls the files every interval until ctx ends (dataplane/filewatch) and takes changed
// material, logging changes and refusals. A refused change (a key that does not match its
// certificate, say) is logged once; the previous material stays until the files change again.
func (s *Source) Watch(ctx context.Context, interval time.Duration) {
	cur := s.current.Load()
	w := &filewatch.Watcher{
		Files:    s.files.paths(),
		Interval: interval,
		Initial:  [][]byte{cur.raw[0], cur.raw[1], cur.raw[2]},
		OnChange: func(contents [][]byte) {
			changed, err := s.take(parse(s.files, [3][]byte{contents[0], contents[1], contents[2]}))
			switch {
			case err != nil:
				s.log.Warn("certificate reload refused; keeping the previous certificates", "err", err)
			case changed:
				s.log.Info("certificates reloaded", "notAfter", s.NotAfter())
			}
		},
		OnError: func(err error) {
			s.log.Warn("certificate files unreadable; keeping the previous certificates", "err", err)
		},
	}
	w.Run(ctx)
}

// NotAfter is the expiry of the current certificate.
func (s *Source) NotAfter() time.Time { return s.current.Load().leaf.NotAfter }

// Valid reports whether the current certificate is within its validity period.
func (s *Source) Valid(now time.Time) bool {
	l := s.current.Load().leaf
	return !now.Before(l.NotBefore) && now.Before(l.NotAfter)
}

// SetAllowed replaces the allow-list of client identities (DNS, URI, IP or email SANs) that
// ServerConfig's handshakes check; empty means any certificate the CA signed. It reports
// whether the list changed. Established connections are not affected.
func (s *Source) SetAllowed(names []string) bool {
	next := newAllowList(names)
	slices.Sort(next.names)
	next.names = slices.Compact(next.names)
	if slices.Equal(s.allowed.Load().names, next.names) {
		return false
	}
	s.allowed.Store(&next)
	return true
}

// ServerConfig is the Inbound end's configuration: TLS 1.3 only, a client certificate signed
// by the current CA required, and (when the allow-list is not empty) one of its SANs on the
// list. allowed replaces the allow-list (SetAllowed); certificates, CA and allow-list are all
// read per handshake.
//
// Session resumption is off: a resumed TLS 1.3 session skips the client's certificate, so for
// the ticket's lifetime (up to 7 days) a client would get in on the identity and CA it had when
// the ticket was issued, past a CA rotation, a renewed certificate or a revocation. Every
// connection does a full handshake instead, which costs a fraction of a millisecond per
// connection of a tunnel whose connections carry bulk streams.
func (s *Source) ServerConfig(allowed []string) *tls.Config {
	s.SetAllowed(allowed)
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		SessionTicketsDisabled: true,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.current.Load()
			allow := s.allowed.Load()
			return &tls.Config{
				MinVersion:                  tls.VersionTLS13,
				SessionTicketsDisabled:      true,
				DynamicRecordSizingDisabled: true,
				Certificates:                []tls.Certificate{m.cert},
				ClientAuth:                  tls.RequireAndVerifyClientCert,
				ClientCAs:                   m.pool,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 {
						return nil // RequireAndVerifyClientCert already refused it
					}
					return allow.check(cs.PeerCertificates[0])
				},
			}, nil
		},
	}
}

// ClientConfig is the Outbound end's configuration for one dial: it presents the current
// certificate and verifies the server against the current CA and serverName.
func (s *Source) ClientConfig(serverName string) *tls.Config {
	m := s.current.Load()
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Full-size records from the first byte: small first records help a browser render a
		// page early; a relay of bulk streams only pays for them in records and system calls.
		DynamicRecordSizingDisabled: true,
		ServerName:                  serverName,
		RootCAs:                     m.pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &m.cert, nil
		},
	}
}

// allowList matches a client certificate's DNS, URI, IP and email SANs.
type allowList struct{ names []string }

func newAllowList(names []string) allowList { return allowList{names: slices.Clone(names)} }

// ErrIdentityNotAllowed is returned (wrapped) for a valid certificate whose identity is not on
// the allow-list.
var ErrIdentityNotAllowed = errors.New("client identity not allowed")

func (a allowList) check(c *x509.Certificate) error {
	if len(a.names) == 0 {
		return nil
	}
	ids := identities(c)
	for _, id := range ids {
		if slices.Contains(a.names, id) {
			return nil
		}
	}
	return fmt.Errorf("%w: certificate %q carries %v, none on the allow-list", ErrIdentityNotAllowed, c.Subject.CommonName, ids)
}

func identities(c *x509.Certificate) []string {
	ids := slices.Clone(c.DNSNames)
	ids = append(ids, c.EmailAddresses...)
	for _, u := range c.URIs {
		ids = append(ids, u.String())
	}
	for _, ip := range c.IPAddresses {
		ids = append(ids, ip.String())
	}
	return ids
}

// Handshake failure reasons, the label values of the handshake-failure metric.
const (
	FailNoClientCert    = "no_client_certificate"
	FailUnknownCA       = "unknown_authority"
	FailExpired         = "expired_certificate"
	FailNotAllowed      = "identity_not_allowed"
	FailBadServerName   = "server_name_mismatch"
	FailProtocol        = "protocol"
	FailTimeout         = "timeout"
	FailPeerClosed      = "peer_closed"
	FailRemoteRejection = "rejected_by_peer"
)

// Classify names the reason a handshake failed, for metrics and logs.
func Classify(err error) string {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var hostname x509.HostnameError
	var alert tls.AlertError
	var netErr net.Error
	switch {
	case errors.Is(err, ErrIdentityNotAllowed):
		return FailNotAllowed
	case errors.As(err, &unknown):
		return FailUnknownCA
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return FailExpired
	case errors.As(err, &hostname):
		return FailBadServerName
	case errors.As(err, &alert):
		return FailRemoteRejection
	case errors.As(err, &netErr) && netErr.Timeout():
		return FailTimeout
	}
	msg := err.Error()
	switch {
	case containsAny(msg, "didn't provide a certificate", "client didn't provide"):
		return FailNoClientCert
	case containsAny(msg, "EOF", "connection reset"):
		return FailPeerClosed
	}
	return FailProtocol
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
