package scitagpolicy

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

func registryWith(expName, actName, modified string) []byte {
	doc := map[string]any{"version": 1, "modified": modified, "experiments": []any{
		map[string]any{"expName": "fine", "expId": 1, "activities": []any{map[string]any{"activityName": "ok", "activityId": 1}}},
		map[string]any{"expName": expName, "expId": 301, "activities": []any{map[string]any{"activityName": actName, "activityId": 2}}},
	}}
	raw, _ := json.Marshal(doc)
	return raw
}

func TestOverlongRegistryNamesRefused(t *testing.T) {
	g := NewWithT(t)
	long := strings.Repeat("é", maxStatusNameLen+1) // characters, not bytes, count
	for name, c := range map[string]struct {
		raw  []byte
		want string
	}{
		"experiment": {registryWith(long, "act", "m"), "status.experimentName holds at most 80"},
		"activity":   {registryWith("exp", long, "m"), "status.activityName holds at most 80"},
		"tag":        {registryWith(strings.Repeat("e", 80), strings.Repeat("a", 80), "m"), "status.tag holds at most 160"},
		"modified":   {registryWith("exp", "act", strings.Repeat("m", 65)), "status.registry.modified holds at most 64"},
	} {
		_, err := parseForStatus(c.raw)
		g.Expect(err).To(MatchError(ContainSubstring(c.want)), name)
	}
	_, err := parseForStatus(registryWith(strings.Repeat("é", 80), strings.Repeat("a", 79), "m"))
	g.Expect(err).NotTo(HaveOccurred(), "names at the limits fit")
}

// The limits above copy the CRD's maxLength markers; this keeps them equal.
func TestStatusLimitsMatchTheCRD(t *testing.T) {
	g := NewWithT(t)
	raw, err := os.ReadFile("../../config/crd/bases/scitunnel.io_scitagpolicies.yaml")
	g.Expect(err).NotTo(HaveOccurred())
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema schemaNode `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	g.Expect(utilyaml.Unmarshal(raw, &crd)).To(Succeed())
	status := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["status"]
	for path, want := range map[string]int{
		"experimentName": maxStatusNameLen, "activityName": maxStatusNameLen, "tag": maxStatusTagLen,
		"registry.modified": maxStatusModifiedLen,
	} {
		node := status
		for _, part := range strings.Split(path, ".") {
			node = node.Properties[part]
		}
		g.Expect(node.MaxLength).To(Equal(want), fmt.Sprintf("status.%s", path))
	}
}

type schemaNode struct {
	MaxLength  int                   `json:"maxLength"`
	Properties map[string]schemaNode `json:"properties"`
}
