package main

import (
	"strings"
	"testing"

	"github.com/scitunnel/scitunnel/dataplane/config"
)

func TestParseScitag(t *testing.T) {
	for in, want := range map[string]config.Scitag{
		"atlas/Production_Output":     {ExperimentID: 2, ActivityID: 16, Name: "atlas.Production_Output"},
		"atlas.production output":     {ExperimentID: 2, ActivityID: 16, Name: "atlas.Production_Output"},
		"2/16":                        {ExperimentID: 2, ActivityID: 16, Name: "atlas.Production_Output"},
		"atlas/Upload/Download (Job)": {ExperimentID: 2, ActivityID: 22, Name: "atlas.Upload/Download_(Job)"},
		"xenon/1":                     {ExperimentID: 14, ActivityID: 1, Name: "xenon.default"},
		"511/63":                      {ExperimentID: 511, ActivityID: 63}, // unlisted ids: accepted, unnamed
		"400.3":                       {ExperimentID: 400, ActivityID: 3},
		"cms/Upload/Download_(Job)":   {ExperimentID: 3, ActivityID: 19, Name: "cms.Upload/Download_(Job)"},
		"default/default":             {ExperimentID: 1, ActivityID: 1, Name: "default.default"},
		"alice/Job output":            {ExperimentID: 5, ActivityID: 12, Name: "alice.Job_output"},
		"2/9":                         {ExperimentID: 2, ActivityID: 9, Name: "atlas.Debug"},
	} {
		got, err := parseScitag(in)
		if err != nil || *got != want {
			t.Errorf("parseScitag(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"atlas":                "want EXPERIMENT/ACTIVITY",
		"/16":                  "want EXPERIMENT/ACTIVITY",
		"2/":                   "want EXPERIMENT/ACTIVITY",
		"atlas/NoSuchActivity": `experiment "atlas" has no activity "NoSuchActivity"`,
		"nosuch/1":             `experiment "nosuch" is not in the scitags registry`,
		"2/64":                 "activity id 64 out of range",
		"512/1":                "experiment id 512 out of range",
	} {
		if got, err := parseScitag(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseScitag(%q) = %+v, %v; want an error with %q", in, got, err, want)
		}
	}
}
