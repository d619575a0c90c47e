package proxy

// Floods, on loopback: what a hostile or broken client can make a tunnel end hold. Each flood
// is a function shared by a test, which asserts bounds far below what the proxy held before its
// limits (config.Limits), and by a BenchmarkAbuse... benchmark (abuse_bench_test.go), which
// prints the figures. While each flood runs, an established stream is checked byte for byte.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// footprint is the process's heap in use and goroutines at one moment.
type footprint struct {
	heap       uint64
	goroutines int
}

func measure() footprint {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return footprint{heap: m.HeapInuse, goroutines: runtime.NumGoroutine()}
}

// floodReport is what a flood did: the footprint at rest and under the flood, and what the
// limits counted.
type floodReport struct {
	rest, flood footprint
	counts      string
}

func (r floodReport) heapGrowth() int64 { return int64(r.flood.heap) - int64(r.rest.heap) }

func (r floodReport) goroutineGrowth() int { return r.flood.goroutines - r.rest.goroutines }

// line is the benchmark's one-line summary of a flood.
func (r floodReport) line(flood string) string {
	const mib = 1 << 20
	return fmt.Sprintf("abuse proxy %s: heap %.1f -> %.1f MiB, goroutines %d -> %d, %s",
		flood, float64(r.rest.heap)/mib, float64(r.flood.heap)/mib, r.rest.goroutines, r.flood.goroutines, r.counts)
}

// streamCheck keeps an echoed stream busy through a flood and verifies every byte that comes
// back: the flood must not disturb established streams.
type streamCheck struct {
	stop     chan struct{}
	done     chan error
	verified atomic.Int64
}

// checkEcho starts round trips of 32 KiB chunks over c, which must echo.
func checkEcho(c net.Conn) *streamCheck {
	sc := &streamCheck{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		pat := newPattern(7)
		out, in := make([]byte, 32<<10), make([]byte, 32<<10)
		for {
			select {
			case <-sc.stop:
				sc.done <- nil
				return
			default:
			}
			_, _ = pat.Read(out)
			if _, err := c.Write(out); err != nil {
				sc.done <- fmt.Errorf("write after %d verified bytes: %w", sc.verified.Load(), err)
				return
			}
			if _, err := io.ReadFull(c, in); err != nil {
				sc.done <- fmt.Errorf("read after %d verified bytes: %w", sc.verified.Load(), err)
				return
			}
			if !bytes.Equal(in, out) {
				sc.done <- fmt.Errorf("the stream's bytes changed after %d verified bytes", sc.verified.Load())
				return
			}
			sc.verified.Add(int64(len(out)))
		}
	}()
	return sc
}

// finish stops the checks and fails t if the stream broke or carried nothing.
func (sc *streamCheck) finish(t testing.TB) {
	t.Helper()
	close(sc.stop)
	if err := <-sc.done; err != nil {
		t.Fatalf("the established stream, during the flood: %v", err)
	}
	if sc.verified.Load() == 0 {
		t.Fatal("the established stream carried nothing during the flood")
	}
}

// modeProducer is a producer whose connections say what they want in their first byte: 'E'
// echoes the rest, 'S' reads to the end and then stays silent without closing (the peer of a
// half-closed connection that never answers). A silent connection is held without a goroutine,
// so the goroutines a flood leaves are the proxy's. silentEOFs counts silent connections that
// were half-closed toward the producer.
type modeProducer struct {
	addr       string
	silentEOFs atomic.Int64

	mu   sync.Mutex
	held []net.Conn
}

func startModeProducer(t testing.TB) *modeProducer {
	t.Helper()
	mp := &modeProducer{}
	t.Cleanup(func() {
		mp.mu.Lock()
		defer mp.mu.Unlock()
		for _, c := range mp.held {
			c.Close()
		}
	})
	mp.addr = startProducer(t, func(c net.Conn) {
		mode := make([]byte, 1)
		if _, err := io.ReadFull(c, mode); err != nil {
			c.Close()
			return
		}
		if mode[0] == 'E' {
			_, _ = io.Copy(c, c)
			c.Close()
			return
		}
		_, _ = io.Copy(io.Discard, c)
		mp.mu.Lock()
		mp.held = append(mp.held, c)
		mp.mu.Unlock()
		mp.silentEOFs.Add(1)
	}).addr
	return mp
}

// dialEchoStream opens a connection through entry to a modeProducer in echo mode.
func dialEchoStream(t testing.TB, entry string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", entry)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte{'E'}); err != nil {
		t.Fatal(err)
	}
	return c
}
