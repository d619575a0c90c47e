package scitag

import (
	"strings"
	"testing"
)

// Vectors from the scitags technical specification as cross-checked against flowd and sFlow-RT.
var vectors = []struct {
	exp, act int
	name     string
	label    uint32
}{
	{1, 1, "default.default", 131076},
	{2, 2, "atlas.perfSONAR", 65544},
	{2, 9, "atlas.Debug", 65572},
	{2, 16, "atlas.Production_Output", 65600},
	{3, 14, "cms.Analysis_Input", 196664},
	{5, 12, "alice.Job_output", 163888},
	{14, 1, "xenon.default", 114692},
	{511, 63, "", 261884},
}

func TestLabelVectors(t *testing.T) {
	reg := Default()
	for _, v := range vectors {
		got, err := Label(v.exp, v.act)
		if err != nil {
			t.Fatalf("Label(%d,%d): %v", v.exp, v.act, err)
		}
		if got != v.label {
			t.Errorf("Label(%d,%d) = %d (%s), want %d", v.exp, v.act, got, FormatLabel(got), v.label)
		}
		if e, a := Split(got); e != v.exp || a != v.act {
			t.Errorf("Split(%d) = %d.%d, want %d.%d", got, e, a, v.exp, v.act)
		}
		tag, ok := reg.Lookup(v.exp, v.act)
		if v.name == "" {
			if ok {
				t.Errorf("%d.%d should not be registered, got %v", v.exp, v.act, tag)
			}
			continue
		}
		if !ok || tag.String() != v.name {
			t.Errorf("Lookup(%d,%d) = %v %v, want %s", v.exp, v.act, tag, ok, v.name)
		}
	}
}

func TestEntropyIsMaskedOut(t *testing.T) {
	// 852291 = 0xD0143 = 11|010000000|1|010000|11 masks to 65600 (atlas.Production_Output).
	if got := uint32(852291) & Mask; got != 65600 {
		t.Fatalf("852291 & Mask = %d, want 65600", got)
	}
	tag, ok := Default().Lookup(Split(852291)) // as the analyzer attributes a sampled label
	if !ok || tag.String() != "atlas.Production_Output" {
		t.Fatalf("Lookup(Split(852291)) = %v %v", tag, ok)
	}
	if Mask|EntropyMask != 0xFFFFF || Mask&EntropyMask != 0 {
		t.Fatalf("Mask and EntropyMask must partition the 20 bits")
	}
	base, _ := Label(2, 16)
	for r := uint32(0); r < 32; r++ {
		l := WithEntropy(base, r, true)
		if l&Mask != base {
			t.Fatalf("entropy %d disturbed the tag: %x", r, l)
		}
		if WithEntropy(base, r, false)&Bit19 != 0 {
			t.Fatalf("bit 19 set although not allowed, entropy %d", r)
		}
	}
	// All 32 entropy values give distinct labels when bit 19 is allowed.
	seen := map[uint32]bool{}
	for r := uint32(0); r < 32; r++ {
		seen[WithEntropy(base, r, true)] = true
	}
	if len(seen) != 32 {
		t.Fatalf("entropy spreads to %d labels, want 32", len(seen))
	}
}

func TestLabelRejectsOutOfRange(t *testing.T) {
	for _, c := range [][2]int{{512, 1}, {-1, 1}, {1, 64}, {1, -1}} {
		if _, err := Label(c[0], c[1]); err == nil {
			t.Errorf("Label(%d,%d) accepted", c[0], c[1])
		}
	}
}

func TestEverySplitRoundTrips(t *testing.T) {
	for e := 0; e <= MaxExperimentID; e++ {
		for a := 0; a <= MaxActivityID; a++ {
			l, _ := Label(e, a)
			if l&^Mask != 0 {
				t.Fatalf("%d.%d sets entropy bits: %x", e, a, l)
			}
			if ge, ga := Split(l); ge != e || ga != a {
				t.Fatalf("%d.%d round-trips to %d.%d", e, a, ge, ga)
			}
		}
	}
}

func TestDefaultRegistry(t *testing.T) {
	r := Default()
	if r.Len() != 114 || len(r.Experiments) != 14 {
		t.Fatalf("snapshot has %d experiments, %d pairs; want 14, 114", len(r.Experiments), r.Len())
	}
	if len(r.Tags()) != r.Len() {
		t.Fatalf("Tags() lists %d, want %d", len(r.Tags()), r.Len())
	}
}

func TestResolve(t *testing.T) {
	r := Default()
	cases := []struct{ exp, act, want string }{
		{"atlas", "Production Output", "atlas.Production_Output"},
		{"ATLAS", "production_output", "atlas.Production_Output"},
		{"2", "16", "atlas.Production_Output"},
		{"cms", "14", "cms.Analysis_Input"},
		{"1", "default", "default.default"},
	}
	for _, c := range cases {
		tag, err := r.Resolve(c.exp, c.act)
		if err != nil || tag.String() != c.want {
			t.Errorf("Resolve(%q,%q) = %v, %v; want %s", c.exp, c.act, tag, err, c.want)
		}
	}
	if _, err := r.Resolve("nosuch", "1"); err == nil || !strings.Contains(err.Error(), "not in the scitags registry") {
		t.Errorf("unknown experiment: %v", err)
	}
	if _, err := r.Resolve("atlas", "nosuch"); err == nil || !strings.Contains(err.Error(), "Production Output") {
		t.Errorf("unknown activity should list the valid ones: %v", err)
	}
}

func TestParseRejectsBadRegistries(t *testing.T) {
	bad := map[string]string{
		"not json":        `{`,
		"empty":           `{"experiments":[]}`,
		"exp too big":     `{"experiments":[{"expName":"x","expId":512,"activities":[]}]}`,
		"act too big":     `{"experiments":[{"expName":"x","expId":5,"activities":[{"activityName":"a","activityId":64}]}]}`,
		"duplicate exp":   `{"experiments":[{"expName":"x","expId":5,"activities":[]},{"expName":"y","expId":5,"activities":[]}]}`,
		"duplicate activ": `{"experiments":[{"expName":"x","expId":5,"activities":[{"activityName":"a","activityId":1},{"activityName":"b","activityId":1}]}]}`,
	}
	for name, doc := range bad {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
