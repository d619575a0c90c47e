package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// Options of a client run.
type Options struct {
	// Address of the server (or of a tunnel in front of it), host:port.
	Address string
	Op      Op
	// Seed of the first connection; connection i uses Seed+i.
	Seed uint64
	// Bytes per connection; 0 with Duration streams until Duration ends.
	Bytes uint64
	// Duration bounds an unbounded (Bytes 0) run.
	Duration time.Duration
	// RateBitsPerSecond per connection; 0 is unpaced.
	RateBitsPerSecond uint64
	// Parallel connections (default 1).
	Parallel int
	// DialTimeout per connection (default 10 s).
	DialTimeout time.Duration
}

// ConnResult is one connection's outcome.
type ConnResult struct {
	Seed  uint64 `json:"seed"`
	Bytes uint64 `json:"bytes"`
	// SHA256 of the bytes this side received (get) or sent (put).
	SHA256 string `json:"sha256"`
	// PeerSHA256 (put) is the server's sum of what it received.
	PeerSHA256 string `json:"peerSha256,omitempty"`
	// Verified: every byte the receiving side got matched the seed's stream, and (bounded
	// runs) all of them arrived.
	Verified bool   `json:"verified"`
	Error    string `json:"error,omitempty"`
}

// Result is a client run's outcome, printed as JSON by `scitunnel loadgen get|put`.
type Result struct {
	Op            string       `json:"op"`
	Address       string       `json:"address"`
	Connections   []ConnResult `json:"connections"`
	Bytes         uint64       `json:"bytes"`
	Seconds       float64      `json:"seconds"`
	BitsPerSecond float64      `json:"bitsPerSecond"`
	// Verified: every connection verified.
	Verified bool `json:"verified"`
}

// Run opens Parallel connections at once and streams on each.
func Run(ctx context.Context, o Options) Result {
	if o.Parallel <= 0 {
		o.Parallel = 1
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	res := Result{Op: map[Op]string{OpGet: "get", OpPut: "put"}[o.Op], Address: o.Address,
		Connections: make([]ConnResult, o.Parallel)}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range o.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res.Connections[i] = runConn(ctx, o, o.Seed+uint64(i))
		}()
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.Verified = true
	for _, c := range res.Connections {
		res.Bytes += c.Bytes
		res.Verified = res.Verified && c.Verified
	}
	if res.Seconds > 0 {
		res.BitsPerSecond = float64(res.Bytes*8) / res.Seconds
	}
	return res
}

// runConn runs one connection: it dials, sends the request, and hands the stream to receive
// (get) or sendAndCheck (put), which fill in the result.
func runConn(ctx context.Context, o Options, seed uint64) (r ConnResult) {
	r.Seed = seed
	d := net.Dialer{Timeout: o.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", o.Address)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer conn.Close()
	// The run's end (Duration, or the caller's ctx) closes the connection: an unbounded get
	// then stops reading, an unbounded put half-closes below.
	ended := make(chan struct{})
	defer close(ended)
	go func() {
		select {
		case <-ctx.Done():
			if o.Op == OpGet {
				conn.Close()
			} else if tc, ok := conn.(*net.TCPConn); ok {
				// Stop the sender by unblocking its write; the verdict is still read.
				_ = tc.SetWriteDeadline(time.Now())
			}
		case <-ended:
		}
	}()
	head, _ := Request{Op: o.Op, Seed: seed, Length: o.Bytes, RateBitsPerSecond: o.RateBitsPerSecond}.MarshalBinary()
	if _, err := conn.Write(head); err != nil {
		r.Error = "sending the request: " + err.Error()
		return r
	}

	switch o.Op {
	case OpGet:
		receive(ctx, conn, o, &r)
	case OpPut:
		sendAndCheck(ctx, conn, o, &r)
	}
	return r
}

// receive (get) reads the server's stream to its end, verifying it against r.Seed's stream.
func receive(ctx context.Context, conn net.Conn, o Options, r *ConnResult) {
	v := NewVerifier(r.Seed)
	_, err := io.CopyBuffer(v, conn, make([]byte, chunk))
	verdict := v.Verdict()
	r.Bytes, r.SHA256 = verdict.Bytes, verdict.Sum()
	unboundedEnd := o.Bytes == 0 && ctx.Err() != nil
	if err != nil && !unboundedEnd {
		r.Error = err.Error()
	}
	r.Verified = verdict.OK() && r.Error == "" && r.Bytes > 0 && (o.Bytes == 0 || r.Bytes == o.Bytes)
	if verdict.OK() && o.Bytes > 0 && r.Bytes != o.Bytes && r.Error == "" {
		r.Error = fmt.Sprintf("received %d of %d bytes", r.Bytes, o.Bytes)
	}
	if !verdict.OK() {
		r.Error = fmt.Sprintf("byte %d differs from what the producer sent", verdict.FirstMismatch)
	}
}

// sendAndCheck (put) sends r.Seed's stream, half-closes, and compares the server's verdict
// with what was sent.
func sendAndCheck(ctx context.Context, conn net.Conn, o Options, r *ConnResult) {
	n, sum, err := send(conn, r.Seed, o.Bytes, o.RateBitsPerSecond)
	r.Bytes, r.SHA256 = n, sum
	if err != nil && (o.Bytes != 0 || ctx.Err() == nil) {
		r.Error = "sending: " + err.Error()
		return
	}
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		r.Error = "not a TCP connection"
		return
	}
	if err := tc.CloseWrite(); err != nil {
		r.Error = "half-closing: " + err.Error()
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, verdictSize)
	if _, err := io.ReadFull(conn, b); err != nil {
		r.Error = "reading the verdict (does the path carry a half-close?): " + err.Error()
		return
	}
	var verdict Verdict
	_ = verdict.UnmarshalBinary(b)
	r.PeerSHA256 = verdict.Sum()
	switch {
	case !verdict.OK():
		r.Error = fmt.Sprintf("the consumer's byte %d arrived altered", verdict.FirstMismatch)
	case verdict.Bytes != n:
		r.Error = fmt.Sprintf("sent %d bytes, %d arrived", n, verdict.Bytes)
	case r.PeerSHA256 != r.SHA256:
		r.Error = "checksums differ"
	}
	r.Verified = r.Error == "" && n > 0
}

// isConnReset: the peer went away mid-stream.
func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
