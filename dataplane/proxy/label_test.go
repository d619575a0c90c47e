package proxy

import (
	"testing"

	"github.com/scitunnel/scitunnel/dataplane/config"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

// The label of each dialed connection: the tag bits of the current configuration, fresh
// entropy bits per connection when asked for, bit 19 only where the kernel allows it.
func TestNextLabel(t *testing.T) {
	atlasProd := &config.Scitag{ExperimentID: 2, ActivityID: 16, Entropy: true}
	cmsDebug := &config.Scitag{ExperimentID: 3, ActivityID: 9, Entropy: true}

	for _, allowBit19 := range []bool{false, true} {
		p := &Proxy{allowBit19: allowBit19}
		p.cfg.Store(&config.Config{Scitag: atlasProd})
		labels := map[uint32]bool{}
		sawBit19 := false
		for range 256 {
			l := p.nextLabel()
			if l&scitag.Mask != atlasProd.FlowLabel() {
				t.Fatalf("label %#05x: tag bits %#05x, want %#05x", l, l&scitag.Mask, atlasProd.FlowLabel())
			}
			sawBit19 = sawBit19 || l&scitag.Bit19 != 0
			labels[l] = true
		}
		if !allowBit19 && sawBit19 {
			t.Error("bit 19 set although the kernel reserves it")
		}
		if allowBit19 && !sawBit19 {
			t.Error("256 labels never used bit 19 although the kernel allows it")
		}
		// 4 (or 5) random bits: 256 draws cover nearly all of their 16 (32) values.
		if want := map[bool]int{false: 12, true: 24}[allowBit19]; len(labels) < want {
			t.Errorf("256 connections used %d distinct labels, want at least %d: entropy is not fresh per connection", len(labels), want)
		}

		// A reloaded tag applies to the next connection.
		p.cfg.Store(&config.Config{Scitag: cmsDebug})
		if l := p.nextLabel(); l&scitag.Mask != cmsDebug.FlowLabel() {
			t.Errorf("after the reload: label %#05x, want the tag bits of %#05x", l, cmsDebug.FlowLabel())
		}
	}

	p := &Proxy{}
	p.cfg.Store(&config.Config{Scitag: &config.Scitag{ExperimentID: 2, ActivityID: 16}})
	for range 16 {
		if l := p.nextLabel(); l != atlasProd.FlowLabel() {
			t.Fatalf("entropy off: label %#05x, want exactly %#05x", l, atlasProd.FlowLabel())
		}
	}
	p.cfg.Store(&config.Config{})
	if l := p.nextLabel(); l != 0 {
		t.Errorf("untagged tunnel: label %#05x, want 0 (unmarked)", l)
	}
}
