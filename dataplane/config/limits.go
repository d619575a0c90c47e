package config

// The limits section: how much one listener of the proxy gives to strangers before it refuses
// them. A tunnel end's ports face consumers (Outbound) or the network (Inbound), so a flood of
// new UDP sources, of TCP connections that never finish their TLS handshake, or of connections
// that half-close and go silent must cost bounded memory and goroutines. Every field is optional:
// zero means the default, so a configuration written before this section existed (and one the
// operator writes without it) is safe as it is.

import "time"

// The defaults of Limits, sized for a proxy pod with a 1 GiB memory limit.
const (
	// DefaultMaxUDPSessions: a UDP session costs two goroutines, a socket, a 64 KiB reply
	// buffer and up to UDPQueueBytes of queued datagrams.
	DefaultMaxUDPSessions = 1024
	// DefaultMaxUDPSessionsPerSource keeps one host from taking every session of a listener.
	DefaultMaxUDPSessionsPerSource = 64
	// DefaultUDPQueueBytes holds a few large datagrams, or a hundred MTU-sized ones, while a
	// session's path to the target is being set up or is slower than its source.
	DefaultUDPQueueBytes = 256 << 10
	// DefaultMaxHandshakes in flight per TLS listener: a legitimate Outbound end opens its
	// connections a few at a time; thousands at once are a flood.
	DefaultMaxHandshakes = 256
	// DefaultHandshakeTimeout: a TLS 1.3 handshake takes one round trip and a signature.
	DefaultHandshakeTimeout = 5 * time.Second
	// DefaultHalfCloseTimeout: after one direction of a connection has ended, the other must
	// carry something at least this often.
	DefaultHalfCloseTimeout = time.Minute
)

// Limits bounds what floods can take from each listener. Zero (or an absent section) means the
// default of each field.
type Limits struct {
	// MaxUDPSessions is the most UDP sessions (source addresses) one listener carries at once;
	// datagrams from a further source are dropped and counted
	// (scitunnel_proxy_udp_dropped_total{reason="session_limit"}). Default 1024.
	MaxUDPSessions int `json:"maxUDPSessions,omitempty"`
	// MaxUDPSessionsPerSource is the most UDP sessions one source IP address holds on a listener
	// of the Outbound end, whose sources are consumers (reason="source_session_limit"). The
	// Inbound end's sources are Outbound pods, each carrying many consumers' sessions, so only
	// MaxUDPSessions applies there. Default 64.
	MaxUDPSessionsPerSource int `json:"maxUDPSessionsPerSource,omitempty"`
	// UDPQueueBytes is how many bytes of datagrams one UDP session queues toward its target;
	// beyond that datagrams are dropped and counted (reason="queue_full"). Default 256 KiB; at
	// least MaxFramedDatagram, so any one datagram fits.
	UDPQueueBytes int `json:"udpQueueBytes,omitempty"`
	// MaxHandshakes is the most TLS handshakes one listener of the Inbound end runs at once;
	// a connection beyond that is closed at once and counted
	// (scitunnel_proxy_tls_handshakes_refused_total). Default 256.
	MaxHandshakes int `json:"maxHandshakes,omitempty"`
	// HandshakeTimeout bounds each TLS handshake, at either end. Default 5s.
	HandshakeTimeout Duration `json:"handshakeTimeout,omitempty"`
	// HalfCloseTimeout closes a TCP or TLS connection one direction of which has ended once the
	// other direction has been silent this long (counted in
	// scitunnel_proxy_connections_timed_out_total{reason="half_closed"}). Default 1m.
	HalfCloseTimeout Duration `json:"halfCloseTimeout,omitempty"`
}

// WithDefaults returns l (nil: no section) with every unset field at its default. The proxy
// reads its limits through it, so the defaults need not be written into the configuration.
func (l *Limits) WithDefaults() Limits {
	var out Limits
	if l != nil {
		out = *l
	}
	orDefault := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	orDefault(&out.MaxUDPSessions, DefaultMaxUDPSessions)
	orDefault(&out.MaxUDPSessionsPerSource, DefaultMaxUDPSessionsPerSource)
	orDefault(&out.UDPQueueBytes, DefaultUDPQueueBytes)
	orDefault(&out.MaxHandshakes, DefaultMaxHandshakes)
	if out.HandshakeTimeout.Duration == 0 {
		out.HandshakeTimeout.Duration = DefaultHandshakeTimeout
	}
	if out.HalfCloseTimeout.Duration == 0 {
		out.HalfCloseTimeout.Duration = DefaultHalfCloseTimeout
	}
	return out
}

// Validate checks that no limit is negative and that a session's queue holds any datagram.
func (l *Limits) Validate() error {
	var p problems
	for _, f := range []struct {
		field string
		v     int
	}{
		{"maxUDPSessions", l.MaxUDPSessions}, {"maxUDPSessionsPerSource", l.MaxUDPSessionsPerSource},
		{"maxHandshakes", l.MaxHandshakes},
	} {
		if f.v < 0 {
			p.add(f.field, "is %d, must be positive (or 0 for the default)", f.v)
		}
	}
	if l.UDPQueueBytes != 0 && l.UDPQueueBytes < MaxFramedDatagram {
		p.add("udpQueueBytes", "is %d, must be at least %d bytes (one datagram of any size), or 0 for the default %d",
			l.UDPQueueBytes, MaxFramedDatagram, DefaultUDPQueueBytes)
	}
	for _, d := range []struct {
		field string
		v     Duration
	}{{"handshakeTimeout", l.HandshakeTimeout}, {"halfCloseTimeout", l.HalfCloseTimeout}} {
		if d.v.Duration < 0 {
			p.add(d.field, "must not be negative (0 for the default)")
		}
	}
	return p.err()
}
