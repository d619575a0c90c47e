package proxy

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// Idle connections hold small buffers: a tunnel end must fit thousands of them in its pod's
// memory limit next to its bulk streams (buffers.go).
func TestIdleConnectionsStaySmall(t *testing.T) {
	prod := startProducer(t, echo)
	pr := startPair(t, pairOptions{producers: []string{prod.addr}})
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	// One bulk connection first, so the large-buffer pool is warm, as in a running tunnel.
	bulk, _ := net.Dial("tcp", pr.entries[0])
	go func() { _, _ = io.Copy(io.Discard, bulk) }()
	if _, err := bulk.Write(make([]byte, 8<<20)); err != nil {
		t.Fatal(err)
	}
	bulk.Close()

	before := heap()
	const n = 200
	var conns []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", pr.entries[0])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	eventually(t, "every connection to be relayed", 5*time.Second, func() bool { return len(pr.in.Connections().Active) == n })
	per := (heap() - before) / n
	// Each connection here costs both tunnel ends, the producer and the consumer side.
	t.Logf("%d idle TLS connections: %d KiB of heap each (both ends and both test sides)", n, per>>10)
	if per > 400<<10 {
		t.Fatalf("an idle TLS connection costs %d KiB of heap; want buffers to shrink while idle", per>>10)
	}
	runtime.KeepAlive(conns)
}

// A direction's buffer grows when a read fills the small one and shrinks after a run of quiet
// reads, not on the odd short read of a bulk stream.
func TestAdaptiveBufferFollowsTheTraffic(t *testing.T) {
	var a adaptiveBuffer
	if len(a.get()) != smallBuffer {
		t.Fatalf("starts with %d bytes", len(a.get()))
	}
	a.used(smallBuffer)
	if len(a.get()) != largeBuffer {
		t.Fatal("a full small buffer did not switch to a large one")
	}
	for i := 0; i < quietReads-1; i++ {
		a.used(100)
	}
	a.used(largeBuffer / 2) // busy again: the quiet run starts over
	for i := 0; i < quietReads-1; i++ {
		a.used(100)
	}
	if len(a.get()) != largeBuffer {
		t.Fatal("shrank before a full run of quiet reads")
	}
	a.used(100)
	if len(a.get()) != smallBuffer {
		t.Fatalf("still %d bytes after %d quiet reads", len(a.get()), quietReads)
	}
}
