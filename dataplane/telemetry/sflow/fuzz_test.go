package sflow

import (
	"reflect"
	"testing"
)

// FuzzDecode feeds arbitrary datagrams to the decoder. It must never panic, must agree with
// goflow2 (checkOracle), and whatever it accepts must survive an encode/decode round trip. Seeds:
// testdata/fuzz/FuzzDecode (the vector, its truncations, encoder-built datagrams).
func FuzzDecode(f *testing.F) {
	f.Add(readVector(f))
	for _, b := range sampleDatagrams() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Decoder
		dg, err := d.Decode(b)
		checkOracle(t, b)
		if err != nil {
			return
		}
		for _, s := range dg.FlowSamples {
			for _, h := range s.Headers {
				ParsePacket(h.Protocol, h.Header)
			}
		}
		first := roundTripView(normalizeOurs(dg))
		again, err := d.Decode(AppendDatagram(nil, dg))
		if err != nil {
			t.Fatalf("re-encoded datagram does not decode: %v", err)
		}
		if second := roundTripView(normalizeOurs(again)); !reflect.DeepEqual(first, second) {
			t.Fatalf("round trip differs:\n%+v\n%+v", first, second)
		}
	})
}
