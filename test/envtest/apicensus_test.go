package envtest_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// apiCensus counts the API server's requests by verb and resource, read from its own
// apiserver_request_total. The difference of two censuses around a run tells how many writes
// the manager made per object: a figure that, unlike a duration, does not move with the
// machine's load, so a change that adds a write per tunnel shows even on a busy machine.
type apiCensus map[string]float64 // "VERB resource[/subresource]" -> requests

func takeAPICensus(ctx context.Context, cfg *rest.Config) (apiCensus, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	census := apiCensus{}
	mf, ok := families["apiserver_request_total"]
	if !ok {
		return census, nil
	}
	for _, m := range mf.GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		key := l["verb"] + " " + l["resource"]
		if l["subresource"] != "" {
			key += "/" + l["subresource"]
		}
		census[key] += m.GetCounter().GetValue()
	}
	return census, nil
}

// writesSince lists the write requests (everything but GET, LIST and WATCH) made after base,
// per object of the run, largest first.
func (c apiCensus) writesSince(base apiCensus, per int) []string {
	var lines []string
	total := 0.0
	for _, k := range slices.Sorted(maps.Keys(c)) {
		verb, _, _ := strings.Cut(k, " ")
		if verb == "GET" || verb == "LIST" || verb == "WATCH" {
			continue
		}
		n := c[k] - base[k]
		if n < 1 {
			continue
		}
		total += n
		lines = append(lines, fmt.Sprintf("    %-40s %8.0f  (%.2f per tunnel)", k, n, n/float64(per)))
	}
	return append(lines, fmt.Sprintf("    %-40s %8.0f  (%.2f per tunnel)", "all writes", total, total/float64(per)))
}
