package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Direction values of the byte metrics. The accepted side of every connection faces the consumer
// and the dialed side faces the producer, on both ends of a tunnel, so the names hold for both.
const (
	dirToProducer = "to_producer"
	dirToConsumer = "to_consumer"
)

// metrics are the proxy's Prometheus series. Each Proxy has its own registry so several can
// run in one process (tests) without colliding.
type metrics struct {
	registry          *prometheus.Registry
	bytes             *prometheus.CounterVec
	active            *prometheus.GaugeVec
	total             *prometheus.CounterVec
	handshakeFailures *prometheus.CounterVec
	dialFailures      *prometheus.CounterVec
	datagrams         *prometheus.CounterVec
	datagramDrops     *prometheus.CounterVec
	dialRetries       *prometheus.CounterVec
	configReloads     *prometheus.CounterVec
	fireflyDrops      prometheus.Counter
	// handshakesRefused and timedOut count what the flood limits (config.Limits) turned away.
	handshakesRefused prometheus.Counter
	timedOut          *prometheus.CounterVec
}

func newMetrics(tunnel string) *metrics {
	constLabels := prometheus.Labels{"tunnel": tunnel}
	m := &metrics{
		registry: prometheus.NewRegistry(),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scitunnel_proxy_bytes_total", ConstLabels: constLabels,
			Help: "Payload bytes relayed, by scitag and direction (to_producer, to_consumer).",
		}, []string{"scitag", "direction"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "scitunnel_proxy_connections_active", ConstLabels: constLabels,
			Help: "Connections (or UDP sessions) being relayed now.",
		}, []string{"scitag", "protocol"}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scitunnel_proxy_connections_total", ConstLabels: constLabels,
			Help: "Connections (or UDP sessions) relayed since start.",
		}, []string{"scitag", "protocol"}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scitunnel_proxy_tls_handshake_failures_total", ConstLabels: constLabels,
			Help: "TLS handshakes that failed, by reason (no_client_certificate, unknown_authority, expired_certificate, identity_not_allowed, ...).",
		}, []string{"reason"}),
		dialFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scitunnel_proxy_dial_failures_total", ConstLabels: constLabels,
			Help: "Connections to a target (producer or remote end) that could not be made.",
		}, []string{"target"}),
		dialRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scitunnel_proxy_dial_retries_total", ConstLabels: constLabels,
			Help: "Dials to a target retried after it refused the connection (a peer not ready yet), within the dial timeout.",
		}, []string{"target"}),
		datagrams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scitunnel_proxy_udp_datagrams_total", ConstLabels: constLabels,
			Help: "UDP datagrams relayed, by direction.",
		}, []string{"direction"}),
		datagramDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scitunnel_proxy_udp_dropped_total", ConstLabels: constLabels,
			Help: "UDP datagrams dropped, by reason: too_large (above maxDatagramSize), queue_full (a session's queue at limits.udpQueueBytes), session_limit (a new source beyond limits.maxUDPSessions), source_session_limit (beyond limits.maxUDPSessionsPerSource), write_failed, draining (a new source during shutdown).",
		}, []string{"reason"}),
		configReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scitunnel_proxy_config_reloads_total", ConstLabels: constLabels,
			Help: "Changes of the configuration file applied or refused (run --watch-config), by result; allowed_clients counts changes of the allow-list of client identities, which the pods take in place.",
		}, []string{"result"}),
		fireflyDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scitunnel_proxy_fireflies_dropped_total", ConstLabels: constLabels,
			Help: "Firefly announcements dropped because the sender's queue was full (collectors slow to resolve or to take them).",
		}),
		handshakesRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scitunnel_proxy_tls_handshakes_refused_total", ConstLabels: constLabels,
			Help: "Connections closed unanswered because their listener already ran limits.maxHandshakes TLS handshakes.",
		}),
		timedOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scitunnel_proxy_connections_timed_out_total", ConstLabels: constLabels,
			Help: "Connections (or UDP sessions carried over TLS) closed by a timeout, by reason: idle (idleTimeout), half_closed (one direction ended, the other silent for limits.halfCloseTimeout).",
		}, []string{"reason"}),
	}
	m.registry.MustRegister(m.handshakesRefused, m.timedOut, m.configReloads, m.bytes, m.active, m.total, m.handshakeFailures, m.dialFailures,
		m.datagrams, m.datagramDrops, m.dialRetries, m.fireflyDrops,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
