package scitag

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// snapshot is the registry compiled into every binary: the default for air-gapped sites.
// Provenance in registry/SOURCE.md.
//
//go:embed registry/api.json
var snapshot []byte

// SnapshotSource names the embedded registry in status fields and logs.
const SnapshotSource = "embedded:scitags.org/api.json@2025-09-04"

// Registry is the scitags flow registry (https://www.scitags.org/api.json).
type Registry struct {
	Version     int          `json:"version"`
	Modified    string       `json:"modified"`
	Experiments []Experiment `json:"experiments"`

	byID map[[2]int]Tag
}

// Experiment is one registry entry.
type Experiment struct {
	Name       string     `json:"expName"`
	ID         int        `json:"expId"`
	Activities []Activity `json:"activities"`
}

// Activity is one activity of an experiment.
type Activity struct {
	Name string `json:"activityName"`
	ID   int    `json:"activityId"`
}

// Tag is a resolved experiment/activity pair. Ids are the identity; names are for display and
// are rendered late, because the registry renames activities (activity 2.9 was renamed in 2024).
type Tag struct {
	ExperimentID   int    `json:"experimentId"`
	ActivityID     int    `json:"activityId"`
	ExperimentName string `json:"experimentName,omitempty"`
	ActivityName   string `json:"activityName,omitempty"`
}

// Label is the tag's flow label without entropy. Tags come from a validated registry or from
// Split, so the ids are always in range.
func (t Tag) Label() uint32 {
	l, _ := Label(t.ExperimentID, t.ActivityID)
	return l
}

// String renders the tag as sFlow-RT's scitags application does: "expName.activityName" with
// spaces turned into underscores, or "exp.act" ids when the registry does not know the pair.
func (t Tag) String() string {
	if t.ExperimentName == "" || t.ActivityName == "" {
		return fmt.Sprintf("%d.%d", t.ExperimentID, t.ActivityID)
	}
	return underscore(t.ExperimentName) + "." + underscore(t.ActivityName)
}

func underscore(s string) string { return strings.ReplaceAll(s, " ", "_") }

var (
	defaultOnce sync.Once
	defaultReg  *Registry
)

// Default returns the registry snapshot compiled into the binary.
func Default() *Registry {
	defaultOnce.Do(func() {
		r, err := Parse(snapshot)
		if err != nil {
			panic("embedded scitags registry is invalid: " + err.Error())
		}
		defaultReg = r
	})
	return defaultReg
}

// Parse reads a registry document and checks that every id fits the flow label and is unique.
func Parse(data []byte) (*Registry, error) {
	var r Registry
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("scitags registry: %w", err)
	}
	if len(r.Experiments) == 0 {
		return nil, fmt.Errorf("scitags registry: no experiments")
	}
	r.byID = make(map[[2]int]Tag)
	seenExp := map[int]string{}
	for _, e := range r.Experiments {
		if e.ID < 0 || e.ID > MaxExperimentID {
			return nil, fmt.Errorf("scitags registry: experiment %q has id %d, outside 0..%d", e.Name, e.ID, MaxExperimentID)
		}
		if prev, dup := seenExp[e.ID]; dup {
			return nil, fmt.Errorf("scitags registry: experiments %q and %q share id %d", prev, e.Name, e.ID)
		}
		seenExp[e.ID] = e.Name
		for _, a := range e.Activities {
			if a.ID < 0 || a.ID > MaxActivityID {
				return nil, fmt.Errorf("scitags registry: activity %q of %q has id %d, outside 0..%d", a.Name, e.Name, a.ID, MaxActivityID)
			}
			key := [2]int{e.ID, a.ID}
			if _, dup := r.byID[key]; dup {
				return nil, fmt.Errorf("scitags registry: experiment %q lists activity id %d twice", e.Name, a.ID)
			}
			r.byID[key] = Tag{ExperimentID: e.ID, ActivityID: a.ID, ExperimentName: e.Name, ActivityName: a.Name}
		}
	}
	return &r, nil
}

// Len is the number of registered (experiment, activity) pairs.
func (r *Registry) Len() int { return len(r.byID) }

// Lookup finds a registered pair by ids.
func (r *Registry) Lookup(experimentID, activityID int) (Tag, bool) {
	t, ok := r.byID[[2]int{experimentID, activityID}]
	return t, ok
}

