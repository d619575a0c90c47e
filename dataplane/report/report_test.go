package report

import "testing"

func TestTagRateMatchesByIDs(t *testing.T) {
	tagged := TagRate{Tag: "atlas-site.Beamline_Stream", ExperimentID: 2, ActivityID: 16}
	if !tagged.Matches(2, 16) {
		t.Error("a tag named by another registry does not match its ids")
	}
	if tagged.Matches(2, 9) || tagged.Matches(16, 2) {
		t.Error("other ids match")
	}
	if (TagRate{Tag: UnknownTag}).Matches(0, 0) {
		t.Error("the unknown entry matches 0.0")
	}
	if !(TagRate{Tag: "0.0"}).Matches(0, 0) {
		t.Error("a tag reported by ids does not match them")
	}
}
