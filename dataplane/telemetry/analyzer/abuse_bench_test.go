package analyzer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/scitag"
	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
	"github.com/scitunnel/scitunnel/internal/testutil/netns"
)

// The BenchmarkAbuse benchmarks (make bench-abuse) print one line each: the heap in use and the
// goroutines at rest and after the flood, and what the analyzer evicted or refused.

func abuseLine(b *testing.B, flood string, heapRest, heapFlood uint64, gRest, gFlood int, h Health) {
	b.Helper()
	fmt.Printf("abuse sidecar %s: heap %.1f -> %.1f MiB, goroutines %d -> %d, agents evicted %d, expired %d, datagrams refused %d\n",
		flood, float64(heapRest)/(1<<20), float64(heapFlood)/(1<<20), gRest, gFlood, h.AgentsEvicted, h.AgentsExpired, h.Refused)
}

// BenchmarkAbuseAgentFlood feeds the analyzer 500,000 datagrams that each name a new agent (the
// finding: 78 MiB never freed before the agent table was bounded).
func BenchmarkAbuseAgentFlood(b *testing.B) {
	const flood = 500_000
	for b.Loop() {
		a := New(Options{})
		var w sflow.Writer
		heapRest, gRest := heapInuse(), runtime.NumGoroutine()
		for i := range flood {
			_ = a.Ingest(floodDatagram(&w, i))
		}
		heapFlood, gFlood := heapInuse(), runtime.NumGoroutine()
		abuseLine(b, fmt.Sprintf("%d distinct agents", flood), heapRest, heapFlood, gRest, gFlood, a.Health())
		runtime.KeepAlive(a)
	}
}

// BenchmarkAbuseSocketFlood sends 200,000 distinct-agent datagrams over loopback to a serving
// analyzer socket (loopback is the pod's own sampler, so they are admitted: the bound is what
// holds).
func BenchmarkAbuseSocketFlood(b *testing.B) {
	const flood = 200_000
	for b.Loop() {
		a := New(Options{})
		conn, err := ListenSFlow("127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		heapRest, gRest := heapInuse(), runtime.NumGoroutine()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = a.ServeSFlow(ctx, conn, slog.New(slog.NewTextHandler(io.Discard, nil))); close(done) }()
		c, err := net.Dial("udp", conn.LocalAddr().String())
		if err != nil {
			b.Fatal(err)
		}
		var w sflow.Writer
		for i := range flood {
			_, _ = c.Write(floodDatagram(&w, i))
		}
		// Wait (generously) until the analyzer has read what the socket did not drop.
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if h := a.Health(); h.Datagrams+h.ReceiveDropped >= flood {
				break
			}
		}
		heapFlood, gFlood := heapInuse(), runtime.NumGoroutine()
		abuseLine(b, fmt.Sprintf("%d distinct agents over UDP", flood), heapRest, heapFlood, gRest, gFlood, a.Health())
		c.Close()
		cancel()
		<-done
	}
}

// BenchmarkAbuseForgedSource sends 100,000 forged datagrams of the pod's tag from another
// network namespace (another pod) to the analyzer's socket: all are refused, and the tag's
// throughput stays 0. Needs root (network namespaces); skipped without.
func BenchmarkAbuseForgedSource(b *testing.B) {
	netns.Require(b)
	const flood = 100_000
	for b.Loop() {
		pod, hostile := netns.New(b, "sbpod"), netns.New(b, "sbhost")
		netns.Veth(b, pod, "sbp0", "fd5f::2/64", hostile, "sbh0", "fd5f::1/64")
		a := New(Options{AssignedTags: []scitag.Tag{atlasDebug}})
		var conn *net.UDPConn
		var err error
		pod.Do(b, func() { conn, err = ListenSFlow(":0") })
		if err != nil {
			b.Fatal(err)
		}
		heapRest, gRest := heapInuse(), runtime.NumGoroutine()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = a.ServeSFlow(ctx, conn, slog.New(slog.NewTextHandler(io.Discard, nil))); close(done) }()
		hostile.Do(b, func() {
			c, err := net.Dial("udp", net.JoinHostPort("fd5f::2", strconv.Itoa(conn.LocalAddr().(*net.UDPAddr).Port)))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			liar := newAgent()
			for range flood {
				_, _ = c.Write(liar.datagram(1_000_000, 1500, frame(hostA, hostB, 65572, 1, 2)))
			}
		})
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if h := a.Health(); h.Refused+h.ReceiveDropped >= flood {
				break
			}
		}
		heapFlood, gFlood := heapInuse(), runtime.NumGoroutine()
		if got := a.Totals()["atlas.Debug"].Bytes; got != 0 {
			b.Errorf("forged samples counted: atlas.Debug %.0f bytes", got)
		}
		abuseLine(b, fmt.Sprintf("%d forged datagrams from another pod", flood), heapRest, heapFlood, gRest, gFlood, a.Health())
		cancel()
		<-done
	}
}
