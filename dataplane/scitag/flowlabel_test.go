package scitag

import (
	"errors"
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
		if _, err := Label(c[0], c[1]); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("Label(%d,%d): %v, want ErrOutOfRange", c[0], c[1], err)
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

// TestResolveVectors holds the vectors the three former resolvers were tested with (the
// StreamTunnel's inline tag, the ScitagPolicy, the CLI's --scitag), now one function's.
func TestResolveVectors(t *testing.T) {
	r := Default()
	for _, c := range []struct {
		exp, act   string
		name       string
		label      uint32
		inRegistry bool
	}{
		{"default", "default", "default.default", 131076, true},
		{"atlas", "perfSONAR", "atlas.perfSONAR", 65544, true},
		{"2", "9", "atlas.Debug", 65572, true},
		{"ATLAS", "production output", "atlas.Production_Output", 65600, true},
		{"atlas", "Production_Output", "atlas.Production_Output", 65600, true},
		{"2", "16", "atlas.Production_Output", 65600, true},
		{"cms", "Analysis_Input", "cms.Analysis_Input", 196664, true},
		{"alice", "Job output", "alice.Job_output", 163888, true},
		{"xenon", "1", "xenon.default", 114692, true},
		// Ids the registry does not list: the label carries them anyway.
		{"511", "63", "511.63", 261884, false},
		{"400", "3", "400.3", 0, false},
		{"2", "50", "2.50", 0, false}, // a registered experiment, an unlisted activity id
		{"0", "0", "0.0", 0, false},
	} {
		got, err := r.Resolve(c.exp, c.act)
		if err != nil {
			t.Errorf("Resolve(%q,%q): %v", c.exp, c.act, err)
			continue
		}
		e, a := c.exp, c.act
		if !c.inRegistry {
			want, _ := Label(got.ExperimentID, got.ActivityID)
			if c.label == 0 {
				c.label = want
			}
			if got.ExperimentName != "" || got.ActivityName != "" {
				t.Errorf("Resolve(%q,%q) has names %q/%q for ids the registry lacks", e, a, got.ExperimentName, got.ActivityName)
			}
		}
		if got.String() != c.name || got.Label != c.label || got.LabelHex != FormatLabel(c.label) || got.InRegistry != c.inRegistry {
			t.Errorf("Resolve(%q,%q) = %s %d %s inRegistry=%v; want %s %d %s %v",
				e, a, got, got.Label, got.LabelHex, got.InRegistry, c.name, c.label, FormatLabel(c.label), c.inRegistry)
		}
		if got.Label != got.Tag.Label() {
			t.Errorf("Resolve(%q,%q): Label %d, the tag's label %d", e, a, got.Label, got.Tag.Label())
		}
	}
	if got, _ := r.Resolve("atlas", "Production Output"); got.ExperimentName != "atlas" || got.ActivityName != "Production Output" ||
		got.ExperimentID != 2 || got.ActivityID != 16 {
		t.Errorf("registered names: %+v", got)
	}
}

func TestResolveFailures(t *testing.T) {
	r := Default()
	for _, c := range []struct {
		exp, act string
		kind     error
		msg      string
	}{
		{"atlas", "no such activity", ErrNotInRegistry, `experiment "atlas" has no activity "no such activity"; it has "default" (1), "perfSONAR" (2)`},
		{"atlas", "NoSuchActivity", ErrNotInRegistry, `has no activity "NoSuchActivity"`},
		{"nosuch", "1", ErrNotInRegistry, `experiment "nosuch" is not in the scitags registry (version`},
		{"neutrino", "burst", ErrNotInRegistry, `experiment "neutrino" is not in the scitags registry`},
		{"400", "burst", ErrNotInRegistry, `experiment "400" is not in the scitags registry`},
		{"atlas", "50", ErrNotInRegistry, `experiment "atlas" has no activity "50"`}, // a name beside an id
		// Only ids exactly as given count as ids (the registry's matching trims, Atoi does not).
		{" 400", "3", ErrNotInRegistry, `experiment " 400" is not in the scitags registry`},
		{"512", "1", ErrOutOfRange, "experiment id 512 out of range: the flow label holds 0..511"},
		{"-1", "1", ErrOutOfRange, "experiment id -1 out of range"},
		{"2", "64", ErrOutOfRange, "activity id 64 out of range: the flow label holds 0..63"},
		{"400", "99", ErrOutOfRange, "activity id 99 out of range"},
	} {
		got, err := r.Resolve(c.exp, c.act)
		if err == nil {
			t.Errorf("Resolve(%q,%q) = %s, want an error", c.exp, c.act, got)
			continue
		}
		if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("Resolve(%q,%q): %v; want %v with %q", c.exp, c.act, err, c.kind, c.msg)
		}
		other := ErrOutOfRange
		if c.kind == ErrOutOfRange {
			other = ErrNotInRegistry
		}
		if errors.Is(err, other) {
			t.Errorf("Resolve(%q,%q): %v is also %v", c.exp, c.act, err, other)
		}
		if got != (Resolved{}) {
			t.Errorf("Resolve(%q,%q) failed but returned %+v", c.exp, c.act, got)
		}
	}
	// A registry of the site's own: its names resolve, the snapshot's do not.
	site, err := Parse([]byte(`{"version":3,"modified":"m","experiments":[{"expName":"neutrino","expId":300,"activities":[{"activityName":"burst","activityId":7}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := site.Resolve("neutrino", "burst"); err != nil || got.String() != "neutrino.burst" || !got.InRegistry || got.ExperimentID != 300 || got.ActivityID != 7 {
		t.Errorf("site registry: %+v %v", got, err)
	}
	if _, err := site.Resolve("atlas", "default"); !errors.Is(err, ErrNotInRegistry) || !strings.Contains(err.Error(), "version 3, modified m") {
		t.Errorf("site registry, atlas: %v", err)
	}
	if got, err := site.Resolve("2", "16"); err != nil || got.InRegistry || got.String() != "2.16" {
		t.Errorf("site registry, ids the snapshot knows: %+v %v", got, err)
	}
}

func TestParseIDs(t *testing.T) {
	if got, err := ParseIDs("2.16"); err != nil || got != (Tag{ExperimentID: 2, ActivityID: 16}) {
		t.Errorf("ParseIDs(2.16) = %+v, %v", got, err)
	}
	for s, want := range map[string]string{
		"atlas":   `"atlas" is not an "experimentId.activityId" pair such as "2.16"`,
		"2":       `"2" is not an`,
		"2.x":     `"2.x" is not an`,
		"atlas.1": `"atlas.1" is not an`,
		"512.1":   "experiment id 512 out of range",
	} {
		if _, err := ParseIDs(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseIDs(%q): %v, want %q", s, err, want)
		}
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