// Tags lists every registered pair, in registry order.
func (r *Registry) Tags() []Tag {
	out := make([]Tag, 0, len(r.byID))
	for _, e := range r.Experiments {
		for _, a := range e.Activities {
			out = append(out, r.byID[[2]int{e.ID, a.ID}])
		}
	}
	return out
}

// Resolved is a tag resolved from an experiment and an activity given as names or ids: what a
// ScitagPolicy's and a StreamTunnel's status show and what the CLI stamps.
type Resolved struct {
	// Tag holds the ids, and the registry's names when it lists the pair (String renders
	// "expName.activityName", or "exp.act" without names).
	Tag
	// Label is the tag's flow label without entropy; LabelHex renders it (FormatLabel).
	Label    uint32
	LabelHex string
	// InRegistry is false for two numeric ids the registry does not list: the label carries
	// them anyway (the registry grows), and a ScitagPolicy reports IDsNotInRegistry.
	InRegistry bool
}

// Resolve finds the tag of an experiment and an activity, each given as a name or a decimal id.
// Names match case-insensitively and treat "_" and " " alike, so "atlas"/"Production_Output",
// "ATLAS"/"production output" and "2"/"16" all resolve to the registry's 2.16.
//
// Two numeric ids the registry does not list are accepted when the flow label can carry them
// (InRegistry false); ids it cannot carry fail with ErrOutOfRange. Anything else the registry
// does not list fails with ErrNotInRegistry, whose message names what is missing (and, for an
// activity, lists the experiment's activities).
func (r *Registry) Resolve(experiment, activity string) (Resolved, error) {
	tag, err := r.lookupRef(experiment, activity)
	if err == nil {
		return resolvedTag(tag, true), nil
	}
	// Atoi on the refs as given: " 7" is neither a registered name nor an id.
	e, errE := strconv.Atoi(experiment)
	a, errA := strconv.Atoi(activity)
	if errE != nil || errA != nil {
		return Resolved{}, err
	}
	if _, lerr := Label(e, a); lerr != nil {
		return Resolved{}, lerr
	}
	return resolvedTag(Tag{ExperimentID: e, ActivityID: a}, false), nil
}

// ParseIDs reads an "exp.act" id pair such as "2.16" (ids only, no names) that the flow label
// can carry. The tag has no names: look them up in a registry.
func ParseIDs(s string) (Tag, error) {
	e, a, ok := strings.Cut(s, ".")
	var exp, act int
	var err error
	if ok {
		exp, err = strconv.Atoi(e)
		if err == nil {
			act, err = strconv.Atoi(a)
		}
	}
	if !ok || err != nil {
		return Tag{}, fmt.Errorf("%q is not an \"experimentId.activityId\" pair such as \"2.16\"", s)
	}
	if _, err := Label(exp, act); err != nil {
		return Tag{}, err
	}
	return Tag{ExperimentID: exp, ActivityID: act}, nil
}

func resolvedTag(t Tag, inRegistry bool) Resolved {
	l := t.Label()
	return Resolved{Tag: t, Label: l, LabelHex: FormatLabel(l), InRegistry: inRegistry}
}

// lookupRef finds a registered pair given each side as a name or a decimal id.
func (r *Registry) lookupRef(experiment, activity string) (Tag, error) {
	exp, err := r.findExperiment(experiment)
	if err != nil {
		return Tag{}, err
	}
	for _, a := range exp.Activities {
		if matches(activity, a.Name, a.ID) {
			return r.byID[[2]int{exp.ID, a.ID}], nil
		}
	}
	names := make([]string, 0, len(exp.Activities))
	for _, a := range exp.Activities {
		names = append(names, fmt.Sprintf("%q (%d)", a.Name, a.ID))
	}
	return Tag{}, &kindError{ErrNotInRegistry, fmt.Sprintf("experiment %q has no activity %q; it has %s", exp.Name, activity, strings.Join(names, ", "))}
}

func (r *Registry) findExperiment(ref string) (Experiment, error) {
	for _, e := range r.Experiments {
		if matches(ref, e.Name, e.ID) {
			return e, nil
		}
	}
	return Experiment{}, &kindError{ErrNotInRegistry, fmt.Sprintf("experiment %q is not in the scitags registry (version %d, modified %s)", ref, r.Version, r.Modified)}
}

func matches(ref, name string, id int) bool {
	ref = strings.TrimSpace(ref)
	if n, err := strconv.Atoi(ref); err == nil {
		return n == id
	}
	norm := func(s string) string { return strings.ToLower(underscore(s)) }
	return norm(ref) == norm(name)
}
