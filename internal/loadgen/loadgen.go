// Package loadgen is a TCP traffic source and sink that proves data integrity end to end: both
// sides derive the payload from a seed (ChaCha8), so the receiving side checks every byte
// against what the sender must have sent, and both report byte counts and SHA-256 sums. The
// e2e suite and `make demo` run it (`scitunnel loadgen`) as the producer behind an Inbound
// tunnel and as the consumer in front of an Outbound one.
//
// Why not iperf3: it neither checks the bytes it receives nor reports totals a test can
// compare exactly with the proxies' counters; the demo still runs iperf3 the way SciStream's
// FAQ does.
//
// Protocol: the client opens a TCP connection and sends a 32-byte request
//
//	"SCLG" | version 1 | op | 2 reserved | seed uint64 | length uint64 | rate bit/s uint64
//
// (big-endian). Op 'G' (get): the server sends length bytes of the seed's stream (unbounded if
// 0, until the client closes) at most at rate (0: unpaced), then closes. Op 'P' (put): the
// client sends the stream and half-closes; the server checks it and answers with the 48-byte
// Verdict (bytes, offset of the first wrong byte or all ones, SHA-256).
package loadgen

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"time"
)

// Op is what a connection does.
type Op byte

const (
	// OpGet: the server is the source, the client the sink (producer to consumer).
	OpGet Op = 'G'
	// OpPut: the client is the source, the server the sink (consumer to producer).
	OpPut Op = 'P'
)

const (
	magic       = "SCLG"
	version     = 1
	requestSize = 32
	verdictSize = 48
	// NoMismatch is Verdict.FirstMismatch when every byte was right.
	NoMismatch = ^uint64(0)
)

// Request opens a connection.
type Request struct {
	Op   Op
	Seed uint64
	// Length in bytes; 0 means until the client closes (get) or half-closes (put).
	Length uint64
	// RateBitsPerSecond paces the sender; 0 sends as fast as the path allows.
	RateBitsPerSecond uint64
}

// MarshalBinary encodes the request's 32 bytes.
func (r Request) MarshalBinary() ([]byte, error) {
	b := make([]byte, requestSize)
	copy(b, magic)
	b[4], b[5] = version, byte(r.Op)
	binary.BigEndian.PutUint64(b[8:], r.Seed)
	binary.BigEndian.PutUint64(b[16:], r.Length)
	binary.BigEndian.PutUint64(b[24:], r.RateBitsPerSecond)
	return b, nil
}

// UnmarshalBinary decodes a request, refusing anything that is not one.
func (r *Request) UnmarshalBinary(b []byte) error {
	if len(b) != requestSize || string(b[:4]) != magic {
		return errors.New("not a loadgen request")
	}
	if b[4] != version {
		return fmt.Errorf("loadgen protocol version %d, want %d", b[4], version)
	}
	r.Op = Op(b[5])
	if r.Op != OpGet && r.Op != OpPut {
		return fmt.Errorf("unknown loadgen op %q", b[5])
	}
	r.Seed = binary.BigEndian.Uint64(b[8:])
	r.Length = binary.BigEndian.Uint64(b[16:])
	r.RateBitsPerSecond = binary.BigEndian.Uint64(b[24:])
	return nil
}

// Verdict is the sink's account of a stream.
type Verdict struct {
	Bytes uint64
	// FirstMismatch is the offset of the first byte that differs from the seed's stream, or
	// NoMismatch.
	FirstMismatch uint64
	SHA256        [32]byte
}

// OK says every byte matched.
func (v Verdict) OK() bool { return v.FirstMismatch == NoMismatch }

// Sum is the SHA-256 in hex.
func (v Verdict) Sum() string { return hex.EncodeToString(v.SHA256[:]) }

// MarshalBinary encodes the verdict's 48 bytes.
func (v Verdict) MarshalBinary() ([]byte, error) {
	b := make([]byte, verdictSize)
	binary.BigEndian.PutUint64(b, v.Bytes)
	binary.BigEndian.PutUint64(b[8:], v.FirstMismatch)
	copy(b[16:], v.SHA256[:])
	return b, nil
}

