package scitagpolicy

import (
	"fmt"
	"unicode/utf8"

	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

// The lengths the ScitagPolicy status schema allows (the maxLength markers of
// api/v1alpha1.ScitagPolicyStatus, in characters; TestStatusLimitsMatchTheCRD keeps them
// equal). A registry with a longer name would make every status patch of the policy fail,
// so such a registry is refused as a whole, with a condition naming the limit.
const (
	maxStatusNameLen     = 80  // status.experimentName, status.activityName
	maxStatusTagLen      = 160 // status.tag: "expName.activityName"
	maxStatusModifiedLen = 64  // status.registry.modified
)

// checkStatusLimits refuses a registry whose names or modified field the status cannot hold.
func checkStatusLimits(reg *scitag.Registry) error {
	if n := utf8.RuneCountInString(reg.Modified); n > maxStatusModifiedLen {
		return fmt.Errorf("its modified field has %d characters; status.registry.modified holds at most %d", n, maxStatusModifiedLen)
	}
	for _, e := range reg.Experiments {
		en := utf8.RuneCountInString(e.Name)
		if en > maxStatusNameLen {
			return fmt.Errorf("the name of experiment %d has %d characters; status.experimentName holds at most %d", e.ID, en, maxStatusNameLen)
		}
		for _, a := range e.Activities {
			an := utf8.RuneCountInString(a.Name)
			if an > maxStatusNameLen {
				return fmt.Errorf("the name of activity %d.%d has %d characters; status.activityName holds at most %d", e.ID, a.ID, an, maxStatusNameLen)
			}
			if en+1+an > maxStatusTagLen {
				return fmt.Errorf("the tag of %d.%d (\"expName.activityName\") has %d characters; status.tag holds at most %d", e.ID, a.ID, en+1+an, maxStatusTagLen)
			}
		}
	}
	return nil
}
