package analyzer

import (
	"bytes"
	"net/netip"
	"runtime"
	"testing"
	"time"

	gfsflow "github.com/netsampler/goflow2/v2/decoders/sflow"

	"github.com/scitunnel/scitunnel/dataplane/scitag"
	"github.com/scitunnel/scitunnel/dataplane/telemetry/sflow"
)

// benchDatagrams are full datagrams as our sampler sends them (128-byte headers, as many samples
// as fit) over 64 connections, each sample alternating between a connection's data (tagged,
// with an entropy label) and its reverse direction (a random label: unknown), so consecutive
// samples never share a flow (the worst case for the analyzer's flow cache).
func benchDatagrams() (dgs [][]byte, samples int) {
	ag := newAgent()
	for d := 0; d < 64; d++ {
		ag.seq++
		ag.w.Begin(ag.addr, 0, ag.seq, 1000)
		peer := netip.AddrFrom16([16]byte{0xfd, 15: byte(d)})
		for i := 0; ; i++ {
			var h []byte
			if i%2 == 0 {
				h = frame(hostA, peer, scitag.WithEntropy(65572, uint32(d), false), uint16(40000+d), 5201)
			} else {
				h = frame(peer, hostA, 0x12345+uint32(d), 5201, uint16(40000+d))
			}
			h = append(h, make([]byte, 128-len(h))...)
			ag.fseq++
			s := sflow.FlowSample{SequenceNumber: ag.fseq, SourceIDIndex: 2, SamplingRate: 1000, SamplePool: ag.fseq * 1000,
				Input: sflow.InterfaceInternal, Output: 2, Headers: []sflow.SampledHeader{{Protocol: sflow.HeaderEthernet, FrameLength: 1514, Header: h}}}
			if !ag.w.AddFlowSample(&s) {
				break
			}
			samples++
		}
		dgs = append(dgs, append([]byte{}, ag.w.Bytes()...))
	}
	return dgs, samples
}

func benchOurs(dgs [][]byte, n int) func(*testing.B) {
	return func(b *testing.B) {
		a := New(Options{AssignedTags: []scitag.Tag{atlasDebug}})
		b.ReportAllocs()
		for b.Loop() {
			for _, d := range dgs {
				if err := a.Ingest(d); err != nil {
					b.Fatal(err)
				}
			}
		}
		if a.Totals()["atlas.Debug"].Samples == 0 || a.Totals()[UnknownTag].Samples == 0 {
			b.Fatal("nothing attributed")
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	}
}

func benchGoflow2(dgs [][]byte, n int) func(*testing.B) {
	return func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, d := range dgs {
				var p gfsflow.Packet
				if err := gfsflow.DecodeMessageVersion(bytes.NewBuffer(d), &p); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	}
}

// BenchmarkIngest is our decode-and-attribute path: Analyzer.Ingest (decode, header parsing,
// tag attribution, window update).
func BenchmarkIngest(b *testing.B) {
	dgs, n := benchDatagrams()
	benchOurs(dgs, n)(b)
}

// BenchmarkGoflow2Decode is goflow2's decode alone (sflow.DecodeMessageVersion).
func BenchmarkGoflow2Decode(b *testing.B) {
	dgs, n := benchDatagrams()
	benchGoflow2(dgs, n)(b)
}

// BenchmarkIngestVsGoflow2 measures both of the above in one run, one after the other for a
// second each (so goflow2's garbage is not collected on our time), and reports samples per
// second of each and the ratio. The targets: at least 1e6 samples/s per core and 3x
// goflow2. Run it with -cpu 1 for a per-core figure.
func BenchmarkIngestVsGoflow2(b *testing.B) {
	dgs, n := benchDatagrams()
	a := New(Options{AssignedTags: []scitag.Tag{atlasDebug}})
	ours := samplesPerSecond(n, func() {
		for _, d := range dgs {
			_ = a.Ingest(d)
		}
	})
	theirs := samplesPerSecond(n, func() {
		for _, d := range dgs {
			var p gfsflow.Packet
			_ = gfsflow.DecodeMessageVersion(bytes.NewBuffer(d), &p)
		}
	})
	for b.Loop() {
	}
	b.ReportMetric(ours, "ours-samples/s")
	b.ReportMetric(theirs, "goflow2-samples/s")
	b.ReportMetric(ours/theirs, "x-goflow2")
}

// samplesPerSecond runs f (which handles n samples) repeatedly for a second.
func samplesPerSecond(n int, f func()) float64 {
	runtime.GC()
	start := time.Now()
	runs := 0
	for time.Since(start) < time.Second {
		f()
		runs++
	}
	return float64(runs*n) / time.Since(start).Seconds()
}