// UnmarshalBinary decodes a verdict.
func (v *Verdict) UnmarshalBinary(b []byte) error {
	if len(b) != verdictSize {
		return fmt.Errorf("verdict of %d bytes, want %d", len(b), verdictSize)
	}
	v.Bytes = binary.BigEndian.Uint64(b)
	v.FirstMismatch = binary.BigEndian.Uint64(b[8:])
	copy(v.SHA256[:], b[16:])
	return nil
}

// Stream is the deterministic payload of a seed: the same seed gives the same bytes everywhere.
type Stream struct{ rng *rand.ChaCha8 }

// NewStream starts a seed's payload at offset 0.
func NewStream(seed uint64) *Stream {
	var key [32]byte
	copy(key[:], "scitunnel-loadgen-stream-v1.....")
	binary.BigEndian.PutUint64(key[24:], seed)
	return &Stream{rng: rand.NewChaCha8(key)}
}

// Read fills p with the next bytes of the stream; it never fails.
func (s *Stream) Read(p []byte) (int, error) { return s.rng.Read(p) }

// Verifier is an io.Writer that checks what is written to it against a seed's stream and sums it.
type Verifier struct {
	want          *Stream
	buf           []byte
	sum           hash.Hash
	n             uint64
	firstMismatch uint64
}

// NewVerifier checks against seed's stream.
func NewVerifier(seed uint64) *Verifier {
	return &Verifier{want: NewStream(seed), sum: sha256.New(), firstMismatch: NoMismatch}
}

// Write compares p with the stream's next len(p) bytes.
func (v *Verifier) Write(p []byte) (int, error) {
	v.sum.Write(p)
	if cap(v.buf) < len(p) {
		v.buf = make([]byte, len(p))
	}
	want := v.buf[:len(p)]
	_, _ = v.want.Read(want)
	if v.firstMismatch == NoMismatch {
		for i := range p {
			if p[i] != want[i] {
				v.firstMismatch = v.n + uint64(i)
				break
			}
		}
	}
	v.n += uint64(len(p))
	return len(p), nil
}

// Verdict is the account so far.
func (v *Verifier) Verdict() Verdict {
	out := Verdict{Bytes: v.n, FirstMismatch: v.firstMismatch}
	copy(out.SHA256[:], v.sum.Sum(nil))
	return out
}

// pacedWriter writes at most rate bits per second on average (sleeping between chunks), so a
// test can run traffic for a known time without saturating a shared machine.
type pacedWriter struct {
	w     io.Writer
	rate  uint64
	start time.Time
	n     uint64
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	if p.rate > 0 {
		if p.start.IsZero() {
			p.start = time.Now()
		}
		due := p.start.Add(time.Duration(float64(p.n*8) / float64(p.rate) * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
	}
	n, err := p.w.Write(b)
	p.n += uint64(n)
	return n, err
}

// summingWriter counts and hashes what passes through it.
type summingWriter struct {
	w   io.Writer
	sum hash.Hash
	n   uint64
}

func (s *summingWriter) Write(b []byte) (int, error) {
	n, err := s.w.Write(b)
	s.sum.Write(b[:n])
	s.n += uint64(n)
	return n, err
}

func (s *summingWriter) hexSum() string { return hex.EncodeToString(s.sum.Sum(nil)) }

// chunk is the write size: large enough for throughput, small enough for smooth pacing.
const chunk = 64 << 10

// send writes length bytes (0: until a write fails) of seed's stream to w at rate, returning
// the bytes written and their SHA-256.
func send(w io.Writer, seed, length, rate uint64) (uint64, string, error) {
	sw := &summingWriter{w: &pacedWriter{w: w, rate: rate}, sum: sha256.New()}
	src := io.Reader(NewStream(seed))
	if length > 0 {
		src = io.LimitReader(src, int64(length))
	}
	_, err := io.CopyBuffer(sw, src, make([]byte, chunk))
	return sw.n, sw.hexSum(), err
}
