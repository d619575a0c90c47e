package splice

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// writer -> (a) src ==splice==> dst (b) -> reader
func relayPair(t *testing.T) (writer, src, dst, reader *net.TCPConn) {
	writer, src = tcpPair(t)
	dst, reader = tcpPair(t)
	return
}

func TestCopyMovesEveryByteAndEndsAtEOF(t *testing.T) {
	writer, src, dst, reader := relayPair(t)
	var reported atomic.Int64
	done := make(chan error, 1)
	go func() { done <- Copy(dst, src, func(n int64) { reported.Add(n) }) }()

	const n = 64 << 20
	data := make([]byte, n)
	rng := rand.NewChaCha8([32]byte{7})
	if _, err := rng.Read(data); err != nil {
		t.Fatal(err)
	}
	go func() {
		if _, err := writer.Write(data); err != nil {
			t.Errorf("writer: %v", err)
		}
		if err := writer.CloseWrite(); err != nil {
			t.Errorf("writer half-close: %v", err)
		}
	}()
	got := make(chan []byte, 1)
	go func() {
		h := sha256.New()
		if _, err := io.Copy(h, reader); err != nil {
			t.Errorf("reader: %v", err)
		}
		got <- h.Sum(nil)
	}()
	if err := <-done; err != nil {
		t.Fatalf("Copy: %v", err)
	}
	if err := dst.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	if !bytes.Equal(<-got, want[:]) {
		t.Fatal("the bytes changed on the way")
	}
	if reported.Load() != n {
		t.Fatalf("progress reported %d bytes, want %d", reported.Load(), n)
	}
}

// A burst followed by silence is reported at once, not when the connection ends: this is what
// the proxy's live byte counts rely on.
func TestCopyReportsABurstBeforeTheConnectionEnds(t *testing.T) {
	writer, src, dst, reader := relayPair(t)
	var reported atomic.Int64
	// The test's cleanup closes the sockets, which ends this Copy with an error of no interest.
	go func() { _ = Copy(dst, src, func(n int64) { reported.Add(n) }) }()
	const burst = 300_000
	if _, err := writer.Write(make([]byte, burst)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(reader, make([]byte, burst)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for reported.Load() != burst {
		if time.Now().After(deadline) {
			t.Fatalf("after the burst was delivered, progress reports %d of %d bytes", reported.Load(), burst)
		}
		time.Sleep(time.Millisecond)
	}
}

// Closing either socket ends a Copy that is waiting for data.
func TestCopyEndsWhenClosed(t *testing.T) {
	_, src, dst, _ := relayPair(t)
	done := make(chan error, 1)
	go func() { done <- Copy(dst, src, func(int64) {}) }()
	time.Sleep(50 * time.Millisecond)
	src.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Copy on a closed socket returned nil (EOF)")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Copy kept waiting on a closed socket")
	}
}
