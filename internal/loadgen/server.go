package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// ConnReport is what the server logs (one JSON line) when a connection ends.
type ConnReport struct {
	Event   string  `json:"event"` // "connection"
	Op      string  `json:"op"`    // "get" or "put"
	Remote  string  `json:"remote"`
	Local   string  `json:"local"`
	Seed    uint64  `json:"seed"`
	Bytes   uint64  `json:"bytes"`
	Seconds float64 `json:"seconds"`
	SHA256  string  `json:"sha256"`
	// Verified (put only): every byte received matched the seed's stream.
	Verified *bool  `json:"verified,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Server answers loadgen requests.
type Server struct {
	// Log receives one JSON ConnReport per finished connection; nil discards them.
	Log io.Writer

	mu sync.Mutex
	wg sync.WaitGroup
}

// Serve accepts connections on ln until ctx ends, then closes ln and waits for its
// connections to finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer s.wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(ctx, conn)
		}()
	}
}

func (s *Server) handle(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	start := time.Now()
	rep := ConnReport{Event: "connection", Remote: conn.RemoteAddr().String(), Local: conn.LocalAddr().String()}
	defer func() {
		rep.Seconds = time.Since(start).Seconds()
		s.log(rep)
	}()

	// A peer that connects and says nothing (a health check, a port scan) is dropped.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	head := make([]byte, requestSize)
	if _, err := io.ReadFull(conn, head); err != nil {
		rep.Error = "reading the request: " + err.Error()
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	var req Request
	if err := req.UnmarshalBinary(head); err != nil {
		rep.Error = err.Error()
		return
	}
	rep.Seed = req.Seed
	start = time.Now()
	switch req.Op {
	case OpGet:
		rep.Op = "get"
		n, sum, err := send(conn, req.Seed, req.Length, req.RateBitsPerSecond)
		rep.Bytes, rep.SHA256 = n, sum
		if err != nil && (req.Length > 0 || !closedByPeer(err)) {
			rep.Error = err.Error()
		}
	case OpPut:
		rep.Op = "put"
		v := NewVerifier(req.Seed)
		src := io.Reader(conn)
		if req.Length > 0 {
			src = io.LimitReader(conn, int64(req.Length))
		}
		_, err := io.CopyBuffer(v, src, make([]byte, chunk))
		verdict := v.Verdict()
		ok := verdict.OK()
		rep.Bytes, rep.SHA256, rep.Verified = verdict.Bytes, verdict.Sum(), &ok
		if err != nil {
			rep.Error = err.Error()
			return
		}
		b, _ := verdict.MarshalBinary()
		if _, err := conn.Write(b); err != nil {
			rep.Error = "writing the verdict: " + err.Error()
		}
	}
}

func (s *Server) log(rep ConnReport) {
	if s.Log == nil {
		return
	}
	b, _ := json.Marshal(rep)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _ = s.Log.Write(append(b, '\n'))
}

// closedByPeer: an unbounded get ends when the client closes its end.
func closedByPeer(err error) bool {
	return errors.Is(err, net.ErrClosed) || isConnReset(err)
}
