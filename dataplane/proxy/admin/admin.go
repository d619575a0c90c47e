// Package admin serves a tunnel end's admin HTTP endpoint (contract.AdminPort in the pods):
//
//	GET /healthz          liveness: the process serves HTTP
//	GET /readyz           readiness: every listener bound, certificate valid (503 otherwise,
//	                      and during the drain after SIGTERM)
//	GET /metrics          Prometheus: bytes by tag and direction, connections, handshake and
//	                      dial failures, UDP drops, config reloads, Go runtime
//	GET /v1/status        report.ProxyStatus, read by the StreamTunnel controller
//	GET /v1/connections   exact byte counts per tag and per connection with their addresses,
//	                      the ground truth the sFlow estimates are checked against
package admin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/scitunnel/scitunnel/dataplane/proxy"
	"github.com/scitunnel/scitunnel/dataplane/report"
)

// ConnectionsPath is the path of the exact per-connection byte counts.
const ConnectionsPath = "/v1/connections"

// Handler serves the admin endpoints of p.
func Handler(p *proxy.Proxy) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := p.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, why)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.Metrics(), promhttp.HandlerOpts{}))
	mux.HandleFunc("GET "+report.StatusPath, func(w http.ResponseWriter, _ *http.Request) { report.WriteJSON(w, p.Status()) })
	mux.HandleFunc("GET "+ConnectionsPath, func(w http.ResponseWriter, _ *http.Request) { report.WriteJSON(w, p.Connections()) })
	return mux
}

// Server is the admin endpoint of one tunnel end.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds addr, so a taken port fails start-up before anything is served.
func Listen(addr string, p *proxy.Proxy) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Server{ln: ln, srv: &http.Server{Handler: Handler(p), ReadHeaderTimeout: 10 * time.Second}}, nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers requests until Shutdown.
func (s *Server) Serve() { _ = s.srv.Serve(s.ln) }

// Shutdown stops serving, letting requests in flight finish until ctx ends.
func (s *Server) Shutdown(ctx context.Context) {
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
}
