// Package testutil holds the helpers the tests of several packages share (free ports, a TCP
// server on loopback, a buffer a child process writes while the test reads it), so each is
// written once. Privileged helpers
// for network namespaces live in internal/testutil/netns.
package testutil

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
)

// TB is the part of testing.TB (and of Ginkgo's GinkgoT()) the helpers use.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// FreePort returns a port that is free for both TCP and UDP on every address ([::], which
// covers 127.0.0.1 and [::1] too) right now, failing t if there is none.
func FreePort(t TB) int {
	t.Helper()
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// FreePorts returns n distinct ports free for TCP and UDP on every address, holding each until
// all are chosen so none is returned twice.
func FreePorts(n int) ([]int, error) {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries == 50*n {
			return nil, fmt.Errorf("no %d free ports in %d tries", n, tries)
		}
		ln, err := net.Listen("tcp", "[::]:0")
		if err != nil {
			return nil, err
		}
		held = append(held, ln)
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("::", strconv.Itoa(port)))
		if err != nil {
			continue // taken for UDP; the held TCP listener keeps it from coming back
		}
		pc.Close()
		ports = append(ports, port)
	}
	return ports, nil
}

// ServeTCP listens on addr ("[::1]:0", "127.0.0.1:0") until the test ends, handling each
// connection in its own goroutine, and returns the bound address: a stand-in producer, sink or
// echo server.
func ServeTCP(t testing.TB, addr string, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().String()
}

// LockedBuffer collects what another goroutine writes (a child process's output, copied by
// os/exec, or a server's log) while the test may read it.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
