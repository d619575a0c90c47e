package config

// The scitags sections: the tag stamped on the flows' IPv6 flow label, and the fireflies that
// announce them. Kept apart from config.go so each section sits with its own validation.

import (
	"fmt"

	"github.com/scitunnel/scitunnel/dataplane/scitag"
)

// Scitag is the resolved tag of the tunnel's flows.
type Scitag struct {
	ExperimentID int `json:"experimentId"`
	ActivityID   int `json:"activityId"`
	// Name is "expName.activityName", for metrics and logs.
	Name string `json:"name,omitempty"`
	// Entropy fills the five entropy bits with fresh random bits per connection.
	Entropy bool `json:"entropy"`
}

// Tag is the pair by ids (the sidecar's analyzer attributes traffic by ids; names are rendered
// from its registry).
func (s Scitag) Tag() scitag.Tag {
	return scitag.Tag{ExperimentID: s.ExperimentID, ActivityID: s.ActivityID}
}

// FlowLabel is the label without entropy.
func (s Scitag) FlowLabel() uint32 {
	l, _ := scitag.Label(s.ExperimentID, s.ActivityID)
	return l
}

// Fireflies announces flows (scitags firefly JSON, syslog-framed) over UDP.
type Fireflies struct {
	Enabled bool `json:"enabled"`
	// Collectors are "host:port" addresses; port 10514 is the scitags convention.
	Collectors []string `json:"collectors,omitempty"`
	// ToPeer also sends each firefly to the flow's peer on port 10514, as flowd does.
	ToPeer bool `json:"toPeer,omitempty"`
	// Application goes into the firefly's context.application.
	Application string `json:"application,omitempty"`
}

// Validate checks that the ids fit the flow label.
func (s *Scitag) Validate() error {
	var p problems
	if _, err := scitag.Label(s.ExperimentID, s.ActivityID); err != nil {
		p.add("", "%v", err)
	}
	return p.err()
}

// Validate checks the collectors' addresses.
func (f *Fireflies) Validate() error {
	var p problems
	for i, a := range f.Collectors {
		if err := checkHostPort(a); err != nil {
			p.add(fmt.Sprintf("collectors[%d]", i), "%v", err)
		}
	}
	return p.err()
}
