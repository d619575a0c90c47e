package analyzer

import (
	"math"
	"time"
)

// buckets is how many slices a window is cut into. A sliding window of buckets, rather than an
// exponentially weighted rate, keeps the sample count behind every figure exact, and with it the
// error bound.
//
// 16, a power of two, so the slice of an epoch is a mask rather than a division.
const buckets = 16

// bucket holds what arrived during one slice of the window. epoch numbers slices from 1 (0 marks
// an unused bucket).
type bucket struct {
	epoch   int64
	bytes   float64
	sq      float64 // variance terms of the byte estimate, see errorPercent
	samples uint32
}

// series is a sliding window of byte estimates and sample counts.
type series struct {
	b [buckets]bucket
}

func (s *series) add(epoch int64, bytes, sq float64) {
	b := &s.b[epoch&(buckets-1)]
	if b.epoch != epoch {
		*b = bucket{epoch: epoch}
	}
	b.bytes += bytes
	b.sq += sq
	b.samples++
}

// sum adds up the buckets still inside the window that ends in epoch now.
func (s *series) sum(now int64) (bytes, sq float64, samples uint64) {
	for _, b := range s.b {
		if b.epoch > now-buckets && b.epoch <= now {
			bytes += b.bytes
			sq += b.sq
			samples += uint64(b.samples)
		}
	}
	return bytes, sq, samples
}

// lastEpoch is the newest slice that received anything.
func (s *series) lastEpoch() int64 {
	var last int64
	for _, b := range s.b {
		last = max(last, b.epoch)
	}
	return last
}

// clock turns times into window slices.
type clock struct {
	start time.Time
	width time.Duration // window / buckets
}

func newClock(start time.Time, window time.Duration) clock {
	return clock{start: start, width: max(window/buckets, time.Millisecond)}
}

func (c clock) epoch(t time.Time) int64 {
	d := t.Sub(c.start)
	if d < 0 {
		d = 0
	}
	return int64(d/c.width) + 1
}

// span is the time the window ending at t covers: the full slices behind the current one plus
// the elapsed part of the current one, but never more than the time since start (a young
// analyzer would otherwise under-report) and never less than one slice (so the first samples do
// not read as a huge rate).
func (c clock) span(t time.Time) time.Duration {
	e := c.epoch(t)
	partial := t.Sub(c.start) - time.Duration(e-1)*c.width
	s := time.Duration(buckets-1)*c.width + partial
	s = min(s, t.Sub(c.start))
	return max(s, c.width)
}

// varianceTerm is one sample's share of the byte estimate's variance: a sample of a frame of
// s bytes taken with probability 1/w (weight w, the sampling rate) contributes w*s to the
// estimate and (1-1/w)*(w*s)^2 to its variance (the Horvitz-Thompson estimator's).
func varianceTerm(w, bytes float64) float64 {
	if w <= 1 {
		return 0 // every packet was taken: no sampling error
	}
	return (1 - 1/w) * bytes * bytes
}

// errorPercent is the 95% error bound of a byte estimate: 196*sqrt(variance)/estimate percent.
// For c samples of equal frames at a rate N this is 196*sqrt((1-1/N)/c), sFlow's familiar
// 196*sqrt(1/c) (c = 384 gives 10%, 38416 gives 1%). Frames of mixed sizes (offload
// super-frames beside ACKs) widen it by kappa = sqrt(E[s^2])/E[s], which the familiar formula
// leaves out; this one does not, so the bound holds for the traffic actually measured.
func errorPercent(bytes, sq float64) float64 {
	if bytes <= 0 {
		return 100
	}
	return 196 * math.Sqrt(sq) / bytes
}
