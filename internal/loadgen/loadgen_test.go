package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/scitunnel/scitunnel/internal/testutil"
)

func TestStreamIsDeterministicPerSeed(t *testing.T) {
	a, b, c := make([]byte, 100_000), make([]byte, 100_000), make([]byte, 100_000)
	_, _ = NewStream(7).Read(a)
	// Read in odd pieces: the stream must not depend on read sizes.
	s := NewStream(7)
	for off := 0; off < len(b); off += 997 {
		_, _ = s.Read(b[off:min(off+997, len(b))])
	}
	_, _ = NewStream(8).Read(c)
	if !bytes.Equal(a, b) {
		t.Fatal("the same seed gave different bytes")
	}
	if bytes.Equal(a, c) {
		t.Fatal("different seeds gave the same bytes")
	}
}

func TestVerifierFindsTheFirstWrongByte(t *testing.T) {
	p := make([]byte, 5000)
	_, _ = NewStream(1).Read(p)
	v := NewVerifier(1)
	_, _ = v.Write(p[:1234])
	p[3000] ^= 0x40
	p[4000] ^= 0x01
	_, _ = v.Write(p[1234:])
	got := v.Verdict()
	if got.OK() || got.FirstMismatch != 3000 || got.Bytes != 5000 {
		t.Fatalf("verdict %+v, want the mismatch at 3000 of 5000", got)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	in := Request{Op: OpPut, Seed: 1 << 40, Length: 12345, RateBitsPerSecond: 1e9}
	b, _ := in.MarshalBinary()
	var out Request
	if err := out.UnmarshalBinary(b); err != nil || out != in {
		t.Fatalf("round trip: %+v %v", out, err)
	}
	b[0] = 'X'
	if err := out.UnmarshalBinary(b); err == nil {
		t.Fatal("a request without the magic was accepted")
	}
}

// serve starts a server on loopback, returning its address and its log.
func serve(t *testing.T) (string, *testutil.LockedBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := &testutil.LockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- (&Server{Log: log}).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), log
}

func TestGetAndPutVerifyEveryByte(t *testing.T) {
	addr, log := serve(t)
	for _, op := range []Op{OpGet, OpPut} {
		res := Run(context.Background(), Options{Address: addr, Op: op, Seed: 100, Bytes: 3<<20 + 17, Parallel: 3})
		if !res.Verified || res.Bytes != 3*(3<<20+17) || len(res.Connections) != 3 {
			t.Fatalf("%c: %+v", op, res)
		}
		for _, c := range res.Connections {
			if c.SHA256 == "" || (op == OpPut && c.PeerSHA256 != c.SHA256) {
				t.Errorf("%c: connection %+v", op, c)
			}
		}
	}
	waitFor(t, func() bool { return strings.Count(log.String(), "\n") == 6 })
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		var rep ConnReport
		if err := json.Unmarshal([]byte(line), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Bytes != 3<<20+17 || rep.Error != "" || (rep.Op == "put" && !*rep.Verified) {
			t.Errorf("server report %+v", rep)
		}
	}
}

func TestUnboundedRunsEndWithTheDuration(t *testing.T) {
	addr, _ := serve(t)
	for _, op := range []Op{OpGet, OpPut} {
		res := Run(context.Background(), Options{Address: addr, Op: op, Seed: 5, Duration: 300 * time.Millisecond,
			RateBitsPerSecond: 80e6})
		if !res.Verified || res.Bytes == 0 {
			t.Fatalf("%c: %+v", op, res)
		}
	}
}

// A path that alters one byte is caught in both directions.
func TestCorruptionIsDetected(t *testing.T) {
	addr, _ := serve(t)
	proxy := corruptingProxy(t, addr, 100_000)
	for _, op := range []Op{OpGet, OpPut} {
		res := Run(context.Background(), Options{Address: proxy, Op: op, Seed: 9, Bytes: 1 << 20})
		if res.Verified {
			t.Fatalf("%c: a corrupted stream verified: %+v", op, res)
		}
		if !strings.Contains(res.Connections[0].Error, "100000") {
			t.Errorf("%c: error %q does not name the altered byte's offset", op, res.Connections[0].Error)
		}
	}
}

func TestShortStreamIsNotVerified(t *testing.T) {
	addr, _ := serve(t)
	// The proxy forwards only 1000 payload bytes producer to consumer, then closes.
	proxy := truncatingProxy(t, addr, requestSize, 1000)
	res := Run(context.Background(), Options{Address: proxy, Op: OpGet, Seed: 3, Bytes: 1 << 20})
	if res.Verified || !strings.Contains(res.Connections[0].Error, "received 1000 of") {
		t.Fatalf("a truncated stream: %+v", res)
	}
}

// corruptingProxy relays to target, flipping the payload byte at offset (after the request
// header) in whichever direction carries the payload.
func corruptingProxy(t *testing.T, target string, offset int) string {
	return proxy(t, target, func(up, down io.Writer, fromClient, fromServer io.Reader) {
		head := make([]byte, requestSize)
		_, _ = io.ReadFull(fromClient, head)
		_, _ = up.Write(head)
		var req Request
		_ = req.UnmarshalBinary(head)
		flip := func(dst io.Writer, src io.Reader) {
			buf, _ := io.ReadAll(io.LimitReader(src, int64(offset+1)))
			if len(buf) > offset {
				buf[offset] ^= 0xff
			}
			_, _ = dst.Write(buf)
			_, _ = io.Copy(dst, src)
		}
		if req.Op == OpGet {
			go func() { _, _ = io.Copy(up, fromClient) }()
			flip(down, fromServer)
		} else {
			verdict := make(chan struct{})
			go func() { _, _ = io.Copy(down, fromServer); close(verdict) }()
			flip(up, fromClient)
			_ = up.(*net.TCPConn).CloseWrite() // pass the client's half-close on
			<-verdict
		}
	})
}

// truncatingProxy passes the client's first headBytes, then only keep bytes back.
func truncatingProxy(t *testing.T, target string, headBytes, keep int) string {
	return proxy(t, target, func(up, down io.Writer, fromClient, fromServer io.Reader) {
		_, _ = io.CopyN(up, fromClient, int64(headBytes))
		_, _ = io.CopyN(down, fromServer, int64(keep))
	})
}

// proxy accepts one connection at a time and hands both sides to relay; returning from relay
// closes both.
func proxy(t *testing.T, target string, relay func(up, down io.Writer, fromClient, fromServer io.Reader)) string {
	t.Helper()
	return testutil.ServeTCP(t, "127.0.0.1:0", func(c net.Conn) {
		defer c.Close()
		s, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer s.Close()
		relay(s, c, c, s)
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
