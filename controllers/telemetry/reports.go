package telemetry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/scitunnel/scitunnel/dataplane/report"
)

// DataPlaneReports reads what a proxy pod reports about itself. The data plane holds no API
// credentials, so the controller pulls. An interface, so tests can aim it at loopback servers.
type DataPlaneReports interface {
	// Tags returns the sFlow analyzer's per-tag totals (GET /v1/tags).
	Tags(ctx context.Context, podIP string) (*report.TagTotals, error)
	// Status returns the proxy's status (GET /v1/status): flow label, connections.
	Status(ctx context.Context, podIP string) (*report.ProxyStatus, error)
}

// HTTPReports reads the reports over plain HTTP from the pod IP. The ports are configurable
// (the pod contract says 9090 and 9091).
type HTTPReports struct {
	Client       *http.Client
	StatusPort   int
	AnalyzerPort int
}

// NewHTTPReports returns a reader with a short timeout: a slow pod must not stall reconciling.
func NewHTTPReports(statusPort, analyzerPort int) *HTTPReports {
	return &HTTPReports{
		Client:       &http.Client{Timeout: 3 * time.Second},
		StatusPort:   statusPort,
		AnalyzerPort: analyzerPort,
	}
}

// maxReportBytes bounds what a pod may make the controller read.
const maxReportBytes = 1 << 20

func (h *HTTPReports) get(ctx context.Context, podIP string, port int, path string, into any) error {
	url := "http://" + net.JoinHostPort(podIP, strconv.Itoa(port)) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := h.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxReportBytes)).Decode(into); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// Tags implements DataPlaneReports.
func (h *HTTPReports) Tags(ctx context.Context, podIP string) (*report.TagTotals, error) {
	var t report.TagTotals
	if err := h.get(ctx, podIP, h.AnalyzerPort, report.TagsPath, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// Status implements DataPlaneReports.
func (h *HTTPReports) Status(ctx context.Context, podIP string) (*report.ProxyStatus, error) {
	var s report.ProxyStatus
	if err := h.get(ctx, podIP, h.StatusPort, report.StatusPath, &s); err != nil {
		return nil, err
	}
	return &s, nil
}
