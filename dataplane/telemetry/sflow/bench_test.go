package sflow

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	gfsflow "github.com/netsampler/goflow2/v2/decoders/sflow"
)

// benchDatagram is what our sampler sends under load: as many flow samples with 128-byte
// headers as fit in MaxDatagramSize (6).
func benchDatagram() (b []byte, samples int) {
	var w Writer
	w.Begin(netip.MustParseAddr("fd00::1"), 0, 1, 1000)
	for i := 0; ; i++ {
		h := ipv6TCP(65572 + uint32(i%4))
		h = append(h, make([]byte, 128-len(h))...)
		s := FlowSample{SequenceNumber: uint32(i), SourceIDIndex: 2, SamplingRate: 1000, SamplePool: uint32(i * 1000),
			Input: InterfaceInternal, Output: 2, Headers: []SampledHeader{{Protocol: HeaderEthernet, FrameLength: 1514, Header: h}}}
		if !w.AddFlowSample(&s) {
			break
		}
	}
	return append([]byte{}, w.Bytes()...), w.NumSamples()
}

func BenchmarkDecode(b *testing.B) {
	dgram, n := benchDatagram()
	b.Run("ours", func(b *testing.B) {
		var d Decoder
		b.ReportAllocs()
		b.SetBytes(int64(len(dgram)))
		for b.Loop() {
			dg, err := d.Decode(dgram)
			if err != nil {
				b.Fatal(err)
			}
			for _, s := range dg.FlowSamples {
				ParsePacket(s.Headers[0].Protocol, s.Headers[0].Header)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	})
	b.Run("goflow2", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(dgram)))
		for b.Loop() {
			var p gfsflow.Packet
			if err := gfsflow.DecodeMessageVersion(bytes.NewBuffer(dgram), &p); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	})
}

// BenchmarkDecodeRatio times both decoders in the same run, interleaved, and reports how many
// times faster ours is (decode plus header parsing, against goflow2's decode alone).
func BenchmarkDecodeRatio(b *testing.B) {
	dgram, n := benchDatagram()
	var d Decoder
	var ours, theirs time.Duration
	for b.Loop() {
		start := time.Now()
		for range 100 {
			dg, _ := d.Decode(dgram)
			for _, s := range dg.FlowSamples {
				ParsePacket(s.Headers[0].Protocol, s.Headers[0].Header)
			}
		}
		mid := time.Now()
		for range 100 {
			var p gfsflow.Packet
			_ = gfsflow.DecodeMessageVersion(bytes.NewBuffer(dgram), &p)
		}
		ours += mid.Sub(start)
		theirs += time.Since(mid)
	}
	samples := float64(b.N) * 100 * float64(n)
	b.ReportMetric(samples/ours.Seconds(), "ours-samples/s")
	b.ReportMetric(samples/theirs.Seconds(), "goflow2-samples/s")
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "x-goflow2")
}
