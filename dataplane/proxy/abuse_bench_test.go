package proxy

import (
	"fmt"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/config"
)

// The abuse benchmarks print what each flood makes a tunnel end hold, with the default limits
// where the flood fits in a few seconds (make bench-abuse):
//
//	go test -run '^$' -bench '^BenchmarkAbuse' -benchtime=1x ./dataplane/proxy/
//
// Each line: abuse proxy <flood>: heap <at rest> -> <under the flood> MiB, goroutines <at
// rest> -> <under the flood>, then what the limits refused, dropped or closed.

// 4000 new sources from 50 loopback addresses against the default session limits.
func BenchmarkAbuseUDPNewSourceFlood(b *testing.B) {
	for range b.N {
		r, _ := floodUDPSources(b, 50, 80, nil)
		fmt.Println(r.line("udp-new-sources"))
	}
}

// 2000 connections that never start their TLS handshake, default maxHandshakes and timeout.
func BenchmarkAbuseStalledTLSHandshakes(b *testing.B) {
	for range b.N {
		r, _ := floodStalledHandshakes(b, 2000, nil)
		fmt.Println(r.line("stalled-tls-handshakes"))
	}
}

// 300 connections half-closed toward a producer that never answers; halfCloseTimeout is
// shortened from its default (1m) so the benchmark sees them closed.
func BenchmarkAbuseHalfClosedConnections(b *testing.B) {
	for range b.N {
		r, _, _ := floodHalfClosed(b, 300, &config.Limits{HalfCloseTimeout: config.Duration{Duration: 5 * time.Second}})
		fmt.Println(r.line("half-closed-connections"))
	}
}

// One source sending 2500 datagrams of 60 KB while its UDP-over-TLS path stalls in the
// handshake, default udpQueueBytes.
func BenchmarkAbuseStalledUDPOverTLS(b *testing.B) {
	for range b.N {
		r := floodStalledUDPOverTLS(b, 2500, &config.Limits{HandshakeTimeout: config.Duration{Duration: 30 * time.Second}})
		fmt.Println(r.line("udp-stalled-queue"))
	}
}
