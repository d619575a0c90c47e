package tunnel

import (
	"testing"

	scitunnelv1 "github.com/scitunnel/scitunnel/api/v1alpha1"
	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

// The flow labels the operator writes follow the scitags test vectors (dataplane/scitag holds
// the encoder's own vectors; this checks the operator's resolution path end to end).
func TestResolveInlineVectors(t *testing.T) {
	for _, c := range []struct {
		exp, act string
		name     string
		label    int32
	}{
		{"default", "default", "default.default", 131076},
		{"atlas", "perfSONAR", "atlas.perfSONAR", 65544},
		{"2", "9", "atlas.Debug", 65572},
		{"ATLAS", "production output", "atlas.Production_Output", 65600},
		{"cms", "Analysis_Input", "cms.Analysis_Input", 196664},
		{"alice", "Job output", "alice.Job_output", 163888},
		{"xenon", "1", "xenon.default", 114692},
		{"511", "63", "511.63", 261884},
	} {
		tag, err := resolveInline(scitunnelv1.ExperimentRef(c.exp), scitunnelv1.ActivityRef(c.act))
		if err != nil {
			t.Errorf("%s/%s: %v", c.exp, c.act, err)
			continue
		}
		r := resolved(tag, false, "inline")
		if r.Name != c.name || r.FlowLabel != c.label || r.FlowLabelHex != scitag.FormatLabel(uint32(c.label)) {
			t.Errorf("%s/%s = %s %d %s, want %s %d", c.exp, c.act, r.Name, r.FlowLabel, r.FlowLabelHex, c.name, c.label)
		}
	}
	if _, err := resolveInline("atlas", "no such activity"); err == nil {
		t.Error("an unknown activity name resolved")
	}
}

func TestSidecarPrivilegesFollowSampling(t *testing.T) {
	on := sflowSecurityContext(true)
	if len(on.Capabilities.Add) != 1 || on.Capabilities.Add[0] != "NET_RAW" || !*on.RunAsNonRoot || *on.RunAsUser != dataPlaneUID ||
		!*on.AllowPrivilegeEscalation { // the binary's file capability needs it (no no_new_privs)
		t.Errorf("sampling sidecar: %+v", on)
	}
	off := sflowSecurityContext(false)
	if len(off.Capabilities.Add) != 0 || !*off.RunAsNonRoot || *off.RunAsUser != dataPlaneUID || *off.AllowPrivilegeEscalation {
		t.Errorf("analyzer-only sidecar: %+v", off)
	}
}
