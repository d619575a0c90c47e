package analyzer

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/scitunnel/scitunnel/dataplane/report"
)

// Paths served by Handler besides report.TagsPath.
const (
	FlowsPath   = "/v1/flows"
	AgentsPath  = "/v1/agents"
	HealthPath  = "/v1/health"
	MetricsPath = "/metrics"
	HealthzPath = "/healthz"
)

// Handler serves the analyzer over HTTP: /healthz, /v1/tags (report.TagTotals), /v1/flows
// (?limit=N, default 1000), /v1/agents, /v1/health, and /metrics from gatherer (which should
// hold a.Collector()).
func (a *Analyzer) Handler(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+HealthzPath, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET "+report.TagsPath, func(w http.ResponseWriter, _ *http.Request) {
		report.WriteJSON(w, a.Tags())
	})
	mux.HandleFunc("GET "+FlowsPath, func(w http.ResponseWriter, r *http.Request) {
		limit := 1000
		if s := r.URL.Query().Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				http.Error(w, "limit must be a non-negative integer (0: all)", http.StatusBadRequest)
				return
			}
			limit = n
		}
		report.WriteJSON(w, a.Flows(limit))
	})
	mux.HandleFunc("GET "+AgentsPath, func(w http.ResponseWriter, _ *http.Request) {
		report.WriteJSON(w, a.Agents())
	})
	mux.HandleFunc("GET "+HealthPath, func(w http.ResponseWriter, _ *http.Request) {
		report.WriteJSON(w, a.Health())
	})
	mux.Handle("GET "+MetricsPath, promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return mux
}
